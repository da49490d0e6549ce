//! Tool definition files (`server/tools/*.toml`, `ant-server admin tools push FILE.toml`) and
//! the validation every tool upsert goes through, whichever door it comes in by.

use aniate_proto::{api::ToolUpsert, tool::is_valid_slug};

/// The seed tools, compiled into the server (and only the server).
const SEEDS: [(&str, &str); 4] = [
    ("fix.toml", include_str!("../tools/fix.toml")),
    ("review.toml", include_str!("../tools/review.toml")),
    ("shell.toml", include_str!("../tools/shell.toml")),
    ("what.toml", include_str!("../tools/what.toml")),
];

/// Longest system prompt accepted: 64 KiB.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// Parses and validates a tool definition in TOML. The keys are those of
/// [`ToolUpsert`]; unknown keys are an error, so a typo does not pass silently.
pub fn parse_tool_toml(text: &str) -> Result<ToolUpsert, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ToolFile {
        slug: String,
        name: String,
        description: String,
        system_prompt: String,
        model: Option<String>,
        requires_file: Option<bool>,
        output: Option<aniate_proto::tool::OutputKind>,
        active: Option<bool>,
        guard: Option<aniate_proto::tool::GuardMode>,
        fallbacks: Option<Vec<String>>,
    }
    let file: ToolFile = toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())?;
    let tool = ToolUpsert {
        slug: file.slug,
        name: file.name,
        description: file.description,
        system_prompt: file.system_prompt,
        model: file.model,
        requires_file: file.requires_file,
        output: file.output,
        active: file.active,
        guard: file.guard,
        message: None,
        fallbacks: file.fallbacks,
    };
    validate(&tool)?;
    Ok(tool)
}

/// Checks a tool before it is stored; the message names the field.
pub fn validate(tool: &ToolUpsert) -> Result<(), String> {
    if !is_valid_slug(&tool.slug) {
        return Err(format!(
            "invalid slug `{}`: use 1 to 32 of a-z, 0-9 and -, starting with a letter or digit",
            tool.slug.escape_debug()
        ));
    }
    check_text("name", &tool.name, 80)?;
    check_text("description", &tool.description, 300)?;
    if tool.system_prompt.trim().is_empty() {
        return Err("system_prompt must not be empty".to_owned());
    }
    if tool.system_prompt.len() > MAX_PROMPT_BYTES {
        return Err(format!("system_prompt is longer than {MAX_PROMPT_BYTES} bytes"));
    }
    if let Some(model) = &tool.model {
        check_text("model", model, 128)?;
        crate::providers::check_model_ref(model).map_err(|err| format!("model: {err}"))?;
    }
    if let Some(fallbacks) = &tool.fallbacks {
        crate::providers::check_fallbacks(fallbacks)?;
    }
    check_message(tool.message.as_deref())?;
    Ok(())
}

/// A version's message: optional, one line, at most 200 characters.
pub fn check_message(message: Option<&str>) -> Result<(), String> {
    match message {
        Some(message) if !message.is_empty() => check_text("message", message, 200),
        _ => Ok(()),
    }
}

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(format!("{field} is longer than {max_chars} characters"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("{field} must be a single line without control characters"));
    }
    Ok(())
}

/// The seed tools. They are part of the build, so a broken one is a bug caught by the tests
/// below, not an input error.
pub fn seed_tools() -> Vec<ToolUpsert> {
    SEEDS
        .iter()
        .map(|(file, text)| parse_tool_toml(text).unwrap_or_else(|err| panic!("seed tool {file} is invalid: {err}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use aniate_proto::tool::OutputKind;

    use super::*;

    #[test]
    fn seeds_parse_and_have_their_kinds() {
        let seeds = seed_tools();
        let kinds: Vec<(&str, Option<OutputKind>, Option<bool>)> =
            seeds.iter().map(|t| (t.slug.as_str(), t.output, t.requires_file)).collect();
        assert_eq!(
            kinds,
            vec![
                ("fix", Some(OutputKind::Code), Some(true)),
                ("review", Some(OutputKind::Findings), Some(true)),
                ("shell", Some(OutputKind::Command), Some(false)),
                ("what", Some(OutputKind::Text), Some(false)),
            ]
        );
    }

    #[test]
    fn bad_files_get_messages_naming_the_problem() {
        let cases = [
            ("slug = 'x'", "missing field"),
            ("slug='../x'\nname='n'\ndescription='d'\nsystem_prompt='p'", "invalid slug"),
            ("slug='x'\nname=''\ndescription='d'\nsystem_prompt='p'", "name must not be empty"),
            ("slug='x'\nname='n'\ndescription='d'\nsystem_prompt=' '", "system_prompt must not be empty"),
            ("slug='x'\nname='n'\ndescription='d'\nsystem_prompt='p'\nouput='code'", "unknown field"),
            ("slug='x'\nname='n'\ndescription='d'\nsystem_prompt='p'\noutput='json'", "unknown variant"),
            ("not toml at all [", "expected"),
            (
                "slug='x'\nname='n'\ndescription='d'\nsystem_prompt='p'\nfallbacks=['ok', '']",
                "fallbacks: a model must not be empty",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_tool_toml(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: any text as a tool file gives a tool or a message, never a panic, and a
    //! tool that parses passes validation.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        // PROPTEST_CASES=N runs more (docs/reliability.md has the long runs).
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)))]

        #[test]
        fn tool_files_parse_or_explain(text in "(\\PC|\n){0,300}") {
            match parse_tool_toml(&text) {
                Ok(tool) => prop_assert!(validate(&tool).is_ok()),
                Err(message) => prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn any_slug_is_checked(slug in "\\PC{0,40}") {
            let text = format!("slug = {slug:?}\nname = \"n\"\ndescription = \"d\"\nsystem_prompt = \"p\"\n");
            if let Ok(tool) = parse_tool_toml(&text) {
                prop_assert!(aniate_proto::tool::is_valid_slug(&tool.slug));
            }
        }
    }
}
