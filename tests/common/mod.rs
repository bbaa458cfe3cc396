//! Shared by the integration tests: an independent model of the spec
//! (duplicate rule in arrival order, highest version live, a plain replay
//! per position written from the spec's text) and a runner wrapper.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltabook_dataflows::decimal::{Amount, Dec8};
use deltabook_dataflows::gate::parse_event;
use deltabook_dataflows::position::{Lot, LotSide, PositionSummary};
use deltabook_dataflows::runner::{self, BookOutcome, RunOptions};
use deltabook_dataflows::trade::{BookedTrade, LotMethod, Side, TradeVersion};

/// Final state as sorted rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    pub lots: Vec<(String, Lot)>,
    pub positions: Vec<(String, PositionSummary)>,
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
    let mut accepted: HashMap<(String, u64), TradeVersion> = HashMap::new();
    let mut live: HashMap<String, TradeVersion> = HashMap::new();
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
    let mut by_position: BTreeMap<String, Vec<BookedTrade>> = BTreeMap::new();
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
