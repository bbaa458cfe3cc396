//! One timestamp's booking updates grouped by position key, without a list
//! per position and without moving them: the updates stay where they
//! arrived (the input's containers), and one list of their locations in
//! arrival order links each to the next update of its position, so
//! grouping allocates nothing per position and copies no update.
//! Positions are found through [`IdSlots`] and handed out in key order.

use crate::id::{order_prefix, Id};
use crate::id_slots::IdSlots;
use crate::trade::LotMethod;

/// [`Link::next`] of a position's last update.
const END: u32 = u32::MAX;

/// The updates of one timestamp, grouped (see the module docs).
pub(super) struct PositionGroups {
    chains: IdSlots<Chain>,
    links: Vec<Link>,
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

/// Where an update is: its container and its index there.
pub(super) type Location = (u32, u32);

/// An update's location and the index of its position's next one.
struct Link {
    at: Location,
    next: u32,
}

impl PositionGroups {
    /// Room for `updates` updates.
    pub(super) fn with_capacity(updates: usize) -> PositionGroups {
        PositionGroups {
            chains: IdSlots::default(),
            links: Vec::with_capacity(updates),
        }
    }

    /// The updates and method change of `position`, created empty if the
    /// timestamp had none.
    pub(super) fn group(&mut self, position: &Id) -> &mut Chain {
        let slot = self.chains.slot_of(position);
        self.chains.get_mut(slot).1
    }

    /// Adds the update at `location` to the updates of `position`.
    ///
    /// # Panics
    /// Past `u32::MAX - 1` updates in one timestamp on one worker (a batch
    /// limit, asserted, not an input error).
    pub(super) fn push(&mut self, position: &Id, location: Location) {
        let at = self.links.len();
        assert!(at < END as usize, "too many updates in one timestamp");
        let at = at as u32;
        self.links.push(Link {
            at: location,
            next: END,
        });
        let chain = self.group(position);
        let last = std::mem::replace(&mut chain.last, at);
        if last == END {
            chain.first = at;
        } else {
            self.links[last as usize].next = at;
        }
    }

    /// The groups in position-key order, each with its updates' locations
    /// (listed by [`Updates`], in arrival order).
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
        (groups, Updates { links: self.links })
    }
}

/// The update locations of [`PositionGroups::into_sorted`], by group.
pub(super) struct Updates {
    links: Vec<Link>,
}

impl Updates {
    /// The locations of the updates of `group`, in arrival order.
    pub(super) fn of<'a>(&'a self, group: &Group) -> impl Iterator<Item = Location> + 'a {
        let mut next = group.first;
        std::iter::from_fn(move || {
            let link = self.links.get(next as usize)?;
            next = link.next;
            Some(link.at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            groups.push(&Id::from(*key), (7, n as u32));
        }
        groups.group(&Id::from("C")).method_change = Some(LotMethod::Hifo);
        let (sorted, updates) = groups.into_sorted();
        let mut expected: Vec<&str> = keys.to_vec();
        expected.push("C");
        expected.sort_unstable();
        expected.dedup();
        let got: Vec<&str> = sorted.iter().map(|g| g.position.as_str()).collect();
        assert_eq!(got, expected);
        for group in &sorted {
            let listed: Vec<Location> = updates.of(group).collect();
            let arrived: Vec<Location> = (0..keys.len())
                .filter(|&n| keys[n] == group.position.as_str())
                .map(|n| (7, n as u32))
                .collect();
            assert_eq!(listed, arrived, "{:?}", group.position);
            assert_eq!(
                group.method_change.is_some(),
                group.position.as_str() == "C"
            );
        }
    }
}
