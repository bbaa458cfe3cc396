//! Shared by the integration tests: an independent model of the spec
//! (duplicate rule in arrival order, highest version live, a plain replay
//! per position written from the spec's text) and a runner wrapper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltabook_dataflows::decimal::{Amount, Dec8};
use deltabook_dataflows::gate::parse_event;
use deltabook_dataflows::id::Id;
use deltabook_dataflows::position::{Lot, LotSide, PositionSummary};
use deltabook_dataflows::runner::{self, BookOutcome, RunOptions};
use deltabook_dataflows::trade::{BookedTrade, LotMethod, Side, TradeVersion};

/// Final state as sorted rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    pub lots: Vec<(Id, Lot)>,
    pub positions: Vec<(Id, PositionSummary)>,
}

/// Most specific configured method of a position (FIFO by default).
pub fn resolve(methods: &[(String, LotMethod)], position: &str) -> LotMethod {
    let parts: Vec<&str> = position.split('_').collect();
    let scopes = [
        position.to_string(),
        format!("{}_{}", parts[0], parts[1]),
        parts[0].to_string(),
    ];
    for scope in scopes {
        if let Some((_, m)) = methods.iter().find(|(s, _)| *s == scope) {
            return *m;
        }
    }
    LotMethod::Fifo
}

/// The spec, computed directly and independently of the engine: no
/// dataflow, no increments, no fingerprints, no engine booking code. Only
/// the stateless field checks (`parse_event`, tested on their own in
/// `dataflows/src/gate/tests.rs`) and the decimal types are shared.
///
/// Arrival order: the first accepted copy of a `(trade_id, version)` stays;
/// a later copy is a duplicate when its parsed content is equal, else
/// rejected. The live version is the highest accepted. Each position's live
/// trades are sorted in lot order and relieved per the spec's text.
pub fn model(lines: &[Vec<u8>], methods: &[(String, LotMethod)]) -> FinalState {
    let mut accepted: HashMap<(Id, u64), TradeVersion> = HashMap::new();
    let mut live: HashMap<Id, TradeVersion> = HashMap::new();
    for line in lines {
        let Ok(v) = parse_event(line) else { continue };
        let key = (v.trade_id.clone(), v.version);
        if accepted.contains_key(&key) {
            continue; // a duplicate, or a conflicting copy: no state change
        }
        accepted.insert(key, v.clone());
        if live
            .get(&v.trade_id)
            .is_none_or(|cur| cur.version < v.version)
        {
            live.insert(v.trade_id.clone(), v);
        }
    }
    let mut by_position: BTreeMap<Id, Vec<BookedTrade>> = BTreeMap::new();
    for v in live.values() {
        if let Some(b) = v.booked() {
            by_position.entry(v.position_key()).or_default().push(b);
        }
    }
    let mut state = FinalState {
        lots: Vec::new(),
        positions: Vec::new(),
    };
    for (position, trades) in by_position {
        let (lots, realized) = plain_book(resolve(methods, &position), trades);
        let mut summary = PositionSummary {
            realized_pnl: realized,
            ..PositionSummary::default()
        };
        for lot in &lots {
            summary.quantity = summary
                .quantity
                .checked_add(lot.signed_quantity())
                .expect("fits");
            summary.cost_basis = summary
                .cost_basis
                .checked_add(lot.signed_value().expect("fits"))
                .expect("fits");
            summary.lot_count += 1;
        }
        state
            .lots
            .extend(lots.into_iter().map(|l| (position.clone(), l)));
        if !summary.is_omitted() {
            state.positions.push((position, summary));
        }
    }
    state
        .lots
        .sort_by(|a, b| (&a.0, &a.1.lot_id).cmp(&(&b.0, &b.1.lot_id)));
    state
}

/// The spec's booking, as written: replay in lot order; a trade in the
/// position's direction opens a lot; one against it relieves lots chosen by
/// the method (FIFO earliest, LIFO latest, HIFO highest price, or lowest for
/// a short position, ties earliest), crossing zero opens the remainder on
/// the other side. Realized P&L = (sell - buy) * relieved quantity.
/// Returns the open lots and the realized P&L. Quadratic, on purpose plain.
pub fn plain_book(method: LotMethod, mut trades: Vec<BookedTrade>) -> (Vec<Lot>, Amount) {
    trades.sort_by(|a, b| a.key.cmp(&b.key));
    // Open lots in lot order of their opening trade.
    let mut open: Vec<Lot> = Vec::new();
    let mut realized = Amount::default();
    for trade in trades {
        let side = match trade.side {
            Side::Buy => LotSide::Long,
            Side::Sell => LotSide::Short,
        };
        let mut remaining = trade.quantity;
        while remaining > Dec8::ZERO && open.first().is_some_and(|l| l.side != side) {
            let pick = match method {
                LotMethod::Fifo => 0,
                LotMethod::Lifo => open.len() - 1,
                LotMethod::Hifo => {
                    let mut best = 0;
                    for (i, lot) in open.iter().enumerate() {
                        let better = match lot.side {
                            LotSide::Long => lot.price > open[best].price,
                            LotSide::Short => lot.price < open[best].price,
                        };
                        if better {
                            best = i; // strictly better: ties keep the earliest
                        }
                    }
                    best
                }
            };
            let lot = &mut open[pick];
            let relieved = remaining.min(lot.quantity);
            let (sell, buy) = match lot.side {
                LotSide::Long => (trade.price, lot.price),
                LotSide::Short => (lot.price, trade.price),
            };
            let pnl = relieved
                .checked_mul(sell)
                .and_then(|s| relieved.checked_mul(buy).and_then(|b| s.checked_sub(b)))
                .expect("fits");
            realized = realized.checked_add(pnl).expect("fits");
            lot.quantity = lot.quantity.checked_sub(relieved).expect("fits");
            remaining = remaining.checked_sub(relieved).expect("fits");
            if lot.quantity == Dec8::ZERO {
                open.remove(pick);
            }
        }
        if remaining > Dec8::ZERO {
            open.push(Lot {
                lot_id: trade.key.trade_id.clone(),
                side,
                open_date: trade.key.trade_date,
                quantity: remaining,
                price: trade.price,
            });
        }
    }
    (open, realized)
}

