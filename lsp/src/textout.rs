//! Where a `text` tool's answer goes: a short answer in a message, a longer one in a Markdown
//! document the editor opens (`window/showDocument`), or, for an editor that cannot open
//! one, in a message all the same.

use std::path::PathBuf;

/// Answers of at most this many characters and lines are shown as a message.
const SHORT_CHARS: usize = 240;
const SHORT_LINES: usize = 3;

/// A message longer than this is cut (editors show messages in small popups).
const MAX_MESSAGE_CHARS: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    /// `window/showMessage` with this text.
    Message(String),
    /// `window/showDocument` of a Markdown file with this content.
    Document(String),
}

/// The rule: short answers are messages; longer ones are documents when the editor can show
/// one, else (cut) messages.
pub fn present(title: &str, answer: &str, client_shows_documents: bool) -> Presentation {
    let answer = answer.trim();
    let n_lines = answer.lines().filter(|line| !line.trim().is_empty()).count();
    if answer.chars().count() <= SHORT_CHARS && n_lines <= SHORT_LINES {
        return Presentation::Message(format!("{title}: {answer}"));
    }
    if client_shows_documents {
        return Presentation::Document(format!("# {title}\n\n{answer}\n"));
    }
    let mut message: String = answer.chars().take(MAX_MESSAGE_CHARS).collect();
    if answer.chars().count() > MAX_MESSAGE_CHARS {
        message.push_str("\n…");
    }
    Presentation::Message(format!("{title}:\n{message}"))
}

/// Writes `content` to a new `aniate-<slug>-<random>.md` in the system temp dir (created
/// exclusively, readable by the user only) and returns its path.
pub fn write_markdown(slug: &str, content: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let mut file = tempfile::Builder::new().prefix(&format!("aniate-{slug}-")).suffix(".md").tempfile()?;
    file.write_all(content.as_bytes())?;
    let (_, path) = file.keep().map_err(|err| err.error)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_are_messages_long_ones_documents() {
        assert_eq!(present("what", "  A monad.\n", true), Presentation::Message("what: A monad.".to_owned()));
        let long = "line\n".repeat(10);
        assert!(
            matches!(present("what", &long, true), Presentation::Document(doc) if doc.starts_with("# what\n\nline"))
        );
        assert!(matches!(present("what", &long, false), Presentation::Message(m) if m.starts_with("what:\nline")));
        let huge = "x".repeat(MAX_MESSAGE_CHARS * 2);
        let Presentation::Message(cut) = present("what", &huge, false) else { panic!("a message") };
        assert!(cut.chars().count() < MAX_MESSAGE_CHARS + 20);
    }

    #[test]
    fn markdown_files_are_named_for_the_tool() {
        let path = write_markdown("what", "# hi\n").unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("aniate-what-") && name.ends_with(".md"), "{name}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# hi\n");
        std::fs::remove_file(path).unwrap();
    }
}
