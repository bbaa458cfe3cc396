//! Reconciliation in the service: trades, price ticks and custodian
//! statements from their topics, with kill -9 restarts between the sends;
//! the `valuations`, `breaks` and `sequence_gaps` tables must equal `book`
//! on the same files, each rejected tick and statement must be a dead
//! letter once, and the break events on the topic must be exactly once per
//! (position, as_of) and fold to the breaks table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltabook::{kafka, verify};
use deltabook_dataflows::runner::{self, ExtraSources, RunOptions};
use service_env::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("input");
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|b| *b == b'\n').map(|l| l.to_vec()).collect()
}

/// `book` on the three sample files: (valuations, breaks, gaps) as text rows.
fn expected() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let extra = ExtraSources {
        prices: Some(Arc::new(lines_of(&data("sample-prices.jsonl")))),
        custodian: Some(Arc::new(lines_of(&data("sample-custodian.jsonl")))),
    };
    let outcome = runner::run_with(
        Arc::new(sample_lines()),
        extra,
        &RunOptions::new(Vec::new(), 1000, 1),
        None,
    )
    .expect("book");
    (
        outcome
            .valuations
            .iter()
            .map(verify::render_valuation)
            .collect(),
        outcome.breaks.iter().map(verify::render_break).collect(),
        outcome.gaps.iter().map(verify::render_gap).collect(),
    )
}

/// The same three tables as stored (rendered by `verify`).
fn stored(env: &Env) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let mut rows = env.query(async |c| verify::stored_rows(c).await.expect("tables"));
    let mut take = |table: &str| rows.remove(table).unwrap_or_default();
    (take("valuations"), take("breaks"), take("sequence_gaps"))
}

/// Folds the break-events topic: (position -> final break row, or none), and
/// the number of events; checks exactly once per (position, as_of), as_of
/// order per position, and that each event's `before` is the previous `after`.
fn fold_breaks_topic(env: &Env) -> (BTreeMap<String, Option<String>>, usize) {
    let config = env.config();
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut last_as_of: BTreeMap<String, u64> = BTreeMap::new();
    let row = |b: &serde_json::Value| -> Option<String> {
        if b.is_null() {
            return None;
        }
        Some(format!(
            "{},{},{},{},{},{}",
            b["position_key"].as_str().unwrap(),
            b["as_of_date"].as_str().unwrap(),
            b["kind"].as_str().unwrap(),
            b["internal_quantity"].as_str().unwrap(),
            b["custodian_quantity"].as_str().unwrap(),
            b["difference"].as_str().unwrap()
        ))
    };
    let count = kafka::read_topic(
        BROKERS,
        &config.kafka.breaks_topic,
        config.kafka.breaks_partitions,
        Duration::from_secs(15),
        |_, _, key, payload, id| {
            assert!(id.is_some(), "every message carries its outbox id");
            let event: serde_json::Value = serde_json::from_slice(payload).expect("event json");
            let position = event["position_key"]
                .as_str()
                .expect("position_key")
                .to_string();
            assert_eq!(key, Some(position.as_bytes()), "key is the position key");
            let as_of = event["as_of"].as_u64().expect("as_of");
            assert!(
                seen.insert((position.clone(), as_of)),
                "({position}, {as_of}) twice"
            );
            let previous = last_as_of.insert(position.clone(), as_of).unwrap_or(0);
            assert!(
                as_of > previous,
                "{position}: as_of {as_of} after {previous}"
            );
            let kind = event["event"].as_str().expect("event");
            let before = row(&event["before"]);
            let after = row(&event["after"]);
            match kind {
                "OPENED" => assert!(before.is_none() && after.is_some()),
                "CHANGED" => assert!(before.is_some() && after.is_some() && before != after),
                "RESOLVED" => assert!(before.is_some() && after.is_none()),
                other => panic!("unknown event {other}"),
            }
            assert!(
                !event["cause"].as_array().expect("cause").is_empty(),
                "every event says what moved it"
            );
            let current = state.entry(position.clone()).or_insert(None);
            assert_eq!(&before, current, "{position}: before is the previous after");
            *current = after;
        },
    )
    .expect("read breaks topic");
    (state, count as usize)
}

