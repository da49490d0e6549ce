//! Review findings as a SARIF 2.1.0 log (`ant review FILE --format sarif`), the format code
//! scanning services (GitHub code scanning, GitLab, IDE viewers) import.
//!
//! One run, one rule per tool (`aniate/review`), one result per finding. A finding's suggestion
//! becomes a `fix` that replaces the finding's lines with the suggestion's text.

use aniate_proto::tool::{Finding, Severity};
use serde::Serialize;

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
pub const SARIF_VERSION: &str = "2.1.0";
pub const INFORMATION_URI: &str = "https://github.com/aniate/aniate";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SarifLog {
    #[serde(rename = "$schema")]
    pub schema: &'static str,
    pub version: &'static str,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub tool: Tool,
    pub results: Vec<SarifResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub driver: Driver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Driver {
    pub name: &'static str,
    pub information_uri: &'static str,
    pub version: &'static str,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_description: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SarifResult {
    pub rule_id: String,
    pub rule_index: usize,
    pub level: Level,
    pub message: Message,
    pub locations: Vec<Location>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<Fix>,
}

/// SARIF's `level`; `info` and `hint` findings are `note`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Note,
}

impl From<Severity> for Level {
    fn from(severity: Severity) -> Level {
        match severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
            Severity::Info | Severity::Hint => Level::Note,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub physical_location: PhysicalLocation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalLocation {
    pub artifact_location: ArtifactLocation,
    pub region: Region,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactLocation {
    pub uri: String,
}

/// Whole lines, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    pub start_line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fix {
    pub description: Message,
    pub artifact_changes: Vec<ArtifactChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactChange {
    pub artifact_location: ArtifactLocation,
    pub replacements: Vec<Replacement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replacement {
    pub deleted_region: Region,
    pub inserted_content: ArtifactContent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactContent {
    pub text: String,
}

/// The SARIF log of `findings` by the tool `tool_slug` on `path` (`-` for stdin);
/// `tool_description` becomes the rule's short description when known.
pub fn sarif_log(tool_slug: &str, tool_description: Option<&str>, path: &str, findings: &[Finding]) -> SarifLog {
    let rule_id = format!("aniate/{tool_slug}");
    let uri = artifact_uri(path);
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|finding| (finding.line, finding.end_line));
    let results = sorted
        .into_iter()
        .map(|finding| {
            // SARIF lines start at 1, and a range never ends before it starts.
            let start_line = finding.line.max(1);
            let end_line = finding.end_line.filter(|end_line| *end_line > start_line);
            let region = Region { start_line, end_line };
            let fixes = finding
                .suggestion
                .as_deref()
                .filter(|suggestion| !suggestion.trim().is_empty())
                .map(|suggestion| Fix {
                    description: Message { text: suggestion.to_owned() },
                    artifact_changes: vec![ArtifactChange {
                        artifact_location: ArtifactLocation { uri: uri.clone() },
                        replacements: vec![Replacement {
                            deleted_region: Region { start_line, end_line: Some(end_line.unwrap_or(start_line)) },
                            inserted_content: ArtifactContent { text: suggestion.to_owned() },
                        }],
                    }],
                })
                .into_iter()
                .collect();
            SarifResult {
                rule_id: rule_id.clone(),
                rule_index: 0,
                level: finding.severity.into(),
                message: Message { text: finding.message.clone() },
                locations: vec![Location {
                    physical_location: PhysicalLocation {
                        artifact_location: ArtifactLocation { uri: uri.clone() },
                        region,
                    },
                }],
                fixes,
            }
        })
        .collect();
    SarifLog {
        schema: SCHEMA,
        version: SARIF_VERSION,
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "aniate",
                    information_uri: INFORMATION_URI,
                    version: aniate_proto::VERSION,
                    rules: vec![Rule {
                        id: rule_id.clone(),
                        name: tool_slug.to_owned(),
                        short_description: tool_description.map(|text| Message { text: text.to_owned() }),
                    }],
                },
            },
            results,
        }],
    }
}

/// [`sarif_log`] as pretty JSON, ending in a newline.
pub fn render_sarif(tool_slug: &str, tool_description: Option<&str>, path: &str, findings: &[Finding]) -> String {
    let log = sarif_log(tool_slug, tool_description, path, findings);
    // Plain structs of strings and numbers always serialize.
    let mut json = serde_json::to_string_pretty(&log).unwrap_or_default();
    json.push('\n');
    json
}

