//! Live-query helpers of the service tests: `book --query` as the
//! reference answer, a `deltabook query` client read as it runs, and the
//! fold of its JSON lines into rows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{http_get, Env};

/// `book --query` over `file`: the answer's rows as lists of strings (the
/// subscription's row form), with their counts.
pub fn book_answer_for(file: &Path, sql: &str) -> BTreeMap<Vec<String>, i64> {
    let out = Command::new(env!("CARGO_BIN_EXE_deltabook"))
        .args(["book", "--trades", file.to_str().unwrap(), "--query", sql])
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
pub fn fold(lines: &[Value]) -> (BTreeMap<Vec<String>, i64>, Vec<u64>) {
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

/// The lines `deltabook query --once` prints, or its error output.
pub fn once_lines(env: &Env, sql: &str) -> Result<Vec<Value>, String> {
    let out = env
        .command(&["query", "--once", sql])
        .output()
        .expect("deltabook query");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect())
}

/// The snapshot `deltabook query --once` prints, checked to be one
/// snapshot: one progress mark, every row at the time before it.
pub fn service_answer(env: &Env, sql: &str) -> Result<BTreeMap<Vec<String>, i64>, String> {
    let lines = once_lines(env, sql)?;
    let (rows, progress) = fold(&lines);
    assert_eq!(progress.len(), 1, "{sql}: one progress mark: {lines:?}");
    let snapshot_time = progress[0] - 1;
    assert!(
        lines
            .iter()
            .filter_map(|l| l.get("time").and_then(Value::as_u64))
            .all(|t| t == snapshot_time),
        "{sql}: every snapshot row is at one time: {lines:?}"
    );
    Ok(rows)
}

/// `deltabook_queries_attached` from `/metrics`.
pub fn queries_attached(port: u16) -> Option<i64> {
    let body = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with("deltabook_queries_attached "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Waits until `/metrics` reports `n` attached queries.
pub fn wait_attached(port: u16, n: i64) {
    let started = Instant::now();
    while queries_attached(port) != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{n} queries never attached (now {:?})",
            queries_attached(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `deltabook query SQL` client whose JSON lines are collected as they
/// arrive.
pub struct LiveClient {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LiveClient {
    pub fn spawn(env: &Env, sql: &str) -> LiveClient {
        let mut child = env
            .command(&["query", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("deltabook query");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let reader = {
            let lines = Arc::clone(&lines);
            let stdout = child.stdout.take().expect("stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let value: Value = serde_json::from_str(&line).expect("a JSON line");
                    lines.lock().unwrap().push(value);
                }
            })
        };
        LiveClient {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The rows and progress marks folded so far.
    pub fn folded(&self) -> (BTreeMap<Vec<String>, i64>, Vec<u64>) {
        fold(&self.lines.lock().unwrap())
    }

    /// Waits until the folded rows equal `expected`; returns the progress
    /// marks seen by then.
    pub fn wait_for(&self, expected: &BTreeMap<Vec<String>, i64>, timeout: Duration) -> Vec<u64> {
        let started = Instant::now();
        loop {
            let (rows, progress) = self.folded();
            if rows == *expected {
                return progress;
            }
            assert!(
                started.elapsed() < timeout,
                "the live answer never reached book's: {} rows of {}",
                rows.len(),
                expected.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the client (it leaves) and waits for its reader.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the client");
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Waits for the client to end on its own.
    pub fn wait_end(&mut self, timeout: Duration) {
        let started = Instant::now();
        while self.child.try_wait().expect("client status").is_none() {
            assert!(
                started.elapsed() < timeout,
                "the client's stream did not end"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
