//! SARIF 2.1.0 (OASIS) as serde types: the subset code-scanning tools read
//! — one tool with its rules, results with physical and/or logical
//! locations, fingerprints, property bags. Generic on purpose: the scanner
//! (`mandate-scan`) and the posture report (`mandate-governance`) both
//! write it. Their tests validate what they write against the official
//! schema vendored here (`tests/sarif-schema-2.1.0.json`).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";
pub const VERSION: &str = "2.1.0";

/// Free-form `properties` (SARIF §3.8): tags, security-severity…
pub type PropertyBag = serde_json::Map<String, serde_json::Value>;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SarifLog {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub version: String,
    pub runs: Vec<Run>,
}

impl SarifLog {
    /// A 2.1.0 log of these runs.
    pub fn new(runs: Vec<Run>) -> SarifLog {
        SarifLog {
            schema: SCHEMA.to_owned(),
            version: VERSION.to_owned(),
            runs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub tool: Tool,
    pub results: Vec<SarifResult>,
    /// How `startColumn` counts: `unicodeCodePoints` or `utf16CodeUnits`
    /// (the default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_kind: Option<String>,
    /// Where relative `uri`s start, by `uriBaseId` (e.g. `SRCROOT`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub original_uri_base_ids: BTreeMap<String, ArtifactLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<PropertyBag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub driver: ToolComponent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolComponent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub information_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ReportingDescriptor>,
}

/// A rule's metadata (SARIF §3.49).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportingDescriptor {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_description: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_description: Option<Message>,
    /// How to fix it (text, and optionally markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_configuration: Option<ReportingConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<PropertyBag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportingConfiguration {
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    None,
    Note,
    Warning,
    Error,
}

/// Plain text, optionally with a markdown rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
}

impl Message {
    pub fn text(text: impl Into<String>) -> Message {
        Message {
            text: text.into(),
            markdown: None,
        }
    }
}

/// One result (SARIF §3.27). Named so as not to shadow `std::result::Result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SarifResult {
    pub rule_id: String,
    /// Index of the rule in `tool.driver.rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<usize>,
    pub level: Level,
    pub message: Message,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Stable identities a viewer matches results by across runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partial_fingerprints: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<PropertyBag>,
}

/// Where: a place in a file, and/or a named thing (an agent, a tool, a
/// secret) for results that have no file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_location: Option<PhysicalLocation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logical_locations: Vec<LogicalLocation>,
}

impl Location {
    /// Line and column (1-based) in the file at `uri`.
    pub fn in_file(uri: impl Into<String>, start_line: u64, start_column: u64) -> Location {
        Location {
            physical_location: Some(PhysicalLocation {
                artifact_location: ArtifactLocation {
                    uri: uri.into(),
                    uri_base_id: None,
                },
                region: Some(Region {
                    start_line,
                    start_column: Some(start_column),
                    end_line: None,
                    end_column: None,
                }),
            }),
            logical_locations: Vec::new(),
        }
    }

    /// A named thing of a kind (`kind` is free text, e.g. `agent`).
    pub fn logical(name: impl Into<String>, kind: impl Into<String>) -> Location {
        let name = name.into();
        Location {
            physical_location: None,
            logical_locations: vec![LogicalLocation {
                fully_qualified_name: Some(name.clone()),
                name: Some(name),
                kind: Some(kind.into()),
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalLocation {
    pub artifact_location: ArtifactLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactLocation {
    /// Relative (to `uriBaseId`, or the repository root) or absolute URI.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_base_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    pub start_line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogicalLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fully_qualified_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A relative path as a URI reference: `/`-separated, with the characters
/// RFC 3986 does not allow in a path percent-encoded.
pub fn path_to_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.replace('\\', "/").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_spaces_and_percent() {
        assert_eq!(path_to_uri("a dir/100%.env"), "a%20dir/100%25.env");
        assert_eq!(path_to_uri("src/é.py"), "src/%C3%A9.py");
    }

    #[test]
    fn empty_optionals_are_left_out() {
        let v = serde_json::to_value(Location::in_file("a.env", 3, 5)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"physicalLocation": {"artifactLocation": {"uri": "a.env"},
                "region": {"startLine": 3, "startColumn": 5}}})
        );
    }
}
