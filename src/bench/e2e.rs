//! End-to-end benchmark against the real services (scripts/services.sh):
//! produce -> engine -> PostgreSQL commit -> outbox -> correction visible to
//! a consumer of the corrections topic.
//!
//! 1. Throughput: N generated trades pre-loaded on the trades topic, then the
//!    service started; time until every trade is committed, and until every
//!    correction is on the topic.
//! 2. Latency: the service running; trades produced at a steady rate, each
//!    carrying its send time in `correlation_id`; a consumer of the
//!    corrections topic reads the cause's correlation id of each correction.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::percentile;
use crate::config::Config;
use crate::kafka;

const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn unique_config(base: &Path, tag: &str) -> Result<(Config, String)> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() % 1_000_000_000;
    let name = format!("{tag}{nanos}");
    let db = format!("deltabook_bench_{name}");
    let sets = vec![
        format!("kafka.trades_topic=trades-{name}"),
        format!("kafka.methods_topic=methods-{name}"),
        format!("kafka.corrections_topic=corrections-{name}"),
        format!("kafka.dlq_topic=dlq-{name}"),
        format!("postgres.url=host=127.0.0.1 port=5432 user=postgres dbname={db}"),
        format!("http.listen=127.0.0.1:{}", 30_000 + nanos % 20_000),
    ];
    Ok((Config::load(base, &sets)?, db))
}

async fn create_db(db: &str) -> Result<()> {
    let admin = deltabook_sinks::postgres::connect(ADMIN_URL)
        .await
        .context("PostgreSQL (run scripts/services.sh)")?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    Ok(())
}

async fn drop_db(db: &str) {
    if let Ok(admin) = deltabook_sinks::postgres::connect(ADMIN_URL).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
    }
}

async fn count(config: &Config, sql: &str) -> i64 {
    match deltabook_sinks::postgres::connect(&config.postgres.url).await {
        Ok(c) => c
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

fn topic_messages(config: &Config) -> i64 {
    let Ok(consumer) = kafka::assigned_consumer(&config.kafka.brokers, 1 << 20) else {
        return -1;
    };
    (0..config.kafka.corrections_partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(&config.kafka.corrections_topic, p, Duration::from_secs(5))
                .map(|(low, high)| high - low)
                .unwrap_or(0)
        })
        .sum()
}

/// Sum and count of a Prometheus histogram, scraped from `/metrics`.
fn scrape(listen: &str, histogram: &str) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let value = |suffix: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("deltabook_{histogram}_{suffix} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")?))
}

