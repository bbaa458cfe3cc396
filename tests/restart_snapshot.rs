//! A restart from the snapshot (the live version of every trade, the
//! fingerprint of every accepted version, the lot-method map) continues
//! exactly as if the engine had never stopped: the same corrections (same
//! `as_of`, causes, `backdated` flags, lots), the same dead letters and
//! duplicates, for any worker count before and after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use deltabook_dataflows::driver::{Capture, Driver, TimestampOutput};
use deltabook_dataflows::engine::{LiveTrade, RestoredTrade, SourceRef, Time};
use deltabook_dataflows::gate::{PriceTick, Statement};
use deltabook_dataflows::reconcile::{Restored, SequenceState};
use deltabook_dataflows::trade::LotMethod;

/// One engine timestamp of input: events, lot-method changes, and price
/// ticks and custodian statements.
#[derive(Clone, Default)]
struct Batch {
    time: Time,
    events: Vec<(SourceRef, Vec<u8>)>,
    methods: Vec<(String, Option<LotMethod>)>,
    prices: Vec<(SourceRef, Vec<u8>)>,
    statements: Vec<(SourceRef, Vec<u8>)>,
}

/// What a restart restores.
#[derive(Clone, Default)]
struct Snapshot {
    trades: Vec<RestoredTrade>,
    methods: Vec<(String, LotMethod)>,
    reconciliation: Vec<Restored>,
}

/// Runs `batches` on `workers` workers from `start` (feeding `restore` and
/// `methods` at `start` on worker 0), returning every later timestamp's
/// output merged over workers. Events are spread over workers by offset.
fn run(
    workers: usize,
    start: Time,
    snapshot: Snapshot,
    batches: Vec<Batch>,
) -> BTreeMap<Time, TimestampOutput> {
    let merged: Arc<Mutex<BTreeMap<Time, TimestampOutput>>> = Arc::default();
    let restore = Arc::new(Mutex::new(Some(snapshot)));
    let batches = Arc::new(batches);
    let sink = merged.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut driver = Driver::new(worker, start, Capture::All);
        if index == 0 {
            if let Some(snapshot) = restore.lock().expect("lock").take() {
                for (scope, method) in snapshot.methods {
                    driver.set_method(&scope, Some(method));
                }
                for trade in snapshot.trades {
                    driver.restore(trade);
                }
                for state in snapshot.reconciliation {
                    driver.restore_reconciliation(state);
                }
            }
        }
        driver.advance_to(start + 1);
        let collect = |done: Vec<(Time, TimestampOutput)>| {
            let mut all = sink.lock().expect("lock");
            for (time, output) in done {
                if time > start {
                    all.entry(time).or_default().merge(output);
                }
            }
        };
        for batch in batches.iter() {
            driver.advance_to(batch.time);
            if index == 0 {
                for (scope, method) in &batch.methods {
                    driver.set_method(scope, *method);
                }
            }
            for (source, payload) in &batch.events {
                if source.offset as usize % peers == index {
                    driver.send(*source, payload.clone());
                }
            }
            for (source, payload) in &batch.prices {
                if source.offset as usize % peers == index {
                    driver.send_price(*source, payload.clone());
                }
            }
            for (source, payload) in &batch.statements {
                if source.offset as usize % peers == index {
                    driver.send_statement(*source, payload.clone());
                }
            }
            driver.advance_to(batch.time + 1);
            while driver.less_than(batch.time + 1) {
                worker.step();
            }
            collect(driver.take_completed());
        }
        let mut closed = driver.close();
        while !closed.done() {
            worker.step();
        }
        collect(closed.take_completed());
    })
    .expect("timely");
    let mut out = std::mem::take(&mut *merged.lock().expect("lock"));
    for output in out.values_mut() {
        output.corrections.sort();
        output.dead_letters.sort();
        output.duplicates.sort();
        output.live.sort();
        output.accepted.sort();
    }
    out
}

/// Rows whose updates up to `upto` sum to one.
fn standing<R: Ord + Clone>(rows: impl Iterator<Item = (R, isize)>) -> Vec<R> {
    let mut net: BTreeMap<R, isize> = BTreeMap::new();
    for (row, diff) in rows {
        *net.entry(row).or_insert(0) += diff;
    }
    net.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(row, _)| row)
        .collect()
}

