//! Live versions, where the trade id is owned: the duplicate rule (arrival
//! order within a timestamp is source order), the highest accepted version
//! per trade id is live, and each timestamp's net change of a trade's live
//! version leaves as the removal of the old version (by its lot key) and
//! the insertion of the new one's booked form, each carrying the new
//! version as the cause of its position's change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::intake::TradeEvent;
use super::spare_buffers::SpareBuffers;
use super::{DeadLetter, Diff, SourceRef, Time};
use crate::gate::{Prints, Verdict};
use crate::id::Id;
use crate::id_slots::{IdHash, IdSlots, SlotId};
use crate::payload::Payload;
use crate::prefetch::prefetch_all;
use crate::trade::{Action, BookedTrade, Date, LotKey, TradeVersion, NO_TIME};

/// A trade version that touched a position at some time, before the booking
/// stage decides whether it was backdated there ([`LiveChange::cause`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CauseEntry {
    /// Trade id.
    pub trade_id: Id,
    /// The version that became live.
    pub version: u64,
    /// Its action.
    pub action: Action,
    /// Carried from the event.
    pub correlation_id: Option<Id>,
    /// Where the trade sorts in this position (the removed version's key when it left).
    pub key: LotKey,
}

/// What the booking stage receives, keyed by position. The booking stage
/// holds the one copy of each live trade: a trade enters with its booked
/// form and leaves by its key. Each carries the new live version that moved
/// it when that is why the position changes (the correction's cause): the
/// entering trade's position, and the position a trade left when it did
/// not enter the same one again.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BookInput {
    /// A trade enters the position (an update with diff +1); `None` for a
    /// restored trade (a restart rebuilds, it changes nothing).
    Insert(BookedTrade, Option<LiveChange>),
    /// The trade booked under this key leaves the position (an update with
    /// diff -1).
    Remove(LotKey, Option<LiveChange>),
}

/// The new live version of a trade, as a correction's cause names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LiveChange {
    /// The version that became live.
    pub version: u64,
    /// Its action.
    pub action: Action,
    /// Carried from the event.
    pub correlation_id: Option<Id>,
}

impl LiveChange {
    /// The cause this change gives the trade with `key` in one position.
    pub fn cause(&self, key: &LotKey) -> CauseEntry {
        CauseEntry {
            trade_id: key.trade_id.clone(),
            version: self.version,
            action: self.action,
            correlation_id: self.correlation_id.clone(),
            key: key.clone(),
        }
    }
}

/// An accepted event, as the event store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AcceptedEvent {
    /// Engine time it was assigned.
    pub time: Time,
    /// Where it came from.
    pub source: SourceRef,
    /// Its position key.
    pub position_key: Id,
    /// Trade id.
    pub trade_id: Id,
    /// Version.
    pub version: u64,
    /// Action.
    pub action: Action,
    /// Carried from the event.
    pub correlation_id: Option<Id>,
    /// The upstream per-account sequence number, when given.
    pub sequence: Option<u64>,
    /// [`crate::gate::fingerprint`] of the parsed version (what the duplicate
    /// rule compares; persisted so that a restart keeps the rule exact).
    pub fingerprint: u128,
    /// The original bytes (shared with the block they were read in; the
    /// event log keeps them only until the timestamp is committed).
    pub payload: Payload,
}

/// A trade's live version after a timestamp: what a restart needs to book
/// the trade again. Emitted once per trade whose live version changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LiveTrade {
    /// Trade id.
    pub trade_id: Id,
    /// The live (highest accepted) version.
    pub version: u64,
    /// Its position key and booked form; `None` when the live version is a CANCEL.
    pub booked: Option<(Id, BookedTrade)>,
}

/// A trade's state as a restart loads it: its live version and the
/// fingerprint of every accepted version (the duplicate rule's memory).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RestoredTrade {
    /// The live version.
    pub live: LiveTrade,
    /// `(version, fingerprint)` of every accepted version, the live one included.
    pub fingerprints: Vec<(u64, u128)>,
    /// The live version whole, when it is booked and the restart loaded it
    /// (for the `trades` table of queries; booking needs only `live`).
    pub whole: Option<TradeVersion>,
}

/// One update of the booking stage's input collection.
pub(super) type BookUpdate = ((Id, BookInput), Time, Diff);

