//! `reconciliation.md` end to end: hand-computed valuations, breaks (every
//! kind, tolerance, ties, backdated trades that open and resolve breaks),
//! late ticks and gaps; then property tests that the engine equals the
//! independent model in `common` whatever the batch size, worker count and
//! interleaving of trades, ticks and statements.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::driver::{Capture, Driver, TimestampOutput};
use deltabook_dataflows::engine::{SourceRef, Time};
use deltabook_dataflows::reconcile::{BreakKind, BreakRow, GapRow, ValuationRow};
use deltabook_dataflows::trade::Date;
use proptest::prelude::*;

use common::{reconcile_model, reconciled, run_reconciled, Reconciled};

fn d(text: &str) -> Dec8 {
    match text.strip_prefix('-') {
        Some(rest) => Dec8::parse(rest).unwrap().negated(),
        None => Dec8::parse(text).unwrap(),
    }
}

fn date(text: &str) -> Date {
    let parts: Vec<u32> = text.split('-').map(|p| p.parse().unwrap()).collect();
    Date::from_ymd(parts[0], parts[1], parts[2])
}

fn trade(
    id: &str,
    account: &str,
    security: &str,
    side: &str,
    q: &str,
    day: &str,
    seq: u64,
) -> Vec<u8> {
    format!(
        r#"{{"trade_id":"{id}","account_id":"{account}","book_id":"B","security_id":"{security}","side":"{side}","quantity":"{q}","price":"10","trade_date":"{day}","sequence":{seq}}}"#
    )
    .into_bytes()
}

