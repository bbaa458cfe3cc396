//! The committer: assembles the workers' reports into whole timestamps and
//! commits each in ONE PostgreSQL transaction, in time order, fenced by this
//! instance's writer epoch. A failed commit is retried (with a fresh
//! connection when needed) until it succeeds, so nothing computed is ever
//! dropped; a fenced commit ends the service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deltabook_dataflows::driver::TimestampOutput;
use deltabook_dataflows::engine::Time;
use deltabook_dataflows::reconcile::break_events;
use deltabook_sinks::postgres::{self, ReconciliationCommit, TimestampCommit};
use tokio::sync::mpsc::Receiver;
use tokio::sync::Notify;

use super::assemble::{AssembledTimestamp, Assembler};
use super::engine::EngineMessage;
use super::metrics::Metrics;
use super::retry::Backoff;
use super::valuations::PendingValuations;
use crate::config::Config;

/// What the committer needs besides its input.
pub struct Committer {
    /// The service configuration.
    pub config: Config,
    /// This instance's writer epoch.
    pub writer_epoch: i64,
    /// The first time the workers report.
    pub first_time: Time,
    /// Told to the workers: every time before it is committed (or had
    /// nothing to commit).
    pub committed_through: Arc<AtomicU64>,
    /// Metrics.
    pub metrics: Metrics,
    /// Woken after each commit (the publishers wait on it).
    pub committed: Arc<Notify>,
    /// False while commits keep failing (`/health`).
    pub healthy: Arc<AtomicBool>,
    /// Committed valuations waiting for the conflating publisher.
    pub valuations: Arc<PendingValuations>,
}

impl Committer {
    /// Commits every timestamp the workers complete; returns when `input`
    /// closes (after committing everything complete), or with an error when
    /// this instance is fenced.
    pub async fn run(self, mut input: Receiver<EngineMessage>) -> Result<()> {
        let Committer {
            config,
            writer_epoch,
            first_time,
            committed_through,
            metrics,
            committed,
            healthy,
            valuations,
        } = self;
        // Every worker of the cluster reports (the others' through worker 0).
        let workers = config.engine.workers * config.cluster.processes()?;
        let mut assembler = Assembler::new(workers, first_time);
        let mut client = None;
        let mut last_gauges: Option<Instant> = None;
        while let Some(message) = input.recv().await {
            for timestamp in assembler.push(message) {
                let (commit, first_read) = to_commit(timestamp, &config, writer_epoch);
                commit_with_retry(&config, &mut client, &commit, &metrics, &healthy).await?;
                metrics.timestamps_committed.inc();
                metrics
                    .corrections_emitted
                    .inc_by(commit.corrections.len() as u64);
                metrics
                    .dead_letters
                    .inc_by(commit.dead_letters.len() as u64);
                if let Some(first) = first_read {
                    metrics.batch_latency.observe(first.elapsed().as_secs_f64());
                }
                valuations.record(&commit.reconciliation.valuations, commit.time);
                committed.notify_waiters();
                if last_gauges.is_none_or(|at| at.elapsed() >= RECONCILIATION_GAUGES_EVERY) {
                    last_gauges = Some(Instant::now());
                    if let Some(c) = client.as_ref() {
                        if let Err(e) = reconciliation_gauges(c, &metrics).await {
                            tracing::warn!(error = %e, "reading reconciliation gauges");
                        }
                    }
                }
            }
            committed_through.store(assembler.frontier(), Ordering::Release);
        }
        Ok(())
    }
}

