//! Review findings as LSP diagnostics: line numbers relative to what the tool saw (the whole
//! document, or a selection) mapped back to the document, severities mapped, and a quick fix
//! for each finding that carries a suggestion.
//!
//! The diagnostics of a document are kept here, so that they can follow edits above them and
//! so that their quick fixes are answered locally, with no tool run.

use std::ops::Range as Bytes;

use aniate_proto::tool::{Finding, Severity};
use serde::{Deserialize, Serialize};
use tower_lsp_server::lsp_types::{
    CodeAction, CodeActionKind, Diagnostic, DiagnosticSeverity, NumberOrString, Range, TextEdit, Uri, WorkspaceEdit,
};

use crate::text::{Document, LineChange, LineIndex};

/// The `source` of every diagnostic we publish.
pub const SOURCE: &str = "aniate";

/// What a diagnostic carries in its `data`, so a client that sends it back in a code action
/// context still has the suggestion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// A published diagnostic and its suggested replacement for the diagnostic's range.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFinding {
    pub diagnostic: Diagnostic,
    pub suggestion: Option<String>,
}

pub fn severity(severity: Severity) -> DiagnosticSeverity {
    match severity {
        Severity::Error => DiagnosticSeverity::ERROR,
        Severity::Warning => DiagnosticSeverity::WARNING,
        Severity::Info => DiagnosticSeverity::INFORMATION,
        Severity::Hint => DiagnosticSeverity::HINT,
    }
}

/// Maps findings on the text `scope` of `doc` (1-based lines of that text, as the tool
/// numbered them) to diagnostics on the document.
///
/// A finding's range covers its lines from their first to their last character; lines a model
/// made up past the end are clamped to the text it saw. When the scope starts or ends mid-line,
/// the range starts or ends there too, so a quick fix never touches text outside it.
pub fn to_diagnostics(doc: &Document, scope: Bytes<usize>, tool: &str, findings: &[Finding]) -> Vec<StoredFinding> {
    let scope = scope.start.min(doc.text.len())..scope.end.min(doc.text.len());
    let Some(text) = doc.text.get(scope.clone()) else { return Vec::new() };
    let local = LineIndex::new(text);
    // The server numbers `content.lines()`: a final line break does not start another line.
    let n_lines = text.lines().count().max(1);
    findings
        .iter()
        .map(|finding| {
            let first = (finding.line.max(1) as usize).min(n_lines);
            let last = (finding.end_line.unwrap_or(finding.line).max(1) as usize).clamp(first, n_lines);
            let start = local.line_start(first - 1).unwrap_or(text.len());
            let end = local.line_end(text, last - 1);
            let range = doc.range_of(scope.start + start..scope.start + end);
            let suggestion = finding.suggestion.clone().filter(|s| !s.trim().is_empty());
            let data = suggestion.clone().map(|suggestion| DiagnosticData { suggestion: Some(suggestion) });
            StoredFinding {
                diagnostic: Diagnostic {
                    range,
                    severity: Some(severity(finding.severity)),
                    code: Some(NumberOrString::String(tool.to_owned())),
                    source: Some(SOURCE.to_owned()),
                    message: finding.message.clone(),
                    data: data.and_then(|data| serde_json::to_value(&data).ok()),
                    ..Diagnostic::default()
                },
                suggestion,
            }
        })
        .collect()
}

/// Puts `new` findings (from a run on `lines`, inclusive, of the document) in place of the
/// stored ones on those lines; a run on the whole document replaces them all.
pub fn merge(stored: &mut Vec<StoredFinding>, lines: Option<(u32, u32)>, new: Vec<StoredFinding>) {
    match lines {
        None => stored.clear(),
        Some((first, last)) => stored.retain(|finding| {
            let range = finding.diagnostic.range;
            range.end.line < first || range.start.line > last
        }),
    }
    stored.extend(new);
    stored.sort_by_key(|finding| (finding.diagnostic.range.start.line, finding.diagnostic.range.start.character));
}

