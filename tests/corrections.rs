//! Correction events: folding them per position reproduces the final lots
//! and positions; `as_of` strictly increases per position; `before` chains
//! to the previous `after`; `delta = after - before`; causes are right.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{final_state, generated, model};
use deltabook_dataflows::correction::{Cause, Correction};
use deltabook_dataflows::decimal::{Amount, Dec8};
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::runner::{self, BookOutcome, MethodChange, RunOptions};
use deltabook_dataflows::trade::{Action, LotMethod};

fn run_with(lines: &[Vec<u8>], options: RunOptions) -> BookOutcome {
    runner::run(Arc::new(lines.to_vec()), &options, None).expect("engine run")
}

/// Folds corrections in `as_of` order and checks every per-event invariant.
fn fold(
    corrections: &[Correction],
) -> (
    BTreeSet<(deltabook_dataflows::id::Id, Lot)>,
    BTreeMap<deltabook_dataflows::id::Id, PositionSummary>,
) {
    let mut by_position: BTreeMap<&str, Vec<&Correction>> = BTreeMap::new();
    for c in corrections {
        by_position.entry(&c.position_key).or_default().push(c);
    }
    let mut lots: BTreeSet<(deltabook_dataflows::id::Id, Lot)> = BTreeSet::new();
    let mut positions = BTreeMap::new();
    for (position, mut events) in by_position {
        events.sort_by_key(|c| c.as_of);
        let mut state = PositionSummary::default();
        let mut last_as_of = 0;
        for c in events {
            assert!(
                c.as_of > last_as_of,
                "{position}: as_of must strictly increase"
            );
            last_as_of = c.as_of;
            assert_eq!(
                c.before, state,
                "{position}@{}: before must equal the previous after",
                c.as_of
            );
            assert!(
                !c.cause.is_empty(),
                "{position}@{}: a correction has a cause",
                c.as_of
            );
            assert!(
                c.before != c.after || !c.lots_closed.is_empty() || !c.lots_opened.is_empty(),
                "{position}@{}: only changes are emitted",
                c.as_of
            );
            // delta = after - before, as rendered.
            let json = c.to_json().expect("renders");
            let dq: Dec8 = json["delta"]["quantity"].as_str().unwrap().parse().unwrap();
            assert_eq!(c.before.quantity.checked_add(dq), Some(c.after.quantity));
            let dc: Amount = json["delta"]["cost_basis"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                c.before.cost_basis.checked_add(dc),
                Some(c.after.cost_basis)
            );
            let dr: Amount = json["delta"]["realized_pnl"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                c.before.realized_pnl.checked_add(dr),
                Some(c.after.realized_pnl)
            );
            let dl = json["delta"]["lot_count"].as_i64().unwrap();
            assert_eq!(c.before.lot_count as i64 + dl, c.after.lot_count as i64);
            for lot in &c.lots_closed {
                assert!(
                    lots.remove(&(position.into(), lot.clone())),
                    "{position}: closed lot {lot:?} was open"
                );
            }
            for lot in &c.lots_opened {
                assert!(
                    lots.insert((position.into(), lot.clone())),
                    "{position}: opened lot {lot:?} already open"
                );
            }
            state = c.after.clone();
        }
        if !state.is_omitted() {
            positions.insert(position.into(), state);
        }
    }
    (lots, positions)
}

