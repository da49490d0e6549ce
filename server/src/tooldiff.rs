//! What changed between two versions of a tool: a unified diff for `ant-server admin tools diff`
//! and side-by-side rows for the console's history page, from the same comparison.
//!
//! Both show the prompt, so both are for admins only.

use similar::{ChangeTag, TextDiff};

use crate::db::StoredToolVersion;

/// The fields of a version other than its prompt, as `(name, value)`, in a fixed order.
pub fn fields(version: &StoredToolVersion) -> Vec<(&'static str, String)> {
    vec![
        ("name", version.name.clone()),
        ("description", version.description.clone()),
        ("model", version.model.clone()),
        (
            "fallbacks",
            match version.fallbacks.as_deref() {
                None => "(not recorded)".to_owned(),
                Some([]) => "(none)".to_owned(),
                Some(list) => list.join(", "),
            },
        ),
        ("output", version.output.as_str().to_owned()),
        ("requires_file", version.requires_file.to_string()),
        ("guard", version.guard.as_str().to_owned()),
        ("active", version.active.to_string()),
    ]
}

/// The fields that differ: `(name, old, new)`.
pub fn changed_fields(old: &StoredToolVersion, new: &StoredToolVersion) -> Vec<(&'static str, String, String)> {
    fields(old)
        .into_iter()
        .zip(fields(new))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| (name, a, b))
        .collect()
}

/// A unified diff: a header naming both versions, one line per changed field, then the
/// prompt's changed lines with three lines of context.
pub fn unified(old: &StoredToolVersion, new: &StoredToolVersion) -> String {
    let mut text = format!(
        "--- {} version {} ({}, {})\n+++ {} version {} ({}, {})\n",
        old.slug,
        old.version,
        old.author,
        crate::db::rfc3339(old.created_at),
        new.slug,
        new.version,
        new.author,
        crate::db::rfc3339(new.created_at)
    );
    let changed = changed_fields(old, new);
    for (name, a, b) in &changed {
        text.push_str(&format!("{name}: {a} -> {b}\n"));
    }
    if old.system_prompt == new.system_prompt {
        if changed.is_empty() {
            text.push_str("no difference\n");
        } else {
            text.push_str("system_prompt: unchanged\n");
        }
        return text;
    }
    let diff = TextDiff::from_lines(&old.system_prompt, &new.system_prompt);
    let prompt = diff.unified_diff().context_radius(3).header("system_prompt", "system_prompt").to_string();
    text.push_str(&prompt);
    if !prompt.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// One row of a side-by-side diff: the old line and the new line (1-based numbers), either
/// absent where the other side added or removed a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideRow {
    pub old: Option<(usize, String)>,
    pub new: Option<(usize, String)>,
    pub changed: bool,
}

/// The prompts side by side, every line: a removed line is paired with the added line at the
/// same place in its change, so an edited line sits next to its new text.
pub fn side_by_side(old: &str, new: &str) -> Vec<SideRow> {
    let diff = TextDiff::from_lines(old, new);
    let mut rows = Vec::new();
    for op in diff.ops() {
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for change in diff.iter_changes(op) {
            let line = change.value().trim_end_matches(['\n', '\r']).to_owned();
            match change.tag() {
                ChangeTag::Equal => rows.push(SideRow {
                    old: change.old_index().map(|idx| (idx + 1, line.clone())),
                    new: change.new_index().map(|idx| (idx + 1, line)),
                    changed: false,
                }),
                ChangeTag::Delete => removed.push((change.old_index().unwrap_or(0) + 1, line)),
                ChangeTag::Insert => added.push((change.new_index().unwrap_or(0) + 1, line)),
            }
        }
        let pairs = removed.len().max(added.len());
        let mut removed = removed.into_iter();
        let mut added = added.into_iter();
        for _ in 0..pairs {
            rows.push(SideRow { old: removed.next(), new: added.next(), changed: true });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use aniate_proto::tool::{GuardMode, OutputKind};

    use super::*;

    fn version(version: i64, prompt: &str, model: &str) -> StoredToolVersion {
        StoredToolVersion {
            slug: "t".to_owned(),
            version,
            name: "T".to_owned(),
            description: "d".to_owned(),
            system_prompt: prompt.to_owned(),
            model: model.to_owned(),
            requires_file: false,
            output: OutputKind::Text,
            active: true,
            guard: GuardMode::Block,
            fallbacks: Some(Vec::new()),
            author: "a@x.y".to_owned(),
            message: String::new(),
            created_at: 0,
        }
    }

    #[test]
    fn unified_names_fields_and_prompt_lines() {
        let old = version(1, "one\ntwo\nthree\n", "m1");
        let new = version(2, "one\nTWO\nthree\n", "m2");
        let text = unified(&old, &new);
        assert!(text.starts_with("--- t version 1 (a@x.y, 1970-01-01T00:00:00Z)\n+++ t version 2"), "{text}");
        assert!(text.contains("model: m1 -> m2\n"), "{text}");
        assert!(text.contains("-two\n+TWO\n"), "{text}");
        assert!(unified(&old, &old).ends_with("no difference\n"));
        assert!(unified(&old, &version(3, "one\ntwo\nthree\n", "m2")).ends_with("system_prompt: unchanged\n"));
        let with_fallbacks = StoredToolVersion { fallbacks: Some(vec!["a/x".into(), "b/y".into()]), ..old.clone() };
        assert!(unified(&old, &with_fallbacks).contains("fallbacks: (none) -> a/x, b/y\n"));
        let unrecorded = StoredToolVersion { fallbacks: None, ..old.clone() };
        assert!(unified(&unrecorded, &old).contains("fallbacks: (not recorded) -> (none)\n"));
    }

    #[test]
    fn side_by_side_pairs_edits_and_keeps_every_line() {
        let rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n");
        let flat: Vec<(Option<&str>, Option<&str>, bool)> = rows
            .iter()
            .map(|row| (row.old.as_ref().map(|l| l.1.as_str()), row.new.as_ref().map(|l| l.1.as_str()), row.changed))
            .collect();
        assert_eq!(
            flat,
            [
                (Some("a"), Some("a"), false),
                (Some("b"), Some("B"), true),
                (Some("c"), Some("c"), false),
                (None, Some("d"), true)
            ]
        );
        assert_eq!(rows[3].new.as_ref().map(|l| l.0), Some(4));
    }
}
