use super::*;
use mandate_core::MisuseCheck;
use mandate_token::claims::{AccessClaims, AuthorizationDetail, Confirmation, DETAIL_TYPE};
use mandate_token::{SigningAlg, SigningKey};
use serde_json::json;

const NOW: i64 = 1_700_000_000;
const TASK: &str = "task_0123456789abcdef0123456789abcdef";

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn tool() -> Arc<Tool> {
    from(json!({
        "name": "github", "audience": "https://api.github.com", "owner": "platform",
        "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 600,
        "actions": ["issues:read", "issues:write"], "description": "", "created_at": 0,
        "upstream": "http://127.0.0.1:1",
        "routes": [{"method": "GET", "path": "/repos/{owner}/{repo}/issues",
                    "action": "issues:read", "resource": "repo:{owner}/{repo}"}]
    }))
}

fn agent(name: &str, state: &str) -> Arc<Agent> {
    from(json!({
        "name": name, "spiffe_id": format!("spiffe://example.org/agent/{name}"),
        "owner": "platform", "environment": "staging", "allowed_tools": ["github"],
        "description": "", "state": state, "enrolled_key": null, "created_at": 0
    }))
}

fn task(agent: &str, state: &str, deadline: i64) -> Arc<Task> {
    from(json!({
        "id": TASK, "agent": agent, "intent": "triage",
        "scope": [{"tool": "github", "actions": ["issues:read"], "resources": ["*"]}],
        "environment": "staging", "state": state, "requested_by": null,
        "reasons": [], "created_at": 0, "deadline": deadline, "ended_at": null
    }))
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://mandate.example".into(),
        sub: "spiffe://example.org/agent/bot".into(),
        aud: "https://api.github.com".into(),
        exp: NOW + 300,
        iat: NOW,
        nbf: NOW,
        jti: "jti-1".into(),
        client_id: "bot".into(),
        txn: TASK.into(),
        scope: "issues:read".into(),
        authorization_details: vec![AuthorizationDetail {
            type_: DETAIL_TYPE.into(),
            tool: "github".into(),
            actions: vec!["issues:read".into()],
            resources: vec!["repo:acme/*".into()],
            environment: Some("staging".into()),
            sensitivity: None,
        }],
        cnf: None,
        act: None,
        root_txn: None,
        breakglass: false,
    }
}

fn token(c: AccessClaims) -> Arc<VerifiedAccess> {
    Arc::new(VerifiedAccess {
        kid: "k1".into(),
        claims: c,
    })
}

/// Everything one decision needs, owned, with fields a case can change.
struct Case {
    token: Arc<VerifiedAccess>,
    revoked: Option<RevocationKind>,
    agent: Option<Arc<Agent>>,
    task: Option<Arc<Task>>,
    tool: Option<Arc<Tool>>,
    operation: Operation<'static>,
    environment: Option<Environment>,
    dpop: Option<Result<String, &'static str>>,
    now: i64,
}

impl Case {
    fn ok() -> Case {
        Case {
            token: token(claims()),
            revoked: None,
            agent: Some(agent("bot", "active")),
            task: Some(task("bot", "active", NOW + 600)),
            tool: Some(tool()),
            operation: Operation::Named {
                action: "issues:read",
                resource: "repo:acme/widgets",
            },
            environment: None,
            dpop: None,
            now: NOW,
        }
    }

    fn run_with(
        &self,
        policy: &Arc<PolicySet>,
        replay: &dpop::ReplayGuard,
    ) -> Result<Allowed, Refused> {
        let raw = "the.raw.token";
        let presentation = match &self.dpop {
            None => Presentation::Bearer,
            Some(Err(why)) => Presentation::Dpop(Err(why)),
            Some(Ok(proof)) => Presentation::Dpop(Ok(DpopProof {
                proof,
                method: "GET",
                url: "https://proxy.test/github/x",
                token: raw,
            })),
        };
        let holder = Holder {
            revoked: self.revoked,
            agent: self.agent.as_ref(),
            task: self.task.as_ref(),
        };
        let asked = Asked {
            tool: self.tool.as_ref().ok_or("gitlab"),
            operation: self.operation,
            environment: self.environment,
            data_sensitivity: None,
            presentation,
            amount: None,
        };
        let recent = RecentDecisions::default();
        let judge = Judge {
            policy,
            replay,
            recent: &recent,
            now: self.now,
        };
        authorize_request(&self.token, &holder, &asked, &judge)
    }

    fn run(&self) -> Result<Allowed, Refused> {
        self.run_with(
            &Arc::new(PolicySet::defaults()),
            &dpop::ReplayGuard::default(),
        )
    }

