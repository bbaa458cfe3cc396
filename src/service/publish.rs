//! The outbox publishers: committed corrections, break events and dead letters go from
//! PostgreSQL to Kafka in commit order, to a partition the engine computes
//! itself, each message carrying its outbox id.
//!
//! Exactly once, across crashes and takeovers:
//! - each publisher is a transactional producer with a fixed
//!   `transactional.id` per topic; starting one fences every older one with
//!   that id (a zombie instance's sends and commits fail from then on) and
//!   aborts its open transaction;
//! - every round (up to `publisher.batch_rows` rows, all enqueued at once:
//!   many messages in flight) is one Kafka transaction;
//! - on start the publisher reads the last committed message of every
//!   partition and resumes strictly after its outbox id.
//!
//! Consumers must read with `isolation.level=read_committed` (librdkafka's
//! default) so they never see an aborted round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::metrics::Metrics;
use super::retry::Backoff;
use crate::config::Config;
use crate::kafka::{self, OUTBOX_ID_HEADER};

/// Which outbox table feeds which topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbox {
    /// `corrections` -> corrections topic, key = position key.
    Corrections,
    /// `dead_letters` -> DLQ topic, original bytes, reason and source in headers.
    DeadLetters,
    /// `break_events` -> break events topic, key = position key.
    BreakEvents,
}

/// This publisher's producer was fenced: another producer started with
/// the topic's transactional id.
#[derive(Debug, thiserror::Error)]
#[error("fenced: another publisher took over {topic} ({detail})")]
pub struct Fenced {
    /// The topic.
    pub topic: String,
    /// What Kafka said.
    pub detail: String,
}

/// A publisher that must stop: its instance is no longer the writer (the
/// writer epoch in PostgreSQL moved on).
#[derive(Debug, thiserror::Error)]
#[error("fenced: writer epoch {epoch} is no longer the writer's; not publishing {topic}")]
pub struct NotTheWriter {
    /// The topic.
    pub topic: String,
    /// This instance's writer epoch.
    pub epoch: i64,
}

struct Row {
    id: i64,
    key: Option<String>,
    partition: i32,
    payload: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    age_seconds: f64,
}

impl Outbox {
    fn topic(self, config: &Config) -> (String, i32) {
        match self {
            Outbox::Corrections => (
                config.kafka.corrections_topic.clone(),
                config.kafka.corrections_partitions,
            ),
            Outbox::DeadLetters => (config.kafka.dlq_topic.clone(), config.kafka.dlq_partitions),
            Outbox::BreakEvents => (
                config.kafka.breaks_topic.clone(),
                config.kafka.breaks_partitions,
            ),
        }
    }

    async fn fetch(
        self,
        client: &Client,
        after: i64,
        limit: i64,
        partitions: i32,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        Ok(match self {
            Outbox::Corrections | Outbox::BreakEvents => client
                .query(
                    if self == Outbox::Corrections {
                        "SELECT id, position_key, event::text, extract(epoch FROM clock_timestamp() - committed_at)::float8
                         FROM corrections WHERE id > $1 ORDER BY id LIMIT $2"
                    } else {
                        "SELECT id, position_key, event::text, extract(epoch FROM clock_timestamp() - committed_at)::float8
                         FROM break_events WHERE id > $1 ORDER BY id LIMIT $2"
                    },
                    &[&after, &limit],
                )
                .await?
                .into_iter()
                .map(|r| {
                    let key: String = r.get(1);
                    let payload: String = r.get(2);
                    Row {
                        id: r.get(0),
                        partition: kafka::partition_for(&key, partitions),
                        key: Some(key),
                        payload: payload.into_bytes(),
                        headers: Vec::new(),
                        age_seconds: r.get(3),
                    }
                })
                .collect(),
            Outbox::DeadLetters => client
                .query(
                    "SELECT id, source_topic, source_partition, source_offset, reason, payload,
                            extract(epoch FROM clock_timestamp() - committed_at)::float8
                     FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &limit],
                )
                .await?
                .into_iter()
                .map(|r| {
                    let topic: String = r.get(1);
                    let source_partition: i32 = r.get(2);
                    let offset: i64 = r.get(3);
                    let origin = format!("{topic}/{source_partition}/{offset}");
                    Row {
                        id: r.get(0),
                        partition: kafka::partition_for(&origin, partitions),
                        key: None,
                        payload: r.get(5),
                        headers: vec![
                            ("deltabook-reason", r.get::<_, String>(4)),
                            ("deltabook-source-topic", topic),
                            ("deltabook-source-partition", source_partition.to_string()),
                            ("deltabook-source-offset", offset.to_string()),
                        ],
                        age_seconds: r.get(6),
                    }
                })
                .collect(),
        })
    }
}

/// How many times one publisher takes its topic back from another
/// producer (a zombie of an earlier writer) before it gives up.
const MAX_TAKEBACKS: u32 = 10;

