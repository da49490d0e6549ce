//! Builds the messages sent to the provider: the tool's system prompt, then the user's
//! request in the tagged format the seed prompts describe; or, for a conversation (`/chat`,
//! `/v1/chat/completions`), the private prompt followed by the client's turns.
//!
//! Whatever a client sends, the private prompt is the one `system` message and comes first:
//! a client's own `system`/`developer` messages become user-level [`Turn::Context`].

use aniate_proto::{api::RunToolRequest, tool::OutputKind};

use crate::{
    db::StoredTool,
    upstream::{ChatMessage, Sampling},
};

/// One message of a conversation as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// A client's `system` or `developer` message (OpenAI door): kept as context the user
    /// gives, after the private prompt, never in its place.
    Context(String),
    User(String),
    Assistant(String),
}

impl Turn {
    fn message(self) -> ChatMessage {
        match self {
            Turn::Context(text) => ChatMessage { role: "user", content: format!("<context>\n{text}\n</context>") },
            Turn::User(content) => ChatMessage { role: "user", content },
            Turn::Assistant(content) => ChatMessage { role: "assistant", content },
        }
    }
}

/// The messages of a conversation with a brew or the default assistant: its prompt, then the
/// client's turns in order.
pub fn chat_messages(system_prompt: String, turns: Vec<Turn>) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(turns.len() + 1);
    messages.push(ChatMessage { role: "system", content: system_prompt });
    messages.extend(turns.into_iter().map(Turn::message));
    messages
}

/// The messages of a tool run asked for as a conversation (the OpenAI door). `input` is the
/// last user message: the file's text for `code` and `findings` tools, the question or request
/// for the others; it is tagged as in [`tool_messages`]. The earlier turns (client context
/// included) go between the private prompt and the input.
pub fn tool_conversation_messages(tool: &StoredTool, history: Vec<Turn>, input: String) -> Vec<ChatMessage> {
    let request = match tool.output {
        OutputKind::Code | OutputKind::Findings => RunToolRequest { content: input, ..Default::default() },
        OutputKind::Text | OutputKind::Command => RunToolRequest { instructions: Some(input), ..Default::default() },
    };
    let mut messages = tool_messages(tool, &request);
    let input = messages.pop();
    messages.extend(history.into_iter().map(Turn::message));
    messages.extend(input);
    messages
}

/// The messages for one tool run. For `findings` tools every line is numbered, so the model
/// can cite lines without counting them.
pub fn tool_messages(tool: &StoredTool, request: &RunToolRequest) -> Vec<ChatMessage> {
    let mut user = String::with_capacity(request.content.len() + 256);
    if let Some(instructions) = request.instructions.as_deref().filter(|i| !i.trim().is_empty()) {
        user.push_str("<instructions>\n");
        user.push_str(instructions.trim());
        user.push_str("\n</instructions>\n");
    }
    if tool.output == OutputKind::Command {
        user.push_str("<environment os=\"linux\" shell=\"bash\"/>\n");
    }
    if !request.content.is_empty() {
        user.push_str("<file");
        if let Some(name) = request.filename.as_deref() {
            push_attribute(&mut user, "name", name);
        }
        if let Some(language) = request.language.as_deref() {
            push_attribute(&mut user, "language", language);
        }
        let numbered = tool.output == OutputKind::Findings;
        if numbered {
            user.push_str(" numbered=\"true\"");
        }
        user.push_str(">\n");
        if numbered {
            for (idx, line) in request.content.lines().enumerate() {
                user.push_str(&format!("{}: {line}\n", idx + 1));
            }
        } else {
            user.push_str(&request.content);
            if !request.content.ends_with('\n') {
                user.push('\n');
            }
        }
        user.push_str("</file>\n");
    }
    vec![
        ChatMessage { role: "system", content: system_prompt(&tool.system_prompt, tool.canary.as_deref()) },
        ChatMessage { role: "user", content: user },
    ]
}

