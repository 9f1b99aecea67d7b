//! Dynamic database logins over real HTTP against a real PostgreSQL: the
//! task's agent gets a login that can do what its role grants and nothing
//! more; completion, revocation, a parent's cascade, the deadline and a
//! restart after the task ended while the broker was down each leave no
//! role behind; an engine that is down answers 503 and makes nothing.

use mandate_testkit::postgres::{database, psql};
use mandate_testkit::serde_json::{Value, json};
use mandate_testkit::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const DB_AUD: &str = "urn:mandate:db:orders";

fn roles(url: &str, login: &str) -> String {
    psql(
        url,
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{login}'"),
    )
}

/// A server with an `orders-db` tool (a read-only role on a real
/// database), its admin DSN stored as the tool's secret, and agents
/// `dbbot` and `helper` allowed it.
async fn ready(hint: &str) -> Option<(TestServer, String)> {
    let url = database(hint)?;
    let group = format!("read_{hint}");
    psql(
        &url,
        &format!(
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1);
             CREATE ROLE {group} NOLOGIN; GRANT SELECT ON orders TO {group};"
        ),
    );
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "orders-db", "audience": DB_AUD, "owner": "platform", "environment": "staging",
               "sensitivity": "confidential", "max_ttl_secs": 600, "actions": ["readonly"],
               "engine": {"kind": "postgres", "roles": [{"name": "readonly", "member_of": [group]}]}}),
    )
    .await;
    s.admin_post(
        "/v1/secrets",
        json!({"name": "orders-db-admin", "tool": "orders-db", "class": "database",
               "owner": "platform", "value": url}),
    )
    .await;
    for name in ["dbbot", "helper"] {
        s.admin_post(
            "/v1/agents",
            json!({"name": name, "owner": "platform", "environment": "staging", "allowed_tools": ["orders-db"]}),
        )
        .await;
    }
    Some((s, url))
}

