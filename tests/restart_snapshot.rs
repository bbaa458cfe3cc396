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
use deltabook_dataflows::trade::LotMethod;

/// One engine timestamp of input: events and lot-method changes.
#[derive(Clone, Default)]
struct Batch {
    time: Time,
    events: Vec<(SourceRef, Vec<u8>)>,
    methods: Vec<(String, Option<LotMethod>)>,
}

/// Runs `batches` on `workers` workers from `start` (feeding `restore` and
/// `methods` at `start` on worker 0), returning every later timestamp's
/// output merged over workers. Events are spread over workers by offset.
fn run(
    workers: usize,
    start: Time,
    restore: Vec<RestoredTrade>,
    methods: Vec<(String, LotMethod)>,
    batches: Vec<Batch>,
) -> BTreeMap<Time, TimestampOutput> {
    let merged: Arc<Mutex<BTreeMap<Time, TimestampOutput>>> = Arc::default();
    let restore = Arc::new(Mutex::new(Some((restore, methods))));
    let batches = Arc::new(batches);
    let sink = merged.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut driver = Driver::new(worker, start, Capture::All);
        if index == 0 {
            if let Some((trades, methods)) = restore.lock().expect("lock").take() {
                for (scope, method) in methods {
                    driver.set_method(&scope, Some(method));
                }
                for trade in trades {
                    driver.restore(trade);
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

/// The snapshot a committer would have written up to (and including) `upto`.
fn snapshot(
    outputs: &BTreeMap<Time, TimestampOutput>,
    upto: Time,
) -> (Vec<RestoredTrade>, Vec<(String, LotMethod)>) {
    let mut live: HashMap<String, LiveTrade> = HashMap::new();
    let mut prints: HashMap<String, Vec<(u64, u128)>> = HashMap::new();
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
        })
        .collect();
    (trades, Vec::new())
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
        })
        .collect()
}

#[test]
fn a_restart_from_the_snapshot_continues_exactly_where_the_engine_stopped() {
    // Amends, cancels, duplicates, conflicting duplicates, backdated
    // arrivals and rejects, over few positions so that trades interact.
    let lines = common::generated(11, 25, 6_000);
    let all = batches(&lines, 200);
    let uninterrupted = run(1, 0, Vec::new(), Vec::new(), all.clone());
    for (stop_after, workers_after) in [(7, 2), (15, 1), (22, 3)] {
        let (trades, methods) = snapshot(&uninterrupted, stop_after);
        assert!(!trades.is_empty());
        let resumed = run(
            workers_after,
            stop_after,
            trades,
            methods,
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
    let before = run(1, 0, Vec::new(), Vec::new(), batches(&[new], 1));
    let (trades, methods) = snapshot(&before, 1);
    let mut after_batches = batches(&[same, conflicting], 1);
    for (i, b) in after_batches.iter_mut().enumerate() {
        b.time = 2 + i as Time;
    }
    let after = run(2, 1, trades, methods, after_batches);
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
