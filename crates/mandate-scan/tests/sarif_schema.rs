//! The SARIF output validates against the official SARIF 2.1.0 schema
//! (OASIS, errata 01; vendored as crates/mandate-sarif/tests/sarif-schema-2.1.0.json) and has
//! what code-scanning tools display: rule ids with descriptions, relative
//! URIs, start line and column, a stable fingerprint.

mod common;

use mandate_scan::{render, sarif};
use serde_json::Value;

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        common::corpus_dir().join("../../../mandate-sarif/tests/sarif-schema-2.1.0.json"),
    )
    .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft4::new(&schema).expect("the SARIF schema compiles")
}

fn assert_valid(v: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "SARIF schema errors: {errors:#?}");
}

#[test]
fn scan_sarif_validates_against_the_2_1_0_schema_with_relative_uris() {
    let (_dir, engine, report) = common::scanned_corpus();
    let log = render::sarif(&report, engine.rules());
    let v = serde_json::to_value(&log).unwrap();
    assert_valid(&v);
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), engine.rules().len());
    assert!(rules.iter().all(|r| {
        r["shortDescription"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    }));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), report.findings.len());
    for r in results {
        let loc = &r["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
        assert!(!uri.starts_with('/'), "relative uri: {uri}");
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "SRCROOT0");
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(loc["region"]["startColumn"].as_u64().unwrap() >= 1);
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        assert_eq!(
            r["partialFingerprints"][render::FINGERPRINT_KEY]
                .as_str()
                .unwrap()
                .len(),
            32
        );
    }
    let base = run["originalUriBaseIds"]["SRCROOT0"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        base.starts_with("file:///") && base.ends_with('/'),
        "{base}"
    );
}

#[test]
fn logical_locations_validate_too() {
    // The posture report's findings name an agent or a secret, not a file.
    let log = sarif::SarifLog::new(vec![sarif::Run {
        tool: sarif::Tool {
            driver: sarif::ToolComponent {
                name: "mandate posture".into(),
                version: None,
                information_uri: None,
                rules: vec![sarif::ReportingDescriptor {
                    id: "human-credential-used-by-agent".into(),
                    name: None,
                    short_description: Some(sarif::Message::text(
                        "A person's credential is used by an agent",
                    )),
                    full_description: None,
                    help: None,
                    default_configuration: Some(sarif::ReportingConfiguration {
                        level: sarif::Level::Warning,
                    }),
                    properties: None,
                }],
            },
        },
        results: vec![sarif::SarifResult {
            rule_id: "human-credential-used-by-agent".into(),
            rule_index: Some(0),
            level: sarif::Level::Warning,
            message: sarif::Message::text("secret gh-token is a person's and agent bot uses it"),
            locations: vec![sarif::Location::logical("gh-token", "secret")],
            partial_fingerprints: Default::default(),
            properties: None,
        }],
        column_kind: None,
        original_uri_base_ids: Default::default(),
        properties: None,
    }]);
    let mut v = serde_json::to_value(&log).unwrap();
    assert_valid(&v);
    // The validator is not a no-op: a level SARIF does not have fails.
    v["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!validator().is_valid(&v));
}