    fn refusal(&self) -> Refusal {
        match self.run() {
            Ok(a) => panic!("allowed: {a:?}"),
            Err(r) => r.refusal,
        }
    }
}

#[test]
fn a_live_token_in_scope_is_allowed_by_policy() {
    let a = Case::ok().run().unwrap();
    assert_eq!(
        (a.action.as_str(), a.resource.as_str()),
        ("issues:read", "repo:acme/widgets")
    );
    assert_eq!(a.decision.policy_ids, vec!["allow-in-scope".to_owned()]);
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let mut c = Case::ok();
    c.now = NOW + 300; // exactly exp: dead
    assert_eq!(c.refusal(), Refusal::TokenExpired);
    let mut c = Case::ok();
    c.now = NOW - NBF_LEEWAY_SECS - 1;
    assert_eq!(c.refusal(), Refusal::TokenNotYetValid);
    c.now = NOW - NBF_LEEWAY_SECS;
    c.task = Some(task("bot", "active", NOW + 600));
    assert!(c.run().is_ok(), "nbf within the leeway");
}

#[test]
fn a_token_naming_no_agent_or_task_is_invalid() {
    let mut bad_sub = claims();
    bad_sub.sub = "bot".into();
    let mut bad_txn = claims();
    bad_txn.txn = "not a task".into();
    for c in [bad_sub, bad_txn] {
        let case = Case {
            token: token(c),
            ..Case::ok()
        };
        assert_eq!(case.refusal(), Refusal::InvalidToken);
    }
}

#[test]
fn a_revoked_token_or_key_refuses_before_lookups_matter() {
    for kind in [RevocationKind::Token, RevocationKind::Key] {
        let c = Case {
            revoked: Some(kind),
            agent: None,
            task: None,
            ..Case::ok()
        };
        assert_eq!(c.refusal(), Refusal::Revoked, "{kind:?}");
        assert!(check_claims(&c.token, Some(kind), NOW).is_err());
    }
}

#[test]
fn a_revoked_task_or_agent_entry_refuses_after_the_rows_say_why() {
    for kind in [RevocationKind::Task, RevocationKind::Agent] {
        assert!(
            check_claims(&Case::ok().token, Some(kind), NOW).is_ok(),
            "look it up"
        );
        let c = Case {
            revoked: Some(kind),
            ..Case::ok()
        };
        assert_eq!(
            c.refusal(),
            Refusal::Revoked,
            "live rows, revoked entry: {kind:?}"
        );
        let c = Case {
            revoked: Some(kind),
            task: Some(task("bot", "completed", NOW + 600)),
            ..Case::ok()
        };
        assert_eq!(c.refusal(), Refusal::TaskNotActive, "the row says why");
    }
}

#[test]
fn token_whose_task_belongs_to_another_agent_is_invalid() {
    let c = Case {
        task: Some(task("mallory", "active", NOW + 600)),
        ..Case::ok()
    };
    let r = c.run().unwrap_err();
    assert_eq!(r.refusal, Refusal::InvalidToken);
    assert!(r.message.contains("another agent"), "{}", r.message);
    // The looked-up agent must be the token's, too.
    let c = Case {
        agent: Some(agent("mallory", "active")),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::InvalidToken);
}

#[test]
fn unknown_agent_or_task_and_revoked_agent_are_refused() {
    let c = Case {
        agent: None,
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::UnknownAgent);
    let c = Case {
        task: None,
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::UnknownTask);
    let c = Case {
        agent: Some(agent("bot", "revoked")),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::Revoked);
}

#[test]
fn token_for_an_inactive_task_is_refused_whatever_the_policy() {
    // A policy set that permits everything: the task check is not policy's.
    let lax = Arc::new(
        PolicySet::from_sources(
            crate::DEFAULT_SCHEMA,
            &[(
                "lax.cedar".into(),
                "@id(\"all\") permit (principal, action, resource);".into(),
            )],
        )
        .unwrap(),
    );
    let replay = dpop::ReplayGuard::default();
    for (state, deadline, want) in [
        ("completed", NOW + 600, Refusal::TaskNotActive),
        ("suspended", NOW + 600, Refusal::TaskNotActive),
        ("pending_approval", NOW + 600, Refusal::TaskNotActive),
        ("expired", NOW + 600, Refusal::TaskNotActive),
        ("active", NOW, Refusal::TaskNotActive),
        ("revoked", NOW + 600, Refusal::Revoked),
    ] {
        let c = Case {
            task: Some(task("bot", state, deadline)),
            ..Case::ok()
        };
        let got = c.run_with(&lax, &replay).unwrap_err().refusal;
        assert_eq!(got, want, "{state} until {deadline}");
        assert_eq!(
            check_token(
                &c.token,
                &Holder {
                    revoked: None,
                    agent: c.agent.as_ref(),
                    task: c.task.as_ref()
                },
                NOW
            )
            .unwrap_err()
            .refusal,
            want,
            "introspection's stage agrees for {state}"
        );
    }
}

