//! One timestamp's booking updates grouped by position key, without a list
//! per position: the updates stay in one list in arrival order, each
//! linked to the next update of its position, so grouping allocates
//! nothing per position. Positions are found through [`IdSlots`] and
//! handed out in key order.

use super::id_slots::IdSlots;
use super::versions::BookInput;
use super::Diff;
use crate::id::{order_prefix, Id};
use crate::trade::LotMethod;

/// [`Link::next`] of a position's last update.
const END: u32 = u32::MAX;

/// The updates of one timestamp, grouped (see the module docs).
pub(super) struct PositionGroups {
    chains: IdSlots<Chain>,
    updates: Vec<Link>,
}

/// One position's updates in `updates` (`END`: none), and its method change.
pub(super) struct Chain {
    first: u32,
    last: u32,
    /// The method the position moves to, when the method map changed it.
    pub method_change: Option<LotMethod>,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            first: END,
            last: END,
            method_change: None,
        }
    }
}

/// One position's share of the timestamp, as [`PositionGroups::into_sorted`]
/// hands it out.
pub(super) struct Group {
    /// The position.
    pub position: Id,
    /// The method the position moves to, when the method map changed it.
    pub method_change: Option<LotMethod>,
    /// Its first update (`END`: none).
    first: u32,
    /// The key's `order_prefix`.
    prefix: u128,
}

/// An update, until taken, and the index of its position's next one.
struct Link {
    update: Option<(BookInput, Diff)>,
    next: u32,
}

impl PositionGroups {
    /// Room for `updates` updates.
    pub(super) fn with_capacity(updates: usize) -> PositionGroups {
        PositionGroups {
            chains: IdSlots::default(),
            updates: Vec::with_capacity(updates),
        }
    }

    /// The updates and method change of `position`, created empty if the
    /// timestamp had none.
    pub(super) fn group(&mut self, position: &Id) -> &mut Chain {
        let slot = self.chains.slot_of(position);
        self.chains.get_mut(slot).1
    }

    /// Adds `input` (with `diff`) to the updates of `position`.
    ///
    /// # Panics
    /// Past `u32::MAX - 1` updates in one timestamp on one worker (a batch
    /// limit, asserted, not an input error).
    pub(super) fn push(&mut self, position: &Id, input: BookInput, diff: Diff) {
        let at = self.updates.len();
        assert!(at < END as usize, "too many updates in one timestamp");
        let at = at as u32;
        self.updates.push(Link {
            update: Some((input, diff)),
            next: END,
        });
        let chain = self.group(position);
        let last = std::mem::replace(&mut chain.last, at);
        if last == END {
            chain.first = at;
        } else {
            self.updates[last as usize].next = at;
        }
    }

    /// The groups in position-key order, each with its updates (taken by
    /// [`Updates`], in arrival order).
    pub(super) fn into_sorted(self) -> (Vec<Group>, Updates) {
        // Sorted by the key's `order_prefix` first, so most comparisons
        // never read the keys.
        let mut groups: Vec<Group> = self
            .chains
            .into_iter()
            .map(|(position, chain)| Group {
                prefix: order_prefix(&position),
                position,
                method_change: chain.method_change,
                first: chain.first,
            })
            .collect();
        groups.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| a.position.cmp(&b.position))
        });
        (
            groups,
            Updates {
                links: self.updates,
            },
        )
    }
}

/// The updates of [`PositionGroups::into_sorted`], taken group by group.
pub(super) struct Updates {
    links: Vec<Link>,
}

impl Updates {
    /// Takes the updates of `group`, in arrival order. Each update is
    /// taken once: a group's second call yields nothing.
    pub(super) fn take<'a>(
        &'a mut self,
        group: &Group,
    ) -> impl Iterator<Item = (BookInput, Diff)> + 'a {
        let mut at = group.first;
        std::iter::from_fn(move || {
            while at != END {
                let link = &mut self.links[at as usize];
                at = link.next;
                if let Some(update) = link.update.take() {
                    return Some(update);
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trade::{Date, LotKey};

    fn remove(id: &str) -> BookInput {
        BookInput::Remove(
            LotKey {
                trade_date: Date(20260102),
                trade_time: None,
                trade_id: Id::from(id),
            },
            None,
        )
    }

    #[test]
    fn each_position_gets_its_updates_in_arrival_order_and_keys_sort() {
        let keys = [
            "B",
            "A_B_C",
            "A",
            "A_B_C_LONGER_THAN_SIXTEEN",
            "A_B_C_LONGER_THAN",
            "",
            "A\0",
            "B",
            "A_B_C",
        ];
        let mut groups = PositionGroups::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            groups.push(&Id::from(*key), remove(&format!("T{n}")), n as Diff);
        }
        groups.group(&Id::from("C")).method_change = Some(LotMethod::Hifo);
        let (sorted, mut updates) = groups.into_sorted();
        let mut expected: Vec<&str> = keys.to_vec();
        expected.push("C");
        expected.sort_unstable();
        expected.dedup();
        let got: Vec<&str> = sorted.iter().map(|g| g.position.as_str()).collect();
        assert_eq!(got, expected);
        for group in &sorted {
            let diffs: Vec<Diff> = updates.take(group).map(|(_, d)| d).collect();
            let arrived: Vec<Diff> = (0..keys.len())
                .filter(|&n| keys[n] == group.position.as_str())
                .map(|n| n as Diff)
                .collect();
            assert_eq!(diffs, arrived, "{:?}", group.position);
            assert_eq!(updates.take(group).count(), 0, "taken once");
            assert_eq!(
                group.method_change.is_some(),
                group.position.as_str() == "C"
            );
        }
    }
}
