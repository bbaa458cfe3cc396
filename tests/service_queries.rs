//! Live SQL queries against the running service (real PostgreSQL and
//! Apache Kafka from `scripts/services.sh`): a subscription attached
//! before the trades arrive follows them to the answer `book --query`
//! gives for the same file; `--once` prints a consistent snapshot; a client
//! that leaves is detached; a refused query names its construct.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use service_env::*;

const SQL: &str = "SELECT position_key, COUNT(*) AS lots, SUM(quantity) AS qty, \
                   SUM(quantity * price) AS cost FROM lots GROUP BY position_key";

/// `book --query` over the sample: the answer's rows as JSON arrays of
/// strings (the subscription's row form).
fn book_answer(sql: &str) -> BTreeMap<Vec<String>, i64> {
    let out = Command::new(env!("CARGO_BIN_EXE_deltabook"))
        .args([
            "book",
            "--trades",
            sample().to_str().unwrap(),
            "--query",
            sql,
        ])
        .output()
        .expect("book --query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut rows = BTreeMap::new();
    for line in text.lines().skip(1) {
        let row: Vec<String> = line.split(',').map(str::to_string).collect();
        *rows.entry(row).or_insert(0) += 1;
    }
    rows
}

/// Folds subscription lines into rows with their counts; also returns the
/// progress marks seen.
fn fold(lines: &[Value]) -> (BTreeMap<Vec<String>, i64>, Vec<u64>) {
    let mut rows = BTreeMap::new();
    let mut progress = Vec::new();
    for line in lines {
        if let Some(row) = line.get("row").and_then(Value::as_array) {
            let row: Vec<String> = row
                .iter()
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .collect();
            let count = rows.entry(row.clone()).or_insert(0);
            *count += line["diff"].as_i64().expect("diff");
            if *count == 0 {
                rows.remove(&row);
            }
        }
        if let Some(t) = line.get("progress").and_then(Value::as_u64) {
            progress.push(t);
        }
    }
    (rows, progress)
}

fn queries_attached(port: u16) -> Option<i64> {
    let body = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with("deltabook_queries_attached "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Waits until `/metrics` reports `n` attached queries.
fn wait_attached(port: u16, n: i64) {
    let started = Instant::now();
    while queries_attached(port) != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} queries never attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_live_query_follows_the_stream_to_book_s_answer() {
    let env = Env::new("lq");
    let mut engine = env.start_engine();
    wait_ready(env.http_port, Duration::from_secs(60));
    let expected = book_answer(SQL);
    assert!(!expected.is_empty());

    // Subscribe before any trade arrives; the JSON lines are read as they come.
    let mut client = env
        .command(&["query", SQL])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deltabook query");
    let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
    let reader = {
        let lines = Arc::clone(&lines);
        let stdout = client.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).expect("a JSON line");
                lines.lock().unwrap().push(value);
            }
        })
    };
    wait_attached(env.http_port, 1);
    env.produce(&sample());
    env.wait_committed(sample_lines().len() as i64, Duration::from_secs(120));
    let started = Instant::now();
    loop {
        let (rows, progress) = fold(&lines.lock().unwrap());
        if rows == expected {
            assert!(
                progress.windows(2).all(|w| w[0] < w[1]),
                "progress marks increase: {progress:?}"
            );
            assert!(
                progress.len() >= 2,
                "a mark per closed timestamp: {progress:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the live answer never reached book's: {} rows of {}",
            rows.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    {
        let lines = lines.lock().unwrap();
        assert_eq!(
            lines[0]["columns"],
            serde_json::json!(["position_key", "lots", "qty", "cost"])
        );
    }

    // --once: the snapshot at one time, then the command ends.
    let once = env
        .command(&["query", "--once", SQL])
        .output()
        .expect("deltabook query --once");
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let once: Vec<Value> = String::from_utf8(once.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let (rows, progress) = fold(&once);
    assert_eq!(rows, expected, "the snapshot");
    assert_eq!(progress.len(), 1, "one progress mark ends the snapshot");
    let snapshot_time = progress[0] - 1;
    assert!(
        once.iter()
            .filter_map(|l| l.get("time").and_then(Value::as_u64))
            .all(|t| t == snapshot_time),
        "every snapshot row is at one time"
    );

    // The client leaves: its dataflow is detached once the service next
    // writes to it (the next closed timestamp).
    client.kill().expect("kill the client");
    let _ = client.wait();
    let _ = reader.join();
    let started = Instant::now();
    while queries_attached(env.http_port) != Some(0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the query stayed attached after its client left"
        );
        env.produce(&sample()); // duplicates: new timestamps, same state
        std::thread::sleep(Duration::from_millis(300));
    }

    // A refused query names the construct and where it is.
    let refused = env
        .command(&["query", "SELECT DISTINCT side FROM lots"])
        .output()
        .expect("deltabook query");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("DISTINCT is not supported (line 1, column 1)"),
        "{stderr}"
    );

    // A graceful stop with a subscriber attached: the query's dataflow
    // ends with the service, and so does the client's stream.
    let mut client = env
        .command(&["query", SQL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("deltabook query");
    wait_attached(env.http_port, 1);
    engine.signal("TERM");
    let status = engine.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the service did not stop cleanly with a live query: {status:?}"
    );
    let started = Instant::now();
    while client.try_wait().expect("client status").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the client's stream did not end with the service"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
