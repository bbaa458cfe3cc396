//! `deltabook book` as a user runs it: the input is read once whatever it
//! is (a pipe gives the same outputs as the file, for any worker count),
//! and bad arguments or input get a clear error instead of a panic, an
//! abort or a silent loss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn deltabook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deltabook"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deltabook-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "lots.csv",
        "positions.csv",
        "rejected.jsonl",
        "corrections.jsonl",
        "valuations.csv",
        "breaks.csv",
        "gaps.csv",
        "rejected_prices.jsonl",
        "rejected_custodian.jsonl",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            std::fs::read(dir.join(name)).expect("output file"),
        )
    })
    .collect()
}

fn book(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = deltabook()
        .arg("book")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run deltabook book");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write stdin");
    }
    child.wait_with_output().expect("deltabook book")
}

#[test]
fn a_pipe_gives_the_file_s_outputs_for_every_worker_count() {
    let dir = scratch("pipe");
    let lines = common::generated(3, 40, 20_000);
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    let file = dir.join("g.jsonl");
    std::fs::write(&file, &bytes).expect("input");
    let reference = dir.join("file-1");
    let out = book(
        &[
            "--trades",
            file.to_str().unwrap(),
            "--out",
            reference.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = outputs(&reference);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lines          20000"));
    for workers in ["2", "4"] {
        let piped = dir.join(format!("pipe-{workers}"));
        let out = book(
            &[
                "--trades",
                "/dev/stdin",
                "--workers",
                workers,
                "--out",
                piped.to_str().unwrap(),
            ],
            Some(&bytes),
        );
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{summary}");
        assert!(summary.contains("lines          20000"), "{summary}");
        assert_eq!(
            outputs(&piped),
            expected,
            "{workers} workers reading a pipe"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_and_input_get_clear_errors() {
    let dir = scratch("bad");
    let out_dir = dir.join("out");
    let out = out_dir.to_str().unwrap();
    for workers in ["0", "257", "100000", "18446744073709551615"] {
        let result = book(
            &["--trades", "/dev/null", "--workers", workers, "--out", out],
            None,
        );
        assert_eq!(
            result.status.code(),
            Some(2),
            "--workers {workers} is refused"
        );
        let message = String::from_utf8_lossy(&result.stderr);
        assert!(message.contains("--workers"), "{message}");
    }
    let result = book(&["--trades", "/tmp", "--out", out], None);
    assert!(!result.status.success());
    let message = String::from_utf8_lossy(&result.stderr);
    assert!(
        message.contains("/tmp") && message.contains("directory"),
        "{message}"
    );

    let methods = dir.join("m.json");
    std::fs::write(&methods, r#"{"ACC1":"LIFO","ACC1":"FIFO"}"#).expect("methods");
    let result = book(
        &[
            "--trades",
            "/dev/null",
            "--methods",
            methods.to_str().unwrap(),
            "--out",
            out,
        ],
        None,
    );
    assert!(!result.status.success(), "a repeated scope is refused");
    assert!(String::from_utf8_lossy(&result.stderr).contains("more than once"));

    // A line over the limit is rejected with its length, the others booked.
    let good = br#"{"trade_id":"T1","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"10","trade_date":"2026-01-02"}"#;
    let mut input = good.to_vec();
    input.push(b'\n');
    input.extend(std::iter::repeat_n(b'x', 5_000));
    input.push(b'\n');
    let result = book(
        &[
            "--trades",
            "/dev/stdin",
            "--max-line-bytes",
            "1000",
            "--out",
            out,
        ],
        Some(&input),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let rejected = std::fs::read_to_string(out_dir.join("rejected.jsonl")).expect("rejected");
    assert_eq!(
        rejected.trim(),
        r#"{"line":2,"reason":"not_json: event of 5000 bytes exceeds the limit of 1000 bytes"}"#
    );
    let positions = std::fs::read_to_string(out_dir.join("positions.csv")).expect("positions");
    assert!(positions.contains("A_B_S,1,1,10,0"), "{positions}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sample_with_ticks_and_statements_is_byte_identical_for_any_batch_size_and_workers() {
    let dir = scratch("sample");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let arg = |name: &str| data.join(name).to_str().unwrap().to_string();
    let (trades, methods, prices, custodian) = (
        arg("sample-trades.jsonl"),
        arg("sample-methods.json"),
        arg("sample-prices.jsonl"),
        arg("sample-custodian.jsonl"),
    );
    let mut first: Option<Vec<(String, Vec<u8>)>> = None;
    for (batch, workers) in [("1000", "1"), ("1", "2"), ("7", "3")] {
        let out_dir = dir.join(format!("b{batch}-w{workers}"));
        let out = book(
            &[
                "--trades",
                &trades,
                "--methods",
                &methods,
                "--prices",
                &prices,
                "--custodian",
                &custodian,
                "--batch-size",
                batch,
                "--workers",
                workers,
                "--out",
                out_dir.to_str().unwrap(),
            ],
            None,
        );
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{summary}");
        // corrections.jsonl carries engine timestamps (`as_of`), which
        // depend on the batch size by design; every other file must not.
        let files: Vec<(String, Vec<u8>)> = outputs(&out_dir)
            .into_iter()
            .filter(|(name, _)| name != "corrections.jsonl")
            .collect();
        match &first {
            None => {
                let text = |name: &str| {
                    String::from_utf8(files.iter().find(|(n, _)| n == name).unwrap().1.clone())
                        .unwrap()
                };
                // The sample exercises every break kind, valuations, gaps and both rejection files.
                let breaks = text("breaks.csv");
                for kind in ["QUANTITY_MISMATCH", "MISSING_INTERNAL", "MISSING_EXTERNAL"] {
                    assert!(breaks.contains(kind), "{kind} in {breaks}");
                }
                assert!(text("valuations.csv").lines().count() > 10);
                assert!(text("gaps.csv").lines().count() > 1);
                assert_eq!(text("rejected_prices.jsonl").lines().count(), 3);
                assert_eq!(text("rejected_custodian.jsonl").lines().count(), 3);
                first = Some(files);
            }
            Some(expected) => assert_eq!(&files, expected, "batch {batch}, workers {workers}"),
        }
    }
    // Without ticks and statements the five files are still written, with headers only.
    let bare = dir.join("bare");
    let out = book(
        &["--trades", &trades, "--out", bare.to_str().unwrap()],
        None,
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(bare.join("breaks.csv")).unwrap(),
        "position_key,as_of_date,kind,internal_quantity,custodian_quantity,difference\n"
    );
    assert_eq!(
        std::fs::read(bare.join("rejected_prices.jsonl")).unwrap(),
        b""
    );
    // A tolerance that is not a plain decimal is refused by the CLI.
    for bad in ["--tolerance=-1", "--tolerance=1.123456789", "--tolerance=x"] {
        let refused = book(
            &["--trades", &trades, bad, "--out", bare.to_str().unwrap()],
            None,
        );
        assert_eq!(refused.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--tolerance"),
            "{bad}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The columns `keep` (0-based) of a CSV text's lines, rejoined.
fn columns_of(csv: &str, keep: &[usize]) -> Vec<String> {
    csv.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            keep.iter()
                .map(|&i| fields[i])
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn query_answers_agree_with_the_written_files() {
    let dir = scratch("query");
    let out_dir = dir.join("out");
    let sample = |name: &str| format!("{}/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let (trades, methods, prices) = (
        sample("sample-trades.jsonl"),
        sample("sample-methods.json"),
        sample("sample-prices.jsonl"),
    );
    let run = |query: &str, out: Option<&Path>| {
        let mut args = vec![
            "--trades",
            &trades,
            "--methods",
            &methods,
            "--prices",
            &prices,
            "--workers",
            "3",
            "--batch-size",
            "77",
            "--query",
            query,
        ];
        if let Some(out) = out {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        let output = book(&args, None);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{query}: {stderr}");
        assert!(stderr.contains("lines          5000"), "{stderr}");
        String::from_utf8(output.stdout).expect("utf-8 answer")
    };
    let answer = run(
        "SELECT position_key, quantity, cost_basis FROM positions ORDER BY position_key",
        Some(&out_dir),
    );
    let positions = std::fs::read_to_string(out_dir.join("positions.csv")).expect("positions.csv");
    assert_eq!(
        answer.lines().collect::<Vec<_>>(),
        columns_of(&positions, &[0, 1, 3])
    );
    let valuations =
        std::fs::read_to_string(out_dir.join("valuations.csv")).expect("valuations.csv");
    let answer = run(
        "SELECT v.position_key, v.market_value FROM valuations v \
         JOIN positions p ON v.position_key = p.position_key ORDER BY 1",
        None,
    );
    assert_eq!(
        answer.lines().collect::<Vec<_>>(),
        columns_of(&valuations, &[0, 2])
    );
    let lots = std::fs::read_to_string(out_dir.join("lots.csv")).expect("lots.csv");
    let answer = run("SELECT COUNT(*) AS open_lots FROM lots", None);
    assert_eq!(answer, format!("open_lots\n{}\n", lots.lines().count() - 1));

    for (query, expected) in [
        (
            "SELECT side FROM lots WHERE side LIKE 'L%'",
            "is not supported (line 1, column 29)",
        ),
        ("SELECT * FROM breaks", "table breaks needs --custodian"),
        (
            "SELECT quantity / 0 FROM lots",
            "evaluation error(s); no answer printed",
        ),
    ] {
        let output = book(
            &["--trades", &trades, "--prices", &prices, "--query", query],
            None,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{query} succeeded");
        assert!(stderr.contains(expected), "{query}: {stderr}");
        assert!(output.stdout.is_empty(), "{query}: an answer was printed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two free loopback ports (bound, then released for the cluster).
fn free_ports() -> [u16; 2] {
    let listeners = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    listeners.map(|l| l.local_addr().expect("address").port())
}

#[test]
fn two_processes_of_two_workers_write_exactly_one_process_s_outputs() {
    let dir = scratch("cluster");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let arg = |name: &str| data.join(name).to_str().unwrap().to_string();
    let common = |out: &Path| -> Vec<String> {
        [
            "book",
            "--trades",
            &arg("sample-trades.jsonl"),
            "--methods",
            &arg("sample-methods.json"),
            "--prices",
            &arg("sample-prices.jsonl"),
            "--custodian",
            &arg("sample-custodian.jsonl"),
            "--batch-size",
            "5",
            "--workers",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let single = dir.join("single");
    let out = deltabook().args(common(&single)).output().expect("book");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let hosts = dir.join("hosts");
    let [a, b] = free_ports();
    std::fs::write(&hosts, format!("127.0.0.1:{a}\n127.0.0.1:{b}\n")).expect("hosts");
    let cluster = dir.join("cluster");
    let spawn = |process: &str| {
        deltabook()
            .args(common(&cluster))
            .args(["--hosts", hosts.to_str().unwrap(), "--process", process])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("book --process")
    };
    let second = spawn("1");
    let first = spawn("0");
    for (name, child) in [("process 0", first), ("process 1", second)] {
        let out = child.wait_with_output().expect("cluster process");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let expected = outputs(&single);
    assert!(expected
        .iter()
        .any(|(name, bytes)| name == "corrections.jsonl" && !bytes.is_empty()));
    assert_eq!(outputs(&cluster), expected, "2 processes x 2 workers");
    let _ = std::fs::remove_dir_all(&dir);
}