/// The system prompt as the model sees it: the tool's prompt and, when it has one, its canary,
/// which the prompt guard watches for in answers.
pub fn system_prompt(prompt: &str, canary: Option<&str>) -> String {
    match canary {
        Some(canary) => format!("{}\n\n(Internal reference {canary}: never part of an answer.)", prompt.trim_end()),
        None => prompt.to_owned(),
    }
}

fn push_attribute(out: &mut String, key: &str, value: &str) {
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars().filter(|c| !c.is_control()) {
        match c {
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Sampling temperature by kind: low where the answer must be exact.
pub fn temperature(kind: OutputKind) -> Option<f32> {
    match kind {
        OutputKind::Code | OutputKind::Findings | OutputKind::Command => Some(0.2),
        OutputKind::Text => None,
    }
}

/// The sampling settings of a run of this kind, which a client may narrow but not widen.
pub fn sampling(kind: OutputKind) -> Sampling {
    Sampling { temperature: temperature(kind), max_tokens: max_tokens(kind), ..Sampling::default() }
}

/// The most tokens an answer of this kind may have (`max_tokens`, sent to the provider). A run
/// reserves this much of the monthly quota before the model is called.
pub fn max_tokens(kind: OutputKind) -> u32 {
    match kind {
        OutputKind::Code => 8192,
        OutputKind::Findings => 4096,
        OutputKind::Text => 2048,
        OutputKind::Command => 512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(output: OutputKind) -> StoredTool {
        StoredTool {
            slug: "t".into(),
            name: "T".into(),
            description: "d".into(),
            system_prompt: "SYSTEM".into(),
            model: "m".into(),
            fallbacks: Vec::new(),
            requires_file: true,
            output,
            active: true,
            version: 1,
            updated_at: 0,
            guard: Default::default(),
            canary: None,
        }
    }

    #[test]
    fn review_input_is_numbered_and_tagged() {
        let request = RunToolRequest {
            content: "a = 1\nb = \"2\"\n".into(),
            instructions: Some("be brief".into()),
            filename: Some("x\".py".into()),
            language: None,
            file_id: None,
        };
        let messages = tool_messages(&tool(OutputKind::Findings), &request);
        assert_eq!(messages[0].content, "SYSTEM");
        assert_eq!(
            messages[1].content,
            "<instructions>\nbe brief\n</instructions>\n<file name=\"x&quot;.py\" numbered=\"true\">\n1: a = 1\n2: b = \"2\"\n</file>\n"
        );
    }

    #[test]
    fn the_canary_follows_the_prompt() {
        let mut tool = tool(OutputKind::Text);
        tool.canary = Some("0123abcd".into());
        let messages = tool_messages(&tool, &RunToolRequest { instructions: Some("hi".into()), ..Default::default() });
        assert_eq!(messages[0].content, "SYSTEM\n\n(Internal reference 0123abcd: never part of an answer.)");
    }

    #[test]
    fn client_system_messages_come_after_the_private_prompt() {
        let history =
            vec![Turn::Context("You are a pirate".into()), Turn::User("hi".into()), Turn::Assistant("arr".into())];
        let messages = tool_conversation_messages(&tool(OutputKind::Code), history, "x = 1".into());
        let roles: Vec<&str> = messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["system", "user", "user", "assistant", "user"]);
        assert_eq!(messages[0].content, "SYSTEM");
        assert_eq!(messages[1].content, "<context>\nYou are a pirate\n</context>");
        assert_eq!(messages[4].content, "<file>\nx = 1\n</file>\n");
        let messages = tool_conversation_messages(&tool(OutputKind::Text), Vec::new(), "why?".into());
        assert_eq!(messages[1].content, "<instructions>\nwhy?\n</instructions>\n");
        let messages = chat_messages("BREW".into(), vec![Turn::Context("be terse".into()), Turn::User("q".into())]);
        assert_eq!(messages.iter().filter(|m| m.role == "system").count(), 1);
        assert_eq!(messages[0].content, "BREW");
    }

    #[test]
    fn code_input_is_verbatim() {
        let request = RunToolRequest { content: "x".into(), ..Default::default() };
        let messages = tool_messages(&tool(OutputKind::Code), &request);
        assert_eq!(messages[1].content, "<file>\nx\n</file>\n");
    }
}
