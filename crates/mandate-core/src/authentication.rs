//! How strongly an agent proves who it is, weakest first. An agent is as
//! strong as the weakest way it can still get a session: a federation
//! binding beside an enrolled key means a stolen workload JWT is enough.

use serde::{Deserialize, Serialize};

closed_enum!(
    /// One rung of the ladder.
    AuthStrength, "auth_strength", {
        /// Nothing but a one-time join token: a bearer secret someone
        /// handed it, with no key of its own yet.
        JoinToken => "join_token",
        /// A workload JWT from a trusted issuer (Kubernetes, CI, SPIFFE),
        /// mapped by binding: a signed, audience-bound bearer assertion.
        FederatedJwt => "federated_jwt",
        /// Its own key (`private_key_jwt`), enrolled once with a join token.
        EnrolledKey => "enrolled_key",
        /// Its own key, and every token it was given in the period was
        /// DPoP-bound to a key: a stolen token is useless.
        KeyAndDpop => "enrolled_key_dpop",
    }
);

/// What the broker knows about how an agent authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFacts {
    pub enrolled_key: bool,
    /// Federation bindings map workload JWTs to it.
    pub federated: bool,
    /// Tokens minted for it in the period, and how many were DPoP-bound.
    pub tokens: u64,
    pub dpop_tokens: u64,
}

impl AuthFacts {
    pub fn strength(&self) -> AuthStrength {
        if self.federated {
            AuthStrength::FederatedJwt
        } else if !self.enrolled_key {
            AuthStrength::JoinToken
        } else if self.tokens > 0 && self.dpop_tokens == self.tokens {
            AuthStrength::KeyAndDpop
        } else {
            AuthStrength::EnrolledKey
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_usable_way_in_sets_the_strength() {
        let key = AuthFacts {
            enrolled_key: true,
            ..AuthFacts::default()
        };
        assert_eq!(AuthFacts::default().strength(), AuthStrength::JoinToken);
        assert_eq!(key.strength(), AuthStrength::EnrolledKey);
        let dpop = AuthFacts {
            tokens: 3,
            dpop_tokens: 3,
            ..key
        };
        assert_eq!(dpop.strength(), AuthStrength::KeyAndDpop);
        let one_bearer = AuthFacts {
            dpop_tokens: 2,
            ..dpop
        };
        assert_eq!(one_bearer.strength(), AuthStrength::EnrolledKey);
        let federated_too = AuthFacts {
            federated: true,
            ..dpop
        };
        assert_eq!(federated_too.strength(), AuthStrength::FederatedJwt);
        assert!(AuthStrength::JoinToken < AuthStrength::FederatedJwt);
        assert!(AuthStrength::EnrolledKey < AuthStrength::KeyAndDpop);
    }
}
