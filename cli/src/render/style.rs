//! Whether to colour, and with which styles.
//!
//! Colour is on only when the output is a terminal, `NO_COLOR` is unset or empty, and `--color`
//! is not `never`; `--color always` forces it on (see <https://no-color.org>). Renderers take a
//! `colored: bool` and build a [`Palette`] from it: an uncoloured palette's styles render as
//! nothing, so the same code yields plain text.

use std::{borrow::Cow, ffi::OsStr};

use aniate_proto::tool::Severity;
use anstyle::{AnsiColor, Style};

use crate::args::ColorChoice;

/// Whether to colour an output stream.
///
/// `is_tty` is whether that stream is a terminal; `no_color_env` is the value of `NO_COLOR`.
pub fn use_color(choice: ColorChoice, is_tty: bool, no_color_env: Option<&OsStr>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_tty && no_color_env.is_none_or(OsStr::is_empty),
    }
}

/// The styles of everything `ant` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    pub error: Style,
    pub warning: Style,
    pub info: Style,
    pub hint: Style,
    /// Added lines of a diff, good news.
    pub added: Style,
    /// Removed lines of a diff.
    pub removed: Style,
    /// `@@` lines of a diff.
    pub hunk: Style,
    /// Table headers, commands.
    pub bold: Style,
    /// Secondary text.
    pub dim: Style,
}

impl Palette {
    /// The palette for coloured output, or one whose styles print nothing.
    pub fn new(colored: bool) -> Palette {
        if !colored {
            return Palette::plain();
        }
        Palette {
            error: AnsiColor::Red.on_default().bold(),
            warning: AnsiColor::Yellow.on_default().bold(),
            info: AnsiColor::Blue.on_default().bold(),
            hint: AnsiColor::Cyan.on_default(),
            added: AnsiColor::Green.on_default(),
            removed: AnsiColor::Red.on_default(),
            hunk: AnsiColor::Cyan.on_default(),
            bold: Style::new().bold(),
            dim: Style::new().dimmed(),
        }
    }

    pub fn plain() -> Palette {
        let plain = Style::new();
        Palette {
            error: plain,
            warning: plain,
            info: plain,
            hint: plain,
            added: plain,
            removed: plain,
            hunk: plain,
            bold: plain,
            dim: plain,
        }
    }

    pub fn severity(&self, severity: Severity) -> Style {
        match severity {
            Severity::Error => self.error,
            Severity::Warning => self.warning,
            Severity::Info => self.info,
            Severity::Hint => self.hint,
        }
    }
}

/// `text` in `style`; just `text` for a plain style.
pub fn paint(style: Style, text: &str) -> String {
    if style == Style::new() || text.is_empty() { text.to_owned() } else { format!("{style}{text}{style:#}") }
}

/// `text` with control characters (escape sequences included) replaced by `�`, keeping newlines
/// and tabs: text from the server or a model must not drive the user's terminal.
pub fn sanitize_text(text: &str) -> Cow<'_, str> {
    sanitize(text, |c| c == '\n' || c == '\t')
}

/// `text` on one line: newlines and tabs become spaces, other control characters `�`.
pub fn sanitize_line(text: &str) -> Cow<'_, str> {
    sanitize(text, |_| false)
}

/// Whether `c` is invisible or moves the text around: a control character other than a new line
/// or tab, or a Unicode format character (category Cf: bidi overrides and isolates such as
/// U+2067, zero-width spaces and joiners, the byte-order mark, tag characters).
pub fn is_hidden_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    (c.is_control() && c != '\n' && c != '\t') || c.general_category() == GeneralCategory::Format
}

/// `text` with every [hidden character](is_hidden_char) written as a Rust escape (`\u{2067}`),
/// so what is shown is exactly what would run.
pub fn escape_hidden(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden_char) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden_char(c) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

fn sanitize(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if !c.is_control() || keep(c) => clean.push(c),
            // A Windows line ending counts as one break.
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\t' | '\r' => clean.push(' '),
            _ => clean.push('\u{FFFD}'),
        }
    }
    Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_decision() {
        let empty = OsStr::new("");
        let set = OsStr::new("1");
        assert!(use_color(ColorChoice::Auto, true, None));
        assert!(use_color(ColorChoice::Auto, true, Some(empty)));
        assert!(!use_color(ColorChoice::Auto, true, Some(set)));
        assert!(!use_color(ColorChoice::Auto, false, None));
        assert!(use_color(ColorChoice::Always, false, Some(set)));
        assert!(!use_color(ColorChoice::Never, true, None));
    }

    #[test]
    fn plain_palette_prints_nothing_extra() {
        let palette = Palette::new(false);
        assert_eq!(paint(palette.error, "error"), "error");
        assert_eq!(paint(palette.severity(Severity::Hint), "hint"), "hint");
        assert_eq!(palette, Palette::plain());
    }

    #[test]
    fn coloured_palette_wraps_in_escapes() {
        let palette = Palette::new(true);
        assert_eq!(paint(palette.error, "error"), "\u{1b}[1m\u{1b}[31merror\u{1b}[0m");
        assert_eq!(paint(palette.added, "+x"), "\u{1b}[32m+x\u{1b}[0m");
        assert_eq!(paint(palette.added, ""), "");
    }

    #[test]
    fn sanitizing() {
        assert!(matches!(sanitize_text("plain\ttext\n"), Cow::Borrowed(_)));
        assert_eq!(sanitize_text("a\u{1b}[2Jb\n"), "a\u{FFFD}[2Jb\n");
        assert_eq!(sanitize_line("one\r\ntwo\tthree\u{7}"), "one two three\u{FFFD}");
        assert_eq!(sanitize_line("ok"), "ok");
    }

    #[test]
    fn hidden_characters_are_escaped() {
        assert!(matches!(escape_hidden("ls -la\n\tdone"), Cow::Borrowed(_)));
        assert_eq!(escape_hidden("echo \u{2067}safe\u{2069}"), "echo \\u{2067}safe\\u{2069}");
        assert_eq!(escape_hidden("a\u{200b}b\u{feff}\u{202e}"), "a\\u{200b}b\\u{feff}\\u{202e}");
        assert_eq!(escape_hidden("x\u{1b}[2J\ry\u{7f}"), "x\\u{1b}[2J\\u{d}y\\u{7f}");
        assert_eq!(escape_hidden("tag\u{e0041}"), "tag\\u{e0041}");
        // Letters of any script are not hidden.
        assert_eq!(escape_hidden("echo héllo мир 🦀"), "echo héllo мир 🦀");
    }
}
