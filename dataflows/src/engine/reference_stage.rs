//! Baseline for benchmarks and tests: the same gate and versions stage,
//! then plain differential operators: every live version the versions stage
//! reported, a `reduce` per trade id keeping the highest (so the live
//! trades do not depend on the versions stage's retractions), and a `reduce`
//! per position that re-books the whole position with the reference replay
//! on every change. Correct, and O(K) per change.

use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use super::versions::LiveTrade;
use super::{intake, Diff, RawEvent, Time};
use crate::booking::reference;
use crate::id::Id;
use crate::position::{Lot, OverflowError};
use crate::reconcile::as_inserts;
use crate::trade::{BookedTrade, LotMethod};

/// A live version the versions stage reported: `(version, booked form by position)`.
type ReportedVersion = (u64, Option<(Id, BookedTrade)>);

/// Open lots of every position, booked under `method` by a plain reduce; a
/// position whose sums overflow yields one `Err` naming it instead of lots.
pub fn build_reference_booking<'scope>(
    raw: StreamVec<'scope, Time, RawEvent>,
    method: LotMethod,
) -> VecCollection<'scope, Time, (Id, Result<Lot, OverflowError>), Diff> {
    let events = raw.map(intake::TradeEvent::parse);
    let reported = intake::intake(events, true, false)
        .live
        .map(|live: LiveTrade| (live.trade_id, (live.version, live.booked)));
    as_inserts(reported, "ReferenceLiveVersions")
        .reduce_named(
            "ReferenceHighestVersion",
            |_trade_id: &Id,
             versions: &[(&ReportedVersion, Diff)],
             output: &mut Vec<(Option<(Id, BookedTrade)>, Diff)>| {
                // Values arrive sorted: the last holds the highest version.
                if let Some(((_, booked), _)) = versions.last() {
                    output.push((booked.clone(), 1));
                }
            },
        )
        .flat_map(|(_trade_id, booked)| booked)
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
