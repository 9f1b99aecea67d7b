//! Token misuse: a verified token presented in a way its holder never
//! would — relayed to another party, replayed, sent to a tool it was not
//! minted for, or used after its task ended. The evidence names the
//! check and the keys involved, never the token.

use serde::{Deserialize, Serialize};

closed_enum!(
    /// Which check caught the misuse. The wire and audit form never changes.
    MisuseCheck, "misuse.check", {
        // A DPoP-bound token sent as a bearer token, without a proof.
        DpopAsBearer => "dpop_as_bearer",
        // A DPoP-bound token with a good proof by another key.
        DpopOtherKey => "dpop_other_key",
        // A DPoP-bound token with a proof already used.
        DpopReplayed => "dpop_replayed",
        // A token presented at a tool it was not minted for.
        WrongAudience => "wrong_audience",
        // A token of a task that completed, expired or was revoked.
        EndedTask => "ended_task",
        // A delegated token whose chain holds a revoked agent or task.
        RevokedChain => "revoked_chain",
    }
);

impl MisuseCheck {
    /// Whether the token's task may still be live, so that acting on the
    /// misuse (suspending it) can change anything.
    pub fn task_may_be_live(self) -> bool {
        !matches!(self, MisuseCheck::EndedTask | MisuseCheck::RevokedChain)
    }
}

/// What was seen: the check, and for DPoP the bound key's and the
/// presenting key's thumbprints and the proof's `jti`. All public values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Misuse {
    pub check: MisuseCheck,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_jkt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented_jkt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_jti: Option<String>,
}

impl Misuse {
    pub fn new(check: MisuseCheck) -> Self {
        Misuse {
            check,
            bound_jkt: None,
            presented_jkt: None,
            proof_jti: None,
        }
    }
}

closed_enum!(
    /// What the broker does about misuse of a token of a live task.
    OnMisuse, "on_misuse", {
        // Suspend the task, which revokes its tokens and everything
        // delegated below it.
        Suspend => "suspend",
        // Record it (the refusal stands), nothing more.
        Alert => "alert",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_match_the_wire_format() {
        for &c in MisuseCheck::ALL {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
    }

    #[test]
    fn evidence_round_trips_and_refuses_unknown_fields() {
        let m = Misuse {
            bound_jkt: Some("a".into()),
            presented_jkt: Some("b".into()),
            proof_jti: Some("j".into()),
            ..Misuse::new(MisuseCheck::DpopOtherKey)
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"check": "dpop_other_key", "bound_jkt": "a", "presented_jkt": "b", "proof_jti": "j"})
        );
        assert_eq!(serde_json::from_value::<Misuse>(v).unwrap(), m);
        assert!(
            serde_json::from_value::<Misuse>(
                serde_json::json!({"check": "ended_task", "token": "x"})
            )
            .is_err()
        );
    }
}