/// The snapshot a committer would have written up to (and including) `upto`.
fn snapshot(outputs: &BTreeMap<Time, TimestampOutput>, upto: Time) -> Snapshot {
    let mut live: HashMap<deltabook_dataflows::id::Id, LiveTrade> = HashMap::new();
    let mut prints: HashMap<deltabook_dataflows::id::Id, Vec<(u64, u128)>> = HashMap::new();
    for (_, output) in outputs.range(..=upto) {
        for trade in &output.live {
            live.insert(trade.trade_id.clone(), trade.clone());
        }
        for accepted in &output.accepted {
            prints
                .entry(accepted.trade_id.clone())
                .or_default()
                .push((accepted.version, accepted.fingerprint));
        }
    }
    let trades = live
        .into_values()
        .map(|live| RestoredTrade {
            fingerprints: prints.remove(&live.trade_id).unwrap_or_default(),
            live,
            whole: None,
        })
        .collect();
    let upto_outputs = || outputs.range(..=upto).map(|(_, o)| o);
    let mut reconciliation = Vec::new();
    for tick in standing(upto_outputs().flat_map(|o| o.live_ticks.iter().cloned())) {
        reconciliation.push(Restored::Tick(
            tick.source,
            PriceTick {
                security_id: tick.security_id,
                price: tick.price,
                as_of: tick.as_of,
                source: None,
            },
        ));
    }
    for s in standing(upto_outputs().flat_map(|o| o.live_statements.iter().cloned())) {
        let parts: Vec<&str> = s.position_key.split('_').collect();
        reconciliation.push(Restored::Statement(
            s.source,
            Statement {
                account_id: parts[0].into(),
                book_id: parts[1].into(),
                security_id: parts[2].into(),
                quantity: s.quantity,
                as_of_date: s.as_of_date,
                source: None,
            },
        ));
    }
    let gaps = standing(upto_outputs().flat_map(|o| o.gaps.iter().cloned()));
    for range in standing(upto_outputs().flat_map(|o| o.sequence_ranges.iter().cloned())) {
        reconciliation.push(Restored::Sequences(SequenceState {
            gaps: gaps
                .iter()
                .filter(|g| g.account_id == range.account_id)
                .map(|g| (g.first_missing, g.last_missing))
                .collect(),
            account_id: range.account_id,
            min: range.min,
            max: range.max,
        }));
    }
    Snapshot {
        trades,
        methods: Vec::new(),
        reconciliation,
    }
}

fn batches(lines: &[Vec<u8>], size: usize) -> Vec<Batch> {
    lines
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| Batch {
            time: i as Time + 1,
            events: chunk
                .iter()
                .enumerate()
                .map(|(j, line)| {
                    (
                        SourceRef {
                            partition: 0,
                            offset: (i * size + j + 1) as u64,
                        },
                        line.clone(),
                    )
                })
                .collect(),
            methods: Vec::new(),
            ..Batch::default()
        })
        .collect()
}

