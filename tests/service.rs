//! The real-time service against real PostgreSQL and a real Kafka-protocol
//! broker (Apache Kafka), both started by `scripts/services.sh`. Each test uses its
//! own topics and its own database. A test that cannot reach a service fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use deltabook::kafka;
use service_env::*;

#[test]
fn kafka_to_postgres_and_corrections_topic_equal_book() {
    let env = Env::new("eq");
    let mut engine = env.start_engine();
    env.produce(&sample());
    env.wait_committed(sample_lines().len() as i64, Duration::from_secs(120));
    check_against_book(&env);
    let metrics = http_get(env.http_port, "/metrics");
    let wrong_method = http_request(env.http_port, "POST /metrics");
    let unknown = http_get(env.http_port, "/nope");
    let _ = engine.kill();
    let body = metrics.expect("metrics endpoint");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("deltabook_timestamps_committed_total"),
        "metrics exposed: {body}"
    );
    let wrong_method = wrong_method.expect("an answer to POST");
    assert!(wrong_method.starts_with("HTTP/1.1 405"), "{wrong_method}");
    let unknown = unknown.expect("an answer to an unknown path");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
}

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let env = Env::new("k9");
    let lines = sample_lines();
    let (dir, chunks) = split_into_files(&env.name, &lines, 4);
    let mut seed = env.http_port as u64 | 1;
    let mut engine = env.start_engine();
    for chunk in &chunks {
        env.produce(chunk);
        for _ in 0..2 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(20 + seed % 600));
            // kill -9: no chance to flush or commit anything more.
            engine.kill().expect("kill -9");
            engine = env.start_engine();
        }
    }
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    verify_clean(&env);
    let _ = engine.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restarts_with_other_worker_counts_give_the_same_result_as_one_worker() {
    // 2 workers, kill -9 mid-load, 1 worker, kill -9, 3 workers: the snapshot
    // does not depend on how many workers wrote it, and the result equals
    // `deltabook book` (one worker) exactly.
    let mut env = Env::new("wk");
    let lines = sample_lines();
    let (dir, chunks) = split_into_files(&env.name, &lines, 3);
    let mut engine = env.start_engine();
    env.produce(&chunks[0]);
    std::thread::sleep(Duration::from_millis(300));
    engine.kill().expect("kill -9");
    env.workers = 1;
    engine = env.start_engine();
    env.produce(&chunks[1]);
    std::thread::sleep(Duration::from_millis(300));
    engine.kill().expect("kill -9");
    env.workers = 3;
    engine = env.start_engine();
    env.produce(&chunks[2]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    verify_clean(&env);
    let _ = engine.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn poison_pills_go_to_the_dead_letter_topic_and_table_and_the_engine_keeps_going() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let env = Env::new("pp");
    let config = env.config();
    let mut engine = env.start_engine();
    let good = |id: &str| {
        format!(r#"{{"trade_id":"{id}","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10","trade_date":"2026-01-02"}}"#).into_bytes()
    };
    let mut huge = b"{\"trade_id\":\"H1\",\"junk\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 500_000));
    let poison: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not_json"),
        (vec![0xff, 0xfe, 0x00, 0x9c, b'\n', 0x01], "not_json"),
        (b"[1,2]".to_vec(), "not_object"),
        (br#"{"trade_id":"P1","trade_id":"P1"}"#.to_vec(), "malformed_field"),
        (br#"{"trade_id":"P2","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10"}"#.to_vec(), "missing_field"),
        (br#"{"trade_id":"P3","account_id":"A","book_id":"B","security_id":"S","side":"BUYY","quantity":"1","price":"10","trade_date":"2026-01-02"}"#.to_vec(), "unknown_enum"),
        (br#"{"trade_id":"P4","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"0","price":"10","trade_date":"2026-01-02"}"#.to_vec(), "non_positive"),
        (br#"{"trade_id":"P5","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1.123456789","price":"10","trade_date":"2026-01-02"}"#.to_vec(), "too_many_decimals"),
        (br#"{"trade_id":"P6","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10","trade_date":"2026-02-30"}"#.to_vec(), "bad_date"),
        (br#"{"trade_id":"P 7","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10","trade_date":"2026-01-02"}"#.to_vec(), "bad_id"),
        (br#"{"trade_id":"P8","action":"AMEND","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10","trade_date":"2026-01-02"}"#.to_vec(), "bad_version"),
        (huge, "not_json"),
    ];
    runtime().block_on(async {
        deltabook::kafka::ensure_topics(&config.kafka)
            .await
            .expect("topics");
        let producer: FutureProducer =
            deltabook::kafka::idempotent_producer(BROKERS).expect("producer");
        let send = |payload: Vec<u8>| {
            let producer = producer.clone();
            let topic = config.kafka.trades_topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::<str, [u8]>::to(&topic)
                            .partition(0)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("send");
            }
        };
        send(good("G1")).await;
        for (payload, _) in &poison {
            send(payload.clone()).await;
        }
        send(good("G1")).await; // duplicate: acknowledged, not a dead letter
        let mut conflict = good("G1");
        conflict.extend_from_slice(b" ");
        let conflict = String::from_utf8(conflict)
            .expect("utf8")
            .replace("\"10\"", "\"11\"")
            .into_bytes();
        send(conflict).await; // conflicting duplicate
        send(good("G2")).await;
    });
    let total = poison.len() as i64 + 4;
    env.wait_committed(total, Duration::from_secs(60));
    let reasons: Vec<(String, i64)> = env.query(async |c| {
        c.query(
            "SELECT reason, source_offset FROM dead_letters ORDER BY source_offset",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    let mut expected_kinds: Vec<&str> = poison.iter().map(|(_, k)| *k).collect();
    expected_kinds.push("conflicting_duplicate");
    let kinds: Vec<&str> = reasons
        .iter()
        .map(|(r, _)| r.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(kinds, expected_kinds, "{reasons:?}");
    // The engine kept going: both good trades are booked.
    let open: i64 = env.query(async |c| {
        c.query_one(
            "SELECT lot_count FROM positions WHERE position_key = 'A_B_S'",
            &[],
        )
        .await
        .expect("position")
        .get(0)
    });
    assert_eq!(open, 2);
    // The DLQ topic has each one once, with the original bytes and the reason header.
    let started = Instant::now();
    loop {
        let mut messages: Vec<(Vec<u8>, Option<i64>)> = Vec::new();
        kafka::read_topic(
            BROKERS,
            &config.kafka.dlq_topic,
            config.kafka.dlq_partitions,
            Duration::from_secs(15),
            |_, _, _, payload, id| {
                messages.push((payload.to_vec(), id));
            },
        )
        .expect("read dlq");
        if messages.len() == expected_kinds.len() {
            let payloads: BTreeSet<Vec<u8>> = messages.into_iter().map(|(p, _)| p).collect();
            for (payload, _) in &poison {
                assert!(
                    payloads.contains(payload),
                    "DLQ holds the original bytes of every poison pill"
                );
            }
            break;
        }
        assert!(
            messages.len() < expected_kinds.len(),
            "DLQ has {} messages, expected {}",
            messages.len(),
            expected_kinds.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "DLQ has {} of {} messages",
            messages.len(),
            expected_kinds.len()
        );
    }
    let _ = engine.kill();
}

#[test]
fn a_second_instance_waits_for_the_writer_lock_and_takes_over_without_double_publishing() {
    let env = Env::new("li");
    let lines = sample_lines();
    let half = lines.len() / 2;
    let (dir, parts) = split_into_files(&env.name, &lines, 2);
    assert_eq!(parts.len(), 2);
    let mut first = env.start_engine();
    std::thread::sleep(Duration::from_secs(2));
    let second_port = env.http_port + 1;
    let mut command = env.command(&["run"]);
    // Added last, so it overrides the test's own http.listen.
    command
        .arg("--set")
        .arg(format!("http.listen=127.0.0.1:{second_port}"));
    let mut second = EngineProcess::spawn(command);
    env.produce(&parts[0]);
    env.wait_committed(half as i64, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(1));
    let waiting = http_get(second_port, "/ready").expect("second instance answers HTTP");
    assert!(
        waiting.starts_with("HTTP/1.1 503"),
        "the second instance waits for the lock: {waiting}"
    );
    first.kill().expect("kill -9 the first instance");
    env.produce(&parts[1]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(120));
    check_against_book(&env);
    let ready = http_get(second_port, "/ready").expect("second instance answers HTTP");
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "the second instance took over: {ready}"
    );
    let _ = second.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_correction_larger_than_kafka_s_default_message_limit_is_published() {
    // 10,000 trades of one position in one timestamp (a long linger): its
    // correction names 10,000 causes and lots, about 1.8 MB, over the
    // 1 MiB Kafka accepts by default. It must still reach the topic, once.
    let mut env = Env::new("big");
    env.workers = 1;
    let dir = std::env::temp_dir().join(format!("deltabook-big-{}", env.name));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("one-position.jsonl");
    let lines: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                r#"{{"trade_id":"B{i}","version":1,"action":"NEW","account_id":"BIG","book_id":"B","security_id":"X","side":"BUY","quantity":"1","price":"1","trade_date":"2026-01-02"}}"#
            )
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    // The test's sets cap timestamps at 500 messages: lift that (later
    // sets win), and linger long enough for one timestamp to hold them all.
    let mut command = env.command(&["run"]);
    for set in [
        "kafka.batch_linger_ms=5000",
        "kafka.batch_max_messages=50000",
    ] {
        command.arg("--set").arg(set);
    }
    let mut engine = EngineProcess::spawn(command);
    wait_ready(env.http_port, Duration::from_secs(60));
    env.produce(&file);
    env.wait_committed(lines.len() as i64, Duration::from_secs(120));
    let (corrections, largest): (i64, i32) = env.query(async |c| {
        let row = c
            .query_one(
                "SELECT count(*), max(octet_length(event::text)) FROM corrections",
                &[],
            )
            .await
            .expect("corrections");
        (row.get(0), row.get(1))
    });
    assert!(
        largest > 1 << 20,
        "the test needs a correction over 1 MiB (largest {largest} bytes in {corrections})"
    );
    let started = Instant::now();
    loop {
        let (_, published) = fold_topic(&env);
        assert!(published as i64 <= corrections, "published twice");
        if published as i64 == corrections {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{published} of {corrections} corrections published"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = engine.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A zombie (an earlier writer, paused while this one took over) that
/// starts producers with the outbox topics' transactional ids fences the
/// writer's producers. The writer, still the writer in PostgreSQL, takes
/// its topics back and publishes every correction and dead letter exactly
/// once; it does not stop.
#[test]
fn the_writer_takes_its_topics_back_from_a_zombie_producer() {
    let env = Env::new("zp");
    let config = env.config();
    let lines = sample_lines();
    let (_dir, parts) = split_into_files(&env.name, &lines, 2);
    let mut engine = env.start_engine();
    env.produce(&parts[0]);
    env.wait_committed(lines.len().div_ceil(2) as i64, Duration::from_secs(120));
    let zombies: Vec<_> = [
        &config.kafka.corrections_topic,
        &config.kafka.dlq_topic,
        &config.kafka.breaks_topic,
    ]
    .into_iter()
    .map(|topic| {
        let id = deltabook::service::publish::transactional_id(topic);
        kafka::transactional_producer(BROKERS, &id).expect("a zombie producer")
    })
    .collect();
    env.produce(&parts[1]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    let still_running = engine.wait_exit(Duration::from_millis(100)).is_none();
    drop(zombies);
    let _ = engine.kill();
    assert!(
        still_running,
        "the writer stopped instead of taking its topics back"
    );
}
