//! Questions about the policy set itself, for the posture report: which
//! `invoke` permits let a request through whatever action it asks for.

use crate::decide::invoke_context;
use crate::{InvokeRequest, MandateAction, PolicySet};
use cedar_policy::{Effect, Request};

/// An action no tool declares: a permit that lets it through never looked
/// at the action.
const PROBE_ACTION: &str = "mandate-posture-probe:any";

impl PolicySet {
    /// The ids of `invoke` permits that, on their own, allow `r` with its
    /// action replaced by one outside any grant (and an empty grant).
    /// Forbids are left out on purpose: a permit like that is one edited
    /// forbid away from letting any action through. Sorted.
    pub fn permits_any_action(&self, r: &InvokeRequest<'_>) -> Vec<String> {
        let probe = InvokeRequest {
            action: PROBE_ACTION,
            grant_actions: &[],
            ..*r
        };
        let Ok(parties) = self.parties(&probe.agent, &probe.tool) else {
            return Vec::new();
        };
        let Ok(context) = invoke_context(&probe) else {
            return Vec::new();
        };
        let slice = self.slice(MandateAction::Invoke);
        let permits = slice
            .for_tool(probe.tool.name)
            .policies()
            .filter(|p| p.effect() == Effect::Permit)
            .cloned();
        let Ok(permits) = cedar_policy::PolicySet::from_policies(permits) else {
            return Vec::new();
        };
        let Ok(request) = Request::new(
            parties.agent.clone(),
            slice.action.clone(),
            parties.tool.clone(),
            context,
            None,
        ) else {
            return Vec::new();
        };
        let response = self
            .0
            .authorizer
            .is_authorized(&request, &permits, &parties.entities);
        let mut ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use crate::{AgentFacts, InvokeRequest, PolicySet, TaskFacts, ToolFacts};
    use mandate_core::{Environment, Sensitivity, TaskState};

    fn ask(set: &PolicySet) -> Vec<String> {
        let task = TaskFacts {
            id: "t1",
            state: TaskState::Active,
            intent: "x",
            environment: Environment::Production,
            approved: true,
            breakglass: false,
            delegation_depth: 0,
            delegation_chain: &[],
            root_intent: "x",
        };
        set.permits_any_action(&InvokeRequest {
            agent: AgentFacts {
                name: "bot",
                environment: Environment::Production,
                owner: "platform",
            },
            tool: ToolFacts {
                name: "payments",
                environment: Environment::Production,
                sensitivity: Sensitivity::Restricted,
            },
            task,
            action: "charges:read",
            resource: "charge:1",
            grant_actions: &["charges:read".to_owned()],
            resource_in_scope: true,
            request_environment: None,
            data_sensitivity: None,
            amount: None,
            anomaly_score: 0,
            now: 0,
        })
    }

    #[test]
    fn the_defaults_look_at_the_action_and_a_careless_permit_does_not() {
        assert!(ask(&PolicySet::defaults()).is_empty());
        let careless = r#"
@id("ops-can-do-anything-on-restricted")
@reason("ops")
permit (principal, action == Mandate::Action::"invoke", resource)
when { resource.sensitivity == "restricted" && context.task.state == "active" };
"#;
        let set = PolicySet::from_sources(
            crate::DEFAULT_SCHEMA,
            &[
                ("default.cedar".into(), crate::DEFAULT_POLICIES.into()),
                ("ops.cedar".into(), careless.into()),
            ],
        )
        .unwrap();
        assert_eq!(ask(&set), ["ops-can-do-anything-on-restricted"]);
    }
}
