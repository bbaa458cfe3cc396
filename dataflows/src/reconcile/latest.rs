//! The live value per key of an insert-only input: the one with the
//! greatest order, where the order ends with the arrival position so that
//! ties go to the later arrival (`reconciliation.md`: the live price of a
//! security, the live statement of a position). A late value older than the
//! live one changes nothing. Cost per value: O(1) (a map lookup).

use std::collections::HashMap;
use std::hash::Hash;

use differential_dataflow::{Hashable, VecCollection};
use timely::ExchangeData;

use crate::engine::{Diff, Time};
use crate::ordered::{in_time_order, Netting};

/// `(key, order, value)` values in, `(key, (order, value))` of the greatest
/// order per key out, as a collection (a key's entry is retracted when it is
/// replaced).
pub(super) fn latest_by_key<'scope, K, O, V>(
    values: VecCollection<'scope, Time, (K, O, V), Diff>,
    name: &str,
) -> VecCollection<'scope, Time, (K, (O, V)), Diff>
where
    K: ExchangeData + Clone + Ord + Hash + Eq + Hashable<Output = u64>,
    O: ExchangeData + Clone + Ord,
    V: ExchangeData + Clone + Ord,
{
    in_time_order(
        values.inner,
        name,
        |(key, _, _): &(K, O, V)| key.hashed(),
        HashMap::<K, (O, V)>::new(),
        |live, time, updates, out| {
            // The live value of each touched key before this time.
            let mut before: HashMap<K, Option<(O, V)>> = HashMap::new();
            for ((key, order, value), diff) in updates {
                if diff <= 0 {
                    // Inputs are insert-only; a retraction would be a bug upstream.
                    continue;
                }
                let current = live.get(&key);
                if current.is_some_and(|(o, _)| *o >= order) {
                    continue;
                }
                let previous: Option<(O, V)> = current.cloned();
                before.entry(key.clone()).or_insert(previous);
                live.insert(key, (order, value));
            }
            for (key, old) in before {
                if let Some(old) = old {
                    out.push(((key.clone(), old), time, -1));
                }
                if let Some(new) = live.get(&key) {
                    out.push(((key, new.clone()), time, 1));
                }
            }
        },
        Netting::Consolidate,
    )
}
