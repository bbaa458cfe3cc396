//! Live SQL queries against the running service (real PostgreSQL and
//! Apache Kafka from `scripts/services.sh`): a subscription attached
//! before the trades arrive follows them to the answer `book --query`
//! gives for the same file; `--once` prints a consistent snapshot; a client
//! that leaves is detached; a refused query names its construct.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use service_env::live::*;
use service_env::*;

const SQL: &str = "SELECT position_key, COUNT(*) AS lots, SUM(quantity) AS qty, \
                   SUM(quantity * price) AS cost FROM lots GROUP BY position_key";

/// `book --query` over the sample.
fn book_answer(sql: &str) -> BTreeMap<Vec<String>, i64> {
    book_answer_for(&sample(), sql)
}

#[test]
fn a_live_query_follows_the_stream_to_book_s_answer() {
    let env = Env::new("lq");
    let mut engine = env.start_engine();
    wait_ready(env.http_port, Duration::from_secs(60));
    let expected = book_answer(SQL);
    assert!(!expected.is_empty());

    // Subscribe before any trade arrives; the JSON lines are read as they come.
    let mut client = LiveClient::spawn(&env, SQL);
    wait_attached(env.http_port, 1);
    env.produce(&sample());
    env.wait_committed(sample_lines().len() as i64, Duration::from_secs(120));
    let progress = client.wait_for(&expected, Duration::from_secs(60));
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress marks increase: {progress:?}"
    );
    assert!(
        progress.len() >= 2,
        "a mark per closed timestamp: {progress:?}"
    );
    {
        let lines = client.lines.lock().unwrap();
        assert_eq!(
            lines[0]["columns"],
            serde_json::json!(["position_key", "lots", "qty", "cost"])
        );
    }

    // --once: the snapshot at one time, then the command ends.
    assert_eq!(service_answer(&env, SQL), Ok(expected), "the snapshot");

    // The client leaves: its dataflow is detached once the service next
    // writes to it (the next closed timestamp).
    client.kill();
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
    let mut client = LiveClient::spawn(&env, SQL);
    wait_attached(env.http_port, 1);
    engine.signal("TERM");
    let status = engine.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the service did not stop cleanly with a live query: {status:?}"
    );
    client.wait_end(Duration::from_secs(30));
}

fn bitemporal_trade(
    id: &str,
    version: u32,
    action: &str,
    side: &str,
    qty: &str,
    price: &str,
    date: &str,
) -> String {
    format!(
        r#"{{"trade_id":"{id}","version":{version},"action":"{action}","account_id":"BT","book_id":"B","security_id":"X","side":"{side}","quantity":"{qty}","price":"{price}","trade_date":"{date}"}}"#
    )
}

/// Writes `lines` as a file of the test's own.
fn write_lines(env: &Env, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("deltabook-{}-{name}.jsonl", env.name));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path
}

#[test]
fn as_known_at_and_as_of_date_from_memory_and_from_the_event_store() {
    let env = Env::new("bt");
    // AS OF DATE reads `trades`, which the service shares only when asked.
    let shared = "queries.tables=lots,positions,valuations,breaks,gaps,trades";
    let mut engine = EngineProcess::spawn(env.command(&["run", "--set", shared]));
    wait_ready(env.http_port, Duration::from_secs(60));
    // First the trades, then (after they are committed) a backdated
    // amendment of T1 and a backdated insert T4.
    let first = [
        bitemporal_trade("T0", 1, "NEW", "BUY", "1", "50", "2025-12-31"),
        bitemporal_trade("T1", 1, "NEW", "BUY", "10", "100", "2026-01-02"),
        bitemporal_trade("T2", 1, "NEW", "BUY", "10", "120", "2026-01-05"),
        bitemporal_trade("T3", 1, "NEW", "SELL", "5", "130", "2026-01-06"),
    ];
    let later = [
        bitemporal_trade("T1", 2, "AMEND", "BUY", "10", "90", "2026-01-02"),
        bitemporal_trade("T4", 1, "NEW", "BUY", "3", "95", "2026-01-03"),
    ];
    let first_file = write_lines(&env, "first", &first);
    let later_file = write_lines(&env, "later", &later);
    let all_file = write_lines(&env, "all", &[&first[..], &later[..]].concat());
    env.produce(&first_file);
    env.wait_committed(first.len() as i64, Duration::from_secs(120));
    // Every change of the first part is at or before the last correction's time.
    let known_at: i64 = env.query(async |c| {
        c.query_one("SELECT max(as_of) FROM corrections", &[])
            .await
            .expect("max as_of")
            .get(0)
    });
    env.produce(&later_file);
    env.wait_committed((first.len() + later.len()) as i64, Duration::from_secs(120));

    let positions = "SELECT * FROM positions";
    let dated = "SELECT * FROM positions AS OF DATE '2026-01-04'";
    let lots_dated = "SELECT lot_id, quantity, price FROM lots AS OF DATE '2026-01-04'";
    let cases = |env: &Env| {
        // Hand-computed in dataflows/tests/query_as_of.rs; here the
        // service must agree with `book` over the same events.
        let before =
            service_answer(env, &format!("{positions} AS KNOWN AT {known_at}")).expect("known at");
        assert_eq!(
            before,
            book_answer_for(&first_file, positions),
            "AS KNOWN AT {known_at}"
        );
        assert_eq!(
            before.keys().next().map(|r| r.join(",")),
            Some("BT_B_X,16,2,1800,200".to_string())
        );
        let now = service_answer(env, dated).expect("as of date");
        assert_eq!(now, book_answer_for(&all_file, dated));
        assert_eq!(
            now.keys().next().map(|r| r.join(",")),
            Some("BT_B_X,14,3,1235,0".to_string())
        );
        assert_eq!(
            service_answer(env, lots_dated).expect("lots as of date"),
            book_answer_for(&all_file, lots_dated)
        );
        let both = service_answer(env, &format!("{dated} AS KNOWN AT {known_at}")).expect("both");
        assert_eq!(both, book_answer_for(&first_file, dated));
        assert_eq!(
            both.keys().next().map(|r| r.join(",")),
            Some("BT_B_X,11,2,1050,0".to_string())
        );
    };
    // From memory: the traces keep the last queries.history_timestamps
    // (10,000) timestamps, so a table the event store cannot rebuild answers too.
    cases(&env);
    assert!(service_answer(
        &env,
        &format!("SELECT COUNT(*) FROM valuations AS KNOWN AT {known_at}")
    )
    .is_ok());

    // Restarted with no history kept: AS KNOWN AT comes from the event
    // store, and AS OF DATE reads the restored live trades whole.
    engine.signal("TERM");
    assert!(engine
        .wait_exit(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let mut engine = EngineProcess::spawn(env.command(&[
        "run",
        "--set",
        "queries.history_timestamps=0",
        "--set",
        shared,
    ]));
    wait_ready(env.http_port, Duration::from_secs(60));
    cases(&env);
    let refused = service_answer(
        &env,
        &format!("SELECT COUNT(*) FROM valuations AS KNOWN AT {known_at}"),
    )
    .expect_err("valuations are not in the event store");
    assert!(
        refused.contains("valuations cannot be rebuilt from the event store"),
        "{refused}"
    );
    engine.signal("TERM");
    assert!(engine
        .wait_exit(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    for file in [first_file, later_file, all_file] {
        let _ = std::fs::remove_file(file);
    }
}
