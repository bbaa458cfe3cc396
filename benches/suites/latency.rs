//! Latency benchmark: one position holding K live trades; one more trade
//! (current-dated, or backdated by one day) goes in and we time it until the
//! probe on every engine output passes. Baselines in the same process: the
//! plain per-position `reduce` engine, and a hand-written single-threaded
//! replay of the position (sort it, book it), as a backdated trade forces.

use std::time::Instant;

use deltabook_dataflows::booking::reference;
use deltabook_dataflows::calendar::{civil_from_days, days_from_civil};
use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::engine::{
    self, EngineInputs, RawEvent, SourceRef, TableChanges, Time, TradeEvent,
};
use deltabook_dataflows::gate::parse_event;
use deltabook_dataflows::reconcile::{self, ReconcileInputs};
use deltabook_dataflows::trade::{BookedTrade, LotMethod};
use differential_dataflow::input::Input;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Probe;
use timely::dataflow::InputHandleVec;

use super::{median, percentile};

/// Trades per day in the synthetic position (so K = 1M spans ~5.5 years).
const TRADES_PER_DAY: u64 = 500;
/// Lines per timestamp while growing the position.
const PRELOAD_BATCH: u64 = 50_000;

/// Which booking the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Booking {
    /// deltabook's chunked incremental book.
    Incremental,
    /// The same, with reconciliation attached: a price for the security and
    /// a custodian statement dated the day the backdated trades land on, so
    /// every insert also moves a valuation and the position's break.
    IncrementalWithBreaks,
    /// Baseline: plain per-position reduce re-booking the whole position.
    ReferenceReduce,
}

/// One latency measurement.
#[derive(Clone, Debug)]
pub struct LatencyRow {
    /// Which engine.
    pub booking: Booking,
    /// Lot method.
    pub method: LotMethod,
    /// Live trades in the position before the insert.
    pub k: u64,
    /// Backdated by one day (else current-dated).
    pub backdated: bool,
    /// Samples taken.
    pub samples: usize,
    /// Median milliseconds.
    pub p50_ms: f64,
    /// 99th percentile milliseconds.
    pub p99_ms: f64,
}

fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `2020-01-01 + day` as `YYYY-MM-DD`.
fn date(day: u64) -> String {
    let (y, m, d) = civil_from_days(days_from_civil(2020, 1, 1) + day as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn line(
    id: &str,
    day: u64,
    second: u64,
    nanos: u64,
    buy: bool,
    quantity: u64,
    price: u64,
) -> Vec<u8> {
    let d = date(day);
    let (h, m, s) = (9 + second / 3600, ((30 + second / 60) % 60), second % 60);
    let side = if buy { "BUY" } else { "SELL" };
    format!(
        r#"{{"trade_id":"{id}","account_id":"ACC1","book_id":"BK","security_id":"SEC","side":"{side}","quantity":"{quantity}","price":"{}.{:02}","trade_date":"{d}","trade_time":"{d}T{h:02}:{m:02}:{s:02}.{nanos:09}Z"}}"#,
        price / 100,
        price % 100
    )
    .into_bytes()
}

/// The n-th trade of the synthetic position: drifts long (60% buys), so
/// FIFO/LIFO relieve against a deep stack of open lots.
fn history_line(n: u64) -> Vec<u8> {
    let r = mix(n);
    line(
        &format!("P{n}"),
        n / TRADES_PER_DAY,
        n % TRADES_PER_DAY,
        0,
        r % 10 < 6,
        1 + (r >> 8) % 100,
        9_000 + (r >> 16) % 2_000,
    )
}

/// The i-th measured insert: small, alternating sides.
fn probe_line(i: u64, last_day: u64, backdated: bool) -> Vec<u8> {
    let r = mix(i ^ 0xABCD);
    let (day, second) = if backdated {
        (last_day - 1, r % TRADES_PER_DAY)
    } else {
        (last_day, TRADES_PER_DAY + i)
    };
    line(
        &format!("Q{i}"),
        day,
        second,
        1 + i % 999_999_998,
        i.is_multiple_of(2),
        1 + r % 5,
        9_500 + (r >> 8) % 1_000,
    )
}

/// Moves every input of the latency dataflow to `time`.
fn advance(
    raw: &mut InputHandleVec<Time, RawEvent>,
    prices: &mut InputHandleVec<Time, RawEvent>,
    custodian: &mut InputHandleVec<Time, RawEvent>,
    methods: &mut differential_dataflow::input::InputSession<
        Time,
        (deltabook_dataflows::id::Id, LotMethod),
        isize,
    >,
    time: Time,
) {
    raw.advance_to(time);
    prices.advance_to(time);
    custodian.advance_to(time);
    methods.advance_to(time);
    methods.flush();
}

/// Samples per (K, direction) for an engine and method.
fn samples_for(booking: Booking, method: LotMethod, k: u64, quick: bool) -> usize {
    let n = match (booking, method) {
        (
            Booking::Incremental | Booking::IncrementalWithBreaks,
            LotMethod::Fifo | LotMethod::Lifo,
        ) => 300,
        (Booking::Incremental | Booking::IncrementalWithBreaks, LotMethod::Hifo)
        | (Booking::ReferenceReduce, _) => match k {
            0..=1_000 => 100,
            1_001..=10_000 => 40,
            10_001..=100_000 => 10,
            _ => 3,
        },
    };
    if quick {
        n.min(30)
    } else {
        n
    }
}

/// Grows one position through `ks` and measures inserts at each K.
pub fn measure(booking: Booking, method: LotMethod, ks: &[u64], quick: bool) -> Vec<LatencyRow> {
    let ks = ks.to_vec();
    timely::execute_directly(move |worker| {
        let mut raw = InputHandleVec::<Time, RawEvent>::new();
        let mut prices = InputHandleVec::<Time, RawEvent>::new();
        let mut custodian = InputHandleVec::<Time, RawEvent>::new();
        let probe = ProbeHandle::new();
        let mut methods = worker.dataflow::<Time, _, _>(|scope| {
            let (methods_input, methods) =
                scope.new_collection::<(deltabook_dataflows::id::Id, LotMethod), isize>();
            match booking {
                Booking::Incremental | Booking::IncrementalWithBreaks => {
                    // The gate reads each raw line inside the dataflow.
                    let events = raw.to_stream(scope).map(TradeEvent::parse);
                    let e = engine::build(EngineInputs {
                        events,
                        methods,
                        event_log: false,
                        break_inputs: booking == Booking::IncrementalWithBreaks,
                        trade_versions: false,
                        table_changes: TableChanges::ALL,
                    });
                    if booking == Booking::IncrementalWithBreaks {
                        let r = reconcile::build(
                            &e,
                            ReconcileInputs {
                                prices: Some(prices.to_stream(scope)),
                                custodian: Some(custodian.to_stream(scope)),
                                tolerance: Dec8::ZERO,
                                restored: None,
                            },
                        );
                        r.valuations.inner.probe_with(&probe);
                        r.breaks.inner.probe_with(&probe);
                        r.gaps.inner.probe_with(&probe);
                    }
                    e.booked.inner.probe_with(&probe);
                    // Arranged, as the service's driver arranges them.
                    e.lots
                        .arrange_by_key_named("Arrange: lots by position")
                        .stream
                        .probe_with(&probe);
                    e.positions
                        .arrange_by_key_named("Arrange: positions by position")
                        .stream
                        .probe_with(&probe);
                    e.corrections.inner.probe_with(&probe);
                    e.dead_letters.probe_with(&probe);
                }
                Booking::ReferenceReduce => {
                    drop(methods);
                    engine::build_reference_booking(raw.to_stream(scope), method)
                        .inner
                        .probe_with(&probe);
                }
            }
            methods_input
        });
        methods.insert(("ACC1".into(), method));
        let mut time: Time = 1;
        raw.advance_to(time);
        methods.advance_to(time);
        methods.flush();
        let mut offset = 0u64;
        let mut loaded = 0u64;
        let mut probes = 0u64;
        let mut rows = Vec::new();
        let mut send = |raw: &mut InputHandleVec<Time, RawEvent>, bytes: Vec<u8>| {
            offset += 1;
            raw.send((
                SourceRef {
                    partition: 0,
                    offset,
                },
                bytes.into(),
            ));
        };
        for &k in &ks {
            while loaded < k {
                let upto = (loaded + PRELOAD_BATCH).min(k);
                while loaded < upto {
                    send(&mut raw, history_line(loaded));
                    loaded += 1;
                }
                time += 1;
                advance(&mut raw, &mut prices, &mut custodian, &mut methods, time);
                while probe.less_than(&time) {
                    worker.step();
                }
            }
            let last_day = (loaded - 1) / TRADES_PER_DAY;
            if booking == Booking::IncrementalWithBreaks {
                // A statement dated the day backdated inserts land on (so
                // current-dated ones fall after it), and a price.
                // Ticks and statements count their own lines: one per K.
                let source = SourceRef {
                    partition: 0,
                    offset: loaded,
                };
                custodian.send((
                    source,
                    format!(
                        r#"{{"account_id":"ACC1","book_id":"BK","security_id":"SEC","quantity":"12345","as_of_date":"{}"}}"#,
                        date(last_day - 1)
                    )
                    .into_bytes()
                    .into(),
                ));
                prices.send((
                    source,
                    format!(
                        r#"{{"security_id":"SEC","price":"101.5","as_of":"{}T16:00:00Z"}}"#,
                        date(last_day)
                    )
                    .into_bytes()
                    .into(),
                ));
                time += 1;
                advance(&mut raw, &mut prices, &mut custodian, &mut methods, time);
                while probe.less_than(&time) {
                    worker.step();
                }
            }
            for backdated in [false, true] {
                let samples = samples_for(booking, method, k, quick);
                let mut millis = Vec::with_capacity(samples);
                for _ in 0..samples {
                    send(&mut raw, probe_line(probes, last_day, backdated));
                    probes += 1;
                    time += 1;
                    advance(&mut raw, &mut prices, &mut custodian, &mut methods, time);
                    let started = Instant::now();
                    while probe.less_than(&time) {
                        worker.step();
                    }
                    millis.push(started.elapsed().as_secs_f64() * 1e3);
                }
                millis.sort_by(f64::total_cmp);
                rows.push(LatencyRow {
                    booking,
                    method,
                    k,
                    backdated,
                    samples,
                    p50_ms: percentile(&millis, 50.0),
                    p99_ms: percentile(&millis, 99.0),
                });
                eprintln!(
                    "latency: {:?} {:?} K={k} backdated={backdated}: p50 {:.3} ms p99 {:.3} ms",
                    booking,
                    method,
                    rows.last().map_or(0.0, |r: &LatencyRow| r.p50_ms),
                    rows.last().map_or(0.0, |r: &LatencyRow| r.p99_ms)
                );
            }
        }
        rows
    })
}

/// Baseline: sort and book a position of K trades from scratch, median ms.
pub fn replay_ms(method: LotMethod, k: u64, quick: bool) -> f64 {
    let trades: Vec<BookedTrade> = (0..k)
        .filter_map(|n| parse_event(&history_line(n)).ok().and_then(|v| v.booked()))
        .collect();
    let reps = match (k, quick) {
        (_, true) => 3,
        (0..=100_000, false) => 15,
        _ => 5,
    };
    let mut millis: Vec<f64> = (0..reps)
        .map(|_| {
            let started = Instant::now();
            let booking = reference::book(method, &trades);
            std::hint::black_box(&booking);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut millis)
}

/// Runs the latency suite and prints markdown tables.
pub fn run_suite(ks: &[u64], methods: &[LotMethod], quick: bool) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for &method in methods {
        rows.extend(measure(Booking::Incremental, method, ks, quick));
    }
    if methods.contains(&LotMethod::Fifo) {
        rows.extend(measure(
            Booking::IncrementalWithBreaks,
            LotMethod::Fifo,
            ks,
            quick,
        ));
    }
    if methods.contains(&LotMethod::Fifo) {
        rows.extend(measure(
            Booking::ReferenceReduce,
            LotMethod::Fifo,
            ks,
            quick,
        ));
    }
    println!(
        "| engine | method | K | dated | samples | p50 ms | p99 ms | p50 vs K={} |",
        ks[0]
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| {
                b.booking == r.booking
                    && b.method == r.method
                    && b.backdated == r.backdated
                    && b.k == ks[0]
            })
            .map_or(f64::NAN, |b| b.p50_ms);
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.2}x |",
            match r.booking {
                Booking::Incremental => "deltabook",
                Booking::IncrementalWithBreaks => "deltabook + valuation + break",
                Booking::ReferenceReduce => "baseline: plain reduce",
            },
            r.method.as_str(),
            r.k,
            if r.backdated {
                "backdated 1d"
            } else {
                "current"
            },
            r.samples,
            r.p50_ms,
            r.p99_ms,
            r.p50_ms / base
        );
    }
    if !methods.contains(&LotMethod::Fifo) {
        return rows;
    }
    println!();
    println!("| K | replay FIFO ms | replay LIFO ms | replay HIFO ms | deltabook FIFO backdated p50 ms | replay / deltabook |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &k in ks {
        let fifo = replay_ms(LotMethod::Fifo, k, quick);
        let lifo = replay_ms(LotMethod::Lifo, k, quick);
        let hifo = replay_ms(LotMethod::Hifo, k, quick);
        let ours = rows
            .iter()
            .find(|r| {
                r.booking == Booking::Incremental
                    && r.method == LotMethod::Fifo
                    && r.backdated
                    && r.k == k
            })
            .map_or(f64::NAN, |r| r.p50_ms);
        println!(
            "| {k} | {fifo:.3} | {lifo:.3} | {hifo:.3} | {ours:.3} | {:.0}x |",
            fifo / ours
        );
    }
    rows
}
