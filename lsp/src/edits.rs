//! From a tool's corrected text to the smallest [`TextEdit`]s that make it: a line diff
//! (`similar`), each changed hunk then trimmed of the characters it shares with its
//! replacement at both ends, mapped to UTF-16 positions of the document.
//!
//! Small edits, unlike one whole-document replacement, keep the editor's cursors, marks,
//! folds and undo history where they belong.

use std::{ops::Range, time::Duration};

use similar::{Algorithm, DiffTag, TextDiff};
use tower_lsp_server::lsp_types::TextEdit;

use crate::text::Document;

/// A diff that takes longer than this falls back to a coarser (still correct) one.
const DIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// The edits that turn the bytes `scope` of `doc` into `new`; they never touch text outside
/// `scope`, do not overlap, and are in document order.
pub fn minimal_edits(doc: &Document, scope: Range<usize>, new: &str) -> Vec<TextEdit> {
    let scope = scope.start.min(doc.text.len())..scope.end.min(doc.text.len());
    let Some(old) = doc.text.get(scope.clone()) else {
        // Not on character boundaries: cannot happen for scopes made from positions, but if
        // it did, replacing nothing is the safe answer.
        return Vec::new();
    };
    hunks(old, new)
        .into_iter()
        .map(|hunk| TextEdit {
            range: doc.range_of(scope.start + hunk.old.start..scope.start + hunk.old.end),
            new_text: new[hunk.new].to_owned(),
        })
        .collect()
}

/// One change: the bytes `old` of the old text become the bytes `new` of the new text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    old: Range<usize>,
    new: Range<usize>,
}

fn hunks(old: &str, new: &str) -> Vec<Hunk> {
    if old == new {
        return Vec::new();
    }
    let diff = TextDiff::configure().algorithm(Algorithm::Myers).timeout(DIFF_TIMEOUT).diff_lines(old, new);
    let old_starts = starts(diff.iter_old_slices().map(str::len));
    let new_starts = starts(diff.iter_new_slices().map(str::len));
    let mut hunks = Vec::new();
    let mut open: Option<(Range<usize>, Range<usize>)> = None;
    for op in diff.ops() {
        let (tag, old_lines, new_lines) = op.as_tag_tuple();
        if tag == DiffTag::Equal {
            if let Some((old_lines, new_lines)) = open.take() {
                hunks.push(trimmed(old, new, &old_starts, &new_starts, old_lines, new_lines));
            }
            continue;
        }
        open = Some(match open {
            Some((open_old, open_new)) => (open_old.start..old_lines.end, open_new.start..new_lines.end),
            None => (old_lines, new_lines),
        });
    }
    if let Some((old_lines, new_lines)) = open {
        hunks.push(trimmed(old, new, &old_starts, &new_starts, old_lines, new_lines));
    }
    hunks.retain(|hunk| !(hunk.old.is_empty() && hunk.new.is_empty()));
    hunks
}

/// Byte offsets where each line starts, plus the end.
fn starts(lengths: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut starts = vec![0];
    let mut offset = 0;
    for length in lengths {
        offset += length;
        starts.push(offset);
    }
    starts
}

/// A hunk of whole lines, narrowed to the characters that differ.
fn trimmed(
    old: &str,
    new: &str,
    old_starts: &[usize],
    new_starts: &[usize],
    old_lines: Range<usize>,
    new_lines: Range<usize>,
) -> Hunk {
    let at = |starts: &[usize], idx: usize, len: usize| starts.get(idx).copied().unwrap_or(len);
    let old_bytes = at(old_starts, old_lines.start, old.len())..at(old_starts, old_lines.end, old.len());
    let new_bytes = at(new_starts, new_lines.start, new.len())..at(new_starts, new_lines.end, new.len());
    let (Some(old_hunk), Some(new_hunk)) = (old.get(old_bytes.clone()), new.get(new_bytes.clone())) else {
        return Hunk { old: old_bytes, new: new_bytes };
    };
    let mut prefix = common_prefix(old_hunk, new_hunk);
    // A position between `\r` and `\n` does not exist in LSP: never cut a line break in two.
    if prefix > 0 && old_hunk.as_bytes()[prefix - 1] == b'\r' && old_hunk.as_bytes().get(prefix) == Some(&b'\n') {
        prefix -= 1;
    }
    let old_rest = &old_hunk[prefix..];
    let new_rest = &new_hunk[prefix..];
    let mut suffix = common_suffix(old_rest, new_rest);
    let cut = old_rest.len() - suffix;
    if suffix > 0 && cut > 0 && old_rest.as_bytes()[cut - 1] == b'\r' && old_rest.as_bytes()[cut] == b'\n' {
        suffix -= 1;
    }
    Hunk {
        old: old_bytes.start + prefix..old_bytes.end - suffix,
        new: new_bytes.start + prefix..new_bytes.end - suffix,
    }
}

