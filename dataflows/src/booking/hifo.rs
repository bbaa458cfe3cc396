//! HIFO booking with a replay checkpoint near the end of lot order.
//!
//! HIFO relieves the highest-priced open lot first (lowest for a short
//! position), so a change can alter every later relief: there is no small
//! per-chunk context as for FIFO and LIFO. What stays true is that the
//! trades *before* a change are booked exactly as before. So the book keeps
//! the replay state (the open lots, ranked) after all but the last
//! [`TAIL_TRADES`]..2x[`TAIL_TRADES`] trades, and a change that lands after
//! that checkpoint replays only the tail, on the checkpoint state with an
//! undo log, then undoes it. The lots that can differ from the previous
//! booking are the ones either tail replay touched, so only those are
//! compared. Cost: O(tail log n) for a change near the end (a backdated or
//! amended recent trade, a new trade), O(K log K) for a change before the
//! checkpoint (a full re-book, as before, which also moves the checkpoint).
//!
//! The replay is exactly [`super::reference::book`]'s: lots ranked by
//! (price, for a long lot negated, then lot order), a partly relieved lot
//! keeping its rank, zero crossings opening the remainder on the other side.
//! Tests compare it with the reference and with a plain model.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Overflow;
use crate::decimal::Dec8;
use crate::id::Id;
use crate::position::{Lot, LotSide};
use crate::trade::{BookedTrade, LotKey, Side};

/// Trades kept after the checkpoint (between this and twice this).
pub const TAIL_TRADES: usize = 1024;

/// Where an open lot stands in the relief order: the first is relieved first.
type Rank = (Dec8, u64);

/// The state of a HIFO replay after some prefix of the trades in lot order.
#[derive(Clone, Debug, Default)]
struct Replay {
    open: BTreeMap<Rank, Lot>,
    rank_of: HashMap<Id, Rank>,
    open_side: Option<LotSide>,
    /// Trades replayed so far (the next one's sequence number).
    replayed: u64,
}

/// The first value of every key a tail replay changed, to put it back.
#[derive(Default)]
struct Undo {
    open: HashMap<Rank, Option<Lot>>,
    rank_of: HashMap<Id, Option<Rank>>,
    open_side: Option<LotSide>,
    replayed: u64,
}

impl Replay {
    fn set_lot(&mut self, rank: Rank, lot: Option<Lot>, undo: &mut Option<&mut Undo>) {
        let old = match lot {
            Some(lot) => self.open.insert(rank, lot),
            None => self.open.remove(&rank),
        };
        if let Some(undo) = undo.as_deref_mut() {
            undo.open.entry(rank).or_insert(old);
        }
    }

    fn set_rank(&mut self, id: &str, rank: Option<Rank>, undo: &mut Option<&mut Undo>) {
        let old = match rank {
            Some(rank) => self.rank_of.insert(Id::from(id), rank),
            None => self.rank_of.remove(id),
        };
        if let Some(undo) = undo.as_deref_mut() {
            undo.rank_of.entry(Id::from(id)).or_insert(old);
        }
    }

    /// Books one trade (the next in lot order). With `undo`, records how to
    /// put every change back; `touched`, when given, collects the lot ids
    /// changed.
    fn step(
        &mut self,
        trade: &BookedTrade,
        mut undo: Option<&mut Undo>,
        mut touched: Option<&mut HashSet<Id>>,
    ) -> Result<(), Overflow> {
        let side = match trade.side {
            Side::Buy => LotSide::Long,
            Side::Sell => LotSide::Short,
        };
        let mut remaining = trade.quantity;
        if !self.open.is_empty() && self.open_side != Some(side) {
            while !remaining.is_zero() {
                let Some((&rank, _)) = self.open.first_key_value() else {
                    break;
                };
                let Some(mut lot) = self.open.get(&rank).cloned() else {
                    break;
                };
                let relieved = remaining.min(lot.quantity);
                remaining = remaining.checked_sub(relieved).ok_or(Overflow)?;
                lot.quantity = lot.quantity.checked_sub(relieved).ok_or(Overflow)?;
                if let Some(touched) = touched.as_deref_mut() {
                    touched.insert(lot.lot_id.clone());
                }
                if lot.quantity.is_zero() {
                    self.set_rank(&lot.lot_id, None, &mut undo);
                    self.set_lot(rank, None, &mut undo);
                } else {
                    self.set_lot(rank, Some(lot), &mut undo);
                }
            }
        }
        if !remaining.is_zero() {
            self.open_side = Some(side);
            let price_rank = match side {
                LotSide::Long => trade.price.negated(),
                LotSide::Short => trade.price,
            };
            let rank = (price_rank, self.replayed);
            let lot = Lot {
                lot_id: trade.key.trade_id.clone(),
                side,
                open_date: trade.key.trade_date,
                quantity: remaining,
                price: trade.price,
            };
            if let Some(touched) = touched {
                touched.insert(lot.lot_id.clone());
            }
            self.set_rank(&lot.lot_id, Some(rank), &mut undo);
            self.set_lot(rank, Some(lot), &mut undo);
        }
        self.replayed += 1;
        Ok(())
    }

