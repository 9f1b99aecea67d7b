//! Mandate's policy engine: Cedar, with a schema and default policies
//! shipped in `policies/`, policy files validated against the schema at load,
//! and decisions for the three Mandate actions (`invoke`, `start_task`,
//! `require_approval`). Decisions are pure functions of the request facts
//! and the loaded set; the only I/O is [`PolicySet::load_dir`].

mod decide;
mod error;

pub use decide::{
    AgentFacts, Decision, InvokeRequest, TaskDecision, TaskFacts, TaskStartRequest, ToolFacts,
};
pub use error::PolicyError;

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicyId, Schema, ValidationMode, Validator,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const DEFAULT_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
pub const DEFAULT_POLICIES: &str = include_str!("../../../policies/default.cedar");

/// The Cedar actions Mandate evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MandateAction {
    Invoke,
    StartTask,
    RequireApproval,
}

impl MandateAction {
    const ALL: [MandateAction; 3] = [
        MandateAction::Invoke,
        MandateAction::StartTask,
        MandateAction::RequireApproval,
    ];
    fn name(self) -> &'static str {
        match self {
            MandateAction::Invoke => "invoke",
            MandateAction::StartTask => "start_task",
            MandateAction::RequireApproval => "require_approval",
        }
    }
    pub(crate) fn uid(self) -> EntityUid {
        // Static, known-good identifiers.
        format!("Mandate::Action::\"{}\"", self.name())
            .parse()
            .expect("static action uid parses")
    }
}

pub(crate) struct Loaded {
    /// One Cedar set per action, holding only policies that can apply to it,
    /// so a decision never evaluates policies for other actions.
    pub slices: HashMap<MandateAction, cedar_policy::PolicySet>,
    /// `@reason` text by policy id.
    pub reasons: HashMap<PolicyId, String>,
    pub ids: Vec<String>,
}

/// A validated, immutable policy set. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct PolicySet(pub(crate) Arc<Loaded>);

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolicySet({:?})", self.0.ids)
    }
}

impl PolicySet {
    /// Parse every source, give each policy its `@id` as its id, validate the
    /// whole set against `schema` (strict mode), and slice it per action.
    pub fn from_sources(schema: &str, sources: &[(String, String)]) -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let mut all = cedar_policy::PolicySet::new();
        let mut reasons = HashMap::new();
        let mut ids = Vec::new();
        let mut origin: HashMap<String, String> = HashMap::new();
        for (file, text) in sources {
            let parsed: cedar_policy::PolicySet =
                text.parse()
                    .map_err(|e: cedar_policy::ParseErrors| PolicyError::Parse {
                        file: file.clone(),
                        message: e.to_string(),
                    })?;
            if parsed.templates().next().is_some() {
                return Err(PolicyError::Parse {
                    file: file.clone(),
                    message: "policy templates are not supported".into(),
                });
            }
            for (i, p) in parsed.policies().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{file}#{i}"));
                if let Some(first) = origin.insert(id.clone(), file.clone()) {
                    return Err(PolicyError::DuplicateId {
                        id,
                        first,
                        second: file.clone(),
                    });
                }
                let pid = PolicyId::new(&id);
                let reason = p.annotation("reason").unwrap_or(&id).to_owned();
                let renamed: Policy = p.new_id(pid.clone());
                all.add(renamed).map_err(|e| PolicyError::Parse {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
                reasons.insert(pid, reason);
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(PolicyError::Empty);
        }
        let result = Validator::new(schema).validate(&all, ValidationMode::Strict);
        if !result.validation_passed() {
            let problems: Vec<String> = result
                .validation_errors()
                .map(|e| {
                    let id = e.policy_id().to_string();
                    let file = origin.get(&id).cloned().unwrap_or_default();
                    format!("{file}: policy `{id}`: {e}")
                })
                .collect();
            return Err(PolicyError::Invalid(problems.join("; ")));
        }
        let mut slices = HashMap::new();
        for action in MandateAction::ALL {
            let uid = action.uid();
            let applies = |p: &&Policy| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => a == uid,
                ActionConstraint::In(list) => list.contains(&uid),
            };
            let slice =
                cedar_policy::PolicySet::from_policies(all.policies().filter(applies).cloned())
                    .map_err(|e| PolicyError::Invalid(e.to_string()))?;
            slices.insert(action, slice);
        }
        Ok(PolicySet(Arc::new(Loaded {
            slices,
            reasons,
            ids,
        })))
    }

    /// `<dir>/schema.cedarschema` and every `<dir>/*.cedar`, by file name.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| PolicyError::Io {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        let schema = read(&dir.join("schema.cedarschema"))?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| PolicyError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push((name, read(&f)?));
        }
        Self::from_sources(&schema, &sources)
    }

    /// The shipped schema and default policies.
    pub fn defaults() -> Self {
        Self::from_sources(
            DEFAULT_SCHEMA,
            &[("default.cedar".into(), DEFAULT_POLICIES.into())],
        )
        .expect("shipped default policies validate (pinned by tests)")
    }

    pub fn policy_count(&self) -> usize {
        self.0.ids.len()
    }

    pub fn policy_ids(&self) -> Vec<String> {
        self.0.ids.clone()
    }
}
