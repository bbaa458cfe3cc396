//! Shared by the service tests: per-test topics and database, the engine as
//! a child process, and the checks against `deltabook book`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;
pub mod live;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deltabook::kafka;
use deltabook_dataflows::runner::RunOptions;

pub const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
pub const BROKERS: &str = "127.0.0.1:9092";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn reachable(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Topics, database and settings of one test; the database is dropped at the end.
pub struct Env {
    pub name: String,
    pub db: String,
    pub http_port: u16,
    /// `engine.workers` of the engines this test starts (2 unless changed).
    pub workers: usize,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        assert!(
            reachable(5432),
            "PostgreSQL is not reachable on 127.0.0.1:5432: run scripts/services.sh"
        );
        assert!(
            reachable(9092),
            "Apache Kafka is not reachable on 127.0.0.1:9092: run scripts/services.sh"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{tag}{}x{}", std::process::id(), nanos % 1_000_000_000);
        let db = format!("deltabook_svc_{name}");
        runtime().block_on(async {
            let admin = deltabook_sinks::postgres::connect(ADMIN_URL)
                .await
                .expect("connect admin");
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .expect("create database");
        });
        // Below Linux's ephemeral range (32768-60999), where a client's
        // outgoing connection could hold the port already.
        let http_port = 20_000 + (nanos % 12_000) as u16;
        Env {
            name,
            db,
            http_port,
            workers: 2,
        }
    }

    pub fn sets(&self) -> Vec<String> {
        let n = &self.name;
        vec![
            format!("kafka.trades_topic=trades-{n}"),
            format!("kafka.methods_topic=methods-{n}"),
            format!("kafka.corrections_topic=corrections-{n}"),
            format!("kafka.dlq_topic=dlq-{n}"),
            format!("kafka.prices_topic=prices-{n}"),
            format!("kafka.custodian_topic=custodian-{n}"),
            format!("kafka.breaks_topic=breaks-{n}"),
            format!("kafka.valuations_topic=valuations-{n}"),
            "publisher.valuation_interval_ms=200".into(),
            "kafka.trades_partitions=4".into(),
            "kafka.corrections_partitions=4".into(),
            "kafka.batch_max_messages=500".into(),
            format!("engine.workers={}", self.workers),
            format!(
                "postgres.url=host=127.0.0.1 port=5432 user=postgres dbname={}",
                self.db
            ),
            format!("http.listen=127.0.0.1:{}", self.http_port),
            "retry.max_backoff_ms=500".into(),
        ]
    }

    pub fn config(&self) -> deltabook::config::Config {
        deltabook::config::Config::load(None, &self.sets()).expect("config")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deltabook"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(args);
        for set in self.sets() {
            cmd.arg("--set").arg(set);
        }
        cmd
    }

    pub fn start_engine(&self) -> EngineProcess {
        EngineProcess::spawn(self.command(&["run"]))
    }

    pub fn produce(&self, file: &Path) {
        let status = self
            .command(&["produce", "--trades", file.to_str().expect("path")])
            .stderr(Stdio::null())
            .status()
            .expect("produce");
        assert!(status.success(), "deltabook produce failed");
    }

    pub fn query<T>(&self, f: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
        runtime().block_on(async {
            let client = deltabook_sinks::postgres::connect(&format!(
                "host=127.0.0.1 port=5432 user=postgres dbname={}",
                self.db
            ))
            .await
            .expect("connect test database");
            f(&client).await
        })
    }

    /// Waits until the committed offsets cover `lines` trade events.
    pub fn wait_committed(&self, lines: i64, timeout: Duration) {
        self.wait_topic_committed(&self.config().kafka.trades_topic, lines, timeout);
    }

    /// Waits until the committed offsets of `topic`'s partitions sum to `lines`.
    pub fn wait_topic_committed(&self, topic: &str, lines: i64, timeout: Duration) {
        let started = Instant::now();
        loop {
            let done: i64 = self.query(async |c| {
                let exists: bool = c
                    .query_one("SELECT to_regclass('sink_progress') IS NOT NULL", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(false);
                if !exists {
                    return 0;
                }
                c.query_one(
                    "SELECT coalesce(sum(next_offset), 0)::int8 FROM sink_progress WHERE source_topic = $1",
                    &[&topic],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0)
            });
            if done >= lines {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "only {done} of {lines} messages of {topic} committed after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let db = self.db.clone();
        let _ = std::thread::spawn(move || {
            runtime().block_on(async {
                if let Ok(admin) = deltabook_sinks::postgres::connect(ADMIN_URL).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// A `deltabook run` child process, killed (SIGKILL) when dropped, so a
/// failing test leaves no engine behind.
pub struct EngineProcess {
    child: Child,
}

impl EngineProcess {
    /// Starts `command` with its output discarded.
    pub fn spawn(mut command: Command) -> EngineProcess {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start deltabook run");
        EngineProcess { child }
    }

    /// Starts `command` with its log (stderr) appended to `log`.
    pub fn spawn_logged(mut command: Command, log: &Path) -> EngineProcess {
        let file = std::fs::File::create(log).expect("engine log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start deltabook run");
        EngineProcess { child }
    }

    /// kill -9, and reap it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

/// GET `path` on 127.0.0.1:`port`; the whole response, or None if nobody answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_request(port, &format!("GET {path}"))
}

/// Sends `METHOD path` (HTTP/1.1, connection: close) to 127.0.0.1:`port`;
/// the whole response, or None if nobody answers within 5 s.
pub fn http_request(port: u16, method_and_path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("{method_and_path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Waits until `GET /ready` on `port` answers 200.
pub fn wait_ready(port: u16, timeout: Duration) {
    let started = Instant::now();
    loop {
        if http_get(port, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the engine on port {port} was not ready after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Restarts the machine's PostgreSQL cluster (every connection is dropped,
/// and with them every session's advisory locks).
pub fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL cluster");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restarting PostgreSQL");
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `lines` as `parts` consecutive .jsonl files under a fresh temp
/// directory; returns (directory, files).
pub fn split_into_files(name: &str, lines: &[Vec<u8>], parts: usize) -> (PathBuf, Vec<PathBuf>) {
    let dir = std::env::temp_dir().join(format!("deltabook-{name}"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let files = lines
        .chunks(lines.len().div_ceil(parts.max(1)).max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let path = dir.join(format!("part{i}.jsonl"));
            let mut bytes = chunk.join(&b'\n');
            bytes.push(b'\n');
            std::fs::write(&path, bytes).expect("write part");
            path
        })
        .collect();
    (dir, files)
}

pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-trades.jsonl")
}

pub fn sample_lines() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(sample()).expect("sample");
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|b| *b == b'\n').map(|l| l.to_vec()).collect()
}

/// What `deltabook book` makes of the sample, as rows.
pub fn expected() -> (BTreeSet<String>, BTreeSet<String>, usize) {
    let lines = sample_lines();
    let outcome = deltabook_dataflows::runner::run(
        std::sync::Arc::new(lines),
        &RunOptions::new(Vec::new(), 1000, 1),
        None,
    )
    .expect("book");
    let state = common::final_state(&outcome);
    let lots = state
        .lots
        .iter()
        .map(deltabook::verify::render_lot)
        .collect();
    let positions = state
        .positions
        .iter()
        .map(deltabook::verify::render_position)
        .collect();
    (lots, positions, outcome.rejected.len())
}

pub fn stored_state(env: &Env) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut rows = env.query(async |c| deltabook::verify::stored_rows(c).await.expect("tables"));
    (
        rows.remove("lots").unwrap_or_default(),
        rows.remove("positions").unwrap_or_default(),
    )
}

/// numeric text as the spec writes decimals.
pub fn normalise(text: &str) -> String {
    text.parse::<deltabook_dataflows::decimal::Amount>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// Reads the corrections topic: checks exactly-once per (position_key, as_of)
/// and as_of order per position; returns the folded final positions and the count.
pub fn fold_topic(env: &Env) -> (BTreeMap<String, String>, usize) {
    let config = env.config();
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut last_as_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut after: BTreeMap<String, String> = BTreeMap::new();
    let count = kafka::read_topic(
        BROKERS,
        &config.kafka.corrections_topic,
        config.kafka.corrections_partitions,
        Duration::from_secs(15),
        |_, _, key, payload, id| {
            assert!(id.is_some(), "every message carries its outbox id");
            let event: serde_json::Value =
                serde_json::from_slice(payload).expect("correction json");
            let position = event["position_key"]
                .as_str()
                .expect("position_key")
                .to_string();
            assert_eq!(
                key,
                Some(position.as_bytes()),
                "message key is the position key"
            );
            let as_of = event["as_of"].as_u64().expect("as_of");
            assert!(
                seen.insert((position.clone(), as_of)),
                "({position}, {as_of}) published twice"
            );
            let previous = last_as_of.insert(position.clone(), as_of).unwrap_or(0);
            assert!(
                as_of > previous,
                "{position}: as_of {as_of} after {previous}"
            );
            let a = &event["after"];
            after.insert(
                position,
                format!(
                    "{},{},{},{}",
                    a["quantity"].as_str().unwrap_or(""),
                    a["lot_count"],
                    a["cost_basis"].as_str().unwrap_or(""),
                    a["realized_pnl"].as_str().unwrap_or("")
                ),
            );
        },
    )
    .expect("read corrections topic");
    (after, count as usize)
}

pub fn check_against_book(env: &Env) {
    let (lots, positions, rejected) = expected();
    let (stored_lots, stored_positions) = stored_state(env);
    assert_eq!(stored_lots, lots, "lots in PostgreSQL equal deltabook book");
    assert_eq!(
        stored_positions, positions,
        "positions in PostgreSQL equal deltabook book"
    );
    let (stored_corrections, stored_dead): (i64, i64) = env.query(async |c| {
        let a = c
            .query_one("SELECT count(*) FROM corrections", &[])
            .await
            .expect("count")
            .get(0);
        let b = c
            .query_one("SELECT count(*) FROM dead_letters", &[])
            .await
            .expect("count")
            .get(0);
        (a, b)
    });
    assert_eq!(
        stored_dead as usize, rejected,
        "every rejected line is a dead letter, once"
    );
    // The topic eventually holds every committed correction exactly once.
    let started = Instant::now();
    loop {
        let (folded, count) = fold_topic(env);
        if count as i64 == stored_corrections {
            let from_book: BTreeMap<String, String> = positions
                .iter()
                .map(|row| {
                    let (key, rest) = row.split_once(',').expect("row");
                    let parts: Vec<&str> = rest.split(',').collect();
                    (
                        key.to_string(),
                        format!("{},{},{},{}", parts[0], parts[1], parts[2], parts[3]),
                    )
                })
                .collect();
            for (key, state) in &from_book {
                assert_eq!(folded.get(key), Some(state), "folded topic state of {key}");
            }
            break;
        }
        assert!(
            count as i64 <= stored_corrections,
            "more messages ({count}) than committed corrections ({stored_corrections})"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {count} of {stored_corrections} corrections published"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The DLQ topic eventually holds every dead letter exactly once (its
    // publisher runs on its own; never more messages than rows).
    let config = env.config();
    let started = Instant::now();
    loop {
        let mut ids = BTreeSet::new();
        let dlq = kafka::read_topic(
            BROKERS,
            &config.kafka.dlq_topic,
            config.kafka.dlq_partitions,
            Duration::from_secs(15),
            |_, _, _, _, id| {
                assert!(
                    ids.insert(id.expect("every DLQ message carries its outbox id")),
                    "a dead letter published twice"
                );
            },
        )
        .expect("read dlq");
        assert!(
            dlq as i64 <= stored_dead,
            "more DLQ messages ({dlq}) than dead letters ({stored_dead})"
        );
        if dlq as i64 == stored_dead {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {dlq} of {stored_dead} dead letters published"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `deltabook verify` on the test's database: it must exit 0 and say clean.
pub fn verify_clean(env: &Env) {
    let out = env.command(&["verify"]).output().expect("deltabook verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("verify: clean"),
        "verify: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