/// The length in bytes of the longest common prefix of `a` and `b`, on character boundaries.
fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum()
}

/// The length in bytes of the longest common suffix of `a` and `b`, on character boundaries.
fn common_suffix(a: &str, b: &str) -> usize {
    a.chars().rev().zip(b.chars().rev()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum()
}

#[cfg(test)]
mod tests {
    use tower_lsp_server::lsp_types::{Position, TextDocumentContentChangeEvent};

    use super::*;

    /// Applies edits (non-overlapping, relative to the original) like an editor does.
    fn apply(doc: &Document, edits: &[TextEdit]) -> String {
        let mut doc = doc.clone();
        let mut sorted = edits.to_vec();
        sorted.sort_by_key(|edit| (edit.range.start.line, edit.range.start.character));
        for pair in sorted.windows(2) {
            let (a, b) = (&pair[0].range.end, &pair[1].range.start);
            assert!((a.line, a.character) <= (b.line, b.character), "overlapping edits: {edits:?}");
        }
        let changes: Vec<_> = sorted
            .iter()
            .rev()
            .map(|edit| TextDocumentContentChangeEvent {
                range: Some(edit.range),
                range_length: None,
                text: edit.new_text.clone(),
            })
            .collect();
        doc.apply_changes(&changes, doc.version + 1);
        doc.text
    }

    fn check(old: &str, new: &str) -> Vec<TextEdit> {
        let doc = Document::new(old.to_owned(), 1, "text".to_owned());
        let edits = minimal_edits(&doc, 0..old.len(), new);
        assert_eq!(apply(&doc, &edits), new, "edits: {edits:?}");
        edits
    }

    #[test]
    fn a_one_line_change_is_one_small_edit() {
        let old = "def add(a, b):\n    return a - b\n\nprint(add(1, 2))\n";
        let new = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n";
        let edits = check(old, new);
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].new_text, "+");
        assert_eq!(edits[0].range.start, Position { line: 1, character: 13 });
        assert_eq!(edits[0].range.end, Position { line: 1, character: 14 });
    }

    #[test]
    fn edits_reproduce_the_target() {
        let cases = [
            ("", ""),
            ("", "new\n"),
            ("old\n", ""),
            ("a\nb\nc\n", "a\nB\nc\nd\n"),
            ("a\nb\nc\n", "x\na\nc\n"),
            ("same", "same"),
            ("no newline", "no newline\n"),
            ("line\n", "line"),
            ("a\r\nb\r\n", "a\nb\n"),
            ("a\nb\n", "a\r\nb\r\n"),
            ("a\r\nb\r\nc", "a\r\nB\r\nc"),
            ("é😀x\nfoo\n", "é🎉x\nfoo\nbar\n"),
            ("x = 1\ny = 2\nz = 3\n", "x = 1\nz = 3\ny = 2\n"),
            ("aaa\naaa\naaa\n", "aaa\naaa\n"),
            ("\n\n\n", "\n"),
            ("mixed\rold\nmac\r", "mixed\rnew\nmac\r"),
        ];
        for (old, new) in cases {
            check(old, new);
        }
    }

    #[test]
    fn separate_changes_are_separate_edits() {
        let old: String = (0..40).map(|n| format!("line {n}\n")).collect();
        let new = old.replace("line 3\n", "line three\n").replace("line 30\n", "line thirty\n");
        let edits = check(&old, &new);
        assert_eq!(edits.len(), 2, "{edits:?}");
        assert_eq!(edits[0].range.start.line, 3);
        assert_eq!(edits[1].range.start.line, 30);
    }

    /// Random texts from pieces that stress lines and UTF-16: every pair must round-trip.
    #[test]
    fn random_texts_round_trip() {
        const PIECES: [&str; 10] = ["a", "bc", "\n", "\r\n", "\r", "é", "😀", " ", "x = 1\n", "\n\n"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let text = |next: &mut dyn FnMut() -> u64| -> String {
            let n_pieces = (next() % 24) as usize;
            (0..n_pieces).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect()
        };
        for _ in 0..2000 {
            let old = text(&mut next);
            let new = text(&mut next);
            check(&old, &new);
        }
    }

    #[test]
    fn edits_stay_inside_the_scope() {
        let text = "keep\nfn f() { 1 - 2 }\nkeep\n";
        let doc = Document::new(text.to_owned(), 1, "rust".to_owned());
        let start = text.find("1 - 2").unwrap();
        let scope = start..start + "1 - 2".len();
        let edits = minimal_edits(&doc, scope, "1 + 2");
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].range.start, Position { line: 1, character: 11 });
        assert_eq!(edits[0].new_text, "+");
        assert_eq!(apply(&doc, &edits), "keep\nfn f() { 1 + 2 }\nkeep\n");
    }
}