/// Runs the engine in memory.
pub fn run(
    lines: &[Vec<u8>],
    methods: &[(String, LotMethod)],
    batch_size: usize,
    workers: usize,
) -> BookOutcome {
    let options = RunOptions::new(methods.to_vec(), batch_size, workers);
    runner::run(Arc::new(lines.to_vec()), &options, None).expect("engine run")
}

/// The engine's final state as sorted rows (omitted positions dropped).
pub fn final_state(outcome: &BookOutcome) -> FinalState {
    let mut lots = outcome.lots.clone();
    lots.sort_by(|a, b| (&a.0, &a.1.lot_id).cmp(&(&b.0, &b.1.lot_id)));
    let mut positions: Vec<_> = outcome
        .positions
        .iter()
        .filter(|(_, s)| !s.is_omitted())
        .cloned()
        .collect();
    positions.sort_by(|a, b| a.0.cmp(&b.0));
    FinalState { lots, positions }
}

/// Lines of a generated stream.
pub fn generated(seed: u64, positions: usize, trades: usize) -> Vec<Vec<u8>> {
    let config = deltabook::generate::GenerateConfig::new(seed, positions, trades);
    let mut bytes = Vec::new();
    deltabook::generate::generate(&config, &mut bytes).expect("generate");
    bytes
        .split(|b| *b == b'\n')
        .map(|l| l.to_vec())
        .collect::<Vec<_>>()[..trades]
        .to_vec()
}

/// The outputs of `reconciliation.md`, as sorted rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciled {
    pub valuations: Vec<deltabook_dataflows::reconcile::ValuationRow>,
    pub breaks: Vec<deltabook_dataflows::reconcile::BreakRow>,
    pub gaps: Vec<deltabook_dataflows::reconcile::GapRow>,
}

