//! Documents as the editor has them, and the positions LSP speaks: a line and a column counted
//! in UTF-16 code units, with lines ended by `\n`, `\r\n` or `\r`.
//!
//! Every conversion here is total: a position past the end of a line or of the document is
//! clamped, one inside a surrogate pair rounds down, and no input can make it panic.

use tower_lsp_server::lsp_types::{Position, Range, TextDocumentContentChangeEvent};

/// Where each line of a text starts, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIndex {
    /// `line_starts[0] == 0`; one entry per line, so a text ending with a line break has an
    /// empty last line, as LSP counts.
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        let mut idx = 0;
        while idx < bytes.len() {
            match bytes[idx] {
                b'\n' => line_starts.push(idx + 1),
                b'\r' if bytes.get(idx + 1) != Some(&b'\n') => line_starts.push(idx + 1),
                _ => {}
            }
            idx += 1;
        }
        LineIndex { line_starts }
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The byte offset where `line` starts; `None` past the last line.
    pub fn line_start(&self, line: usize) -> Option<usize> {
        self.line_starts.get(line).copied()
    }

    /// The byte offset where the content of `line` ends, before its line break.
    pub fn line_end(&self, text: &str, line: usize) -> usize {
        let Some(&start) = self.line_starts.get(line) else { return text.len() };
        let next = self.line_starts.get(line + 1).copied().unwrap_or(text.len());
        let content = &text.as_bytes()[start..next];
        let trimmed = content.strip_suffix(b"\n").unwrap_or(content);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        start + trimmed.len()
    }

    /// The byte offset of `position` in `text` (which this index was built from).
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let line = position.line as usize;
        let Some(&start) = self.line_starts.get(line) else { return text.len() };
        let end = self.line_end(text, line);
        let mut units = 0u32;
        for (idx, c) in text[start..end].char_indices() {
            let width = c.len_utf16() as u32;
            if units + width > position.character {
                return start + idx;
            }
            units += width;
        }
        end
    }

    /// The position of byte `offset` in `text`; an offset inside a character rounds down.
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset).saturating_sub(1);
        let start = self.line_starts[line];
        Position { line: line as u32, character: utf16_len(&text[start..offset]) }
    }
}

/// The length of `text` in UTF-16 code units, saturating.
pub fn utf16_len(text: &str) -> u32 {
    let units: usize = text.chars().map(char::len_utf16).sum();
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// An open document.
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    pub version: i32,
    pub language_id: String,
    index: LineIndex,
}

/// What one content change did, in lines of the document before it, for keeping line-anchored
/// state (diagnostics) in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineChange {
    /// The first and last line the replaced range touched.
    pub start_line: u32,
    pub end_line: u32,
    /// How many lines the document gained (or, negative, lost).
    pub line_delta: i64,
    /// The whole document was replaced.
    pub full: bool,
}

impl Document {
    pub fn new(text: String, version: i32, language_id: String) -> Document {
        let index = LineIndex::new(&text);
        Document { text, version, language_id, index }
    }

    pub fn index(&self) -> &LineIndex {
        &self.index
    }

    pub fn offset(&self, position: Position) -> usize {
        self.index.offset(&self.text, position)
    }

    pub fn position(&self, offset: usize) -> Position {
        self.index.position(&self.text, offset)
    }

    /// The byte range of an LSP range, in order even if the range is reversed.
    pub fn byte_range(&self, range: Range) -> std::ops::Range<usize> {
        let start = self.offset(range.start);
        let end = self.offset(range.end);
        start.min(end)..start.max(end)
    }

    pub fn range_of(&self, bytes: std::ops::Range<usize>) -> Range {
        Range { start: self.position(bytes.start), end: self.position(bytes.end) }
    }

    /// The range of the whole document.
    pub fn full_range(&self) -> Range {
        self.range_of(0..self.text.len())
    }

    /// Applies `didChange` content changes in order, as LSP says: each one's range refers to
    /// the document as the previous change left it.
    pub fn apply_changes(&mut self, changes: &[TextDocumentContentChangeEvent], version: i32) -> Vec<LineChange> {
        let mut line_changes = Vec::with_capacity(changes.len());
        for change in changes {
            line_changes.push(self.apply_change(change));
        }
        self.version = version;
        line_changes
    }

