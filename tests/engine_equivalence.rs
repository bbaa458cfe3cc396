//! The engine's final state equals an independent model of the spec, and it
//! does not depend on batch size, worker count or arrival order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

mod common;

use common::{final_state, generated, model, run};
use deltabook_dataflows::trade::LotMethod;
use proptest::prelude::*;

fn methods() -> Vec<(String, LotMethod)> {
    vec![
        ("ACC1".to_string(), LotMethod::Lifo),
        ("ACC2_EQ-US".to_string(), LotMethod::Hifo),
        ("ACC3".to_string(), LotMethod::Hifo),
        ("ACC3_EQ-EU".to_string(), LotMethod::Lifo),
    ]
}

#[test]
fn generated_stream_equals_the_spec_model() {
    let lines = generated(11, 30, 20_000);
    for methods in [Vec::new(), methods()] {
        let outcome = run(&lines, &methods, 1000, 1);
        assert!(outcome.faults.is_empty());
        let state = final_state(&outcome);
        assert!(
            state.lots.len() > 50,
            "the stream should leave many open lots"
        );
        assert_eq!(state, model(&lines, &methods));
    }
}

#[test]
fn outputs_do_not_depend_on_batch_size_or_workers() {
    let lines = generated(5, 12, 4_000);
    let reference = run(&lines, &methods(), 1000, 1);
    let expected = final_state(&reference);
    let mut expected_rejects: Vec<_> = reference
        .rejected
        .iter()
        .map(|d| (d.source, d.reason.clone()))
        .collect();
    expected_rejects.sort();
    assert!(!expected_rejects.is_empty());
    // Batches of 1,000 and 4,000 lines are shared by the workers in chunks
    // (runner.rs, shared_events.rs): who parses a line must not matter.
    for (batch, workers) in [
        (1, 1),
        (1, 2),
        (7, 2),
        (1000, 2),
        (4_000, 1),
        (4_000, 2),
        (4_000, 3),
    ] {
        let outcome = run(&lines, &methods(), batch, workers);
        assert_eq!(
            final_state(&outcome),
            expected,
            "batch {batch} workers {workers}"
        );
        let mut rejects: Vec<_> = outcome
            .rejected
            .iter()
            .map(|d| (d.source, d.reason.clone()))
            .collect();
        rejects.sort();
        assert_eq!(rejects, expected_rejects, "batch {batch} workers {workers}");
    }
    // Corrections are a function of the batching, but not of the worker count.
    for (batch, workers) in [(7, 2), (1000, 2), (4_000, 3)] {
        let mut one = run(&lines, &methods(), batch, 1).corrections;
        let mut more = run(&lines, &methods(), batch, workers).corrections;
        one.sort();
        more.sort();
        assert_eq!(one, more, "batch {batch} workers {workers}");
    }
}

/// One random event of a small universe. Content is a function of
/// `(trade, version)` so that re-sends are duplicates, never conflicts.
fn event(trade: u8, version: u8, salt: u64) -> Vec<u8> {
    let h = (u64::from(trade) * 7919 + u64::from(version) * 104_729 + salt) % 1_000_003;
    let cancel = (h / 11).is_multiple_of(4);
    let position = ["ACC1_EQ-US_AAPL", "ACC2_EQ-US_MSFT", "ACC3_EQ-EU_SAP"][(h % 3) as usize];
    let mut parts = position.split('_');
    let (account, book, security) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let action = if cancel && version > 1 {
        "CANCEL"
    } else if version > 1 {
        "AMEND"
    } else {
        "NEW"
    };
    let side = if h % 5 < 3 { "BUY" } else { "SELL" };
    let quantity = 1 + h % 50;
    let price = format!("{}.{}", 90 + h % 20, h % 7);
    let day = 1 + (h / 7) % 20;
    let time = if h.is_multiple_of(4) {
        String::new()
    } else {
        format!(r#","trade_time":"2026-03-{day:02}T1{}:00:00Z""#, h % 10)
    };
    format!(
        r#"{{"trade_id":"T{trade}","version":{version},"action":"{action}","account_id":"{account}","book_id":"{book}","security_id":"{security}","side":"{side}","quantity":"{quantity}","price":"{price}","trade_date":"2026-03-{day:02}"{time}}}"#
    )
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any permutation of a set of events (with backdating, amends, cancels,
    /// orphans, duplicates and zero crossings) gives the model's final state.
    #[test]
    fn final_state_is_independent_of_arrival_order(
        specs in proptest::collection::vec((0u8..25, 1u8..4), 5..120),
        salt in 0u64..1000,
        shuffle_seed in any::<u64>(),
        batch in 1usize..20,
        workers in 1usize..3,
    ) {
        let lines: Vec<Vec<u8>> = specs.iter().map(|(t, v)| event(*t, *v, salt)).collect();
        let expected = model(&lines, &methods());
        let mut shuffled = lines.clone();
        let mut state = shuffle_seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(model(&shuffled, &methods()), expected.clone());
        let outcome = run(&shuffled, &methods(), batch, workers);
        prop_assert_eq!(final_state(&outcome), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The booking the engine runs for HIFO (`reference::book`, which the
    /// chunked book re-books with) equals the plain model written from the
    /// spec's text, for every method, on random positions with price ties,
    /// equal dates and zero crossings.
    #[test]
    fn reference_booking_equals_the_plain_model(
        trades in proptest::collection::vec((any::<bool>(), 1u64..40, 0u64..6, 0u64..5, any::<bool>()), 1..60),
    ) {
        use deltabook_dataflows::booking::reference;
        use deltabook_dataflows::decimal::Dec8;
        use deltabook_dataflows::trade::{BookedTrade, Date, LotKey, Side};
        let booked: Vec<BookedTrade> = trades
            .iter()
            .enumerate()
            .map(|(i, (buy, quantity, price, day, late))| BookedTrade {
                key: LotKey::new(Date::from_ymd(2026, 3, 1 + *day as u32), late.then_some(deltabook_dataflows::trade::Instant { secs: 1_772_400_000 + i as i64, nanos: 0 }), format!("T{:03}", (i * 37) % 101).into()),
                side: if *buy { Side::Buy } else { Side::Sell },
                quantity: Dec8(*quantity as i128 * 50_000_000),
                price: Dec8((100 + *price as i128) * 100_000_000),
            })
            .collect();
        for method in [LotMethod::Fifo, LotMethod::Lifo, LotMethod::Hifo] {
            let engine = reference::book(method, &booked).expect("fits");
            let (mut lots, realized) = common::plain_book(method, booked.clone());
            lots.sort_by(|a, b| a.lot_id.cmp(&b.lot_id));
            let mut engine_lots = engine.lots.clone();
            engine_lots.sort_by(|a, b| a.lot_id.cmp(&b.lot_id));
            prop_assert_eq!(&engine_lots, &lots, "{:?}", method);
            prop_assert_eq!(engine.summary.realized_pnl, realized, "{:?}", method);
        }
    }
}
