//! The command line of `ant-lsp`: it serves LSP on stdio; `--version` and `--help` answer and
//! exit. Editors often pass `--stdio`, which is accepted.

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Serve,
    Version,
    Help,
    /// A usage error, to print with the help hint (exit 2).
    Usage(String),
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Action {
    let mut action = Action::Serve;
    for arg in args {
        match arg.as_str() {
            "--version" | "-V" => return Action::Version,
            "--help" | "-h" => action = Action::Help,
            "--stdio" => {}
            other => return Action::Usage(format!("unexpected argument `{other}`")),
        }
    }
    action
}

pub fn version() -> String {
    format!("ant-lsp {}\n", crate::VERSION)
}

pub const HELP: &str = "\
ant-lsp: Aniate's tools as code actions in your editor

Usage: ant-lsp [--stdio]

Speaks the Language Server Protocol on stdin/stdout; your editor starts it. It runs tools
through the aniated daemon (started on demand) with your `ant` login and installed tools:
  ant login              # once
  ant install fix review what

Code actions (on a selection, or the whole file without one):
  Aniate: fix              edits the code in place (the smallest edits, undoable)
  Aniate: review           findings as diagnostics, with quick fixes for suggestions
  Aniate: explain (what)   an explanation, as a message or a Markdown document
  Aniate: <name>           any other installed tool that edits, reviews or explains
The command `aniate.run` runs a tool directly: arguments [{\"uri\": URI, \"tool\": SLUG, \"range\"?: RANGE}].

Editor setup (full examples in docs/editors.md):
  Neovim 0.10+  vim.lsp.start({ name = 'ant-lsp', cmd = { 'ant-lsp' }, root_dir = vim.fn.getcwd() })
  Helix         languages.toml: [language-server.ant-lsp]  command = \"ant-lsp\"
                and add \"ant-lsp\" to a language's language-servers
  Emacs eglot   (add-to-list 'eglot-server-programs '((python-mode) . (\"ant-lsp\")))
  VS Code, Zed  a generic LSP client pointed at the command `ant-lsp`

Settings (initializationOptions, or workspace configuration under \"aniate\"):
  reviewOnSave  run `review` when a file is saved          (default false)
  tools         the tool names to offer                     (default: all installed)
  maxFileSize   larger files get no actions, in bytes       (default 1048576)

Environment:
  ANIATE_HOME        the client home (default ~/.aniate)
  ANIATE_LOG         log filter, e.g. debug; logs go to stderr (stdout is the LSP channel)
  ANIATE_DAEMON_EXE  the aniated to start (default: next to ant-lsp, else on PATH)

Options:
  -h, --help     this help
  -V, --version  the version
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(args(&[])), Action::Serve);
        assert_eq!(parse(args(&["--stdio"])), Action::Serve);
        assert_eq!(parse(args(&["--help"])), Action::Help);
        assert_eq!(parse(args(&["--stdio", "--version"])), Action::Version);
        assert!(matches!(parse(args(&["--port", "1"])), Action::Usage(message) if message.contains("--port")));
        assert!(version().starts_with("ant-lsp "));
    }
}
