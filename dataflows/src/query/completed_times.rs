//! [`CompletedTimes`]: updates held by their time until the input's
//! frontier passes it, then handed out one time at a time, in time order,
//! with the capability to emit at that time. What an operator over a
//! totally ordered time needs to apply each time's changes in order
//! (`accumulate_totals`, `top_k_live`).

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

use crate::engine::Time;

/// Updates by time, each time with a capability on output 0.
pub(super) struct CompletedTimes<D> {
    pending: BTreeMap<Time, (Capability<Time>, Vec<D>)>,
}

impl<D> Default for CompletedTimes<D> {
    fn default() -> Self {
        CompletedTimes {
            pending: BTreeMap::new(),
        }
    }
}

impl<D> CompletedTimes<D> {
    /// Holds `update` until `time` is complete (`capability` is the one
    /// its container came with; `time` is at or after it).
    pub(super) fn push(&mut self, capability: &InputCapability<Time>, time: Time, update: D) {
        self.pending
            .entry(time)
            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
            .1
            .push(update);
    }

    /// The earliest held time the input `frontier` has passed, with its
    /// updates and a capability to emit at it; `None` when there is none.
    pub(super) fn next_completed(
        &mut self,
        frontier: &MutableAntichain<Time>,
    ) -> Option<(Time, Capability<Time>, Vec<D>)> {
        let time = *self.pending.keys().next()?;
        if frontier.less_equal(&time) {
            return None;
        }
        let (capability, updates) = self.pending.remove(&time)?;
        Some((time, capability, updates))
    }
}

/// Test support: what `capture` of a stream of updates receives.
#[cfg(test)]
pub(super) type CapturedUpdates<D> = std::sync::mpsc::Receiver<
    timely::dataflow::operators::capture::Event<Time, Vec<(D, Time, crate::engine::Diff)>>,
>;

/// Test support: the updates a captured stream carried, consolidated.
#[cfg(test)]
pub(super) fn captured_updates<D: Ord + 'static>(
    captured: CapturedUpdates<D>,
) -> Vec<(D, Time, crate::engine::Diff)> {
    use timely::dataflow::operators::capture::Extract;
    let mut updates: Vec<_> = captured
        .extract()
        .into_iter()
        .flat_map(|(_, u)| u)
        .collect();
    differential_dataflow::consolidation::consolidate_updates(&mut updates);
    updates
}
