//! A stateful operator that sees each timestamp's updates once the
//! timestamp is complete, in time order, on the worker that owns their key.
//! The stages of reconciliation keep their own state this way (live price,
//! live statement, as-of sums, sequence gaps), and so do live queries'
//! GROUP BY totals and top-k, instead of re-reading a key's whole history
//! per change, as a `reduce` or `count_total` would.

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::engine::{Diff, Time};

/// A timestamp's capability and its updates so far.
type Pending<D, R> = (Capability<Time>, Vec<(D, R)>);

/// Who consolidates a timestamp's output in [`in_time_order`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Netting {
    /// The operator, before the updates leave.
    Consolidate,
    /// The logic, which nets its own output: no two updates it emits at a
    /// time carry equal data, and none has difference zero (asserted in
    /// debug builds). They leave as emitted, without the sort that
    /// consolidating them costs.
    ByLogic,
}

/// Runs `logic(state, time, updates, out)` for each complete timestamp, in
/// time order, on the worker `route` sends each update to. `updates` are the
/// timestamp's `(data, difference)` pairs in no particular order (the logic
/// must not depend on it); `out` collects the differential updates to emit
/// at that time, consolidated before they leave as `netting` says.
pub(crate) fn in_time_order<'scope, D, R, O, S>(
    stream: StreamVec<'scope, Time, (D, Time, R)>,
    name: &str,
    route: impl Fn(&D) -> u64 + 'static,
    mut state: S,
    mut logic: impl FnMut(&mut S, Time, Vec<(D, R)>, &mut Vec<(O, Time, Diff)>) + 'static,
    netting: Netting,
) -> VecCollection<'scope, Time, O, Diff>
where
    D: ExchangeData + Clone,
    R: ExchangeData + Clone,
    O: ExchangeData + Clone + Ord,
    S: 'static,
{
    let pact = Exchange::new(move |u: &(D, Time, R)| route(&u.0));
    stream
        .unary_frontier::<CapacityContainerBuilder<Vec<(O, Time, Diff)>>, _, _, _>(
            pact,
            name,
            move |_capability, _info| {
                let mut pending: BTreeMap<Time, Pending<D, R>> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        for (d, t, r) in data.flat_map(|b| b.drain(..)) {
                            pending
                                .entry(t)
                                .or_insert_with(|| {
                                    (cap.delayed(&t, output.output_index()), Vec::new())
                                })
                                .1
                                .push((d, r));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (cap, updates)) = entry.remove_entry();
                        let mut out = Vec::new();
                        logic(&mut state, time, updates, &mut out);
                        if netting == Netting::Consolidate {
                            differential_dataflow::consolidation::consolidate_updates(&mut out);
                        } else {
                            debug_assert!(is_netted(&out), "the logic's output is not netted");
                        }
                        output.session(&cap).give_container(&mut out);
                    }
                }
            },
        )
        .as_collection()
}

/// No two of `updates` carry equal data and none has difference zero.
fn is_netted<O: Ord>(updates: &[(O, Time, Diff)]) -> bool {
    let mut data: Vec<&O> = updates.iter().map(|(d, _, _)| d).collect();
    data.sort_unstable();
    data.windows(2).all(|w| w[0] != w[1]) && updates.iter().all(|(_, _, r)| *r != 0)
}