/// Keeps stored findings in step with an edit: those below it move with their lines, those on
/// the lines it touched are dropped (their text changed, so the finding and its fix may no
/// longer hold). Returns whether anything changed.
pub fn follow_change(stored: &mut Vec<StoredFinding>, change: &LineChange) -> bool {
    if stored.is_empty() {
        return false;
    }
    if change.full {
        stored.clear();
        return true;
    }
    let before = stored.clone();
    stored.retain(|finding| {
        let range = finding.diagnostic.range;
        range.end.line < change.start_line || range.start.line > change.end_line
    });
    if change.line_delta != 0 {
        for finding in stored.iter_mut() {
            let range = &mut finding.diagnostic.range;
            if range.start.line > change.end_line {
                range.start.line = shift(range.start.line, change.line_delta);
                range.end.line = shift(range.end.line, change.line_delta);
            }
        }
    }
    *stored != before
}

fn shift(line: u32, delta: i64) -> u32 {
    u32::try_from((i64::from(line) + delta).max(0)).unwrap_or(u32::MAX)
}

/// The quick fix of a stored finding: replace its range with the suggestion.
pub fn quick_fix(uri: &Uri, finding: &StoredFinding) -> Option<CodeAction> {
    let suggestion = finding.suggestion.as_deref()?;
    // The range ends before the last line's break; so must the replacement.
    let replacement = suggestion.strip_suffix('\n').map_or(suggestion, |s| s.strip_suffix('\r').unwrap_or(s));
    let edit = TextEdit { range: finding.diagnostic.range, new_text: replacement.to_owned() };
    Some(CodeAction {
        title: format!("Aniate: {}", short_title(&finding.diagnostic.message)),
        kind: Some(CodeActionKind::QUICKFIX),
        diagnostics: Some(vec![finding.diagnostic.clone()]),
        edit: Some(WorkspaceEdit {
            changes: Some([(uri.clone(), vec![edit])].into_iter().collect()),
            ..Default::default()
        }),
        is_preferred: Some(true),
        ..CodeAction::default()
    })
}

/// `fix: MESSAGE`, cut at 60 characters, on one line.
fn short_title(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut title: String = one_line.chars().take(60).collect();
    if one_line.chars().count() > 60 {
        title.push('…');
    }
    format!("apply suggestion ({title})")
}

/// Whether two ranges share a line (code action requests often come as a cursor position).
pub fn touches(a: &Range, b: &Range) -> bool {
    a.start.line <= b.end.line && b.start.line <= a.end.line
}

#[cfg(test)]
mod tests {
    use tower_lsp_server::lsp_types::Position;

    use super::*;

    fn finding(line: u32, end_line: Option<u32>, severity: Severity, suggestion: Option<&str>) -> Finding {
        Finding { line, end_line, severity, message: format!("at {line}"), suggestion: suggestion.map(str::to_owned) }
    }

    fn range(start: (u32, u32), end: (u32, u32)) -> Range {
        Range { start: Position::new(start.0, start.1), end: Position::new(end.0, end.1) }
    }

    #[test]
    fn whole_document_findings_cover_their_lines() {
        let doc = Document::new("a = 1\nb = a - 1\nc = 😀\n".to_owned(), 1, "python".to_owned());
        let stored = to_diagnostics(
            &doc,
            0..doc.text.len(),
            "review",
            &[
                finding(2, None, Severity::Error, Some("b = a + 1")),
                finding(1, Some(3), Severity::Warning, None),
                finding(3, None, Severity::Info, None),
                finding(9, None, Severity::Hint, None),
            ],
        );
        let ranges: Vec<Range> = stored.iter().map(|s| s.diagnostic.range).collect();
        assert_eq!(
            ranges,
            vec![range((1, 0), (1, 9)), range((0, 0), (2, 6)), range((2, 0), (2, 6)), range((2, 0), (2, 6))]
        );
        let severities: Vec<_> = stored.iter().map(|s| s.diagnostic.severity.unwrap()).collect();
        assert_eq!(
            severities,
            vec![
                DiagnosticSeverity::ERROR,
                DiagnosticSeverity::WARNING,
                DiagnosticSeverity::INFORMATION,
                DiagnosticSeverity::HINT
            ]
        );
        assert_eq!(stored[0].diagnostic.source.as_deref(), Some("aniate"));
        assert_eq!(stored[0].suggestion.as_deref(), Some("b = a + 1"));
        assert_eq!(stored[0].diagnostic.data, Some(serde_json::json!({"suggestion": "b = a + 1"})));
    }

