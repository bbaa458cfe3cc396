//! Conflated valuation publishing (`reconciliation.md`, "In the service"):
//! valuations change with every tick, so `position-valuations` gets at most
//! one message per position per `publisher.valuation_interval_ms`, always
//! the latest committed value (key = position key; a position that lost its
//! valuation gets a tombstone, an empty value). The `valuations` table is the
//! exact record per committed timestamp; this topic is a feed.
//!
//! The committer records each committed timestamp's final rows in
//! [`PendingValuations`]; every interval the publisher takes what is
//! pending (later values replace earlier ones: that is the conflation) and
//! sends it. On start, and after any failure, it first sends the whole
//! table, so a crash loses no latest value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use deltabook_dataflows::reconcile::ValuationRow;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use super::metrics::Metrics;
use super::retry::Backoff;
use crate::config::Config;
use crate::kafka;

/// Most messages taken from the pending map per send round.
const MAX_MESSAGES_PER_ROUND: usize = 100_000;

/// The latest committed valuation per position not yet published (`None`:
/// removed). Bounded by the number of positions.
#[derive(Default)]
pub struct PendingValuations {
    latest: Mutex<BTreeMap<String, Option<String>>>,
}

/// A valuation as the message value.
fn message(row: &ValuationRow, time: u64) -> String {
    json!({
        "position_key": row.position_key,
        "price": row.price.to_string(),
        "market_value": row.market_value.to_string(),
        "unrealized_pnl": row.unrealized_pnl.to_string(),
        "as_of": time,
    })
    .to_string()
}

impl PendingValuations {
    /// Records a committed timestamp's valuation updates (final row per key).
    pub fn record(&self, updates: &[(ValuationRow, isize)], time: u64) {
        if updates.is_empty() {
            return;
        }
        let mut net: BTreeMap<&ValuationRow, isize> = BTreeMap::new();
        for (row, diff) in updates {
            *net.entry(row).or_insert(0) += diff;
        }
        let mut finals: BTreeMap<&str, Option<String>> = BTreeMap::new();
        for (row, count) in net {
            let slot = finals.entry(row.position_key.as_str()).or_insert(None);
            if count > 0 {
                *slot = Some(message(row, time));
            }
        }
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        for (key, value) in finals {
            latest.insert(key.to_string(), value);
        }
    }

    /// Takes up to `limit` pending messages.
    fn take(&self, limit: usize) -> Vec<(String, Option<String>)> {
        let Ok(mut latest) = self.latest.lock() else {
            return Vec::new();
        };
        if latest.len() <= limit {
            return std::mem::take(&mut *latest).into_iter().collect();
        }
        let keys: Vec<String> = latest.keys().take(limit).cloned().collect();
        keys.into_iter()
            .filter_map(|k| latest.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

/// Publishes until `stop`; failures restart the publisher (with a full
/// snapshot of the table first) after a backoff.
pub async fn run(
    config: Config,
    pending: Arc<PendingValuations>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut backoff = Backoff::new(&config.retry);
    while !stop.load(Ordering::Relaxed) {
        match publish_until_error(&config, &pending, &metrics, &stop).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics
                    .retries
                    .with_label_values(&["publish_valuations"])
                    .inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), ?delay, "valuation publisher restarting");
                tokio::time::sleep(delay).await;
            }
        }
    }
    Ok(())
}

async fn publish_until_error(
    config: &Config,
    pending: &PendingValuations,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Result<()> {
    let producer: FutureProducer = {
        let brokers = config.kafka.brokers.clone();
        tokio::task::spawn_blocking(move || kafka::plain_producer(&brokers)).await??
    };
    let topic = config.kafka.valuations_topic.as_str();
    let partitions = config.kafka.valuations_partitions;
    // The whole table first: whatever was pending before a crash is in it.
    let client = deltabook_sinks::postgres::connect(&config.postgres.url).await?;
    let rows = client
        .query(
            "SELECT v.position_key, v.price::text, v.market_value::text, v.unrealized_pnl::text, v.engine_time
             FROM valuations v ORDER BY 1",
            &[],
        )
        .await
        .context("reading valuations")?;
    drop(client);
    let snapshot: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| {
            let key: String = r.get(0);
            let value = json!({
                "position_key": key,
                "price": normal(r.get(1)),
                "market_value": normal(r.get(2)),
                "unrealized_pnl": normal(r.get(3)),
                "as_of": r.get::<_, i64>(4),
            })
            .to_string();
            (key, Some(value))
        })
        .collect();
    send(&producer, topic, partitions, &snapshot, metrics).await?;
    let interval = Duration::from_millis(config.publisher.valuation_interval_ms.max(1));
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(interval).await;
        loop {
            let batch = pending.take(MAX_MESSAGES_PER_ROUND);
            if batch.is_empty() {
                break;
            }
            send(&producer, topic, partitions, &batch, metrics).await?;
        }
    }
    Ok(())
}

/// A `numeric::text` in the spec's normal form.
fn normal(text: &str) -> String {
    text.parse::<deltabook_dataflows::decimal::Amount>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// Sends every message (all in flight at once) and waits for each ack.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    messages: &[(String, Option<String>)],
    metrics: &Metrics,
) -> Result<()> {
    let mut deliveries = Vec::with_capacity(messages.len());
    for (key, value) in messages {
        let mut record = FutureRecord::<str, str>::to(topic)
            .key(key.as_str())
            .partition(kafka::partition_for(key, partitions));
        if let Some(value) = value {
            record = record.payload(value.as_str());
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e).context("enqueueing a valuation"),
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .map_err(|_| anyhow!("a valuation delivery was cancelled"))?
            .map_err(|(e, _)| e)
            .context("delivering a valuation")?;
        metrics.published.with_label_values(&[topic]).inc();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltabook_dataflows::decimal::Dec8;

    fn row(key: &str, price: &str) -> ValuationRow {
        let p: Dec8 = price.parse().expect("decimal");
        ValuationRow {
            position_key: key.into(),
            price: p,
            market_value: p.to_amount(),
            unrealized_pnl: p.to_amount(),
        }
    }

    #[test]
    fn later_values_replace_earlier_ones_and_removals_are_tombstones() {
        let pending = PendingValuations::default();
        pending.record(&[(row("A", "1"), 1), (row("B", "5"), 1)], 1);
        pending.record(&[(row("A", "1"), -1), (row("A", "2"), 1)], 2);
        pending.record(
            &[(row("A", "2"), -1), (row("A", "3"), 1), (row("B", "5"), -1)],
            3,
        );
        // An unconsolidated join output: the intermediate row nets to zero.
        pending.record(
            &[
                (row("A", "3"), -1),
                (row("A", "9"), 1),
                (row("A", "4"), 1),
                (row("A", "9"), -1),
            ],
            4,
        );
        let taken = pending.take(10);
        assert_eq!(taken.len(), 2, "one message per position");
        let a: serde_json::Value =
            serde_json::from_str(taken[0].1.as_deref().expect("A has a value")).expect("json");
        assert_eq!(
            (a["price"].as_str(), a["as_of"].as_u64()),
            (Some("4"), Some(4))
        );
        assert_eq!(taken[1], ("B".to_string(), None), "B was removed");
        assert!(pending.take(10).is_empty());
    }
}
