//! The incremental book of one position: its live trades in lot order, cut
//! into chunks of at most [`CHUNK_MAX_TRADES`] trades, each chunk holding the
//! open lots its own trades contribute.
//!
//! Why this is flat in K for FIFO and LIFO: under both methods the open part
//! of a chunk is a pure function of the chunk's trades and a small *context*
//! derived from sums over the other chunks (FIFO: where the open window of
//! units starts inside this chunk; LIFO: the running position at the chunk's
//! start and the lowest running position after it, clamped to the range the
//! chunk can see). A change rewrites the chunk it lands in and every chunk
//! whose context moved, which is only the chunks at the boundary of the open
//! window; the other chunks' contexts are computed (a few integer additions
//! each) and found unchanged. Cost per change: O(K / CHUNK + CHUNK + lots that
//! really change). Small positions are one chunk and pay nothing more than a
//! plain replay of that chunk.
//!
//! Facts used (both are checked against [`super::reference`] by tests):
//! - FIFO: the k-th unit bought is matched with the k-th unit sold, across
//!   zero crossings too; so with B units bought and S sold, the open lots are
//!   the last B-S bought units (long) or the last S-B sold units (short).
//! - LIFO: with running position X, a long unit at level v in (0, X_end] is
//!   held by the last trade that raised X through v; so a BUY t keeps
//!   max(0, min_{s>=t} X_after(s) - max(X_before(t), 0)) units open (short
//!   positions mirror this).
//! - Every method: realized P&L = sell proceeds - buy cost + value of open
//!   long lots - value of open short lots.
//!
//! HIFO's relief order depends on the prices of all lots open at each sell,
//! so a backdated change can cascade through every later relief: HIFO
//! positions are re-booked from a checkpoint kept near the end of lot order
//! ([`super::hifo`]): O(tail log K) for a change after it, O(K log K) for
//! one before it.

use super::hifo::{HifoBook, Segments, TAIL_TRADES as HIFO_TAIL_TRADES};
use super::{notional, BookError, Checked, Overflow};
use crate::decimal::{Amount, Dec8};
use crate::position::{Lot, LotSide, PositionSummary};
use crate::sorted::diff_sorted;
use crate::trade::{BookedTrade, LotKey, LotMethod, Side};
use smallvec::SmallVec;

/// A chunk is split in two when it grows past this many trades. A change
/// costs O(K / this + this): 2048 keeps K = 1M at ~700 chunks (512 left
/// ~2,600, and LIFO's K=1M / K=1k latency ratio at 3.8x; 2048 gives 1.6x).
pub const CHUNK_MAX_TRADES: usize = 2048;

/// Sums over a chunk's trades, kept up to date on every insert and removal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ChunkSums {
    buy_quantity: Dec8,
    sell_quantity: Dec8,
    buy_notional: Amount,
    sell_notional: Amount,
}

impl ChunkSums {
    fn apply(&mut self, trade: &BookedTrade, insert: bool) -> Result<(), Overflow> {
        let value = notional(trade.quantity, trade.price)?;
        let (quantity, total) = match trade.side {
            Side::Buy => (&mut self.buy_quantity, &mut self.buy_notional),
            Side::Sell => (&mut self.sell_quantity, &mut self.sell_notional),
        };
        if insert {
            *quantity = quantity.add(trade.quantity)?;
            *total = total.add(value)?;
        } else {
            *quantity = quantity.sub(trade.quantity)?;
            *total = total.sub(value)?;
        }
        Ok(())
    }
    fn add(&mut self, other: &ChunkSums) -> Result<(), Overflow> {
        self.buy_quantity = self.buy_quantity.add(other.buy_quantity)?;
        self.sell_quantity = self.sell_quantity.add(other.sell_quantity)?;
        self.buy_notional = self.buy_notional.add(other.buy_notional)?;
        self.sell_notional = self.sell_notional.add(other.sell_notional)?;
        Ok(())
    }
    /// Net quantity bought (buys - sells).
    fn net(&self) -> Result<Dec8, Overflow> {
        self.buy_quantity.sub(self.sell_quantity)
    }
}

/// Everything outside a chunk that its open lots depend on, normalised so
/// that equal contexts mean equal lots.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ChunkContext {
    /// No trade of this chunk holds an open unit.
    Closed,
    /// FIFO: the chunk's units of `side`, numbered 0.. in lot order, are open from `open_from` on.
    Fifo { side: LotSide, open_from: Dec8 },
    /// LIFO, in coordinates where the open side is positive (Y = X long, -X short):
    /// `bound` is the lowest Y after the chunk relative to its start, clamped to
    /// the chunk's own range; `start` is Y at the chunk's start when the zero
    /// floor can bind inside the chunk.
    Lifo {
        side: LotSide,
        bound: Dec8,
        start: Option<Dec8>,
    },
}

