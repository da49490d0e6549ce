//! The editor-side settings of `ant-lsp`, from `initializationOptions` or workspace
//! configuration, under `aniate`:
//!
//! ```json
//! { "aniate": { "reviewOnSave": false, "tools": ["fix", "review"], "maxFileSize": 1048576 } }
//! ```
//!
//! Settings arrive from editors in many shapes, so reading them is lenient: the `aniate` wrapper
//! is optional, unknown keys are ignored, and a value of the wrong type keeps the current value
//! and yields a warning.

use serde_json::Value;

/// 1 MiB, the server's own limit on a tool's input.
pub const DEFAULT_MAX_FILE_SIZE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Run the `review` tool when a document is saved, and publish its findings.
    pub review_on_save: bool,
    /// The tool slugs to offer; `None`: every installed tool.
    pub tools: Option<Vec<String>>,
    /// Documents larger than this many bytes get no actions.
    pub max_file_size: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { review_on_save: false, tools: None, max_file_size: DEFAULT_MAX_FILE_SIZE }
    }
}

impl Settings {
    /// Whether the tool `slug` is to be offered.
    pub fn offers(&self, slug: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.iter().any(|tool| tool == slug))
    }

    /// Takes the settings found in `value` (with or without an `aniate` wrapper), keeping the
    /// current value of anything absent or invalid; returns a warning per invalid value.
    pub fn update(&mut self, value: &Value) -> Vec<String> {
        let mut warnings = Vec::new();
        let object = match value.get("aniate") {
            Some(Value::Object(object)) => object,
            Some(Value::Null) | None => match value {
                Value::Object(object) => object,
                Value::Null => return warnings,
                _ => return vec!["ant-lsp settings must be an object".to_owned()],
            },
            Some(_) => return vec!["`aniate` settings must be an object".to_owned()],
        };
        if let Some(value) = object.get("reviewOnSave") {
            match value {
                Value::Bool(review_on_save) => self.review_on_save = *review_on_save,
                Value::Null => self.review_on_save = false,
                _ => warnings.push(format!("`aniate.reviewOnSave` must be true or false, not {value}")),
            }
        }
        if let Some(value) = object.get("tools") {
            match value {
                Value::Null => self.tools = None,
                Value::Array(items) => {
                    let slugs: Option<Vec<String>> =
                        items.iter().map(|item| item.as_str().map(str::to_owned)).collect();
                    match slugs {
                        Some(slugs) => self.tools = Some(slugs),
                        None => warnings.push(format!("`aniate.tools` must be a list of tool names, not {value}")),
                    }
                }
                _ => warnings.push(format!("`aniate.tools` must be a list of tool names, not {value}")),
            }
        }
        if let Some(value) = object.get("maxFileSize") {
            match value {
                Value::Null => self.max_file_size = DEFAULT_MAX_FILE_SIZE,
                Value::Number(n) if n.as_u64().is_some() => {
                    self.max_file_size = n.as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX);
                }
                _ => warnings.push(format!("`aniate.maxFileSize` must be a number of bytes, not {value}")),
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_read_with_or_without_the_wrapper() {
        let mut settings = Settings::default();
        assert!(settings.update(&json!({"aniate": {"reviewOnSave": true, "tools": ["fix"]}})).is_empty());
        assert!(settings.review_on_save);
        assert!(settings.offers("fix"));
        assert!(!settings.offers("review"));
        assert!(settings.update(&json!({"maxFileSize": 10, "somethingElse": 1})).is_empty());
        assert_eq!(settings.max_file_size, 10);
        assert!(settings.review_on_save, "absent keys keep their value");
        assert!(settings.update(&json!({"tools": null})).is_empty());
        assert!(settings.offers("anything"));
        assert!(settings.update(&Value::Null).is_empty());
    }

    #[test]
    fn bad_values_warn_and_keep_the_current_value() {
        let mut settings = Settings::default();
        let warnings = settings.update(&json!({"aniate": {"reviewOnSave": "yes", "tools": [1], "maxFileSize": -3}}));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.update(&json!({"aniate": 3})).len(), 1);
        assert_eq!(settings.update(&json!([1])).len(), 1);
    }
}