#[test]
fn request_checks_name_tool_audience_scope_environment_and_route() {
    let c = Case {
        tool: None,
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::UnknownTool);

    let mut other_aud = claims();
    other_aud.aud = "https://jira.example".into();
    let c = Case {
        token: token(other_aud),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::WrongAudience);

    let mut no_entry = claims();
    no_entry.authorization_details[0].tool = "jira".into();
    let c = Case {
        token: token(no_entry),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::OutOfScope);

    let mut prod = claims();
    prod.authorization_details[0].environment = Some("production".into());
    let c = Case {
        token: token(prod),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::WrongEnvironment);

    let c = Case {
        environment: Some(Environment::Production),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::WrongEnvironment);

    let c = Case {
        operation: Operation::Http {
            method: "DELETE",
            path: "/repos/acme/widgets",
        },
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::NoRoute);

    let c = Case {
        operation: Operation::Http {
            method: "GET",
            path: "/repos/acme/widgets/issues",
        },
        ..Case::ok()
    };
    let a = c.run().unwrap();
    assert_eq!(
        (a.action.as_str(), a.resource.as_str()),
        ("issues:read", "repo:acme/widgets")
    );
}

#[test]
fn out_of_scope_action_or_resource_is_a_policy_denial_with_its_ids() {
    for (action, resource) in [
        ("issues:write", "repo:acme/widgets"),
        ("issues:read", "repo:other/x"),
    ] {
        let c = Case {
            operation: Operation::Named { action, resource },
            ..Case::ok()
        };
        let r = c.run().unwrap_err();
        assert_eq!(r.refusal, Refusal::PolicyDenied);
        assert!(
            r.policy_ids.contains(&"deny-out-of-scope".to_owned()),
            "{r:?}"
        );
        assert_eq!(r.action.as_deref(), Some(action));
    }
}

#[test]
fn dpop_binding_is_checked_both_ways() {
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let mut bound = claims();
    bound.cnf = Some(Confirmation {
        jkt: key.public_jwk().thumbprint().unwrap(),
    });
    let c = Case {
        token: token(bound.clone()),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::DpopRequired, "bound token as bearer");

    let c = Case {
        dpop: Some(Err("DPoP header is missing")),
        token: token(bound.clone()),
        ..Case::ok()
    };
    assert_eq!(c.refusal(), Refusal::InvalidDpopProof);

    let proof = |k: &SigningKey| {
        dpop::sign_proof(
            k,
            "GET",
            "https://proxy.test/github/x",
            Some("the.raw.token"),
            NOW,
        )
        .unwrap()
    };
    let c = Case {
        dpop: Some(Ok(proof(&key))),
        token: token(bound.clone()),
        ..Case::ok()
    };
    let (policy, replay) = (
        Arc::new(PolicySet::defaults()),
        dpop::ReplayGuard::default(),
    );
    assert!(c.run_with(&policy, &replay).is_ok(), "good proof");
    assert_eq!(
        c.run_with(&policy, &replay).unwrap_err().refusal,
        Refusal::InvalidDpopProof,
        "the same proof again is a replay"
    );

    let other = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let c = Case {
        dpop: Some(Ok(proof(&other))),
        token: token(bound),
        ..Case::ok()
    };
    assert_eq!(
        c.refusal(),
        Refusal::InvalidDpopProof,
        "proof by another key"
    );

    let c = Case {
        dpop: Some(Ok(proof(&key))),
        ..Case::ok()
    };
    assert_eq!(
        c.refusal(),
        Refusal::NotDpopBound,
        "unbound token under DPoP"
    );
}

#[test]
fn a_dead_token_is_refused_at_the_token_stage_before_anything_else() {
    // Wrong tool, no route and a bad presentation too: the token's death wins.
    let c = Case {
        revoked: Some(RevocationKind::Token),
        tool: None,
        dpop: Some(Err("no proof")),
        ..Case::ok()
    };
    let r = c.run().unwrap_err();
    assert_eq!(
        (r.refusal, r.refusal.stage()),
        (Refusal::Revoked, crate::Stage::Token)
    );
}