#[derive(Clone, Debug, Default)]
struct Chunk {
    /// Live trades in lot order.
    trades: Vec<BookedTrade>,
    /// Open quantity of each trade (parallel to `trades`; its lot's side is
    /// the trade's side). All zero under HIFO.
    open: Vec<Dec8>,
    sums: ChunkSums,
    /// Lowest and highest running position (X) inside the chunk relative to
    /// its start, both including 0; `None` when stale.
    range: Option<(Dec8, Dec8)>,
    /// The context `open` was computed for; `None` when `open` is stale.
    context: Option<ChunkContext>,
    /// Every trade before this index has an open quantity of zero (a lower
    /// bound of the first open trade, exact after a FIFO refresh): a FIFO
    /// refresh stops there once the new open window is behind it too.
    /// (Read and set as a `usize` through [`Chunk::first_open`] and
    /// [`Chunk::set_first_open`].)
    first_open: u32,
    /// Removed trades still in `trades` as ghosts (see [`is_ghost`]), at
    /// most an eighth of them: FIFO and LIFO books only.
    ghosts: u32,
}

/// `index` (a position in a chunk, which holds at most `u32::MAX` trades:
/// the split limit is below it) as the `u32` a chunk keeps.
///
/// # Panics
/// At `u32::MAX` or more: a chunk never holds that many (an invariant).
fn chunk_index(index: usize) -> u32 {
    assert!(
        index < u32::MAX as usize,
        "a chunk holds fewer than u32::MAX trades"
    );
    index as u32
}

/// Room a full chunk of `len` trades gains: a quarter (at least 2) below
/// [`SMALL_CHUNK_TRADES`], where most positions stay and growth by half
/// left ~1.7 trades of room of ~9 a position on the 100k-position stream
/// (~0.6 now), and a half above it, where a growth copies the whole chunk
/// (a full one is ~200 KB). Unused room: at most 2 trades below 8, a fifth
/// of a small chunk from 8 on, a third of a large one.
fn growth(len: usize) -> usize {
    if len < SMALL_CHUNK_TRADES {
        (len / 4).max(2)
    } else {
        len / 2
    }
}

/// Chunks below this many trades grow by a quarter, larger ones by half.
const SMALL_CHUNK_TRADES: usize = 32;

/// A removed trade left in its place with quantity zero, so that a removal
/// does not shift the rest of its chunk (~100 KB in a full one). A ghost
/// keeps its key (the chunk stays sorted, so searches work unchanged),
/// holds no open quantity and adds nothing to any sum or running position:
/// FIFO and LIFO book it as if it were not there. No live trade has
/// quantity zero (the gate rejects it). HIFO books never hold ghosts.
fn is_ghost(trade: &BookedTrade) -> bool {
    trade.quantity.is_zero()
}

impl Chunk {
    fn first_key(&self) -> Option<&LotKey> {
        self.trades.first().map(|t| &t.key)
    }

    /// Trades that are not ghosts.
    fn live_len(&self) -> usize {
        self.trades.len() - self.ghosts as usize
    }

    /// See the field: every trade before this index has nothing open.
    fn first_open(&self) -> usize {
        self.first_open as usize
    }

    fn set_first_open(&mut self, index: usize) {
        self.first_open = chunk_index(index);
    }

    /// Drops the ghosts, keeping every other trade's order and open
    /// quantity (ghosts hold none, so the context, range and sums stay
    /// valid): one pass over the chunk.
    fn purge_ghosts(&mut self) {
        if self.ghosts == 0 {
            return;
        }
        let first_open = self.first_open().min(self.trades.len());
        let live_before = self.trades[..first_open]
            .iter()
            .filter(|t| !is_ghost(t))
            .count();
        self.set_first_open(live_before);
        let mut live = self.trades.iter().map(|t| !is_ghost(t));
        self.open.retain(|_| live.next().unwrap_or(true));
        self.trades.retain(|t| !is_ghost(t));
        self.ghosts = 0;
    }

    fn x_range(&mut self) -> Result<(Dec8, Dec8), Overflow> {
        if let Some(range) = self.range {
            return Ok(range);
        }
        let (mut x, mut low, mut high) = (Dec8::ZERO, Dec8::ZERO, Dec8::ZERO);
        for trade in &self.trades {
            x = match trade.side {
                Side::Buy => x.add(trade.quantity)?,
                Side::Sell => x.sub(trade.quantity)?,
            };
            low = low.min(x);
            high = high.max(x);
        }
        self.range = Some((low, high));
        Ok((low, high))
    }

    fn open_lots(&self) -> impl Iterator<Item = Lot> + '_ {
        self.trades
            .iter()
            .zip(&self.open)
            .filter(|(_, open)| **open > Dec8::ZERO)
            .map(|(trade, open)| lot_of(trade, lot_side(trade.side), *open))
    }
}

/// Lots a change retracted and asserted, as in a correction event. Each list
/// is sorted by `lot_id`; a lot whose quantity changed is in both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LotChanges {
    /// Rows retracted.
    pub closed: Vec<Lot>,
    /// Rows asserted.
    pub opened: Vec<Lot>,
}

impl LotChanges {
    /// True when no lot changed.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.opened.is_empty()
    }
}

/// A book's chunks, the first held inline: most positions never split,
/// and a book then reads its trades through one pointer fewer (with many
/// positions each is cold when its turn comes: a cache miss fewer per
/// change, and one allocation fewer per position).
type Chunks = SmallVec<[Chunk; 1]>;

/// One value per chunk, computed per change and dropped after it: inline
/// for a book of up to two chunks (most positions have one), so a change
/// to such a book allocates none of these lists.
type PerChunk<T> = SmallVec<[T; 2]>;

