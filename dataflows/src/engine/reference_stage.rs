//! Baseline for benchmarks and tests: the same gate and versions, then a
//! plain per-position `reduce` that re-books the whole position with the
//! reference replay on every change. Correct, and O(K) per change.

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;

use super::versions::BookInput;
use super::{gate_stage, Diff, RawEvent, Time};
use crate::booking::reference;
use crate::position::Lot;
use crate::trade::{BookedTrade, LotMethod};

/// Open lots of every position, booked under `method` by a plain reduce.
pub fn build_reference_booking<'scope>(
    raw: StreamVec<'scope, Time, RawEvent>,
    method: LotMethod,
) -> VecCollection<'scope, Time, (String, Lot), Diff> {
    gate_stage::gate(raw, None)
        .book_input
        .flat_map(|(position, input)| match input {
            BookInput::Trade(trade) => Some((position, trade)),
            BookInput::Cause(_) => None,
        })
        .reduce_named(
            "ReferenceBooking",
            move |_position, trades: &[(&BookedTrade, Diff)], output: &mut Vec<(Lot, Diff)>| {
                let live: Vec<BookedTrade> = trades
                    .iter()
                    .filter(|(_, d)| *d > 0)
                    .map(|(t, _)| (*t).clone())
                    .collect();
                if let Ok(booking) = reference::book(method, &live) {
                    output.extend(booking.lots.into_iter().map(|lot| (lot, 1)));
                }
            },
        )
}
