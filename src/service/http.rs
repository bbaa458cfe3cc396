//! `/metrics`, `/health` and `/ready`, served by axum (hyper): real HTTP/1.1
//! parsing, methods checked (GET only; anything else is 405), unknown paths
//! 404, and a bound on how long a request may take.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use super::history;
use super::metrics::Metrics;
use super::queries::{self, KnownAt, QueryRegistry};
use deltabook_dataflows::engine::Time;
use deltabook_dataflows::query::{Plan, TableSet};

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
    queries: LiveQueries,
}

/// What `POST /query` needs: the registry and its limits.
#[derive(Clone)]
pub struct LiveQueries {
    /// Where subscriptions are registered for the engine.
    pub registry: Arc<QueryRegistry>,
    /// The tables the engine shares.
    pub tables: TableSet,
    /// `queries.max_subscribers`.
    pub max_subscribers: usize,
    /// `queries.subscriber_queue_updates`.
    pub queue: usize,
    /// Where `AS KNOWN AT` older than memory is answered from (the event store).
    pub postgres_url: String,
}

/// `?once` on `POST /query`.
#[derive(serde::Deserialize)]
struct QueryParams {
    #[serde(default)]
    once: bool,
}

/// Binds `listen` (failing at once, so a service never runs without its
/// endpoints).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the HTTP endpoint {listen}"))
}

/// Serves on `listener` until the process ends. `/ready` is 200 once the
/// restart snapshot is loaded and handed to the engine and consumption has
/// started (the body says the current stage either way; a live query that
/// arrives before the workers have taken the snapshot in waits for it,
/// `QueryRegistry::snapshot_before`); `/health` is 503 while commits keep
/// failing (`healthy` false).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    healthy: Arc<AtomicBool>,
    queries: LiveQueries,
) -> Result<()> {
    let state = AppState {
        metrics,
        readiness,
        healthy,
        queries,
    };
    // A subscription's body streams for as long as the client stays, so
    // it is routed outside the request timeout.
    let live = Router::new()
        .route("/query", post(subscribe))
        .with_state(state.clone());
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
        .merge(live);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "http: /metrics /health /ready /query");
    }
    axum::serve(listener, app).await.context("http server")
}

/// `POST /query[?once=true]`, the SQL text as the body: a live
/// subscription streamed as JSON lines (see `queries::body_stream`);
/// 400 with `{"error": ...}` for a query that is refused. An `AS KNOWN AT`
/// query is a snapshot only (its answer never changes): from the shared
/// traces while they keep that time, else from the event store
/// (`history::answer`), in the same line format.
async fn subscribe(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
    sql: String,
) -> axum::response::Response {
    let live = &state.queries;
    let plan = match Plan::compile(&sql) {
        Ok(plan) => plan,
        Err(error) => return refused(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    let once = params.once || plan.as_of.known_at.is_some();
    if let KnownAt::Forgotten(known_at) = live.registry.place(&plan) {
        return from_event_store(live, &plan, known_at, &sql).await;
    }
    match live
        .registry
        .subscribe_plan(plan, live.tables, live.max_subscribers, live.queue)
    {
        Ok((subscription, events)) => {
            tracing::info!(id = subscription.id, sql = %sql, "live query attached");
            let body = queries::body_stream(subscription, events, once, live.queue);
            ndjson(axum::body::Body::from_stream(body))
        }
        Err(error) => {
            let status = match error {
                queries::SubscribeError::Full(_) | queries::SubscribeError::Stopping => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            refused(status, &error.to_string())
        }
    }
}

/// An `AS KNOWN AT` answer rebuilt from the event store, as one body.
async fn from_event_store(
    live: &LiveQueries,
    plan: &Plan,
    known_at: Time,
    sql: &str,
) -> axum::response::Response {
    if let Some(message) = history::refusal(plan, known_at) {
        return refused(StatusCode::BAD_REQUEST, &message);
    }
    tracing::info!(sql = %sql, known_at, "AS KNOWN AT from the event store");
    match history::answer(&live.postgres_url, plan, known_at).await {
        Ok((rows, errors)) => {
            // The lines of a snapshot-only subscription.
            let lines = std::iter::once(queries::columns_line(&plan.columns))
                .chain(
                    rows.iter()
                        .map(|(row, diff)| queries::update_line(known_at, *diff, row)),
                )
                .chain(errors.iter().map(|e| queries::error_line(e)))
                .chain(std::iter::once(queries::progress_line(
                    known_at.saturating_add(1),
                )));
            ndjson(
                lines
                    .map(|line| format!("{line}\n"))
                    .collect::<String>()
                    .into(),
            )
        }
        Err(error) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("AS KNOWN AT {known_at} from the event store: {error:#}"),
        ),
    }
}

fn ndjson(body: axum::body::Body) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn refused(status: StatusCode, message: &str) -> axum::response::Response {
    let body = format!("{}\n", queries::error_line(message));
    (status, ndjson(body.into())).into_response()
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