/// The incremental book of one position (see the module docs).
#[derive(Clone, Debug)]
pub struct PositionBook {
    method: LotMethod,
    chunks: Chunks,
    /// The booking of a HIFO position (chunks hold no open lots then);
    /// `None` under FIFO and LIFO, so those books do not carry it.
    hifo: Option<Box<HifoBook>>,
    /// The trades a HIFO booking keeps after its checkpoint.
    hifo_tail_trades: u32,
    summary: PositionSummary,
    /// A trade entered or left, or the method changed, during the current `apply`.
    touched: bool,
    /// Split a chunk past this many trades; merge one below an eighth of it.
    chunk_max_trades: u32,
}

impl Default for PositionBook {
    /// An empty FIFO book with the production limits.
    fn default() -> PositionBook {
        PositionBook::with_limits(LotMethod::default(), CHUNK_MAX_TRADES, HIFO_TAIL_TRADES)
    }
}

impl PositionBook {
    /// An empty, flat book under `method`.
    pub fn new(method: LotMethod) -> PositionBook {
        PositionBook::with_limits(method, CHUNK_MAX_TRADES, HIFO_TAIL_TRADES)
    }

    /// An empty book that splits chunks past `chunk_max_trades` (at least 2)
    /// and whose HIFO re-booking keeps `hifo_tail_trades` trades after its
    /// checkpoint: tests exercise splits, merges and the checkpoint with
    /// small positions this way. Lots and summaries do not depend on either.
    pub fn with_limits(
        method: LotMethod,
        chunk_max_trades: usize,
        hifo_tail_trades: usize,
    ) -> PositionBook {
        PositionBook {
            method,
            chunks: Chunks::new(),
            hifo: None,
            hifo_tail_trades: u32::try_from(hifo_tail_trades).unwrap_or(u32::MAX),
            summary: PositionSummary::default(),
            touched: false,
            // Below u32::MAX: a chunk holds one trade past it before it splits.
            chunk_max_trades: u32::try_from(chunk_max_trades.clamp(2, u32::MAX as usize - 1))
                .unwrap_or(u32::MAX - 1),
        }
    }

    /// Split a chunk past this many trades.
    fn chunk_max(&self) -> usize {
        self.chunk_max_trades as usize
    }

    /// The lot method the book is under.
    pub fn method(&self) -> LotMethod {
        self.method
    }

    /// Current summary (all zero when flat).
    pub fn summary(&self) -> &PositionSummary {
        &self.summary
    }

    /// True when the book holds no trade.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The latest trade in lot order, if any.
    pub fn last_key(&self) -> Option<&LotKey> {
        // The last chunk holds a live trade (a chunk of ghosts only is dropped).
        self.chunks
            .last()
            .and_then(|c| c.trades.iter().rev().find(|t| !is_ghost(t)))
            .map(|t| &t.key)
    }

    /// The last trade of the last chunk, live or a ghost: where a trade
    /// that comes after every booked one is compared and put. For reading
    /// ahead ([`Self::last_key`] is the last live trade's key).
    pub fn tail(&self) -> Option<&BookedTrade> {
        self.chunks.last().and_then(|c| c.trades.last())
    }

    /// The live trade booked under `key`, if any.
    pub fn get(&self, key: &LotKey) -> Option<&BookedTrade> {
        let (i, at) = self.find(key)?;
        Some(&self.chunks[i].trades[at])
    }

    /// The chunk and index of the trade booked under `key`, if any (a
    /// ghost is not booked).
    fn find(&self, key: &LotKey) -> Option<(usize, usize)> {
        let i = self.chunk_for(key);
        let trades = &self.chunks.get(i)?.trades;
        let at = trades.binary_search_by(|t| t.key.cmp(key)).ok()?;
        (!is_ghost(&trades[at])).then_some((i, at))
    }

    /// Every open lot, sorted by `lot_id`.
    pub fn lots(&self) -> Vec<Lot> {
        if self.method == LotMethod::Hifo {
            return self.hifo.iter().flat_map(|h| h.lots().cloned()).collect();
        }
        let mut lots: Vec<Lot> = self.chunks.iter().flat_map(Chunk::open_lots).collect();
        lots.sort_by(|a, b| a.lot_id.cmp(&b.lot_id));
        lots
    }

    /// The open lots this book held before an [`PositionBook::apply`] of
    /// `removed` and `inserted` that failed part way, `method` being the
    /// book's method before that call: its trades with whatever part of
    /// the change was made undone, booked afresh. The book itself is left
    /// as it is (the caller discards it). A full re-book, so for faults
    /// only; booking is a function of the trades and the method, so these
    /// are the lots the book last reported.
    pub fn lots_before_failed_apply(
        &self,
        method: LotMethod,
        removed: &[BookedTrade],
        inserted: &[BookedTrade],
    ) -> Result<Vec<Lot>, BookError> {
        let mut trades: std::collections::BTreeMap<&LotKey, &BookedTrade> = self
            .chunks
            .iter()
            .flat_map(|c| c.trades.iter())
            .filter(|t| !is_ghost(t))
            .map(|t| (&t.key, t))
            .collect();
        // An inserted trade that made it in leaves; a removed one that
        // left comes back (a trade replaced under its key is in both).
        for trade in inserted {
            if trades.get(&trade.key) == Some(&trade) {
                trades.remove(&trade.key);
            }
        }
        for trade in removed {
            trades.entry(&trade.key).or_insert(trade);
        }
        let trades: Vec<BookedTrade> = trades.into_values().cloned().collect();
        let mut book =
            PositionBook::with_limits(method, self.chunk_max(), self.hifo_tail_trades as usize);
        book.apply(method, &[], &trades)?;
        Ok(book.lots())
    }

