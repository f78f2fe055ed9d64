//! The agent's HTTP server: `GET /metrics` (OpenMetrics text), `POST /trigger` (write an
//! incident now; answers with its path), `GET /` (what is here).

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use tokio::sync::{mpsc, oneshot};

use crate::sinks::metrics::Metrics;

/// A request from the HTTP server to the agent's loop.
pub enum Control {
    /// Write an incident now; the answer is the file's path, or why not.
    Trigger(oneshot::Sender<Result<String, String>>),
}

#[derive(Clone)]
struct App {
    metrics: Metrics,
    control: mpsc::Sender<Control>,
}

pub fn router(metrics: Metrics, control: mpsc::Sender<Control>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/trigger", post(trigger))
        .with_state(App { metrics, control })
}

async fn index() -> &'static str {
    "zkstall agent\n  GET  /metrics   Prometheus metrics (OpenMetrics text)\n  POST /trigger   write an incident recording now\n"
}

/// OpenMetrics to clients that ask for it (Prometheus does), the older text format to the
/// rest (curl, promtool check metrics).
async fn metrics_text(State(app): State<App>, headers: HeaderMap) -> impl IntoResponse {
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if open_metrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            app.metrics.encode(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            app.metrics.encode_prometheus_text(),
        )
    }
}

async fn trigger(State(app): State<App>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if app.control.send(Control::Trigger(tx)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping\n".to_string(),
        );
    }
    match rx.await {
        Ok(Ok(path)) => (StatusCode::OK, format!("{path}\n")),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping\n".to_string(),
        ),
    }
}
