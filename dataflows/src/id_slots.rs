//! Ids kept for good, each with a slot of state and a dense number: the
//! versions stage's trade ids (the duplicate rule never forgets a trade),
//! the position keys its trades are booked in, and the trade ids of the
//! stand-alone [`crate::gate::DuplicateRule`].
//!
//! Slots live in fixed-size chunks, so growing the store never moves one,
//! and are found through a hash table of 4-byte entries (the slot number):
//! a lookup compares ids only where the table's 7-bit tag of the hash
//! matches, and the table grows by a rebuild that reads the ids in slot
//! order (sequential reads, each id hashed once). An id costs its slot plus
//! about 5-11 bytes of table.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::id::Id;

/// Slots per chunk: 4096 keeps a chunk of the versions stage's 80-byte
/// slots at 320 KB, so a new chunk is one allocation and little unused memory.
const CHUNK_SLOTS: usize = 4096;

/// A slot's number. At most `u32::MAX - 1` ids per store.
pub(crate) type SlotId = u32;

/// Id -> slot, where each slot holds `S` (see the module docs).
pub(crate) struct IdSlots<S> {
    chunks: Vec<Vec<(Id, S)>>,
    /// Slot numbers, placed by [`id_hash`] of their ids.
    index: HashTable<SlotId>,
}

impl<S> Default for IdSlots<S> {
    fn default() -> Self {
        IdSlots {
            chunks: Vec::new(),
            index: HashTable::new(),
        }
    }
}

/// The table's hash of an id: 32 bits of its Fx hash spread over 64, so
/// that both the low bits (bucket) and the high bits (tag) vary.
fn id_hash(id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(id.as_bytes());
    let short = hasher.finish() >> 32;
    short.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The id held in `slot` of `chunks`.
fn id_at<S>(chunks: &[Vec<(Id, S)>], slot: SlotId) -> &Id {
    let slot = slot as usize;
    &chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS].0
}

impl<S: Default> IdSlots<S> {
    /// The slot of `id`, created holding `S::default()` if `id` is new.
    ///
    /// # Panics
    /// When the store already holds `u32::MAX - 1` ids (hundreds of
    /// gigabytes of state): a capacity limit, asserted, not an input error.
    pub(crate) fn slot_of(&mut self, id: &Id) -> SlotId {
        let hash = id_hash(id);
        let chunks = &self.chunks;
        if let Some(&slot) = self.index.find(hash, |&slot| id_at(chunks, slot) == id) {
            return slot;
        }
        let len = self.len();
        assert!(
            len < SlotId::MAX as usize,
            "more than u32::MAX ids in one store on one worker"
        );
        if self.index.len() == self.index.capacity() {
            self.grow_index();
        }
        let slot = len as SlotId;
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push((id.clone(), S::default()));
        }
        let chunks = &self.chunks;
        self.index
            .insert_unique(hash, slot, |&s| id_hash(id_at(chunks, s)));
        slot
    }
}

impl<S> IdSlots<S> {
    /// Replaces the full table by one of twice its capacity, filled in slot
    /// order: each id is read once, sequentially, where the table's own
    /// growth would read them in bucket order (a cache miss each). The old
    /// table is freed first (the ids, not it, say what goes in), so growing
    /// never holds both.
    fn grow_index(&mut self) {
        let capacity = (self.index.capacity() * 2).max(16);
        let held = self.index.len();
        self.index = HashTable::new();
        let mut index = HashTable::with_capacity(capacity);
        let chunks = &self.chunks;
        for (slot, (id, _)) in chunks.iter().flatten().enumerate() {
            index.insert_unique(id_hash(id), slot as SlotId, |&s| id_hash(id_at(chunks, s)));
        }
        assert_eq!(index.len(), held, "every slot is in the table once");
        self.index = index;
    }

    /// The id and state of a slot [`IdSlots::slot_of`] returned.
    pub(crate) fn get(&self, slot: SlotId) -> (&Id, &S) {
        let slot = slot as usize;
        let (id, state) = &self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS];
        (id, state)
    }

    /// The id and state of a slot [`IdSlots::slot_of`] returned.
    pub(crate) fn get_mut(&mut self, slot: SlotId) -> (&Id, &mut S) {
        let slot = slot as usize;
        let (id, state) = &mut self.chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS];
        (id, state)
    }

    /// Every id's state, in slot order.
    pub(crate) fn states(&self) -> impl Iterator<Item = &S> {
        self.chunks.iter().flatten().map(|(_, state)| state)
    }

    /// Every id and its state, in slot order.
    pub(crate) fn into_iter(self) -> impl Iterator<Item = (Id, S)> {
        self.chunks.into_iter().flatten()
    }

    /// Number of ids held.
    pub(crate) fn len(&self) -> usize {
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
