//! The router: which handler answers each path, and the layers around them
//! (metrics, body limits and deadline, request ids). Handlers, one module
//! per area, stay thin: parse at the edge, apply domain rules, write through
//! the store (with the audit event), update the views.

mod anomalies;
mod approvals;
mod authorize;
mod breakglass;
mod caller;
mod client_auth;
mod credentials;
mod delegate;
mod feed;
mod grant;
mod inventory;
mod meta;
mod oauth;
mod posture;
mod proxy;
mod registry;
mod rescope;
mod secrets;
mod tasks;
mod webhooks;

use crate::app::App;
use crate::error::ApiError;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    let limit = app.settings.raw.max_body_bytes;
    let body_deadline = std::time::Duration::from_secs(app.settings.raw.body_read_timeout_secs);
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route("/readyz", get(meta::readyz))
        .route(
            "/.well-known/oauth-authorization-server",
            get(meta::metadata),
        )
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/v1/openapi.json", get(meta::openapi))
        .route(
            "/oauth/token",
            post(oauth::token).layer(axum::middleware::from_fn_with_state(
                app.clone(),
                oauth::throttled,
            )),
        )
        .route("/oauth/introspect", post(authorize::introspect))
        .route("/oauth/revoke", post(authorize::revoke))
        .route("/v1/authorize", post(authorize::authorize))
        .route("/v1/enroll", post(registry::enroll))
        .route(
            "/v1/owners",
            post(registry::create_owner).get(registry::list_owners),
        )
        .route(
            "/v1/agents",
            post(registry::create_agent).get(registry::list_agents),
        )
        .route("/v1/agents/{name}", get(registry::get_agent))
        .route("/v1/agents/{name}/revoke", post(registry::revoke_agent))
        .route(
            "/v1/agents/{name}/join-tokens",
            post(registry::create_join_token),
        )
        .route(
            "/v1/agents/{name}/bindings",
            post(registry::add_binding).get(registry::list_bindings),
        )
        .route(
            "/v1/tools",
            post(registry::create_tool).get(registry::list_tools),
        )
        .route(
            "/v1/tools/{name}",
            get(registry::get_tool).put(registry::update_tool),
        )
        .route("/v1/tasks", post(tasks::create).get(tasks::list))
        .route("/v1/tasks/{id}", get(tasks::show))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/v1/tasks/{id}/revoke", post(tasks::revoke))
        .route("/v1/tasks/{id}/suspend", post(tasks::suspend))
        .route("/v1/tasks/{id}/resume", post(tasks::resume))
        .route("/v1/tasks/{id}/rescope", post(rescope::rescope))
        .route("/v1/tasks/{id}/delegate", post(delegate::by_api))
        .route("/v1/tasks/{id}/tree", get(delegate::tree))
        .route("/v1/tasks/{id}/secrets/{name}", get(secrets::reveal))
        .route(
            "/v1/tasks/{id}/credentials/{tool}/{role}",
            post(credentials::issue),
        )
        .route("/v1/leases", get(credentials::list))
        .route("/v1/leases/{id}", get(credentials::show))
        .route("/v1/secrets", post(secrets::put).get(secrets::list))
        .route(
            "/v1/secrets/{name}",
            get(secrets::show).delete(secrets::delete),
        )
        .route("/v1/secrets/{name}/rotate", post(secrets::rotate))
        .route("/v1/proxy/catalog", get(proxy::catalog))
        .route("/v1/proxy/secrets/{tool}", get(proxy::secret))
        .route(
            "/v1/audit/tool-invocations",
            // Batches of records are larger than any other request.
            post(proxy::ingest).layer(DefaultBodyLimit::max(4 * 1024 * 1024)),
        )
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/resolve", post(approvals::resolve))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/v1/breakglass",
            post(breakglass::open).get(breakglass::list),
        )
        .route("/v1/revocations", get(feed::list))
        .route("/v1/revocations/stream", get(feed::stream))
        .route("/v1/audit/events", get(meta::audit_events))
        .route("/v1/anomalies", get(anomalies::list))
        .route(
            "/v1/anomalies/{seq}/acknowledge",
            post(anomalies::acknowledge),
        )
        .route("/v1/inventory", get(inventory::inventory))
        .route("/v1/posture", get(posture::posture))
        .route("/v1/audit/checkpoint", get(meta::audit_checkpoint))
        .route(
            "/v1/admin/tokens",
            post(registry::create_admin_token).get(registry::list_admin_tokens),
        )
        .route(
            "/v1/admin/tokens/{id}/revoke",
            post(registry::revoke_admin_token),
        )
        .route("/v1/keys/rotate", post(meta::rotate_keys))
        .route("/v1/keys/{kid}/revoke", post(meta::revoke_key))
        .route("/v1/policy", get(meta::policy_info))
        .route("/v1/policy/reload", post(meta::reload_policy))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::show).delete(webhooks::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::request_metrics::layer,
        ))
        .fallback(|| async { ApiError::not_found("route", "this path") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method: this path does not take {method}"),
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            body_deadline,
            crate::deadline::layer,
        ))
        .layer(axum::middleware::from_fn(crate::extract::request_id_layer))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is described in the OpenAPI document, and nothing else.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let src = include_str!("mod.rs");
        let mut served: Vec<&str> = src
            .split(".route(")
            .skip(1)
            .filter_map(|s| s.trim_start().strip_prefix('"')?.split('"').next())
            .filter(|p| p.starts_with('/'))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    /// A new refusal code cannot ship undocumented: the schema's enum is
    /// exactly the decision path's codes, in their order.
    #[test]
    fn openapi_lists_every_refusal_code() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let documented = &doc["components"]["schemas"]["RefusalCode"];
        let codes: Vec<&str> = mandate_policy::Refusal::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(documented["enum"], serde_json::json!(codes));
        let text = documented["description"].as_str().unwrap();
        for c in codes {
            assert!(text.contains(&format!("`{c}`")), "`{c}` is not explained");
        }
    }

    #[test]
    fn openapi_lists_every_misuse_check() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let documented = &doc["components"]["schemas"]["MisuseCheck"]["enum"];
        let checks: Vec<&str> = mandate_core::MisuseCheck::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(documented, &serde_json::json!(checks));
    }

    #[test]
    fn openapi_lists_every_audit_event_kind() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let documented = &doc["components"]["schemas"]["Event"]["properties"]["kind"]["enum"];
        let kinds: Vec<&str> = mandate_audit::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(documented, &serde_json::json!(kinds));
    }
}
