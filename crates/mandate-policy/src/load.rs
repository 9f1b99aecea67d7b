//! Reading policy files: parse each, give every policy its `@id`, validate
//! the whole set against the schema, and slice it per action (and per tool,
//! for policies that name one).

use crate::error::{PolicyError, Problem};
use crate::{Loaded, MandateAction, PolicySet, Slice};
use cedar_policy::{
    ActionConstraint, Authorizer, EntityTypeName, EntityUid, Policy, PolicyId, ResourceConstraint,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The schema's name in errors when the caller gave only its text.
const SCHEMA_LABEL: &str = "schema";
const SCHEMA_FILE: &str = "schema.cedarschema";

impl PolicySet {
    /// Parse every `(file name, text)` source, validate the whole set against
    /// `schema` (Cedar human syntax, strict mode) and slice it per action.
    ///
    /// Each policy's id is its `@id` annotation; a policy without one is
    /// called `<file>#<n>` (n counts from 1 within the file). Ids must be
    /// unique across files. Its `@reason` is what decisions show.
    pub fn from_sources(schema: &str, policies: &[(String, String)]) -> Result<Self, PolicyError> {
        build(SCHEMA_LABEL, schema, policies).map(|l| PolicySet(Arc::new(l)))
    }

    /// Loads `<dir>/schema.cedarschema` and every `<dir>/*.cedar`, in file
    /// name order. Dotfiles (editor swap and lock files) are skipped. Refuses
    /// a directory with no `.cedar` file.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let io = |path: &Path, e: std::io::Error| PolicyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let schema_path = dir.join(SCHEMA_FILE);
        let schema = std::fs::read_to_string(&schema_path).map_err(|e| io(&schema_path, e))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with('.') && path.extension().is_some_and(|x| x == "cedar") {
                files.push((name.to_owned(), path));
            }
        }
        if files.is_empty() {
            return Err(PolicyError::NoPolicyFiles {
                dir: dir.display().to_string(),
            });
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for (name, path) in files {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            sources.push((name, text));
        }
        build(SCHEMA_FILE, &schema, &sources).map(|l| PolicySet(Arc::new(l)))
    }
}

fn build(
    schema_name: &str,
    schema_text: &str,
    sources: &[(String, String)],
) -> Result<Loaded, PolicyError> {
    let schema = parse_schema(schema_name, schema_text)?;
    let mut all = cedar_policy::PolicySet::new();
    let mut reasons = HashMap::new();
    let mut ids = Vec::new();
    // Policy id -> index into `sources`, to say where a later problem is.
    let mut origin: HashMap<String, usize> = HashMap::new();
    for (index, (file, text)) in sources.iter().enumerate() {
        for (n, policy) in parse_file(file, text)?.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some(id) if !id.trim().is_empty() => id.to_owned(),
                _ => format!("{file}#{}", n + 1),
            };
            if let Some(first) = origin.insert(id.clone(), index) {
                return Err(PolicyError::DuplicateId {
                    id,
                    first: sources[first].0.clone(),
                    second: file.clone(),
                });
            }
            let reason = match policy.annotation("reason") {
                Some(r) => format!("{id}: {r}"),
                None => id.clone(),
            };
            let pid = PolicyId::new(&id);
            all.add(policy.new_id(pid.clone()))
                .map_err(|e| PolicyError::Parse(vec![problem(file, None, None, e.to_string())]))?;
            reasons.insert(pid, reason);
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(PolicyError::Empty);
    }
    validate(schema, &all, sources, &origin)?;
    let tool_type = static_type_name("Mandate::Tool")?;
    let slices = [
        slice(&all, MandateAction::Invoke, &tool_type)?,
        slice(&all, MandateAction::StartTask, &tool_type)?,
        slice(&all, MandateAction::RequireApproval, &tool_type)?,
        slice(&all, MandateAction::RevealSecret, &tool_type)?,
        slice(&all, MandateAction::ContinueTask, &tool_type)?,
    ];
    Ok(Loaded {
        slices,
        reasons,
        ids,
        agent_type: static_type_name("Mandate::Agent")?,
        tool_type,
        authorizer: Authorizer::new(),
        parties: Default::default(),
        sources: crate::PolicySources {
            schema: schema_text.to_owned(),
            files: sources.to_vec(),
        },
    })
}

fn parse_schema(name: &str, text: &str) -> Result<Schema, PolicyError> {
    match Schema::from_cedarschema_str(text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                tracing::debug!(schema = name, "schema warning: {w}");
            }
            Ok(schema)
        }
        Err(e) => Err(PolicyError::Schema(vec![problem(
            name,
            position(&e, text),
            None,
            with_help(&e),
        )])),
    }
}

