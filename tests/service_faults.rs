//! Broker restart and PostgreSQL restart during load: nothing is lost or
//! duplicated, and the engine recovers by itself. One test in its own binary,
//! because it restarts the services every other test uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::process::Command;
use std::time::Duration;

use service_env::*;

/// Restarts the Apache Kafka broker in place (SIGTERM, then the same
/// command, data and port) with `scripts/services.sh restart-kafka`. The new
/// broker outlives this test on purpose (other tests and runs use it).
fn restart_broker() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("restart-kafka")
        .status()
        .expect("scripts/services.sh restart-kafka");
    assert!(status.success(), "restarting Kafka");
}

#[test]
fn broker_and_postgres_restarts_during_load_lose_nothing() {
    let env = Env::new("fx");
    let lines = sample_lines();
    let (dir, chunk_paths) = split_into_files(&env.name, &lines, 3);
    let mut engine = env.start_engine();
    env.produce(&chunk_paths[0]);
    std::thread::sleep(Duration::from_millis(500));
    restart_broker();
    env.produce(&chunk_paths[1]);
    std::thread::sleep(Duration::from_millis(300));
    restart_postgres();
    env.produce(&chunk_paths[2]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    let _ = engine.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
