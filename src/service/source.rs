//! One worker's Kafka source: the partitions that worker owns, `assign()`ed
//! at the offsets stored in PostgreSQL (no consumer-group commits). Trade
//! partition `p` belongs to worker `p % workers`; every partition of the
//! lot-method topic belongs to worker 0 (one worker feeds the method map).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltabook_dataflows::engine::{DeadLetter, SourceRef, Time};
use deltabook_dataflows::gate::{RejectKind, Rejection};
use deltabook_dataflows::payload::Payload;
use deltabook_dataflows::runner::too_long;
use deltabook_dataflows::trade::{is_method_scope, LotMethod};
use deltabook_sinks::postgres::{MethodEvent, SourceOffset};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::metrics::Metrics;
use crate::config::KafkaConfig;
use crate::kafka;

/// One message read from a source partition.
#[derive(Debug)]
pub enum SourceMessage {
    /// A trade event (raw bytes; the engine's gate reads them).
    Trade(SourceRef, Payload),
    /// A trade event longer than `kafka.message_max_bytes`: rejected unread.
    TooLong(DeadLetter),
    /// A lot-method change.
    Method(MethodEvent),
    /// A lot-method message that could not be read (a dead letter).
    RejectedMethod(DeadLetter),
    /// A price tick (raw bytes; the engine's gate reads them).
    Price(SourceRef, Payload),
    /// A custodian statement (raw bytes).
    Statement(SourceRef, Payload),
}

/// The trade partitions worker `index` of `workers` reads.
pub fn trade_partitions(partitions: i32, index: usize, workers: usize) -> Vec<i32> {
    (0..partitions)
        .filter(|p| *p as usize % workers == index)
        .collect()
}

/// A worker's consumer and the next offset of each of its partitions.
pub struct PartitionReader {
    consumer: Option<BaseConsumer>,
    trades_topic: String,
    prices_topic: String,
    custodian_topic: String,
    max_event_bytes: usize,
    next: BTreeMap<(String, i32), i64>,
    /// Partitions read since the last [`PartitionReader::take_offsets`].
    changed: BTreeMap<(String, i32), i64>,
    metrics: Metrics,
    last_lag_check: Instant,
}

impl PartitionReader {
    /// Assigns the trade partitions of worker `index` (and, for worker 0,
    /// the lot-method partitions) at their `stored` offsets, or at the
    /// beginning when none is stored.
    pub fn new(
        config: &KafkaConfig,
        index: usize,
        workers: usize,
        stored: &[SourceOffset],
        metrics: Metrics,
    ) -> Result<PartitionReader> {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for o in stored {
            next.insert((o.topic.clone(), o.partition), o.next_offset);
        }
        let mut assignment = TopicPartitionList::new();
        let mut mine = BTreeMap::new();
        for p in trade_partitions(config.trades_partitions, index, workers) {
            mine.insert((config.trades_topic.clone(), p), ());
        }
        // Ticks and statements: partition p is read by worker p % workers too.
        for p in trade_partitions(config.prices_partitions, index, workers) {
            mine.insert((config.prices_topic.clone(), p), ());
        }
        for p in trade_partitions(config.custodian_partitions, index, workers) {
            mine.insert((config.custodian_topic.clone(), p), ());
        }
        if index == 0 {
            for p in 0..config.methods_partitions {
                mine.insert((config.methods_topic.clone(), p), ());
            }
        }
        for (topic, partition) in mine.keys() {
            let offset = next
                .get(&(topic.clone(), *partition))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment.add_partition_offset(topic, *partition, offset)?;
        }
        next.retain(|key, _| mine.contains_key(key));
        let consumer = if mine.is_empty() {
            None
        } else {
            let consumer = kafka::assigned_consumer(&config.brokers, config.message_max_bytes)?;
            consumer
                .assign(&assignment)
                .context("assigning partitions")?;
            Some(consumer)
        };
        Ok(PartitionReader {
            consumer,
            trades_topic: config.trades_topic.clone(),
            prices_topic: config.prices_topic.clone(),
            custodian_topic: config.custodian_topic.clone(),
            max_event_bytes: config.message_max_bytes,
            next,
            changed: BTreeMap::new(),
            metrics,
            last_lag_check: Instant::now(),
        })
    }