/// The outputs of [`admit`], one typed stream each.
pub(super) struct VersionStreams<'scope> {
    /// Changes for the booking stage (a collection's updates).
    pub book: StreamVec<'scope, Time, BookUpdate>,
    /// Accepted versions (for the event store).
    pub accepted: StreamVec<'scope, Time, AcceptedEvent>,
    /// Rejected events.
    pub rejected: StreamVec<'scope, Time, DeadLetter>,
    /// Acknowledged duplicates.
    pub duplicates: StreamVec<'scope, Time, SourceRef>,
    /// Trades whose live version changed (for the restart snapshot).
    pub live: StreamVec<'scope, Time, LiveTrade>,
    /// `(account, sequence)` of each accepted event that has a sequence
    /// (what the gap rule reads, without copying the accepted events).
    pub sequences: StreamVec<'scope, Time, (Id, u64)>,
    /// Each trade's new live version whole, as an upsert (empty unless
    /// `trade_versions`).
    pub trades: StreamVec<'scope, Time, TradeUpsert>,
}

/// One timestamp's results, by output.
#[derive(Default)]
struct Emitted {
    book: Vec<BookUpdate>,
    accepted: Vec<AcceptedEvent>,
    rejected: Vec<DeadLetter>,
    duplicates: Vec<SourceRef>,
    live: Vec<LiveTrade>,
    sequences: Vec<(Id, u64)>,
    trades: Vec<TradeUpsert>,
}

/// A trade's live version as an upsert: `Some` while it is booked (not
/// cancelled), `None` once cancelled.
pub type TradeUpsert = (Id, Option<TradeVersion>, Time);

/// Where a trade's live version is booked: the position and the key the
/// booking stage (which holds the one copy of the trade) finds it by. Packed
/// to 20 bytes (4-byte fields only, so the trade's state has room beside
/// it): `position == NOT_BOOKED` for a live CANCEL (or no live version
/// yet); the time as the lot key keeps it ([`LotKey::packed_time`],
/// `time_nanos == NO_TIME` when the trade has no time).
#[derive(Clone, Copy)]
struct BookedAt {
    /// Slot of the position key in [`VersionState::positions`].
    position: SlotId,
    trade_date: Date,
    /// The trade time's seconds, low and high halves.
    time_secs: [u32; 2],
    time_nanos: u32,
}

/// An `i64` as two `u32` halves (low, high), and back.
fn split_secs(secs: i64) -> [u32; 2] {
    let bits = secs as u64;
    [bits as u32, (bits >> 32) as u32]
}

fn join_secs([low, high]: [u32; 2]) -> i64 {
    ((u64::from(high) << 32) | u64::from(low)) as i64
}

/// [`BookedAt::position`] of a trade that is not booked.
const NOT_BOOKED: SlotId = SlotId::MAX;

impl Default for BookedAt {
    fn default() -> BookedAt {
        BookedAt {
            position: NOT_BOOKED,
            trade_date: Date(0),
            time_secs: [0, 0],
            time_nanos: NO_TIME,
        }
    }
}

impl BookedAt {
    /// The position index and lot key of the trade `trade_id`, when booked.
    fn key(&self, trade_id: &Id) -> Option<(SlotId, LotKey)> {
        if self.position == NOT_BOOKED {
            return None;
        }
        let time = (join_secs(self.time_secs), self.time_nanos);
        let key = LotKey::from_packed_time(self.trade_date, time, trade_id.clone());
        Some((self.position, key))
    }
}

/// What the versions stage keeps of one trade id (56 bytes; with its id
/// and table entry about 90 bytes a trade).
///
/// The live version is not kept: outside the timestamp being admitted it
/// is the highest accepted version, which `prints` knows. (A version
/// accepted now that is higher puts the trade in `touched` until the
/// timestamp ends and it becomes live; a lower one changes no maximum.)
#[derive(Default)]
struct TradeState {
    /// The duplicate rule's memory.
    prints: Prints,
    /// Where the live version is booked.
    booked: BookedAt,
    /// Where the trade is in [`VersionState::touched`] while the timestamp
    /// being admitted has touched it (in the 4 bytes `booked` leaves, so a
    /// trade touched again is found without a table of its own).
    touched: TouchedAt,
}

/// An index in [`VersionState::touched`], or none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct TouchedAt(u32);

impl TouchedAt {
    /// Not touched by the timestamp being admitted.
    const NONE: TouchedAt = TouchedAt(u32::MAX);

