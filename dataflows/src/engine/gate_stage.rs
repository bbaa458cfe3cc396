//! The validation gate as a dataflow stage: stateless parsing wherever the
//! event was read, then the duplicate / conflicting-duplicate rule where the
//! trade id is owned, applied in source order within each timestamp.

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concat};
use timely::dataflow::StreamVec;

use super::{DeadLetter, Diff, RawEvent, SourceRef, Time};
use crate::gate::{parse_event, Admission, Gate};
use crate::trade::TradeVersion;

/// Outputs of the gate stage.
pub(super) struct GateStreams<'scope> {
    /// Accepted versions `(trade_id, version)`, once each, at their batch's time.
    pub accepted: VecCollection<'scope, Time, (String, TradeVersion), Diff>,
    /// Rejected events.
    pub dead_letters: StreamVec<'scope, Time, DeadLetter>,
    /// Acknowledged duplicates.
    pub duplicates: StreamVec<'scope, Time, SourceRef>,
}

#[derive(Clone)]
enum Parsed {
    Ok(SourceRef, TradeVersion, Vec<u8>),
    Rejected(DeadLetter),
}

#[derive(Clone)]
enum Admitted {
    Accepted(String, TradeVersion, Time),
    Duplicate(SourceRef),
    Rejected(DeadLetter),
}

pub(super) fn gate<'scope>(raw: StreamVec<'scope, Time, RawEvent>) -> GateStreams<'scope> {
    let parsed = raw.map(|(source, payload)| match parse_event(&payload) {
        Ok(version) => Parsed::Ok(source, version, payload),
        Err(reason) => Parsed::Rejected(DeadLetter {
            source,
            reason,
            payload,
        }),
    });
    let parse_rejects = parsed.clone().flat_map(|p| match p {
        Parsed::Rejected(d) => Some(d),
        Parsed::Ok(..) => None,
    });
    let candidates = parsed.flat_map(|p| match p {
        Parsed::Ok(source, version, payload) => Some((source, version, payload)),
        Parsed::Rejected(_) => None,
    });
    let admitted = dedup(candidates);
    let accepted = admitted.clone().flat_map(|a| match a {
        Admitted::Accepted(id, v, t) => Some(((id, v), t, 1 as Diff)),
        _ => None,
    });
    let duplicates = admitted.clone().flat_map(|a| match a {
        Admitted::Duplicate(s) => Some(s),
        _ => None,
    });
    let conflicts = admitted.flat_map(|a| match a {
        Admitted::Rejected(d) => Some(d),
        _ => None,
    });
    GateStreams {
        accepted: accepted.as_collection(),
        dead_letters: parse_rejects.concat(conflicts),
        duplicates,
    }
}

type Candidate = (SourceRef, TradeVersion, Vec<u8>);

/// Applies the duplicate rule per trade id, in timestamp order and, within a
/// timestamp, in source order, so the outcome never depends on worker count.
fn dedup<'scope>(
    candidates: StreamVec<'scope, Time, Candidate>,
) -> StreamVec<'scope, Time, Admitted> {
    let route = Exchange::new(|c: &Candidate| c.1.trade_id.hashed());
    candidates.unary_frontier(route, "GateDedup", |_capability, _info| {
        let mut gate = Gate::new();
        let mut pending: BTreeMap<Time, (Capability<Time>, Vec<Candidate>)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                if let Some(cap) = cap.retain_least(output.output_index()) {
                    let entry = pending
                        .entry(*cap.time())
                        .or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                }
            });
            while let Some(time) = pending.keys().next().copied() {
                if frontier.less_equal(&time) {
                    break;
                }
                let Some((cap, mut batch)) = pending.remove(&time) else {
                    break;
                };
                batch.sort_by_key(|c| c.0);
                let mut session = output.session(&cap);
                for (source, version, payload) in batch {
                    match gate.admit_parsed(version) {
                        Admission::Accepted(v) => {
                            session.give(Admitted::Accepted(v.trade_id.clone(), v, time))
                        }
                        Admission::Duplicate(_) => session.give(Admitted::Duplicate(source)),
                        Admission::Rejected(reason) => {
                            session.give(Admitted::Rejected(DeadLetter {
                                source,
                                reason,
                                payload,
                            }))
                        }
                    }
                }
            }
        }
    })
}