/// The artifact URI of a path as the user gave it: relative paths stay relative (with `/`
/// separators), absolute ones become `file://` URIs, stdin is `stdin`; characters a URI cannot
/// hold are percent-encoded.
pub fn artifact_uri(path: &str) -> String {
    if path == "-" || path.is_empty() {
        return "stdin".to_owned();
    }
    let path = path.replace('\\', "/");
    let path = path.strip_prefix("./").unwrap_or(&path);
    let is_windows_absolute = path.len() >= 3 && path.as_bytes()[1] == b':' && path.as_bytes()[2] == b'/';
    let (prefix, path) = if path.starts_with('/') {
        ("file://", path.to_owned())
    } else if is_windows_absolute {
        ("file:///", path.to_owned())
    } else {
        ("", path.to_owned())
    };
    let mut uri = prefix.to_owned();
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b'@'
            | b'+'
            | b','
            | b'=' => {
                uri.push(char::from(byte));
            }
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn findings() -> Vec<Finding> {
        vec![
            Finding {
                line: 12,
                end_line: Some(14),
                severity: Severity::Warning,
                message: "the file is never closed".into(),
                suggestion: Some("with open(path) as f:\n    data = f.read()".into()),
            },
            Finding {
                line: 3,
                end_line: None,
                severity: Severity::Error,
                message: "`b` is undefined".into(),
                suggestion: None,
            },
            Finding {
                line: 0,
                end_line: None,
                severity: Severity::Hint,
                message: "whole file".into(),
                suggestion: None,
            },
            Finding { line: 5, end_line: None, severity: Severity::Info, message: "fyi".into(), suggestion: None },
        ]
    }

    fn log_json() -> Value {
        serde_json::from_str(&render_sarif("review", Some("Reviews a file"), "src/app.py", &findings())).unwrap()
    }

    #[test]
    fn the_log_has_every_required_key() {
        let log = log_json();
        assert_eq!(log["$schema"], SCHEMA);
        assert_eq!(log["version"], "2.1.0");
        let runs = log["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let driver = &runs[0]["tool"]["driver"];
        assert_eq!(driver["name"], "aniate");
        assert_eq!(driver["informationUri"], INFORMATION_URI);
        assert_eq!(driver["version"], aniate_proto::VERSION);
        assert_eq!(
            driver["rules"],
            json!([{"id": "aniate/review", "name": "review", "shortDescription": {"text": "Reviews a file"}}])
        );
        let results = runs[0]["results"].as_array().unwrap();
        assert_eq!(results.len(), 4);
        for result in results {
            assert_eq!(result["ruleId"], "aniate/review");
            assert_eq!(result["ruleIndex"], 0);
            assert!(["error", "warning", "note"].contains(&result["level"].as_str().unwrap()), "{result}");
            assert!(result["message"]["text"].is_string(), "{result}");
            let location = &result["locations"][0]["physicalLocation"];
            assert_eq!(location["artifactLocation"]["uri"], "src/app.py");
            assert!(location["region"]["startLine"].as_u64().unwrap() >= 1, "{result}");
        }
    }

    #[test]
    fn results_are_sorted_with_levels_and_regions() {
        let log = log_json();
        let results = log["runs"][0]["results"].as_array().unwrap();
        let summary: Vec<(u64, Option<u64>, &str)> = results
            .iter()
            .map(|result| {
                let region = &result["locations"][0]["physicalLocation"]["region"];
                (region["startLine"].as_u64().unwrap(), region["endLine"].as_u64(), result["level"].as_str().unwrap())
            })
            .collect();
        assert_eq!(summary, vec![(1, None, "note"), (3, None, "error"), (5, None, "note"), (12, Some(14), "warning")]);
    }

    #[test]
    fn a_suggestion_becomes_a_fix() {
        let log = log_json();
        let results = log["runs"][0]["results"].as_array().unwrap();
        let with_fix: Vec<&Value> = results.iter().filter(|result| result.get("fixes").is_some()).collect();
        assert_eq!(with_fix.len(), 1);
        assert_eq!(
            with_fix[0]["fixes"],
            json!([{
                "description": {"text": "with open(path) as f:\n    data = f.read()"},
                "artifactChanges": [{
                    "artifactLocation": {"uri": "src/app.py"},
                    "replacements": [{
                        "deletedRegion": {"startLine": 12, "endLine": 14},
                        "insertedContent": {"text": "with open(path) as f:\n    data = f.read()"}
                    }]
                }]
            }])
        );
    }

    #[test]
    fn no_findings_is_a_valid_empty_run() {
        let log: Value = serde_json::from_str(&render_sarif("review", None, "-", &[])).unwrap();
        assert_eq!(log["runs"][0]["results"], json!([]));
        assert_eq!(log["runs"][0]["tool"]["driver"]["rules"], json!([{"id": "aniate/review", "name": "review"}]));
    }

    #[test]
    fn artifact_uris() {
        assert_eq!(artifact_uri("-"), "stdin");
        assert_eq!(artifact_uri("src/app.py"), "src/app.py");
        assert_eq!(artifact_uri("./src/app.py"), "src/app.py");
        assert_eq!(artifact_uri("my file#1.py"), "my%20file%231.py");
        assert_eq!(artifact_uri("/home/me/a.py"), "file:///home/me/a.py");
        assert_eq!(artifact_uri("src\\win.rs"), "src/win.rs");
        assert_eq!(artifact_uri("C:\\code\\a.rs"), "file:///C:/code/a.rs");
        assert_eq!(artifact_uri("é.py"), "%C3%A9.py");
    }

    /// Validates against the official schema when `ANIATE_SARIF_SCHEMA` names a copy of it
    /// (`sarif-schema-2.1.0.json`) and python3 has `jsonschema`; the schema is not vendored.
    #[test]
    fn validates_against_the_sarif_schema_when_available() {
        let Some(schema) = std::env::var_os("ANIATE_SARIF_SCHEMA") else { return };
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log.sarif");
        std::fs::write(&log_path, render_sarif("review", Some("Reviews"), "src/my app.py", &findings())).unwrap();
        let script = "import json, sys, jsonschema\n\
            schema = json.load(open(sys.argv[1]))\n\
            jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(json.load(open(sys.argv[2])))";
        let status = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&schema)
            .arg(&log_path)
            .status()
            .expect("ANIATE_SARIF_SCHEMA is set, so python3 with jsonschema must be available");
        assert!(status.success(), "the SARIF log does not match the schema");
    }
}