/// Publishes `outbox` until `stop` is set, for the writer of epoch
/// `writer_epoch`. Every failure is retried with backoff. Each (re)start
/// first checks that this instance is still the writer: a zombie (an
/// earlier writer, paused while another took over) returns
/// [`NotTheWriter`] instead of starting a producer, which would fence the
/// writer's. When the writer's own producer is fenced ([`Fenced`]) by such
/// a zombie, it takes the topic back (at most [`MAX_TAKEBACKS`] times):
/// starting its producer fences the zombie's, and it resumes after what
/// the topic holds.
pub async fn run(
    outbox: Outbox,
    config: Config,
    writer_epoch: i64,
    metrics: Metrics,
    committed: Arc<Notify>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let (topic, _) = outbox.topic(&config);
    let mut backoff = Backoff::new(&config.retry);
    let mut takebacks = 0;
    while !stop.load(Ordering::Relaxed) {
        let failure =
            match publish_until_error(outbox, &config, writer_epoch, &metrics, &committed, &stop)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.is::<NotTheWriter>() => return Err(e),
                Err(e) if e.is::<Fenced>() => {
                    takebacks += 1;
                    if takebacks > MAX_TAKEBACKS {
                        return Err(e);
                    }
                    e.context("another producer took the topic; taking it back if still the writer")
                }
                Err(e) => e,
            };
        metrics
            .retries
            .with_label_values(&[&format!("publish_{topic}")])
            .inc();
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{failure:#}"), %topic, ?delay, "publisher restarting");
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

/// The transactional id of the publisher of `topic`.
pub fn transactional_id(topic: &str) -> String {
    format!("deltabook-outbox-{topic}")
}

/// Runs a blocking producer call off the async runtime; a fencing error
/// becomes [`Fenced`].
async fn blocking<T: Send + 'static>(
    topic: &str,
    what: &'static str,
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(call).await? {
        Ok(value) => Ok(value),
        Err(e) if kafka::is_fenced(&e) => Err(Fenced {
            topic: topic.to_string(),
            detail: e.to_string(),
        }
        .into()),
        Err(e) => Err(e).with_context(|| format!("{what} ({topic})")),
    }
}

/// One start of a publisher: checks that this instance is still the
/// writer (epoch `writer_epoch`), then fences older producers of the topic
/// and publishes until an error (or `stop`).
async fn publish_until_error(
    outbox: Outbox,
    config: &Config,
    writer_epoch: i64,
    metrics: &Metrics,
    committed: &Notify,
    stop: &AtomicBool,
) -> Result<()> {
    let (topic, partitions) = outbox.topic(config);
    let topic = topic.as_str();
    let client = deltabook_sinks::postgres::connect(&config.postgres.url).await?;
    let current = deltabook_sinks::postgres::fence::current_epoch(&client)
        .await
        .context("reading the writer epoch")?;
    if current != writer_epoch {
        return Err(NotTheWriter {
            topic: topic.to_string(),
            epoch: writer_epoch,
        }
        .into());
    }
    // Fence older publishers first: after this, what is committed on the
    // topic can only grow through this producer.
    let brokers = config.kafka.brokers.clone();
    let id = transactional_id(topic);
    let producer: FutureProducer = {
        let (brokers, id) = (brokers.clone(), id.clone());
        tokio::task::spawn_blocking(move || kafka::transactional_producer(&brokers, &id)).await??
    };
    let tail_topic = topic.to_string();
    let mut last = tokio::task::spawn_blocking(move || {
        kafka::last_outbox_ids(&brokers, &tail_topic, partitions, Duration::from_secs(10))
    })
    .await??;
    let mut cursor = last.iter().copied().min().unwrap_or(-1);
    tracing::info!(%topic, resume_after = ?last, "publisher started");
    while !stop.load(Ordering::Relaxed) {
        let rows = outbox
            .fetch(&client, cursor, config.publisher.batch_rows, partitions)
            .await?;
        let fresh: Vec<&Row> = rows
            .iter()
            .filter(|row| {
                let p = row.partition as usize;
                // Published before a restart?
                !(p < last.len() && row.id <= last[p])
            })
            .collect();
        if fresh.is_empty() {
            cursor = rows.last().map_or(cursor, |r| r.id);
            if rows.is_empty() {
                let wait = Duration::from_millis(config.publisher.poll_interval_ms);
                let _ = tokio::time::timeout(wait, committed.notified()).await;
            }
            continue;
        }
        let started = Instant::now();
        {
            let p = producer.clone();
            blocking(topic, "beginning a transaction", move || {
                p.begin_transaction()
            })
            .await?;
        }
        let mut deliveries = Vec::with_capacity(fresh.len());
        for row in &fresh {
            deliveries.push((
                row.partition,
                row.id,
                row.age_seconds,
                enqueue(&producer, topic, row).await?,
            ));
        }
        {
            let p = producer.clone();
            blocking(topic, "committing a transaction", move || {
                p.commit_transaction(Duration::from_secs(30))
            })
            .await?;
        }
        for (partition, id, age, delivery) in deliveries {
            delivery
                .await
                .map_err(|_| {
                    anyhow!("delivery of outbox id {id} to {topic}/{partition} was cancelled")
                })?
                .map_err(|(e, _)| e)
                .with_context(|| format!("delivering outbox id {id} to {topic}/{partition}"))?;
            if let Some(slot) = last.get_mut(partition as usize) {
                *slot = (*slot).max(id);
            }
            metrics.published.with_label_values(&[topic]).inc();
            metrics
                .publish_latency
                .observe(age + started.elapsed().as_secs_f64());
        }
        cursor = rows.last().map_or(cursor, |r| r.id);
    }
    Ok(())
}

/// Enqueues one row (waiting while the producer's queue is full) and
/// returns its delivery future.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    row: &Row,
) -> Result<rdkafka::producer::DeliveryFuture> {
    let id = row.id.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(row.headers.len() + 1).insert(Header {
        key: OUTBOX_ID_HEADER,
        value: Some(&id),
    });
    for (key, value) in &row.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .partition(row.partition)
        .payload(&row.payload)
        .headers(headers);
    if let Some(key) = &row.key {
        record = record.key(key.as_str());
    }
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) if kafka::is_fenced(&e) => {
                return Err(Fenced {
                    topic: topic.to_string(),
                    detail: e.to_string(),
                }
                .into())
            }
            Err((e, _)) => {
                return Err(e)
                    .with_context(|| format!("enqueueing outbox id {} to {topic}", row.id))
            }
        }
    }
}
