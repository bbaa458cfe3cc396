//! One writer, enforced at every commit: a PostgreSQL restart drops the
//! first instance's session lock, a second instance takes over, and the
//! first one (a zombie, paused while it happened) must not commit or
//! publish anything afterwards. In its own binary because it restarts the
//! PostgreSQL that every other test uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::time::{Duration, Instant};

use service_env::*;

#[test]
fn a_zombie_writer_is_fenced_after_a_postgres_restart_and_the_topic_stays_exactly_once() {
    let env = Env::new("fe");
    let lines = sample_lines();
    let (dir, parts) = split_into_files(&env.name, &lines, 3);
    let log_a = dir.join("a.log");
    let mut a = EngineProcess::spawn_logged(env.command(&["run"]), &log_a);
    wait_ready(env.http_port, Duration::from_secs(60));
    let port_b = env.http_port + 1;
    let mut command = env.command(&["run"]);
    command
        .arg("--set")
        .arg(format!("http.listen=127.0.0.1:{port_b}"));
    let mut b = EngineProcess::spawn_logged(command, &dir.join("b.log"));
    env.produce(&parts[0]);
    let first = lines.len().div_ceil(3) as i64;
    env.wait_committed(first, Duration::from_secs(120));
    let waiting = http_get(port_b, "/ready").expect("the second instance answers HTTP");
    assert!(
        waiting.starts_with("HTTP/1.1 503"),
        "the second instance waits for the lock: {waiting}"
    );

    // A pauses (a GC pause, a stalled VM); PostgreSQL restarts and drops A's
    // lock; B takes over while A cannot react.
    a.signal("STOP");
    restart_postgres();
    wait_ready(port_b, Duration::from_secs(60));
    env.produce(&parts[1]);
    a.signal("CONT");
    env.produce(&parts[2]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));

    // A found out and stopped, saying why.
    let status = a
        .wait_exit(Duration::from_secs(60))
        .expect("the fenced instance exits by itself");
    assert!(!status.success(), "a fenced instance exits with an error");
    let log = std::fs::read_to_string(&log_a).expect("log of A");
    assert!(log.contains("fenced"), "A says it was fenced:\n{log}");

    // No timestamp was committed twice, and once B's epoch committed, A's never did again.
    let commits: Vec<(i64, i64)> = env.query(async |c| {
        c.query(
            "SELECT engine_time, writer_epoch FROM committed_timestamps ORDER BY engine_time",
            &[],
        )
        .await
        .expect("commit log")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    assert!(commits.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        commits.windows(2).all(|w| w[0].1 <= w[1].1),
        "writer epochs never go back: {commits:?}"
    );
    let epochs: std::collections::BTreeSet<i64> = commits.iter().map(|(_, e)| *e).collect();
    assert_eq!(epochs.len(), 2, "A's epoch, then B's: {epochs:?}");

    // The state equals `deltabook book`, and the topic holds every
    // correction exactly once.
    check_against_book(&env);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = b.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
