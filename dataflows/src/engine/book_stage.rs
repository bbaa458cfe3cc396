//! The booking stage: one [`PositionBook`] per position, owned by the worker
//! that owns the position key. At each completed timestamp it applies that
//! timestamp's trade changes and method changes, and emits exactly the lot
//! and summary rows that changed plus one correction per changed position.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet};

use rustc_hash::FxHashMap as HashMap;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::versions::{BookInput, CauseEntry};
use super::{Diff, Time};
use crate::booking::chunked::PositionBook;
use crate::correction::{Cause, Correction};
use crate::position::{Lot, PositionSummary};
use crate::sorted::diff_sorted;
use crate::trade::{BookedTrade, LotMethod};

/// A position whose arithmetic overflowed at `time`. Its last good state
/// stays published; later changes to it are reported here instead.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fault {
    /// The position.
    pub position_key: String,
    /// Engine time of the change that could not be booked.
    pub time: Time,
    /// What went wrong.
    pub detail: String,
}

#[derive(Clone, Debug)]
enum BookOutput {
    Lot(String, Lot),
    Position(String, PositionSummary),
    Correction(Correction),
    Fault(Fault),
}

/// Outputs of the booking stage.
pub(super) struct BookStreams<'scope> {
    pub lots: VecCollection<'scope, Time, (String, Lot), Diff>,
    pub positions: VecCollection<'scope, Time, (String, PositionSummary), Diff>,
    pub corrections: VecCollection<'scope, Time, Correction, Diff>,
    pub faults: StreamVec<'scope, Time, Fault>,
}

type InputUpdate = ((String, BookInput), Time, Diff);
type MethodUpdate = ((String, LotMethod), Time, Diff);
/// One timestamp's buffered input: a capability to emit at it, trade/cause
/// updates and method-map updates.
type PendingTime = (
    Option<Capability<Time>>,
    Vec<InputUpdate>,
    Vec<MethodUpdate>,
);

pub(super) fn book<'scope>(
    input: VecCollection<'scope, Time, (String, BookInput), Diff>,
    methods: VecCollection<'scope, Time, (String, LotMethod), Diff>,
) -> BookStreams<'scope> {
    let route = Exchange::new(|u: &InputUpdate| u.0 .0.hashed());
    let outputs = input.inner.binary_frontier(
        methods.inner.broadcast(),
        route,
        Pipeline,
        "Book",
        |_capability, _info| {
            let mut state = BookState::default();
            let mut pending: BTreeMap<Time, PendingTime> = BTreeMap::new();
            move |(input1, frontier1), (input2, frontier2), output| {
                // A collection's container may hold updates at any time at or after its stamp.
                input1.for_each_stamp(|cap, data| {
                    if let Some(least) = cap.retain_least(output.output_index()) {
                        stash(&mut pending, &least, data.flat_map(|b| b.drain(..)), |p| {
                            &mut p.1
                        });
                    }
                });
                input2.for_each_stamp(|cap, data| {
                    if let Some(least) = cap.retain_least(output.output_index()) {
                        stash(&mut pending, &least, data.flat_map(|b| b.drain(..)), |p| {
                            &mut p.2
                        });
                    }
                });
                while let Some(time) = pending.keys().next().copied() {
                    if frontier1.less_equal(&time) || frontier2.less_equal(&time) {
                        break;
                    }
                    let Some((Some(cap), trades, method_changes)) = pending.remove(&time) else {
                        continue;
                    };
                    let mut session = output.session(&cap);
                    state.step(time, trades, method_changes, &mut |out, diff| {
                        session.give((out, time, diff))
                    });
                }
            }
        },
    );
    let mut parts = outputs
        .partition(4, |update| {
            let part = match &update.0 {
                BookOutput::Lot(..) => 0,
                BookOutput::Position(..) => 1,
                BookOutput::Correction(_) => 2,
                BookOutput::Fault(_) => 3,
            };
            (part, update)
        })
        .into_iter();
    let (Some(lots), Some(positions), Some(corrections), Some(faults)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        unreachable!("partition(4) returns four streams")
    };
    BookStreams {
        lots: lots
            .flat_map(|(o, t, d)| match o {
                BookOutput::Lot(p, l) => Some(((p, l), t, d)),
                _ => None,
            })
            .as_collection(),
        positions: positions
            .flat_map(|(o, t, d)| match o {
                BookOutput::Position(p, s) => Some(((p, s), t, d)),
                _ => None,
            })
            .as_collection(),
        corrections: corrections
            .flat_map(|(o, t, d)| match o {
                BookOutput::Correction(c) => Some((c, t, d)),
                _ => None,
            })
            .as_collection(),
        faults: faults.flat_map(|(o, _, _)| match o {
            BookOutput::Fault(f) => Some(f),
            _ => None,
        }),
    }
}

/// Work for one position at one timestamp.
#[derive(Default)]
struct PositionWork {
    removed: Vec<BookedTrade>,
    inserted: Vec<BookedTrade>,
    causes: Vec<CauseEntry>,
    method_change: Option<LotMethod>,
}

#[derive(Default)]
struct BookState {
    books: HashMap<String, PositionBook>,
    faulted: HashSet<String>,
    /// The lot-method map.
    methods: MethodMap,
}

/// The lot-method map as a multiset of `(scope, method)`.
type MethodMap = BTreeMap<(String, LotMethod), Diff>;

/// The method configured for `scope` exactly, if any (the greatest one if the
/// map momentarily holds several).
fn method_of_scope(methods: &MethodMap, scope: &str) -> Option<LotMethod> {
    methods
        .range((scope.to_string(), LotMethod::Fifo)..=(scope.to_string(), LotMethod::Hifo))
        .filter(|(_, count)| **count > 0)
        .map(|((_, m), _)| *m)
        .next_back()
}

