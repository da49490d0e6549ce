//! Tool metadata as clients see it, and the structured results tools produce.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// What a tool's answer is, which decides what a client does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Prose, streamed to the user as it comes (`what`).
    Text,
    /// The whole corrected file (`fix`); `done.result` holds it without Markdown fences.
    Code,
    /// A list of [`Finding`]s (`review`).
    Findings,
    /// A shell command to run, with its explanation (`shell`).
    Command,
}

impl OutputKind {
    pub const ALL: [OutputKind; 4] = [OutputKind::Text, OutputKind::Code, OutputKind::Findings, OutputKind::Command];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Text => "text",
            OutputKind::Code => "code",
            OutputKind::Findings => "findings",
            OutputKind::Command => "command",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown output kind `{s}` (expected text, code, findings or command)"))
    }
}

/// What the server's prompt guard does when an answer repeats the tool's private prompt
/// (`guard` in a tool file and `POST /admin/tools`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// Stop the answer before the repeated words reach the client (the default).
    #[default]
    Block,
    /// Relay the answer unchanged; log and count the leak.
    Log,
    /// No guard.
    Off,
}

impl GuardMode {
    pub const ALL: [GuardMode; 3] = [GuardMode::Block, GuardMode::Log, GuardMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Block => "block",
            GuardMode::Log => "log",
            GuardMode::Off => "off",
        }
    }
}

impl fmt::Display for GuardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuardMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GuardMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| format!("unknown guard `{s}` (expected block, log or off)"))
    }
}

/// A tool as every client sees it: `GET /tools`, `tools/<slug>.json` on the client.
///
/// **Architecture Invariant:** there is no prompt field here, on purpose. Only the server's own
/// record type carries a tool's system prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolMeta {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub model: String,
    pub requires_file: bool,
    pub output: OutputKind,
    /// Bumped by the server on every change of the tool.
    pub version: i64,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// How serious a review finding is; maps onto LSP and SARIF levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
    Hint,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
            Severity::Hint => "hint",
        }
    }

    /// Reads the words models actually use for a severity, case-insensitively.
    pub fn parse_lenient(word: &str) -> Option<Severity> {
        match word.trim().to_ascii_lowercase().as_str() {
            "error" | "critical" | "high" | "bug" | "fatal" => Some(Severity::Error),
            "warning" | "warn" | "medium" | "moderate" => Some(Severity::Warning),
            "info" | "information" | "note" | "low" | "style" => Some(Severity::Info),
            "hint" | "nit" | "suggestion" => Some(Severity::Hint),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One review finding, with 1-based line numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    pub line: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    pub severity: Severity,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// A shell command proposed by a `command` tool. Clients never run it without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandSuggestion {
    pub command: String,
    pub explanation: String,
    /// Set by the server when the command is more than one command or matches a destructive
    /// pattern; clients then ask harder (`ant shell` wants the command's first word typed, and
    /// only `--yes-dangerous` runs it unasked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerous: Option<Danger>,
}

/// Why a proposed command is dangerous, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Danger {
    pub reason: String,
}

/// Why the server refused to turn an answer into a structured result (`done.result_rejected`).
/// The answer is still there, as the text of the `delta`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResultRejected {
    /// The answer is not plausibly the corrected file: prose, a refusal, another file, or too
    /// little of the original kept (see `docs/api.md`).
    NotAFile,
    /// The answer was cut: by the token limit (`finish_reason: length`) or inside a code fence.
    Truncated,
    /// The answer was empty.
    Empty,
}

impl ResultRejected {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultRejected::NotAFile => "not_a_file",
            ResultRejected::Truncated => "truncated",
            ResultRejected::Empty => "empty",
        }
    }

    /// Why, in words for the user.
    pub fn describe(self) -> &'static str {
        match self {
            ResultRejected::NotAFile => "the answer is not a corrected version of the file",
            ResultRejected::Truncated => "the answer was cut off before its end",
            ResultRejected::Empty => "the answer was empty",
        }
    }
}

impl fmt::Display for ResultRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the server changed in a `findings` answer so that every finding fits the file
/// (`done.findings_adjusted`; absent when nothing was changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FindingsAdjusted {
    /// Findings dropped because their line is not in the file (0, negative, or past its end).
    #[serde(default)]
    pub dropped_out_of_range: u32,
    /// Findings whose `end_line` was past the end of the file, cut to its last line.
    #[serde(default)]
    pub clamped: u32,
    /// Findings merged into an earlier one with the same line and message.
    #[serde(default)]
    pub merged_duplicates: u32,
    /// Findings whose severity was not a known word, mapped to the nearest known one.
    #[serde(default)]
    pub severities_mapped: u32,
}

impl FindingsAdjusted {
    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        *self == FindingsAdjusted::default()
    }
}

/// The structured result in `done.result`, shaped by the tool's [`OutputKind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum ToolResult {
    /// `code`: the whole corrected file.
    Code(String),
    /// `findings`.
    Findings(Vec<Finding>),
    /// `command`.
    Command(CommandSuggestion),
}

/// Whether `slug` is a valid tool slug: 1 to 32 of `a-z`, `0-9` and `-`, starting with a letter
/// or digit. Slugs become file names on clients, so nothing else is allowed.
pub fn is_valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["fix", "what", "a", "code-review-2", "9lives"] {
            assert!(is_valid_slug(good), "{good}");
        }
        for bad in ["", "-x", "Fix", "../etc", "a/b", "a.b", "a b", &"x".repeat(33), "é"] {
            assert!(!is_valid_slug(bad), "{bad}");
        }
    }

    #[test]
    fn tool_result_shapes_round_trip() {
        let results = [
            ToolResult::Code("fn main() {}\n".into()),
            ToolResult::Findings(vec![Finding {
                line: 3,
                end_line: None,
                severity: Severity::Warning,
                message: "unused".into(),
                suggestion: Some("remove it".into()),
            }]),
            ToolResult::Command(CommandSuggestion {
                command: "ls".into(),
                explanation: "lists".into(),
                dangerous: None,
            }),
            ToolResult::Command(CommandSuggestion {
                command: "sudo rm -rf /".into(),
                explanation: "wipes".into(),
                dangerous: Some(Danger { reason: "runs as root (sudo)".into() }),
            }),
        ];
        for result in results {
            let json = serde_json::to_string(&result).unwrap();
            let back: ToolResult = serde_json::from_str(&json).unwrap();
            assert_eq!(back, result);
        }
    }

    #[test]
    fn output_kind_parses_its_own_names_only() {
        for kind in OutputKind::ALL {
            assert_eq!(kind.as_str().parse::<OutputKind>().unwrap(), kind);
        }
        assert!("json".parse::<OutputKind>().unwrap_err().contains("json"));
    }
}
