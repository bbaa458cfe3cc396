//! End-to-end benchmarks against the real services (scripts/services.sh:
//! Apache Kafka and PostgreSQL), each with its baseline in the same process:
//!
//! 1. produce: `deltabook produce` of a generated file, beside a plain
//!    librdkafka producer loop (in-memory payloads, no parsing) on the same
//!    broker in the same minute;
//! 2. backlog: N trades already on the topic, then the service started with
//!    1 and 2 workers: trades/s until every trade is committed to
//!    PostgreSQL, and until the last correction is visible to a consumer;
//! 3. steady: the service running, trades produced at a steady rate, each
//!    carrying its send time in `correlation_id`; a consumer of the
//!    corrections topic reads each cause's send time: produce -> correction
//!    visible, p50 / p99 / max.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::percentile;
use deltabook::config::Config;
use deltabook::kafka;

/// Rounds of each producer in the produce phase.
const PRODUCE_ROUNDS: usize = 3;

const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// What the e2e suite runs.
#[derive(Clone, Debug)]
pub struct E2eOptions {
    /// Trades of the produce and backlog phases.
    pub trades: usize,
    /// Steady phase: trades per second.
    pub rate: u64,
    /// Steady phase: seconds.
    pub seconds: u64,
    /// `(processes, workers per process)` of each backlog run.
    pub shapes: Vec<(usize, usize)>,
    /// Which of `produce`, `backlog`, `steady` to run.
    pub phases: Vec<String>,
}

/// The backlog shapes: `PxW` texts, else one process of each worker count.
pub fn shapes(texts: &[String], workers: &[usize]) -> Result<Vec<(usize, usize)>> {
    if texts.is_empty() {
        return Ok(workers.iter().map(|w| (1, *w)).collect());
    }
    texts
        .iter()
        .map(|text| {
            let (p, w) = text
                .split_once('x')
                .with_context(|| format!("shape {text:?}: PROCESSESxWORKERS"))?;
            Ok((p.trim().parse()?, w.trim().parse()?))
        })
        .collect()
}

/// A configuration with topics, database and port of its own.
pub fn unique_config(base: Option<&Path>, tag: &str, extra: &[String]) -> Result<(Config, String)> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() % 1_000_000_000;
    let name = format!("{tag}{nanos}");
    let db = format!("deltabook_bench_{name}");
    let mut sets = vec![
        format!("kafka.trades_topic=trades-{name}"),
        format!("kafka.methods_topic=methods-{name}"),
        format!("kafka.corrections_topic=corrections-{name}"),
        format!("kafka.dlq_topic=dlq-{name}"),
        format!("kafka.prices_topic=prices-{name}"),
        format!("kafka.custodian_topic=custodian-{name}"),
        format!("kafka.breaks_topic=breaks-{name}"),
        format!("kafka.valuations_topic=valuations-{name}"),
        format!("postgres.url=host=127.0.0.1 port=5432 user=postgres dbname={db}"),
        format!("http.listen=127.0.0.1:{}", 20_000 + nanos % 12_000),
    ];
    sets.extend_from_slice(extra);
    Ok((Config::load(base, &sets)?, db))
}

/// Creates database `db`.
pub async fn create_db(db: &str) -> Result<()> {
    let admin = deltabook_sinks::postgres::connect(ADMIN_URL)
        .await
        .context("PostgreSQL (run scripts/services.sh)")?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    Ok(())
}

/// Drops database `db` (best effort).
pub async fn drop_db(db: &str) {
    if let Ok(admin) = deltabook_sinks::postgres::connect(ADMIN_URL).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await;
    }
}