    /// The next message, waiting at most `timeout`; `time` is the engine
    /// time a lot-method change would take effect at. Consume errors are
    /// logged, counted and retried by the next call.
    pub fn poll(&mut self, timeout: Duration, time: Time) -> Option<SourceMessage> {
        let Some(consumer) = &self.consumer else {
            std::thread::sleep(timeout);
            return None;
        };
        let message = match consumer.poll(timeout)? {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka consume error; retrying");
                self.metrics.retries.with_label_values(&["consume"]).inc();
                return None;
            }
        };
        let topic = message.topic();
        let partition = message.partition();
        let offset = message.offset();
        self.changed
            .insert((topic.to_string(), partition), offset + 1);
        let source = SourceRef {
            partition: partition as u32,
            offset: offset as u64,
        };
        let bytes = message.payload().unwrap_or_default();
        if topic == self.trades_topic {
            self.metrics.trades_consumed.inc();
            if bytes.len() > self.max_event_bytes {
                return Some(SourceMessage::TooLong(DeadLetter {
                    source,
                    reason: too_long(bytes.len() as u64, self.max_event_bytes),
                    payload: bytes.to_vec(),
                }));
            }
            return Some(SourceMessage::Trade(source, Payload::from(bytes)));
        }
        // Ticks and statements go to their gate whatever their size (the
        // broker's message.max.bytes bounds them); only trades have the
        // engine's own length rule.
        if topic == self.prices_topic {
            return Some(SourceMessage::Price(source, Payload::from(bytes)));
        }
        if topic == self.custodian_topic {
            return Some(SourceMessage::Statement(source, Payload::from(bytes)));
        }
        let scope = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        Some(match read_method(&scope, message.payload()) {
            Ok(method) => SourceMessage::Method(MethodEvent {
                time,
                scope,
                method,
                partition,
                offset,
                payload: bytes.to_vec(),
            }),
            Err(detail) => SourceMessage::RejectedMethod(DeadLetter {
                source,
                reason: Rejection {
                    kind: RejectKind::MalformedField,
                    detail,
                },
                payload: bytes.to_vec(),
            }),
        })
    }

    /// The next offsets of the partitions read since the last call.
    pub fn take_offsets(&mut self) -> Vec<SourceOffset> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|((topic, partition), next_offset)| {
                self.next.insert((topic.clone(), partition), next_offset);
                SourceOffset {
                    topic,
                    partition,
                    next_offset,
                }
            })
            .collect()
    }

    /// Exports the lag of this worker's trade partitions every few seconds.
    pub fn report_lag(&mut self) {
        if self.last_lag_check.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last_lag_check = Instant::now();
        let Some(consumer) = &self.consumer else {
            return;
        };
        for ((topic, p), at) in &self.next {
            if *topic != self.trades_topic {
                continue;
            }
            if let Ok((_, high)) = consumer.fetch_watermarks(topic, *p, Duration::from_millis(200))
            {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[topic, &p.to_string()])
                    .set((high - at).max(0));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trade_partition_has_exactly_one_worker() {
        for workers in 1..=5 {
            let mut owners = vec![0; 16];
            for index in 0..workers {
                for p in trade_partitions(16, index, workers) {
                    owners[p as usize] += 1;
                }
            }
            assert!(owners.iter().all(|n| *n == 1), "{workers}: {owners:?}");
        }
        assert_eq!(trade_partitions(4, 1, 2), vec![1, 3]);
        assert!(trade_partitions(2, 3, 4).is_empty());
    }

    #[test]
    fn method_messages_are_read_or_rejected_with_a_reason() {
        assert_eq!(
            read_method("ACC1", Some(b"LIFO")),
            Ok(Some(LotMethod::Lifo))
        );
        assert_eq!(
            read_method("ACC1_B", Some(b"\"HIFO\"")),
            Ok(Some(LotMethod::Hifo))
        );
        assert_eq!(read_method("ACC1_B_S", None), Ok(None));
        assert!(read_method("ACC1", Some(b"FIFOX")).is_err());
        assert!(read_method("A_B_C_D", Some(b"FIFO")).is_err());
        assert!(read_method("", Some(b"FIFO")).is_err());
    }
}
