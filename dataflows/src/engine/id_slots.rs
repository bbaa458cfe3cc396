//! Ids kept for good, each with a slot of state and a dense number: the
//! versions stage's trade ids (the duplicate rule never forgets a trade)
//! and the position keys its trades are booked in.
//!
//! Slots live in fixed-size chunks, so growing the store never moves one,
//! and are found through a hash table of 8-byte entries (slot number and 32
//! bits of the id's hash): growing the table moves 8 bytes per id and
//! hashes no id again. An id costs its slot plus about 9-19 bytes of table.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::id::Id;

/// Slots per chunk: 4096 keeps a chunk of the versions stage's 80-byte
/// slots at 320 KB, so a new chunk is one allocation and little unused memory.
const CHUNK_SLOTS: usize = 4096;

/// A slot's number. At most `u32::MAX - 1` ids per store.
pub(super) type SlotId = u32;

/// Id -> slot, where each slot holds `S` (see the module docs).
pub(super) struct IdSlots<S> {
    chunks: Vec<Vec<(Id, S)>>,
    /// `(slot, 32 bits of the id's hash)`.
    index: HashTable<(SlotId, u32)>,
}

impl<S> Default for IdSlots<S> {
    fn default() -> Self {
        IdSlots {
            chunks: Vec::new(),
            index: HashTable::new(),
        }
    }
}

/// 32 bits of the id's hash (what the table keeps).
fn short_hash(id: &str) -> u32 {
    let mut hasher = FxHasher::default();
    hasher.write(id.as_bytes());
    (hasher.finish() >> 32) as u32
}

/// The table's hash of an entry: the kept 32 bits spread over 64, so that
/// both the low bits (bucket) and the high bits (tag) vary.
fn spread(short: u32) -> u64 {
    u64::from(short).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<S: Default> IdSlots<S> {
    /// The slot of `id`, created holding `S::default()` if `id` is new.
    ///
    /// # Panics
    /// When the store already holds `u32::MAX - 1` ids (hundreds of
    /// gigabytes of state): a capacity limit, asserted, not an input error.
    pub(super) fn slot_of(&mut self, id: &Id) -> SlotId {
        let short = short_hash(id);
        let found = self.index.find(spread(short), |&(slot, h)| {
            h == short && self.get(slot).0 == id
        });
        if let Some(&(slot, _)) = found {
            return slot;
        }
        let len = self.len();
        assert!(
            len < SlotId::MAX as usize,
            "more than u32::MAX ids in one store on one worker"
        );
        let slot = len as SlotId;
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push((id.clone(), S::default()));
        }
        self.index
            .insert_unique(spread(short), (slot, short), |&(_, h)| spread(h));
        slot
    }
}

impl<S> IdSlots<S> {
    /// The id and state of a slot [`IdSlots::slot_of`] returned.
    pub(super) fn get(&self, slot: SlotId) -> (&Id, &S) {
        let slot = slot as usize;
        let (id, state) = &self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS];
        (id, state)
    }

    /// The id and state of a slot [`IdSlots::slot_of`] returned.
    pub(super) fn get_mut(&mut self, slot: SlotId) -> (&Id, &mut S) {
        let slot = slot as usize;
        let (id, state) = &mut self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS];
        (id, state)
    }

    /// Every id and its state, in slot order.
    pub(super) fn into_iter(self) -> impl Iterator<Item = (Id, S)> {
        self.chunks.into_iter().flatten()
    }

    /// Number of ids held.
    pub(super) fn len(&self) -> usize {
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK_SLOTS + last.len(),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_id_has_one_slot_that_keeps_its_state() {
        let mut slots = IdSlots::<u64>::default();
        let ids: Vec<Id> = (0..10_000)
            .map(|n| crate::id::format_id!("T-{n}"))
            .collect();
        for (n, id) in ids.iter().enumerate() {
            let slot = slots.slot_of(id);
            assert_eq!(slot as usize, n);
            *slots.get_mut(slot).1 = n as u64 * 3;
        }
        assert_eq!(slots.len(), ids.len());
        for (n, id) in ids.iter().enumerate().rev() {
            let slot = slots.slot_of(id);
            let (held, state) = slots.get(slot);
            assert_eq!(held, id);
            assert_eq!(*state, n as u64 * 3);
        }
        assert_eq!(slots.len(), ids.len(), "looking up created nothing");
    }
}