pub async fn count(config: &Config, sql: &str) -> i64 {
    match deltabook_sinks::postgres::connect(&config.postgres.url).await {
        Ok(c) => c
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Sum and count of a Prometheus histogram, scraped from `/metrics`.
fn scrape(listen: &str, histogram: &str) -> Option<(f64, f64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
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

/// Runs the three phases and prints markdown.
pub fn run_suite(base: Option<&Path>, data_dir: &Path, options: &E2eOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let input = super::ingest::ensure_input(data_dir, 42, 1_000, options.trades)?;
    let runs = |phase: &str| options.phases.iter().any(|p| p == phase);
    runtime.block_on(async {
        if runs("produce") {
            produce_phase(base, &input, options.trades).await?;
        }
        if runs("backlog") {
            for shape in &options.shapes {
                backlog_phase(base, data_dir, &input, options.trades, *shape).await?;
            }
        }
        if runs("steady") {
            steady_phase(base, options.rate, options.seconds).await?;
        }
        Ok(())
    })
}

/// Phase 1: `deltabook produce` against a plain librdkafka loop.
async fn produce_phase(base: Option<&Path>, input: &Path, trades: usize) -> Result<()> {
    let (config, _) = unique_config(base, "pr", &[])?;
    kafka::ensure_topics(&config.kafka).await?;
    let kafka_config = config.kafka.clone();
    let input = input.to_path_buf();
    let lines: Vec<Vec<u8>> = std::fs::read(&input)?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let (baseline, ours) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        // Alternate the two, three rounds each, and keep the medians: the
        // machine is shared with the broker, so one run of each is noise.
        let mut baseline = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..PRODUCE_ROUNDS {
            // Baseline: the same producer settings, payloads in memory,
            // partitions round-robin, nothing parsed.
            let producer = kafka::counting_producer(&kafka_config.brokers)?;
            let started = Instant::now();
            for (i, line) in lines.iter().enumerate() {
                let record = BaseRecord::<str, [u8]>::to(&kafka_config.corrections_topic)
                    .payload(line.as_slice())
                    .partition((i % kafka_config.corrections_partitions as usize) as i32);
                kafka::send_pipelined(&producer, record)?;
            }
            producer.flush(Duration::from_secs(60))?;
            baseline.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(
                producer.context().0.failed.load(Ordering::Relaxed) == 0,
                "baseline deliveries failed"
            );
            let started = Instant::now();
            kafka::produce_file(&kafka_config, &input)?;
            ours.push(started.elapsed().as_secs_f64());
        }
        Ok((super::median(&mut baseline), super::median(&mut ours)))
    })
    .await??;
    println!("| produce {trades} generated trades (Apache Kafka, 16 partitions, idempotent, acks=all; median of {PRODUCE_ROUNDS}) | seconds | msgs/s | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| baseline: plain librdkafka producer loop (payloads in memory, no parsing) | {baseline:.2} | {:.0} | 1.00 |",
        trades as f64 / baseline
    );
    println!(
        "| deltabook produce (reads the file, position key per line, FNV partition) | {ours:.2} | {:.0} | {:.2} |",
        trades as f64 / ours,
        baseline / ours
    );
    println!();
    Ok(())
}

/// Phase 2: the service started on a backlog of `trades`, as `processes`
/// processes of `workers` workers (the other processes of a cluster run
/// in this process too, talking to process 0 over loopback TCP).
async fn backlog_phase(
    base: Option<&Path>,
    data_dir: &Path,
    input: &Path,
    trades: usize,
    (processes, workers): (usize, usize),
) -> Result<()> {
    let mut sets = vec![format!("engine.workers={workers}")];
    if processes > 1 {
        let hosts = data_dir.join("bench-hosts");
        let mut text = String::new();
        for _ in 0..processes {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            text.push_str(&format!("127.0.0.1:{port}\n"));
        }
        std::fs::write(&hosts, text)?;
        sets.push(format!("cluster.hosts_file={}", hosts.display()));
    }
    let (config, db) = unique_config(base, "bl", &sets)?;
    create_db(&db).await?;
    kafka::ensure_topics(&config.kafka).await?;
    {
        let (kafka_config, input) = (config.kafka.clone(), input.to_path_buf());
        tokio::task::spawn_blocking(move || kafka::produce_file(&kafka_config, &input)).await??;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service_config = config.clone();
    let started = Instant::now();
    // The other processes stop when process 0 does.
    let others: Vec<_> = (1..processes)
        .map(|process| {
            let mut member = config.clone();
            member.cluster.process = process;
            tokio::spawn(deltabook::service::serve(member, std::future::pending()))
        })
        .collect();
    let service = tokio::spawn(async move {
        deltabook::service::serve(service_config, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    let total = trades as i64;
    let sql = format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM sink_progress WHERE source_topic = '{}'",
        config.kafka.trades_topic
    );
    while count(&config, &sql).await < total {
        anyhow::ensure!(!service.is_finished(), "the service stopped early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let committed_seconds = started.elapsed().as_secs_f64();
    let corrections = count(&config, "SELECT count(*) FROM corrections").await;
    let last_id = count(&config, "SELECT coalesce(max(id), -1) FROM corrections").await;
    loop {
        let kafka_config = config.kafka.clone();
        let visible = tokio::task::spawn_blocking(move || {
            kafka::last_outbox_ids(
                &kafka_config.brokers,
                &kafka_config.corrections_topic,
                kafka_config.corrections_partitions,
                Duration::from_secs(10),
            )
        })
        .await??;
        if visible.iter().copied().max().unwrap_or(-1) >= last_id {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published_seconds = started.elapsed().as_secs_f64();
    let commit = scrape(&config.http.listen, "commit_latency_seconds");
    let _ = stop_tx.send(());
    let _ = service.await;
    for other in others {
        let _ = other.await;
    }
    drop_db(&db).await;
    println!(
        "| backlog of {trades} trades (1,000 positions), {processes} process(es) x {workers} worker(s) | value |"
    );
    println!("|---|---:|");
    println!(
        "| consumed, booked and committed to PostgreSQL | {:.0} trades/s ({committed_seconds:.1} s) |",
        trades as f64 / committed_seconds
    );
    println!(
        "| ... and the last of {corrections} corrections visible to a consumer | {:.0} trades/s ({published_seconds:.1} s) |",
        trades as f64 / published_seconds
    );
    if let Some((sum, n)) = commit {
        println!(
            "| PostgreSQL commits | {n} commits, {:.1} ms each on average, {sum:.1} s in all ({:.0} trades per commit) |",
            1e3 * sum / n.max(1.0),
            trades as f64 / n.max(1.0)
        );
    }
    println!();
    Ok(())
}

/// The service started in this process with its own database and topics;
/// send on the sender to stop it.
pub type RunningService = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<()>>,
);

/// Creates `db` and the topics, and starts the service on `config`.
pub async fn start_service(config: &Config, db: &str) -> Result<RunningService> {
    create_db(db).await?;
    kafka::ensure_topics(&config.kafka).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service_config = config.clone();
    let service = tokio::spawn(async move {
        deltabook::service::serve(service_config, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    Ok((stop_tx, service))
}

/// Phase 3: steady produce rate, produce -> correction visible.
async fn steady_phase(base: Option<&Path>, rate: u64, seconds: u64) -> Result<()> {
    let (config, db) = unique_config(base, "st", &[])?;
    let (stop_tx, service) = start_service(&config, &db).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (config, latencies, done) = (config.clone(), latencies.clone(), done.clone());
        std::thread::spawn(move || read_latencies(&config, &latencies, &done))
    };
    let producer_config = config.clone();
    let sent =
        tokio::task::spawn_blocking(move || produce_at_rate(&producer_config, rate, seconds))
            .await??;
    // Drain: until every sent trade's cause was seen (or 30 s pass).
    let drained = Instant::now();
    while drained.elapsed() < Duration::from_secs(30)
        && (latencies.lock().map(|l| l.len()).unwrap_or(0) as u64) < sent
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let batch = scrape(&config.http.listen, "batch_latency_seconds");
    let commit = scrape(&config.http.listen, "commit_latency_seconds");
    let _ = stop_tx.send(());
    let _ = service.await;
    drop_db(&db).await;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(f64::total_cmp);
    println!("| steady {rate} trades/s for {seconds} s (1,000 positions, 1 worker) | value |");
    println!("|---|---:|");
    println!("| trades sent | {sent} |");
    println!("| causes observed on the corrections topic | {} |", l.len());
    println!(
        "| p50 produce -> correction visible | {:.1} ms |",
        percentile(&l, 50.0)
    );
    println!("| p99 | {:.1} ms |", percentile(&l, 99.0));
    println!("| max | {:.1} ms |", l.last().copied().unwrap_or(f64::NAN));
    if let (Some((bs, bn)), Some((cs, cn))) = (batch, commit) {
        println!(
            "| mean first message read -> commit done | {:.1} ms over {bn} timestamps |",
            1e3 * bs / bn.max(1.0)
        );
        println!(
            "| mean PostgreSQL commit | {:.1} ms |",
            1e3 * cs / cn.max(1.0)
        );
    }
    println!();
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Sends `rate` trades per second for `seconds`, in ~1 ms ticks, pipelined.
fn produce_at_rate(config: &Config, rate: u64, seconds: u64) -> Result<u64> {
    let producer = kafka::counting_producer(&config.kafka.brokers)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let total = rate * seconds;
    while sent < total {
        // Catch up to the schedule: trade n is due at n / rate seconds.
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
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
            let partition = kafka::partition_for(&key, config.kafka.trades_partitions);
            let record = BaseRecord::<str, [u8]>::to(&config.kafka.trades_topic)
                .key(key.as_str())
                .payload(body.as_bytes())
                .partition(partition);
            kafka::send_pipelined(&producer, record)?;
            sent += 1;
        }
        // Serve delivery reports, then sleep to the next tick (polling with
        // a timeout spins in librdkafka and would starve the engine).
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(30))?;
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
