//! Kafka plumbing (rdkafka): topics, the partition function, producers
//! (idempotent for `produce`, transactional for the outboxes), reading a
//! topic to its end and the last outbox id of each partition, `produce` and
//! `tail`. Consumers read with `isolation.level=read_committed` (librdkafka's
//! default), so a message of an aborted or still-open outbox transaction is
//! never seen.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Header carrying the PostgreSQL outbox id of a published row.
pub const OUTBOX_ID_HEADER: &str = "deltabook-outbox-id";

/// Messages a producer may have enqueued and not yet acknowledged (the
/// pipelining window); librdkafka keeps per-partition order within it.
pub const PRODUCE_WINDOW_MESSAGES: usize = 100_000;

/// The partition of `key` among `partitions`: FNV-1a 64 of the key bytes,
/// stable across processes and versions (the engine computes it itself).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as i32
}

/// Base client settings.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000");
    config
}

/// Settings of an idempotent producer (ordered per partition, no duplicates
/// on retry) with up to [`PRODUCE_WINDOW_MESSAGES`] messages in flight.
fn idempotent_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set(
            "queue.buffering.max.messages",
            PRODUCE_WINDOW_MESSAGES.to_string(),
        )
        .set("message.timeout.ms", "30000");
    config
}

/// An idempotent producer.
pub fn idempotent_producer(brokers: &str) -> Result<FutureProducer> {
    idempotent_config(brokers)
        .create()
        .context("creating Kafka producer")
}

/// The largest message of the engine's output topics (corrections, dead
/// letters, break events, valuations), set on the topics it creates
/// (`max.message.bytes`) and on its producers (`message.max.bytes`). A
/// correction names every cause and lot of one position at one timestamp,
/// so it grows with the timestamp (`kafka.batch_max_messages`) and the
/// position's lots: a 1M-trade backlog of the generator's skewed stream
/// at 50k messages per timestamp has corrections of 1.3 MB, over Kafka's
/// 1 MiB default.
pub const OUTPUT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A transactional producer with `transactional_id`: creating it fences (and
/// aborts the open transaction of) any older producer with the same id, so
/// at most one outbox publisher per topic can write at a time.
pub fn transactional_producer(brokers: &str, transactional_id: &str) -> Result<FutureProducer> {
    let producer: FutureProducer = idempotent_config(brokers)
        .set("message.max.bytes", OUTPUT_MAX_MESSAGE_BYTES.to_string())
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000")
        .create()
        .context("creating transactional Kafka producer")?;
    producer
        .init_transactions(Duration::from_secs(30))
        .with_context(|| format!("initialising transactions for {transactional_id}"))?;
    Ok(producer)
}

/// An idempotent producer for a feed that is not exactly once (the
/// conflated valuations).
pub fn plain_producer(brokers: &str) -> Result<FutureProducer> {
    idempotent_config(brokers)
        .set("message.max.bytes", OUTPUT_MAX_MESSAGE_BYTES.to_string())
        .create()
        .context("creating Kafka producer")
}

/// True when `error` means another producer with our transactional id took
/// over (or the producer is otherwise unusable for good).
pub fn is_fenced(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => {
            e.is_fatal()
                || matches!(
                    e.code(),
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        ),
    }
}

/// A consumer without a group: partitions are `assign()`ed at stored
/// offsets. Reads committed messages only.
pub fn assigned_consumer(brokers: &str, message_max_bytes: usize) -> Result<BaseConsumer> {
    consumer_config(brokers, message_max_bytes)
        .set("enable.partition.eof", "false")
        .create()
        .context("creating Kafka consumer")
}

fn consumer_config(brokers: &str, message_max_bytes: usize) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("group.id", "deltabook-engine")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.message.max.bytes", message_max_bytes.to_string())
        // A fetch is answered once 64 KiB are there or after 5 ms: a busy
        // topic is read in few large fetches instead of one per round trip.
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "65536")
        // Bounds what librdkafka prefetches while the engine is not polling.
        .set(
            "queued.max.messages.kbytes",
            (16 * 1024).max(2 * message_max_bytes / 1024).to_string(),
        );
    config
}