#[test]
fn a_restart_from_the_snapshot_continues_exactly_where_the_engine_stopped() {
    // Amends, cancels, duplicates, conflicting duplicates, backdated
    // arrivals and rejects, over few positions so that trades interact.
    let lines = common::generated(11, 25, 6_000);
    let all = batches(&lines, 200);
    let uninterrupted = run(1, 0, Snapshot::default(), all.clone());
    for (stop_after, workers_after) in [(7, 2), (15, 1), (22, 3)] {
        let snap = snapshot(&uninterrupted, stop_after);
        assert!(!snap.trades.is_empty());
        let resumed = run(
            workers_after,
            stop_after,
            snap,
            all[stop_after as usize..].to_vec(),
        );
        let expected: BTreeMap<Time, &TimestampOutput> = uninterrupted
            .range(stop_after + 1..)
            .map(|(t, o)| (*t, o))
            .collect();
        assert_eq!(
            resumed.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        let mut duplicates = 0;
        let mut corrections = 0;
        for (time, output) in &resumed {
            corrections += output.corrections.len();
            let want = expected[time];
            assert_eq!(
                output.corrections, want.corrections,
                "corrections at {time}"
            );
            assert_eq!(
                output.dead_letters, want.dead_letters,
                "dead letters at {time}"
            );
            assert_eq!(output.duplicates, want.duplicates, "duplicates at {time}");
            assert_eq!(output.live, want.live, "live versions at {time}");
            assert_eq!(output.accepted, want.accepted, "accepted at {time}");
            duplicates += output.duplicates.len();
        }
        // The restored fingerprints were exercised: duplicates of versions
        // accepted before the stop were recognised after it.
        assert!(duplicates > 0, "the stream has duplicates after the stop");
        assert!(corrections > 100, "{corrections} corrections compared");
    }
}

#[test]
fn a_conflicting_copy_of_a_version_accepted_before_the_restart_is_still_rejected() {
    let new = br#"{"trade_id":"T1","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"10","price":"5","trade_date":"2026-01-02"}"#.to_vec();
    let same = br#"{"trade_id":"T1","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"10.0","price":"5","trade_date":"2026-01-02"}"#.to_vec();
    let conflicting = br#"{"trade_id":"T1","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"11","price":"5","trade_date":"2026-01-02"}"#.to_vec();
    let before = run(1, 0, Snapshot::default(), batches(&[new], 1));
    let snap = snapshot(&before, 1);
    let mut after_batches = batches(&[same, conflicting], 1);
    for (i, b) in after_batches.iter_mut().enumerate() {
        b.time = 2 + i as Time;
    }
    let after = run(2, 1, snap, after_batches);
    assert_eq!(
        after[&2].duplicates.len(),
        1,
        "an equal copy is a duplicate"
    );
    assert!(after[&2].corrections.is_empty());
    let rejected = &after[&3].dead_letters;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason.kind.as_str(), "conflicting_duplicate");
}

/// Ticks and statements spread over the batches of `all` (line i of each
/// at batch i % batches, so they interleave with the trades).
fn with_market_data(mut all: Vec<Batch>, lines: &[Vec<u8>]) -> Vec<Batch> {
    let mut prices = Vec::new();
    let mut custodian = Vec::new();
    deltabook::market_data::generate_market_data(lines, 11, &mut prices, &mut custodian)
        .expect("market data");
    let n = all.len();
    for (kind, text) in [(0, prices), (1, custodian)] {
        for (i, line) in text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let source = SourceRef {
                partition: 0,
                offset: i as u64 + 1,
            };
            let batch = &mut all[(i * 7) % n];
            match kind {
                0 => batch.prices.push((source, line.to_vec())),
                _ => batch.statements.push((source, line.to_vec())),
            }
        }
    }
    all
}

#[test]
fn a_restart_restores_live_ticks_statements_and_sequences_exactly() {
    let lines = common::generated(5, 30, 4_000);
    let all = with_market_data(batches(&lines, 100), &lines);
    let uninterrupted = run(1, 0, Snapshot::default(), all.clone());
    let total: usize = uninterrupted
        .values()
        .map(|o| o.valuations.len() + o.breaks.len() + o.gaps.len())
        .sum();
    assert!(total > 100, "{total} reconciliation updates");
    for (stop_after, workers_after) in [(9, 2), (25, 1), (33, 3)] {
        let snap = snapshot(&uninterrupted, stop_after);
        assert!(snap.reconciliation.len() > 10);
        let resumed = run(
            workers_after,
            stop_after,
            snap,
            all[stop_after as usize..].to_vec(),
        );
        for (time, want) in uninterrupted.range(stop_after + 1..) {
            let got = resumed.get(time).cloned().unwrap_or_default();
            assert_eq!(
                standing(got.valuations.into_iter()),
                standing(want.valuations.iter().cloned()),
                "valuations asserted at {time}"
            );
            assert_eq!(
                standing(got.breaks.iter().map(|(r, d)| (r.clone(), -d))),
                standing(want.breaks.iter().map(|(r, d)| (r.clone(), -d))),
                "breaks retracted at {time}"
            );
            assert_eq!(
                standing(got.breaks.into_iter()),
                standing(want.breaks.iter().cloned()),
                "breaks asserted at {time}"
            );
            assert_eq!(
                standing(got.gaps.into_iter()),
                standing(want.gaps.iter().cloned()),
                "gaps opened at {time}"
            );
            assert_eq!(
                standing(got.sequence_ranges.into_iter()),
                standing(want.sequence_ranges.iter().cloned()),
                "sequence ranges at {time}"
            );
            assert_eq!(
                standing(got.live_ticks.into_iter()),
                standing(want.live_ticks.iter().cloned()),
                "live ticks at {time}"
            );
        }
    }
}
