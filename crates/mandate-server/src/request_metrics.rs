//! The middleware that counts and times every routed request by its route
//! template, into the broker's [`crate::metrics::Metrics`].

use crate::app::AppState;

/// Count and time every routed request by its route template.
pub async fn layer(
    axum::extract::State(app): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    app.metrics.request(
        &route,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}