    /// `index` as a `TouchedAt`.
    ///
    /// # Panics
    /// At `u32::MAX` or more trades made live in one timestamp on one
    /// worker (a batch limit, asserted, not an input error).
    fn at(index: usize) -> TouchedAt {
        assert!(
            index < u32::MAX as usize,
            "too many trades in one timestamp"
        );
        TouchedAt(index as u32)
    }

    /// The index, if touched.
    fn index(self) -> Option<usize> {
        (self != TouchedAt::NONE).then_some(self.0 as usize)
    }
}

impl Default for TouchedAt {
    fn default() -> TouchedAt {
        TouchedAt::NONE
    }
}

/// The state of the versions operator on one worker: the duplicate rule and
/// the live version of each trade it owns.
#[derive(Default)]
struct VersionState {
    /// Emit accepted events and live trades (see `EngineInputs::event_log`).
    event_log: bool,
    /// Emit each new live version whole (see `EngineInputs::trade_versions`).
    trade_versions: bool,
    trades: IdSlots<TradeState>,
    /// Position keys a live trade is booked in, numbered (never removed:
    /// bounded by the positions ever seen).
    positions: IdSlots<()>,
    /// Per timestamp: the trades whose live version changes, each with the
    /// newest version accepted now, in the order they were first touched
    /// (so that making them live walks the versions and the trade slots
    /// about in the order they were allocated). Kept to reuse its memory.
    touched: Vec<Touched>,
    /// Per timestamp: the position-key hash of each entry of `touched`,
    /// in order. Kept to reuse its memory.
    position_hashes: Vec<IdHash>,
}

/// How many events ahead of the one being admitted its trade id's slot
/// is prefetched (found through its table bucket, prefetched twice as
/// many events ahead): enough to cover a miss to memory (~100-150 ns) with
/// the events in between, few enough that the lines stay cached.
const PREFETCH_AHEAD_EVENTS: usize = 8;

/// Starts the lookups in `slots` of two ids ahead: the table bucket of
/// `far` (twice [`PREFETCH_AHEAD_EVENTS`] ahead) and the slot of `near`
/// ([`PREFETCH_AHEAD_EVENTS`] ahead), whose bucket the call
/// [`PREFETCH_AHEAD_EVENTS`] before prefetched.
fn prefetch_ahead<S>(slots: &IdSlots<S>, far: Option<IdHash>, near: Option<IdHash>) {
    if let Some(hash) = far {
        slots.prefetch(hash);
    }
    if let Some(hash) = near {
        slots.prefetch_slot(hash);
    }
}

/// [`prefetch_ahead`] for the events after the one being admitted
/// (`ahead`), by the hashes the candidates carry; and the boxed version
/// of the candidate [`PREFETCH_AHEAD_EVENTS`] ahead, every line of it
/// (the rules and the booked form read most of its fields).
fn prefetch_events_ahead<S>(slots: &IdSlots<S>, ahead: &[TradeEvent]) {
    let candidate_at = |k: usize| match ahead.get(k) {
        Some(TradeEvent::Candidate {
            version,
            trade_hash,
            ..
        }) => Some((version, *trade_hash)),
        _ => None,
    };
    let near = candidate_at(PREFETCH_AHEAD_EVENTS - 1);
    let far = candidate_at(2 * PREFETCH_AHEAD_EVENTS - 1).map(|(_, hash)| hash);
    prefetch_ahead(slots, far, near.map(|(_, hash)| hash));
    if let Some((version, _)) = near {
        prefetch_all(&**version);
    }
}

/// A trade whose live version changes at this timestamp: the newest
/// version accepted now, and that version's position key (as the
/// candidate carried it).
struct Touched {
    slot: SlotId,
    version: Box<TradeVersion>,
    position: Id,
}

impl VersionState {
    /// Where `booked` is booked, as kept in a trade's state.
    /// `hash` is the position key's [`IdHash`] when known.
    fn booked_at(&mut self, booked: Option<&(Id, BookedTrade)>, hash: Option<IdHash>) -> BookedAt {
        let Some((position, trade)) = booked else {
            return BookedAt::default();
        };
        let (time_secs, time_nanos) = trade.key.packed_time();
        let hash = hash.unwrap_or_else(|| IdHash::of(position));
        BookedAt {
            position: self.positions.slot_of_hashed(position, hash),
            trade_date: trade.key.trade_date,
            time_secs: split_secs(time_secs),
            time_nanos,
        }
    }