fn tick(security: &str, price: &str, as_of: &str) -> Vec<u8> {
    format!(r#"{{"security_id":"{security}","price":"{price}","as_of":"{as_of}"}}"#).into_bytes()
}

fn statement(account: &str, security: &str, q: &str, day: &str) -> Vec<u8> {
    format!(
        r#"{{"account_id":"{account}","book_id":"B","security_id":"{security}","quantity":"{q}","as_of_date":"{day}"}}"#
    )
    .into_bytes()
}

fn brk(position: &str, day: &str, kind: BreakKind, internal: &str, custodian: &str) -> BreakRow {
    BreakRow {
        position_key: position.to_string().into(),
        as_of_date: date(day),
        kind,
        internal_quantity: d(internal),
        custodian_quantity: d(custodian),
        difference: d(internal).checked_sub(d(custodian)).unwrap(),
    }
}

/// Runs with batch size 1 and 3 on 1 and 2 workers; all must agree with
/// each other and with the model; returns the result.
fn run_all(
    trades: &[Vec<u8>],
    prices: &[Vec<u8>],
    custodian: &[Vec<u8>],
    tolerance: &str,
) -> Reconciled {
    let tolerance = d(tolerance);
    let expected = reconcile_model(trades, prices, custodian, tolerance);
    for (batch, workers) in [(1, 1), (3, 2), (1000, 1)] {
        let got = reconciled(&run_reconciled(
            trades, prices, custodian, tolerance, batch, workers,
        ));
        assert_eq!(got, expected, "batch {batch}, workers {workers}");
    }
    expected
}

#[test]
fn every_break_kind_by_hand() {
    let trades = vec![
        trade("T1", "A1", "AAPL", "BUY", "100", "2026-03-02", 1),
        trade("T2", "A1", "AAPL", "SELL", "30", "2026-03-04", 2),
        trade("T3", "A1", "MSFT", "BUY", "5", "2026-03-03", 3),
        trade("T4", "A2", "AAPL", "BUY", "7", "2026-03-05", 4),
        trade("T5", "A1", "IBM", "BUY", "2", "2026-03-09", 5),
    ];
    let custodian = vec![
        // Internal as of 03-03 is 100 (T2 is later): a mismatch of 10.
        statement("A1", "AAPL", "90", "2026-03-03"),
        // No live trade at all: MISSING_INTERNAL.
        statement("A1", "GOOG", "-3", "2026-03-03"),
        // T4 is dated after the statement: MISSING_INTERNAL too.
        statement("A2", "AAPL", "7", "2026-03-04"),
    ];
    let r = run_all(&trades, &[], &custodian, "0");
    assert_eq!(
        r.breaks,
        vec![
            brk(
                "A1_B_AAPL",
                "2026-03-03",
                BreakKind::QuantityMismatch,
                "100",
                "90"
            ),
            brk(
                "A1_B_GOOG",
                "2026-03-03",
                BreakKind::MissingInternal,
                "0",
                "-3"
            ),
            // A1 is covered (latest statement 03-03); MSFT is unstated.
            brk(
                "A1_B_MSFT",
                "2026-03-03",
                BreakKind::MissingExternal,
                "5",
                "0"
            ),
            brk(
                "A2_B_AAPL",
                "2026-03-04",
                BreakKind::MissingInternal,
                "0",
                "7"
            ),
        ]
    );
    // IBM is traded only after 03-03: internal 0 as of the account's date, no break.
    assert!(r.breaks.iter().all(|b| b.position_key != "A1_B_IBM"));
}

#[test]
fn tolerance_is_absolute_and_strict() {
    let trades = vec![
        trade("T1", "A1", "AAPL", "BUY", "100", "2026-03-02", 1),
        trade("T2", "A1", "MSFT", "BUY", "0.5", "2026-03-02", 2),
    ];
    let custodian = vec![
        statement("A1", "AAPL", "99.5", "2026-03-03"),
        statement("A1", "IBM", "-0.75", "2026-03-03"),
    ];
    let none = run_all(&trades, &[], &custodian, "0.75");
    assert_eq!(
        none.breaks,
        vec![],
        "|0.5|, |0.5| and |-0.75| are all <= 0.75"
    );
    let some = run_all(&trades, &[], &custodian, "0.5");
    assert_eq!(
        some.breaks,
        vec![brk(
            "A1_B_IBM",
            "2026-03-03",
            BreakKind::MissingInternal,
            "0",
            "-0.75"
        )]
    );
}

#[test]
fn ties_go_to_the_later_line() {
    let trades = vec![trade("T1", "A1", "AAPL", "BUY", "10", "2026-03-02", 1)];
    let prices = vec![
        tick("AAPL", "11", "2026-03-05T16:00:00Z"),
        // The same instant written with an offset: a tie, the later line wins.
        tick("AAPL", "12", "2026-03-05T17:00:00+01:00"),
        // Older: changes nothing.
        tick("AAPL", "99", "2026-03-05T15:59:59.999999999Z"),
    ];
    let custodian = vec![
        statement("A1", "AAPL", "10", "2026-03-03"),
        statement("A1", "AAPL", "8", "2026-03-03"),
        statement("A1", "AAPL", "3", "2026-03-01"),
    ];
    let r = run_all(&trades, &prices, &custodian, "0");
    assert_eq!(
        r.valuations,
        vec![ValuationRow {
            position_key: "A1_B_AAPL".into(),
            price: d("12"),
            market_value: d("120").to_amount(),
            unrealized_pnl: d("20").to_amount(),
        }]
    );
    assert_eq!(
        r.breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-03",
            BreakKind::QuantityMismatch,
            "10",
            "8"
        )]
    );
}

#[test]
fn a_late_old_tick_changes_nothing_and_a_position_without_a_price_has_no_row() {
    let trades = vec![
        trade("T1", "A1", "AAPL", "BUY", "10", "2026-03-02", 1),
        trade("T2", "A1", "MSFT", "SELL", "4", "2026-03-02", 2),
    ];
    let prices = vec![
        tick("AAPL", "11", "2026-03-05T16:00:00Z"),
        tick("ZZZ", "5", "2026-03-05T16:00:00Z"),
        tick("AAPL", "7", "2026-03-01T16:00:00Z"),
    ];
    let r = run_all(&trades, &prices, &[], "0");
    assert_eq!(r.valuations.len(), 1);
    assert_eq!(r.valuations[0].price, d("11"));
    assert_eq!(r.valuations[0].market_value, d("110").to_amount());
    // A short position: quantity -4, cost basis -40, priced later.
    let prices = [prices, vec![tick("MSFT", "12.5", "2026-03-05T16:00:00Z")]].concat();
    let r = run_all(&trades, &prices, &[], "0");
    assert_eq!(r.valuations[1].position_key, "A1_B_MSFT");
    assert_eq!(r.valuations[1].market_value, d("-50").to_amount());
    assert_eq!(r.valuations[1].unrealized_pnl, d("-10").to_amount());
}

