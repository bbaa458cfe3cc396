//! Broker restart and PostgreSQL restart during load: nothing is lost or
//! duplicated, and the engine recovers by itself. One test in its own binary,
//! because it restarts the services every other test uses.

mod service_env;

use std::process::Command;
use std::time::Duration;

use service_env::*;

/// Stops the running broker (SIGTERM) and starts it again with the same
/// command line in the same directory, so it reopens the same storage. The
/// new broker outlives this test on purpose (other tests and runs use it).
#[allow(clippy::zombie_processes)]
fn restart_broker() {
    let out = Command::new("pgrep")
        .args(["-f", "tansu broker"])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
        .expect("a running tansu broker (scripts/services.sh)");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("broker cwd");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("broker cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let status = Command::new("kill").arg(&pid).status().expect("kill tansu");
    assert!(status.success(), "stopping tansu");
    for _ in 0..50 {
        if std::net::TcpStream::connect("127.0.0.1:9092").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cwd.join("tansu.log"))
        .expect("broker log");
    let child = Command::new(&args[0])
        .args(&args[1..])
        .current_dir(&cwd)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("restart tansu");
    let _ = std::fs::write(cwd.join("tansu.pid"), child.id().to_string());
    for _ in 0..100 {
        if std::net::TcpStream::connect("127.0.0.1:9092").is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("tansu did not come back");
}

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL cluster");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restarting PostgreSQL");
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