    /// Admits one timestamp's events, in source order.
    fn step(&mut self, time: Time, batch: &mut Vec<TradeEvent>, emit: &mut Emitted) {
        in_source_order(batch);
        // Most events make one version live: room for them up front, so
        // the outputs are not copied as they grow (the booking changes
        // are counted before they are made, below).
        if self.trade_versions {
            emit.trades.reserve(batch.len());
        }
        // Sequences too: growing a fresh buffer from empty copies it a
        // dozen times over fresh pages.
        emit.sequences.reserve(batch.len());
        if self.event_log {
            emit.accepted.reserve(batch.len());
            emit.live.reserve(batch.len());
        }
        // Trades made live now that leave a booked position: with one
        // entry per trade made live, the booking changes to make room for.
        let mut leaving = 0usize;
        // Each trade id's lookup misses the cache in a table of a million
        // ids, and each boxed version is in memory another worker wrote:
        // both are prefetched some events ahead, by the hash the event
        // carries (computed where the gate read it).
        let mut events = batch.drain(..);
        while let Some(event) = events.next() {
            prefetch_events_ahead(&self.trades, events.as_slice());
            let (source, version, hash, position, print, payload) = match event {
                TradeEvent::Candidate {
                    source,
                    version,
                    trade_hash,
                    position,
                    fingerprint,
                    payload,
                } => (source, version, trade_hash, position, fingerprint, payload),
                TradeEvent::Rejected(dead) => {
                    emit.rejected.push(dead);
                    continue;
                }
                TradeEvent::Restore(restored) => {
                    self.restore(*restored, time, emit);
                    continue;
                }
            };
            let slot = self.trades.slot_of_hashed(&version.trade_id, hash);
            let (_, state) = self.trades.get_mut(slot);
            // The live version, unless this timestamp touched the trade already.
            let live_version = state.prints.highest_version();
            match state.prints.verdict(&version, print) {
                Verdict::Accepted => {
                    if let Some(sequence) = version.sequence {
                        emit.sequences.push((version.account_id.clone(), sequence));
                    }
                    if self.event_log {
                        emit.accepted.push(AcceptedEvent {
                            time,
                            source,
                            position_key: position.clone(),
                            trade_id: version.trade_id.clone(),
                            version: version.version,
                            action: version.action,
                            correlation_id: version.correlation_id.clone(),
                            sequence: version.sequence,
                            fingerprint: print,
                            payload,
                        });
                    }
                    match state.touched.index() {
                        Some(at) => {
                            let newest = &mut self.touched[at];
                            if newest.version.version < version.version {
                                newest.version = version;
                                newest.position = position;
                            }
                        }
                        None => {
                            if live_version < version.version {
                                // Where it is booked changes only once it is live.
                                leaving += usize::from(state.booked.position != NOT_BOOKED);
                                state.touched = TouchedAt::at(self.touched.len());
                                self.touched.push(Touched {
                                    slot,
                                    version,
                                    position,
                                });
                            }
                        }
                    }
                }
                Verdict::Duplicate => emit.duplicates.push(source),
                Verdict::Rejected(reason) => emit.rejected.push(DeadLetter {
                    source,
                    reason,
                    payload: payload.into_vec(),
                }),
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        // Each trade made live leaves its old position (when booked) and
        // enters its new one (unless cancelled): room for exactly that, or
        // one more per CANCEL, so the list is never copied as it grows.
        emit.book.reserve(touched.len() + leaving);
        // The position keys are looked up ahead the same way, and the
        // versions (read again, by now out of the nearest caches) loaded.
        let mut hashes = std::mem::take(&mut self.position_hashes);
        hashes.clear();
        hashes.extend(touched.iter().map(|t| IdHash::of(&t.position)));
        let mut entries = touched.drain(..);
        let mut j = 0;
        while let Some(entry) = entries.next() {
            let hash_at = |k: usize| hashes.get(k).copied();
            let (far, near) = (j + 2 * PREFETCH_AHEAD_EVENTS, j + PREFETCH_AHEAD_EVENTS);
            prefetch_ahead(&self.positions, hash_at(far), hash_at(near));
            if let Some(ahead) = entries.as_slice().get(PREFETCH_AHEAD_EVENTS - 1) {
                prefetch_all(&*ahead.version);
            }
            let Touched {
                slot,
                version,
                position,
            } = entry;
            let hash = hashes[j];
            self.make_live(slot, version, position, hash, time, emit);
            j += 1;
        }
        drop(entries);
        self.position_hashes = hashes;
        self.touched = touched;
    }

    /// Makes `new` the live version of the trade in `slot`: retracts the
    /// old booked form, asserts the new one, names the positions touched
    /// with the new version as their cause (the new version's position when
    /// it is booked, and the old position when the trade left it), and
    /// reports the new live version. `position` is `new`'s position key
    /// (joined where the event was read), `position_hash` its [`IdHash`].
    fn make_live(
        &mut self,
        slot: SlotId,
        new: Box<TradeVersion>,
        position: Id,
        position_hash: IdHash,
        time: Time,
        emit: &mut Emitted,
    ) {
        debug_assert_eq!(position, new.position_key());
        let new_booked = new.booked().map(|b| (position, b));
        let new_at = self.booked_at(new_booked.as_ref(), Some(position_hash));
        let (trade_id, state) = self.trades.get_mut(slot);
        let old = state.booked.key(trade_id);
        debug_assert_eq!(state.prints.highest_version(), new.version);
        state.booked = new_at;
        // Every touched trade comes here once: untouched for the next timestamp.
        state.touched = TouchedAt::NONE;
        let change = LiveChange {
            version: new.version,
            action: new.action,
            correlation_id: new.correlation_id.clone(),
        };
        if let Some((old_position, key)) = old {
            let (position, ()) = self.positions.get(old_position);
            // The trade leaving a position is the cause there unless it
            // enters the same position again (then the entry names it).
            let moved = new_booked.as_ref().is_none_or(|(p, _)| p != position);
            let remove = BookInput::Remove(key, moved.then(|| change.clone()));
            emit.book.push(((position.clone(), remove), time, -1));
        }
        if let Some((position, trade)) = &new_booked {
            let insert = BookInput::Insert(trade.clone(), Some(change));
            emit.book.push(((position.clone(), insert), time, 1));
        }
        if self.trade_versions {
            let live = new_booked.is_some().then(|| (*new).clone());
            emit.trades.push((new.trade_id.clone(), live, time));
        }
        if self.event_log {
            emit.live.push(LiveTrade {
                trade_id: new.trade_id,
                version: new.version,
                booked: new_booked,
            });
        }
    }

    /// Installs a restored trade: the duplicate rule remembers its
    /// fingerprints, its live version becomes live again and (when booked)
    /// is asserted to the booking stage at `time`, with no cause: a restore
    /// changes nothing, it rebuilds.
    fn restore(&mut self, restored: RestoredTrade, time: Time, emit: &mut Emitted) {
        let RestoredTrade {
            live: trade,
            fingerprints,
            whole,
        } = restored;
        let at = self.booked_at(trade.booked.as_ref(), None);
        let slot = self.trades.slot_of(&trade.trade_id);
        let (_, state) = self.trades.get_mut(slot);
        state.prints.restore(fingerprints);
        // A snapshot's fingerprints include its live version, the highest.
        debug_assert_eq!(state.prints.highest_version(), trade.version);
        state.booked = at;
        // Only a booked trade is restored whole (`RestoredTrade::whole`).
        if let (true, Some(whole)) = (self.trade_versions, whole) {
            debug_assert_eq!(whole.version, trade.version);
            emit.trades
                .push((trade.trade_id.clone(), Some(whole), time));
        }
        if let Some((position, booked)) = trade.booked {
            emit.book
                .push(((position, BookInput::Insert(booked, None)), time, 1));
        }
    }
}

/// Admits trade events per trade id, in timestamp order and, within a
/// timestamp, in source order, so the outcome never depends on worker count.
pub(super) fn admit<'scope>(
    events: StreamVec<'scope, Time, TradeEvent>,
    event_log: bool,
    trade_versions: bool,
) -> VersionStreams<'scope> {
    let mut builder = OperatorBuilder::new("Versions".to_owned(), events.scope());
    let mut input = builder.new_input(events, Exchange::new(|e: &TradeEvent| e.route()));
    let (book_out, book) = builder.new_output::<Vec<BookUpdate>>();
    let (accepted_out, accepted) = builder.new_output::<Vec<AcceptedEvent>>();
    let (rejected_out, rejected) = builder.new_output::<Vec<DeadLetter>>();
    let (duplicates_out, duplicates) = builder.new_output::<Vec<SourceRef>>();
    let (live_out, live) = builder.new_output::<Vec<LiveTrade>>();
    let (sequences_out, sequences) = builder.new_output::<Vec<(Id, u64)>>();
    let (trades_out, trades) = builder.new_output::<Vec<TradeUpsert>>();
    let mut book_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(book_out);
    let mut accepted_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(accepted_out);
    let mut rejected_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(rejected_out);
    let mut duplicates_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(duplicates_out);
    let mut live_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(live_out);
    let mut sequences_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(sequences_out);
    let mut trades_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(trades_out);
    builder.build(move |_initial| {
        let mut state = VersionState {
            event_log,
            trade_versions,
            ..VersionState::default()
        };
        // Per time: one capability per output, and the events.
        let mut pending: BTreeMap<Time, (Vec<Capability<Time>>, Vec<TradeEvent>)> = BTreeMap::new();
        let mut spare: SpareBuffers<TradeEvent> = SpareBuffers::default();
        move |frontiers| {
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else {
                    return;
                };
                let entry = pending.entry(time).or_insert_with(|| {
                    (
                        (0..OUTPUTS).map(|port| cap.delayed(&time, port)).collect(),
                        spare.take(),
                    )
                });
                for batch in data {
                    entry.1.append(batch);
                }
            });
            let mut book_h = book_out.activate();
            let mut accepted_h = accepted_out.activate();
            let mut rejected_h = rejected_out.activate();
            let mut duplicates_h = duplicates_out.activate();
            let mut live_h = live_out.activate();
            let mut sequences_h = sequences_out.activate();
            let mut trades_h = trades_out.activate();
            while let Some(time) = pending.keys().next().copied() {
                if frontiers[0].less_equal(&time) {
                    break;
                }
                let Some((caps, mut batch)) = pending.remove(&time) else {
                    break;
                };
                let mut out = Emitted::default();
                state.step(time, &mut batch, &mut out);
                spare.give_back(batch);
                book_h.session(&caps[0]).give_container(&mut out.book);
                accepted_h
                    .session(&caps[1])
                    .give_container(&mut out.accepted);
                rejected_h
                    .session(&caps[2])
                    .give_container(&mut out.rejected);
                duplicates_h
                    .session(&caps[3])
                    .give_container(&mut out.duplicates);
                live_h.session(&caps[4]).give_container(&mut out.live);
                sequences_h
                    .session(&caps[5])
                    .give_container(&mut out.sequences);
                trades_h.session(&caps[6]).give_container(&mut out.trades);
            }
        }
    });
    VersionStreams {
        book,
        accepted,
        rejected,
        duplicates,
        live,
        sequences,
        trades,
    }
}