#[test]
fn backdated_trades_open_and_resolve_breaks() {
    let base = vec![trade("T1", "A1", "AAPL", "BUY", "10", "2026-03-02", 1)];
    let custodian = vec![statement("A1", "AAPL", "15", "2026-03-05")];
    let open = run_all(&base, &[], &custodian, "0");
    assert_eq!(
        open.breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-05",
            BreakKind::QuantityMismatch,
            "10",
            "15"
        )]
    );
    // A backdated buy dated on or before the statement resolves it ...
    let resolved = [
        base.clone(),
        vec![trade("T2", "A1", "AAPL", "BUY", "5", "2026-03-05", 2)],
    ]
    .concat();
    assert_eq!(run_all(&resolved, &[], &custodian, "0").breaks, vec![]);
    // ... one dated after it does not.
    let later = [
        base.clone(),
        vec![trade("T2", "A1", "AAPL", "BUY", "5", "2026-03-06", 2)],
    ]
    .concat();
    assert_eq!(run_all(&later, &[], &custodian, "0").breaks, open.breaks);
    // A backdated sell into a matching position opens one.
    let matching = vec![statement("A1", "AAPL", "10", "2026-03-05")];
    assert_eq!(run_all(&base, &[], &matching, "0").breaks, vec![]);
    let sold = [
        base,
        vec![trade("T3", "A1", "AAPL", "SELL", "4", "2026-03-01", 3)],
    ]
    .concat();
    assert_eq!(
        run_all(&sold, &[], &matching, "0").breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-05",
            BreakKind::QuantityMismatch,
            "6",
            "10"
        )]
    );
}

#[test]
fn an_amendment_moving_a_trade_out_of_the_statement_window_opens_a_break() {
    let trades = vec![
        trade("T1", "A1", "AAPL", "BUY", "10", "2026-03-02", 1),
        br#"{"trade_id":"T1","version":2,"action":"AMEND","account_id":"A1","book_id":"B","security_id":"AAPL","side":"BUY","quantity":"10","price":"10","trade_date":"2026-03-09","sequence":2}"#.to_vec(),
    ];
    let custodian = vec![statement("A1", "AAPL", "10", "2026-03-05")];
    assert_eq!(
        run_all(&trades, &[], &custodian, "0").breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-05",
            BreakKind::MissingInternal,
            "0",
            "10"
        )]
    );
    let cancelled = vec![
        trade("T1", "A1", "AAPL", "BUY", "10", "2026-03-02", 1),
        br#"{"trade_id":"T1","version":2,"action":"CANCEL","account_id":"A1","book_id":"B","security_id":"AAPL","sequence":2}"#.to_vec(),
    ];
    assert_eq!(
        run_all(&cancelled, &[], &custodian, "0").breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-05",
            BreakKind::MissingInternal,
            "0",
            "10"
        )]
    );
}

