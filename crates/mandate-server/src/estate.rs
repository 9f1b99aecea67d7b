//! Everything the governance plane judges, gathered from the store, the
//! loaded policies and the config into one [`Facts`] value. An operator's
//! report: it reads the period's audit events, so it is not a hot path.

use crate::app::{App, now};
use crate::error::ApiError;
use mandate_core::{Environment, Sensitivity, Task, TaskState};
use mandate_governance::{Facts, OpenAnomaly, WildcardPermit};
use mandate_policy::{AgentFacts, InvokeRequest, TaskFacts, ToolFacts};
use mandate_store::TaskFilter;
use std::collections::BTreeSet;

/// Most live grants listed (soonest to expire first).
const MAX_GRANTS: usize = 10_000;
/// Most anomaly events read for the report.
const MAX_ANOMALIES: usize = 10_000;

pub async fn facts(app: &App, period_days: u32) -> Result<Facts, ApiError> {
    let t = now();
    let since = t - i64::from(period_days) * 86_400;
    let store = &app.store;
    let agents = store.list_agents().await?;
    let mut federated = BTreeSet::new();
    for a in &agents {
        if !store.list_bindings(&a.name).await?.is_empty() {
            federated.insert(a.name.clone());
        }
    }
    let usage = store.usage_since(since.saturating_mul(1000)).await?;
    let tools = store.list_tools().await?;
    let breakglass = store
        .list_tasks(TaskFilter {
            breakglass: true,
            limit: 1000,
            ..TaskFilter::default()
        })
        .await?;
    let mut open_anomalies = Vec::new();
    let mut before = None;
    'pages: while open_anomalies.len() < MAX_ANOMALIES {
        let page = store.anomalies(None, before, 1000).await?;
        for e in &page {
            before = Some(e.seq);
            if e.time_ms / 1000 < since {
                break 'pages;
            }
            if usage.acknowledged_anomalies.contains(&e.seq) {
                continue;
            }
            let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            open_anomalies.push(OpenAnomaly {
                seq: e.seq,
                at: e.time_ms / 1000,
                rule: d["rule"].as_str().unwrap_or("unknown").to_owned(),
                task: e.task.clone(),
                agent: e.agent.clone(),
            });
        }
        if page.len() < 1000 {
            break;
        }
    }
    let policy = app.policy();
    let mut wildcard_permits = Vec::new();
    for tool in tools
        .iter()
        .filter(|t| t.sensitivity == Sensitivity::Restricted)
    {
        for policy_id in
            policy.permits_any_action(&probe(tool.environment, &ToolFacts::of(tool), t))
        {
            wildcard_permits.push(WildcardPermit {
                policy: policy_id,
                tool: tool.name.clone(),
            });
        }
    }
    let raw = &app.settings.raw;
    Ok(Facts {
        now: t,
        period_days,
        owners: store.list_owners().await?,
        agents,
        federated,
        tools,
        secrets: store.list_secrets().await?,
        grants: store.live_grants(t, MAX_GRANTS).await?,
        leases: store.open_leases(MAX_GRANTS).await?,
        last_seen_ms: usage.last_seen_ms,
        tool_users: usage.tool_users,
        tokens: usage.tokens,
        breakglass: breakglass
            .into_iter()
            .filter(|t: &Task| t.breakglass.as_ref().is_some_and(|b| b.opened_at >= since))
            .collect(),
        open_anomalies,
        wildcard_permits,
        rotation: app.settings.rotation.clone(),
        task_max_ttl_secs: i64::from(raw.task_max_ttl_secs),
        max_delegation_depth: raw.max_delegation_depth,
        delegation_depth_limit: raw.posture.delegation_depth_limit,
    })
}

/// The most favourable request an agent could make on `tool`: an agent and
/// an approved, active task in its environment, the resource in scope.
fn probe<'a>(env: Environment, tool: &ToolFacts<'a>, now: i64) -> InvokeRequest<'a> {
    InvokeRequest {
        agent: AgentFacts {
            name: "posture-probe",
            environment: env,
            owner: "posture-probe",
        },
        tool: *tool,
        task: TaskFacts {
            id: "posture-probe",
            state: TaskState::Active,
            intent: "posture probe",
            environment: env,
            approved: true,
            breakglass: false,
            delegation_depth: 0,
            delegation_chain: &[],
            root_intent: "posture probe",
        },
        action: "read",
        resource: "*",
        grant_actions: &[],
        resource_in_scope: true,
        request_environment: None,
        data_sensitivity: None,
        amount: None,
        anomaly_score: 0,
        now,
    }
}
