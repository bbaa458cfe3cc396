//! Bitemporal queries: `AS OF DATE` (business time) and `AS KNOWN AT`
//! (engine time) over one position with a backdated amendment and a
//! backdated insert, answers computed by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

use std::sync::Arc;

use deltabook_dataflows::query::{csv_line, Plan};
use deltabook_dataflows::runner::{self, RunOptions};
use deltabook_dataflows::trade::LotMethod;

fn trade(
    id: &str,
    version: u32,
    action: &str,
    side: &str,
    qty: &str,
    price: &str,
    date: &str,
) -> Vec<u8> {
    format!(
        r#"{{"trade_id":"{id}","version":{version},"action":"{action}","account_id":"A","book_id":"B","security_id":"X","side":"{side}","quantity":"{qty}","price":"{price}","trade_date":"{date}"}}"#
    )
    .into_bytes()
}

/// One event per engine timestamp (batch size 1), so event i is at time i:
/// 1. T0 BUY 1 @ 50 on 2025-12-31
/// 2. T1 BUY 10 @ 100 on 2026-01-02
/// 3. T2 BUY 10 @ 120 on 2026-01-05
/// 4. T3 SELL 5 @ 130 on 2026-01-06: FIFO relieves T0 (1, +80) and T1
///    (4, +120): realized 200; open T1 6 @ 100, T2 10 @ 120
/// 5. T1 amended, backdated: BUY 10 @ 90: realized 80 + 4 * 40 = 240;
///    open T1 6 @ 90, T2 10 @ 120
/// 6. T4 BUY 3 @ 95 on 2026-01-03, backdated between T1 and T2: the sale
///    still relieves T0 and T1; open T1 6 @ 90, T4 3 @ 95, T2 10 @ 120
fn events() -> Vec<Vec<u8>> {
    vec![
        trade("T0", 1, "NEW", "BUY", "1", "50", "2025-12-31"),
        trade("T1", 1, "NEW", "BUY", "10", "100", "2026-01-02"),
        trade("T2", 1, "NEW", "BUY", "10", "120", "2026-01-05"),
        trade("T3", 1, "NEW", "SELL", "5", "130", "2026-01-06"),
        trade("T1", 2, "AMEND", "BUY", "10", "90", "2026-01-02"),
        trade("T4", 1, "NEW", "BUY", "3", "95", "2026-01-03"),
    ]
}

/// The answer's CSV lines without the header, the same at 1 and 3 workers.
fn rows_with(sql: &str, methods: &[(&str, LotMethod)]) -> Vec<String> {
    let plan = Arc::new(Plan::compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}")));
    let mut seen: Option<Vec<String>> = None;
    for workers in [1, 3] {
        let methods = methods.iter().map(|(s, m)| (s.to_string(), *m)).collect();
        let mut options = RunOptions::new(methods, 1, workers);
        options.query = Some(Arc::clone(&plan));
        let outcome = runner::run(Arc::new(events()), &options, None).expect("run");
        let answer = outcome.query.expect("an answer");
        assert!(answer.errors.is_empty(), "{sql}: {:?}", answer.errors);
        let lines: Vec<String> = answer.rows.iter().map(csv_line).collect();
        match &seen {
            None => seen = Some(lines),
            Some(first) => assert_eq!(first, &lines, "{sql}: {workers} workers"),
        }
    }
    seen.unwrap_or_default()
}

fn rows(sql: &str) -> Vec<String> {
    rows_with(sql, &[])
}

#[test]
fn as_known_at_shows_what_was_reported_before_the_backdated_amendment() {
    assert_eq!(rows("SELECT * FROM positions"), ["A_B_X,19,3,2025,240"]);
    assert_eq!(
        rows("SELECT * FROM positions AS KNOWN AT 4"),
        ["A_B_X,16,2,1800,200"]
    );
    assert_eq!(
        rows("SELECT * FROM positions AS KNOWN AT 5"),
        ["A_B_X,16,2,1740,240"]
    );
    assert_eq!(
        rows("SELECT lot_id, quantity, price FROM lots ORDER BY lot_id AS KNOWN AT 4"),
        ["T1,6,100", "T2,10,120"]
    );
    // Before the first trade: nothing; long after the last: the present.
    assert!(rows("SELECT * FROM positions AS KNOWN AT 0").is_empty());
    assert_eq!(
        rows("SELECT * FROM positions AS KNOWN AT 1000"),
        ["A_B_X,19,3,2025,240"]
    );
    assert_eq!(
        rows("SELECT trade_id, version, price FROM trades ORDER BY trade_id AS KNOWN AT 2"),
        ["T0,1,50", "T1,1,100"]
    );
}