/// Runs both phases and prints markdown.
pub fn run_suite(
    base: &Path,
    data_dir: &Path,
    trades: usize,
    rate: u64,
    seconds: u64,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Phase 1: throughput.
        let (config, db) = unique_config(base, "tp")?;
        create_db(&db).await?;
        let input = super::ingest::ensure_input(data_dir, 42, 1_000, trades)?;
        let started = Instant::now();
        kafka::ensure_topics(&config.kafka).await?;
        {
            let (kafka, input) = (config.kafka.clone(), input.clone());
            tokio::task::spawn_blocking(move || kafka::produce_file(&kafka, &input)).await??;
        }
        let produce_seconds = started.elapsed().as_secs_f64();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service_config = config.clone();
        let started = Instant::now();
        let service = tokio::spawn(async move {
            crate::service::serve(service_config, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let total = trades as i64;
        let sql = format!("SELECT coalesce(sum(next_offset), 0)::int8 FROM sink_progress WHERE source_topic = '{}'", config.kafka.trades_topic);
        while count(&config, &sql).await < total {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let committed_seconds = started.elapsed().as_secs_f64();
        let corrections = count(&config, "SELECT count(*) FROM corrections").await;
        let probe_config = config.clone();
        loop {
            let probe_config = probe_config.clone();
            let on_topic = tokio::task::spawn_blocking(move || topic_messages(&probe_config)).await?;
            if on_topic >= corrections {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let published_seconds = started.elapsed().as_secs_f64();
        let commit = scrape(&config.http.listen, "commit_latency_seconds");
        let batch = scrape(&config.http.listen, "batch_latency_seconds");
        let _ = stop_tx.send(());
        let _ = service.await;
        drop_db(&db).await;
        println!("| end-to-end throughput ({trades} trades over 1,000 positions) | value |");
        println!("|---|---:|");
        println!("| produce to topic (deltabook produce) | {:.0} trades/s |", trades as f64 / produce_seconds);
        println!("| consumed, booked and committed to PostgreSQL | {:.0} trades/s ({committed_seconds:.1} s) |", trades as f64 / committed_seconds);
        println!("| ... and every correction published ({corrections}) | {:.0} trades/s ({published_seconds:.1} s) |", trades as f64 / published_seconds);
        if let (Some((commit_sum, commit_n)), Some((_, batches))) = (commit, batch) {
            println!("| PostgreSQL commit time | {:.1} s of {committed_seconds:.1} s, {:.1} ms per commit, {commit_n} commits ({:.0} trades per commit) |", commit_sum, 1e3 * commit_sum / commit_n.max(1.0), trades as f64 / batches.max(1.0));
        }
        println!();

        // Phase 2: latency at a steady rate.
        let (config, db) = unique_config(base, "lt")?;
        create_db(&db).await?;
        kafka::ensure_topics(&config.kafka).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let service_config = config.clone();
        let service = tokio::spawn(async move {
            crate::service::serve(service_config, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (config, latencies, done) = (config.clone(), latencies.clone(), done.clone());
            std::thread::spawn(move || read_latencies(&config, &latencies, &done))
        };
        let producer: FutureProducer = kafka::idempotent_producer(&config.kafka.brokers)?;
        let sent = produce_at_rate(&producer, &config, rate, seconds).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        done.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let _ = stop_tx.send(());
        let _ = service.await;
        drop_db(&db).await;
        let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_by(f64::total_cmp);
        println!("| end-to-end latency at {rate} trades/s for {seconds} s | value |");
        println!("|---|---:|");
        println!("| trades sent | {sent} |");
        println!("| corrections observed | {} |", l.len());
        println!("| p50 produce -> correction visible | {:.1} ms |", percentile(&l, 50.0));
        println!("| p99 | {:.1} ms |", percentile(&l, 99.0));
        println!("| max | {:.1} ms |", l.last().copied().unwrap_or(f64::NAN));
        Ok(())
    })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn produce_at_rate(
    producer: &FutureProducer,
    config: &Config,
    rate: u64,
    seconds: u64,
) -> Result<u64> {
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut bodies = Vec::with_capacity(per_tick as usize);
        for _ in 0..per_tick {
            let position = sent % 1000;
            let key = format!("ACC{}_BK_SEC{}", position % 10, position);
            let side = if sent % 3 == 2 { "SELL" } else { "BUY" };
            let body = format!(
                r#"{{"trade_id":"L{sent}","account_id":"ACC{}","book_id":"BK","security_id":"SEC{}","side":"{side}","quantity":"{}","price":"100.{}","trade_date":"2026-03-02","correlation_id":"lat-{}"}}"#,
                position % 10,
                position,
                1 + sent % 7,
                sent % 97,
                now_ns()
            );
            bodies.push((key, body));
            sent += 1;
        }
        let mut pending = Vec::with_capacity(per_tick as usize);
        for (key, body) in &bodies {
            let partition = kafka::partition_for(key, config.kafka.trades_partitions);
            let record = FutureRecord::to(&config.kafka.trades_topic)
                .key(key.as_str())
                .payload(body.as_str())
                .partition(partition);
            pending.push(producer.send(record, Duration::from_secs(10)));
        }
        for p in pending {
            p.await.map_err(|(e, _)| e)?;
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(sent)
}

fn read_latencies(config: &Config, latencies: &Mutex<Vec<f64>>, done: &AtomicBool) {
    let Ok(consumer): Result<BaseConsumer> =
        kafka::assigned_consumer(&config.kafka.brokers, 16 << 20)
    else {
        return;
    };
    let mut list = TopicPartitionList::new();
    for p in 0..config.kafka.corrections_partitions {
        let _ = list.add_partition_offset(&config.kafka.corrections_topic, p, Offset::Beginning);
    }
    if consumer.assign(&list).is_err() {
        return;
    }
    while !done.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let seen = now_ns();
        let Some(payload) = message.payload() else {
            continue;
        };
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(payload) else {
            continue;
        };
        let Some(causes) = event["cause"].as_array() else {
            continue;
        };
        let mut batch = Vec::new();
        for cause in causes {
            if let Some(sent) = cause["correlation_id"]
                .as_str()
                .and_then(|c| c.strip_prefix("lat-"))
                .and_then(|n| n.parse::<u128>().ok())
            {
                batch.push(seen.saturating_sub(sent) as f64 / 1e6);
            }
        }
        if let Ok(mut l) = latencies.lock() {
            l.extend(batch);
        }
    }
}
