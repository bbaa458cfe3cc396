//! The writer lock: `pg_advisory_lock(postgres.lock_key)` on a connection of
//! its own, so a second instance waits until the first is gone. A session
//! lock vanishes with its connection (a PostgreSQL restart drops it), so a
//! keeper checks the connection every second and, when it broke, takes the
//! lock again with `pg_try_advisory_lock`; if another instance holds it by
//! then, this one has lost the lock and must stop. Commits do not rely on
//! this: each is fenced by the writer epoch (`sinks::postgres::fence`).

use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::metrics::Metrics;
use super::retry::Backoff;
use crate::config::Config;

/// How often the keeper checks the lock connection.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The held writer lock; released when dropped.
pub struct WriterLock {
    keeper: JoinHandle<()>,
    lost: Option<oneshot::Receiver<anyhow::Error>>,
}

impl WriterLock {
    /// Waits until this instance holds the lock (reconnecting whenever
    /// the waiting connection breaks).
    pub async fn acquire(config: &Config, metrics: &Metrics) -> Result<WriterLock> {
        let key = config.postgres.lock_key;
        let mut backoff = Backoff::new(&config.retry);
        let client = loop {
            let client = super::connect_with_retry(config, metrics, "writer lock").await;
            tracing::info!(key, "waiting for the writer lock");
            match client.execute("SELECT pg_advisory_lock($1)", &[&key]).await {
                Ok(_) => break client,
                Err(e) => {
                    metrics.retries.with_label_values(&["writer_lock"]).inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "waiting for the writer lock failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::info!("writer lock held");
        let (tx, rx) = oneshot::channel();
        let keeper = tokio::spawn(keep(config.clone(), metrics.clone(), client, tx));
        Ok(WriterLock {
            keeper,
            lost: Some(rx),
        })
    }

    /// Resolves (with the reason) if the lock is lost to another instance;
    /// never resolves while it is held.
    pub async fn lost(&mut self) -> anyhow::Error {
        if let Some(rx) = self.lost.take() {
            if let Ok(reason) = rx.await {
                return reason;
            }
        }
        std::future::pending().await
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep(
    config: Config,
    metrics: Metrics,
    mut client: Client,
    lost: oneshot::Sender<anyhow::Error>,
) {
    let key = config.postgres.lock_key;
    let mut held = true;
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        if held {
            let alive = tokio::time::timeout(CHECK_INTERVAL, client.simple_query("SELECT 1"))
                .await
                .is_ok_and(|r| r.is_ok());
            if alive {
                continue;
            }
            tracing::warn!("the writer lock's connection broke; taking the lock again");
            held = false;
            client = super::connect_with_retry(&config, &metrics, "writer lock").await;
        }
        match client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => {
                held = true;
                tracing::info!("writer lock held again");
            }
            Ok(_) => {
                let _ = lost.send(anyhow!(
                    "fenced: the writer lock was lost (PostgreSQL dropped it) and another instance holds it now"
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take the writer lock again; retrying");
                if client.is_closed() {
                    client = super::connect_with_retry(&config, &metrics, "writer lock").await;
                }
            }
        }
    }
}
