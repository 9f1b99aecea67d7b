//! One client-authentication rule at the token, introspection and
//! revocation endpoints (RFC 6749 §2.3, RFC 7523 `private_key_jwt`): a
//! presented client credential must verify, a `client_id` must name the
//! client that authenticated, and an assertion is good once.

use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use mandate_token::{SigningAlg, SigningKey};
use reqwest::StatusCode;

struct Agent {
    s: TestServer,
    key: AgentKey,
    session: String,
    task: String,
}

async fn setup() -> Agent {
    let s = TestServer::start().await;
    s.seed().await;
    let key = s.enroll("bot").await;
    let (st, v) = s.login_with_assertion(&s.assertion(&key, json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let session = v["access_token"].as_str().unwrap().to_owned();
    let (st, task) = s
        .create_task(
            &session,
            json!([{"tool": "github", "actions": ["issues:read"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{task}");
    let task = task["id"].as_str().unwrap().to_owned();
    Agent {
        s,
        key,
        session,
        task,
    }
}

impl Agent {
    async fn exchange(&self, extra: &[(&str, &str)]) -> (StatusCode, Value) {
        self.s
            .exchange(&self.session, &self.task, "https://api.github.com", extra)
            .await
    }

    /// An assertion for the agent's own key, addressed to `path`.
    fn assertion_for(&self, path: &str) -> String {
        self.s
            .assertion(&self.key, json!({"aud": self.s.url(path)}))
            .to_string()
    }
}

fn with_assertion(a: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_assertion_type", CLIENT_ASSERTION),
        ("client_assertion", a),
    ]
}

#[tokio::test]
async fn the_exchange_refuses_a_client_credential_that_does_not_verify() {
    let a = setup().await;
    let grants = || async {
        a.s.events()
            .await
            .iter()
            .filter(|e| e["kind"] == "grant.minted")
            .count()
    };
    let before = grants().await;
    // Signed by a key that was never enrolled, claiming to be the agent.
    let stranger = AgentKey {
        client_id: a.key.client_id.clone(),
        key: SigningKey::generate(SigningAlg::EdDsa).unwrap().0,
    };
    let forged = a.s.assertion(&stranger, json!({}));
    let (st, v) = a.exchange(&with_assertion(&forged)).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );
    // Garbage beside a client_id naming another agent.
    let other = "spiffe://test.local/agent/someone-else";
    let mut form = with_assertion("garbage");
    form.push(("client_id", other));
    let (st, v) = a.exchange(&form).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );
    // A client_id alone that is not the session's agent.
    let (st, v) = a.exchange(&[("client_id", other)]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );
    assert_eq!(grants().await, before, "nothing was minted");

    // The agent's own assertion (and client_id) is accepted, once.
    let good = a.assertion_for("/oauth/token");
    let mut form = with_assertion(&good);
    form.push(("client_id", a.key.client_id.as_str()));
    let (st, v) = a.exchange(&form).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = a.exchange(&form).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "replay: {v}"
    );
    assert!(
        v["error_description"].as_str().unwrap().contains("replay"),
        "{v}"
    );
    // Without any client credential the session still suffices.
    let (st, v) = a.exchange(&[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn introspection_and_revocation_take_the_agents_private_key_jwt() {
    let a = setup().await;
    let (st, v) = a.exchange(&[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    let intro = |assertion: String| {
        let s = &a.s;
        let token = token.clone();
        async move {
            let mut form = with_assertion(&assertion);
            form.push(("token", &token));
            s.form("/oauth/introspect", None, &form).await
        }
    };
    let (st, v) = intro(a.assertion_for("/oauth/introspect")).await;
    assert_eq!((st, &v["active"]), (StatusCode::OK, &json!(true)), "{v}");
    // The token endpoint as `aud` is good too (RFC 7523 §3).
    let (st, v) = intro(a.assertion_for("/oauth/token")).await;
    assert_eq!((st, &v["active"]), (StatusCode::OK, &json!(true)), "{v}");
    // No credential, or one that does not verify: invalid_client.
    let (st, v) =
        a.s.form("/oauth/introspect", None, &[("token", &token)])
            .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );
    let (st, v) = intro("garbage".into()).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );

    let revoke_assertion = a.assertion_for("/oauth/revoke");
    let mut form = with_assertion(&revoke_assertion);
    form.push(("token", &token));
    let (st, v) = a.s.form("/oauth/revoke", None, &form).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = intro(a.assertion_for("/oauth/introspect")).await;
    assert_eq!((st, &v["active"]), (StatusCode::OK, &json!(false)), "{v}");
}

#[tokio::test]
async fn bad_client_assertions_are_refused_by_name_and_mint_nothing() {
    let a = setup().await;
    let sessions = || async {
        a.s.events()
            .await
            .iter()
            .filter(|e| e["kind"] == "login.succeeded")
            .count()
    };
    let before = sessions().await;
    let t = now();
    let hmac = {
        // HS256 keyed with the agent's public key: key confusion.
        let header = mandate_token::b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = mandate_token::b64(
            json!({"iss": a.key.client_id, "sub": a.key.client_id, "aud": a.s.url("/oauth/token"),
                   "exp": t + 60, "jti": "h"})
            .to_string()
            .as_bytes(),
        );
        format!("{header}.{claims}.c2lnbmF0dXJl")
    };
    let none = {
        let header = mandate_token::b64(br#"{"alg":"none"}"#);
        let claims = mandate_token::b64(
            json!({"iss": a.key.client_id, "sub": a.key.client_id, "aud": a.s.url("/oauth/token"),
                   "exp": t + 60, "jti": "n"})
            .to_string()
            .as_bytes(),
        );
        format!("{header}.{claims}.")
    };
    let cases = [
        (
            a.s.assertion(&a.key, json!({"aud": "https://elsewhere.example/token"})),
            "aud",
        ),
        (
            a.s.assertion(&a.key, json!({"iat": t - 600, "exp": t - 300})),
            "expired",
        ),
        (hmac, "HS256"),
        (none, "none"),
    ];
    for (assertion, says) in cases {
        let (st, v) = a.s.login_with_assertion(&assertion).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{says}: {v}"
        );
        let why = v["error_description"].as_str().unwrap();
        assert!(why.contains(says), "{says}: {why}");
    }
    // A replayed login assertion.
    let once = a.s.assertion(&a.key, json!({}));
    assert_eq!(a.s.login_with_assertion(&once).await.0, StatusCode::OK);
    let (st, v) = a.s.login_with_assertion(&once).await;
    assert!(st.is_client_error(), "{v}");
    assert!(
        v["error_description"].as_str().unwrap().contains("replay"),
        "{v}"
    );
    assert_eq!(sessions().await, before + 1, "only the one good login");
    // The login grant needs the assertion: a bearer is not a client credential there.
    let (st, v) =
        a.s.form(
            "/oauth/token",
            Some(&a.s.root),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{v}"
    );
}

#[tokio::test]
async fn metadata_lists_only_registered_client_authentication_methods() {
    let s = TestServer::start().await;
    let (_, meta) = s.get("/.well-known/oauth-authorization-server", None).await;
    for field in [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        assert_eq!(meta[field], json!(["private_key_jwt"]), "{field}");
    }
    for field in [
        "introspection_endpoint_auth_signing_alg_values_supported",
        "revocation_endpoint_auth_signing_alg_values_supported",
    ] {
        assert_eq!(
            meta[field], meta["token_endpoint_auth_signing_alg_values_supported"],
            "{field}"
        );
    }
}
