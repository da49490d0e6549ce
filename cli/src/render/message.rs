//! Errors and warnings for stderr: `error: MESSAGE`, then `  hint: HINT` when there is one.

use aniate_proto::ipc::IpcError;

use super::style::{Palette, paint, sanitize_text};

/// `error: MESSAGE` and its hint, each line ending in `\n`.
pub fn render_error(message: &str, hint: Option<&str>, colored: bool) -> String {
    let palette = Palette::new(colored);
    labelled(paint(palette.error, "error"), message, hint, &palette)
}

/// `warning: MESSAGE` and its hint.
pub fn render_warning(message: &str, hint: Option<&str>, colored: bool) -> String {
    let palette = Palette::new(colored);
    labelled(paint(palette.warning, "warning"), message, hint, &palette)
}

/// An error from the daemon, with its hint.
pub fn render_ipc_error(error: &IpcError, colored: bool) -> String {
    render_error(&error.message, error.hint.as_deref(), colored)
}

fn labelled(label: String, message: &str, hint: Option<&str>, palette: &Palette) -> String {
    let mut out = format!("{label}: {}\n", sanitize_text(message.trim_end()));
    if let Some(hint) = hint.map(str::trim).filter(|hint| !hint.is_empty()) {
        out.push_str(&format!("  {}: {}\n", paint(palette.hint, "hint"), sanitize_text(hint)));
    }
    out
}

#[cfg(test)]
mod tests {
    use aniate_proto::ipc::IpcErrorCode;

    use super::*;

    #[test]
    fn errors_with_and_without_hints() {
        assert_eq!(render_error("no such file: a.py", None, false), "error: no such file: a.py\n");
        let error =
            IpcError::new(IpcErrorCode::NotInstalled, "fix is not installed").with_hint("run `ant install fix`");
        assert_eq!(render_ipc_error(&error, false), "error: fix is not installed\n  hint: run `ant install fix`\n");
        assert_eq!(render_warning("stale", Some(" "), false), "warning: stale\n");
    }

    #[test]
    fn coloured_label() {
        assert_eq!(render_error("x", None, true), "\u{1b}[1m\u{1b}[31merror\u{1b}[0m: x\n");
    }
}
