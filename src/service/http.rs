//! `/metrics`, `/health` and `/ready`, served by axum (hyper): real HTTP/1.1
//! parsing, methods checked (GET only; anything else is 405), unknown paths
//! 404, and a bound on how long a request may take.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

/// Longest a request may take before it is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the service is doing, for `/ready` and the log.
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    stage: Arc<RwLock<String>>,
}

impl Readiness {
    /// Not ready; `stage` says why.
    pub fn starting(stage: &str) -> Readiness {
        let r = Readiness::default();
        r.set_stage(stage);
        r
    }

    /// Records what the service is doing now (and logs it).
    pub fn set_stage(&self, stage: &str) {
        tracing::info!(stage, "service stage");
        if let Ok(mut s) = self.stage.write() {
            *s = stage.to_string();
        }
    }

    /// Ready (`true`) to process new input, or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn stage(&self) -> String {
        self.stage.read().map(|s| s.clone()).unwrap_or_default()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
    healthy: Arc<AtomicBool>,
}

/// Binds `listen` (failing at once, so a service never runs without its
/// endpoints).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the HTTP endpoint {listen}"))
}

/// Serves on `listener` until the process ends. `/ready` is 200 once state
/// is rebuilt and consumption has started (the body says the current stage
/// either way); `/health` is 503 while commits keep failing (`healthy` false).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    healthy: Arc<AtomicBool>,
) -> Result<()> {
    let state = AppState {
        metrics,
        readiness,
        healthy,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "http: /metrics /health /ready");
    }
    axum::serve(listener, app).await.context("http server")
}

async fn metrics_page(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(),
    )
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if state.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "commits failing; retrying\n".to_string(),
        )
    }
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let stage = state.readiness.stage();
    if state.readiness.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready: {stage}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {stage}\n"),
        )
    }
}