    /// Puts back everything `undo` recorded.
    fn undo(&mut self, undo: Undo) {
        for (rank, old) in undo.open {
            match old {
                Some(lot) => self.open.insert(rank, lot),
                None => self.open.remove(&rank),
            };
        }
        for (id, old) in undo.rank_of {
            match old {
                Some(rank) => self.rank_of.insert(id, rank),
                None => self.rank_of.remove(&id),
            };
        }
        self.open_side = undo.open_side;
        self.replayed = undo.replayed;
    }

    fn lot(&self, id: &str) -> Option<&Lot> {
        self.rank_of.get(id).and_then(|rank| self.open.get(rank))
    }
}

/// The HIFO booking of one position.
#[derive(Clone, Debug)]
pub struct HifoBook {
    /// Trades kept after the checkpoint (between this and twice this).
    tail_trades: usize,
    /// The replay state after the first `checkpoint_len` trades.
    checkpoint: Replay,
    checkpoint_len: usize,
    /// The key of the last trade in the checkpoint.
    checkpoint_last: Option<LotKey>,
    /// The current open lots, by lot id.
    lots: BTreeMap<Id, Lot>,
    /// Lot ids the current tail (the trades after the checkpoint) touched:
    /// every lot that may differ from its checkpoint state.
    tail_touched: HashSet<Id>,
}

/// Lots retracted and asserted by a re-booking.
pub type Changes = (Vec<Lot>, Vec<Lot>);

/// A position's live trades in lot order, as consecutive slices (the
/// chunked book's chunks): indexing costs O(slices), not a copy of K trades.
pub struct Segments<'a> {
    slices: Vec<&'a [BookedTrade]>,
    len: usize,
}

impl<'a> Segments<'a> {
    /// The trades of `slices`, in order.
    pub fn new(slices: Vec<&'a [BookedTrade]>) -> Segments<'a> {
        let len = slices.iter().map(|s| s.len()).sum();
        Segments { slices, len }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The trades from index `start` to `end` (exclusive).
    fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &'a BookedTrade> + '_ {
        let mut skipped = 0;
        self.slices.iter().flat_map(move |slice| {
            let first = skipped;
            skipped += slice.len();
            let from = start.saturating_sub(first).min(slice.len());
            let to = end.saturating_sub(first).min(slice.len());
            slice[from..to.max(from)].iter()
        })
    }

    fn get(&self, index: usize) -> Option<&'a BookedTrade> {
        self.range(index, index + 1).next()
    }
}

impl Default for HifoBook {
    fn default() -> HifoBook {
        HifoBook::with_tail(TAIL_TRADES)
    }
}

impl HifoBook {
    /// An empty book keeping `tail_trades` (at least 1) after its checkpoint
    /// ([`TAIL_TRADES`] by default; tests use small tails).
    pub fn with_tail(tail_trades: usize) -> HifoBook {
        HifoBook {
            tail_trades: tail_trades.max(1),
            checkpoint: Replay::default(),
            checkpoint_len: 0,
            checkpoint_last: None,
            lots: BTreeMap::new(),
            tail_touched: HashSet::new(),
        }
    }

    /// Trades kept after the checkpoint.
    pub fn tail_trades(&self) -> usize {
        self.tail_trades
    }

    /// The open lots, by lot id.
    pub fn lots(&self) -> impl Iterator<Item = &Lot> {
        self.lots.values()
    }

    /// Re-books after a change: `trades` are all the live trades in lot
    /// order, `first_changed` the least key of the trades that entered or
    /// left (`None`: re-book everything, e.g. after a method switch).
    /// Returns the lots retracted and asserted.
    pub fn rebook(
        &mut self,
        trades: &Segments<'_>,
        first_changed: Option<&LotKey>,
    ) -> Result<Changes, Overflow> {
        let tail_ok = match (first_changed, &self.checkpoint_last) {
            (Some(first), Some(last)) => first > last && self.checkpoint_len <= trades.len(),
            (Some(_), None) => self.checkpoint_len == 0,
            (None, _) => false,
        };
        if self.checkpoint_len == 0 && first_changed.is_some() {
            // Everything is tail: a small position re-books plainly; one
            // that grew past twice the tail gets its first checkpoint.
            return if trades.len() <= 2 * self.tail_trades {
                self.rebook_small(trades)
            } else {
                self.rebook_all(trades)
            };
        }
        if !tail_ok {
            return self.rebook_all(trades);
        }
        let changes = self.replay_tail(trades)?;
        if trades.len() - self.checkpoint_len > 2 * self.tail_trades {
            self.advance_checkpoint(trades)?;
        }
        Ok(changes)
    }