/// The most specific configured method for a position, FIFO by default.
fn resolve(methods: &MethodMap, position_key: &str) -> LotMethod {
    let mut parts = position_key.splitn(3, '_');
    let account = parts.next().unwrap_or_default();
    let book = parts.next().unwrap_or_default();
    let account_book = position_key
        .get(..account.len() + 1 + book.len())
        .unwrap_or(account);
    let found = [position_key, account_book, account]
        .into_iter()
        .find_map(|scope| method_of_scope(methods, scope));
    found.unwrap_or_default()
}

impl BookState {
    fn step(
        &mut self,
        time: Time,
        updates: Vec<InputUpdate>,
        method_changes: Vec<MethodUpdate>,
        emit: &mut impl FnMut(BookOutput, Diff),
    ) {
        let mut work: BTreeMap<String, PositionWork> = BTreeMap::new();
        for ((position, input), _, diff) in updates {
            let w = work.entry(position).or_default();
            match input {
                BookInput::Trade(t) if diff < 0 => w
                    .removed
                    .extend(std::iter::repeat_n(t, diff.unsigned_abs())),
                BookInput::Trade(t) => w
                    .inserted
                    .extend(std::iter::repeat_n(t, diff.unsigned_abs())),
                BookInput::Cause(c) => w.causes.push(c),
            }
        }
        if !method_changes.is_empty() {
            for ((scope, method), _, diff) in method_changes {
                let count = self.methods.entry((scope, method)).or_insert(0);
                *count += diff;
            }
            self.methods.retain(|_, count| *count != 0);
            for (position, book) in &self.books {
                let method = resolve(&self.methods, position);
                if method != book.method() {
                    work.entry(position.clone()).or_default().method_change = Some(method);
                }
            }
        }
        for (position, mut w) in work {
            cancel_common(&mut w.removed, &mut w.inserted);
            if self.faulted.contains(&position) {
                emit(
                    fault(
                        position,
                        time,
                        "position is quarantined after an arithmetic overflow",
                    ),
                    1,
                );
                continue;
            }
            // An existing book is under its resolved method unless this timestamp
            // changed the map (then `method_change` says so); only new books resolve.
            let book = match self.books.entry(position.clone()) {
                Entry::Occupied(slot) => slot.into_mut(),
                Entry::Vacant(slot) => {
                    let method = resolve(&self.methods, &position);
                    slot.insert(PositionBook::new(method))
                }
            };
            let method = w.method_change.unwrap_or(book.method());
            let before = book.summary().clone();
            let last_key = book.last_key().cloned();
            let changes = match book.apply(method, &w.removed, &w.inserted) {
                Ok(changes) => changes,
                Err(error) => {
                    self.books.remove(&position);
                    self.faulted.insert(position.clone());
                    emit(fault(position, time, &error.to_string()), 1);
                    continue;
                }
            };
            let after = book.summary().clone();
            let now_empty = book.is_empty();
            if now_empty {
                self.books.remove(&position);
            }
            if changes.is_empty() && before == after {
                continue;
            }
            for lot in &changes.closed {
                emit(BookOutput::Lot(position.clone(), lot.clone()), -1);
            }
            for lot in &changes.opened {
                emit(BookOutput::Lot(position.clone(), lot.clone()), 1);
            }
            if before != after {
                if !before.is_omitted() {
                    emit(BookOutput::Position(position.clone(), before.clone()), -1);
                }
                if !after.is_omitted() {
                    emit(BookOutput::Position(position.clone(), after.clone()), 1);
                }
            }
            let mut cause: Vec<Cause> = w
                .method_change
                .map(Cause::MethodChange)
                .into_iter()
                .collect();
            w.causes.sort();
            w.causes.dedup();
            cause.extend(w.causes.into_iter().map(|c| Cause::Trade {
                backdated: last_key.as_ref().is_some_and(|last| c.key < *last),
                trade_id: c.trade_id,
                version: c.version,
                action: c.action,
                correlation_id: c.correlation_id,
            }));
            let correction = Correction {
                position_key: position,
                as_of: time,
                cause,
                before,
                after,
                lots_closed: changes.closed,
                lots_opened: changes.opened,
            };
            emit(BookOutput::Correction(correction), 1);
        }
    }
}

fn fault(position_key: String, time: Time, detail: &str) -> BookOutput {
    BookOutput::Fault(Fault {
        position_key,
        time,
        detail: detail.to_string(),
    })
}

/// Removes trades that are both removed and inserted (no net change).
fn cancel_common(removed: &mut Vec<BookedTrade>, inserted: &mut Vec<BookedTrade>) {
    if removed.is_empty() || inserted.is_empty() {
        return;
    }
    removed.sort();
    inserted.sort();
    let (kept_removed, kept_inserted) =
        diff_sorted(std::mem::take(removed), std::mem::take(inserted));
    *removed = kept_removed;
    *inserted = kept_inserted;
}

/// Buffers updates by their own time (a collection's container may hold
/// updates at any time at or after its stamp), keeping one capability per time.
fn stash<D>(
    pending: &mut BTreeMap<Time, PendingTime>,
    least: &Capability<Time>,
    updates: impl Iterator<Item = (D, Time, Diff)>,
    slot: impl Fn(&mut PendingTime) -> &mut Vec<(D, Time, Diff)>,
) {
    for update in updates {
        let entry = pending.entry(update.1).or_default();
        entry.0.get_or_insert_with(|| least.delayed(&update.1));
        slot(entry).push(update);
    }
}
