//! The unified diff between a file and a `code` tool's corrected version of it.
//!
//! The plain output is a regular unified diff (`--- a/PATH`, `+++ b/PATH`, 3 lines of context),
//! so `ant fix app.py --color never > fix.patch && patch -p1 < fix.patch` works. Coloured output
//! paints removed lines red, added lines green and hunk headers cyan, and replaces control
//! characters so that a file's content cannot drive the terminal.

use similar::{ChangeTag, TextDiff};

use super::style::{Palette, paint, sanitize_text};

/// Lines of context around each change.
const CONTEXT_LINES: usize = 3;

/// The unified diff from `original` to `corrected` for the file `path`; `""` when they are
/// identical.
pub fn unified_diff(path: &str, original: &str, corrected: &str, colored: bool) -> String {
    if original == corrected {
        return String::new();
    }
    let palette = Palette::new(colored);
    let path = path.strip_prefix("./").unwrap_or(path);
    let diff = TextDiff::from_lines(original, corrected);
    let mut out = String::new();
    for (hunk_idx, hunk) in diff.unified_diff().context_radius(CONTEXT_LINES).iter_hunks().enumerate() {
        if hunk_idx == 0 {
            push_line(&mut out, palette.bold, &format!("--- a/{path}"), colored);
            push_line(&mut out, palette.bold, &format!("+++ b/{path}"), colored);
        }
        push_line(&mut out, palette.hunk, &hunk.header().to_string(), colored);
        for change in hunk.iter_changes() {
            let (sign, style) = match change.tag() {
                ChangeTag::Delete => ('-', palette.removed),
                ChangeTag::Insert => ('+', palette.added),
                ChangeTag::Equal => (' ', anstyle::Style::new()),
            };
            let value = change.value();
            let mut text = value.strip_suffix('\n').unwrap_or(value);
            if colored {
                // A terminal shows nothing for the `\r` of a CRLF line; plain output keeps it so
                // that the patch applies.
                text = text.strip_suffix('\r').unwrap_or(text);
            }
            push_line(&mut out, style, &format!("{sign}{text}"), colored);
            if change.missing_newline() {
                push_line(&mut out, palette.dim, "\\ No newline at end of file", colored);
            }
        }
    }
    out
}

fn push_line(out: &mut String, style: anstyle::Style, line: &str, colored: bool) {
    if colored {
        out.push_str(&paint(style, &sanitize_text(line)));
    } else {
        out.push_str(line);
    }
    out.push('\n');
}

/// Counts of changed lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub insertions: usize,
    pub deletions: usize,
}

impl DiffStats {
    pub fn between(original: &str, corrected: &str) -> DiffStats {
        let mut stats = DiffStats::default();
        if original == corrected {
            return stats;
        }
        for change in TextDiff::from_lines(original, corrected).iter_all_changes() {
            match change.tag() {
                ChangeTag::Delete => stats.deletions += 1,
                ChangeTag::Insert => stats.insertions += 1,
                ChangeTag::Equal => {}
            }
        }
        stats
    }

    pub fn is_empty(&self) -> bool {
        self.insertions == 0 && self.deletions == 0
    }
}

/// `2 lines changed (+1 −1)`, or `No changes`.
pub fn change_summary(original: &str, corrected: &str) -> String {
    let stats = DiffStats::between(original, corrected);
    if stats.is_empty() {
        return "No changes".to_owned();
    }
    let n_changed = stats.insertions + stats.deletions;
    let lines = if n_changed == 1 { "line" } else { "lines" };
    format!("{n_changed} {lines} changed (+{} −{})", stats.insertions, stats.deletions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_files_have_no_diff() {
        assert_eq!(unified_diff("a.py", "x = 1\n", "x = 1\n", false), "");
        assert_eq!(unified_diff("a.py", "", "", true), "");
        assert_eq!(change_summary("x\n", "x\n"), "No changes");
    }

    #[test]
    fn a_one_line_fix() {
        let original = "def add(a, b):\n    return a - b\n\nprint(add(1, 2))\n";
        let corrected = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n";
        let expected = "\
--- a/app.py
+++ b/app.py
@@ -1,4 +1,4 @@
 def add(a, b):
-    return a - b
+    return a + b
 \n print(add(1, 2))
";
        assert_eq!(unified_diff("./app.py", original, corrected, false), expected);
        assert_eq!(change_summary(original, corrected), "2 lines changed (+1 −1)");
    }

    #[test]
    fn distant_changes_make_two_hunks_with_three_lines_of_context() {
        let original: String = (1..=20).map(|n| format!("line {n}\n")).collect();
        let corrected = original.replace("line 2\n", "line two\n").replace("line 18\n", "");
        let expected = "\
--- a/n.txt
+++ b/n.txt
@@ -1,5 +1,5 @@
 line 1
-line 2
+line two
 line 3
 line 4
 line 5
@@ -15,6 +15,5 @@
 line 15
 line 16
 line 17
-line 18
 line 19
 line 20
";
        assert_eq!(unified_diff("n.txt", &original, &corrected, false), expected);
        assert_eq!(change_summary(&original, &corrected), "3 lines changed (+1 −2)");
    }

    #[test]
    fn missing_final_newline_is_marked() {
        let expected = "\
--- a/a.txt
+++ b/a.txt
@@ -1,2 +1,2 @@
 one
-two
\\ No newline at end of file
+two
";
        assert_eq!(unified_diff("a.txt", "one\ntwo", "one\ntwo\n", false), expected);
        let expected = "\
--- a/a.txt
+++ b/a.txt
@@ -1,2 +1,2 @@
 one
-two
\\ No newline at end of file
+2
\\ No newline at end of file
";
        assert_eq!(unified_diff("a.txt", "one\ntwo", "one\n2", false), expected);
    }

    #[test]
    fn from_and_to_empty() {
        assert_eq!(unified_diff("e", "", "new\n", false), "--- a/e\n+++ b/e\n@@ -0,0 +1 @@\n+new\n");
        assert_eq!(unified_diff("e", "old\n", "", false), "--- a/e\n+++ b/e\n@@ -1 +0,0 @@\n-old\n");
        assert_eq!(change_summary("", "new\n"), "1 line changed (+1 −0)");
    }

    #[test]
    fn coloured_diff() {
        let out = unified_diff("a", "x\n", "y\n", true);
        let expected = "\
\u{1b}[1m--- a/a\u{1b}[0m
\u{1b}[1m+++ b/a\u{1b}[0m
\u{1b}[36m@@ -1 +1 @@\u{1b}[0m
\u{1b}[31m-x\u{1b}[0m
\u{1b}[32m+y\u{1b}[0m
";
        assert_eq!(out, expected);
    }

    #[test]
    fn coloured_diff_neutralises_escapes_in_the_file() {
        let out = unified_diff("a", "x\n", "\u{1b}[2J\n", true);
        assert!(out.contains("+\u{FFFD}[2J"), "{out:?}");
        let plain = unified_diff("a", "x\n", "\u{1b}[2J\n", false);
        assert!(plain.contains("+\u{1b}[2J"), "{plain:?}");
    }

    #[test]
    fn crlf_lines_keep_one_line_each() {
        let out = unified_diff("w.txt", "a\r\nb\r\n", "a\r\nc\r\n", false);
        assert_eq!(out, "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n");
        let out = unified_diff("w.txt", "a\r\nb\r\n", "a\r\nc\r\n", true);
        assert!(out.contains("\u{1b}[31m-b\u{1b}[0m\n"), "{out:?}");
    }
}
