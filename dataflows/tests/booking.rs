//! Booking rules: hand-computed cases from `trades.md`, and the incremental
//! chunked book against the plain reference replay under random histories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

use deltabook_dataflows::booking::chunked::{PositionBook, CHUNK_MAX_TRADES};
use deltabook_dataflows::booking::reference;
use deltabook_dataflows::decimal::{Amount, Dec8};
use deltabook_dataflows::position::{Lot, LotSide};
use deltabook_dataflows::trade::{BookedTrade, Date, LotKey, LotMethod, Side};
use proptest::prelude::*;

fn d(text: &str) -> Dec8 {
    text.parse().expect("test decimal")
}

fn a(text: &str) -> Amount {
    text.parse().expect("test amount")
}

fn trade(id: &str, day: u32, side: Side, quantity: &str, price: &str) -> BookedTrade {
    BookedTrade {
        key: LotKey::new(Date::from_ymd(2026, 1, day), None, id.to_string().into()),
        side,
        quantity: d(quantity),
        price: d(price),
    }
}

fn lot(id: &str, side: LotSide, day: u32, quantity: &str, price: &str) -> Lot {
    Lot {
        lot_id: id.to_string().into(),
        side,
        open_date: Date::from_ymd(2026, 1, day),
        quantity: d(quantity),
        price: d(price),
    }
}

use LotSide::{Long, Short};
use Side::{Buy, Sell};

/// Books with the reference and with the chunked book (all at once), checks they agree.
fn book_both(method: LotMethod, trades: &[BookedTrade]) -> reference::Booking {
    let expected = reference::book(method, trades).expect("no overflow");
    let mut incremental = PositionBook::new(method);
    incremental.apply(method, &[], trades).expect("no overflow");
    assert_eq!(incremental.lots(), expected.lots, "{method:?} lots");
    assert_eq!(
        incremental.summary(),
        &expected.summary,
        "{method:?} summary"
    );
    expected
}

#[test]
fn fifo_relieves_earliest_lot_first_with_partial_relief() {
    let trades = [
        trade("T1", 2, Buy, "100", "10"),
        trade("T2", 3, Buy, "100", "12"),
        trade("T3", 4, Sell, "150", "15"),
    ];
    let b = book_both(LotMethod::Fifo, &trades);
    assert_eq!(b.lots, vec![lot("T2", Long, 3, "50", "12")]);
    // (15-10)*100 + (15-12)*50 = 650
    assert_eq!(b.summary.realized_pnl, a("650"));
    assert_eq!(b.summary.quantity, d("50"));
    assert_eq!(b.summary.cost_basis, a("600"));
    assert_eq!(b.summary.lot_count, 1);
}

#[test]
fn lifo_relieves_latest_lot_first() {
    let trades = [
        trade("T1", 2, Buy, "100", "10"),
        trade("T2", 3, Buy, "100", "12"),
        trade("T3", 4, Sell, "150", "15"),
    ];
    let b = book_both(LotMethod::Lifo, &trades);
    assert_eq!(b.lots, vec![lot("T1", Long, 2, "50", "10")]);
    // (15-12)*100 + (15-10)*50 = 550
    assert_eq!(b.summary.realized_pnl, a("550"));
}

#[test]
fn hifo_relieves_highest_price_first_and_lowest_for_shorts() {
    let longs = [
        trade("T1", 2, Buy, "10", "11"),
        trade("T2", 3, Buy, "10", "13"),
        trade("T3", 4, Buy, "10", "13"),
        trade("T4", 5, Sell, "15", "20"),
    ];
    let b = book_both(LotMethod::Hifo, &longs);
    // T2 (13, earlier of the tie) fully, then 5 of T3.
    assert_eq!(
        b.lots,
        vec![
            lot("T1", Long, 2, "10", "11"),
            lot("T3", Long, 4, "5", "13")
        ]
    );
    assert_eq!(b.summary.realized_pnl, a("105"));
    let shorts = [
        trade("S1", 2, Sell, "10", "9"),
        trade("S2", 3, Sell, "10", "7"),
        trade("S3", 4, Buy, "12", "8"),
    ];
    let b = book_both(LotMethod::Hifo, &shorts);
    // Short relief: lowest price first: S2 @7 fully (7-8)*10 = -10, then S1 @9: (9-8)*2 = 2.
    assert_eq!(b.lots, vec![lot("S1", Short, 2, "8", "9")]);
    assert_eq!(b.summary.realized_pnl, a("-8"));
    assert_eq!(b.summary.quantity, d("-8"));
    assert_eq!(b.summary.cost_basis, a("-72"));
}

