//! Why a token may not do what it asks: one code per reason, with a stable
//! string form. The broker's `/v1/authorize` answer, the proxy's refusal
//! bodies and both OpenAPI descriptions use exactly these strings.

use mandate_token::TokenError;

/// How far a request got before it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The token itself is dead: bad, expired, revoked, or its agent or
    /// task is unknown or not active. Introspection answers `active: false`
    /// exactly for these.
    Token,
    /// A live token presented wrongly (DPoP binding).
    Presentation,
    /// A live, well-presented token that does not cover this request.
    Request,
}

macro_rules! refusals {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $stage:ident, $status:literal;)*) => {
        /// A refusal code. `as_str` is the wire form; it never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Refusal {
            $($(#[$doc])* $variant,)*
        }

        impl Refusal {
            /// Every code, for documentation checks.
            pub const ALL: &'static [Refusal] = &[$(Refusal::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Refusal::$variant => $code,)*
                }
            }

            pub fn stage(self) -> Stage {
                match self {
                    $(Refusal::$variant => Stage::$stage,)*
                }
            }

            /// The HTTP status a resource answers with.
            pub fn status(self) -> u16 {
                match self {
                    $(Refusal::$variant => $status,)*
                }
            }
        }
    };
}

refusals! {
    /// Malformed, forged, of another type or issuer, or naming no agent
    /// or task; or its task belongs to another agent.
    InvalidToken = "invalid_token", Token, 401;
    TokenExpired = "token_expired", Token, 401;
    TokenNotYetValid = "token_not_yet_valid", Token, 401;
    /// Signed by a key the broker does not publish.
    UnknownKey = "unknown_key", Token, 401;
    /// The token, its task, its agent or its signing key was revoked.
    Revoked = "revoked", Token, 401;
    UnknownAgent = "unknown_agent", Token, 401;
    UnknownTask = "unknown_task", Token, 401;
    /// The task is completed, expired, suspended or waiting for approval.
    TaskNotActive = "task_not_active", Token, 401;
    /// A DPoP-bound token came without the DPoP scheme and a proof.
    DpopRequired = "dpop_required", Presentation, 401;
    /// A token that is not DPoP-bound came as if it were.
    NotDpopBound = "not_dpop_bound", Presentation, 401;
    InvalidDpopProof = "invalid_dpop_proof", Presentation, 401;
    /// No registered tool is the one the request is for.
    UnknownTool = "unknown_tool", Request, 404;
    /// The token was minted for another tool.
    WrongAudience = "wrong_audience", Request, 403;
    /// Token, tool and request are not in one environment.
    WrongEnvironment = "wrong_environment", Request, 403;
    /// The token grants nothing on this tool.
    OutOfScope = "out_of_scope", Request, 403;
    /// No route of the tool matches the HTTP request.
    NoRoute = "no_route", Request, 403;
    /// Policy did not permit the request.
    PolicyDenied = "policy_denied", Request, 403;
    /// Policy holds the request for a person; the answer names the
    /// approval request to wait on.
    ApprovalPending = "approval_pending", Request, 403;
    /// A person denied exactly this request; final.
    ApprovalDenied = "approval_denied", Request, 403;
}

impl Refusal {
    /// What a failed signature or time check means.
    pub fn of_token_error(e: &TokenError) -> Refusal {
        match e {
            TokenError::Expired => Refusal::TokenExpired,
            TokenError::NotYetValid => Refusal::TokenNotYetValid,
            TokenError::UnknownKey(_) => Refusal::UnknownKey,
            _ => Refusal::InvalidToken,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let mut seen = std::collections::HashSet::new();
        for r in Refusal::ALL {
            let c = r.as_str();
            assert!(seen.insert(c), "{c} twice");
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
        }
    }

    #[test]
    fn token_stage_refusals_are_401_and_request_ones_are_not() {
        for r in Refusal::ALL {
            match r.stage() {
                Stage::Token | Stage::Presentation => assert_eq!(r.status(), 401, "{r}"),
                Stage::Request => assert!(r.status() == 403 || r.status() == 404, "{r}"),
            }
        }
    }
}
