//! The plain, obviously-correct booking: sort a position's live trades in lot
//! order and replay them one by one against the open lots, exactly as
//! `trades.md` describes. O(K log K) per call. Tests compare the engine's
//! incremental book against it, and benchmarks use it as a baseline.

use std::collections::{BTreeMap, VecDeque};

use super::{notional, summarise, Checked, Overflow};
use crate::decimal::{Amount, Dec8};
use crate::position::{Lot, LotSide, PositionSummary};
use crate::trade::{BookedTrade, LotMethod, Side};

/// Final open lots (sorted by `lot_id`) and summary of one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    /// Open lots, sorted by `lot_id` byte-wise.
    pub lots: Vec<Lot>,
    /// Quantity, lot count, cost basis and realized P&L.
    pub summary: PositionSummary,
}

/// Open lots in the order the method relieves them.
enum OpenLots {
    /// FIFO relieves the front, LIFO the back.
    Ordered(VecDeque<Lot>, LotMethod),
    /// HIFO: key (price rank, opening sequence); the first entry is relieved first.
    ByPrice(BTreeMap<(Dec8, u64), Lot>),
}

impl OpenLots {
    fn new(method: LotMethod) -> OpenLots {
        match method {
            LotMethod::Hifo => OpenLots::ByPrice(BTreeMap::new()),
            other => OpenLots::Ordered(VecDeque::new(), other),
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            OpenLots::Ordered(lots, _) => lots.is_empty(),
            OpenLots::ByPrice(lots) => lots.is_empty(),
        }
    }
    fn push(&mut self, lot: Lot, sequence: u64) {
        match self {
            OpenLots::Ordered(lots, _) => lots.push_back(lot),
            OpenLots::ByPrice(lots) => {
                // Long: highest price first, so rank by negated price; short: lowest first.
                let rank = match lot.side {
                    LotSide::Long => lot.price.negated(),
                    LotSide::Short => lot.price,
                };
                lots.insert((rank, sequence), lot);
            }
        }
    }
    /// The lot the method relieves next, removed.
    fn pop_next(&mut self) -> Option<Lot> {
        match self {
            OpenLots::Ordered(lots, LotMethod::Lifo) => lots.pop_back(),
            OpenLots::Ordered(lots, _) => lots.pop_front(),
            OpenLots::ByPrice(lots) => lots.pop_first().map(|(_, lot)| lot),
        }
    }
    /// Puts back a partially relieved lot where it was.
    fn push_back_next(&mut self, lot: Lot, rank_key: Option<(Dec8, u64)>) {
        match self {
            OpenLots::Ordered(lots, LotMethod::Lifo) => lots.push_back(lot),
            OpenLots::Ordered(lots, _) => lots.push_front(lot),
            OpenLots::ByPrice(lots) => {
                if let Some(key) = rank_key {
                    lots.insert(key, lot);
                }
            }
        }
    }
    fn next_rank_key(&self) -> Option<(Dec8, u64)> {
        match self {
            OpenLots::ByPrice(lots) => lots.keys().next().copied(),
            OpenLots::Ordered(..) => None,
        }
    }
    fn into_vec(self) -> Vec<Lot> {
        match self {
            OpenLots::Ordered(lots, _) => lots.into_iter().collect(),
            OpenLots::ByPrice(lots) => lots.into_values().collect(),
        }
    }
}

/// Books `trades` (any order; sorted here by lot order) under `method`.
pub fn book(method: LotMethod, trades: &[BookedTrade]) -> Result<Booking, Overflow> {
    let mut sorted: Vec<&BookedTrade> = trades.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut open = OpenLots::new(method);
    let mut open_side = LotSide::Long;
    let mut realized = Amount::ZERO;
    for (sequence, trade) in sorted.into_iter().enumerate() {
        let trade_side = match trade.side {
            Side::Buy => LotSide::Long,
            Side::Sell => LotSide::Short,
        };
        let mut remaining = trade.quantity;
        if !open.is_empty() && open_side != trade_side {
            while !remaining.is_zero() {
                let rank_key = open.next_rank_key();
                let Some(mut lot) = open.pop_next() else {
                    break;
                };
                let relieved = remaining.min(lot.quantity);
                let (sell, buy) = match lot.side {
                    LotSide::Long => (trade.price, lot.price),
                    LotSide::Short => (lot.price, trade.price),
                };
                realized = realized
                    .add(notional(relieved, sell)?)?
                    .sub(notional(relieved, buy)?)?;
                remaining = remaining.sub(relieved)?;
                lot.quantity = lot.quantity.sub(relieved)?;
                if !lot.quantity.is_zero() {
                    open.push_back_next(lot, rank_key);
                }
            }
        }
        if !remaining.is_zero() {
            open_side = trade_side;
            let lot = Lot {
                lot_id: trade.key.trade_id.clone(),
                side: trade_side,
                open_date: trade.key.trade_date,
                quantity: remaining,
                price: trade.price,
            };
            open.push(lot, sequence as u64);
        }
    }
    let mut lots = open.into_vec();
    lots.sort_by(|a, b| a.lot_id.cmp(&b.lot_id));
    let summary = summarise(&lots, realized)?;
    Ok(Booking { lots, summary })
}
