//! The closed sets a finding is made of: how bad (`Severity`) and what
//! about (`FindingKind`), each with a stable text form.

use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $text)] $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stable id (reports, SARIF rule ids, the mapping file).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

kinds!(
    /// How bad, lowest first.
    Severity {
        Info => "info",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

kinds!(
    /// What a finding is about; each kind has its framework mapping.
    FindingKind {
        /// A person's credential an agent uses.
        HumanCredentialUsed => "human-credential-used-by-agent",
        /// One secret reaches agents of different owners.
        SecretSharedAcrossOwners => "secret-shared-across-owners",
        /// Older than its class's maximum age.
        RotationOverdue => "secret-rotation-overdue",
        /// Unused for its class's period.
        SecretUnused => "secret-unused",
        /// A tolerated exception past its expiry.
        ExceptionExpired => "exception-expired",
        /// An agent or secret whose owner is a person, not a team or service.
        NoTeamOwner => "no-team-owner",
        /// A production agent whose only way in is a join token.
        JoinTokenOnly => "production-agent-join-token-only",
        /// A tool that hands its secret to agents.
        RevealTool => "tool-in-reveal-mode",
        /// Break-glass was used in the period.
        BreakglassUsed => "breakglass-used",
        /// The anomaly detector flagged something nobody acknowledged.
        AnomalyUnacknowledged => "anomaly-unacknowledged",
        /// A policy lets any action through on a restricted tool.
        WildcardOnRestricted => "policy-wildcard-on-restricted-tool",
        /// Tasks may live longer than a tool's secret class allows.
        TaskTtlAboveCeiling => "task-ttl-above-class-ceiling",
        /// Delegation may go deeper than the chosen limit.
        DelegationDepthAboveLimit => "delegation-depth-above-limit",
        /// A dynamic credential of an ended task is not confirmed gone.
        LeaseRevocationFailed => "lease-revocation-failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_severities_order() {
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::parse(k.as_str()), Some(*k));
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
        }
        assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
        assert_eq!(Severity::parse("high"), Some(Severity::High));
        assert_eq!(Severity::parse("severe"), None);
    }
}
