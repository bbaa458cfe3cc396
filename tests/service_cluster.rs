//! `deltabook run` as a cluster: 2 processes x 2 workers on loopback
//! (timely's own networking), against real PostgreSQL and Apache Kafka
//! from `scripts/services.sh`. The outputs equal one process's (`deltabook
//! book`) exactly, across a kill -9 of one process in the middle of the
//! stream: every correction committed and published once. Live queries
//! attach to every worker of both processes and answer as `book --query`
//! does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::path::Path;
use std::time::Duration;

use service_env::live::*;
use service_env::*;

/// Lots per position, added up on both processes.
const GROUPED: &str = "SELECT position_key, COUNT(*) AS lots, SUM(quantity) AS qty, \
                       SUM(quantity * price) AS cost FROM lots GROUP BY position_key";
/// Lots joined to their positions (the partial totals cross processes).
const JOINED: &str = "SELECT p.lot_count, COUNT(*) AS lots, SUM(l.quantity * l.price) AS cost \
                      FROM lots l JOIN positions p ON l.position_key = p.position_key \
                      GROUP BY p.lot_count";

/// Two free loopback ports (bound, then released for the cluster).
fn free_ports() -> [u16; 2] {
    let listeners = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    listeners.map(|l| l.local_addr().expect("address").port())
}

/// Starts process 1, then process 0 (the service), each logging to `dir`.
fn start_cluster(env: &Env, hosts: &Path, dir: &Path, round: usize) -> [EngineProcess; 2] {
    let start = |process: usize| {
        let mut command = env.command(&["run"]);
        command
            .arg("--set")
            .arg(format!("cluster.hosts_file={}", hosts.display()))
            .arg("--set")
            .arg(format!("cluster.process={process}"))
            // `trades` too: the restart snapshot then carries whole versions.
            .arg("--set")
            .arg("queries.tables=lots,positions,valuations,breaks,gaps,trades");
        EngineProcess::spawn_logged(command, &dir.join(format!("p{process}-{round}.log")))
    };
    let second = start(1);
    let first = start(0);
    [first, second]
}

#[test]
fn two_processes_of_two_workers_equal_one_process_across_a_kill_9() {
    let env = Env::new("cl");
    let lines = sample_lines();
    let (dir, chunks) = split_into_files(&env.name, &lines, 2);
    let hosts = dir.join("hosts");
    let [a, b] = free_ports();
    std::fs::write(&hosts, format!("127.0.0.1:{a}\n127.0.0.1:{b}\n")).expect("hosts file");

    let [mut first, mut second] = start_cluster(&env, &hosts, &dir, 1);
    wait_ready(env.http_port, Duration::from_secs(60));
    env.produce(&chunks[0]);
    std::thread::sleep(Duration::from_millis(500));
    // kill -9 the process that is not the writer, mid-stream: the other
    // cannot go on without its workers and exits; the cluster restarts.
    second.kill().expect("kill -9 process 1");
    let status = first.wait_exit(Duration::from_secs(60));
    if status.is_none() {
        first.kill().expect("kill -9 process 0");
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "process 0 must fail when process 1 dies (exit status {status:?}); logs in {}",
        dir.display()
    );

    let [mut first, mut second] = start_cluster(&env, &hosts, &dir, 2);
    wait_ready(env.http_port, Duration::from_secs(60));
    // Live queries attached to the restarted cluster: their snapshot holds
    // what the first round committed, then they follow the second part.
    let mut grouped = LiveClient::spawn(&env, GROUPED);
    wait_attached(env.http_port, 1);
    let mut joined = LiveClient::spawn(&env, JOINED);
    wait_attached(env.http_port, 2);
    env.produce(&chunks[1]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    verify_clean(&env);

    for (sql, client) in [(GROUPED, &grouped), (JOINED, &joined)] {
        let expected = book_answer_for(&sample(), sql);
        assert!(!expected.is_empty(), "{sql}");
        let progress = client.wait_for(&expected, Duration::from_secs(60));
        assert!(
            progress.windows(2).all(|w| w[0] < w[1]),
            "{sql}: progress marks increase: {progress:?}"
        );
        assert_eq!(
            service_answer(&env, sql),
            Ok(expected),
            "{sql}: the snapshot of a new subscription"
        );
    }
    // The live versions, restored on process 0 after the kill and
    // exchanged to their workers, then the second part's.
    let trades = "SELECT side, COUNT(*) AS n, SUM(quantity) AS qty FROM trades GROUP BY side";
    assert_eq!(
        service_answer(&env, trades),
        Ok(book_answer_for(&sample(), trades)),
        "{trades}"
    );
    // A client that leaves is detached once the engine next writes to it
    // (new timestamps, same state): worker 0 sends the detach to every
    // worker and applies it itself, so its attached count drops.
    grouped.kill();
    let started = std::time::Instant::now();
    while queries_attached(env.http_port) != Some(1) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the query stayed attached after its client left"
        );
        env.produce(&chunks[1]);
        std::thread::sleep(Duration::from_millis(300));
    }
    // AS KNOWN AT the last change: the traces of both processes held that
    // time for it.
    let known_at: i64 = env.query(async |c| {
        c.query_one("SELECT max(as_of) FROM corrections", &[])
            .await
            .expect("max as_of")
            .get(0)
    });
    let positions = "SELECT * FROM positions";
    assert_eq!(
        service_answer(&env, &format!("{positions} AS KNOWN AT {known_at}")),
        Ok(book_answer_for(&sample(), positions)),
        "AS KNOWN AT {known_at}"
    );
    let log = std::fs::read_to_string(dir.join("p0-2.log")).expect("process 0's log");
    assert!(
        log.contains("live query attached") && !log.contains("from the event store"),
        "AS KNOWN AT {known_at} is answered from the traces in memory; logs in {}",
        dir.display()
    );

    // A graceful stop of process 0 stops the whole cluster, with a live
    // query attached.
    first.signal("TERM");
    assert!(
        first
            .wait_exit(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "process 0 stops cleanly; logs in {}",
        dir.display()
    );
    assert!(
        second
            .wait_exit(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "process 1 stops with it; logs in {}",
        dir.display()
    );
    // The remaining subscriber's stream ends with the cluster.
    joined.wait_end(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
