//! The code actions that stand for tool runs: their titles and kinds, and the data that
//! travels with them so that `codeAction/resolve` or `workspace/executeCommand` can run the
//! tool later. Listing them costs nothing: no daemon, no network.

use aniate_proto::tool::{OutputKind, ToolMeta};
use serde::{Deserialize, Serialize};
use tower_lsp_server::lsp_types::{CodeAction, CodeActionKind, Command, Range, Uri};

/// The one command `ant-lsp` executes: run a tool; its argument is a [`RunData`].
pub const RUN_COMMAND: &str = "aniate.run";

/// What a tool action needs to run: which tool, on which document, scoped to which range
/// (`None`: the whole document), as of which version. Also the argument of [`RUN_COMMAND`], so
/// an editor key binding can run a tool directly: `{"uri": "file:///…", "tool": "fix"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunData {
    pub uri: Uri,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
}

/// Whether the tool can be offered in an editor: `command` tools propose shell commands,
/// which belong in a terminal.
pub fn offerable(tool: &ToolMeta) -> bool {
    tool.output != OutputKind::Command
}

/// `Aniate: fix`, `Aniate: review`, `Aniate: explain (what)`, else `Aniate: <name>`.
pub fn title(tool: &ToolMeta) -> String {
    match tool.slug.as_str() {
        "fix" => "Aniate: fix".to_owned(),
        "review" => "Aniate: review".to_owned(),
        "what" => "Aniate: explain (what)".to_owned(),
        slug => {
            let name = tool.name.trim();
            format!("Aniate: {}", if name.is_empty() { slug } else { name })
        }
    }
}

/// `quickfix.aniate.fix` for fix, `refactor.rewrite.aniate.<slug>` for other tools that change
/// code, `source.aniate.<slug>` for those that report (review, explain).
pub fn kind(tool: &ToolMeta) -> CodeActionKind {
    let kind = match (tool.slug.as_str(), tool.output) {
        ("fix", _) => "quickfix.aniate.fix".to_owned(),
        (slug, OutputKind::Code) => format!("refactor.rewrite.aniate.{slug}"),
        (slug, _) => format!("source.aniate.{slug}"),
    };
    CodeActionKind::from(kind)
}

/// Whether `kind` is asked for by a request's `only` filter (LSP kinds are hierarchical:
/// `quickfix` asks for `quickfix.aniate.fix`).
pub fn wanted(kind: &CodeActionKind, only: Option<&[CodeActionKind]>) -> bool {
    let Some(only) = only else { return true };
    let kind = kind.as_str();
    only.iter().any(|wanted| {
        let wanted = wanted.as_str();
        wanted.is_empty() || kind == wanted || kind.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The action for a tool. A `code` tool's action is resolved into its edit when the client can
/// resolve edits; every other action carries the command that runs it.
pub fn tool_action(tool: &ToolMeta, data: RunData, client_resolves_edits: bool) -> CodeAction {
    let title = title(tool);
    let data_json = serde_json::to_value(&data).ok();
    let deferred = tool.output == OutputKind::Code && client_resolves_edits;
    CodeAction {
        kind: Some(kind(tool)),
        command: (!deferred).then(|| Command {
            title: title.clone(),
            command: RUN_COMMAND.to_owned(),
            arguments: data_json.clone().map(|data| vec![data]),
        }),
        data: data_json,
        title,
        ..CodeAction::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(slug: &str, name: &str, output: OutputKind) -> ToolMeta {
        ToolMeta {
            slug: slug.to_owned(),
            name: name.to_owned(),
            description: String::new(),
            model: "m".to_owned(),
            requires_file: true,
            output,
            version: 1,
            updated_at: String::new(),
        }
    }

    #[test]
    fn titles_and_kinds() {
        assert_eq!(title(&tool("fix", "Fix", OutputKind::Code)), "Aniate: fix");
        assert_eq!(title(&tool("what", "What", OutputKind::Text)), "Aniate: explain (what)");
        assert_eq!(title(&tool("docstrings", "Add docstrings", OutputKind::Code)), "Aniate: Add docstrings");
        assert_eq!(title(&tool("x", " ", OutputKind::Code)), "Aniate: x");
        assert_eq!(kind(&tool("fix", "Fix", OutputKind::Code)).as_str(), "quickfix.aniate.fix");
        assert_eq!(kind(&tool("review", "Review", OutputKind::Findings)).as_str(), "source.aniate.review");
        assert!(!offerable(&tool("shell", "Shell", OutputKind::Command)));
    }

    #[test]
    fn only_filters_by_kind_prefix() {
        let fix = CodeActionKind::from("quickfix.aniate.fix");
        assert!(wanted(&fix, None));
        assert!(wanted(&fix, Some(&[CodeActionKind::QUICKFIX])));
        assert!(!wanted(&fix, Some(&[CodeActionKind::SOURCE])));
        assert!(!wanted(&CodeActionKind::from("quickfixes"), Some(&[CodeActionKind::QUICKFIX])));
    }

    #[test]
    fn code_actions_defer_their_edit_others_carry_a_command() {
        let data = RunData { uri: "file:///a.py".parse().unwrap(), tool: "fix".into(), range: None, version: Some(3) };
        let fix = tool_action(&tool("fix", "Fix", OutputKind::Code), data.clone(), true);
        assert!(fix.command.is_none() && fix.edit.is_none());
        let back: RunData = serde_json::from_value(fix.data.unwrap()).unwrap();
        assert_eq!(back, data);
        let fix = tool_action(&tool("fix", "Fix", OutputKind::Code), data.clone(), false);
        assert_eq!(fix.command.unwrap().command, RUN_COMMAND);
        let review = tool_action(&tool("review", "Review", OutputKind::Findings), data, true);
        assert!(review.command.is_some());
    }
}