#[test]
fn ticks_and_statements_through_kill_9_restarts_equal_book_and_break_events_fold_to_the_table() {
    let env = Env::new("rc");
    let lines = sample_lines();
    let (dir, chunks) = split_into_files(&env.name, &lines, 3);
    let prices = data("sample-prices.jsonl");
    let custodian = data("sample-custodian.jsonl");
    let mut engine = env.start_engine();
    let send = |flag: &str, path: &Path| {
        let status = env
            .command(&["produce", flag, path.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("produce");
        assert!(status.success(), "produce {flag}");
    };
    env.produce(&chunks[0]);
    send("--custodian", &custodian);
    std::thread::sleep(Duration::from_millis(700));
    engine.kill().expect("kill -9");
    engine = env.start_engine();
    env.produce(&chunks[1]);
    send("--prices", &prices);
    std::thread::sleep(Duration::from_millis(500));
    engine.kill().expect("kill -9");
    engine = env.start_engine();
    env.produce(&chunks[2]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    let config = env.config();
    env.wait_topic_committed(
        &config.kafka.prices_topic,
        lines_of(&prices).len() as i64,
        Duration::from_secs(60),
    );
    env.wait_topic_committed(
        &config.kafka.custodian_topic,
        lines_of(&custodian).len() as i64,
        Duration::from_secs(60),
    );

    let (lots, positions, _) = service_env::expected();
    let (stored_lots, stored_positions) = stored_state(&env);
    assert_eq!(stored_positions, positions, "positions equal book");
    assert_eq!(stored_lots, lots, "lots equal book");
    let (valuations, breaks, gaps) = expected();
    assert!(!breaks.is_empty() && !gaps.is_empty() && valuations.len() > 10);
    let (stored_valuations, stored_breaks, stored_gaps) = stored(&env);
    assert_eq!(stored_valuations, valuations, "valuations equal book");
    assert_eq!(stored_breaks, breaks, "breaks equal book");
    assert_eq!(stored_gaps, gaps, "sequence gaps equal book");
    let rejected: Vec<(String, i64)> = env.query(async |c| {
        c.query(
            "SELECT source_topic, count(*) FROM dead_letters WHERE source_topic = ANY($1) GROUP BY 1 ORDER BY 1",
            &[&vec![config.kafka.custodian_topic.clone(), config.kafka.prices_topic.clone()]],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    assert_eq!(
        rejected,
        vec![
            (config.kafka.custodian_topic.clone(), 3),
            (config.kafka.prices_topic.clone(), 3)
        ],
        "each rejected tick and statement is a dead letter, once"
    );

    // The topic eventually holds every committed break event once, and folds to the table.
    let stored_events: i64 = env.query(async |c| {
        c.query_one("SELECT count(*) FROM break_events", &[])
            .await
            .expect("count")
            .get(0)
    });
    let started = Instant::now();
    loop {
        let (folded, count) = fold_breaks_topic(&env);
        if count as i64 == stored_events {
            let open: BTreeSet<String> = folded.into_values().flatten().collect();
            assert_eq!(open, breaks, "break events fold to the breaks table");
            break;
        }
        assert!(count as i64 <= stored_events, "more events than committed");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {count} of {stored_events} break events published"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    verify_clean(&env);
    // The conflated valuations feed folds (latest per key; an empty value
    // removes) to the valuations table.
    let started = Instant::now();
    loop {
        let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
        kafka::read_topic(
            BROKERS,
            &config.kafka.valuations_topic,
            config.kafka.valuations_partitions,
            Duration::from_secs(15),
            |_, _, key, payload, _| {
                let key = String::from_utf8(key.expect("keyed").to_vec()).expect("utf8");
                let value = (!payload.is_empty()).then(|| {
                    let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
                    assert_eq!(v["position_key"].as_str(), Some(key.as_str()));
                    format!(
                        "{},{},{},{}",
                        key,
                        v["price"].as_str().unwrap(),
                        v["market_value"].as_str().unwrap(),
                        v["unrealized_pnl"].as_str().unwrap()
                    )
                });
                latest.insert(key, value);
            },
        )
        .expect("read valuations topic");
        let folded: BTreeSet<String> = latest.into_values().flatten().collect();
        if folded == valuations {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the valuations feed folds to {} rows, the table has {}",
            folded.len(),
            valuations.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A tampered table is caught.
    env.query(async |c| {
        c.execute("UPDATE breaks SET difference = difference + 1 WHERE position_key = (SELECT min(position_key) FROM breaks)", &[])
            .await
            .expect("tamper")
    });
    let out = env.command(&["verify"]).output().expect("verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("breaks") && text.contains("only in the table"),
        "{text}"
    );
    let metrics = http_get(env.http_port, "/metrics").expect("metrics");
    assert!(metrics.contains("deltabook_open_breaks"), "{metrics}");
    let _ = engine.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
