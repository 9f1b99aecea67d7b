//! Loading rules: what is refused, and that the refusal says where.

use super::*;
use crate::{DEFAULT_POLICIES, DEFAULT_SCHEMA, MandateAction};

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn refused(files: &[(&str, &str)]) -> PolicyError {
    PolicySet::from_sources(DEFAULT_SCHEMA, &sources(files)).expect_err("should be refused")
}

fn custom(policies: &str) -> PolicySet {
    PolicySet::from_sources(DEFAULT_SCHEMA, &sources(&[("custom.cedar", policies)]))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn default_policies_validate_against_default_schema() {
    assert_eq!(PolicySet::defaults().policy_count(), 14);
}

#[test]
fn syntax_error_names_the_file_and_position() {
    let err = refused(&[("broken.cedar", "permit(principal")]);
    let PolicyError::Parse(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems[0].file, "broken.cedar");
    assert_eq!(problems[0].position.map(|p| p.0), Some(1), "{err}");
    assert!(err.to_string().contains("broken.cedar:1:"), "{err}");
}

#[test]
fn syntax_error_on_a_later_line_reports_that_line() {
    let text = "@id(\"ok\")\npermit(principal, action, resource);\n\nforbid(principal, action, resource) when { context.now >< 1 };\n";
    let err = refused(&[("good.cedar", DEFAULT_POLICIES), ("later.cedar", text)]);
    assert!(err.to_string().contains("later.cedar:4:"), "{err}");
}

#[test]
fn undeclared_attribute_fails_validation_naming_the_policy() {
    let text = "@id(\"colourful\")\npermit(principal, action == Mandate::Action::\"invoke\", resource)\nwhen { principal.colour == \"red\" };";
    let err = refused(&[("c.cedar", text)]);
    let PolicyError::Invalid(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems[0].file, "c.cedar");
    assert_eq!(problems[0].policy.as_deref(), Some("colourful"));
    assert_eq!(problems[0].position.map(|p| p.0), Some(3), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("c.cedar:3:") && msg.contains("colourful"),
        "{msg}"
    );
}

#[test]
fn policy_without_id_is_named_after_its_file_and_place() {
    let text = "@id(\"first\") permit(principal, action, resource);\nforbid(principal, action, resource) when { context.now < 0 };";
    let set = PolicySet::from_sources(DEFAULT_SCHEMA, &sources(&[("x.cedar", text)])).unwrap();
    assert_eq!(set.policy_ids(), vec!["first", "x.cedar#2"]);
}

#[test]
fn policy_ids_keep_source_order_within_a_file() {
    let text: String = (0..20)
        .map(|i| {
            format!(
                "@id(\"p{i}\") forbid(principal, action, resource) when {{ context.now < {i} }};\n"
            )
        })
        .collect();
    let set = PolicySet::from_sources(DEFAULT_SCHEMA, &sources(&[("x.cedar", &text)])).unwrap();
    let want: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    assert_eq!(set.policy_ids(), want);
}

#[test]
fn duplicate_ids_across_files_are_refused() {
    let p = r#"@id("same") permit(principal, action, resource);"#;
    let err = refused(&[("a.cedar", p), ("b.cedar", p)]);
    assert_eq!(
        err,
        PolicyError::DuplicateId {
            id: "same".into(),
            first: "a.cedar".into(),
            second: "b.cedar".into()
        }
    );
}

#[test]
fn templates_are_refused() {
    let err = refused(&[(
        "t.cedar",
        "permit(principal == ?principal, action, resource);",
    )]);
    assert!(
        matches!(&err, PolicyError::Template { file } if file == "t.cedar"),
        "{err}"
    );
}

#[test]
fn no_policies_are_refused() {
    assert_eq!(refused(&[]), PolicyError::Empty);
    assert_eq!(
        refused(&[("empty.cedar", "// nothing\n")]),
        PolicyError::Empty
    );
}

#[test]
fn invalid_schema_is_reported_with_position() {
    let err = PolicySet::from_sources(
        "namespace Mandate {\n  entity Agent = { colour: Strin };\n}",
        &sources(&[("p.cedar", "permit(principal, action, resource);")]),
    )
    .expect_err("undeclared type");
    let PolicyError::Schema(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems[0].file, "schema");
    assert!(problems[0].position.is_some(), "{err}");
}

#[test]
fn line_col_counts_characters_from_one() {
    assert_eq!(line_col("ab\ncé d", 7), Some((2, 4)));
    assert_eq!(line_col("abc", 0), Some((1, 1)));
    assert_eq!(line_col("abc", 99), None);
}

#[test]
fn every_default_policy_has_an_id_and_a_reason() {
    let parsed: cedar_policy::PolicySet = DEFAULT_POLICIES.parse().unwrap();
    for p in parsed.policies() {
        let id = p.annotation("id");
        assert!(id.is_some_and(|i| !i.is_empty()), "{p}");
        assert!(
            p.annotation("reason").is_some_and(|r| !r.is_empty()),
            "{id:?}"
        );
    }
}

#[test]
fn default_policy_ids_are_the_documented_set() {
    assert_eq!(
        PolicySet::defaults().policy_ids(),
        vec![
            "allow-in-scope",
            "allow-task-start",
            "deny-cross-environment",
            "deny-inactive-task",
            "deny-out-of-scope",
            "deny-restricted-without-approval",
            "deny-delegated-restricted",
            "deny-data-above-tool-sensitivity",
            "restricted-needs-approval",
            "restricted-write-needs-approval",
            "allow-reveal-for-reveal-tools",
            "deny-reveal-human-credential",
            "allow-continue-task",
            "suspend-on-model-change",
        ]
    );
}

fn slice_ids(set: &PolicySet, action: MandateAction, tool: &str) -> Vec<String> {
    let mut ids: Vec<String> = set
        .slice(action)
        .for_tool(tool)
        .policies()
        .map(|p| p.id().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn slices_hold_only_policies_for_their_action() {
    let set = PolicySet::defaults();
    assert_eq!(slice_ids(&set, MandateAction::Invoke, "github").len(), 7);
    assert_eq!(
        slice_ids(&set, MandateAction::StartTask, "github"),
        vec!["allow-task-start", "deny-cross-environment"]
    );
    assert_eq!(
        slice_ids(&set, MandateAction::RequireApproval, "github"),
        vec![
            "restricted-needs-approval",
            "restricted-write-needs-approval"
        ]
    );
}

#[test]
fn policy_with_unconstrained_action_is_in_every_slice() {
    let set = custom(r#"@id("any") forbid(principal, action, resource) when { context.now < 0 };"#);
    for action in [
        MandateAction::Invoke,
        MandateAction::StartTask,
        MandateAction::RequireApproval,
    ] {
        assert_eq!(slice_ids(&set, action, "github"), vec!["any"]);
    }
}

#[test]
fn policy_naming_a_tool_is_evaluated_only_for_that_tool() {
    let set = custom(
        r#"@id("allow-all") permit(principal, action, resource);
@id("github-freeze") forbid(principal, action == Mandate::Action::"invoke", resource == Mandate::Tool::"github");"#,
    );
    assert_eq!(
        slice_ids(&set, MandateAction::Invoke, "github"),
        vec!["allow-all", "github-freeze"]
    );
    assert_eq!(
        slice_ids(&set, MandateAction::Invoke, "gitlab"),
        vec!["allow-all"]
    );
    assert_eq!(
        slice_ids(&set, MandateAction::StartTask, "github"),
        vec!["allow-all"]
    );
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn load_dir_reads_schema_and_policies_in_name_order() {
    let dir = temp_dir();
    let p = dir.path();
    std::fs::write(p.join("schema.cedarschema"), DEFAULT_SCHEMA).unwrap();
    std::fs::write(p.join("b-default.cedar"), DEFAULT_POLICIES).unwrap();
    std::fs::write(
        p.join("a-freeze.cedar"),
        r#"@id("freeze") @reason("frozen") forbid(principal, action, resource);"#,
    )
    .unwrap();
    // Editor leftovers and other files are not policies.
    std::fs::write(p.join(".#a-freeze.cedar"), "garbage").unwrap();
    std::fs::write(p.join("notes.txt"), "garbage").unwrap();
    let set = PolicySet::load_dir(p).unwrap();
    assert_eq!(set.policy_count(), PolicySet::defaults().policy_count() + 1);
    assert_eq!(set.policy_ids()[0], "freeze");
}

#[test]
fn load_dir_without_cedar_files_is_refused() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("schema.cedarschema"), DEFAULT_SCHEMA).unwrap();
    let err = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PolicyError::NoPolicyFiles { .. }), "{err}");
}

#[test]
fn load_dir_without_schema_names_the_path() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("default.cedar"), DEFAULT_POLICIES).unwrap();
    let err = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("schema.cedarschema"), "{err}");
}

#[test]
fn load_dir_errors_name_the_schema_file() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("schema.cedarschema"), "namespace {").unwrap();
    std::fs::write(dir.path().join("default.cedar"), DEFAULT_POLICIES).unwrap();
    let err = PolicySet::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("schema.cedarschema:1:"), "{err}");
}
