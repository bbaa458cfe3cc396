//! `deltabook run`: the real-time service. Kafka in; each engine timestamp's
//! state changes, restart snapshot, corrections, dead letters and source
//! offsets committed to PostgreSQL in one fenced transaction; corrections
//! and dead letters published to Kafka from the committed tables (a
//! transactional outbox). On start the engine loads the snapshot committed
//! with the last timestamp (not the event store) and resumes consumption at
//! the stored offsets.
//!
//! Threads: `engine.workers` timely workers, each reading its own Kafka
//! partitions; a tokio runtime for the committer, the publishers, the writer
//! lock and HTTP. The channel from the workers to the committer is bounded,
//! and workers stop reading while `engine.max_uncommitted_timestamps` are
//! uncommitted, so when PostgreSQL falls behind, consumption pauses.

pub mod assemble;
pub mod cluster;
pub mod cluster_queries;
pub mod commit;
pub mod engine;
pub mod history;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod publish;
pub mod queries;
pub mod retry;
pub mod source;
pub mod valuations;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use deltabook_sinks::postgres;
use tokio::sync::Notify;
use tokio_postgres::Client;

use self::engine::EngineStart;
use self::metrics::Metrics;
use self::retry::Backoff;
use crate::config::Config;
use deltabook_dataflows::query::Table;

/// Runs the service until SIGINT / SIGTERM (or until it is fenced).
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, shutdown_signal()))
}