/// A consumer that reports the end of each partition (`PartitionEOF`).
fn eof_consumer(brokers: &str) -> Result<BaseConsumer> {
    consumer_config(brokers, 16 << 20)
        .set("enable.partition.eof", "true")
        .create()
        .context("creating Kafka consumer")
}

/// Creates the service's topics with their partition counts (existing ones are left alone).
pub async fn ensure_topics(config: &KafkaConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(&config.brokers)
        .create()
        .context("creating Kafka admin client")?;
    let topics = [
        (config.trades_topic.as_str(), config.trades_partitions),
        (config.methods_topic.as_str(), config.methods_partitions),
        (
            config.corrections_topic.as_str(),
            config.corrections_partitions,
        ),
        (config.dlq_topic.as_str(), config.dlq_partitions),
        (config.prices_topic.as_str(), config.prices_partitions),
        (config.custodian_topic.as_str(), config.custodian_partitions),
        (config.breaks_topic.as_str(), config.breaks_partitions),
        (
            config.valuations_topic.as_str(),
            config.valuations_partitions,
        ),
    ];
    let outputs = [
        config.corrections_topic.as_str(),
        config.dlq_topic.as_str(),
        config.breaks_topic.as_str(),
        config.valuations_topic.as_str(),
    ];
    let max_message = OUTPUT_MAX_MESSAGE_BYTES.to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, n)| {
            let topic = NewTopic::new(name, *n, TopicReplication::Fixed(1));
            if outputs.contains(name) {
                topic.set("max.message.bytes", &max_message)
            } else {
                topic
            }
        })
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .context("creating topics")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Reads `partitions` of `topic` from the given start offsets to their end
/// (the committed end: aborted and open transactions are skipped), calling
/// `each` with (partition, offset, key, payload, outbox id). Gives up after
/// `timeout` without progress.
fn read_to_end(
    brokers: &str,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    timeout: Duration,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, &[u8], Option<i64>),
) -> Result<u64> {
    if starts.is_empty() {
        return Ok(0);
    }
    let consumer = eof_consumer(brokers)?;
    let mut list = TopicPartitionList::new();
    for (p, offset) in starts {
        list.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
    }
    consumer.assign(&list)?;
    let mut remaining: std::collections::BTreeSet<i32> = starts.keys().copied().collect();
    let mut count = 0u64;
    let mut last_progress = Instant::now();
    while !remaining.is_empty() {
        if last_progress.elapsed() > timeout {
            bail!(
                "reading {topic}: no progress for {timeout:?}, {} partition(s) not read to the end",
                remaining.len()
            );
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                remaining.remove(&p);
                last_progress = Instant::now();
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {topic}")),
        };
        last_progress = Instant::now();
        count += 1;
        each(
            message.partition(),
            message.offset(),
            message.key(),
            message.payload().unwrap_or_default(),
            outbox_id(&message),
        );
    }
    Ok(count)
}

/// The low and high watermark of each partition of `topic`.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("watermarks of {topic}/{p}"))
        })
        .collect()
}

/// For each partition of `topic`, the outbox id in the header of its last
/// committed message (or -1 when it has none). Reads backwards in growing
/// windows from the end, since transaction markers and aborted messages
/// also take offsets.
pub fn last_outbox_ids(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<i64>> {
    let probe = eof_consumer(brokers)?;
    let marks = watermarks(&probe, topic, partitions, timeout)?;
    drop(probe);
    let mut last = vec![-1i64; partitions as usize];
    let mut window = 64i64;
    // Partitions still looking: (partition, low, high).
    let mut open: Vec<(i32, i64, i64)> = marks
        .iter()
        .enumerate()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (low, high))| (p as i32, *low, *high))
        .collect();
    while !open.is_empty() {
        let starts: BTreeMap<i32, i64> = open
            .iter()
            .map(|(p, low, high)| (*p, (*high - window).max(*low)))
            .collect();
        let mut found = vec![false; partitions as usize];
        read_to_end(brokers, topic, &starts, timeout, |p, _, _, _, id| {
            let slot = p as usize;
            if let Some(id) = id {
                last[slot] = last[slot].max(id);
                found[slot] = true;
            }
        })?;
        // Keep looking further back where the window held no outbox message.
        open.retain(|(p, low, high)| !found[*p as usize] && *high - window > *low);
        window = window.saturating_mul(8);
    }
    Ok(last)
}

