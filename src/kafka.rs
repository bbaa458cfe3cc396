//! Kafka plumbing (rdkafka): topics, the partition function, producers,
//! reading the last message of each partition, `produce` and `tail`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Header carrying the PostgreSQL outbox id of a published row.
pub const OUTBOX_ID_HEADER: &str = "deltabook-outbox-id";

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

/// An idempotent producer (ordered per partition, no duplicates on retry).
pub fn idempotent_producer(brokers: &str) -> Result<FutureProducer> {
    client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating Kafka producer")
}

/// A consumer without a group: partitions are `assign()`ed at stored offsets.
pub fn assigned_consumer(brokers: &str, message_max_bytes: usize) -> Result<BaseConsumer> {
    client_config(brokers)
        .set("group.id", "deltabook-engine")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", message_max_bytes.to_string())
        .set("enable.partition.eof", "false")
        // Bounds what librdkafka prefetches while the engine is not polling.
        .set(
            "queued.max.messages.kbytes",
            (16 * 1024).max(2 * message_max_bytes / 1024).to_string(),
        )
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
    ];
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
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

/// For each partition of `topic`, the outbox id in the header of its last
/// message (or -1 when the partition is empty).
pub fn last_outbox_ids(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<i64>> {
    let consumer = assigned_consumer(brokers, 16 << 20)?;
    let mut last = vec![-1i64; partitions as usize];
    let mut wanted = TopicPartitionList::new();
    let mut waiting = 0usize;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            wanted.add_partition_offset(topic, p, Offset::Offset(high - 1))?;
            waiting += 1;
        }
    }
    if waiting == 0 {
        return Ok(last);
    }
    consumer
        .assign(&wanted)
        .context("assigning tail partitions")?;
    let deadline = Instant::now() + timeout;
    let mut seen = vec![false; partitions as usize];
    while waiting > 0 {
        if Instant::now() > deadline {
            bail!("timed out reading the last message of {waiting} partition(s) of {topic}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.context("reading a tail message")?;
        let p = message.partition() as usize;
        if p >= seen.len() || seen[p] {
            continue;
        }
        seen[p] = true;
        waiting -= 1;
        last[p] = outbox_id(&message).with_context(|| {
            format!("{topic}/{p}: last message has no {OUTBOX_ID_HEADER} header")
        })?;
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

/// The position key of a trade event line, if it has the three ids.
pub fn position_key_of(line: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let id = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    Some(format!(
        "{}_{}_{}",
        id("account_id")?,
        id("book_id")?,
        id("security_id")?
    ))
}

/// Sends every line of `path` to the trades topic (key = position key, the
/// partition computed with [`partition_for`]; lines without ids go to
/// partition line % partitions without a key). Returns lines sent.
pub async fn produce_file(config: &KafkaConfig, path: &Path) -> Result<u64> {
    let producer = idempotent_producer(&config.brokers)?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).split(b'\n');
    let mut sent = 0u64;
    loop {
        // Up to 10k lines in flight; the records borrow the chunk.
        let mut chunk: Vec<(Option<String>, Vec<u8>)> = Vec::with_capacity(10_000);
        for line in lines.by_ref().take(10_000) {
            let line = line?;
            chunk.push((position_key_of(&line), line));
        }
        if chunk.is_empty() {
            return Ok(sent);
        }
        let mut pending = Vec::with_capacity(chunk.len());
        for (key, line) in &chunk {
            let partition = match key {
                Some(k) => partition_for(k, config.trades_partitions),
                None => (sent % config.trades_partitions as u64) as i32,
            };
            let mut record = FutureRecord::<str, [u8]>::to(&config.trades_topic)
                .payload(line.as_slice())
                .partition(partition);
            if let Some(k) = key {
                record = record.key(k.as_str());
            }
            pending.push(producer.send(record, Duration::from_secs(30)));
            sent += 1;
        }
        for delivery in futures_drain(&mut pending).await {
            delivery
                .map_err(|(e, _)| e)
                .context("delivering a trade event")?;
        }
    }
}

async fn futures_drain<F: std::future::Future>(pending: &mut Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(pending.len());
    for f in pending.drain(..) {
        out.push(f.await);
    }
    out
}

/// Reads every message of `topic` from the beginning up to the high
/// watermarks seen at the start, and calls `each` with (partition, offset,
/// key, payload, outbox id). Gives up after `timeout` without progress.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, &[u8], Option<i64>),
) -> Result<u64> {
    let consumer = assigned_consumer(brokers, 16 << 20)?;
    let mut list = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            list.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining.insert(p, high);
        }
    }
    if remaining.is_empty() {
        return Ok(0);
    }
    consumer.assign(&list)?;
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
        let message = message.context("reading")?;
        last_progress = Instant::now();
        let p = message.partition();
        if let Some(high) = remaining.get(&p) {
            if message.offset() + 1 >= *high {
                remaining.remove(&p);
            }
        }
        count += 1;
        each(
            p,
            message.offset(),
            message.key(),
            message.payload().unwrap_or_default(),
            outbox_id(&message),
        );
    }
    Ok(count)
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
    fn partition_function_is_stable_and_in_range() {
        assert_eq!(
            partition_for("ACC1_EQ-US_AAPL", 16),
            partition_for("ACC1_EQ-US_AAPL", 16)
        );
        for key in ["a", "ACC1_EQ_X", "", "ACC99_B_C"] {
            assert!((0..16).contains(&partition_for(key, 16)));
        }
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            partition_for("a", 1 << 30) as u64,
            0xaf63_dc4c_8601_ec8c % (1 << 30)
        );
        assert_eq!(
            position_key_of(br#"{"account_id":"A","book_id":"B","security_id":"C"}"#).as_deref(),
            Some("A_B_C")
        );
        assert_eq!(position_key_of(b"nope"), None);
    }
}
