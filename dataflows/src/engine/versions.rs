//! Live versions: for each trade id the accepted version with the highest
//! `version` is live, whatever the arrival order; and the causes each change
//! of a live version attributes to the positions it touches.

use std::collections::BTreeMap;

use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::{Arrangement, Diff, Time};
use crate::trade::{Action, LotKey, TradeVersion};

/// A trade version that touched a position at some time, before the booking
/// stage decides whether it was backdated there.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct CauseEntry {
    pub trade_id: String,
    pub version: u64,
    pub action: Action,
    pub correlation_id: Option<String>,
    /// Where the trade sorts in this position (the removed version's key when it left).
    pub key: Option<LotKey>,
}

/// `accepted` holds each accepted `(trade_id, version)` once; the result holds
/// the highest version per trade id (a live CANCEL included).
pub(super) fn live_versions<'scope>(
    accepted: VecCollection<'scope, Time, (String, TradeVersion), Diff>,
) -> Arrangement<'scope, String, TradeVersion> {
    accepted.reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<_, _, _, _>>(
        "LiveVersion",
        |_id, versions, output| {
            if let Some((live, _)) = versions.iter().max_by_key(|(v, _)| v.version) {
                output.push(((*live).clone(), 1));
            }
        },
    )
}

/// Pairs the retracted and asserted live version of each trade at each time
/// and names the positions the change touched, with the new live version as
/// the cause: the new version's position when it is booked, and the old
/// version's position when the trade left it.
pub(super) fn causes<'scope>(
    live: VecCollection<'scope, Time, (String, TradeVersion), Diff>,
) -> VecCollection<'scope, Time, (String, CauseEntry), Diff> {
    type Change = ((String, TradeVersion), Time, Diff);
    live.inner
        .unary_frontier(Pipeline, "LiveCauses", |_capability, _info| {
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<Change>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    // A collection's container may hold updates at any time at or after its stamp.
                    if let Some(least) = cap.retain_least(output.output_index()) {
                        for update in data.flat_map(|batch| batch.drain(..)) {
                            let time = update.1;
                            pending
                                .entry(time)
                                .or_insert_with(|| (least.delayed(&time), Vec::new()))
                                .1
                                .push(update);
                        }
                    }
                });
                while let Some(time) = pending.keys().next().copied() {
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let Some((cap, mut changes)) = pending.remove(&time) else {
                        break;
                    };
                    changes.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
                    let mut session = output.session(&cap);
                    for group in changes.chunk_by(|a, b| a.0 .0 == b.0 .0) {
                        let old = group.iter().find(|c| c.2 < 0).map(|c| &c.0 .1);
                        let Some(new) = group.iter().find(|c| c.2 > 0).map(|c| &c.0 .1) else {
                            continue;
                        };
                        for (position, key) in touched(old, new) {
                            let entry = CauseEntry {
                                trade_id: new.trade_id.clone(),
                                version: new.version,
                                action: new.action,
                                correlation_id: new.correlation_id.clone(),
                                key,
                            };
                            session.give(((position, entry), time, 1 as Diff));
                        }
                    }
                }
            }
        })
        .as_collection()
}

/// Positions a live-version change touches, with the trade's key there.
fn touched(old: Option<&TradeVersion>, new: &TradeVersion) -> Vec<(String, Option<LotKey>)> {
    let mut out = Vec::with_capacity(2);
    let new_booked = new.booked();
    let old_booked = old.and_then(|o| o.booked().map(|b| (o.position_key(), b)));
    if let Some(b) = &new_booked {
        out.push((new.position_key(), Some(b.key.clone())));
    }
    if let Some((position, b)) = old_booked {
        if new_booked.is_none() || position != new.position_key() {
            out.push((position, Some(b.key)));
        }
    }
    out
}