    /// Replays the trades after the checkpoint and reports the lots that
    /// differ from the current ones; the checkpoint is left as it was.
    fn replay_tail(&mut self, trades: &Segments<'_>) -> Result<Changes, Overflow> {
        let mut undo = Undo {
            open_side: self.checkpoint.open_side,
            replayed: self.checkpoint.replayed,
            ..Undo::default()
        };
        let mut touched = HashSet::new();
        let mut result = Ok(());
        for trade in trades.range(self.checkpoint_len, trades.len()) {
            result = self
                .checkpoint
                .step(trade, Some(&mut undo), Some(&mut touched));
            if result.is_err() {
                break;
            }
        }
        let changes = match result {
            Ok(()) => {
                let mut ids: Vec<Id> = touched.iter().cloned().collect();
                ids.extend(self.tail_touched.iter().cloned());
                ids.sort_unstable();
                ids.dedup();
                let mut closed = Vec::new();
                let mut opened = Vec::new();
                for id in ids {
                    let new = self.checkpoint.lot(&id);
                    let old = self.lots.get(&id);
                    if new == old {
                        continue;
                    }
                    if let Some(old) = old {
                        closed.push(old.clone());
                    }
                    match new {
                        Some(new) => {
                            opened.push(new.clone());
                            self.lots.insert(id, new.clone());
                        }
                        None => {
                            self.lots.remove(&id);
                        }
                    }
                }
                self.tail_touched = touched;
                Ok((closed, opened))
            }
            Err(e) => Err(e),
        };
        self.checkpoint.undo(undo);
        changes
    }

    /// Moves the checkpoint to `tail_trades` before the end.
    fn advance_checkpoint(&mut self, trades: &Segments<'_>) -> Result<(), Overflow> {
        let target = trades.len().saturating_sub(self.tail_trades);
        for trade in trades.range(self.checkpoint_len, target) {
            self.checkpoint.step(trade, None, None)?;
        }
        self.checkpoint_len = target;
        self.checkpoint_last = target
            .checked_sub(1)
            .and_then(|i| trades.get(i))
            .map(|t| t.key.clone());
        // The ids touched after the old checkpoint still cover every lot that
        // can differ from the new one (a superset is only more comparisons).
        Ok(())
    }

    /// Re-books every trade: a new checkpoint `tail_trades` before the end,
    /// the tail on top, and a full comparison with the current lots.
    fn rebook_all(&mut self, trades: &Segments<'_>) -> Result<Changes, Overflow> {
        let target = trades.len().saturating_sub(self.tail_trades);
        let mut checkpoint = Replay::default();
        for trade in trades.range(0, target) {
            checkpoint.step(trade, None, None)?;
        }
        let mut tail_touched = HashSet::new();
        let mut undo = Undo {
            open_side: checkpoint.open_side,
            replayed: checkpoint.replayed,
            ..Undo::default()
        };
        for trade in trades.range(target, trades.len()) {
            checkpoint.step(trade, Some(&mut undo), Some(&mut tail_touched))?;
        }
        let new: BTreeMap<Id, Lot> = checkpoint
            .open
            .values()
            .map(|lot| (lot.lot_id.clone(), lot.clone()))
            .collect();
        checkpoint.undo(undo);
        let changes = self.replace_lots(new);
        self.checkpoint = checkpoint;
        self.checkpoint_len = target;
        self.checkpoint_last = target
            .checked_sub(1)
            .and_then(|i| trades.get(i))
            .map(|t| t.key.clone());
        self.tail_touched = tail_touched;
        Ok(changes)
    }

    /// A position no longer than twice the tail, with its checkpoint at the
    /// start: one plain replay, no undo log, no touched set, and a full
    /// comparison (as cheap as the tail replay here, and half its cost).
    /// The checkpoint stays at the start; `tail_touched` is not kept, so
    /// the next change is either another small re-book or a full one.
    fn rebook_small(&mut self, trades: &Segments<'_>) -> Result<Changes, Overflow> {
        let mut replay = Replay::default();
        for trade in trades.range(0, trades.len()) {
            replay.step(trade, None, None)?;
        }
        let new: BTreeMap<Id, Lot> = replay
            .open
            .into_values()
            .map(|lot| (lot.lot_id.clone(), lot))
            .collect();
        Ok(self.replace_lots(new))
    }

    /// Makes `new` the current lots; returns the old lots that are not in
    /// `new` as they were, and the new ones that are not in the old.
    fn replace_lots(&mut self, new: BTreeMap<Id, Lot>) -> Changes {
        let old = std::mem::replace(&mut self.lots, new);
        let mut closed = Vec::new();
        let mut opened = Vec::new();
        for (id, lot) in &old {
            if self.lots.get(id) != Some(lot) {
                closed.push(lot.clone());
            }
        }
        for (id, lot) in &self.lots {
            if old.get(id) != Some(lot) {
                opened.push(lot.clone());
            }
        }
        (closed, opened)
    }
}