#[test]
fn gaps_count_accepted_first_copies_only() {
    let mut trades = vec![
        trade("T1", "A1", "AAPL", "BUY", "1", "2026-03-02", 10),
        trade("T2", "A1", "AAPL", "BUY", "1", "2026-03-02", 14),
        trade("T3", "A2", "AAPL", "BUY", "1", "2026-03-02", 3),
        trade("T4", "A2", "AAPL", "BUY", "1", "2026-03-02", 5),
    ];
    // A conflicting copy of T1 v1 with sequence 12: rejected, adds nothing.
    trades.push(trade("T1", "A1", "AAPL", "BUY", "2", "2026-03-02", 12));
    // A rejected line with sequence 13 adds nothing either.
    trades.push(br#"{"trade_id":"T9","account_id":"A1","book_id":"B","security_id":"AAPL","side":"BUY","quantity":"0","price":"1","trade_date":"2026-03-02","sequence":13}"#.to_vec());
    let r = run_all(&trades, &[], &[], "0");
    let gap = |a: &str, f: u64, l: u64| GapRow {
        account_id: a.into(),
        first_missing: f,
        last_missing: l,
    };
    assert_eq!(r.gaps, vec![gap("A1", 11, 13), gap("A2", 4, 4)]);
    // The missing events arrive (a CANCEL carries a sequence too): the gaps close.
    trades.push(trade("T5", "A1", "AAPL", "BUY", "1", "2026-03-02", 11));
    trades.push(trade("T6", "A1", "AAPL", "BUY", "1", "2026-03-02", 13));
    trades.push(trade("T7", "A1", "AAPL", "BUY", "1", "2026-03-02", 12));
    trades.push(br#"{"trade_id":"T3","version":2,"action":"CANCEL","account_id":"A2","book_id":"B","security_id":"AAPL","sequence":4}"#.to_vec());
    assert_eq!(run_all(&trades, &[], &[], "0").gaps, vec![]);
}

#[test]
fn rejected_ticks_and_statements_name_line_and_kind() {
    let prices = vec![
        tick("AAPL", "1.123456789", "2026-03-05T16:00:00Z"),
        b"not json".to_vec(),
        tick("AAPL", "1", "2026-03-05T16:00:00Z"),
    ];
    let custodian = vec![
        statement("A1", "AAPL", "10", "2026-13-01"),
        statement("A1", "AAPL", "10", "2026-03-01"),
    ];
    let outcome = run_reconciled(&[], &prices, &custodian, Dec8::ZERO, 2, 2);
    let mut rp: Vec<(u64, String)> = outcome
        .rejected_prices
        .iter()
        .map(|d| (d.source.offset, d.reason.kind.as_str().to_string()))
        .collect();
    rp.sort();
    assert_eq!(
        rp,
        vec![
            (1, "too_many_decimals".to_string()),
            (2, "not_json".to_string())
        ]
    );
    let rc: Vec<(u64, String)> = outcome
        .rejected_custodian
        .iter()
        .map(|d| (d.source.offset, d.reason.kind.as_str().to_string()))
        .collect();
    assert_eq!(rc, vec![(1, "bad_date".to_string())]);
    // A statement for a position never traded is kept: MISSING_INTERNAL.
    assert_eq!(
        reconciled(&outcome).breaks,
        vec![brk(
            "A1_B_AAPL",
            "2026-03-01",
            BreakKind::MissingInternal,
            "0",
            "10"
        )]
    );
}

// ---------- property tests ----------

const ACCOUNTS: [&str; 2] = ["A1", "A2"];
const SECURITIES: [&str; 3] = ["S1", "S2", "S3"];

fn trades_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // (trade index, kind 0..10: mostly NEW, some AMEND/CANCEL of earlier ids), account, security, buy, qty, day, seq
    proptest::collection::vec(
        (0usize..12, 0u8..10, 0usize..2, 0usize..3, any::<bool>(), 1u32..20, 1u32..10, 0u64..30),
        0..30,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (id, kind, a, s, buy, q, day, seq))| {
                let (version, action) = match kind {
                    0 => (2 + i as u64, "AMEND"),
                    1 => (2 + i as u64, "CANCEL"),
                    _ => (1, "NEW"),
                };
                format!(
                    r#"{{"trade_id":"T{id}","version":{version},"action":"{action}","account_id":"{}","book_id":"B","security_id":"{}","side":"{}","quantity":"{q}","price":"{}.5","trade_date":"2026-03-{:02}","sequence":{seq}}}"#,
                    ACCOUNTS[a],
                    SECURITIES[s],
                    if buy { "BUY" } else { "SELL" },
                    10 + q,
                    day
                )
                .into_bytes()
            })
            .collect()
    })
}

fn prices_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec((0usize..3, 1u32..50, 0u32..4, any::<bool>()), 0..10).prop_map(
        |raw| {
            raw.into_iter()
                .map(|(s, p, hour, bad)| {
                    let price = if bad {
                        "0".to_string()
                    } else {
                        format!("{p}.25")
                    };
                    tick(SECURITIES[s], &price, &format!("2026-03-05T1{hour}:00:00Z"))
                })
                .collect()
        },
    )
}

fn custodian_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec((0usize..2, 0usize..4, -20i32..20, 1u32..10), 0..8).prop_map(|raw| {
        raw.into_iter()
            .map(|(a, s, q, day)| {
                // Security index 3 is never traded.
                let security = SECURITIES.get(s).copied().unwrap_or("S9");
                statement(
                    ACCOUNTS[a],
                    security,
                    &q.to_string(),
                    &format!("2026-03-{day:02}"),
                )
            })
            .collect()
    })
}

/// Rows whose updates sum to one (any other non-zero sum fails the test).
fn fold<R: Ord>(rows: Vec<(R, isize)>) -> Vec<R> {
    let mut counts: BTreeMap<R, isize> = BTreeMap::new();
    for (row, diff) in rows {
        *counts.entry(row).or_default() += diff;
    }
    counts
        .into_iter()
        .filter(|(_, c)| *c != 0)
        .map(|(row, c)| {
            assert_eq!(c, 1);
            row
        })
        .collect()
}

