//! `deltabook run`: the real-time service. Kafka in; each engine timestamp's
//! state changes, corrections, dead letters and source offsets committed to
//! PostgreSQL in one transaction; corrections and dead letters published to
//! Kafka from the committed tables (a transactional outbox). On start the
//! engine rebuilds its state from the event store at the original engine
//! times and resumes consumption at the stored offsets.
//!
//! Threads: the consumer (rdkafka, blocking), the engine (one timely worker),
//! and a tokio runtime for the committer, the publishers and HTTP. Channels
//! between them are bounded, so when PostgreSQL falls behind the engine
//! stops taking batches and the consumer stops polling.

pub mod commit;
pub mod consume;
pub mod engine_loop;
pub mod http;
pub mod metrics;
pub mod publish;
pub mod retry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use deltabook_dataflows::engine::SourceRef;
use deltabook_dataflows::trade::LotMethod;
use deltabook_sinks::postgres::{self, MethodEvent};
use tokio::sync::Notify;
use tokio_postgres::Client;

use self::engine_loop::EngineBatch;
use self::metrics::Metrics;
use self::retry::Backoff;
use crate::config::Config;

/// Runs the service until SIGINT / SIGTERM.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, shutdown_signal()))
}

async fn connect_with_retry(config: &Config, metrics: &Metrics, what: &str) -> Client {
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

/// The event store as engine batches, at the times originally assigned.
async fn load_replay(client: &Client) -> Result<Vec<EngineBatch>> {
    let rows = client
        .query(
            "SELECT engine_time, kind, source_partition, source_offset, payload, position_key, method
             FROM event_store ORDER BY engine_time, event_ver",
            &[],
        )
        .await
        .context("reading the event store")?;
    let mut batches: Vec<EngineBatch> = Vec::new();
    for row in rows {
        let time = row.get::<_, i64>(0) as u64;
        if batches.last().is_none_or(|b| b.time != time) {
            batches.push(EngineBatch {
                time,
                replay: true,
                ..EngineBatch::default()
            });
        }
        let Some(batch) = batches.last_mut() else {
            continue;
        };
        let kind: String = row.get(1);
        let partition: i32 = row.get(2);
        let offset: i64 = row.get(3);
        let payload: Vec<u8> = row.get(4);
        if kind == "trade" {
            batch.events.push((
                SourceRef {
                    partition: partition as u32,
                    offset: offset as u64,
                },
                payload,
            ));
        } else {
            let method: Option<String> = row.get(6);
            let method = match method {
                Some(m) => Some(
                    LotMethod::parse(&m)
                        .ok_or_else(|| anyhow!("event store holds an unknown method {m:?}"))?,
                ),
                None => None,
            };
            batch.methods.push(MethodEvent {
                time,
                scope: row.get(5),
                method,
                partition,
                offset,
                payload,
            });
        }
    }
    Ok(batches)
}

/// Runs the service until `shutdown` completes, then finishes the
/// timestamps in flight and returns.
pub async fn serve(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let metrics = Metrics::new()?;
    let ready = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(true));
    {
        let (listen, metrics, ready, healthy) = (
            config.http.listen.clone(),
            metrics.clone(),
            ready.clone(),
            healthy.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = http::serve(listen, metrics, ready, healthy).await {
                tracing::error!(error = %format!("{e:#}"), "http server stopped");
            }
        });
    }

    // One writer at a time: a second instance waits here.
    let lock = connect_with_retry(&config, &metrics, "writer lock").await;
    tracing::info!(
        key = config.postgres.lock_key,
        "waiting for the writer lock"
    );
    lock.execute("SELECT pg_advisory_lock($1)", &[&config.postgres.lock_key])
        .await
        .context("taking the writer lock")?;
    tracing::info!("writer lock held");

    let mut client = connect_with_retry(&config, &metrics, "migrations").await;
    let applied = postgres::migrate(&mut client).await.context("migrations")?;
    tracing::info!(?applied, "migrations");

    let mut backoff = Backoff::new(&config.retry);
    while let Err(e) = crate::kafka::ensure_topics(&config.kafka).await {
        metrics.retries.with_label_values(&["kafka_topics"]).inc();
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{e:#}"), ?delay, "kafka unavailable; retrying");
        tokio::time::sleep(delay).await;
    }

    let (offsets, last_time) = postgres::load_progress(&client).await?;
    let replay = load_replay(&client).await?;
    tracing::info!(
        last_time,
        timestamps = replay.len(),
        "rebuilding from the event store"
    );

    let in_flight = config.engine.max_uncommitted_timestamps;
    let (engine_tx, engine_rx) = sync_channel::<EngineBatch>(in_flight);
    let (commit_tx, commit_rx) = sync_channel::<engine_loop::Outgoing>(in_flight);
    let (trades_topic, methods_topic) = (
        config.kafka.trades_topic.clone(),
        config.kafka.methods_topic.clone(),
    );
    let engine = std::thread::Builder::new()
        .name("deltabook-engine".into())
        .spawn(move || {
            engine_loop::run(engine_rx, commit_tx, trades_topic, methods_topic, in_flight)
        })?;
    let replay_tx = engine_tx.clone();
    tokio::task::spawn_blocking(move || {
        for batch in replay {
            if replay_tx.send(batch).is_err() {
                break;
            }
        }
    })
    .await?;

    let committed = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let committer = tokio::spawn(commit::run(
        config.clone(),
        commit_rx,
        metrics.clone(),
        committed.clone(),
        healthy.clone(),
    ));
    let mut publishers = Vec::new();
    for outbox in [publish::Outbox::Corrections, publish::Outbox::DeadLetters] {
        publishers.push(tokio::spawn(publish::run(
            outbox,
            config.clone(),
            metrics.clone(),
            committed.clone(),
            stop.clone(),
        )));
    }
    let consumer = {
        let (kafka, metrics, stop) = (config.kafka.clone(), metrics.clone(), stop.clone());
        std::thread::Builder::new()
            .name("deltabook-consumer".into())
            .spawn(move || consume::run(kafka, offsets, last_time + 1, engine_tx, metrics, stop))?
    };
    ready.store(true, Ordering::Relaxed);
    tracing::info!("ready");

    shutdown.await;
    tracing::info!("stopping: finishing the timestamps in flight");
    stop.store(true, Ordering::Relaxed);
    let consumed = tokio::task::spawn_blocking(move || consumer.join()).await?;
    consumed.map_err(|_| anyhow!("consumer panicked"))??;
    let computed = tokio::task::spawn_blocking(move || engine.join()).await?;
    computed.map_err(|_| anyhow!("engine panicked"))??;
    committer.await??;
    // Give the publishers a moment to drain what was just committed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in publishers {
        p.abort();
    }
    drop(lock);
    Ok(())
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
