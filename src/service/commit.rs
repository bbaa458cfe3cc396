//! The committer: one PostgreSQL transaction per engine timestamp, in time
//! order, retried (with a fresh connection when needed) until it succeeds,
//! so nothing computed is ever dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use deltabook_sinks::postgres;
use tokio::sync::Notify;

use super::engine_loop::Outgoing;
use super::metrics::Metrics;
use super::retry::Backoff;
use crate::config::Config;

/// Commits everything `input` yields; returns when it disconnects.
pub async fn run(
    config: Config,
    input: Receiver<Outgoing>,
    metrics: Metrics,
    committed: Arc<Notify>,
    healthy: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut client = None;
    let input = Arc::new(std::sync::Mutex::new(input));
    loop {
        let source = input.clone();
        let next =
            tokio::task::spawn_blocking(move || source.lock().ok().and_then(|rx| rx.recv().ok()))
                .await?;
        let Some((commit, first_read)) = next else {
            return Ok(());
        };
        let mut backoff = Backoff::new(&config.retry);
        loop {
            if client.is_none() {
                client = Some(super::connect_with_retry(&config, &metrics, "commit").await);
            }
            let Some(c) = client.as_mut() else { continue };
            if backoff.attempts > 0 {
                // The failed attempt may have committed before the connection broke.
                match postgres::committed_time(c).await {
                    Ok(done) if done >= commit.time => {
                        healthy.store(true, Ordering::Relaxed);
                        metrics.frontier_lag.dec();
                        committed.notify_waiters();
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        client = None;
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            match postgres::commit_timestamp(c, &commit, config.postgres.write_batch_rows).await {
                Ok(()) => {
                    healthy.store(true, Ordering::Relaxed);
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
                    metrics.frontier_lag.dec();
                    metrics
                        .commit_latency
                        .observe(started.elapsed().as_secs_f64());
                    if let Some(first) = first_read {
                        metrics.batch_latency.observe(first.elapsed().as_secs_f64());
                    }
                    metrics.timestamps_committed.inc();
                    metrics
                        .corrections_emitted
                        .inc_by(commit.corrections.len() as u64);
                    metrics
                        .dead_letters
                        .inc_by(commit.dead_letters.len() as u64);
                    committed.notify_waiters();
                    break;
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
                        client = None;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