#[test]
fn as_of_date_books_only_the_trades_dated_up_to_it() {
    // The SELL of 2026-01-06 is not in any earlier date's book.
    assert_eq!(
        rows("SELECT * FROM positions AS OF DATE '2026-01-04'"),
        ["A_B_X,14,3,1235,0"]
    );
    assert_eq!(
        rows("SELECT lot_id, open_date, quantity, price FROM lots ORDER BY lot_id AS OF DATE '2026-01-04'"),
        ["T0,2025-12-31,1,50", "T1,2026-01-02,10,90", "T4,2026-01-03,3,95"]
    );
    assert_eq!(
        rows("SELECT * FROM positions AS OF DATE '2026-01-06'"),
        rows("SELECT * FROM positions")
    );
    assert!(rows("SELECT * FROM positions AS OF DATE '2025-12-30'").is_empty());
    assert_eq!(
        rows("SELECT trade_id FROM trades ORDER BY trade_id AS OF DATE '2026-01-02'"),
        ["T0", "T1"]
    );
    // Lots and positions of one date join as the engine's own do.
    assert_eq!(
        rows("SELECT p.position_key, COUNT(*), SUM(l.quantity) = p.quantity FROM lots l JOIN positions p ON l.position_key = p.position_key GROUP BY p.position_key, p.quantity AS OF DATE '2026-01-04'"),
        ["A_B_X,3,true"]
    );
}

#[test]
fn a_backdated_amendment_changes_as_of_date_answers_for_its_date_and_later_only() {
    let before = |date: &str| {
        rows(&format!(
            "SELECT * FROM positions AS OF DATE '{date}' AS KNOWN AT 4"
        ))
    };
    let after = |date: &str| {
        rows(&format!(
            "SELECT * FROM positions AS KNOWN AT 5 AS OF DATE '{date}'"
        ))
    };
    // T1 (2026-01-02) was amended at time 5: dates before it see no change.
    assert_eq!(before("2026-01-01"), ["A_B_X,1,1,50,0"]);
    assert_eq!(after("2026-01-01"), ["A_B_X,1,1,50,0"]);
    assert_eq!(before("2026-01-04"), ["A_B_X,11,2,1050,0"]);
    assert_eq!(after("2026-01-04"), ["A_B_X,11,2,950,0"]);
    assert_eq!(before("2026-01-06"), ["A_B_X,16,2,1800,200"]);
    assert_eq!(after("2026-01-06"), ["A_B_X,16,2,1740,240"]);
}

#[test]
fn as_of_date_books_under_the_lot_method_map() {
    // LIFO at time 4: the sale relieves T2 (the latest lot): 5 @ 120, +50;
    // open T0 1 @ 50, T1 10 @ 100, T2 5 @ 120.
    let lifo = [("A", LotMethod::Lifo)];
    assert_eq!(
        rows_with("SELECT * FROM positions AS KNOWN AT 4", &lifo),
        ["A_B_X,16,3,1650,50"]
    );
    assert_eq!(
        rows_with(
            "SELECT * FROM positions AS OF DATE '2026-01-06' AS KNOWN AT 4",
            &lifo
        ),
        ["A_B_X,16,3,1650,50"]
    );
}

#[test]
fn as_of_date_is_refused_for_tables_without_a_business_date() {
    for table in ["valuations", "breaks", "gaps", "corrections"] {
        let sql = format!("SELECT * FROM {table}\n  AS OF DATE '2026-01-04'");
        let error = Plan::compile(&sql).expect_err(&sql).to_string();
        assert_eq!(
            error,
            format!("AS OF DATE applies to trades, lots and positions, not to {table} (line 2, column 3)")
        );
    }
    let error = Plan::compile("SELECT * FROM lots AS OF DATE '2026-13-01'").unwrap_err();
    assert!(error.to_string().starts_with("AS OF DATE: "), "{error}");
    assert!(
        error.to_string().ends_with("(line 1, column 31)"),
        "{error}"
    );
}