/// The file's static policies in source order.
fn parse_file(file: &str, text: &str) -> Result<Vec<Policy>, PolicyError> {
    let parsed = cedar_policy::PolicySet::from_str(text).map_err(|errors| {
        let problems = errors
            .iter()
            .map(|e| problem(file, position(e, text), None, with_help(e)))
            .collect();
        PolicyError::Parse(problems)
    })?;
    if parsed.templates().next().is_some() {
        return Err(PolicyError::Template {
            file: file.to_owned(),
        });
    }
    // Cedar numbers unnamed policies `policy0`, `policy1`… in source order,
    // but its set iterates in hash order.
    let order = |p: &Policy| {
        AsRef::<str>::as_ref(p.id())
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    let mut policies: Vec<Policy> = parsed.policies().cloned().collect();
    policies.sort_by_key(order);
    Ok(policies)
}

fn validate(
    schema: Schema,
    all: &cedar_policy::PolicySet,
    sources: &[(String, String)],
    origin: &HashMap<String, usize>,
) -> Result<(), PolicyError> {
    let result = Validator::new(schema).validate(all, ValidationMode::Strict);
    let locate = |id: &str| origin.get(id).and_then(|&i| sources.get(i));
    for w in result.validation_warnings() {
        let file = locate(w.policy_id().as_ref()).map_or("?", |(f, _)| f.as_str());
        tracing::warn!(file, policy = %w.policy_id(), "policy warning: {w}");
    }
    if result.validation_passed() {
        return Ok(());
    }
    let problems = result
        .validation_errors()
        .map(|e| {
            let id = e.policy_id().to_string();
            let (file, at) = match locate(&id) {
                Some((file, text)) => (file.as_str(), position(e, text)),
                None => ("?", None),
            };
            // Cedar starts with "for policy `id`, "; the problem names it already.
            let message = with_help(e);
            let prefix = format!("for policy `{id}`, ");
            let message = message.strip_prefix(&prefix).unwrap_or(&message).to_owned();
            problem(file, at, Some(id), message)
        })
        .collect();
    Err(PolicyError::Invalid(problems))
}

/// The policies whose scope can match `action`: those naming one tool
/// (`resource == Mandate::Tool::"x"`) are kept apart, so a request on any
/// other tool never evaluates them.
fn slice(
    all: &cedar_policy::PolicySet,
    action: MandateAction,
    tool_type: &EntityTypeName,
) -> Result<Slice, PolicyError> {
    let uid = EntityUid::from_type_name_and_id(
        static_type_name("Mandate::Action")?,
        cedar_policy::EntityId::new(action.name()),
    );
    let applies = |p: &&Policy| match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == uid,
        ActionConstraint::In(list) => list.contains(&uid),
    };
    let named_tool = |p: &Policy| match p.resource_constraint() {
        ResourceConstraint::Eq(r) if r.type_name() == tool_type => {
            Some(r.id().unescaped().to_owned())
        }
        _ => None,
    };
    let mut general = Vec::new();
    let mut specific: HashMap<String, Vec<Policy>> = HashMap::new();
    for p in all.policies().filter(applies) {
        match named_tool(p) {
            Some(tool) => specific.entry(tool).or_default().push(p.clone()),
            None => general.push(p.clone()),
        }
    }
    let set = |policies: Vec<Policy>| {
        cedar_policy::PolicySet::from_policies(policies)
            .map_err(|e| PolicyError::Invalid(vec![problem("?", None, None, e.to_string())]))
    };
    let mut by_tool = HashMap::with_capacity(specific.len());
    for (tool, mut policies) in specific {
        policies.extend(general.iter().cloned());
        by_tool.insert(tool, set(policies)?);
    }
    Ok(Slice {
        action: uid,
        general: set(general)?,
        by_tool,
    })
}

fn static_type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name)
        .map_err(|e| PolicyError::Schema(vec![problem(name, None, None, e.to_string())]))
}

fn problem(
    file: &str,
    position: Option<(usize, usize)>,
    policy: Option<String>,
    message: String,
) -> Problem {
    Problem {
        file: file.to_owned(),
        position,
        policy,
        message,
    }
}

/// The diagnostic's message, plus what Cedar says at the spot (e.g. the
/// tokens it expected) and its hint, when it has them.
fn with_help(d: &dyn Diagnostic) -> String {
    let mut message = d.to_string();
    let label = d
        .labels()
        .and_then(|mut l| l.next()?.label().map(str::to_owned));
    if let Some(label) = label.filter(|l| !l.is_empty()) {
        message.push_str(&format!(" ({label})"));
    }
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    message
}

/// 1-based line and column of the diagnostic's first labelled span in `text`.
fn position(d: &dyn Diagnostic, text: &str) -> Option<(usize, usize)> {
    let offset = d.labels()?.next()?.offset();
    line_col(text, offset)
}

pub(crate) fn line_col(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, col))
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