/// The operator's outputs: book, accepted, rejected, duplicates, live, sequences.
const OUTPUTS: usize = 7;

/// Sorts events by source position (a stable sort, so restored trades,
/// which have no source, come first in the order they came).
fn in_source_order(batch: &mut [TradeEvent]) {
    let source = |p: &TradeEvent| match p {
        TradeEvent::Candidate { source, .. } => Some(*source),
        TradeEvent::Rejected(d) => Some(d.source),
        TradeEvent::Restore(_) => None,
    };
    if !batch.is_sorted_by_key(source) {
        batch.sort_by_key(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal::Dec8;
    use crate::trade::{Instant, Side};

    /// The per-trade memory budget of this stage (docs/bench): a trade's
    /// state, its id and its table entry.
    #[test]
    fn a_trades_state_stays_within_its_budget() {
        assert_eq!(std::mem::size_of::<Prints>(), 32);
        assert_eq!(std::mem::size_of::<BookedAt>(), 20);
        assert!(std::mem::size_of::<TradeState>() <= 56);
        assert!(std::mem::size_of::<(Id, TradeState)>() <= 80);
    }

    #[test]
    fn a_booked_position_and_key_round_trip() {
        let mut state = VersionState::default();
        let trade_id = Id::from("T1");
        for trade_time in [
            None,
            Some(Instant {
                secs: -5,
                nanos: 1_000_000_001,
            }),
        ] {
            let key = LotKey::new(Date(20260102), trade_time, trade_id.clone());
            let booked = BookedTrade {
                key: key.clone(),
                side: Side::Sell,
                quantity: Dec8(5),
                price: Dec8(7),
            };
            let at = state.booked_at(Some(&(Id::from("A_B_S"), booked)), None);
            assert_eq!(at.key(&trade_id), Some((0, key)));
        }
        assert_eq!(BookedAt::default().key(&trade_id), None);
        assert_eq!(state.positions.len(), 1);
        assert_eq!(state.positions.get(0).0, "A_B_S");
    }
}