#[test]
fn folding_corrections_reproduces_the_final_state() {
    let lines = generated(23, 20, 12_000);
    let methods = vec![
        ("ACC1".to_string(), LotMethod::Lifo),
        ("ACC2".to_string(), LotMethod::Hifo),
    ];
    let changes = vec![
        MethodChange {
            at_event: 4_000,
            scope: "ACC2".to_string(),
            method: Some(LotMethod::Fifo),
        },
        MethodChange {
            at_event: 8_000,
            scope: "ACC1".to_string(),
            method: None,
        },
    ];
    for (batch_size, workers) in [(250, 1), (1000, 2)] {
        let options = RunOptions {
            method_changes: changes.clone(),
            ..RunOptions::new(methods.clone(), batch_size, workers)
        };
        let outcome = run_with(&lines, options);
        let (lots, positions) = fold(&outcome.corrections);
        let state = final_state(&outcome);
        assert_eq!(lots.into_iter().collect::<Vec<_>>(), state.lots);
        assert_eq!(positions.into_iter().collect::<Vec<_>>(), state.positions);
        // The methods in force at the end are: ACC2 FIFO, ACC1 default FIFO.
        let final_methods = vec![("ACC2".to_string(), LotMethod::Fifo)];
        assert_eq!(state, model(&lines, &final_methods));
        let method_changes = outcome
            .corrections
            .iter()
            .filter(|c| c.cause.iter().any(|x| matches!(x, Cause::MethodChange(_))))
            .count();
        assert!(method_changes > 0, "method changes re-book positions");
    }
}

fn line(
    id: &str,
    version: u64,
    action: &str,
    side: &str,
    qty: &str,
    price: &str,
    date: &str,
) -> Vec<u8> {
    format!(
        r#"{{"trade_id":"{id}","version":{version},"action":"{action}","account_id":"ACC1","book_id":"EQ","security_id":"AAPL","side":"{side}","quantity":"{qty}","price":"{price}","trade_date":"{date}","correlation_id":"c-{id}-{version}"}}"#
    )
    .into_bytes()
}