/// The outbox id header of a message.
pub fn outbox_id(message: &impl Message) -> Option<i64> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == OUTBOX_ID_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
}

/// The three ids of a trade event, borrowed from its line.
#[derive(serde::Deserialize)]
struct EventIds<'a> {
    #[serde(borrow)]
    account_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    book_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    security_id: Option<std::borrow::Cow<'a, str>>,
}

/// The position key of a trade event line, if it is a JSON object with the
/// three ids as strings (other fields are not looked at).
pub fn position_key_of(line: &[u8]) -> Option<String> {
    let ids: EventIds = serde_json::from_slice(line).ok()?;
    Some(format!(
        "{}_{}_{}",
        ids.account_id?, ids.book_id?, ids.security_id?
    ))
}

/// Counts delivery failures of a [`BaseProducer`] (its delivery callback).
#[derive(Default)]
pub struct DeliveryCounter {
    /// Messages acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Messages that failed for good.
    pub failed: AtomicU64,
}

/// A producer context that counts deliveries.
#[derive(Clone, Default)]
pub struct CountingContext(pub Arc<DeliveryCounter>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::error!(error = %e, "delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// An idempotent [`BaseProducer`] whose delivery reports are counted.
pub fn counting_producer(brokers: &str) -> Result<BaseProducer<CountingContext>> {
    idempotent_config(brokers)
        .create_with_context(CountingContext::default())
        .context("creating Kafka producer")
}

/// Enqueues one record, serving delivery reports while the queue is full
/// (the window is bounded by `queue.buffering.max.messages`).
pub fn send_pipelined<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, str, [u8], C::DeliveryOpaque>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("enqueueing a message"),
        }
    }
}

/// Lines read and keyed per chunk by `produce`'s reader thread.
const PRODUCE_CHUNK_LINES: usize = 8_192;

/// One line to send: its key (the position key, if it has one), its
/// partition and its bytes.
type KeyedLine = (Option<String>, i32, Vec<u8>);

/// Sends every line of `path` to the trades topic (key = position key, the
/// partition computed with [`partition_for`]; lines without ids go to
/// partition line % partitions without a key), keeping up to
/// [`PRODUCE_WINDOW_MESSAGES`] in flight. A reader thread reads and keys
/// chunks of lines while this thread sends (file order is kept, so each
/// partition receives its lines in file order). Returns lines sent; fails if
/// any message could not be delivered.
pub fn produce_file(config: &KafkaConfig, path: &Path) -> Result<u64> {
    produce_lines(
        config,
        &config.trades_topic,
        config.trades_partitions,
        path,
        position_key_of,
    )
}

/// Sends a .jsonl file of price ticks to the prices topic, key = security_id.
pub fn produce_prices(config: &KafkaConfig, path: &Path) -> Result<u64> {
    produce_lines(
        config,
        &config.prices_topic,
        config.prices_partitions,
        path,
        security_of,
    )
}

/// Sends a .jsonl file of custodian statements to the custodian topic,
/// key = position key.
pub fn produce_statements(config: &KafkaConfig, path: &Path) -> Result<u64> {
    produce_lines(
        config,
        &config.custodian_topic,
        config.custodian_partitions,
        path,
        position_key_of,
    )
}

/// The `security_id` of a JSON line, if it has one.
pub fn security_of(line: &[u8]) -> Option<String> {
    let ids: EventIds = serde_json::from_slice(line).ok()?;
    ids.security_id.map(|s| s.into_owned())
}

