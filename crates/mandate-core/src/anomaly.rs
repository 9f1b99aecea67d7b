//! Anomaly rules: the names of the patterns the broker's detector looks
//! for in its own audit chain, and what a finding may do to its task.
//! The detector itself (`mandate-anomaly`) is pure too; these types are
//! here because an approval (`Held::Resume`) and the store name them.

use crate::Environment;

closed_enum!(
    /// A pattern the detector flags. The wire and audit form never changes.
    AnomalyRule, "rule", {
        // A token used after its task ended or the token was revoked.
        PostRevocationUse => "post_revocation_use",
        // Many refusals for one task in a short window.
        DenialBurst => "denial_burst",
        // A call rate far above the task's own recent rate.
        RateSpike => "rate_spike",
        // One token from another workload key (a DPoP relay or replay, a
        // token at a tool it was not minted for) or another network address.
        Relay => "relay",
        // A request outside the task's scope, environment or data sensitivity.
        OutOfScope => "out_of_scope",
        // A delegated token at a tool no task of its chain asked for.
        UnrequestedTool => "unrequested_tool",
    }
);

closed_enum!(
    /// What a finding does to its task (and, through the cascade, its subtree).
    AnomalyAction, "action", {
        // Record the finding (`anomaly.detected`), nothing more.
        Alert => "alert",
        // Suspend the task: its tokens and everything below it are cut off.
        Suspend => "suspend",
        // Suspend the task and ask a person: approving resumes it,
        // denying revokes it.
        RequireApproval => "require_approval",
    }
);

impl AnomalyRule {
    /// The action when the configuration names none for `env`: a relayed
    /// token or a token used after its end suspends in production; every
    /// other finding is an alert.
    pub fn default_action(self, env: Environment) -> AnomalyAction {
        match (self, env) {
            (AnomalyRule::PostRevocationUse | AnomalyRule::Relay, Environment::Production) => {
                AnomalyAction::Suspend
            }
            _ => AnomalyAction::Alert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relay_and_post_revocation_use_suspend_by_default_and_only_in_production() {
        for &rule in AnomalyRule::ALL {
            for &env in Environment::ALL {
                let suspends = matches!(rule, AnomalyRule::PostRevocationUse | AnomalyRule::Relay)
                    && env == Environment::Production;
                let want = if suspends {
                    AnomalyAction::Suspend
                } else {
                    AnomalyAction::Alert
                };
                assert_eq!(rule.default_action(env), want, "{rule} in {env}");
            }
        }
    }

    #[test]
    fn names_round_trip_in_their_wire_form() {
        for &r in AnomalyRule::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
            assert_eq!(r.as_str().parse::<AnomalyRule>().unwrap(), r);
        }
        assert!("burst".parse::<AnomalyRule>().is_err());
        assert!("block".parse::<AnomalyAction>().is_err());
    }
}
