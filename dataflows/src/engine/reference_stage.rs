//! Baseline for benchmarks and tests: the same gate and versions, then a
//! plain per-position `reduce` that re-books the whole position with the
//! reference replay on every change. Correct, and O(K) per change.

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;

use super::versions::BookInput;
use super::{intake, Diff, RawEvent, Time};
use crate::booking::reference;
use crate::id::Id;
use crate::position::{Lot, OverflowError};
use crate::trade::{BookedTrade, LotMethod};

/// Open lots of every position, booked under `method` by a plain reduce; a
/// position whose sums overflow yields one `Err` naming it instead of lots.
pub fn build_reference_booking<'scope>(
    raw: StreamVec<'scope, Time, RawEvent>,
    method: LotMethod,
) -> VecCollection<'scope, Time, (Id, Result<Lot, OverflowError>), Diff> {
    intake::intake(raw, None, None)
        .book_input
        .flat_map(|(position, input)| match input {
            BookInput::Trade(trade) => Some((position, trade)),
            BookInput::Cause(_) => None,
        })
        .reduce_named(
            "ReferenceBooking",
            move |position: &Id,
                  trades: &[(&BookedTrade, Diff)],
                  output: &mut Vec<(Result<Lot, OverflowError>, Diff)>| {
                let live: Vec<BookedTrade> = trades
                    .iter()
                    .filter(|(_, d)| *d > 0)
                    .map(|(t, _)| (*t).clone())
                    .collect();
                match reference::book(method, &live) {
                    Ok(booking) => output.extend(booking.lots.into_iter().map(|lot| (Ok(lot), 1))),
                    Err(_) => output.push((
                        Err(OverflowError {
                            position_key: position.clone(),
                        }),
                        1,
                    )),
                }
            },
        )
}