/// Connects to PostgreSQL, retrying with backoff until it answers.
pub async fn connect_with_retry(config: &Config, metrics: &Metrics, what: &str) -> Client {
    let mut backoff = Backoff::new(&config.retry);
    loop {
        match postgres::connect(&config.postgres.url).await {
            Ok(client) => return client,
            Err(e) => {
                metrics
                    .retries
                    .with_label_values(&["postgres_connect"])
                    .inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, attempt = backoff.attempts, ?delay, "postgres unavailable ({what})");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs the service until `shutdown` completes, then finishes the
/// timestamps in flight and returns. Returns an error when this instance is
/// fenced by another (it then stops at once, committing nothing more).
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    if config.cluster.process > 0 {
        return serve_workers(config, shutdown).await;
    }
    let metrics = Metrics::new()?;
    let readiness = http::Readiness::starting("waiting for the writer lock");
    let healthy = Arc::new(AtomicBool::new(true));
    let listener = http::bind(&config.http.listen).await?;
    // No `AS KNOWN AT` is answered from memory before the engine starts.
    let query_registry = Arc::new(queries::QueryRegistry::before_start());
    let live_queries = http::LiveQueries {
        registry: query_registry.clone(),
        tables: config.queries.table_set()?,
        max_subscribers: config.queries.max_subscribers,
        queue: config.queries.subscriber_queue_updates,
        postgres_url: config.postgres.url.clone(),
    };
    {
        let (metrics, readiness, healthy) = (metrics.clone(), readiness.clone(), healthy.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(listener, metrics, readiness, healthy, live_queries).await {
                tracing::error!(error = %format!("{e:#}"), "http server stopped");
            }
        });
    }

    // One writer at a time: a second instance waits here.
    let mut writer_lock = lock::WriterLock::acquire(&config, &metrics).await?;

    readiness.set_stage("migrating the schema");
    let mut client = connect_with_retry(&config, &metrics, "migrations").await;
    let applied = postgres::migrate(&mut client).await.context("migrations")?;
    tracing::info!(?applied, "migrations");
    let writer_epoch = postgres::take_over(&client)
        .await
        .context("taking over as the writer")?;
    tracing::info!(writer_epoch, "writer epoch");

    let mut backoff = Backoff::new(&config.retry);
    while let Err(e) = crate::kafka::ensure_topics(&config.kafka).await {
        metrics.retries.with_label_values(&["kafka_topics"]).inc();
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{e:#}"), ?delay, "kafka unavailable; retrying");
        tokio::time::sleep(delay).await;
    }

    readiness.set_stage("loading the restart snapshot");
    let loading = Instant::now();
    // The `trades` table of queries needs each live version whole.
    let whole_versions = config.queries.table_set()?.contains(Table::Trades);
    let snapshot = postgres::load_snapshot_with(&mut client, whole_versions)
        .await
        .context("loading the restart snapshot")?;
    tracing::info!(
        last_time = snapshot.last_time,
        trades = snapshot.trades.len(),
        methods = snapshot.methods.len(),
        seconds = loading.elapsed().as_secs_f64(),
        "snapshot loaded"
    );
    let start_time = snapshot.last_time;
    // The traces will hold no time before the snapshot's (a restart
    // forgets the in-memory history).
    query_registry.history_starts_at(start_time);
    let start = EngineStart {
        start_time,
        trades: snapshot.trades,
        methods: snapshot.methods,
        reconciliation: snapshot.reconciliation,
        offsets: snapshot.offsets,
        remote: false,
    };

    let capacity = config.engine.max_uncommitted_timestamps
        * config.engine.workers
        * config.cluster.processes()?
        * 4;
    let (engine_tx, engine_rx) = tokio::sync::mpsc::channel(capacity.max(16));
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Notify::new());
    let committed_through = Arc::new(AtomicU64::new(start_time + 1));
    let pending_valuations = Arc::new(valuations::PendingValuations::default());
    let mut committer = tokio::spawn(
        commit::Committer {
            config: config.clone(),
            writer_epoch,
            first_time: start_time + 1,
            committed_through: committed_through.clone(),
            metrics: metrics.clone(),
            committed: committed.clone(),
            healthy: healthy.clone(),
            valuations: pending_valuations.clone(),
        }
        .run(engine_rx),
    );
    let engine = engine::spawn(
        config.clone(),
        start,
        engine_tx,
        committed_through,
        metrics.clone(),
        stop.clone(),
        query_registry,
    )?;
    let mut publishers = tokio::task::JoinSet::new();
    for outbox in [
        publish::Outbox::Corrections,
        publish::Outbox::DeadLetters,
        publish::Outbox::BreakEvents,
    ] {
        publishers.spawn(publish::run(
            outbox,
            config.clone(),
            writer_epoch,
            metrics.clone(),
            committed.clone(),
            stop.clone(),
        ));
    }
    publishers.spawn(valuations::run(
        config.clone(),
        pending_valuations,
        metrics.clone(),
        stop.clone(),
    ));
    readiness.set_stage(&format!(
        "consuming with {} worker(s) from engine time {}",
        config.engine.workers,
        start_time + 1
    ));
    readiness.set_ready(true);

    let outcome: Result<()> = tokio::select! {
        _ = shutdown => Ok(()),
        done = &mut committer => Err(match done {
            Ok(Ok(())) => anyhow!("the engine stopped"),
            Ok(Err(e)) => e,
            Err(e) => anyhow!("the committer panicked: {e}"),
        }),
        Some(done) = publishers.join_next() => Err(match done {
            Ok(Ok(())) => anyhow!("a publisher stopped"),
            Ok(Err(e)) => e,
            Err(e) => anyhow!("a publisher panicked: {e}"),
        }),
        lost = writer_lock.lost() => Err(lost),
    };
    stop.store(true, Ordering::Relaxed);
    readiness.set_ready(false);
    readiness.set_stage("stopping");
    match outcome {
        Ok(()) => {
            tracing::info!("stopping: finishing the timestamps in flight");
            let computed = tokio::task::spawn_blocking(move || engine.join()).await?;
            computed.map_err(|_| anyhow!("engine panicked"))??;
            committer.await??;
            // Give the publishers a moment to drain what was just committed.
            tokio::time::sleep(Duration::from_millis(500)).await;
            publishers.abort_all();
            drop(writer_lock);
            Ok(())
        }
        Err(e) => {
            // Fenced or failed: commit and publish nothing more.
            tracing::error!(error = %format!("{e:#}"), "stopping");
            committer.abort();
            publishers.abort_all();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::task::spawn_blocking(move || engine.join()),
            )
            .await;
            Err(e)
        }
    }
}

/// A process of a cluster other than process 0: its workers only. They
/// read their Kafka partitions and exchange state with the cluster; every
/// output and report goes to process 0, which commits. Stops when told
/// (`shutdown`, or a stop from another process), or fails when the
/// cluster breaks (then every process must be restarted).
async fn serve_workers(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let metrics = Metrics::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    // Nobody reads this channel: this process's workers relay to worker 0.
    let (engine_tx, _unread) = tokio::sync::mpsc::channel(1);
    tracing::info!(
        process = config.cluster.process,
        workers = config.engine.workers,
        "cluster process: connecting"
    );
    let engine = engine::spawn(
        config,
        EngineStart {
            remote: true,
            ..EngineStart::default()
        },
        engine_tx,
        Arc::new(AtomicU64::new(0)),
        metrics,
        stop.clone(),
        Arc::new(queries::QueryRegistry::default()),
    )?;
    let done = tokio::task::spawn_blocking(move || engine.join());
    tokio::pin!(done);
    let joined = tokio::select! {
        _ = shutdown => {
            stop.store(true, Ordering::Relaxed);
            (&mut done).await
        }
        joined = &mut done => joined,
    };
    joined?.map_err(|_| anyhow!("engine panicked"))?
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
