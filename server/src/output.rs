//! Turns a model's raw answer into the structured result of its tool's output kind.
//!
//! Models do not always follow the format their prompt asks for, so every parser here is
//! tolerant: it takes what it can, skips what it cannot, and reports how much it skipped.

use aniate_proto::tool::{CommandSuggestion, Finding, OutputKind, Severity, ToolResult};
use serde_json::Value;

/// At most this many findings are kept from one answer.
pub const MAX_FINDINGS: usize = 200;

/// Builds `done.result` for a finished answer. `original` is the content the user sent.
pub fn structured_result(kind: OutputKind, answer: &str, original: &str) -> Option<ToolResult> {
    match kind {
        OutputKind::Text => None,
        OutputKind::Code => Some(ToolResult::Code(corrected_file(answer, original))),
        OutputKind::Findings => {
            let (findings, n_skipped) = parse_findings(answer);
            if n_skipped > 0 {
                tracing::info!(n_skipped, n_findings = findings.len(), "skipped unparseable finding lines");
            }
            Some(ToolResult::Findings(findings))
        }
        OutputKind::Command => parse_command(answer).map(ToolResult::Command),
    }
}

/// The corrected file in a `code` answer: fences removed, and the original's final newline
/// kept (models drop it; editors and diffs care).
pub fn corrected_file(answer: &str, original: &str) -> String {
    let mut file = strip_fences(answer).to_owned();
    if original.ends_with('\n') && !file.is_empty() && !file.ends_with('\n') {
        file.push('\n');
    }
    file
}

/// Removes Markdown code fences: a fence around the whole answer, or, when the model wrapped
/// its code in prose, the longest fenced block.
pub fn strip_fences(answer: &str) -> &str {
    let trimmed = answer.trim_matches(|c| c == '\n' || c == '\r');
    if trimmed.trim_start().starts_with("```") {
        let body = match trimmed.find('\n') {
            Some(newline) => &trimmed[newline + 1..],
            None => return "",
        };
        let body_trimmed = body.trim_end();
        if let Some(without_close) = body_trimmed.strip_suffix("```") {
            return without_close.strip_suffix('\n').map_or(without_close, |b| b.strip_suffix('\r').unwrap_or(b));
        }
        return body;
    }
    longest_fenced_block(answer).unwrap_or(answer)
}

fn longest_fenced_block(text: &str) -> Option<&str> {
    let mut best: Option<&str> = None;
    let mut open: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            match open {
                None => open = Some(offset + line.len()),
                Some(start) => {
                    let block = &text[start..offset];
                    if best.is_none_or(|b| block.len() > b.len()) {
                        best = Some(block);
                    }
                    open = None;
                }
            }
        }
        offset += line.len();
    }
    best
}

/// Parses review findings: JSON Lines (what the prompt asks for) or a JSON array; returns the
/// findings and the number of non-empty lines that were not findings.
pub fn parse_findings(answer: &str) -> (Vec<Finding>, usize) {
    let body = strip_fences(answer).trim();
    if body.starts_with('[')
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(body)
    {
        let n_items = items.len();
        let findings: Vec<Finding> = items.iter().filter_map(finding_from_json).take(MAX_FINDINGS).collect();
        let n_skipped = n_items.saturating_sub(findings.len());
        return (findings, n_skipped);
    }
    let mut findings = Vec::new();
    let mut n_skipped = 0;
    for line in body.lines() {
        let line = line.trim().trim_end_matches(',');
        if line.is_empty() || line == "[" || line == "]" {
            continue;
        }
        match serde_json::from_str::<Value>(line).ok().as_ref().and_then(finding_from_json) {
            Some(finding) if findings.len() < MAX_FINDINGS => findings.push(finding),
            Some(_) => {}
            None => n_skipped += 1,
        }
    }
    (findings, n_skipped)
}