    /// Applies one engine timestamp's changes: `removed` trades leave the
    /// book, `inserted` ones enter it (a trade in both is replaced), and the
    /// method becomes `method` (re-booking everything if it changed).
    /// Returns the lots retracted and asserted. On overflow the book must be
    /// discarded by the caller (it names the position).
    pub fn apply(
        &mut self,
        method: LotMethod,
        removed: &[BookedTrade],
        inserted: &[BookedTrade],
    ) -> Result<LotChanges, BookError> {
        self.apply_reusing(method, removed, inserted, &mut LotChanges::default())
    }

    /// [`PositionBook::apply`], the lots retracted and asserted on the way
    /// gathered in `scratch` (emptied first, left empty on success with
    /// its capacity), so a caller that books many changes allocates only
    /// the lists it gets back, each of exactly its length.
    pub fn apply_reusing(
        &mut self,
        method: LotMethod,
        removed: &[BookedTrade],
        inserted: &[BookedTrade],
        scratch: &mut LotChanges,
    ) -> Result<LotChanges, BookError> {
        // The earliest trade (in lot order) this change touches; `None`
        // when the method changes (everything is re-booked then).
        let mut first_changed = removed
            .iter()
            .chain(inserted)
            .map(|t| &t.key)
            .min()
            .cloned();
        // Lots retracted (`closed`) and asserted (`opened`) on the way,
        // netted by `finish`. Held by the caller, not in the book: most
        // books are small and idle, and two empty lists cost each of them
        // 48 bytes.
        let lots = scratch;
        lots.closed.clear();
        lots.opened.clear();
        if method != self.method {
            self.switch_method(method, lots);
            first_changed = None;
        }
        if removed.is_empty() {
            for trade in inserted {
                self.insert(trade)?;
            }
        } else {
            // An amendment that keeps its place in lot order leaves and
            // enters under one key: it is swapped in place, sparing the two
            // shifts of its chunk's later trades (up to ~200 KB) that a
            // removal and an insertion cost. The leaving trades are few and
            // sorted here; each entering one is looked up among them, so a
            // change costs O(inserted x log removed) comparisons on top.
            let mut leaving: Vec<&BookedTrade> = removed.iter().collect();
            leaving.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let mut replaced_by: Vec<Option<&BookedTrade>> = vec![None; leaving.len()];
            let mut entering = Vec::new();
            for new in inserted {
                match leaving.binary_search_by(|t| t.key.cmp(&new.key)) {
                    Ok(j) if replaced_by[j].is_none() => replaced_by[j] = Some(new),
                    _ => entering.push(new),
                }
            }
            for (gone, new) in leaving.into_iter().zip(replaced_by) {
                match new {
                    Some(new) => self.replace(gone, new, lots)?,
                    None => self.remove(gone, lots)?,
                }
            }
            for trade in entering {
                self.insert(trade)?;
            }
        }
        // Summed once for the contexts and the summary.
        let totals = self.totals()?;
        if self.method == LotMethod::Hifo {
            self.rebook_hifo(first_changed.as_ref(), lots)?;
        } else {
            self.refresh_chunks(&totals, lots)?;
        }
        self.touched = false;
        self.finish(&totals, lots)
    }

    /// Moves the book to another method. Chunk lots are kept as the "before"
    /// state when staying with FIFO/LIFO, so only lots that really differ
    /// are reported.
    fn switch_method(&mut self, method: LotMethod, lots: &mut LotChanges) {
        let leaving_hifo = self.method == LotMethod::Hifo;
        let entering_hifo = method == LotMethod::Hifo;
        self.method = method;
        self.touched = true;
        if leaving_hifo {
            if let Some(hifo) = self.hifo.take() {
                lots.closed.extend(hifo.lots().cloned());
            }
        }
        for chunk in &mut self.chunks {
            chunk.context = None;
            if entering_hifo {
                // HIFO reads the trades as they stand: no ghosts.
                chunk.purge_ghosts();
                for (trade, open) in chunk.trades.iter().zip(chunk.open.iter_mut()) {
                    if *open > Dec8::ZERO {
                        lots.closed.push(lot_of(trade, lot_side(trade.side), *open));
                        *open = Dec8::ZERO;
                    }
                }
            }
        }
    }

    /// Index of the chunk that holds (or would hold) `key`.
    fn chunk_for(&self, key: &LotKey) -> usize {
        // Most trades arrive in lot order: at or past the last chunk's
        // first key is the last chunk (what the search below gives too).
        if self
            .chunks
            .last()
            .and_then(Chunk::first_key)
            .is_some_and(|k| k <= key)
        {
            return self.chunks.len() - 1;
        }
        let after = self
            .chunks
            .partition_point(|c| c.first_key().is_some_and(|k| k <= key));
        after.saturating_sub(1)
    }

