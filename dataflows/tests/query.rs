//! SQL queries over a run's final tables: hand-computed answers, the same
//! for every worker count and batch size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

use std::sync::Arc;

use deltabook_dataflows::query::{csv_line, Plan};
use deltabook_dataflows::runner::{self, QueryAnswer, RunOptions};

fn trade(id: &str, version: u32, action: &str, key: (&str, &str, &str), rest: &str) -> Vec<u8> {
    let (account, book, security) = key;
    format!(
        r#"{{"trade_id":"{id}","version":{version},"action":"{action}","account_id":"{account}","book_id":"{book}","security_id":"{security}"{rest}}}"#
    )
    .into_bytes()
}

fn fill(side: &str, quantity: &str, price: &str, date: &str) -> String {
    format!(r#","side":"{side}","quantity":"{quantity}","price":"{price}","trade_date":"{date}""#)
}

/// The stream every case reads (FIFO everywhere):
/// - A_B_X: BUY 10 @ 100, BUY 5 @ 110, SELL 12 @ 120 -> open T2 3 @ 110,
///   realized 10 * 20 + 2 * 10 = 220;
/// - A_B_Y: SELL 7 @ 50 -> short T4 7 @ 50;
/// - A_C_X: BUY 1 @ 99.5, then cancelled -> nothing;
/// - A_C_Z: BUY 2 @ 10, amended to BUY 4 @ 10.25.
fn events() -> Vec<Vec<u8>> {
    vec![
        trade(
            "T1",
            1,
            "NEW",
            ("A", "B", "X"),
            &fill("BUY", "10", "100", "2026-01-02"),
        ),
        trade(
            "T5",
            1,
            "NEW",
            ("A", "C", "X"),
            &fill("BUY", "1", "99.5", "2026-01-02"),
        ),
        trade(
            "T2",
            1,
            "NEW",
            ("A", "B", "X"),
            &fill("BUY", "5", "110", "2026-01-03"),
        ),
        trade(
            "T6",
            1,
            "NEW",
            ("A", "C", "Z"),
            &fill("BUY", "2", "10", "2026-01-05"),
        ),
        trade(
            "T4",
            1,
            "NEW",
            ("A", "B", "Y"),
            &fill("SELL", "7", "50", "2026-01-02"),
        ),
        trade(
            "T3",
            1,
            "NEW",
            ("A", "B", "X"),
            &fill("SELL", "12", "120", "2026-01-04"),
        ),
        trade("T5", 2, "CANCEL", ("A", "C", "X"), ""),
        trade(
            "T6",
            2,
            "AMEND",
            ("A", "C", "Z"),
            &fill("BUY", "4", "10.25", "2026-01-05"),
        ),
    ]
}

fn answer(sql: &str, batch_size: usize, workers: usize) -> QueryAnswer {
    let plan = Plan::compile(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut options = RunOptions::new(Vec::new(), batch_size, workers);
    options.query = Some(Arc::new(plan));
    let outcome = runner::run(Arc::new(events()), &options, None).expect("run");
    outcome.query.expect("an answer")
}

/// The answer as CSV lines (header first), checked to be the same for
/// every worker count and batch size.
fn csv(sql: &str) -> Vec<String> {
    let mut seen: Option<Vec<String>> = None;
    for (batch_size, workers) in [(1, 1), (3, 2), (100, 3), (2, 4)] {
        let answer = answer(sql, batch_size, workers);
        assert!(answer.errors.is_empty(), "{sql}: {:?}", answer.errors);
        let mut lines = vec![answer.columns.join(",")];
        lines.extend(answer.rows.iter().map(csv_line));
        match &seen {
            None => seen = Some(lines),
            Some(first) => assert_eq!(
                first, &lines,
                "{sql}: batch {batch_size}, {workers} workers"
            ),
        }
    }
    seen.unwrap_or_default()
}

#[test]
fn positions_as_in_positions_csv() {
    assert_eq!(
        csv("SELECT * FROM positions ORDER BY position_key"),
        [
            "position_key,quantity,lot_count,cost_basis,realized_pnl",
            "A_B_X,3,1,330,220",
            "A_B_Y,-7,1,-350,0",
            "A_C_Z,4,1,41,0",
        ]
    );
}

#[test]
fn join_filter_expression_and_descending_order() {
    assert_eq!(
        csv(
            "SELECT l.lot_id, l.quantity * l.price AS value, p.realized_pnl \
             FROM lots l JOIN positions p ON l.position_key = p.position_key \
             WHERE l.side = 'LONG' ORDER BY value DESC"
        ),
        ["lot_id,value,realized_pnl", "T2,330,220", "T6,41,0"]
    );
}

#[test]
fn aggregates_over_no_rows_give_one_row() {
    assert_eq!(
        csv("SELECT COUNT(*) AS n, SUM(quantity) AS q, AVG(price) AS p FROM lots WHERE price > 1000"),
        ["n,q,p", "0,,"]
    );
}

#[test]
fn trades_are_the_live_booked_versions() {
    assert_eq!(
        csv("SELECT trade_id, version, action, quantity, price, trade_date FROM trades ORDER BY trade_id"),
        [
            "trade_id,version,action,quantity,price,trade_date",
            "T1,1,NEW,10,100,2026-01-02",
            "T2,1,NEW,5,110,2026-01-03",
            "T3,1,NEW,12,120,2026-01-04",
            "T4,1,NEW,7,50,2026-01-02",
            "T6,2,AMEND,4,10.25,2026-01-05",
        ]
    );
    // (100 + 110 + 10.25) / 3, to 32 places, half to even.
    assert_eq!(
        csv("SELECT side, COUNT(*) AS n, AVG(price) AS mean FROM trades GROUP BY side HAVING COUNT(*) > 2 ORDER BY n DESC LIMIT 1"),
        ["side,n,mean", "BUY,3,73.41666666666666666666666666666667"]
    );
}

#[test]
fn top_k_breaks_ties_by_the_written_row() {
    assert_eq!(
        csv("SELECT position_key, lot_count FROM positions ORDER BY lot_count DESC LIMIT 2"),
        ["position_key,lot_count", "A_B_X,1", "A_B_Y,1"]
    );
}

#[test]
fn every_position_change_is_a_correction_row() {
    // One line per timestamp: A_C_X is opened, then closed by the cancel.
    let answer = answer(
        "SELECT as_of, lots_opened FROM corrections WHERE position_key = 'A_C_X' ORDER BY as_of",
        1,
        2,
    );
    let lines: Vec<String> = answer.rows.iter().map(csv_line).collect();
    assert_eq!(
        lines,
        [
            r#"2,"[{""lot_id"":""T5"",""side"":""LONG"",""open_date"":""2026-01-02"",""quantity"":""1"",""price"":""99.5""}]""#,
            "7,[]",
        ]
    );
}

#[test]
fn an_evaluation_error_is_reported_not_answered() {
    let answer = answer("SELECT quantity / (price - price) FROM lots", 2, 2);
    assert_eq!(answer.errors, ["division by zero"]);
}

#[test]
fn group_totals_follow_amendments_and_cancels_at_every_batch_size() {
    // T5 (A_C_X) is booked, then cancelled: its group leaves the answer.
    // T6 is booked as 2 @ 10, then amended to 4 @ 10.25.
    assert_eq!(
        csv(
            "SELECT position_key, COUNT(*) AS n, SUM(quantity * price) AS notional, \
             AVG(quantity) AS mean FROM trades GROUP BY position_key ORDER BY position_key"
        ),
        [
            "position_key,n,notional,mean",
            // 10 * 100 + 5 * 110 + 12 * 120; (10 + 5 + 12) / 3
            "A_B_X,3,2990,9",
            "A_B_Y,1,350,7",
            "A_C_Z,1,41,4",
        ]
    );
}

#[test]
fn a_join_reads_only_the_columns_it_needs_and_answers_the_same() {
    // Lots joined to their position, grouped by the position's quantity
    // sign: the rows are built with only the joined and read columns.
    assert_eq!(
        csv(
            "SELECT p.quantity > 0 AS long, SUM(l.quantity) AS q, COUNT(*) AS n \
             FROM lots l JOIN positions p ON l.position_key = p.position_key \
             GROUP BY p.quantity > 0 ORDER BY long"
        ),
        ["long,q,n", "false,7,1", "true,7,2"]
    );
}

#[test]
fn a_sum_of_text_is_an_error_not_a_zero() {
    let answer = answer("SELECT side, SUM(side) FROM lots GROUP BY side", 2, 2);
    assert!(answer.rows.is_empty(), "{:?}", answer.rows);
    assert!(!answer.errors.is_empty());
    for error in &answer.errors {
        assert_eq!(error, "SUM/AVG need numbers, got text");
    }
}

#[test]
fn totals_taken_before_a_join_report_errors_only_for_rows_that_survive() {
    // A_B_X's lot (3 @ 110) divides by zero, but its position is long and
    // the filter keeps short positions only: no error, as when joining first.
    let sql = |filter: &str| {
        format!(
            "SELECT p.position_key, SUM(l.quantity / (l.price - 110)) AS s, COUNT(*) AS n \
             FROM lots l JOIN positions p ON l.position_key = p.position_key \
             WHERE {filter} GROUP BY p.position_key ORDER BY p.position_key"
        )
    };
    // 7 / (50 - 110), to 32 places, half to even.
    assert_eq!(
        csv(&sql("p.quantity < 0")),
        [
            "position_key,s,n",
            "A_B_Y,-0.11666666666666666666666666666667,1"
        ]
    );
    let kept = answer(&sql("p.quantity > 0"), 2, 2);
    assert_eq!(kept.errors, ["division by zero"]);
}

#[test]
fn totals_before_joins_count_each_joined_row() {
    // Joined twice to positions of the same key: every lot row meets one
    // position row per join, so totals are not multiplied; COUNT(*) over
    // the lots of long positions: A_B_X (1 lot) and A_C_Z (1 lot).
    assert_eq!(
        csv(
            "SELECT COUNT(*) AS n, SUM(l.quantity * l.price) AS v FROM lots l \
             JOIN positions p ON l.position_key = p.position_key \
             JOIN positions q ON p.position_key = q.position_key \
             WHERE q.quantity > 0"
        ),
        ["n,v", "2,371"]
    );
}

#[test]
fn typed_group_totals_answer_as_the_row_path() {
    // Without WHERE these take the typed lane (totals read from the typed
    // lots and positions); `WHERE quantity <> 0` (true on every lot and
    // on these positions' non-flat ones) sends the same query through the
    // row interpreter. Open lots: A_B_X T2 3 @ 110, A_B_Y T4 short 7 @ 50,
    // A_C_Z T6 4 @ 10.25.
    let lots = "SELECT position_key, COUNT(*) AS n, SUM(quantity) AS q, \
                SUM(quantity * price) AS value, AVG(price) AS mean FROM lots";
    let order = "GROUP BY position_key ORDER BY position_key";
    let typed = csv(&format!("{lots} {order}"));
    assert_eq!(
        typed,
        [
            "position_key,n,q,value,mean",
            "A_B_X,1,3,330,110",
            "A_B_Y,1,7,350,50",
            "A_C_Z,1,4,41,10.25",
        ]
    );
    assert_eq!(typed, csv(&format!("{lots} WHERE quantity <> 0 {order}")));
    let by_side = "SELECT side, SUM(price * quantity) AS value, COUNT(quantity) AS n FROM lots";
    let typed = csv(&format!("{by_side} GROUP BY side ORDER BY side"));
    assert_eq!(typed, ["side,value,n", "LONG,371,2", "SHORT,350,1"]);
    assert_eq!(
        typed,
        csv(&format!(
            "{by_side} WHERE quantity <> 0 GROUP BY side ORDER BY side"
        ))
    );
    let positions =
        "SELECT SUM(quantity) AS q, SUM(lot_count) AS lots, COUNT(*) AS n FROM positions";
    let typed = csv(positions);
    assert_eq!(typed, ["q,lots,n", "0,3,3"]);
    assert_eq!(typed, csv(&format!("{positions} WHERE quantity <> 0")));
}
