//! Live queries: ingest throughput with 0 and with 20 SQL queries attached
//! from the start (alternated, in this process), the heap each attached
//! query holds, and a GROUP BY over a table of 1M open lots: time from
//! attaching it to its first row and to the whole snapshot.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deltabook::book_file::JsonlFile;
use deltabook_dataflows::query::{render, Plan, Table, TableSet};
use deltabook_dataflows::runner::{self, Attach, RunOptions};

use super::alloc;
use super::ingest::ensure_input;

/// Five query shapes; the suite attaches each four times.
const SHAPES: [&str; 5] = [
    "SELECT position_key, COUNT(*) AS lots, SUM(quantity) AS qty FROM lots GROUP BY position_key",
    "SELECT side, COUNT(*) AS lots, SUM(quantity * price) AS cost FROM lots GROUP BY side",
    "SELECT position_key, quantity FROM positions WHERE quantity > 0",
    "SELECT position_key, realized_pnl FROM positions ORDER BY realized_pnl DESC LIMIT 10",
    "SELECT l.position_key, SUM(l.quantity) AS qty FROM lots l \
     JOIN positions p ON l.position_key = p.position_key GROUP BY l.position_key",
];

struct Run {
    seconds: f64,
    lines: u64,
    end_heap_bytes: u64,
}

/// One ingest run with `queries` live queries attached; `share` makes the
/// engine share `lots` and `positions` even with no query (the service's
/// state with `queries.tables` set and nobody subscribed).
fn ingest(path: &Path, queries: usize, share: bool) -> Result<Run> {
    // DELTABOOK_BENCH_QUERY_SHAPE=i attaches only shape i (to find the
    // expensive one); by default all five, in turn.
    let only: Option<usize> = std::env::var("DELTABOOK_BENCH_QUERY_SHAPE")
        .ok()
        .and_then(|v| v.parse().ok());
    let plans: Vec<Plan> = SHAPES
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o == *i))
        .map(|(_, sql)| sql)
        .map(|sql| Plan::compile(sql))
        .collect::<Result<_, _>>()?;
    let source = Arc::new(JsonlFile::open(path)?);
    let mut options = RunOptions::new(Vec::new(), 10_000, 1);
    options.keep_corrections = false;
    options.probe_at_end = Some(alloc::live_bytes);
    if queries > 0 || share {
        let tables = TableSet::NONE.with(Table::Lots).with(Table::Positions);
        options.attach = Some(Attach::new(tables, move |scope, tables| {
            for plan in plans.iter().cycle().take(queries) {
                if let Ok(rendered) = render(plan, tables, scope, 0) {
                    // Consumed, so every operator runs to the end.
                    rendered.rows.probe();
                }
            }
        }));
    }
    let before = alloc::live_bytes();
    let started = Instant::now();
    let outcome = runner::run(source, &options, None)?;
    Ok(Run {
        seconds: started.elapsed().as_secs_f64(),
        lines: outcome.lines,
        end_heap_bytes: outcome.probe_at_end.unwrap_or(0).saturating_sub(before),
    })
}

/// `lines` BUY trades over 1,000 positions: every trade stays an open lot.
fn ensure_buys(dir: &Path, lines: usize) -> Result<PathBuf> {
    let path = dir.join(format!("bench-buys-1000p-{lines}t.jsonl"));
    if path.exists() {
        return Ok(path);
    }
    let mut out = BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for i in 0..lines {
        let position = i % 1000;
        writeln!(
            out,
            r#"{{"trade_id":"B{i}","account_id":"ACC{}","book_id":"EQ","security_id":"SEC{position}","side":"BUY","quantity":"{}.5","price":"{}.25","trade_date":"2026-01-{:02}"}}"#,
            position % 50,
            1 + i % 97,
            100 + i % 400,
            1 + i % 28
        )?;
    }
    out.flush()?;
    Ok(path)
}

/// Runs the suite and prints its tables.
pub fn run_suite(data_dir: &Path, trades: usize) -> Result<()> {
    let path = ensure_input(data_dir, 42, 1000, trades)?;
    println!(
        "## Live queries: ingest of {} ({trades} lines, 1 worker, batch 10000)\n",
        path.display()
    );
    println!("| run | lines/s | heap at end |");
    println!("|---|---:|---:|");
    // Three kinds of run: no table shared, lots and positions shared with
    // no query, 20 queries.
    const KINDS: [(&str, usize, bool); 3] = [
        ("0 queries, nothing shared", 0, false),
        ("0 queries, tables shared", 0, true),
        ("20 queries", 20, true),
    ];
    let mut best = [f64::MAX; 3];
    let mut heap = [0u64; 3];
    // Alternated, best of two each: the machine's speed drifts.
    for round in 0..2 {
        for (slot, (name, queries, share)) in KINDS.iter().enumerate() {
            let run = ingest(&path, *queries, *share)?;
            best[slot] = best[slot].min(run.seconds);
            heap[slot] = run.end_heap_bytes;
            println!(
                "| {name} (round {}) | {:.0} | {:.1} MB |",
                round + 1,
                run.lines as f64 / run.seconds,
                run.end_heap_bytes as f64 / 1e6
            );
        }
    }
    println!(
        "\n20 queries / 0 queries, best of two each: {:.3} of the throughput against \
         nothing shared, {:.3} against the tables shared; heap per attached query: {:.2} MB\n",
        best[0] / best[2],
        best[1] / best[2],
        heap[2].saturating_sub(heap[1]) as f64 / 20.0 / 1e6
    );

    let buys = ensure_buys(data_dir, 1_000_000)?;
    let sql = "SELECT position_key, COUNT(*) AS lots, SUM(quantity) AS qty, \
               SUM(quantity * price) AS cost FROM lots GROUP BY position_key";
    println!(
        "## GROUP BY over 1,000,000 open lots ({})\n",
        buys.display()
    );
    println!("| workers | first row | whole snapshot | rows |");
    println!("|---:|---:|---:|---:|");
    for workers in [1, 2] {
        let mut options = RunOptions::new(Vec::new(), 10_000, workers);
        options.keep_corrections = false;
        options.query = Some(Arc::new(Plan::compile(sql)?));
        let outcome = runner::run(Arc::new(JsonlFile::open(&buys)?), &options, None)?;
        let answer = outcome.query.context("an answer")?;
        println!(
            "| {workers} | {:.3} s | {:.3} s | {} |",
            answer.first_row_seconds.unwrap_or(f64::NAN),
            answer.seconds,
            answer.rows.len()
        );
    }
    Ok(())
}