/// Feeds each input line at its own engine timestamp (trades in file order,
/// since the duplicate rule depends on it; ticks and statements in any
/// order, even a later line at an earlier time) on `workers` workers, and
/// folds the outputs.
fn run_interleaved(
    trades: &[(Time, Vec<u8>)],
    prices: &[(Time, Vec<u8>)],
    custodian: &[(Time, Vec<u8>)],
    workers: usize,
) -> Reconciled {
    let merged: Arc<Mutex<TimestampOutput>> = Arc::default();
    let sink = merged.clone();
    let inputs = Arc::new((trades.to_vec(), prices.to_vec(), custodian.to_vec()));
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let mut driver = Driver::new(worker, 1, Capture::StateOnly);
        let mut by_time: BTreeMap<Time, Vec<(u8, u64, Vec<u8>)>> = BTreeMap::new();
        if index == 0 {
            for (kind, lines) in [(0u8, &inputs.0), (1, &inputs.1), (2, &inputs.2)] {
                for (i, (time, bytes)) in lines.iter().enumerate() {
                    by_time
                        .entry(*time)
                        .or_default()
                        .push((kind, i as u64 + 1, bytes.clone()));
                }
            }
        }
        for (time, lines) in by_time {
            driver.advance_to(time);
            for (kind, line, bytes) in lines {
                let source = SourceRef {
                    partition: 0,
                    offset: line,
                };
                match kind {
                    0 => driver.send(source, bytes),
                    1 => driver.send_price(source, bytes),
                    _ => driver.send_statement(source, bytes),
                }
            }
        }
        let mut closed = driver.close();
        while !closed.done() {
            worker.step();
        }
        let mut all = sink.lock().unwrap();
        for (_, output) in closed.take_completed() {
            all.merge(output);
        }
    })
    .unwrap();
    let output = std::mem::take(&mut *merged.lock().unwrap());
    let mut valuations: Vec<ValuationRow> = fold(output.valuations);
    valuations.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    let mut breaks: Vec<BreakRow> = fold(output.breaks);
    breaks.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    let mut gaps: Vec<GapRow> = fold(output.gaps);
    gaps.sort_by(|a, b| (&a.account_id, a.first_missing).cmp(&(&b.account_id, b.first_missing)));
    Reconciled {
        valuations,
        breaks,
        gaps,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any batch size and worker count gives the model's answer.
    #[test]
    fn outputs_equal_the_model_for_any_batch_size_and_workers(
        trades in trades_strategy(),
        prices in prices_strategy(),
        custodian in custodian_strategy(),
        batch in 1usize..7,
        workers in 1usize..4,
        tolerance in prop_oneof![Just("0"), Just("1.5")],
    ) {
        let tolerance = d(tolerance);
        let expected = reconcile_model(&trades, &prices, &custodian, tolerance);
        let got = reconciled(&run_reconciled(&trades, &prices, &custodian, tolerance, batch, workers));
        prop_assert_eq!(got, expected);
    }

    /// Any interleaving of the three inputs over engine timestamps (ticks
    /// and statements even out of line order) gives the model's answer.
    #[test]
    fn outputs_do_not_depend_on_the_interleaving(
        trades in trades_strategy(),
        prices in prices_strategy(),
        custodian in custodian_strategy(),
        trade_steps in proptest::collection::vec(0u64..3, 30),
        price_times in proptest::collection::vec(1u64..40, 10),
        statement_times in proptest::collection::vec(1u64..40, 8),
        workers in 1usize..3,
    ) {
        let mut time = 1;
        let timed_trades: Vec<(Time, Vec<u8>)> = trades
            .iter()
            .zip(trade_steps)
            .map(|(line, step)| {
                time += step;
                (time, line.clone())
            })
            .collect();
        let timed_prices: Vec<(Time, Vec<u8>)> =
            prices.iter().cloned().zip(price_times).map(|(l, t)| (t, l)).collect();
        let timed_statements: Vec<(Time, Vec<u8>)> =
            custodian.iter().cloned().zip(statement_times).map(|(l, t)| (t, l)).collect();
        let expected = reconcile_model(&trades, &prices, &custodian, Dec8::ZERO);
        let got = run_interleaved(&timed_trades, &timed_prices, &timed_statements, workers);
        prop_assert_eq!(got, expected);
    }
}
