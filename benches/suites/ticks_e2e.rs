//! Price ticks through the service (scripts/services.sh: Apache Kafka and
//! PostgreSQL): a book of N lots over 10k securities is loaded through
//! `trade-events`, then ticks go to `market-data` at a steady rate. Ten
//! times a second a probe tick with a unique price goes to a probe security
//! held by one position; a watcher polls that position's row of the
//! `valuations` table until the price appears: tick sent -> valuation row
//! committed, p50 / p99 / max. Sustained rate: ticks sent / time until the
//! last tick's offset is committed.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::producer::{BaseRecord, Producer};

use super::e2e::{count, drop_db, start_service, unique_config};
use super::percentile;
use super::ticks::{tick_line, trade_line};
use deltabook::config::Config;
use deltabook::kafka;

/// Probe ticks per second.
const PROBES_PER_SECOND: u64 = 10;

/// Runs the suite: `lots` lots, ticks at `rate` per second for `seconds`.
pub fn run_suite(base: Option<&Path>, lots: u64, rate: u64, seconds: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(base, lots, rate, seconds))
}

async fn run(base: Option<&Path>, lots: u64, rate: u64, seconds: u64) -> Result<()> {
    let (config, db) = unique_config(base, "tk", &[])?;
    let (stop_tx, service) = start_service(&config, &db).await?;
    // Load the book (and the probe position).
    let loading = Instant::now();
    let load_config = config.clone();
    tokio::task::spawn_blocking(move || load_book(&load_config, lots)).await??;
    let trades_sql = format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM sink_progress WHERE source_topic = '{}'",
        config.kafka.trades_topic
    );
    while count(&config, &trades_sql).await < lots as i64 + 1 {
        anyhow::ensure!(
            loading.elapsed() < Duration::from_secs(600),
            "the book did not load in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let load_seconds = loading.elapsed().as_secs_f64();
    eprintln!("ticks-e2e: {lots} lots committed in {load_seconds:.1} s");

    // Ticks at `rate`, probes among them, a watcher on the probe's row.
    let (probe_tx, probe_rx) = channel::<(String, Instant)>();
    let watcher_config = config.clone();
    let watcher = tokio::spawn(async move { watch(&watcher_config, probe_rx).await });
    let started = Instant::now();
    let tick_config = config.clone();
    let sent = tokio::task::spawn_blocking(move || {
        send_ticks(&tick_config, rate, seconds, |price| {
            let _ = probe_tx.send((price, Instant::now()));
        })
    })
    .await??;
    let prices_sql = format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM sink_progress WHERE source_topic = '{}'",
        config.kafka.prices_topic
    );
    while count(&config, &prices_sql).await < sent as i64 {
        if started.elapsed() > Duration::from_secs(seconds + 120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_committed = started.elapsed().as_secs_f64();
    let committed = count(&config, &prices_sql).await;
    let mut latencies = watcher.await??;
    let _ = stop_tx.send(());
    let _ = service.await;
    drop_db(&db).await;
    latencies.sort_by(f64::total_cmp);
    println!("| ticks through the service: {lots} lots over 10k securities, 1 worker | value |");
    println!("|---|---:|");
    println!(
        "| book loaded and committed | {load_seconds:.1} s ({:.0} trades/s) |",
        lots as f64 / load_seconds
    );
    println!("| ticks sent at {rate}/s for {seconds} s | {sent} |");
    println!("| ticks committed | {committed} |");
    println!(
        "| sustained: ticks sent / time until the last was committed | {:.0} ticks/s ({all_committed:.1} s) |",
        sent as f64 / all_committed
    );
    println!("| probe ticks timed | {} |", latencies.len());
    println!(
        "| p50 tick sent -> valuation row committed | {:.1} ms |",
        percentile(&latencies, 50.0)
    );
    println!("| p99 | {:.1} ms |", percentile(&latencies, 99.0));
    println!(
        "| max | {:.1} ms |",
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!();
    Ok(())
}

/// The book: `lots` trade lines, then the probe position.
fn load_book(config: &Config, lots: u64) -> Result<()> {
    let producer = kafka::counting_producer(&config.kafka.brokers)?;
    let send = |line: Vec<u8>| -> Result<()> {
        let key = kafka::position_key_of(&line).unwrap_or_default();
        let partition = kafka::partition_for(&key, config.kafka.trades_partitions);
        let record = BaseRecord::<str, [u8]>::to(&config.kafka.trades_topic)
            .key(key.as_str())
            .payload(line.as_slice())
            .partition(partition);
        kafka::send_pipelined(&producer, record)
    };
    for n in 0..lots {
        send(trade_line(n))?;
    }
    send(br#"{"trade_id":"PROBE","account_id":"ACCP","book_id":"BK","security_id":"SECPROBE","side":"BUY","quantity":"10","price":"100","trade_date":"2026-03-02"}"#.to_vec())?;
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Sends ticks at `rate` for `seconds` (plus probes); returns the count sent.
fn send_ticks(
    config: &Config,
    rate: u64,
    seconds: u64,
    mut probe_sent: impl FnMut(String),
) -> Result<u64> {
    let producer = kafka::counting_producer(&config.kafka.brokers)?;
    let started = Instant::now();
    let total = rate * seconds;
    let probe_every = (rate / PROBES_PER_SECOND).max(1);
    let mut sent = 0u64;
    let mut probes = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let (key, line) = if sent.is_multiple_of(probe_every) {
                probes += 1;
                let price = format!("1000.{probes:06}");
                let line = format!(
                    r#"{{"security_id":"SECPROBE","price":"{price}","as_of":"2026-03-02T17:00:{:02}.{:09}Z"}}"#,
                    (probes / 1_000_000_000) % 60,
                    probes % 1_000_000_000
                );
                ("SECPROBE".to_string(), (line.into_bytes(), Some(price)))
            } else {
                let (security, line) = tick_line(sent);
                (format!("SEC{security}"), (line, None))
            };
            let (line, probe) = line;
            let partition = kafka::partition_for(&key, config.kafka.prices_partitions);
            let record = BaseRecord::<str, [u8]>::to(&config.kafka.prices_topic)
                .key(key.as_str())
                .payload(line.as_slice())
                .partition(partition);
            kafka::send_pipelined(&producer, record)?;
            if let Some(price) = probe {
                producer.poll(Duration::ZERO);
                probe_sent(price);
            }
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(sent)
}

/// Polls the probe position's valuation until each probe's price shows.
async fn watch(config: &Config, probes: Receiver<(String, Instant)>) -> Result<Vec<f64>> {
    let client = deltabook_sinks::postgres::connect(&config.postgres.url).await?;
    let mut latencies = Vec::new();
    let mut waiting: Vec<(String, Instant)> = Vec::new();
    let mut last_seen = Instant::now();
    loop {
        while let Ok(probe) = probes.try_recv() {
            waiting.push(probe);
            last_seen = Instant::now();
        }
        if waiting.is_empty() {
            if last_seen.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let row = client
            .query_opt(
                "SELECT price::text FROM valuations WHERE position_key = 'ACCP_BK_SECPROBE'",
                &[],
            )
            .await?;
        if let Some(row) = row {
            let price: String = row.get(0);
            // A later probe's price means every earlier one is committed too.
            if let Some(at) = waiting.iter().position(|(p, _)| *p == price) {
                let now = Instant::now();
                for (_, sent) in waiting.drain(..=at) {
                    latencies.push(now.duration_since(sent).as_secs_f64() * 1e3);
                }
            }
        }
        if last_seen.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(latencies)
}
