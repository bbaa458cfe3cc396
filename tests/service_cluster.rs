//! `deltabook run` as a cluster: 2 processes x 2 workers on loopback
//! (timely's own networking), against real PostgreSQL and Apache Kafka
//! from `scripts/services.sh`. The outputs equal one process's (`deltabook
//! book`) exactly, across a kill -9 of one process in the middle of the
//! stream: every correction committed and published once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod service_env;

use std::path::Path;
use std::time::Duration;

use service_env::*;

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
            .arg(format!("cluster.process={process}"));
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
    env.produce(&chunks[1]);
    env.wait_committed(lines.len() as i64, Duration::from_secs(180));
    check_against_book(&env);
    verify_clean(&env);

    // A graceful stop of process 0 stops the whole cluster.
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
    let _ = std::fs::remove_dir_all(&dir);
}