#[test]
fn backdated_amended_and_cancelled_trades_carry_their_causes() {
    let lines = vec![
        line("T1", 1, "NEW", "BUY", "100", "10", "2026-01-05"),
        line("T2", 1, "NEW", "SELL", "40", "12", "2026-01-06"),
        // Backdated buy before T1: FIFO now relieves T0 first.
        line("T0", 1, "NEW", "BUY", "50", "8", "2026-01-02"),
        // Amend T2's quantity.
        line("T2", 2, "AMEND", "SELL", "60", "12", "2026-01-06"),
        // Cancel T0.
        line("T0", 2, "CANCEL", "BUY", "50", "8", "2026-01-02"),
    ];
    let options = RunOptions::new(vec![], 1, 1);
    let outcome = run_with(&lines, options);
    let mut events = outcome.corrections.clone();
    events.sort_by_key(|c| c.as_of);
    assert_eq!(
        events.iter().map(|c| c.as_of).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let trade_cause = |c: &Correction| match &c.cause[..] {
        [Cause::Trade {
            trade_id,
            version,
            action,
            backdated,
            correlation_id,
        }] => (
            trade_id.clone(),
            *version,
            *action,
            *backdated,
            correlation_id.clone(),
        ),
        other => panic!("unexpected cause {other:?}"),
    };
    assert_eq!(
        trade_cause(&events[2]),
        ("T0".into(), 1, Action::New, true, Some("c-T0-1".into()))
    );
    assert!(!trade_cause(&events[1]).3, "T2 appends to the history");
    assert_eq!(
        trade_cause(&events[3]),
        ("T2".into(), 2, Action::Amend, false, Some("c-T2-2".into()))
    );
    assert_eq!(
        trade_cause(&events[4]),
        ("T0".into(), 2, Action::Cancel, true, Some("c-T0-2".into()))
    );
    // After the backdated T0: T0 fully relieved by T2 (40 of 50), T1 untouched.
    let lots_after = |c: &Correction| c.after.lot_count;
    assert_eq!(lots_after(&events[2]), 2);
    let t0 = events[2]
        .lots_opened
        .iter()
        .find(|l| l.lot_id == "T0")
        .expect("T0 opened");
    assert_eq!(t0.quantity.to_string(), "10");
    // T1 went back to 100 open, so it appears closed (60) and opened (100).
    assert!(events[2]
        .lots_closed
        .iter()
        .any(|l| l.lot_id == "T1" && l.quantity.to_string() == "60"));
    assert!(events[2]
        .lots_opened
        .iter()
        .any(|l| l.lot_id == "T1" && l.quantity.to_string() == "100"));
    // Final: T1 with 40 left; realized (12-10)*60 = 120.
    let last = &events[4].after;
    assert_eq!(last.quantity.to_string(), "40");
    assert_eq!(last.realized_pnl.to_string(), "120");
}

#[test]
fn a_method_change_rebooks_the_position_with_a_method_change_cause() {
    let lines = vec![
        line("T1", 1, "NEW", "BUY", "10", "10", "2026-01-05"),
        line("T2", 1, "NEW", "BUY", "10", "20", "2026-01-06"),
        line("T3", 1, "NEW", "SELL", "10", "30", "2026-01-07"),
        line("T4", 1, "NEW", "BUY", "1", "30", "2026-01-08"),
    ];
    let changes = vec![MethodChange {
        at_event: 4,
        scope: "ACC1_EQ".into(),
        method: Some(LotMethod::Lifo),
    }];
    let options = RunOptions {
        method_changes: changes,
        ..RunOptions::new(vec![], 1, 2)
    };
    let outcome = run_with(&lines, options);
    let mut events = outcome.corrections.clone();
    events.sort_by_key(|c| c.as_of);
    let at4 = events
        .iter()
        .find(|c| c.as_of == 4)
        .expect("a correction at 4");
    assert_eq!(at4.cause[0], Cause::MethodChange(LotMethod::Lifo));
    // FIFO left T2 open (realized 200); LIFO leaves T1 open (realized 100), plus T4.
    assert_eq!(at4.before.realized_pnl.to_string(), "200");
    assert_eq!(at4.after.realized_pnl.to_string(), "100");
    let open: Vec<_> = outcome
        .lots
        .iter()
        .map(|(_, l)| l.lot_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(open, vec!["T1", "T4"]);
}

/// Collects what a run streams, in the order it arrives.
struct Collected(Arc<std::sync::Mutex<Vec<Vec<Correction>>>>, bool);

impl runner::CorrectionWriter for Collected {
    fn write(&mut self, corrections: &[Correction]) -> Result<(), String> {
        if self.1 {
            return Err("disk full".into());
        }
        self.0.lock().unwrap().push(corrections.to_vec());
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn streamed_corrections_are_the_kept_ones_in_file_order() {
    let lines = generated(11, 40, 3_000);
    for (workers, batch_size) in [(1, 1000), (3, 7), (2, 1)] {
        let kept = run_with(&lines, RunOptions::new(Vec::new(), batch_size, workers));
        let mut expected = kept.corrections.clone();
        expected.sort_by(|a, b| (a.as_of, &a.position_key).cmp(&(b.as_of, &b.position_key)));
        assert!(!expected.is_empty());

        let sink = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut options = RunOptions::new(Vec::new(), batch_size, workers);
        options.stream_corrections = Some(runner::CorrectionStream::new(Collected(
            sink.clone(),
            false,
        )));
        let streamed = run_with(&lines, options);
        assert!(streamed.corrections_streamed);
        assert!(streamed.corrections.is_empty(), "streamed, not kept");
        assert_eq!(streamed.correction_count, kept.correction_count);
        let batches = sink.lock().unwrap().clone();
        // One call per timestamp that has corrections, each one timestamp,
        // in time order.
        for batch in &batches {
            assert!(batch.iter().all(|c| c.as_of == batch[0].as_of));
        }
        let times: Vec<_> = batches.iter().map(|b| b[0].as_of).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        let got: Vec<Correction> = batches.into_iter().flatten().collect();
        assert_eq!(got, expected, "workers {workers}, batch {batch_size}");
        assert_eq!(final_state(&streamed), final_state(&kept));
    }
}

#[test]
fn a_failing_correction_writer_fails_the_run() {
    let lines = generated(12, 10, 500);
    let mut options = RunOptions::new(Vec::new(), 50, 2);
    let sink = Arc::new(std::sync::Mutex::new(Vec::new()));
    options.stream_corrections = Some(runner::CorrectionStream::new(Collected(sink, true)));
    let error = runner::run(Arc::new(lines), &options, None).expect_err("the writer fails");
    assert!(error.to_string().contains("disk full"), "{error}");
}
