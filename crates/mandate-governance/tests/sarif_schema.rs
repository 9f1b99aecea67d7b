//! The posture report's SARIF validates against the official SARIF 2.1.0
//! schema (vendored in `mandate-sarif`) and carries what dashboards show:
//! a rule per finding kind, the result's rule id, level and location.

use mandate_core::*;
use mandate_governance::{Facts, Report, sarif};
use serde_json::json;

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mandate-sarif/tests/sarif-schema-2.1.0.json"
    ))
    .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft4::new(&schema).expect("the SARIF schema compiles")
}

#[test]
fn posture_sarif_is_valid_and_names_rules_and_places() {
    let agent: Agent = serde_json::from_value(json!({"name": "deployer",
        "spiffe_id": "spiffe://t/agent/deployer", "owner": "platform", "environment": "production",
        "allowed_tools": [], "description": "", "state": "active", "enrolled_key": null,
        "created_at": 0}))
    .unwrap();
    let facts = Facts {
        now: 1_000_000,
        period_days: 30,
        agents: vec![agent],
        max_delegation_depth: 4,
        delegation_depth_limit: 2,
        task_max_ttl_secs: 3600,
        ..Facts::default()
    };
    let report = Report::of(&facts);
    assert_eq!(report.findings.len(), 2);
    let log = serde_json::to_value(sarif(&report, "0.1.0")).unwrap();
    let v = validator();
    let errors: Vec<String> = v.iter_errors(&log).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "mandate-posture");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), mandate_governance::FindingKind::ALL.len());
    let first = &run["results"][0];
    assert_eq!(first["ruleId"], "production-agent-join-token-only");
    assert_eq!(first["level"], "error");
    assert_eq!(
        first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "agent/deployer"
    );
    let idx = first["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[idx]["id"], first["ruleId"]);
    assert_eq!(rules[idx]["properties"]["security-severity"], "8.0");
    assert!(
        first["properties"]["OWASP NHI Top 10 (2025)"][0]
            .as_str()
            .unwrap()
            .starts_with("NHI4:2025")
    );
}
