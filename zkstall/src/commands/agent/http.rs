//! The agent's HTTP server: `GET /metrics` (OpenMetrics text), `POST /trigger` (write an
//! incident now; answers with its path), `GET /` (what is here).

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
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

async fn metrics_text(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
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