    #[test]
    fn selection_lines_map_back_to_the_document() {
        let text = "header\nfn f() {\n    x - 1\n}\nfooter\n";
        let doc = Document::new(text.to_owned(), 1, "rust".to_owned());
        // The selection starts mid-line 1 ("f() {") and ends mid-line 3 ("}").
        let start = text.find("f() {").unwrap();
        let end = text.find("}\nfooter").unwrap() + 1;
        let stored = to_diagnostics(
            &doc,
            start..end,
            "review",
            &[
                finding(2, None, Severity::Error, Some("    x + 1")),
                finding(1, None, Severity::Hint, None),
                finding(0, Some(99), Severity::Info, None),
            ],
        );
        assert_eq!(stored[0].diagnostic.range, range((2, 0), (2, 9)));
        // Line 1 of the selection starts where the selection starts.
        assert_eq!(stored[1].diagnostic.range, range((1, 3), (1, 8)));
        // Made-up lines are clamped to the selection, which ends after the `}`.
        assert_eq!(stored[2].diagnostic.range, range((1, 3), (3, 1)));
    }

    #[test]
    fn quick_fixes_replace_the_lines_with_the_suggestion() {
        let doc = Document::new("def f():\n    return 1 - 1\n".to_owned(), 1, "python".to_owned());
        let stored = to_diagnostics(
            &doc,
            0..doc.text.len(),
            "review",
            &[finding(2, None, Severity::Error, Some("    return 2\n"))],
        );
        let uri: Uri = "file:///f.py".parse().unwrap();
        let action = quick_fix(&uri, &stored[0]).unwrap();
        assert_eq!(action.kind, Some(CodeActionKind::QUICKFIX));
        let edits = &action.edit.unwrap().changes.unwrap()[&uri];
        assert_eq!(edits, &vec![TextEdit { range: range((1, 0), (1, 16)), new_text: "    return 2".to_owned() }]);
        let without = to_diagnostics(&doc, 0..doc.text.len(), "review", &[finding(1, None, Severity::Hint, None)]);
        assert!(quick_fix(&uri, &without[0]).is_none());
    }

    #[test]
    fn findings_follow_edits() {
        let doc = Document::new("a\nb\nc\nd\n".to_owned(), 1, "text".to_owned());
        let mut stored = to_diagnostics(
            &doc,
            0..doc.text.len(),
            "review",
            &[finding(1, None, Severity::Error, None), finding(3, None, Severity::Error, None)],
        );
        // Two lines inserted on line 1 (after the first finding's line): the second moves.
        let moved = follow_change(&mut stored, &LineChange { start_line: 1, end_line: 1, line_delta: 2, full: false });
        assert!(moved);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].diagnostic.range.start.line, 4);
        // An edit on the first finding's line drops it.
        assert!(follow_change(&mut stored, &LineChange { start_line: 0, end_line: 0, line_delta: 0, full: false }));
        assert_eq!(stored.len(), 1);
        assert!(!follow_change(&mut stored, &LineChange { start_line: 9, end_line: 9, line_delta: 1, full: false }));
        assert!(follow_change(&mut stored, &LineChange { start_line: 0, end_line: 0, line_delta: 0, full: true }));
        assert!(stored.is_empty());
    }

    #[test]
    fn merging_replaces_only_the_lines_that_ran() {
        let doc = Document::new("a\nb\nc\nd\n".to_owned(), 1, "text".to_owned());
        let all = to_diagnostics(
            &doc,
            0..doc.text.len(),
            "review",
            &[finding(1, None, Severity::Error, None), finding(3, None, Severity::Error, None)],
        );
        let mut stored = all.clone();
        let selection = doc.text.find('c').unwrap()..doc.text.len();
        let new = to_diagnostics(&doc, selection, "review", &[finding(2, None, Severity::Hint, None)]);
        merge(&mut stored, Some((2, 4)), new);
        let lines: Vec<u32> = stored.iter().map(|s| s.diagnostic.range.start.line).collect();
        assert_eq!(lines, vec![0, 3]);
        assert_eq!(stored[1].diagnostic.severity, Some(DiagnosticSeverity::HINT));
        merge(&mut stored, None, Vec::new());
        assert!(stored.is_empty());
    }
}