/// Sends the lines of `path` to `topic`, each keyed by `key_of` (a line
/// without a key goes round-robin), many in flight, order kept per partition.
fn produce_lines(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    path: &Path,
    key_of: fn(&[u8]) -> Option<String>,
) -> Result<u64> {
    let producer = counting_producer(&config.brokers)?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<KeyedLine>>(4);
    let shown = path.display().to_string();
    let reader = std::thread::Builder::new()
        .name("deltabook-produce-reader".into())
        .spawn(move || -> Result<()> {
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let mut number = 0u64;
            loop {
                let mut chunk = Vec::with_capacity(PRODUCE_CHUNK_LINES);
                while chunk.len() < PRODUCE_CHUNK_LINES {
                    let mut line = Vec::with_capacity(256);
                    if reader
                        .read_until(b'\n', &mut line)
                        .with_context(|| format!("reading {shown}"))?
                        == 0
                    {
                        break;
                    }
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    let key = key_of(&line);
                    let partition = match &key {
                        Some(k) => partition_for(k, partitions),
                        None => (number % partitions as u64) as i32,
                    };
                    number += 1;
                    chunk.push((key, partition, line));
                }
                let last = chunk.len() < PRODUCE_CHUNK_LINES;
                if !chunk.is_empty() && tx.send(chunk).is_err() {
                    return Ok(()); // The sender failed; it reports why.
                }
                if last {
                    return Ok(());
                }
            }
        })?;
    let mut sent = 0u64;
    for chunk in rx {
        for (key, partition, line) in &chunk {
            let mut record = BaseRecord::<str, [u8]>::to(topic)
                .payload(line.as_slice())
                .partition(*partition);
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            send_pipelined(&producer, record)?;
            sent += 1;
        }
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    let failed = producer.context().0.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {sent} trade events could not be delivered");
    }
    Ok(sent)
}

/// Reads every committed message of `topic` from the beginning to its
/// current end, and calls `each` with (partition, offset, key, payload,
/// outbox id). Gives up after `timeout` without progress.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    each: impl FnMut(i32, i64, Option<&[u8]>, &[u8], Option<i64>),
) -> Result<u64> {
    let probe = eof_consumer(brokers)?;
    let marks = watermarks(&probe, topic, partitions, timeout)?;
    drop(probe);
    let starts: BTreeMap<i32, i64> = marks
        .iter()
        .enumerate()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (low, _))| (p as i32, *low))
        .collect();
    read_to_end(brokers, topic, &starts, timeout, each)
}

/// `deltabook tail`: prints the corrections topic, one JSON event per line.
pub fn tail(config: &KafkaConfig, timeout: Duration) -> Result<()> {
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    let count = read_topic(
        &config.brokers,
        &config.corrections_topic,
        config.corrections_partitions,
        timeout,
        |p, _, _, payload, _| {
            *per_partition.entry(p).or_insert(0) += 1;
            println!("{}", String::from_utf8_lossy(payload));
        },
    )?;
    eprintln!(
        "{count} corrections from {} partition(s)",
        per_partition.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_function_is_fnv1a_and_in_range() {
        for key in ["a", "ACC1_EQ_X", "", "ACC99_B_C"] {
            assert!((0..16).contains(&partition_for(key, 16)));
        }
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; of "" the offset basis.
        assert_eq!(
            partition_for("a", 1 << 30) as u64,
            0xaf63_dc4c_8601_ec8c % (1 << 30)
        );
        assert_eq!(
            partition_for("", 1 << 30) as u64,
            0xcbf2_9ce4_8422_2325 % (1 << 30)
        );
    }

    #[test]
    fn position_key_reads_the_three_ids_only() {
        assert_eq!(
            position_key_of(br#"{"account_id":"A","book_id":"B","security_id":"C"}"#).as_deref(),
            Some("A_B_C")
        );
        assert_eq!(
            position_key_of(br#"{"x":[1,{"y":2}],"account_id":"A\u0031","book_id":"B","security_id":"C","quantity":"1"}"#).as_deref(),
            Some("A1_B_C")
        );
        assert_eq!(position_key_of(b"nope"), None);
        assert_eq!(
            position_key_of(br#"{"account_id":"A","book_id":"B"}"#),
            None
        );
        assert_eq!(
            position_key_of(br#"{"account_id":1,"book_id":"B","security_id":"C"}"#),
            None
        );
    }
}