    fn insert(&mut self, trade: &BookedTrade) -> Result<(), BookError> {
        if self.chunks.is_empty() {
            // Inline: no allocation.
            self.chunks.push(Chunk::default());
        }
        self.touched = true;
        let i = self.chunk_for(&trade.key);
        let chunk = &mut self.chunks[i];
        // An in-order trade goes last: what the search gives, in one comparison.
        let at = if chunk.trades.last().is_none_or(|t| t.key < trade.key) {
            chunk.trades.len()
        } else {
            chunk.trades.partition_point(|t| t.key < trade.key)
        };
        if let Some(held) = chunk.trades.get_mut(at).filter(|t| t.key == trade.key) {
            if !is_ghost(held) {
                return Err(BookError::Invariant(format!(
                    "inserting {:?}, which is booked already",
                    trade.key
                )));
            }
            // The trade comes back to its own place (its open quantity is zero).
            *held = trade.clone();
            chunk.ghosts -= 1;
            chunk.sums.apply(trade, true)?;
            chunk.range = None;
            chunk.context = None;
            return Ok(());
        }
        let len = chunk.trades.len();
        if len == chunk.trades.capacity() {
            chunk.trades.reserve_exact(growth(len));
        }
        if chunk.open.len() == chunk.open.capacity() {
            chunk.open.reserve_exact(growth(len));
        }
        chunk.trades.insert(at, trade.clone());
        chunk.open.insert(at, Dec8::ZERO);
        if at <= chunk.first_open() {
            chunk.first_open += 1;
        }
        chunk.sums.apply(trade, true)?;
        chunk.range = None;
        chunk.context = None;
        if chunk.trades.len() > self.chunk_max() {
            self.split(i)?;
        }
        Ok(())
    }

    /// Cuts chunk `i`, grown past the limit, into two halves. The right
    /// half of the last chunk is where in-order trades keep arriving: it
    /// gets room for a whole chunk up front, so it fills to its next split
    /// without a reallocation (each one copies the chunk). Every other half
    /// holds exactly its trades, so a position keeps at most one chunk
    /// with spare room.
    fn split(&mut self, i: usize) -> Result<(), BookError> {
        let chunk_max = self.chunk_max();
        let last = i + 1 == self.chunks.len();
        let chunk = &mut self.chunks[i];
        chunk.purge_ghosts();
        let len = chunk.trades.len();
        if len <= chunk_max {
            return Ok(());
        }
        let half = len / 2;
        let room = if last { chunk_max + 1 } else { len - half };
        let mut right = Chunk {
            trades: Vec::with_capacity(room),
            open: Vec::with_capacity(room),
            first_open: chunk_index(chunk.first_open().saturating_sub(half)),
            ..Chunk::default()
        };
        right.trades.extend(chunk.trades.drain(half..));
        right.open.extend(chunk.open.drain(half..));
        chunk.set_first_open(chunk.first_open().min(half));
        // The left half keeps the whole chunk's room otherwise: most
        // inserts append to the last chunk, so it would stay half empty.
        chunk.trades.shrink_to_fit();
        chunk.open.shrink_to_fit();
        for t in &right.trades {
            right.sums.apply(t, true)?;
            chunk.sums.apply(t, false)?;
        }
        self.chunks.insert(i + 1, right);
        Ok(())
    }

    /// The chunk and index where `trade` is booked: an error unless the
    /// book holds exactly that trade under its key.
    fn locate(&self, trade: &BookedTrade) -> Result<(usize, usize), BookError> {
        let (i, at) = self.find(&trade.key).ok_or_else(|| {
            BookError::Invariant(format!("removing {:?} that is not booked", trade.key))
        })?;
        if self.chunks[i].trades[at] != *trade {
            return Err(BookError::Invariant(format!(
                "removing {:?}: the booked trade with that key differs",
                trade.key
            )));
        }
        Ok((i, at))
    }

    /// Puts `new` where `gone` is booked (both have one key): what removing
    /// `gone` and inserting `new` does, without moving any other trade.
    /// The chunk's first-open bound stays valid: only the replaced trade's
    /// open quantity changes, to zero until the refresh.
    fn replace(
        &mut self,
        gone: &BookedTrade,
        new: &BookedTrade,
        lots: &mut LotChanges,
    ) -> Result<(), BookError> {
        debug_assert!(gone.key == new.key);
        let (i, at) = self.locate(gone)?;
        self.touched = true;
        let chunk = &mut self.chunks[i];
        let open = std::mem::replace(&mut chunk.open[at], Dec8::ZERO);
        if open > Dec8::ZERO {
            lots.closed.push(lot_of(gone, lot_side(gone.side), open));
        }
        chunk.trades[at] = new.clone();
        chunk.sums.apply(gone, false)?;
        chunk.sums.apply(new, true)?;
        chunk.range = None;
        chunk.context = None;
        Ok(())
    }

