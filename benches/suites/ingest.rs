//! Ingest benchmark: a generated file through the whole engine (`book`
//! without writing outputs), against two baselines run in the same process:
//! parsing alone, and a single-threaded batch replay (gate, highest version,
//! sort each position, book it once). Each run reports the CPU it spent
//! (every thread, user and system), the cores it kept busy and its CPU per
//! line: on two cores `N` lines/s needs at most `2 / N` CPU-seconds a line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use deltabook_dataflows::booking::reference;
use deltabook_dataflows::gate::{parse_event, Admission, DuplicateRule};
use deltabook_dataflows::runner::{self, RunOptions};
use deltabook_dataflows::trade::{BookedTrade, LotMethod};

use super::alloc;
use super::cpu::{CpuUse, RunClock};
use deltabook::book_file::JsonlFile;
use deltabook::generate::{generate, GenerateConfig};

/// One ingest measurement.
#[derive(Clone, Debug)]
pub struct IngestResult {
    /// What was run.
    pub label: String,
    /// Lines in the input.
    pub lines: u64,
    /// Live (booked) trades at the end.
    pub live_trades: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Peak heap bytes during the run, above what was live before it.
    pub peak_bytes: u64,
    /// Heap bytes held at the end of ingest (engine state plus captured final rows).
    pub end_bytes: u64,
    /// Peak resident set of the whole process (`/usr/bin/time`'s maximum
    /// RSS), measured only for runs of the shipped binary in a process of
    /// their own (in-process runs share a heap with earlier runs); 0 when
    /// not measured.
    pub peak_rss_bytes: u64,
    /// CPU the run spent (every thread of its process, user and system)
    /// and the minor page faults it took; `None` where not measured (the
    /// DuckDB peer reports its query's wall time only).
    pub cpu: Option<CpuUse>,
}

impl IngestResult {
    /// Lines per second.
    pub fn lines_per_second(&self) -> f64 {
        self.lines as f64 / self.seconds
    }

    /// Cores kept busy on average: CPU seconds over wall seconds.
    pub fn cores_used(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu.cpu_seconds() / self.seconds)
    }

    /// CPU microseconds a line (user and system, every thread).
    pub fn cpu_us_per_line(&self) -> Option<f64> {
        self.cpu
            .filter(|_| self.lines > 0)
            .map(|cpu| cpu.cpu_seconds() * 1e6 / self.lines as f64)
    }
}

/// Writes a generated stream to `dir/name` unless it is already there.
pub fn ensure_input(dir: &Path, seed: u64, positions: usize, trades: usize) -> Result<PathBuf> {
    let path = dir.join(format!("bench-{seed}-{positions}p-{trades}t.jsonl"));
    if !path.exists() {
        let config = GenerateConfig::new(seed, positions, trades);
        let mut out = BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        generate(&config, &mut out)?;
        out.flush()?;
    }
    Ok(path)
}

/// Runs the engine over `path`.
pub fn engine_run(
    path: &Path,
    batch_size: usize,
    workers: usize,
    label: &str,
) -> Result<IngestResult> {
    let source = Arc::new(JsonlFile::open(path)?);
    let before = alloc::live_bytes();
    alloc::reset_peak();
    let mut options = RunOptions::new(Vec::new(), batch_size, workers);
    options.keep_corrections = false;
    options.probe_at_end = Some(alloc::live_bytes);
    let clock = RunClock::start()?;
    let outcome = runner::run(source, &options, None)?;
    let (seconds, cpu) = clock.read()?;
    let peak = alloc::peak_bytes().saturating_sub(before);
    let end = outcome.probe_at_end.unwrap_or(0).saturating_sub(before);
    // `live_trades` is filled in by the caller from the replay of the same input.
    Ok(IngestResult {
        label: label.to_string(),
        lines: outcome.lines,
        live_trades: 0,
        seconds,
        peak_bytes: peak,
        end_bytes: end,
        peak_rss_bytes: 0,
        cpu: Some(cpu),
    })
}

