//! DPoP-bound grants (RFC 9449) at the token endpoint, over real HTTP.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use mandate_token::{SigningAlg, SigningKey, dpop};
use reqwest::StatusCode;

struct Setup {
    s: TestServer,
    session: String,
    task: String,
    token_endpoint: String,
}

async fn setup() -> Setup {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (st, task) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"], "resources": ["repo:acme/*"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let (_, meta) = s.get("/.well-known/oauth-authorization-server", None).await;
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["EdDSA", "Ed25519", "ES256", "RS256"])
    );
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        meta["dpop_signing_alg_values_supported"]
    );
    Setup {
        token_endpoint: meta["token_endpoint"].as_str().unwrap().to_owned(),
        task: task["id"].as_str().unwrap().to_owned(),
        s,
        session,
    }
}

async fn minted(s: &TestServer) -> usize {
    let events = s.events().await;
    events
        .iter()
        .filter(|e| e["kind"] == "grant.minted")
        .count()
}

#[tokio::test]
async fn a_proof_binds_the_grant_to_the_agents_key() {
    let t = setup().await;
    let key = SigningKey::generate(SigningAlg::Es256).unwrap().0;
    let proof = dpop::sign_proof(&key, "POST", &t.token_endpoint, None, now()).unwrap();
    let (st, v) =
        t.s.exchange_dpop(&t.session, &t.task, "https://api.github.com", &proof)
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "DPoP");
    let token = v["access_token"].as_str().unwrap();
    let jkt = key.public_jwk().thumbprint().unwrap();
    assert_eq!(claims(token)["cnf"], json!({"jkt": jkt}));

    // Introspection tells a resource server the token needs a proof.
    let (st, i) =
        t.s.form("/oauth/introspect", Some(&t.s.root), &[("token", token)])
            .await;
    assert_eq!(st, StatusCode::OK, "{i}");
    assert_eq!(
        (i["active"].clone(), i["token_type"].clone()),
        (json!(true), json!("DPoP"))
    );
    assert_eq!(i["cnf"]["jkt"], jkt.as_str());

    // Without a proof the same exchange yields an unbound Bearer token.
    let (st, v) =
        t.s.exchange(&t.session, &t.task, "https://api.github.com", &[])
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        claims(v["access_token"].as_str().unwrap())
            .get("cnf")
            .is_none()
    );
}

#[tokio::test]
async fn bad_or_replayed_proofs_mint_nothing() {
    let t = setup().await;
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let grants_before = minted(&t.s).await;
    let cases = [
        (
            "other endpoint",
            dpop::sign_proof(
                &key,
                "POST",
                "https://evil.example/oauth/token",
                None,
                now(),
            )
            .unwrap(),
        ),
        (
            "GET",
            dpop::sign_proof(&key, "GET", &t.token_endpoint, None, now()).unwrap(),
        ),
        (
            "stale",
            dpop::sign_proof(&key, "POST", &t.token_endpoint, None, now() - 600).unwrap(),
        ),
        ("garbage", "not.a.proof".to_owned()),
    ];
    for (name, proof) in cases {
        let (st, v) =
            t.s.exchange_dpop(&t.session, &t.task, "https://api.github.com", &proof)
                .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name}: {v}");
        assert_eq!(v["error"], "invalid_dpop_proof", "{name}: {v}");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .contains("DPoP proof"),
            "{name}: {v}"
        );
    }
    let proof = dpop::sign_proof(&key, "POST", &t.token_endpoint, None, now()).unwrap();
    let (st, v) =
        t.s.exchange_dpop(&t.session, &t.task, "https://api.github.com", &proof)
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) =
        t.s.exchange_dpop(&t.session, &t.task, "https://api.github.com", &proof)
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "replay: {v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("used before"),
        "{v}"
    );
    assert_eq!(
        minted(&t.s).await,
        grants_before + 1,
        "only the one good proof minted a grant"
    );
}

async fn ask(s: &TestServer, token: &str, dpop: Value) -> (StatusCode, Value) {
    let body = json!({"token": token, "audience": "https://api.github.com",
                      "action": "issues:read", "resource": "repo:acme/widgets", "dpop": dpop});
    s.post("/v1/authorize", Some(&s.root), &body).await
}

#[tokio::test]
async fn authorize_needs_the_proof_that_came_with_a_bound_token() {
    let t = setup().await;
    let key = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let proof = dpop::sign_proof(&key, "POST", &t.token_endpoint, None, now()).unwrap();
    let (_, v) =
        t.s.exchange_dpop(&t.session, &t.task, "https://api.github.com", &proof)
            .await;
    let token = v["access_token"].as_str().unwrap().to_owned();
    let url = "https://github-gateway.example/repos/acme/widgets/issues";
    let evidence = |k: &SigningKey, tok: &str| {
        json!({"proof": dpop::sign_proof(k, "GET", url, Some(tok), now()).unwrap(),
               "method": "GET", "url": url})
    };

    let (st, d) = ask(&t.s, &token, Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(
        (&d["decision"], &d["code"]),
        (&json!("deny"), &json!("dpop_required")),
        "{d}"
    );

    let good = evidence(&key, &token);
    let (_, d) = ask(&t.s, &token, good.clone()).await;
    assert_eq!(d["decision"], "allow", "{d}");
    let (_, d) = ask(&t.s, &token, good).await;
    assert_eq!(d["code"], "invalid_dpop_proof", "replayed proof: {d}");
    let other = SigningKey::generate(SigningAlg::EdDsa).unwrap().0;
    let (_, d) = ask(&t.s, &token, evidence(&other, &token)).await;
    assert_eq!(d["code"], "invalid_dpop_proof", "other key: {d}");

    // An unbound token with a proof is refused too.
    let (_, plain) =
        t.s.exchange(&t.session, &t.task, "https://api.github.com", &[])
            .await;
    let plain = plain["access_token"].as_str().unwrap();
    let (_, d) = ask(&t.s, plain, evidence(&key, plain)).await;
    assert_eq!(d["code"], "not_dpop_bound", "{d}");

    // Every one of those decisions is in the audit log with its agent and task.
    let dpop_denials =
        t.s.events()
            .await
            .into_iter()
            .filter(|e| {
                e["kind"] == "decision"
                    && e["reasons"][0].as_str().is_some_and(|r| {
                        ["dpop_required:", "invalid_dpop_proof:", "not_dpop_bound:"]
                            .iter()
                            .any(|c| r.starts_with(c))
                    })
            })
            .collect::<Vec<_>>();
    assert_eq!(dpop_denials.len(), 4, "{dpop_denials:?}");
    assert!(
        dpop_denials
            .iter()
            .all(|e| e["agent"] == "bot" && e["task"] == t.task.as_str())
    );
}
