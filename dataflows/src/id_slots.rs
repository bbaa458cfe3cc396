//! Ids kept for good, each with a slot of state and a dense number: the
//! versions stage's trade ids (the duplicate rule never forgets a trade),
//! the position keys its trades are booked in, the booking stage's books
//! by position key, and the trade ids of the stand-alone
//! [`crate::gate::DuplicateRule`]. A lookup can be split in two: the
//! id's [`IdHash`] first, with [`IdSlots::prefetch`] and
//! [`IdSlots::prefetch_slot`] started some lookups ahead, then
//! [`IdSlots::slot_of_hashed`].
//!
//! Slots live in fixed-size chunks, so growing the store never moves one,
//! and are found through [`SlotIndex`], a table of cache-line buckets
//! (slot numbers and 16 bits of their ids' hashes side by side): a lookup
//! reads one cache line of the table as a rule and compares ids only where
//! the 16 bits match, and the table grows by a rebuild that reads the ids
//! in slot order (sequential reads, each id hashed once). An id costs its
//! slot plus 7.3-14.6 bytes of table.

use std::hash::Hasher;

use rustc_hash::FxHasher;

use crate::id::Id;
use crate::prefetch::prefetch;

/// Slots per chunk: 4096 keeps a chunk of the versions stage's 80-byte
/// slots at 320 KB, so a new chunk is one allocation and little unused memory.
const CHUNK_SLOTS: usize = 4096;

/// How many entries ahead a growing table prefetches the bucket an entry
/// goes in: enough to cover a memory read with the inserts in between.
const GROW_AHEAD_ENTRIES: usize = 16;

/// The most ids [`IdSlots::reserve`] makes room for (a table of ~150 MB);
/// past it the table grows by doubling as ids come.
const MAX_RESERVED_IDS: usize = 1 << 24;

/// A slot's number. At most `u32::MAX - 1` ids per store.
pub(crate) type SlotId = u32;

/// Id -> slot, where each slot holds `S` (see the module docs).
pub(crate) struct IdSlots<S> {
    chunks: Vec<Vec<(Id, S)>>,
    /// Slot numbers, placed by [`id_hash`] of their ids.
    index: SlotIndex,
}

impl<S> Default for IdSlots<S> {
    fn default() -> Self {
        IdSlots {
            chunks: Vec::new(),
            index: SlotIndex::default(),
        }
    }
}