#[test]
fn crossing_zero_opens_the_remainder_on_the_other_side() {
    for method in [LotMethod::Fifo, LotMethod::Lifo, LotMethod::Hifo] {
        let trades = [
            trade("T1", 2, Buy, "10", "100"),
            trade("T2", 3, Sell, "15", "110"),
            trade("T3", 4, Buy, "3", "105"),
        ];
        let b = book_both(method, &trades);
        assert_eq!(b.lots, vec![lot("T2", Short, 3, "2", "110")], "{method:?}");
        // (110-100)*10 + (110-105)*3 = 115
        assert_eq!(b.summary.realized_pnl, a("115"), "{method:?}");
        assert_eq!(b.summary.quantity, d("-2"));
    }
}

#[test]
fn lot_order_uses_date_then_time_then_id() {
    use deltabook_dataflows::trade::Instant;
    let early = trade("B", 2, Buy, "1", "10");
    assert_eq!(early.key.trade_time(), None);
    let mut late = trade("A", 2, Buy, "1", "20");
    late.key = LotKey::new(
        late.key.trade_date,
        Some(Instant {
            secs: 100,
            nanos: 0,
        }),
        late.key.trade_id.clone(),
    );
    let sell = trade("Z", 3, Sell, "1", "30");
    let b = book_both(LotMethod::Fifo, &[late.clone(), early.clone(), sell]);
    // The trade without a time sorts first, so FIFO relieves "B".
    assert_eq!(b.lots, vec![lot("A", Long, 2, "1", "20")]);
}

#[test]
fn flat_position_has_only_realized_pnl() {
    let trades = [
        trade("T1", 2, Buy, "1.5", "10.25"),
        trade("T2", 3, Sell, "1.5", "10.75"),
    ];
    let b = book_both(LotMethod::Fifo, &trades);
    assert!(b.lots.is_empty());
    assert_eq!(b.summary.realized_pnl, a("0.75"));
    assert_eq!(b.summary.cost_basis, Amount::ZERO);
}

/// A random history: a pool of trades and a sequence of steps, each inserting
/// or removing some of them, sometimes switching the method.
fn pool_strategy() -> impl Strategy<Value = Vec<(u32, bool, u32, u32)>> {
    proptest::collection::vec((0u32..40, any::<bool>(), 1u32..60, 1u32..50), 1..80)
}