    fn apply_change(&mut self, change: &TextDocumentContentChangeEvent) -> LineChange {
        let Some(range) = change.range else {
            let old_lines = self.index.line_count() as i64;
            self.text.clone_from(&change.text);
            self.index = LineIndex::new(&self.text);
            return LineChange {
                start_line: 0,
                end_line: u32::MAX,
                line_delta: self.index.line_count() as i64 - old_lines,
                full: true,
            };
        };
        let bytes = self.byte_range(range);
        let start_line = self.position(bytes.start).line;
        let end_line = self.position(bytes.end).line;
        let old_lines = self.index.line_count() as i64;
        self.text.replace_range(bytes, &change.text);
        self.index = LineIndex::new(&self.text);
        LineChange { start_line, end_line, line_delta: self.index.line_count() as i64 - old_lines, full: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, character: u32) -> Position {
        Position { line, character }
    }

    fn change(range: Option<((u32, u32), (u32, u32))>, text: &str) -> TextDocumentContentChangeEvent {
        TextDocumentContentChangeEvent {
            range: range.map(|(start, end)| Range { start: pos(start.0, start.1), end: pos(end.0, end.1) }),
            range_length: None,
            text: text.to_owned(),
        }
    }

    #[test]
    fn positions_count_utf16_units() {
        // "é" is 2 bytes and 1 unit; "😀" is 4 bytes and 2 units (a surrogate pair).
        let text = "aé😀b\nx";
        let index = LineIndex::new(text);
        assert_eq!(index.offset(text, pos(0, 0)), 0);
        assert_eq!(index.offset(text, pos(0, 1)), 1);
        assert_eq!(index.offset(text, pos(0, 2)), 3);
        assert_eq!(index.offset(text, pos(0, 4)), 7);
        assert_eq!(&text[index.offset(text, pos(0, 4))..], "b\nx");
        // Inside the surrogate pair: rounds down to the start of the emoji.
        assert_eq!(index.offset(text, pos(0, 3)), 3);
        // Past the end of a line: the end of its content, not the next line.
        assert_eq!(index.offset(text, pos(0, 99)), 8);
        assert_eq!(index.offset(text, pos(1, 1)), 10);
        assert_eq!(index.offset(text, pos(7, 0)), text.len());

        assert_eq!(index.position(text, 3), pos(0, 2));
        assert_eq!(index.position(text, 7), pos(0, 4));
        // Inside a multi-byte character: rounds down.
        assert_eq!(index.position(text, 5), pos(0, 2));
        assert_eq!(index.position(text, 9), pos(1, 0));
        assert_eq!(index.position(text, 999), pos(1, 1));
    }

    #[test]
    fn every_line_break_counts() {
        let text = "a\r\nb\rc\nd";
        let index = LineIndex::new(text);
        assert_eq!(index.line_count(), 4);
        assert_eq!(index.line_end(text, 0), 1);
        assert_eq!(index.offset(text, pos(1, 0)), 3);
        assert_eq!(index.offset(text, pos(2, 0)), 5);
        assert_eq!(index.offset(text, pos(3, 1)), 8);
        assert_eq!(index.offset(text, pos(0, 5)), 1, "not into the \\r\\n");
        assert_eq!(LineIndex::new("x\n").line_count(), 2);
        assert_eq!(LineIndex::new("").line_count(), 1);
        for offset in 0..=text.len() {
            let position = index.position(text, offset);
            assert!(index.offset(text, position) <= offset);
        }
    }

    #[test]
    fn incremental_changes_apply_in_order() {
        let mut doc = Document::new("fn main() {\n    let x = 1;\n}\n".to_owned(), 1, "rust".to_owned());
        doc.apply_changes(
            &[
                // Replace `1` with `42`, then insert a line after it (a range in the new text).
                change(Some(((1, 12), (1, 13))), "42"),
                change(Some(((1, 15), (1, 15))), "\n    let y = x;"),
            ],
            2,
        );
        assert_eq!(doc.text, "fn main() {\n    let x = 42;\n    let y = x;\n}\n");
        assert_eq!(doc.version, 2);
        // Delete across lines.
        doc.apply_changes(&[change(Some(((1, 15), (2, 14))), "")], 3);
        assert_eq!(doc.text, "fn main() {\n    let x = 42;\n}\n");
        // A full replacement.
        doc.apply_changes(&[change(None, "new")], 4);
        assert_eq!(doc.text, "new");
        assert_eq!(doc.position(3), pos(0, 3));
    }

    #[test]
    fn changes_with_wide_characters_and_bad_ranges() {
        let mut doc = Document::new("é😀x\n".to_owned(), 1, "text".to_owned());
        // Replace the emoji (columns 1..3 in UTF-16).
        doc.apply_changes(&[change(Some(((0, 1), (0, 3))), "🎉🎉")], 2);
        assert_eq!(doc.text, "é🎉🎉x\n");
        // A reversed range and one far past the end do not panic.
        doc.apply_changes(&[change(Some(((0, 5), (0, 1))), "")], 3);
        assert_eq!(doc.text, "éx\n");
        doc.apply_changes(&[change(Some(((50, 3), (90, 0))), "!")], 4);
        assert_eq!(doc.text, "éx\n!");
        // Halfway into a surrogate pair rounds down on both ends.
        let mut doc = Document::new("a😀b".to_owned(), 1, "text".to_owned());
        doc.apply_changes(&[change(Some(((0, 2), (0, 2))), "|")], 2);
        assert_eq!(doc.text, "a|😀b");
    }

    #[test]
    fn line_changes_report_what_moved() {
        let mut doc = Document::new("a\nb\nc\n".to_owned(), 1, "text".to_owned());
        let changes = doc.apply_changes(&[change(Some(((0, 1), (0, 1))), "\nnew")], 2);
        assert_eq!(changes, vec![LineChange { start_line: 0, end_line: 0, line_delta: 1, full: false }]);
        let changes = doc.apply_changes(&[change(Some(((1, 0), (3, 0))), "")], 3);
        assert_eq!(changes, vec![LineChange { start_line: 1, end_line: 3, line_delta: -2, full: false }]);
        assert_eq!(doc.text, "a\nc\n");
    }
}