/// The commit of one assembled timestamp, and when its first message was read.
pub fn to_commit(
    timestamp: AssembledTimestamp,
    config: &Config,
    writer_epoch: i64,
) -> (TimestampCommit, Option<Instant>) {
    let AssembledTimestamp {
        time,
        mut output,
        inputs,
    } = timestamp;
    for fault in &output.faults {
        tracing::error!(position = %fault.position_key, time = fault.time, detail = %fault.detail, "position fault");
    }
    let trades_topic = &config.kafka.trades_topic;
    let methods_topic = &config.kafka.methods_topic;
    let reconciliation = reconciliation_commit(time, &mut output);
    let mut commit = TimestampCommit {
        time,
        writer_epoch,
        trades_topic: trades_topic.clone(),
        methods_topic: methods_topic.clone(),
        accepted: output.accepted,
        live: output.live,
        lots: output.lots,
        positions: output.positions,
        corrections: output.corrections,
        dead_letters: output
            .dead_letters
            .into_iter()
            .map(|d| (trades_topic.clone(), d))
            .chain(
                output
                    .rejected_prices
                    .into_iter()
                    .map(|d| (config.kafka.prices_topic.clone(), d)),
            )
            .chain(
                output
                    .rejected_custodian
                    .into_iter()
                    .map(|d| (config.kafka.custodian_topic.clone(), d)),
            )
            .collect(),
        reconciliation,
        ..TimestampCommit::default()
    };
    let mut first_read: Option<Instant> = None;
    for input in inputs {
        commit.methods.extend(input.methods);
        commit.dead_letters.extend(
            input
                .rejected_methods
                .into_iter()
                .map(|d| (methods_topic.clone(), d)),
        );
        commit.offsets.extend(input.offsets);
        first_read = match (first_read, input.first_read) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    commit.offsets.sort();
    (commit, first_read)
}

/// How often the committer refreshes the break and gap gauges.
const RECONCILIATION_GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Open breaks by kind, the oldest open break's age (since its last
/// OPENED event), open gaps and the oldest gap row's age, from the tables.
async fn reconciliation_gauges(
    client: &tokio_postgres::Client,
    metrics: &Metrics,
) -> Result<(), tokio_postgres::Error> {
    for kind in ["QUANTITY_MISMATCH", "MISSING_INTERNAL", "MISSING_EXTERNAL"] {
        metrics.open_breaks.with_label_values(&[kind]).set(0);
    }
    for row in client
        .query("SELECT kind, count(*) FROM breaks GROUP BY kind", &[])
        .await?
    {
        let kind: String = row.get(0);
        let count: i64 = row.get(1);
        metrics.open_breaks.with_label_values(&[&kind]).set(count);
    }
    let row = client
        .query_one(
            "SELECT coalesce(extract(epoch FROM now() - min(opened)), 0)::int8 FROM (
                 SELECT (SELECT max(e.committed_at) FROM break_events e
                         WHERE e.position_key = b.position_key AND e.event->>'event' = 'OPENED') AS opened
                 FROM breaks b) x",
            &[],
        )
        .await?;
    metrics.oldest_open_break_seconds.set(row.get(0));
    let row = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(c.committed_at)), 0)::int8
             FROM sequence_gaps g JOIN committed_timestamps c ON c.engine_time = g.engine_time",
            &[],
        )
        .await?;
    metrics.open_gaps.set(row.get(0));
    metrics.oldest_open_gap_seconds.set(row.get(1));
    Ok(())
}

/// Reconciliation's part of a timestamp: its state changes as they are, and
/// its break events derived from them (with the corrections and statement
/// changes of the same timestamp as causes).
fn reconciliation_commit(time: Time, output: &mut TimestampOutput) -> ReconciliationCommit {
    let events = break_events(
        time,
        &output.breaks,
        &output.corrections,
        &output.live_statements,
    );
    // Moved, not copied: the rest of the commit does not read these.
    ReconciliationCommit {
        valuations: std::mem::take(&mut output.valuations),
        breaks: std::mem::take(&mut output.breaks),
        gaps: std::mem::take(&mut output.gaps),
        live_ticks: std::mem::take(&mut output.live_ticks),
        live_statements: std::mem::take(&mut output.live_statements),
        sequence_ranges: std::mem::take(&mut output.sequence_ranges),
        break_events: events
            .iter()
            .map(|e| (e.position_key.clone(), e.to_json().to_string()))
            .collect(),
    }
}

/// Commits `commit`, retrying every failure but a permanent one (fenced).
async fn commit_with_retry(
    config: &Config,
    client: &mut Option<tokio_postgres::Client>,
    commit: &TimestampCommit,
    metrics: &Metrics,
    healthy: &AtomicBool,
) -> Result<()> {
    let mut backoff = Backoff::new(&config.retry);
    loop {
        if client.is_none() {
            *client = Some(super::connect_with_retry(config, metrics, "commit").await);
        }
        let Some(c) = client.as_mut() else { continue };
        if backoff.attempts > 0 {
            // The failed attempt may have committed before the connection broke.
            match postgres::committed_time(c).await {
                Ok(done) if done >= commit.time => {
                    healthy.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => {
                    *client = None;
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        let started = Instant::now();
        match postgres::commit_timestamp(c, commit, config.postgres.write_batch_rows).await {
            Ok(()) => {
                healthy.store(true, Ordering::Relaxed);
                metrics
                    .commit_latency
                    .observe(started.elapsed().as_secs_f64());
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let correlation_ids: Vec<&str> = commit
                        .accepted
                        .iter()
                        .filter_map(|a| a.correlation_id.as_deref())
                        .collect();
                    tracing::debug!(
                        time = commit.time,
                        ?correlation_ids,
                        corrections = commit.corrections.len(),
                        "committed"
                    );
                }
                return Ok(());
            }
            Err(e) if e.is_permanent() => {
                healthy.store(false, Ordering::Relaxed);
                return Err(e).with_context(|| format!("committing engine time {}", commit.time));
            }
            Err(e) => {
                metrics
                    .retries
                    .with_label_values(&["postgres_commit"])
                    .inc();
                let delay = backoff.next_delay();
                if backoff.attempts >= config.retry.max_attempts {
                    // Still retrying (nothing is dropped), but /health says so.
                    healthy.store(false, Ordering::Relaxed);
                    tracing::error!(error = %e, time = commit.time, attempts = backoff.attempts, "commit keeps failing");
                }
                tracing::warn!(error = %e, time = commit.time, attempt = backoff.attempts, ?delay, "commit failed; retrying");
                if c.is_closed() {
                    *client = None;
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