fn pool_trades(raw: &[(u32, bool, u32, u32)]) -> Vec<BookedTrade> {
    raw.iter()
        .enumerate()
        .map(|(i, (day, buy, q, p))| {
            let side = if *buy { Buy } else { Sell };
            let mut t = trade(
                &format!("T{i:03}"),
                1 + day % 28,
                side,
                &q.to_string(),
                &format!("{p}.5"),
            );
            t.key.trade_date = Date::from_ymd(2026, 1 + day / 28, 1 + day % 28);
            t
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// After every step, the incremental book equals the reference replay of
    /// the live set, whatever order trades were inserted and removed in.
    #[test]
    fn chunked_book_equals_reference(
        raw in pool_strategy(),
        steps in proptest::collection::vec((proptest::collection::vec((0usize..80, any::<bool>()), 1..8), 0u8..12), 1..25),
    ) {
        let pool = pool_trades(&raw);
        let mut live = vec![false; pool.len()];
        let mut method = LotMethod::Fifo;
        let mut book = PositionBook::new(method);
        // The same history in chunks of at most 8 trades and with a HIFO
        // checkpoint 3 trades before the end: exercises chunk splits and
        // merges, the tail replay, the checkpoint's moves and full re-bookings.
        let mut small_tail = PositionBook::with_limits(method, 8, 3);
        for (changes, method_pick) in steps {
            method = match method_pick { 0 => LotMethod::Lifo, 1 => LotMethod::Hifo, 2 => LotMethod::Fifo, _ => method };
            let (mut removed, mut inserted) = (Vec::new(), Vec::new());
            let mut seen = std::collections::HashSet::new();
            for (index, insert) in changes {
                let i = index % pool.len();
                if !seen.insert(i) { continue; }
                if insert && !live[i] { live[i] = true; inserted.push(pool[i].clone()); }
                if !insert && live[i] { live[i] = false; removed.push(pool[i].clone()); }
            }
            let book_changes = book.apply(method, &removed, &inserted).expect("no overflow");
            let small_changes = small_tail.apply(method, &removed, &inserted).expect("no overflow");
            let current: Vec<BookedTrade> = pool.iter().zip(&live).filter(|(_, l)| **l).map(|(t, _)| t.clone()).collect();
            let expected = reference::book(method, &current).expect("no overflow");
            prop_assert_eq!(book.lots(), expected.lots.clone());
            prop_assert_eq!(book.summary(), &expected.summary);
            prop_assert_eq!(small_tail.lots(), expected.lots);
            prop_assert_eq!(small_tail.summary(), &expected.summary);
            // Both report the same lot changes (only the lots that differ).
            prop_assert_eq!(book_changes, small_changes);
        }
    }
}

/// Large positions span many chunks; inserting and removing single trades
/// anywhere (current-dated and backdated) keeps the book equal to the reference.
#[test]
fn many_chunks_single_changes_match_reference() {
    for method in [LotMethod::Fifo, LotMethod::Lifo, LotMethod::Hifo] {
        let n = CHUNK_MAX_TRADES * 6;
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pool: Vec<BookedTrade> = (0..n + 200)
            .map(|i| {
                let r = next();
                // Drift upwards with frequent sells so that the open window moves around and crosses zero.
                let side = if r % 5 < 2 { Sell } else { Buy };
                let q = 1 + (r >> 8) % 40;
                let p = 50 + (r >> 20) % 100;
                let mut t = trade(&format!("T{i:06}"), 1, side, &q.to_string(), &p.to_string());
                t.key.trade_date = Date::from_ymd(
                    2026,
                    1 + (i as u32 / 28 / 40) % 12,
                    1 + (i as u32 / 40) % 28,
                );
                t
            })
            .collect();
        let mut live: Vec<BookedTrade> = pool[..n].to_vec();
        let mut book = PositionBook::new(method);
        book.apply(method, &[], &live).unwrap();
        for step in 0..60 {
            let r = next() as usize;
            if step % 3 == 0 && live.len() > 10 {
                let gone = live.remove(r % live.len());
                book.apply(method, &[gone], &[]).unwrap();
            } else {
                let t = pool[n + step].clone();
                let mut t2 = t.clone();
                // Backdate half of the inserts into the middle of the history.
                if step % 2 == 0 {
                    t2.key.trade_date = live[r % live.len()].key.trade_date;
                }
                live.push(t2.clone());
                book.apply(method, &[], &[t2]).unwrap();
            }
            let expected = reference::book(method, &live).unwrap();
            assert_eq!(book.lots(), expected.lots, "{method:?} step {step}");
            assert_eq!(book.summary(), &expected.summary, "{method:?} step {step}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A change that fails part way (after its removals and some inserts,
    /// an insert under a key that is booked, or two buys whose quantities
    /// overflow the sums; sometimes with a method switch) leaves the book
    /// half-changed; `lots_before_failed_apply` gives the lots the book
    /// held before it, as the reference books them.
    #[test]
    fn lots_before_a_failed_apply_are_the_last_good_lots(
        raw in pool_strategy(),
        history in proptest::collection::vec(0usize..80, 1..40),
        change in proptest::collection::vec((0usize..80, any::<bool>()), 1..10),
        fail_on_insert in any::<bool>(),
        method_pick in 0u8..3,
        switch in any::<bool>(),
        small in any::<bool>(),
    ) {
        let pool = pool_trades(&raw);
        let methods = [LotMethod::Fifo, LotMethod::Lifo, LotMethod::Hifo];
        let method = methods[usize::from(method_pick)];
        let mut book = if small {
            PositionBook::with_limits(method, 4, 2)
        } else {
            PositionBook::new(method)
        };
        let mut live = vec![false; pool.len()];
        let mut first = Vec::new();
        for i in history {
            let i = i % pool.len();
            if !live[i] { live[i] = true; first.push(pool[i].clone()); }
        }
        book.apply(method, &[], &first).expect("no overflow");
        let current: Vec<BookedTrade> = pool.iter().zip(&live).filter(|(_, l)| **l).map(|(t, _)| t.clone()).collect();
        let expected = reference::book(method, &current).expect("no overflow").lots;
        prop_assert_eq!(book.lots(), expected.clone());

        let (mut removed, mut inserted) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for (index, insert) in change {
            let i = index % pool.len();
            if !seen.insert(i) { continue; }
            if insert && !live[i] { inserted.push(pool[i].clone()); }
            if !insert && live[i] { removed.push(pool[i].clone()); }
        }
        let still_live = pool.iter().enumerate().find(|(i, t)| live[*i] && !removed.contains(t));
        match (fail_on_insert, still_live) {
            (true, Some((_, t))) => {
                // Booked already: the same key with another quantity.
                let mut twin = t.clone();
                twin.quantity = d("7777");
                inserted.push(twin);
            }
            _ => {
                // The second of these enters the book, then overflows its sums.
                for (id, day) in [("HUGE1", 9), ("HUGE2", 1)] {
                    let mut huge = trade(id, day, Buy, "1", "1");
                    huge.quantity = Dec8(i128::MAX / 2 + 1);
                    inserted.push(huge);
                }
            }
        }
        let new_method = if switch { methods[(usize::from(method_pick) + 1) % 3] } else { method };
        prop_assert!(book.apply(new_method, &removed, &inserted).is_err());
        let before = book.lots_before_failed_apply(method, &removed, &inserted).expect("no overflow");
        prop_assert_eq!(before, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Amendments that keep a trade's lot-order key (another side, quantity
    /// or price under the same date, time and id) are swapped in place,
    /// whether the change comes in lot order (as the booking stage passes
    /// it) or not. The book equals the reference replay and reports exactly
    /// the lots that differ from the previous step's.
    #[test]
    fn amendments_under_one_key_equal_reference(
        raw in pool_strategy(),
        variants in proptest::collection::vec((any::<bool>(), 1u32..60, 1u32..50), 1..6),
        steps in proptest::collection::vec((proptest::collection::vec((0usize..80, 0u8..3, 0usize..6), 1..8), 0u8..12, any::<bool>()), 1..25),
    ) {
        let pool = pool_trades(&raw);
        // Version v of pool trade i: the same key with the v-th variant's
        // side, quantity and price (version 0 is the pool trade itself).
        let version = |i: usize, v: usize| -> BookedTrade {
            let mut t = pool[i].clone();
            if v > 0 {
                let (buy, q, p) = variants[(v - 1) % variants.len()];
                t.side = if buy { Buy } else { Sell };
                t.quantity = d(&q.to_string());
                t.price = d(&format!("{p}.25"));
            }
            t
        };
        let mut live: Vec<Option<BookedTrade>> = vec![None; pool.len()];
        let mut method = LotMethod::Fifo;
        let mut book = PositionBook::new(method);
        let mut small = PositionBook::with_limits(method, 4, 2);
        let mut previous = reference::book(method, &[]).expect("no overflow").lots;
        for (changes, method_pick, in_lot_order) in steps {
            let switched = match method_pick { 0 => Some(LotMethod::Lifo), 1 => Some(LotMethod::Hifo), 2 => Some(LotMethod::Fifo), _ => None };
            let (mut removed, mut inserted) = (Vec::new(), Vec::new());
            let mut seen = std::collections::HashSet::new();
            for (index, action, v) in changes {
                let i = index % pool.len();
                if !seen.insert(i) { continue; }
                let new = version(i, v);
                match (action, live[i].clone()) {
                    // Enter.
                    (0, None) => { inserted.push(new.clone()); live[i] = Some(new); }
                    // Amend under the same key (a no-op when unchanged).
                    (1, Some(old)) if old != new => { removed.push(old); inserted.push(new.clone()); live[i] = Some(new); }
                    // Leave.
                    (2, Some(old)) => { removed.push(old); live[i] = None; }
                    _ => {}
                }
            }
            if in_lot_order {
                removed.sort();
                inserted.sort();
            } else {
                removed.reverse();
            }
            if let Some(m) = switched { method = m; }
            let changes = book.apply(method, &removed, &inserted).expect("no overflow");
            let small_changes = small.apply(method, &removed, &inserted).expect("no overflow");
            let current: Vec<BookedTrade> = live.iter().flatten().cloned().collect();
            let expected = reference::book(method, &current).expect("no overflow");
            prop_assert_eq!(book.lots(), expected.lots.clone());
            prop_assert_eq!(book.summary(), &expected.summary);
            prop_assert_eq!(small.lots(), expected.lots.clone());
            prop_assert_eq!(small.summary(), &expected.summary);
            // Exactly the rows that left and the rows that came, by lot id.
            let closed: Vec<Lot> = previous.iter().filter(|l| !expected.lots.contains(l)).cloned().collect();
            let opened: Vec<Lot> = expected.lots.iter().filter(|l| !previous.contains(l)).cloned().collect();
            prop_assert_eq!(&changes.closed, &closed);
            prop_assert_eq!(&changes.opened, &opened);
            prop_assert_eq!(changes, small_changes);
            previous = expected.lots;
        }
    }
}
