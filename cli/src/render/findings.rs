//! Review findings as compiler-style lines, which editors and terminals turn into links:
//!
//! ```text
//! src/app.py:3: error: `b` is never defined
//!   suggestion: pass `b` as a parameter
//! src/app.py:12-14: warning: the file is opened but never closed
//! ```

use aniate_proto::tool::{Finding, FindingsAdjusted, Severity};

use super::style::{Palette, paint, sanitize_line, sanitize_text};

/// The label before a suggestion, and the indent of its continuation lines.
const SUGGESTION_LABEL: &str = "  suggestion: ";

/// One `path:line: severity: message` line per finding (plus its suggestion), sorted by line;
/// `""` when there are none.
pub fn render_findings(path: &str, findings: &[Finding], colored: bool) -> String {
    let palette = Palette::new(colored);
    let path = sanitize_line(path);
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|finding| (finding.line, finding.end_line));
    let mut out = String::new();
    for finding in sorted {
        let location = match finding.end_line {
            Some(end_line) if end_line > finding.line => format!("{path}:{}-{end_line}:", finding.line),
            _ => format!("{path}:{}:", finding.line),
        };
        let severity = paint(palette.severity(finding.severity), finding.severity.as_str());
        out.push_str(&format!("{} {severity}: ", paint(palette.bold, &location)));
        push_indented(&mut out, &sanitize_text(finding.message.trim()), "  ");
        if let Some(suggestion) = finding.suggestion.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            out.push_str(&paint(palette.dim, SUGGESTION_LABEL.trim_end()));
            out.push(' ');
            push_indented(&mut out, &sanitize_text(suggestion), &" ".repeat(SUGGESTION_LABEL.len()));
        }
    }
    out
}

/// Pushes `text` and a newline; its lines after the first get `indent`.
fn push_indented(out: &mut String, text: &str, indent: &str) {
    for (line_idx, line) in text.lines().enumerate() {
        if line_idx > 0 && !line.is_empty() {
            out.push_str(indent);
        }
        out.push_str(line);
        out.push('\n');
    }
    if text.is_empty() {
        out.push('\n');
    }
}

/// What the server changed to fit the model's findings to the file, one line, e.g.
/// `Adjusted to fit the file: 3 findings dropped (their line is not in the file), 1 duplicate
/// merged`; `""` when nothing was.
pub fn adjusted_summary(adjusted: &FindingsAdjusted) -> String {
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let parts: Vec<String> = [
        (
            adjusted.dropped_out_of_range,
            "finding dropped (its line is not in the file)",
            "findings dropped (their line is not in the file)",
        ),
        (adjusted.clamped, "range cut at the end of the file", "ranges cut at the end of the file"),
        (adjusted.merged_duplicates, "duplicate merged", "duplicates merged"),
        (
            adjusted.severities_mapped,
            "unknown severity mapped to the nearest",
            "unknown severities mapped to the nearest",
        ),
    ]
    .into_iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| plural(n, one, many))
    .collect();
    if parts.is_empty() { String::new() } else { format!("Adjusted to fit the file: {}\n", parts.join(", ")) }
}

/// `3 findings: 1 error, 2 warnings`, or `No findings`.
pub fn findings_summary(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "No findings".to_owned();
    }
    let count = |severity: Severity| findings.iter().filter(|finding| finding.severity == severity).count();
    let parts: Vec<String> = [
        (count(Severity::Error), "error", "errors"),
        (count(Severity::Warning), "warning", "warnings"),
        (count(Severity::Info), "info", "info"),
        (count(Severity::Hint), "hint", "hints"),
    ]
    .into_iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
    .collect();
    let noun = if findings.len() == 1 { "finding" } else { "findings" };
    format!("{} {noun}: {}", findings.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjustments_are_spelled_out() {
        assert_eq!(adjusted_summary(&FindingsAdjusted::default()), "");
        let adjusted =
            FindingsAdjusted { dropped_out_of_range: 3, clamped: 1, merged_duplicates: 0, severities_mapped: 2 };
        assert_eq!(
            adjusted_summary(&adjusted),
            "Adjusted to fit the file: 3 findings dropped (their line is not in the file), 1 range cut at the end of the file, 2 unknown severities mapped to the nearest\n"
        );
    }

    fn finding(line: u32, severity: Severity, message: &str) -> Finding {
        Finding { line, end_line: None, severity, message: message.into(), suggestion: None }
    }

    fn sample() -> Vec<Finding> {
        vec![
            Finding { end_line: Some(14), ..finding(12, Severity::Warning, "the file is opened but never closed") },
            Finding {
                suggestion: Some("pass `b` as a parameter".into()),
                ..finding(3, Severity::Error, "`b` is never defined")
            },
            finding(20, Severity::Warning, "prefer an f-string"),
        ]
    }

    #[test]
    fn findings_sorted_by_line() {
        let expected = "\
app.py:3: error: `b` is never defined
  suggestion: pass `b` as a parameter
app.py:12-14: warning: the file is opened but never closed
app.py:20: warning: prefer an f-string
";
        assert_eq!(render_findings("app.py", &sample(), false), expected);
        assert_eq!(findings_summary(&sample()), "3 findings: 1 error, 2 warnings");
    }

    #[test]
    fn multi_line_messages_and_suggestions_are_indented() {
        let findings = vec![Finding {
            suggestion: Some("with open(p) as f:\n    data = f.read()\n".into()),
            ..finding(7, Severity::Info, "two things:\n- one\n- two")
        }];
        let expected = "\
stdin:7: info: two things:
  - one
  - two
  suggestion: with open(p) as f:
                  data = f.read()
";
        assert_eq!(render_findings("stdin", &findings, false), expected);
    }

    #[test]
    fn degenerate_ranges_and_empty_text() {
        let findings = vec![
            Finding { end_line: Some(5), ..finding(5, Severity::Hint, "") },
            Finding { end_line: Some(1), suggestion: Some("  ".into()), ..finding(9, Severity::Hint, "odd range") },
        ];
        assert_eq!(render_findings("a", &findings, false), "a:5: hint: \na:9: hint: odd range\n");
        assert_eq!(render_findings("a", &[], false), "");
    }

    #[test]
    fn coloured_severity() {
        let out = render_findings("a", &[finding(1, Severity::Error, "bad")], true);
        assert_eq!(out, "\u{1b}[1ma:1:\u{1b}[0m \u{1b}[1m\u{1b}[31merror\u{1b}[0m: bad\n");
    }

    #[test]
    fn model_text_cannot_drive_the_terminal() {
        let out = render_findings("a", &[finding(1, Severity::Error, "x\u{1b}]0;pwned\u{7}")], false);
        assert_eq!(out, "a:1: error: x\u{FFFD}]0;pwned\u{FFFD}\n");
    }

    #[test]
    fn summaries() {
        assert_eq!(findings_summary(&[]), "No findings");
        assert_eq!(findings_summary(&[finding(1, Severity::Warning, "w")]), "1 finding: 1 warning");
        let all = vec![
            finding(1, Severity::Error, "e"),
            finding(2, Severity::Error, "e"),
            finding(3, Severity::Info, "i"),
            finding(4, Severity::Info, "i"),
            finding(5, Severity::Hint, "h"),
        ];
        assert_eq!(findings_summary(&all), "5 findings: 2 errors, 2 info, 1 hint");
    }
}