async fn task(s: &TestServer, session: &str, ttl: Option<u32>) -> String {
    let (st, t) = s
        .create_task(
            session,
            json!([{"tool": "orders-db", "actions": ["readonly"]}]),
            ttl,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

async fn credential(s: &TestServer, session: &str, task: &str) -> Value {
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{task}/credentials/orders-db/readonly"),
            Some(session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// The login of a new credential for `task`.
async fn new_login(s: &TestServer, session: &str, task: &str) -> String {
    credential(s, session, task).await["login"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{e:?}"))?;
    tokio::spawn(conn);
    Ok(client)
}

async fn gone_within(url: &str, login: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while roles(url, login) != "0" {
        assert!(Instant::now() < deadline, "{login} still in pg_roles");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_login_lives_exactly_as_long_as_its_task() {
    let Some((s, url)) = ready("lease_life").await else {
        return;
    };
    let session = s.session("dbbot").await;
    // An intent written to break SQL never reaches it.
    let (st, t) = s
        .post(
            "/v1/tasks",
            Some(&session),
            &json!({"intent": "x'); DROP TABLE orders; --\" DROP ROLE admin;",
                    "scope": [{"tool": "orders-db", "actions": ["readonly"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let id = t["id"].as_str().unwrap().to_owned();
    let v = credential(&s, &session, &id).await;
    let login = v["login"].as_str().unwrap().to_owned();
    assert!(
        login.starts_with(&format!("mnd_{}", id.trim_start_matches("task_"))),
        "{login}"
    );
    assert_eq!(v["facts"]["PGUSER"], login.as_str());
    let client = connect(v["url"].as_str().unwrap()).await.unwrap();
    let n: i32 = client
        .query_one("SELECT id FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let denied = format!(
        "{:?}",
        client.execute("DELETE FROM orders", &[]).await.unwrap_err()
    );
    assert!(denied.contains("permission denied"), "{denied}");

    let events = s.events().await;
    let password = v["password"].as_str().unwrap();
    assert!(
        !json!(events).to_string().contains(password),
        "never the password"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"lease.created") && kinds.contains(&"secret.retrieved"),
        "{kinds:?}"
    );
    let (_, leases) = s.get(&format!("/v1/leases?task={id}"), Some(&s.root)).await;
    assert_eq!(leases["leases"][0]["state"], "active", "{leases}");
    assert!(!leases.to_string().contains(password));

    // Completing the task: the login is gone before the answer comes back,
    // and its open session is ended.
    let (st, _) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            Some(&session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(roles(&url, &login), "0");
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "session still open"
    );
    assert!(connect(v["url"].as_str().unwrap()).await.is_err());
    let (_, leases) = s.get(&format!("/v1/leases?task={id}"), Some(&s.root)).await;
    assert_eq!(leases["leases"][0]["state"], "revoked", "{leases}");
    // An ended task gets nothing more.
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/credentials/orders-db/readonly"),
            Some(&session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn revocation_a_parents_cascade_and_the_deadline_each_drop_the_role() {
    let Some((s, url)) = ready("lease_ends").await else {
        return;
    };
    let session = s.session("dbbot").await;
    // An operator's revocation.
    let id = task(&s, &session, None).await;
    let login = new_login(&s, &session, &id).await;
    let (st, _) = s
        .post(&format!("/v1/tasks/{id}/revoke"), Some(&s.root), &json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(roles(&url, &login), "0");
    // A parent's cascade: the child's login goes with the parent.
    let parent = task(&s, &session, None).await;
    let helper = s.session("helper").await;
    let (st, v) = s.exchange(&session, &parent, DB_AUD, &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, child) = s
        .post(
            &format!("/v1/tasks/{parent}/delegate"),
            Some(&helper),
            &json!({"subject_token": v["access_token"],
                    "scope": [{"tool": "orders-db", "actions": ["readonly"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{child}");
    let child_id = child["id"].as_str().unwrap().to_owned();
    let login = credential(&s, &helper, &child_id).await["login"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = s
        .post(
            &format!("/v1/tasks/{parent}/revoke"),
            Some(&s.root),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        roles(&url, &login),
        "0",
        "the child's login went with the parent"
    );
    // The deadline: the sweeper expires the task, the revoker drops the role.
    let short = task(&s, &session, Some(2)).await;
    let login = new_login(&s, &session, &short).await;
    assert_eq!(roles(&url, &login), "1");
    gone_within(&url, &login, 10).await;
}

#[tokio::test]
async fn a_role_of_a_task_that_ended_while_the_broker_was_down_is_dropped_before_it_serves() {
    let Some((s, url)) = ready("lease_restart").await else {
        return;
    };
    let session = s.session("dbbot").await;
    let id = task(&s, &session, Some(2)).await;
    let login = new_login(&s, &session, &id).await;
    let mut s = s;
    s.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the task's deadline passes meanwhile
    assert_eq!(
        roles(&url, &login),
        "1",
        "nobody dropped it while the broker was down"
    );
    let s = s.restart().await;
    assert_eq!(roles(&url, &login), "0", "dropped before serving");
    drop(s);
}

/// The engine is asked while the lease commits, so a crash between the
/// two can leave a login with no row: found by its name at the next start
/// and destroyed, unless its task is another broker's.
#[tokio::test]
async fn a_login_made_but_never_recorded_is_destroyed_before_it_serves() {
    let Some((s, url)) = ready("lease_unrecorded").await else {
        return;
    };
    let session = s.session("dbbot").await;
    let id = task(&s, &session, None).await;
    let recorded = new_login(&s, &session, &id).await;
    let comment = psql(
        &url,
        &format!(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{recorded}'"
        ),
    );
    assert_eq!(
        comment, "mandate role=readonly",
        "every login names its role"
    );
    // What a crash in the window leaves: a login of this task with no
    // lease, and one of a task this broker never had.
    let hex = id.strip_prefix("task_").unwrap();
    let unrecorded = format!("mnd_{hex}_00000000000000aa");
    let foreign = "mnd_0123456789abcdef0123456789abcdef_00000000000000bb";
    for login in [&unrecorded[..], foreign] {
        psql(
            &url,
            &format!(
                "CREATE ROLE {login} LOGIN PASSWORD 'x'; GRANT read_lease_unrecorded TO {login};
                 COMMENT ON ROLE {login} IS 'mandate role=readonly'"
            ),
        );
    }
    let s = s.restart().await;
    let foreign_left = roles(&url, foreign);
    psql(&url, &format!("DROP ROLE {foreign}"));
    assert_eq!(roles(&url, &unrecorded), "0", "destroyed before serving");
    assert_eq!(
        roles(&url, &recorded),
        "1",
        "a recorded login of a live task stays"
    );
    assert_eq!(foreign_left, "1", "another broker's login is left alone");
    let swept: Vec<Value> = s
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "lease.orphan_revoked")
        .collect();
    assert_eq!(swept.len(), 1, "{swept:?}");
    let detail: Value = serde_json::from_str(swept[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (swept[0]["task"].as_str(), detail["login"].as_str()),
        (Some(id.as_str()), Some(unrecorded.as_str()))
    );
}

#[tokio::test]
async fn bad_requests_and_a_down_engine_make_nothing() {
    let Some((s, url)) = ready("lease_bad").await else {
        return;
    };
    let session = s.session("dbbot").await;
    let id = task(&s, &session, None).await;
    let path = |tool: &str, role: &str| format!("/v1/tasks/{id}/credentials/{tool}/{role}");
    // Roles are the cluster's, shared with other tests: count this task's.
    let mine = format!(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mnd_{}%'",
        id.trim_start_matches("task_")
    );
    for (tool, role, status, code) in [
        ("orders-db", "admin", StatusCode::NOT_FOUND, "unknown_role"),
        (
            "orders-db",
            "Bad;Role",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("github", "readonly", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (st, v) = s.post(&path(tool, role), Some(&session), &json!({})).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{tool}/{role}: {v}"
        );
    }
    // Someone else's task is not found; an admin token is not its agent.
    let other = s.session("helper").await;
    let (st, _) = s
        .post(&path("orders-db", "readonly"), Some(&other), &json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .post(&path("orders-db", "readonly"), Some(&s.root), &json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(psql(&url, &mine), "0");

    // The engine's server goes away: 503, and no role.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (st, v) = s
        .post(
            "/v1/secrets/orders-db-admin/rotate",
            Some(&s.root),
            &json!({"value": format!("postgres://mandate@127.0.0.1:{port}/none")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s
        .post(&path("orders-db", "readonly"), Some(&session), &json!({}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("engine_unavailable")),
        "{v}"
    );
    assert!(!v.to_string().contains("postgres://"), "never the DSN: {v}");
    // The decision and the lease were recorded together before the attempt;
    // the failed attempt is on record right after them.
    let kinds: Vec<String> = s
        .events()
        .await
        .iter()
        .filter(|e| e["task"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    let at = kinds.iter().rposition(|k| k == "lease.created").unwrap();
    assert_eq!(
        kinds[at..].get(..3),
        Some(&["lease.created", "secret.retrieved", "lease.failed"].map(String::from)[..]),
        "{kinds:?}"
    );
    // The revoker cannot reach the engine either: the lease is failed,
    // retried with backoff, counted in /metrics and a posture finding.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        let (_, leases) = s.get("/v1/leases?failed=true", Some(&s.root)).await;
        if let Some(l) = leases["leases"].as_array().and_then(|a| a.first()).cloned() {
            break l;
        }
        assert!(Instant::now() < deadline, "never marked failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lease["task"], id.as_str());
    assert!(
        lease["last_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{lease}"
    );
    assert!(lease["next_attempt_at"].as_i64().is_some(), "{lease}");
    let (_, report) = s.get("/v1/posture", Some(&s.root)).await;
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "lease-revocation-failed"),
        "{report}"
    );
    let metrics = reqwest::Client::new()
        .get(s.url("/metrics"))
        .bearer_auth(&s.root)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mandate_leases_failing 1"), "{metrics}");
    assert_eq!(psql(&url, &mine), "0");
}

/// A token service of the kind the HTTP engine speaks to: it mints,
/// revokes and answers for tokens by login, and checks its own admin key.
mod token_service {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use mandate_testkit::serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    pub type Tokens = Arc<Mutex<HashMap<String, String>>>;
    const KEY: &str = "svc-admin-key";

    fn authorised(h: &HeaderMap) -> bool {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
    }

    pub async fn start() -> (String, Tokens) {
        start_slow(std::time::Duration::ZERO).await
    }

    /// One that takes `delay` to mint each token.
    pub async fn start_slow(delay: std::time::Duration) -> (String, Tokens) {
        let tokens: Tokens = Arc::default();
        let app = Router::new()
            .route(
                "/issue",
                post(
                    move |State(t): State<Tokens>, h: HeaderMap, Json(b): Json<Value>| async move {
                        tokio::time::sleep(delay).await;
                        if !authorised(&h) {
                            return (StatusCode::UNAUTHORIZED, Json(json!({})));
                        }
                        let token = format!("tok-{}", b["login"].as_str().unwrap());
                        t.lock()
                            .unwrap()
                            .insert(b["login"].as_str().unwrap().to_owned(), token.clone());
                        (StatusCode::OK, Json(json!({"token": token})))
                    },
                ),
            )
            .route(
                "/revoke",
                post(
                    |State(t): State<Tokens>, h: HeaderMap, Json(b): Json<Value>| async move {
                        if !authorised(&h) {
                            return StatusCode::UNAUTHORIZED;
                        }
                        match t.lock().unwrap().remove(b["login"].as_str().unwrap()) {
                            Some(_) => StatusCode::NO_CONTENT,
                            None => StatusCode::NOT_FOUND,
                        }
                    },
                ),
            )
            .route("/status", get(|| async { StatusCode::OK }))
            .route(
                "/status/{login}",
                get(
                    |State(t): State<Tokens>, Path(login): Path<String>| async move {
                        if t.lock().unwrap().contains_key(&login) {
                            StatusCode::OK
                        } else {
                            StatusCode::NOT_FOUND
                        }
                    },
                ),
            )
            .with_state(tokens.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, tokens)
    }

    pub const ADMIN_KEY: &str = KEY;
}

/// The CA a PostgreSQL engine trusts is checked when the tool is
/// registered: not PEM, or PEM that holds no usable certificate, is a 400
/// naming `engine.ca_pem`, and no tool is made.
#[tokio::test]
async fn a_database_ca_that_is_not_a_certificate_is_refused_naming_the_field() {
    let s = TestServer::start().await;
    s.seed().await;
    for pem in [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let (st, v) = s
            .post(
                "/v1/tools",
                Some(&s.root),
                &json!({"name": "orders-db", "audience": DB_AUD, "owner": "platform",
                    "environment": "staging", "sensitivity": "confidential", "max_ttl_secs": 600, "actions": ["readonly"],
                    "engine": {"kind": "postgres", "roles": [{"name": "readonly"}], "ca_pem": pem}}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("engine.ca_pem"), "{message}");
    }
    let (st, _) = s.get("/v1/tools/orders-db", Some(&s.root)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing written");
}

/// A server with a `deploy-api` tool whose HTTP engine is the token
/// service at `base`, and agent `shipper` allowed it.
async fn with_token_service(base: &str) -> TestServer {
    let s = TestServer::start().await;
    s.seed().await;
    s.admin_post(
        "/v1/tools",
        json!({"name": "deploy-api", "audience": "https://deploy.example", "owner": "platform",
               "environment": "staging", "sensitivity": "confidential", "max_ttl_secs": 600,
               "actions": ["deployer"],
               "engine": {"kind": "http", "issue_url": format!("{base}/issue"),
                          "revoke_url": format!("{base}/revoke"), "status_url": format!("{base}/status"),
                          "roles": ["deployer"]}}),
    )
    .await;
    s.admin_post(
        "/v1/secrets",
        json!({"name": "deploy-admin", "tool": "deploy-api", "class": "deployment",
               "owner": "platform", "value": token_service::ADMIN_KEY}),
    )
    .await;
    s.admin_post(
        "/v1/agents",
        json!({"name": "shipper", "owner": "platform", "environment": "staging", "allowed_tools": ["deploy-api"]}),
    )
    .await;
    s
}

/// A task of `shipper` scoped to `deploy-api`'s `deployer` role.
async fn deploy_task(s: &TestServer, session: &str) -> String {
    let (st, t) = s
        .create_task(
            session,
            json!([{"tool": "deploy-api", "actions": ["deployer"]}]),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    t["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_http_engine_mints_and_revokes_through_its_service() {
    let (base, tokens) = token_service::start().await;
    let s = with_token_service(&base).await;
    let session = s.session("shipper").await;
    let id = &deploy_task(&s, &session).await;
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/credentials/deploy-api/deployer"),
            Some(&session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let login = v["login"].as_str().unwrap().to_owned();
    assert_eq!(
        tokens.lock().unwrap().get(&login),
        v["password"].as_str().map(str::to_owned).as_ref()
    );
    let (st, _) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            Some(&session),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        tokens.lock().unwrap().is_empty(),
        "revoked at the service before the answer"
    );
    let (_, leases) = s.get(&format!("/v1/leases?task={id}"), Some(&s.root)).await;
    assert_eq!(leases["leases"][0]["state"], "revoked", "{leases}");
}

/// A task that ends while the engine is still making its login: the login
/// is destroyed once made, never before (which would leave it behind).
#[tokio::test]
async fn a_task_that_ends_while_its_login_is_being_made_loses_it_once_made() {
    let (base, tokens) = token_service::start_slow(Duration::from_millis(700)).await;
    let s = with_token_service(&base).await;
    let session = s.session("shipper").await;
    let id = deploy_task(&s, &session).await;
    let (path, empty) = (
        format!("/v1/tasks/{id}/credentials/deploy-api/deployer"),
        json!({}),
    );
    let asking = s.post(&path, Some(&session), &empty);
    let ending = async {
        // The lease is recorded at once; the service is still minting.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, leases) = s.get(&format!("/v1/leases?task={id}"), Some(&s.root)).await;
            if leases["leases"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "no lease recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(tokens.lock().unwrap().is_empty(), "not minted yet");
        s.post(
            &format!("/v1/tasks/{id}/complete"),
            Some(&session),
            &json!({}),
        )
        .await
    };
    let ((st, v), (ended, _)) = tokio::join!(asking, ending);
    assert_eq!((st, ended), (StatusCode::CREATED, StatusCode::OK), "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, leases) = s.get(&format!("/v1/leases?task={id}"), Some(&s.root)).await;
        let revoked = leases["leases"][0]["state"] == "revoked";
        let left = tokens.lock().unwrap().len();
        if revoked && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease {leases}; {left} tokens left at the service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