/// The shipped `deltabook` binary (the engine's allocator, not counting)
/// booking `path` in a process of its own under `/usr/bin/time`: wall
/// seconds, peak RSS, CPU and page faults. `None` (with a note) when `/usr/bin/time` is missing.
pub fn shipped_binary_run(path: &Path, workers: usize, label: &str) -> Option<IngestResult> {
    let out = std::env::temp_dir().join(format!("deltabook-ingest-{}", std::process::id()));
    let result = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M %e %U %S %R"])
        .arg(env!("CARGO_BIN_EXE_deltabook"))
        .arg("book")
        .arg("--trades")
        .arg(path)
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "10000", "--workers", &workers.to_string()])
        .output();
    let _ = std::fs::remove_dir_all(&out);
    let output = match result {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "ingest: shipped-binary run failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("ingest: shipped-binary run skipped: /usr/bin/time: {e}");
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last()?;
    let mut parts = last.split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    let cpu = CpuUse {
        user_seconds: parts.next()?.parse().ok()?,
        system_seconds: parts.next()?.parse().ok()?,
        minor_faults: parts.next()?.parse().ok()?,
    };
    let lines = stderr
        .lines()
        .find_map(|l| l.strip_prefix("lines"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some(IngestResult {
        label: label.to_string(),
        lines,
        live_trades: 0,
        seconds,
        peak_bytes: 0,
        end_bytes: 0,
        peak_rss_bytes: kib * 1024,
        cpu: Some(cpu),
    })
}

/// Baseline: parse every line, nothing else.
pub fn parse_only(path: &Path) -> Result<IngestResult> {
    let clock = RunClock::start()?;
    let mut lines = 0u64;
    let mut ok = 0u64;
    for line in BufReader::with_capacity(1 << 20, std::fs::File::open(path)?).split(b'\n') {
        lines += 1;
        if parse_event(&line?).is_ok() {
            ok += 1;
        }
    }
    std::hint::black_box(ok);
    let (seconds, cpu) = clock.read()?;
    Ok(IngestResult {
        label: "baseline: parse only".into(),
        lines,
        live_trades: 0,
        seconds,
        cpu: Some(cpu),
        peak_bytes: 0,
        end_bytes: 0,
        peak_rss_bytes: 0,
    })
}

/// Baseline: single-threaded batch replay of the whole file (what a
/// non-incremental system does once per backdated trade). Also returns the
/// number of live booked trades.
pub fn batch_replay(path: &Path) -> Result<IngestResult> {
    let before = alloc::live_bytes();
    alloc::reset_peak();
    let clock = RunClock::start()?;
    let mut gate = DuplicateRule::new();
    let mut live: HashMap<
        deltabook_dataflows::id::Id,
        (u64, Option<(deltabook_dataflows::id::Id, BookedTrade)>),
    > = HashMap::new();
    let mut lines = 0u64;
    for line in BufReader::with_capacity(1 << 20, std::fs::File::open(path)?).split(b'\n') {
        lines += 1;
        if let Admission::Accepted(v) = gate.admit(&line?) {
            if live
                .get(&v.trade_id)
                .is_none_or(|(version, _)| *version < v.version)
            {
                let booked = v.booked().map(|b| (v.position_key(), b));
                live.insert(v.trade_id.clone(), (v.version, booked));
            }
        }
    }
    let mut by_position: HashMap<deltabook_dataflows::id::Id, Vec<BookedTrade>> = HashMap::new();
    let mut live_trades = 0u64;
    for (_, (_, booked)) in live {
        if let Some((position, trade)) = booked {
            live_trades += 1;
            by_position.entry(position).or_default().push(trade);
        }
    }
    let mut lots = 0usize;
    for trades in by_position.values() {
        lots += reference::book(LotMethod::Fifo, trades)
            .map(|b| b.lots.len())
            .unwrap_or(0);
    }
    std::hint::black_box(lots);
    let (seconds, cpu) = clock.read()?;
    Ok(IngestResult {
        label: "baseline: single-threaded batch replay".into(),
        lines,
        live_trades,
        seconds,
        cpu: Some(cpu),
        peak_bytes: alloc::peak_bytes().saturating_sub(before),
        end_bytes: 0,
        peak_rss_bytes: 0,
    })
}

/// Peer: DuckDB's positions query over the same file (a batch answer with
/// no lots, no P&L and no exact gate), run by `benches/peers/duckdb_positions.py`
/// with 2 threads. `None` (with a note on stderr) when Python or the
/// `duckdb` package is missing.
pub fn duckdb_peer(path: &Path) -> Option<IngestResult> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/duckdb_positions.py");
    let mut command = std::process::Command::new("python3");
    let output = deltabook::allocator::with_system_huge_pages(&mut command)
        .arg(&script)
        .arg(path)
        .args(["--threads", "2"])
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "ingest: DuckDB peer skipped: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("ingest: DuckDB peer skipped: python3: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.split_whitespace();
    let lines: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(IngestResult {
        label: "peer: DuckDB 2.0, positions only (2 threads)".into(),
        lines,
        live_trades: 0,
        seconds,
        peak_bytes: 0,
        end_bytes: 0,
        peak_rss_bytes: 0,
        cpu: None,
    })
}

/// Runs the ingest suite and prints a markdown table.
pub fn run_suite(dir: &Path, trades: usize) -> Result<Vec<IngestResult>> {
    // Batch runs, as `book` runs them; the peer keeps the system's setting.
    let huge_pages = deltabook::allocator::disable_huge_pages();
    eprintln!("ingest: transparent huge pages: {huge_pages:?}");
    let results = run_groups(dir, trades);
    if huge_pages == deltabook::allocator::HugePages::Disabled {
        deltabook::allocator::enable_huge_pages();
    }
    let results = results?;
    print_table(&results);
    Ok(results)
}

fn run_groups(dir: &Path, trades: usize) -> Result<Vec<IngestResult>> {
    let mut results = Vec::new();
    for (positions, label) in [
        (1_000usize, "1k positions"),
        (trades / 10, "positions x 10 trades"),
    ] {
        let path = ensure_input(dir, 42, positions.max(1), trades)?;
        eprintln!(
            "ingest: {} ({} lines, {} positions)",
            path.display(),
            trades,
            positions
        );
        let replay = batch_replay(&path)?;
        let live_trades = replay.live_trades;
        let mut group = vec![parse_only(&path)?, replay];
        group.extend(duckdb_peer(&path));
        for workers in [1usize, 2] {
            group.push(engine_run(
                &path,
                10_000,
                workers,
                &format!("deltabook, {label}, 10k lines/ts, {workers} worker(s)"),
            )?);
        }
        for workers in [1usize, 2] {
            group.extend(shipped_binary_run(
                &path,
                workers,
                &format!("deltabook book (shipped binary, whole job incl. writing outputs), {label}, {workers} worker(s)"),
            ));
        }
        for r in &mut group {
            r.label = format!("{} ({label})", r.label)
                .replace(&format!(", {label}, "), ", ")
                .replace(&format!(" ({label}) ({label})"), &format!(" ({label})"));
            r.live_trades = live_trades;
        }
        results.extend(group);
    }
    Ok(results)
}

fn print_table(results: &[IngestResult]) {
    println!("| run | lines | lines/s | seconds | CPU s (user + sys) | cores used | CPU us/line | minor faults | peak heap MiB | bytes/live trade (peak) | bytes/live trade (end) | peak RSS MiB (own process) | RSS bytes/live trade |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let per = |b: u64| {
            if r.live_trades == 0 || b == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", b as f64 / r.live_trades as f64)
            }
        };
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
        println!(
            "| {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            r.label,
            r.lines,
            r.lines_per_second(),
            r.seconds,
            or_dash(
                r.cpu
                    .map(|c| format!("{:.2} + {:.2}", c.user_seconds, c.system_seconds))
            ),
            or_dash(r.cores_used().map(|c| format!("{c:.2}"))),
            or_dash(r.cpu_us_per_line().map(|c| format!("{c:.2}"))),
            or_dash(r.cpu.map(|c| c.minor_faults.to_string())),
            r.peak_bytes as f64 / (1 << 20) as f64,
            per(r.peak_bytes),
            per(r.end_bytes),
            if r.peak_rss_bytes == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", r.peak_rss_bytes as f64 / (1 << 20) as f64)
            },
            per(r.peak_rss_bytes)
        );
    }
}