fn finding_from_json(value: &Value) -> Option<Finding> {
    let object = value.as_object()?;
    let number = |key: &str| -> Option<u32> {
        match object.get(key)? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let text = |keys: &[&str]| -> Option<String> {
        keys.iter()
            .find_map(|key| object.get(*key)?.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let line = number("line")?.max(1);
    let end_line = number("end_line").filter(|end| *end >= line);
    let severity =
        object.get("severity").and_then(Value::as_str).and_then(Severity::parse_lenient).unwrap_or(Severity::Warning);
    Some(Finding {
        line,
        end_line,
        severity,
        message: text(&["message", "description", "issue"])?,
        // Replacement code: its indentation matters, so only trailing newlines go.
        suggestion: ["suggestion", "fix"]
            .iter()
            .find_map(|key| object.get(*key)?.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned()),
    })
}

/// Parses a `command` answer: the JSON object the prompt asks for, or else the first line
/// of a fenced block (or of the answer) as the command and the rest as the explanation.
pub fn parse_command(answer: &str) -> Option<CommandSuggestion> {
    if let (Some(start), Some(end)) = (answer.find('{'), answer.rfind('}'))
        && start < end
        && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&answer[start..=end])
        && let Some(command) = object.get("command").and_then(Value::as_str)
    {
        let explanation = object.get("explanation").and_then(Value::as_str).unwrap_or("");
        return Some(CommandSuggestion {
            command: command.trim().to_owned(),
            explanation: explanation.trim().to_owned(),
        });
    }
    let (command_source, explanation) = match longest_fenced_block(answer) {
        Some(block) => (block, prose_outside_fences(answer)),
        None => {
            let trimmed = answer.trim();
            let (first, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
            (first, rest.split_whitespace().collect::<Vec<_>>().join(" "))
        }
    };
    let command = command_source.lines().map(str::trim).find(|line| !line.is_empty())?;
    let command = command.strip_prefix("$ ").unwrap_or(command);
    Some(CommandSuggestion { command: command.to_owned(), explanation })
}

/// The lines of `text` outside fenced blocks, joined into one paragraph.
fn prose_outside_fences(text: &str) -> String {
    let mut in_fence = false;
    let mut words = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            words.extend(line.split_whitespace());
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fences("```python\nx = 1\n```"), "x = 1");
        assert_eq!(strip_fences("```\nx = 1\ny = 2\n```\n"), "x = 1\ny = 2");
        assert_eq!(strip_fences("x = 1\n"), "x = 1\n");
        assert_eq!(strip_fences("Here is the fix:\n```py\na\n```\nThanks"), "a\n");
        assert_eq!(strip_fences("```py\nunterminated\n"), "unterminated");
        assert_eq!(strip_fences("```"), "");
    }

    #[test]
    fn corrected_file_keeps_the_final_newline() {
        assert_eq!(corrected_file("```\nx = 1\n```", "x=1\n"), "x = 1\n");
        assert_eq!(corrected_file("x = 1", "x=1"), "x = 1");
    }

    #[test]
    fn findings_from_json_lines_with_noise() {
        let answer = "Here are the issues:\n\
            {\"line\": 3, \"severity\": \"error\", \"message\": \"division by zero\", \"suggestion\": \"if d: x / d\"}\n\
            not json\n\
            {\"line\": \"7\", \"end_line\": 5, \"severity\": \"nit\", \"message\": \"naming\"}\n\
            {\"line\": 9, \"severity\": \"weird\"}\n";
        let (findings, n_skipped) = parse_findings(answer);
        assert_eq!(
            findings,
            vec![
                Finding {
                    line: 3,
                    end_line: None,
                    severity: Severity::Error,
                    message: "division by zero".into(),
                    suggestion: Some("if d: x / d".into()),
                },
                Finding {
                    line: 7,
                    end_line: None,
                    severity: Severity::Hint,
                    message: "naming".into(),
                    suggestion: None
                },
            ]
        );
        assert_eq!(n_skipped, 3);
    }

    #[test]
    fn findings_from_a_fenced_array_and_empty_answers() {
        let (findings, _) = parse_findings("```json\n[{\"line\":1,\"severity\":\"warning\",\"message\":\"m\"}]\n```");
        assert_eq!(findings.len(), 1);
        assert_eq!(parse_findings(""), (vec![], 0));
    }

    #[test]
    fn commands_from_json_or_prose() {
        let json = parse_command("{\"command\": \"du -sh * | sort -h\", \"explanation\": \"Sizes, sorted.\"}").unwrap();
        assert_eq!(json.command, "du -sh * | sort -h");
        assert_eq!(json.explanation, "Sizes, sorted.");
        let fenced = parse_command("Use this:\n```bash\n$ ls -la\n```\nIt lists files.").unwrap();
        assert_eq!(fenced.command, "ls -la");
        assert_eq!(fenced.explanation, "Use this: It lists files.");
        assert_eq!(parse_command("   "), None);
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: whatever a model answers, the parsers return without panicking, and
    //! every finding they return is well formed.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        // PROPTEST_CASES=N runs more (docs/reliability.md has the long runs).
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)))]

        #[test]
        fn findings_parser_takes_anything(answer in "(\\PC|\n){0,400}") {
            let (findings, _) = parse_findings(&answer);
            prop_assert!(findings.len() <= MAX_FINDINGS);
            for finding in findings {
                prop_assert!(finding.line >= 1);
                prop_assert!(finding.end_line.is_none_or(|end| end >= finding.line));
                prop_assert!(!finding.message.is_empty());
            }
        }

        #[test]
        fn json_line_findings_are_found(line in 1u32..100_000, message in "[a-zA-Z ]{1,40}") {
            let answer = format!("noise\n{{\"line\": {line}, \"severity\": \"error\", \"message\": \"{message}\"}}\nmore noise");
            let (findings, _) = parse_findings(&answer);
            let expected = message.trim();
            prop_assume!(!expected.is_empty());
            prop_assert_eq!(findings.len(), 1);
            prop_assert_eq!(findings[0].line, line);
            prop_assert_eq!(findings[0].message.as_str(), expected);
        }

        #[test]
        fn other_parsers_take_anything(answer in "(\\PC|\n){0,400}") {
            let _ = strip_fences(&answer);
            let _ = parse_command(&answer);
            let _ = corrected_file(&answer, "x\n");
        }
    }
}