/// `reconciliation.md` computed directly from the three files' lines (line
/// numbers are arrival order within each file), independently of the
/// engine's reconciliation code: positions come from [`model`]; the live
/// tick and statement are the greatest `(as_of, line)`; internal quantities
/// are plain sums over the live trades; gaps are found by walking from
/// min(S) to max(S).
pub fn reconcile_model(
    trades: &[Vec<u8>],
    prices: &[Vec<u8>],
    custodian: &[Vec<u8>],
    tolerance: Dec8,
) -> Reconciled {
    use deltabook_dataflows::gate::{parse_price_tick, parse_statement};
    use deltabook_dataflows::reconcile::{BreakKind, BreakRow, GapRow, ValuationRow};
    use std::collections::BTreeSet;

    // Accepted trade versions (first copy of each (trade_id, version)), live versions, sequences.
    let mut accepted: HashMap<(Id, u64), TradeVersion> = HashMap::new();
    let mut live: HashMap<Id, TradeVersion> = HashMap::new();
    let mut sequences: BTreeMap<Id, BTreeSet<u64>> = BTreeMap::new();
    for line in trades {
        let Ok(v) = parse_event(line) else { continue };
        let key = (v.trade_id.clone(), v.version);
        if accepted.contains_key(&key) {
            continue;
        }
        accepted.insert(key, v.clone());
        if let Some(s) = v.sequence {
            sequences.entry(v.account_id.clone()).or_default().insert(s);
        }
        if live
            .get(&v.trade_id)
            .is_none_or(|cur| cur.version < v.version)
        {
            live.insert(v.trade_id.clone(), v);
        }
    }
    let live_trades: Vec<(Id, BookedTrade)> = live
        .values()
        .filter_map(|v| v.booked().map(|b| (v.position_key(), b)))
        .collect();

    let mut live_price: HashMap<Id, ((deltabook_dataflows::trade::Instant, usize), Dec8)> =
        HashMap::new();
    for (i, line) in prices.iter().enumerate() {
        let Ok(t) = parse_price_tick(line) else {
            continue;
        };
        let order = (t.as_of, i);
        if live_price
            .get(&t.security_id)
            .is_none_or(|(o, _)| *o < order)
        {
            live_price.insert(t.security_id, (order, t.price));
        }
    }
    let state = model(trades, &[]);
    let mut valuations = Vec::new();
    for (position, summary) in &state.positions {
        let security = position.rsplit('_').next().unwrap();
        if let Some((_, price)) = live_price.get(security) {
            let market_value = summary.quantity.checked_mul(*price).unwrap();
            valuations.push(ValuationRow {
                position_key: position.clone(),
                price: *price,
                market_value,
                unrealized_pnl: market_value.checked_sub(summary.cost_basis).unwrap(),
            });
        }
    }

    let mut live_statement: BTreeMap<Id, ((deltabook_dataflows::trade::Date, usize), Dec8)> =
        BTreeMap::new();
    for (i, line) in custodian.iter().enumerate() {
        let Ok(s) = parse_statement(line) else {
            continue;
        };
        let order = (s.as_of_date, i);
        let key = s.position_key();
        if live_statement.get(&key).is_none_or(|(o, _)| *o < order) {
            live_statement.insert(key, (order, s.quantity));
        }
    }
    let account = |p: &str| Id::from(p.split('_').next().unwrap());
    let mut latest: HashMap<Id, deltabook_dataflows::trade::Date> = HashMap::new();
    for (position, ((date, _), _)) in &live_statement {
        let entry = latest.entry(account(position)).or_insert(*date);
        *entry = (*entry).max(*date);
    }
    let internal = |position: &str, date: deltabook_dataflows::trade::Date| -> (Dec8, usize) {
        let mut sum = Dec8::ZERO;
        let mut n = 0;
        for (p, t) in &live_trades {
            if p == position && t.key.trade_date <= date {
                let q = match t.side {
                    Side::Buy => t.quantity,
                    Side::Sell => t.quantity.negated(),
                };
                sum = sum.checked_add(q).unwrap();
                n += 1;
            }
        }
        (sum, n)
    };
    let over = |d: Dec8| d.0.unsigned_abs() > tolerance.0.unsigned_abs();
    let mut breaks = Vec::new();
    for (position, ((date, _), custodian)) in &live_statement {
        let (q, n) = internal(position, *date);
        let difference = q.checked_sub(*custodian).unwrap();
        if over(difference) {
            breaks.push(BreakRow {
                position_key: position.clone(),
                as_of_date: *date,
                kind: if n == 0 {
                    BreakKind::MissingInternal
                } else {
                    BreakKind::QuantityMismatch
                },
                internal_quantity: q,
                custodian_quantity: *custodian,
                difference,
            });
        }
    }
    let traded: BTreeSet<Id> = live_trades.iter().map(|(p, _)| p.clone()).collect();
    for position in traded {
        if live_statement.contains_key(&position) {
            continue;
        }
        let Some(date) = latest.get(&account(&position)) else {
            continue;
        };
        let (q, _) = internal(&position, *date);
        if !q.is_zero() && over(q) {
            breaks.push(BreakRow {
                position_key: position.clone(),
                as_of_date: *date,
                kind: BreakKind::MissingExternal,
                internal_quantity: q,
                custodian_quantity: Dec8::ZERO,
                difference: q,
            });
        }
    }
    breaks.sort_by(|a, b| a.position_key.cmp(&b.position_key));

    let mut gaps = Vec::new();
    for (account_id, set) in sequences {
        let (Some(&min), Some(&max)) = (set.first(), set.last()) else {
            continue;
        };
        let mut s = min;
        while s < max {
            if !set.contains(&s) {
                let first = s;
                while !set.contains(&(s + 1)) {
                    s += 1;
                }
                gaps.push(GapRow {
                    account_id: account_id.clone(),
                    first_missing: first,
                    last_missing: s,
                });
            }
            s += 1;
        }
    }
    Reconciled {
        valuations,
        breaks,
        gaps,
    }
}

/// The engine's reconciliation outputs, sorted like the files.
pub fn reconciled(outcome: &BookOutcome) -> Reconciled {
    let mut valuations = outcome.valuations.clone();
    valuations.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    let mut breaks = outcome.breaks.clone();
    breaks.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    let mut gaps = outcome.gaps.clone();
    gaps.sort_by(|a, b| (&a.account_id, a.first_missing).cmp(&(&b.account_id, b.first_missing)));
    Reconciled {
        valuations,
        breaks,
        gaps,
    }
}

/// Runs the engine in memory over trades, ticks and statements.
pub fn run_reconciled(
    trades: &[Vec<u8>],
    prices: &[Vec<u8>],
    custodian: &[Vec<u8>],
    tolerance: Dec8,
    batch_size: usize,
    workers: usize,
) -> BookOutcome {
    let mut options = RunOptions::new(Vec::new(), batch_size, workers);
    options.tolerance = tolerance;
    let extra = runner::ExtraSources {
        prices: Some(Arc::new(prices.to_vec())),
        custodian: Some(Arc::new(custodian.to_vec())),
    };
    runner::run_with(Arc::new(trades.to_vec()), extra, &options, None).expect("engine run")
}