    /// Takes `trade` (booked exactly so: [`PositionBook::locate`]) out of
    /// the book. FIFO and LIFO leave a ghost in its place in a chunk of
    /// more than 1/16 of the chunk limit (128 trades), and drop a chunk's
    /// ghosts once they are more than an eighth of it; HIFO, and a smaller
    /// chunk, take it out at once.
    fn remove(&mut self, trade: &BookedTrade, lots: &mut LotChanges) -> Result<(), BookError> {
        let (i, at) = self.locate(trade)?;
        self.touched = true;
        // A small chunk shifts little (most positions are small); measured,
        // this rule neither saved nor cost instructions or peak heap.
        let small = self.chunk_max() / 16;
        let chunk = &mut self.chunks[i];
        let ghosts = self.method != LotMethod::Hifo && chunk.trades.len() > small;
        let open = std::mem::replace(&mut chunk.open[at], Dec8::ZERO);
        if open > Dec8::ZERO {
            lots.closed.push(lot_of(trade, lot_side(trade.side), open));
        }
        chunk.sums.apply(trade, false)?;
        chunk.range = None;
        chunk.context = None;
        if ghosts {
            chunk.trades[at].quantity = Dec8::ZERO;
            chunk.ghosts += 1;
            if chunk.ghosts as usize * 8 > chunk.trades.len() {
                chunk.purge_ghosts();
            }
        } else {
            chunk.trades.remove(at);
            chunk.open.remove(at);
            if at < chunk.first_open() {
                chunk.first_open -= 1;
            }
        }
        let len = chunk.live_len();
        if len == 0 {
            self.chunks.remove(i);
        } else if len < self.chunk_max() / 8
            && i + 1 < self.chunks.len()
            && len + self.chunks[i + 1].live_len() <= self.chunk_max()
        {
            let mut next = self.chunks.remove(i + 1);
            next.purge_ghosts();
            let chunk = &mut self.chunks[i];
            chunk.purge_ghosts();
            let len = chunk.trades.len();
            if chunk.first_open() >= len {
                chunk.set_first_open(len + next.first_open());
            }
            chunk.sums.add(&next.sums)?;
            chunk.trades.extend(next.trades);
            chunk.open.extend(next.open);
            chunk.range = None;
        }
        Ok(())
    }

    /// HIFO: re-book from the checkpoint before `first_changed` (the whole
    /// position when it is before the checkpoint or `None`), and report the
    /// lots that differ from the previous booking.
    fn rebook_hifo(
        &mut self,
        first_changed: Option<&LotKey>,
        lots: &mut LotChanges,
    ) -> Result<(), Overflow> {
        if !self.touched {
            return Ok(());
        }
        let trades = Segments::new(self.chunks.iter().map(|c| c.trades.as_slice()).collect());
        let tail = self.hifo_tail_trades as usize;
        let hifo = self
            .hifo
            .get_or_insert_with(|| Box::new(HifoBook::with_tail(tail)));
        let (closed, opened) = hifo.rebook(&trades, first_changed)?;
        lots.closed.extend(closed);
        lots.opened.extend(opened);
        Ok(())
    }

    /// FIFO / LIFO: compute every chunk's context; recompute the open
    /// quantities of the chunks that changed or whose context moved.
    fn refresh_chunks(
        &mut self,
        totals: &ChunkSums,
        lots: &mut LotChanges,
    ) -> Result<(), Overflow> {
        let contexts = match self.method {
            LotMethod::Fifo => self.fifo_contexts(totals)?,
            _ => self.lifo_contexts(totals)?,
        };
        for (chunk, context) in self.chunks.iter_mut().zip(contexts) {
            if chunk.context.as_ref() == Some(&context) {
                continue;
            }
            let (retired, asserted) = (&mut lots.closed, &mut lots.opened);
            if self.method == LotMethod::Fifo {
                refresh_fifo_chunk(chunk, &context, retired, asserted)?;
            } else {
                let fresh = open_quantities(&chunk.trades, &context)?;
                // LIFO may open any trade: the bound falls back to the start.
                chunk.first_open = 0;
                for ((trade, open), new) in chunk.trades.iter().zip(&mut chunk.open).zip(fresh) {
                    set_open(trade, open, new, retired, asserted);
                }
            }
            chunk.context = Some(context);
        }
        Ok(())
    }

    /// Sums over all chunks: a few additions per chunk, once per change
    /// (the contexts walk the chunks anyway). Kept in no field, so a book
    /// of one chunk (most positions) does not carry its sums twice.
    fn totals(&self) -> Result<ChunkSums, Overflow> {
        let mut totals = ChunkSums::default();
        for chunk in &self.chunks {
            totals.add(&chunk.sums)?;
        }
        Ok(totals)
    }

    fn fifo_contexts(&self, totals: &ChunkSums) -> Result<PerChunk<ChunkContext>, Overflow> {
        let net = totals.net()?;
        let side = if net > Dec8::ZERO {
            LotSide::Long
        } else {
            LotSide::Short
        };
        // Open units of `side` are those numbered >= closed_units (numbering all of that side's units in lot order).
        let closed_units = match side {
            LotSide::Long => totals.sell_quantity,
            LotSide::Short => totals.buy_quantity,
        };
        let mut before = Dec8::ZERO;
        let mut contexts = PerChunk::with_capacity(self.chunks.len());
        for chunk in &self.chunks {
            let len = match side {
                LotSide::Long => chunk.sums.buy_quantity,
                LotSide::Short => chunk.sums.sell_quantity,
            };
            let open_from = clamp(closed_units.sub(before)?, Dec8::ZERO, len);
            contexts.push(if net.is_zero() || open_from == len {
                ChunkContext::Closed
            } else {
                ChunkContext::Fifo { side, open_from }
            });
            before = before.add(len)?;
        }
        Ok(contexts)
    }