#[test]
fn refusals_that_show_a_token_left_its_holder_carry_the_evidence() {
    let check = |c: &Case| c.run().unwrap_err().misuse.map(|m| m.check);
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let jkt = key.public_jwk().thumbprint().unwrap();
    let mut bound = claims();
    bound.cnf = Some(Confirmation { jkt: jkt.clone() });

    // Relayed: a bound token as a bearer token, or with another key's proof.
    let as_bearer = Case {
        token: token(bound.clone()),
        ..Case::ok()
    }
    .run()
    .unwrap_err();
    let m = as_bearer.misuse.expect("bound token as bearer is misuse");
    assert_eq!(
        (m.check, m.bound_jkt.as_deref(), m.presented_jkt),
        (MisuseCheck::DpopAsBearer, Some(jkt.as_str()), None)
    );
    let proof = |k: &SigningKey| {
        dpop::sign_proof(
            k,
            "GET",
            "https://proxy.test/github/x",
            Some("the.raw.token"),
            NOW,
        )
        .unwrap()
    };
    let thief = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let r = Case {
        dpop: Some(Ok(proof(&thief))),
        token: token(bound.clone()),
        ..Case::ok()
    }
    .run()
    .unwrap_err();
    let m = r.misuse.expect("another key's proof is misuse");
    assert_eq!(m.check, MisuseCheck::DpopOtherKey);
    assert_eq!(m.bound_jkt.as_deref(), Some(jkt.as_str()));
    assert_eq!(
        m.presented_jkt,
        Some(thief.public_jwk().thumbprint().unwrap())
    );
    assert!(m.proof_jti.is_some());

    // Replayed: the second use of one good proof.
    let c = Case {
        dpop: Some(Ok(proof(&key))),
        token: token(bound),
        ..Case::ok()
    };
    let (policy, replay) = (
        Arc::new(PolicySet::defaults()),
        dpop::ReplayGuard::default(),
    );
    assert!(c.run_with(&policy, &replay).is_ok());
    let again = c.run_with(&policy, &replay).unwrap_err();
    assert_eq!(
        again.misuse.map(|m| m.check),
        Some(MisuseCheck::DpopReplayed)
    );

    // A bad proof is a client's mistake, not evidence.
    let c = Case {
        dpop: Some(Err("DPoP header is missing")),
        token: token({
            let mut b = claims();
            b.cnf = Some(Confirmation { jkt: jkt.clone() });
            b
        }),
        ..Case::ok()
    };
    assert_eq!(check(&c), None);

    // Another tool's token.
    let mut other_aud = claims();
    other_aud.aud = "https://jira.example".into();
    let c = Case {
        token: token(other_aud),
        ..Case::ok()
    };
    assert_eq!(check(&c), Some(MisuseCheck::WrongAudience));

    // After the task ended; not while it is merely paused or waiting.
    for (state, want) in [
        ("completed", Some(MisuseCheck::EndedTask)),
        ("revoked", Some(MisuseCheck::EndedTask)),
        ("expired", Some(MisuseCheck::EndedTask)),
        ("suspended", None),
        ("pending_approval", None),
    ] {
        let c = Case {
            task: Some(task("bot", state, NOW + 600)),
            ..Case::ok()
        };
        assert_eq!(check(&c), want, "{state}");
    }
    let c = Case {
        task: Some(task("bot", "active", NOW - 1)),
        ..Case::ok()
    };
    assert_eq!(check(&c), Some(MisuseCheck::EndedTask), "past deadline");
    // A revocation entry for the task or agent (what a proxy learns first).
    for kind in [RevocationKind::Task, RevocationKind::Agent] {
        let c = Case {
            revoked: Some(kind),
            ..Case::ok()
        };
        assert_eq!(check(&c), Some(MisuseCheck::EndedTask), "{kind:?}");
    }
    // A delegated token whose chain was cut.
    let mut child = claims();
    child.act = Some(mandate_token::claims::Actor {
        sub: "spiffe://example.org/agent/bot".into(),
        txn: TASK.into(),
        act: None,
    });
    child.sub = "spiffe://example.org/agent/lead".into();
    child.root_txn = Some("task_fedcba9876543210fedcba9876543210".into());
    let c = Case {
        token: token(child),
        revoked: Some(RevocationKind::Agent),
        ..Case::ok()
    };
    assert_eq!(check(&c), Some(MisuseCheck::RevokedChain));

    // Neither a revoked token (its holder revoked it) nor an out-of-scope
    // request is evidence of relay.
    let c = Case {
        revoked: Some(RevocationKind::Token),
        ..Case::ok()
    };
    assert_eq!(check(&c), None);
    let c = Case {
        operation: Operation::Named {
            action: "issues:write",
            resource: "repo:acme/widgets",
        },
        ..Case::ok()
    };
    assert_eq!(check(&c), None);
}
