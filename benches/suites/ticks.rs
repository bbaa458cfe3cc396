//! Price ticks into a large book: N lots over 10k securities (10 lots per
//! position), then rounds of ticks, each round one engine timestamp. For
//! each round size we report ticks/s sustained (rounds back to back) and
//! the p50 / p99 time from a round's ticks entering to its valuation rows
//! leaving the dataflow. The in-process baseline is a plain loop that keeps
//! the same valuations in hash maps (security -> positions), with no
//! dataflow, no exactness of ordering and no retractions.

use std::collections::HashMap;
use std::time::Instant;

use deltabook_dataflows::decimal::{Amount, Dec8};
use deltabook_dataflows::driver::{Capture, Driver};
use deltabook_dataflows::engine::{SourceRef, Time};
use deltabook_dataflows::gate::parse_price_tick;

use super::percentile;

/// Distinct securities.
pub const SECURITIES: u64 = 10_000;
/// Lots (BUY trades) per position.
pub const LOTS_PER_POSITION: u64 = 10;
/// Trade lines per timestamp while loading the book.
const LOAD_BATCH: u64 = 50_000;

fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Position p holds security p % SECURITIES.
pub fn trade_line(n: u64) -> Vec<u8> {
    let position = n / LOTS_PER_POSITION;
    let r = mix(n);
    format!(
        r#"{{"trade_id":"T{n}","account_id":"ACC{}","book_id":"BK","security_id":"SEC{}","side":"BUY","quantity":"{}","price":"{}.{:02}","trade_date":"2026-03-02"}}"#,
        position / SECURITIES,
        position % SECURITIES,
        1 + r % 100,
        50 + (r >> 8) % 100,
        (r >> 16) % 100
    )
    .into_bytes()
}

/// The i-th tick: a random security, a later instant than every earlier tick.
pub fn tick_line(i: u64) -> (u64, Vec<u8>) {
    let r = mix(i ^ 0x7105);
    let security = r % SECURITIES;
    let line = format!(
        r#"{{"security_id":"SEC{security}","price":"{}.{:02}","as_of":"2026-03-02T16:{:02}:{:02}.{:09}Z"}}"#,
        50 + (r >> 16) % 100,
        (r >> 24) % 100,
        (i / 60_000_000) % 60,
        (i / 1_000_000) % 60,
        i % 1_000_000_000
    );
    (security, line.into_bytes())
}

/// One round size's result.
struct TickRow {
    round: u64,
    rounds: usize,
    ticks_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    valuation_rows: u64,
}

/// Runs the suite over a book of `lots` lots and prints markdown tables.
pub fn run_suite(lots: u64) {
    let lots = lots.max(SECURITIES * LOTS_PER_POSITION);
    let rows = timely::execute_directly(move |worker| {
        let mut driver = Driver::new(worker, 1, Capture::StateOnly);
        let started = Instant::now();
        let mut time: Time = 1;
        let mut loaded = 0;
        while loaded < lots {
            let upto = (loaded + LOAD_BATCH).min(lots);
            for n in loaded..upto {
                driver.send(
                    SourceRef {
                        partition: 0,
                        offset: n + 1,
                    },
                    trade_line(n),
                );
            }
            loaded = upto;
            time += 1;
            driver.advance_to(time);
            while driver.less_than(time) {
                worker.step();
            }
            drop(driver.take_completed());
        }
        let load_seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "ticks: loaded {lots} lots in {load_seconds:.1} s ({:.0} lines/s)",
            lots as f64 / load_seconds
        );
        let mut next_tick = 0u64;
        let mut rows = Vec::new();
        for (round, rounds) in [(500u64, 400usize), (5_000, 60), (50_000, 8)] {
            let mut millis = Vec::with_capacity(rounds);
            let mut valuation_rows = 0u64;
            let started = Instant::now();
            for _ in 0..rounds {
                for _ in 0..round {
                    let (_, line) = tick_line(next_tick);
                    next_tick += 1;
                    driver.send_price(
                        SourceRef {
                            partition: 0,
                            offset: next_tick,
                        },
                        line,
                    );
                }
                time += 1;
                let sent = Instant::now();
                driver.advance_to(time);
                while driver.less_than(time) {
                    worker.step();
                }
                millis.push(sent.elapsed().as_secs_f64() * 1e3);
                for (_, output) in driver.take_completed() {
                    valuation_rows += output.valuations.len() as u64;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            millis.sort_by(f64::total_cmp);
            let row = TickRow {
                round,
                rounds,
                ticks_per_second: (round * rounds as u64) as f64 / seconds,
                p50_ms: percentile(&millis, 50.0),
                p99_ms: percentile(&millis, 99.0),
                valuation_rows,
            };
            eprintln!(
                "ticks: {} per round: {:.0} ticks/s, p50 {:.2} ms, p99 {:.2} ms",
                row.round, row.ticks_per_second, row.p50_ms, row.p99_ms
            );
            rows.push(row);
        }
        rows
    });
    let baseline = plain_baseline(lots);
    println!("| run | ticks per round | rounds | ticks/s | round p50 ms | round p99 ms | valuation rows out |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| deltabook ({lots} lots, {SECURITIES} securities) | {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.round, r.rounds, r.ticks_per_second, r.p50_ms, r.p99_ms, r.valuation_rows
        );
    }
    println!(
        "| baseline: gate each tick, revalue its positions in hash maps (one thread) | 1 | - | {baseline:.0} | - | - | - |"
    );
}

/// Baseline: positions by security in a hash map; each tick is formatted
/// and gated exactly as deltabook's are, then recomputes the market value
/// of that security's positions. Ticks per second.
fn plain_baseline(lots: u64) -> f64 {
    let positions = lots / LOTS_PER_POSITION;
    let mut by_security: HashMap<deltabook_dataflows::id::Id, Vec<(Dec8, Amount)>> = HashMap::new();
    for p in 0..positions {
        by_security
            .entry(format!("SEC{}", p % SECURITIES).into())
            .or_default()
            .push((Dec8::pow10(2), Amount::default()));
    }
    let ticks = 1_000_000u64;
    let started = Instant::now();
    let mut sink = Amount::default();
    for i in 0..ticks {
        let (_, line) = tick_line(i);
        let Ok(tick) = parse_price_tick(&line) else {
            continue;
        };
        if let Some(list) = by_security.get(&tick.security_id) {
            for (quantity, cost) in list {
                let mv = quantity.checked_mul(tick.price).unwrap_or_default();
                sink = sink
                    .checked_add(mv.checked_sub(*cost).unwrap_or_default())
                    .unwrap_or(sink);
            }
        }
    }
    std::hint::black_box(sink);
    ticks as f64 / started.elapsed().as_secs_f64()
}