    fn lifo_contexts(&mut self, totals: &ChunkSums) -> Result<PerChunk<ChunkContext>, Overflow> {
        let net = totals.net()?;
        let side = if net > Dec8::ZERO {
            LotSide::Long
        } else {
            LotSide::Short
        };
        let n = self.chunks.len();
        // Y = X for a long position, -X for a short one; the open side is positive.
        let mut ranges = PerChunk::with_capacity(n);
        for chunk in &mut self.chunks {
            let (low, high) = chunk.x_range()?;
            ranges.push(match side {
                LotSide::Long => (low, high),
                LotSide::Short => (high.negated(), low.negated()),
            });
        }
        // start[i]: Y at chunk i's start.
        let mut start = PerChunk::with_capacity(n);
        let mut y = Dec8::ZERO;
        for chunk in &self.chunks {
            start.push(y);
            let delta = chunk.sums.net()?;
            y = match side {
                LotSide::Long => y.add(delta)?,
                LotSide::Short => y.sub(delta)?,
            };
        }
        // after_min[i]: the lowest Y at any point after chunk i (None for the last chunk).
        let mut after_min: PerChunk<Option<Dec8>> = PerChunk::from_elem(None, n);
        let mut running: Option<Dec8> = None;
        for i in (0..n).rev() {
            after_min[i] = running;
            let low = start[i].add(ranges[i].0)?;
            running = Some(running.map_or(low, |r| r.min(low)));
        }
        let mut contexts = PerChunk::with_capacity(n);
        for i in 0..n {
            let (low, high) = ranges[i];
            let bound = match after_min[i] {
                Some(m) => clamp(m.sub(start[i])?, low, high),
                None => high,
            };
            let floor_binds = start[i].add(low)? < Dec8::ZERO;
            contexts.push(if net.is_zero() || bound == low {
                ChunkContext::Closed
            } else {
                ChunkContext::Lifo {
                    side,
                    bound,
                    start: floor_binds.then_some(start[i]),
                }
            });
        }
        Ok(contexts)
    }

    /// Cancels the lots both retracted and asserted in `lots`, and
    /// refreshes the summary.
    /// `lots` is left empty, with its capacity.
    fn finish(
        &mut self,
        totals: &ChunkSums,
        lots: &mut LotChanges,
    ) -> Result<LotChanges, BookError> {
        // `diff_sorted` sorts both sides itself.
        let (closed, opened) = diff_sorted(&mut lots.closed, &mut lots.opened);
        let changes = LotChanges { closed, opened };
        let mut summary = self.summary.clone();
        for lot in &changes.closed {
            summary.quantity = summary.quantity.sub(lot.signed_quantity())?;
            summary.cost_basis = summary
                .cost_basis
                .sub(lot.signed_value().ok_or(Overflow)?)?;
            summary.lot_count -= 1;
        }
        for lot in &changes.opened {
            summary.quantity = summary.quantity.add(lot.signed_quantity())?;
            summary.cost_basis = summary
                .cost_basis
                .add(lot.signed_value().ok_or(Overflow)?)?;
            summary.lot_count += 1;
        }
        summary.realized_pnl = totals
            .sell_notional
            .sub(totals.buy_notional)?
            .add(summary.cost_basis)?;
        let net = totals.net()?;
        if summary.quantity != net {
            return Err(BookError::Invariant(format!(
                "open lots hold {} but the trades net {net}",
                summary.quantity
            )));
        }
        self.summary = summary;
        Ok(changes)
    }
}

fn lot_side(side: Side) -> LotSide {
    match side {
        Side::Buy => LotSide::Long,
        Side::Sell => LotSide::Short,
    }
}

fn clamp(value: Dec8, low: Dec8, high: Dec8) -> Dec8 {
    if value < low {
        low
    } else if value > high {
        high
    } else {
        value
    }
}

/// Signed move of `trade` in Y coordinates (positive opens on `side`).
fn y_delta(trade: &BookedTrade, side: LotSide) -> Dec8 {
    if lot_side(trade.side) == side {
        trade.quantity
    } else {
        trade.quantity.negated()
    }
}

fn lot_of(trade: &BookedTrade, side: LotSide, quantity: Dec8) -> Lot {
    Lot {
        lot_id: trade.key.trade_id.clone(),
        side,
        open_date: trade.key.trade_date,
        quantity,
        price: trade.price,
    }
}

/// Sets a trade's open quantity to `new`; when it changes, the lot it held
/// goes to `retired` and the lot it now holds to `asserted`.
fn set_open(
    trade: &BookedTrade,
    open: &mut Dec8,
    new: Dec8,
    retired: &mut Vec<Lot>,
    asserted: &mut Vec<Lot>,
) {
    if *open == new {
        return;
    }
    let side = lot_side(trade.side);
    if *open > Dec8::ZERO {
        retired.push(lot_of(trade, side, *open));
    }
    if new > Dec8::ZERO {
        asserted.push(lot_of(trade, side, new));
    }
    *open = new;
}

