//! The source: Kafka partitions `assign()`ed at the offsets stored in
//! PostgreSQL (no consumer-group commits), cut into engine batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltabook_dataflows::engine::{DeadLetter, SourceRef, Time};
use deltabook_dataflows::gate::{RejectKind, Rejection};
use deltabook_dataflows::trade::{is_method_scope, LotMethod};
use deltabook_sinks::postgres::{MethodEvent, SourceOffset};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::engine_loop::EngineBatch;
use super::metrics::Metrics;
use crate::config::KafkaConfig;
use crate::kafka;

/// Consumes until `stop` is set, sending one batch per engine timestamp
/// from `first_time` on. Blocks (stops polling) while the engine is full.
pub fn run(
    config: KafkaConfig,
    stored: Vec<SourceOffset>,
    first_time: Time,
    output: SyncSender<EngineBatch>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let consumer = kafka::assigned_consumer(&config.brokers, config.message_max_bytes)?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for o in &stored {
        next.insert((o.topic.clone(), o.partition), o.next_offset);
    }
    let mut assignment = TopicPartitionList::new();
    for (topic, partitions) in [
        (&config.trades_topic, config.trades_partitions),
        (&config.methods_topic, config.methods_partitions),
    ] {
        for p in 0..partitions {
            let offset = next
                .get(&(topic.clone(), p))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment.add_partition_offset(topic, p, offset)?;
        }
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let linger = Duration::from_millis(config.batch_linger_ms);
    let mut time = first_time;
    let mut last_lag_check = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = EngineBatch {
            time,
            ..EngineBatch::default()
        };
        let mut changed: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut count = 0usize;
        let mut first: Option<Instant> = None;
        while count < config.batch_max_messages {
            let wait = match first {
                None => Duration::from_millis(100),
                Some(at) => match linger.checked_sub(at.elapsed()) {
                    Some(left) => left,
                    None => break,
                },
            };
            let Some(message) = consumer.poll(wait) else {
                if first.is_some() {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consume error; retrying");
                    metrics.retries.with_label_values(&["consume"]).inc();
                    continue;
                }
            };
            first.get_or_insert_with(Instant::now);
            count += 1;
            let topic = message.topic().to_string();
            let partition = message.partition();
            let offset = message.offset();
            let payload = message.payload().unwrap_or_default().to_vec();
            changed.insert((topic.clone(), partition), offset + 1);
            let source = SourceRef {
                partition: partition as u32,
                offset: offset as u64,
            };
            if topic == config.trades_topic {
                metrics.trades_consumed.inc();
                batch.events.push((source, payload));
            } else {
                let scope = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                match read_method(&scope, message.payload()) {
                    Ok(method) => batch.methods.push(MethodEvent {
                        time,
                        scope,
                        method,
                        partition,
                        offset,
                        payload,
                    }),
                    Err(detail) => batch.rejected_methods.push(DeadLetter {
                        source,
                        reason: Rejection {
                            kind: RejectKind::MalformedField,
                            detail,
                        },
                        payload,
                    }),
                }
            }
        }
        if last_lag_check.elapsed() > Duration::from_secs(2) {
            last_lag_check = Instant::now();
            report_lag(&consumer, &config, &next, &metrics);
        }
        if count == 0 {
            continue;
        }
        for ((topic, partition), offset) in changed {
            next.insert((topic.clone(), partition), offset);
            batch.offsets.push(SourceOffset {
                topic,
                partition,
                next_offset: offset,
            });
        }
        batch.first_read = first;
        metrics.frontier_lag.inc();
        if output.send(batch).is_err() {
            break;
        }
        time += 1;
    }
    Ok(())
}

/// A lot-method message: key = scope, value = FIFO|LIFO|HIFO, no value = remove.
fn read_method(scope: &str, value: Option<&[u8]>) -> Result<Option<LotMethod>, String> {
    if !is_method_scope(scope) {
        return Err(format!(
            "lot-method key {scope:?} is not an account, account_book or position key"
        ));
    }
    match value {
        None => Ok(None),
        Some(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim().trim_matches('"');
            LotMethod::parse(text)
                .map(Some)
                .ok_or_else(|| format!("lot-method value {text:?} is not FIFO, LIFO or HIFO"))
        }
    }
}

fn report_lag(
    consumer: &BaseConsumer,
    config: &KafkaConfig,
    next: &BTreeMap<(String, i32), i64>,
    metrics: &Metrics,
) {
    for p in 0..config.trades_partitions {
        if let Ok((low, high)) =
            consumer.fetch_watermarks(&config.trades_topic, p, Duration::from_millis(500))
        {
            let at = next
                .get(&(config.trades_topic.clone(), p))
                .copied()
                .unwrap_or(low);
            metrics
                .consumer_lag
                .with_label_values(&[&config.trades_topic, &p.to_string()])
                .set((high - at).max(0));
        }
    }
}