/// The table's hash of an id: 32 bits of its Fx hash spread over 64 by an
/// odd multiplier, so the high bits (where [`SlotIndex`] starts looking)
/// mix every bit, and the low 16 (its tag) are a bijection of the Fx
/// hash's low 16.
fn id_hash(id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(id.as_bytes());
    let short = hasher.finish() >> 32;
    short.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// An id's hash as [`IdSlots`] places it, computed once: it can start a
/// lookup's first memory read early ([`IdSlots::prefetch`]) and then do
/// the lookup ([`IdSlots::slot_of_hashed`]) without hashing the id again.
/// Its serde form is the number: the same in every process of a cluster
/// (they run one build).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdHash(u64);

impl IdHash {
    /// A value for a place that holds no id's hash (never looked up or
    /// routed by): no computation, unlike the hash of some stand-in id.
    pub(crate) const UNUSED: IdHash = IdHash(0);

    /// The hash of `id`.
    pub(crate) fn of(id: &str) -> IdHash {
        IdHash(id_hash(id))
    }

    /// The hash as a number (e.g. to route the id's events to a worker:
    /// its low bits are as well mixed as its high ones).
    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

/// The id held in `slot` of `chunks`.
fn id_at<S>(chunks: &[Vec<(Id, S)>], slot: SlotId) -> &Id {
    let slot = slot as usize;
    &chunks[slot / CHUNK_SLOTS][slot % CHUNK_SLOTS].0
}

/// Entries per [`Bucket`]: ten 2-byte tags and ten 4-byte slot numbers
/// fill 60 of a cache line's 64 bytes.
const BUCKET_ENTRIES: usize = 10;

/// One cache line of [`SlotIndex`]: entries fill it from the front (none
/// is ever removed), so its first zero tag ends it.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    /// 16 bits of each entry's hash, never 0; 0 marks an empty entry.
    tags: [u16; BUCKET_ENTRIES],
    /// The slot of each entry.
    slots: [SlotId; BUCKET_ENTRIES],
}

/// Slot numbers by hash: an array of [`Bucket`]s, probed linearly from
/// the bucket the hash's high bits name, held at most 7/8 full and
/// doubled when full, so a probe always meets an empty entry; entries are
/// never removed (ids are kept for good). A lookup reads one cache line as
/// a rule (two where a full bucket spills into the next) and compares an
/// id only where a 16-bit tag matches (a stranger's tag, in well under one
/// lookup in a thousand). A table of 1-byte control tags beside 4-byte
/// slot numbers (hashbrown's) reads two lines for every new id, and its
/// 7-bit tags send one lookup in 10-20 to compare an id it does not hold:
/// each one a cache miss in a table of a million ids. 6.4 bytes an entry,
/// 7.3-14.6 an id (load 7/16 to 7/8; growing by half was tried: the same
/// peak heap in `bench ingest`, and half as many ids again rehashed).
#[derive(Default)]
struct SlotIndex {
    buckets: Vec<Bucket>,
    held: usize,
}

/// Where a probe ended: the slot of a matching id, or the empty entry
/// (bucket, place) a new id's slot goes in.
enum Probe {
    Found(SlotId),
    Vacant(usize, usize),
}

impl SlotIndex {
    /// An empty table of `buckets` buckets (at most `u32::MAX`).
    fn with_buckets(buckets: usize) -> SlotIndex {
        assert!(u32::try_from(buckets).is_ok(), "a table of 2^32 buckets");
        SlotIndex {
            buckets: vec![Bucket::default(); buckets],
            held: 0,
        }
    }

    /// A table of `buckets` buckets holding `entries` (hash, slot), none
    /// of them twice: how a table is grown, in slot order. The entries go
    /// in in that order; each one's bucket is prefetched
    /// [`GROW_AHEAD_ENTRIES`] entries before it goes in (a table of a
    /// million ids is not in the cache, and its entries land all over it).
    fn with_entries(buckets: usize, entries: impl IntoIterator<Item = (u64, SlotId)>) -> SlotIndex {
        let mut index = SlotIndex::with_buckets(buckets);
        let mut ahead = [(0u64, 0 as SlotId); GROW_AHEAD_ENTRIES];
        let mut read = 0usize;
        for (hash, slot) in entries {
            let at = read % GROW_AHEAD_ENTRIES;
            if read >= GROW_AHEAD_ENTRIES {
                let (held_hash, held_slot) = ahead[at];
                index.insert(held_hash, held_slot);
            }
            if let Some(bucket) = index.home_bucket(hash) {
                prefetch(bucket);
            }
            ahead[at] = (hash, slot);
            read += 1;
        }
        let waiting = read.min(GROW_AHEAD_ENTRIES);
        for at in read - waiting..read {
            let (hash, slot) = ahead[at % GROW_AHEAD_ENTRIES];
            index.insert(hash, slot);
        }
        index
    }

    /// The bucket count a full table grows to: twice its own, at least 2.
    fn grown_buckets(&self) -> usize {
        (self.buckets.len() * 2).max(2)
    }

    /// The tag of a hash: its low 16 bits, 0 taken as 1 (0 marks empty).
    fn tag(hash: u64) -> u16 {
        (hash as u16).max(1)
    }

    /// The bucket a probe for `hash` starts at, of `count`: the hash's high
    /// 32 bits scaled to `count` (a multiply and a shift, for any count).
    #[inline(always)]
    fn home(hash: u64, count: usize) -> usize {
        (((hash >> 32) * count as u64) >> 32) as usize
    }

    /// Probes for `hash`, calling `is_id` on the slots whose tag matches.
    #[inline]
    fn probe(&self, hash: u64, mut is_id: impl FnMut(SlotId) -> bool) -> Probe {
        let count = self.buckets.len();
        if count == 0 {
            return Probe::Vacant(0, 0);
        }
        let tag = SlotIndex::tag(hash);
        let mut at = SlotIndex::home(hash, count);
        for _ in 0..count {
            let bucket = &self.buckets[at];
            for (place, &held) in bucket.tags.iter().enumerate() {
                if held == 0 {
                    return Probe::Vacant(at, place);
                }
                if held == tag && is_id(bucket.slots[place]) {
                    return Probe::Found(bucket.slots[place]);
                }
            }
            at += 1;
            if at == count {
                at = 0;
            }
        }
        unreachable!("a table at most 7/8 full has an empty entry");
    }

    /// The bucket a probe for `hash` reads first; `None` in an empty table.
    fn home_bucket(&self, hash: u64) -> Option<&Bucket> {
        self.buckets.get(SlotIndex::home(hash, self.buckets.len()))
    }

    /// Whether one more entry would take the table past 7/8 full.
    fn is_full(&self) -> bool {
        (self.held + 1) * 8 > self.buckets.len() * BUCKET_ENTRIES * 7
    }

    /// Puts `slot` in the empty entry [`SlotIndex::probe`] of `hash`
    /// returned (the table unchanged since).
    fn insert_at(&mut self, (at, place): (usize, usize), hash: u64, slot: SlotId) {
        let bucket = &mut self.buckets[at];
        debug_assert_eq!(bucket.tags[place], 0, "the entry is empty");
        bucket.tags[place] = SlotIndex::tag(hash);
        bucket.slots[place] = slot;
        self.held += 1;
    }

    /// Puts `slot` in the table (its id not held).
    fn insert(&mut self, hash: u64, slot: SlotId) {
        match self.probe(hash, |_| false) {
            Probe::Vacant(at, place) => self.insert_at((at, place), hash, slot),
            Probe::Found(_) => unreachable!("a probe that matches nothing ends vacant"),
        }
    }
}

impl<S: Default> IdSlots<S> {
    /// The slot of `id`, created holding `S::default()` if `id` is new.
    ///
    /// # Panics
    /// When the store already holds `u32::MAX - 1` ids (hundreds of
    /// gigabytes of state): a capacity limit, asserted, not an input error.
    pub(crate) fn slot_of(&mut self, id: &Id) -> SlotId {
        self.slot_of_hashed(id, IdHash::of(id))
    }

    /// [`IdSlots::slot_of`] for an id whose hash is known: `hash` must be
    /// [`IdHash::of`] `id` (asserted in debug builds).
    pub(crate) fn slot_of_hashed(&mut self, id: &Id, IdHash(hash): IdHash) -> SlotId {
        debug_assert_eq!(IdHash(hash), IdHash::of(id), "the hash is the id's");
        let vacant = match self.probe_id(id, hash) {
            Probe::Found(slot) => return slot,
            Probe::Vacant(at, place) => (at, place),
        };
        let len = self.len();
        assert!(
            len < SlotId::MAX as usize,
            "more than u32::MAX ids in one store on one worker"
        );
        let slot = len as SlotId;
        if self.index.is_full() {
            self.grow_index();
            self.index.insert(hash, slot);
        } else {
            self.index.insert_at(vacant, hash, slot);
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push((id.clone(), S::default()));
        }
        slot
    }
}

impl<S> IdSlots<S> {
    /// Replaces the full table by one of twice its buckets (at least 2),
    /// filled in slot order: each id is read once, sequentially, and its
    /// hash computed again rather than kept. The old table is freed first
    /// (the ids, not it, say what goes in), so growing never holds both.
    fn grow_index(&mut self) {
        let buckets = self.index.grown_buckets();
        self.rebuild_index(buckets);
    }

    /// Makes room for `additional` more ids (at most [`MAX_RESERVED_IDS`]
    /// in all): the table grown at once to the size that adding them one
    /// by one would double it to, so they go in without a rebuild. Changes
    /// no slot and no lookup's result.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let wanted = self.len().saturating_add(additional).min(MAX_RESERVED_IDS);
        let mut buckets = self.index.buckets.len().max(2);
        while (wanted + 1) * 8 > buckets * BUCKET_ENTRIES * 7 {
            buckets *= 2;
        }
        if buckets > self.index.buckets.len() {
            self.rebuild_index(buckets);
        }
    }

    /// Replaces the table by one of `buckets` buckets holding every slot.
    fn rebuild_index(&mut self, buckets: usize) {
        let held = self.index.held;
        self.index = SlotIndex::default();
        let entries = self.chunks.iter().flatten().enumerate();
        let index = SlotIndex::with_entries(
            buckets,
            entries.map(|(slot, (id, _))| (id_hash(id), slot as SlotId)),
        );
        assert_eq!(index.held, held, "every slot is in the table once");
        self.index = index;
    }

    /// Starts loading the part of the table a lookup of `hash` reads
    /// first, so that a lookup a few events later does not wait for it.
    /// Changes nothing (the table may grow in between: then it was wasted).
    pub(crate) fn prefetch(&self, IdHash(hash): IdHash) {
        if let Some(bucket) = self.index.home_bucket(hash) {
            prefetch(bucket);
        }
    }

    /// Starts loading the slot of the first entry whose tag matches
    /// `hash` in the bucket a lookup of `hash` reads first: the slot a
    /// lookup of a held id compares and returns. Reads that bucket, so it
    /// pays when [`IdSlots::prefetch`] loaded it some time before. Changes
    /// nothing.
    pub(crate) fn prefetch_slot(&self, IdHash(hash): IdHash) {
        if let Some(entry) = self.probable_entry(hash) {
            prefetch(entry);
        }
    }

    /// The state in the slot [`IdSlots::prefetch_slot`] loads: the state of
    /// the id `hash` is of, if held, unless a stranger's entry with the
    /// same 16-bit tag comes first (ids are not compared). For reading
    /// ahead what that state points to, never for a result.
    pub(crate) fn probable_state(&self, IdHash(hash): IdHash) -> Option<&S> {
        self.probable_entry(hash).map(|(_, state)| state)
    }

    /// The entry of the first slot in `hash`'s first bucket whose tag matches.
    fn probable_entry(&self, hash: u64) -> Option<&(Id, S)> {
        let bucket = self.index.home_bucket(hash)?;
        let tag = SlotIndex::tag(hash);
        let place = bucket.tags.iter().position(|&held| held == tag)?;
        let slot = bucket.slots[place] as usize;
        self.chunks.get(slot / CHUNK_SLOTS)?.get(slot % CHUNK_SLOTS)
    }

    /// The slot of `id` if held; creates nothing.
    pub(crate) fn find(&self, id: &Id) -> Option<SlotId> {
        match self.probe_id(id, id_hash(id)) {
            Probe::Found(slot) => Some(slot),
            Probe::Vacant(..) => None,
        }
    }

    /// Probes the table for `id`, whose hash is `hash`, comparing the ids
    /// of the slots whose tags match.
    #[inline]
    fn probe_id(&self, id: &Id, hash: u64) -> Probe {
        let chunks = &self.chunks;
        self.index.probe(hash, |slot| id_at(chunks, slot) == id)
    }

    /// Every id and its state, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Id, &S)> {
        self.chunks.iter().flatten().map(|(id, state)| (id, state))
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

    /// Routing by the hash (its value modulo the worker count, or its low
    /// bits) spreads the trade ids feeds send (a prefix and a counter)
    /// evenly over 2, 3, 4 and 8 workers: within 2% of an even share.
    #[test]
    fn hash_values_spread_sequential_ids_over_workers() {
        for workers in [2u64, 3, 4, 8] {
            let mut counts = vec![0u64; workers as usize];
            let ids = 200_000u64;
            for n in 0..ids {
                let hash = IdHash::of(&format!("T{n}"));
                counts[(hash.value() % workers) as usize] += 1;
            }
            let even = ids / workers;
            for (worker, count) in counts.iter().enumerate() {
                assert!(
                    count.abs_diff(even) * 50 <= even,
                    "{workers} workers: worker {worker} has {count} of {ids}"
                );
            }
        }
    }

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

    /// Room reserved ahead (before any id, between ids, more than is
    /// used, and a lower bound beyond any table) changes no slot: every
    /// id keeps the slot it has without reserving, and the ids reserved
    /// for go in with no rebuild of the table.
    #[test]
    fn reserving_room_changes_no_slot_and_saves_the_rebuilds() {
        let ids: Vec<Id> = (0..30_000)
            .map(|n| crate::id::format_id!("T-{}", n % 9_000))
            .collect();
        let mut plain = IdSlots::<()>::default();
        let mut reserved = IdSlots::<()>::default();
        reserved.reserve(5_000);
        let buckets_reserved = reserved.index.buckets.len();
        for (n, id) in ids.iter().enumerate() {
            if n == 5_000 {
                assert_eq!(
                    reserved.index.buckets.len(),
                    buckets_reserved,
                    "5,000 ids fit the room reserved for them"
                );
                reserved.reserve(usize::MAX);
                assert_eq!(
                    reserved.index.buckets.len(),
                    (MAX_RESERVED_IDS * 8)
                        .div_ceil(BUCKET_ENTRIES * 7)
                        .next_power_of_two(),
                    "the room is capped"
                );
            }
            assert_eq!(reserved.slot_of(id), plain.slot_of(id), "{id}");
        }
        assert_eq!(reserved.len(), 9_000);
        reserved.reserve(0);
        for id in &ids {
            let slot = reserved.slot_of(id);
            assert_eq!(reserved.get(slot).0, id);
        }
    }

    /// Looking ids up by a hash computed first, with their buckets and
    /// slots prefetched ahead (as the versions stage does), gives every id
    /// the slot a plain lookup gives it, new ids and held ones alike, while
    /// the table grows under the prefetches.
    #[test]
    fn lookups_by_hash_with_prefetches_find_the_same_slots() {
        let ids: Vec<Id> = (0..20_000)
            .map(|n| crate::id::format_id!("T-{}", n % 7_000))
            .collect();
        let hashes: Vec<IdHash> = ids.iter().map(|id| IdHash::of(id)).collect();
        let (mut plain, mut hashed) = (IdSlots::<()>::default(), IdSlots::<()>::default());
        for (n, id) in ids.iter().enumerate() {
            if let Some(ahead) = hashes.get(n + 16) {
                hashed.prefetch(*ahead);
            }
            if let Some(ahead) = hashes.get(n + 8) {
                hashed.prefetch_slot(*ahead);
            }
            assert_eq!(hashed.slot_of_hashed(id, hashes[n]), plain.slot_of(id));
        }
        assert_eq!(hashed.len(), 7_000);
        assert_eq!(plain.len(), 7_000);
    }

    /// A table built from a list of entries (with its buckets prefetched
    /// ahead) is the table inserting them one at a time in list order
    /// gives: every entry in the same bucket and place, for lists shorter
    /// than, equal to and longer than the read-ahead, hashes colliding.
    #[test]
    fn a_table_built_from_entries_is_the_one_inserts_in_order_give() {
        for count in [0u32, 1, 15, 16, 17, 100, 5_000] {
            let hash_of = |key: u32| {
                let spread = u64::from(key % 97).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                if key.is_multiple_of(5) {
                    spread & 0xFFFF_FFFF_0000_0000
                } else {
                    spread
                }
            };
            let buckets = (count as usize).div_ceil(BUCKET_ENTRIES).max(1) * 2;
            let entries = (0..count).map(|key| (hash_of(key), key as SlotId));
            let built = SlotIndex::with_entries(buckets, entries.clone());
            let mut inserted = SlotIndex::with_buckets(buckets);
            for (hash, slot) in entries {
                inserted.insert(hash, slot);
            }
            assert_eq!(built.held, count as usize);
            assert_eq!(built.held, inserted.held);
            assert_eq!(built.buckets.len(), inserted.buckets.len());
            for (b, i) in built.buckets.iter().zip(&inserted.buckets) {
                assert_eq!((b.tags, b.slots), (i.tags, i.slots), "{count} entries");
            }
        }
    }

    /// The index finds every held slot and only those, whatever the hashes:
    /// keys whose hashes share their tag, their starting entry or both (a
    /// hash of 2 bits spread over tag and start), so probes run over long
    /// chains of equal tags and wrap past the table's end; the table grows
    /// by reinserting in slot order as `IdSlots` does.
    #[test]
    fn the_index_finds_each_slot_under_colliding_hashes() {
        let hashes = [0u64, u64::MAX, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0000];
        let hash_of = |key: u32| hashes[(key % 4) as usize];
        for keys in [10u32, 13, 100, 1000] {
            let mut index = SlotIndex::default();
            let mut held: Vec<u32> = Vec::new();
            for round in 0..2 {
                for key in (0..keys).rev() {
                    let hash = hash_of(key);
                    match index.probe(hash, |slot| held[slot as usize] == key) {
                        Probe::Found(slot) => {
                            assert_eq!(round, 1, "key {key} found before it was added");
                            assert_eq!(held[slot as usize], key);
                        }
                        Probe::Vacant(at, place) => {
                            assert_eq!(round, 0, "key {key} lost");
                            let slot = held.len() as SlotId;
                            if index.is_full() {
                                let entries = held.iter().enumerate();
                                index = SlotIndex::with_entries(
                                    index.grown_buckets(),
                                    entries.map(|(slot, key)| (hash_of(*key), slot as SlotId)),
                                );
                                index.insert(hash, slot);
                            } else {
                                index.insert_at((at, place), hash, slot);
                            }
                            held.push(key);
                        }
                    }
                    assert!(
                        index.held * 8 <= index.buckets.len() * BUCKET_ENTRIES * 7,
                        "at most 7/8 full"
                    );
                }
            }
            assert_eq!(index.held, keys as usize);
        }
    }
}
