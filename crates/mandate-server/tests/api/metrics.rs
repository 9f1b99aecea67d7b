//! `/metrics` counts what really happened, by route template and outcome,
//! and never carries an id or a token.

use mandate_testkit::*;
use reqwest::StatusCode;

#[tokio::test]
async fn metrics_count_grants_decisions_logins_and_routes_without_ids() {
    let s = TestServer::start().await;
    s.seed().await;
    let session = s.session("bot").await;
    let (task, token) = s.read_grant(&session).await;
    s.authorize(&token, "issues:read", "repo:acme/widgets")
        .await;
    s.authorize(&token, "issues:write", "repo:acme/widgets")
        .await;
    let (st, _) = s
        .exchange(&session, &task, "https://nowhere.example", &[])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.get(&format!("/v1/tasks/{task}"), Some(&s.root)).await;
    assert_eq!(st, StatusCode::OK);

    let scraper = s.admin_token(&["metrics"]).await;
    let r = reqwest::Client::new()
        .get(s.url("/metrics"))
        .bearer_auth(&scraper)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    for want in [
        r#"mandate_grants_total{outcome="minted"} 1"#,
        r#"mandate_grants_total{outcome="refused"} 1"#,
        r#"mandate_decisions_total{outcome="allow"} 1"#,
        r#"mandate_decisions_total{outcome="deny"} 1"#,
        r#"mandate_logins_total{outcome="succeeded"} 1"#,
        r#"mandate_http_requests_total{route="/v1/authorize",method="POST",class="2xx"} 2"#,
        r#"mandate_http_requests_total{route="/oauth/token",method="POST",class="4xx"} 1"#,
        r#"route="/v1/tasks/{id}",method="GET",class="2xx"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    for secret in [
        task.as_str(),
        token.as_str(),
        session.as_str(),
        s.root.as_str(),
        scraper.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "an id or token leaked into /metrics"
        );
    }
}

/// Like Vault's `sys/metrics`: a scraper needs an admin token with the
/// `metrics` right unless `unauthenticated_metrics_access` is set.
#[tokio::test]
async fn metrics_need_the_metrics_right_unless_opened() {
    let s = TestServer::start().await;
    let get = |token: Option<String>| {
        let url = s.url("/metrics");
        async move {
            let mut r = reqwest::Client::new().get(url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status()
        }
    };
    assert_eq!(get(None).await, StatusCode::UNAUTHORIZED);
    let other = s.admin_token(&["agents"]).await;
    assert_eq!(get(Some(other)).await, StatusCode::FORBIDDEN);
    let scraper = s.admin_token(&["metrics"]).await;
    assert_eq!(get(Some(scraper)).await, StatusCode::OK);
    assert_eq!(get(Some(s.root.clone())).await, StatusCode::OK);

    let open = TestServer::start_with(|c| c.unauthenticated_metrics_access = true).await;
    let r = reqwest::get(open.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