/// FIFO: brings one chunk's open quantities to `context`, walking back from
/// its last trade and stopping where every earlier trade is closed both
/// before (`first_open`) and after (the open window starts later): a chunk
/// costs the trades in or after its open window, not all of them. The lots
/// that change are added to `retired` (old quantity) and `asserted` (new).
fn refresh_fifo_chunk(
    chunk: &mut Chunk,
    context: &ChunkContext,
    retired: &mut Vec<Lot>,
    asserted: &mut Vec<Lot>,
) -> Result<(), Overflow> {
    // The open window: units of `side` numbered from `open_from` on, in lot order.
    let window = match *context {
        ChunkContext::Fifo { side, open_from } => Some((side, open_from)),
        _ => None,
    };
    // Units of the window's side that end at or before the current trade's end.
    let mut end = match window {
        Some((LotSide::Long, _)) => chunk.sums.buy_quantity,
        Some((LotSide::Short, _)) => chunk.sums.sell_quantity,
        None => Dec8::ZERO,
    };
    let stop_at = chunk.first_open().min(chunk.trades.len());
    let mut first_open = chunk.trades.len();
    for i in (0..chunk.trades.len()).rev() {
        let trade = &chunk.trades[i];
        let new = match window {
            Some((side, open_from)) if lot_side(trade.side) == side => {
                let start = end.sub(trade.quantity)?;
                let open = if end > open_from {
                    end.sub(start.max(open_from))?
                } else {
                    Dec8::ZERO
                };
                end = start;
                open
            }
            _ => Dec8::ZERO,
        };
        set_open(trade, &mut chunk.open[i], new, retired, asserted);
        if new > Dec8::ZERO {
            first_open = i;
        }
        let window_is_behind = window.is_none_or(|(_, open_from)| end <= open_from);
        if i <= stop_at && window_is_behind {
            break;
        }
    }
    chunk.set_first_open(first_open);
    debug_assert!(chunk.open[..first_open].iter().all(|q| q.is_zero()));
    Ok(())
}

/// LIFO: the open quantity of each of one chunk's trades under `context`.
fn open_quantities(trades: &[BookedTrade], context: &ChunkContext) -> Result<Vec<Dec8>, Overflow> {
    let mut open = vec![Dec8::ZERO; trades.len()];
    match *context {
        ChunkContext::Closed => {}
        ChunkContext::Fifo { side, open_from } => {
            let mut unit = Dec8::ZERO;
            for (i, trade) in trades.iter().enumerate() {
                if lot_side(trade.side) != side {
                    continue;
                }
                let end = unit.add(trade.quantity)?;
                if end > open_from {
                    open[i] = end.sub(unit.max(open_from))?;
                }
                unit = end;
            }
        }
        ChunkContext::Lifo { side, bound, start } => {
            // Work relative to the chunk start; with `start` known, apply the zero floor.
            let origin = start.unwrap_or(Dec8::ZERO);
            let mut after = Vec::with_capacity(trades.len());
            let mut y = origin;
            for trade in trades {
                y = y.add(y_delta(trade, side))?;
                after.push(y);
            }
            let mut suffix_min = origin.add(bound)?;
            for (i, trade) in trades.iter().enumerate().rev() {
                suffix_min = suffix_min.min(after[i]);
                if lot_side(trade.side) != side {
                    continue;
                }
                let before = after[i].sub(trade.quantity)?;
                let floor = if start.is_some() {
                    before.max(Dec8::ZERO)
                } else {
                    before
                };
                let quantity = suffix_min.sub(floor)?;
                if quantity > Dec8::ZERO {
                    open[i] = quantity;
                }
            }
        }
    }
    Ok(open)
}

#[cfg(test)]
#[test]
fn a_chunk_is_240_bytes_ghost_count_included() {
    // The ghost count took what was padding: an idle one-chunk position
    // costs no more than before (docs/ARCHITECTURE.md counts on it). 272
    // bytes until `Dec8` was aligned to 8 bytes, not 16; 256 until the
    // ghost count and `first_open` became `u32`s.
    assert_eq!(std::mem::size_of::<Chunk>(), 240);
}

#[cfg(test)]
#[test]
fn a_book_holds_its_first_chunk_inline() {
    // The book (boxed by the booking stage) and its first chunk are one
    // allocation of 384 bytes, one of mimalloc's size classes (416 before
    // `Dec8` was aligned to 8 bytes, 400 before the chunk's two counts were
    // `u32`s, both in the 448-byte class; 144 + 272 before that, in two):
    // the book's fields besides its chunks (120 bytes before), the inline
    // chunk and the `SmallVec`'s capacity word, padded to the chunk's
    // 16-byte alignment (docs/ARCHITECTURE.md).
    assert_eq!(std::mem::size_of::<PositionBook>(), 384);
    let mut book = PositionBook::new(LotMethod::Fifo);
    let trade = BookedTrade {
        key: LotKey::new(
            crate::trade::Date::from_ymd(2026, 1, 2),
            None,
            crate::id::Id::from("T1"),
        ),
        side: Side::Buy,
        quantity: Dec8(1),
        price: Dec8(1),
    };
    book.insert(&trade).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!book.chunks.spilled(), "one chunk stays inline");
}
