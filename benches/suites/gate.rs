//! Gate benchmark: parse and gate alone, one core, on lines already in
//! memory (so file reading is not measured), against plain references run
//! in the same process: one pass over the bytes, and `serde_json` validating each
//! line without building anything (`IgnoredAny`), a lower bound for any
//! general JSON reader that looks at every byte.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use deltabook_dataflows::gate::{parse_event, Admission, DuplicateRule};

use super::ingest::ensure_input;

/// One gate measurement: the best of `ROUNDS` passes over the lines.
struct GateResult {
    label: &'static str,
    lines: usize,
    bytes: usize,
    seconds: f64,
    accepted: usize,
}

const ROUNDS: usize = 5;

/// The batch of the last row: the `ingest` suite's lines per timestamp,
/// so the duplicate rule's table grows as it does in a stream
/// (`admit_all` sizes it for each batch only) rather than being sized
/// once for all the lines.
const STREAM_BATCH_LINES: usize = 10_000;

fn best_of<F: FnMut(&[&[u8]]) -> usize>(
    label: &'static str,
    lines: &[&[u8]],
    mut pass: F,
) -> GateResult {
    let bytes = lines.iter().map(|l| l.len() + 1).sum();
    let mut best = f64::INFINITY;
    let mut accepted = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        accepted = std::hint::black_box(pass(std::hint::black_box(lines)));
        best = best.min(started.elapsed().as_secs_f64());
    }
    GateResult {
        label,
        lines: lines.len(),
        bytes,
        seconds: best,
        accepted,
    }
}

/// How many of `lines` a fresh [`DuplicateRule`] accepts when given them
/// `batch_lines` at a time through `admit_all`.
fn admitted_in_batches(lines: &[&[u8]], batch_lines: usize) -> usize {
    let mut rule = DuplicateRule::new();
    let mut accepted = 0;
    for batch in lines.chunks(batch_lines) {
        rule.admit_all(batch.iter().copied(), |admission| {
            accepted += usize::from(matches!(admission, Admission::Accepted(_)));
        });
    }
    accepted
}

/// Runs the gate suite on the `trades`-line, 1k-position stream of `ingest`.
pub fn run_suite(dir: &Path, trades: usize) -> Result<()> {
    let path = ensure_input(dir, 42, 1_000, trades)?;
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("gate: {} ({} lines)", path.display(), lines.len());
    let results = [
        best_of(
            "reference: count quotes (one pass over the bytes)",
            &lines,
            |lines| {
                lines
                    .iter()
                    .map(|l| l.iter().filter(|b| **b == b'"').count())
                    .sum()
            },
        ),
        best_of(
            "reference: serde_json validates (IgnoredAny, no checks)",
            &lines,
            |lines| {
                lines
                    .iter()
                    .filter(|l| serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok())
                    .count()
            },
        ),
        best_of("deltabook parse_event (stateless gate)", &lines, |lines| {
            lines.iter().filter(|l| parse_event(l).is_ok()).count()
        }),
        best_of(
            "deltabook gate (parse_event + duplicate rule), a line at a time",
            &lines,
            |lines| {
                let mut rule = DuplicateRule::new();
                lines
                    .iter()
                    .filter(|l| matches!(rule.admit(l), Admission::Accepted(_)))
                    .count()
            },
        ),
        best_of(
            "deltabook gate, the lines as one batch (admit_all: reads ahead)",
            &lines,
            |lines| admitted_in_batches(lines, lines.len().max(1)),
        ),
        best_of(
            "deltabook gate, admit_all a batch of 10k lines at a time (the table grows)",
            &lines,
            |lines| admitted_in_batches(lines, STREAM_BATCH_LINES),
        ),
    ];
    let baseline = results[1].seconds;
    println!("| run (1 core, lines in memory, best of {ROUNDS}) | lines/s | MB/s | ns/line | vs serde_json | ok |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}x | {} |",
            r.label,
            r.lines as f64 / r.seconds,
            r.bytes as f64 / r.seconds / 1e6,
            r.seconds * 1e9 / r.lines as f64,
            baseline / r.seconds,
            r.accepted
        );
    }
    Ok(())
}
