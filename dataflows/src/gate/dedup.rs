//! The duplicate / conflicting-duplicate rule, the one rule of the gate
//! that depends on arrival order: [`DuplicateRule`].

use super::{parse_event, RejectKind, Rejection};
use crate::id::Id;
use crate::id_slots::{IdHash, IdSlots};
use crate::trade::{ByteSink, TradeVersion};

/// How many lines [`DuplicateRule::admit_all`] parses ahead of the one it
/// applies the rule to: two parses (~800 ns) cover a table read from
/// memory, first the bucket, then the slot it names.
const ADMIT_AHEAD_LINES: usize = 2;

/// The lines [`DuplicateRule::admit_all`] holds read and not yet admitted.
const RING_LINES: usize = ADMIT_AHEAD_LINES + 1;

/// A line [`DuplicateRule::admit_all`] has parsed and not yet admitted:
/// the stateless checks' result and, when it passed them, its trade id's
/// hash and its fingerprint (else `IdHash::UNUSED` and 0, never read).
struct Parsed {
    read: Result<TradeVersion, Rejection>,
    hash: IdHash,
    print: u128,
}

/// Outcome of admitting one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// First acceptance of this `(trade_id, version)`: it changes state.
    Accepted(TradeVersion),
    /// Identical (after parsing) to the accepted copy: acknowledged, ignored.
    Duplicate(TradeVersion),
    /// Breaks a rule (including `conflicting_duplicate`): changes no state.
    Rejected(Rejection),
}

/// [`Admission`] without the version: what [`Prints::verdict`] decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First acceptance of this `(trade_id, version)` (now remembered).
    Accepted,
    /// Equal to the accepted copy: acknowledged, ignored.
    Duplicate,
    /// `conflicting_duplicate`: the first copy stays.
    Rejected(Rejection),
}

/// Stateful gate: [`parse_event`] plus the duplicate / conflicting-duplicate
/// rule, which depends on arrival order. Remembers a 128-bit fingerprint of
/// every accepted `(trade_id, version)`; the first copy accepted stays.
/// Kept per trade id (one slot per trade, its versions in [`Prints`]) in
/// the store the versions stage keeps its trades in ([`IdSlots`]: slots in
/// fixed chunks behind a table of cache-line buckets), so a lookup allocates
/// nothing and growing moves no slot.
#[derive(Default)]
pub struct DuplicateRule {
    accepted: IdSlots<Prints>,
}

/// The duplicate rule's memory of one trade id: the `(version, fingerprint)`
/// of every accepted version, the first copy of each. The first accepted
/// version is held inline (most trades have one version, and then this is
/// 32 bytes and no allocation); later ones in a list behind one pointer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prints {
    /// The first accepted version; 0 (never a valid version) when empty.
    first_version: u64,
    /// Its fingerprint as two halves (low, high): two `u64`s keep this
    /// struct 8-byte aligned, where a `u128` would pad it to 48 bytes.
    first_print: [u64; 2],
    /// Every later accepted pair, in acceptance order.
    more: Option<Box<LaterPrints>>,
}

/// The pairs of a trade's second and later accepted versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LaterPrints(Vec<(u64, u128)>);

/// A fingerprint as two `u64` halves, and back.
fn halves(print: u128) -> [u64; 2] {
    [print as u64, (print >> 64) as u64]
}

fn joined([low, high]: [u64; 2]) -> u128 {
    u128::from(low) | (u128::from(high) << 64)
}

impl Prints {
    /// Every remembered `(version, fingerprint)`, in acceptance order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        let first =
            (self.first_version != 0).then(|| (self.first_version, joined(self.first_print)));
        first
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.0.iter().copied()))
    }

    /// Number of remembered versions.
    pub fn len(&self) -> usize {
        usize::from(self.first_version != 0) + self.more.as_ref().map_or(0, |m| m.0.len())
    }

    /// The highest remembered version; 0 when none.
    pub fn highest_version(&self) -> u64 {
        self.iter().map(|(v, _)| v).max().unwrap_or(0)
    }

    /// True when no version was accepted.
    pub fn is_empty(&self) -> bool {
        self.first_version == 0
    }

    /// The fingerprint accepted for `version`, if any.
    fn get(&self, version: u64) -> Option<u128> {
        self.iter().find(|(v, _)| *v == version).map(|(_, p)| p)
    }

    /// Remembers `(version, print)`; the caller has checked it is not known.
    fn push(&mut self, version: u64, print: u128) {
        debug_assert!(version != 0, "trade versions start at 1");
        if self.first_version == 0 {
            self.first_version = version;
            self.first_print = halves(print);
        } else {
            self.more.get_or_insert_default().0.push((version, print));
        }
    }

    /// The duplicate rule for one trade id whose memory this is (the caller
    /// found it by the version's trade id): `Accepted` (and remembered) when
    /// the version is new, `Duplicate` when it was accepted with an equal
    /// fingerprint, else `Rejected` with `conflicting_duplicate`, the first
    /// copy staying.
    #[inline(always)]
    pub fn admit(&mut self, version: TradeVersion, print: u128) -> Admission {
        match self.verdict(&version, print) {
            Verdict::Accepted => Admission::Accepted(version),
            Verdict::Duplicate => Admission::Duplicate(version),
            Verdict::Rejected(rejection) => Admission::Rejected(rejection),
        }
    }

    /// [`Prints::admit`] without taking the version: the verdict only, so
    /// a caller that keeps the version (boxed) never moves it.
    pub fn verdict(&mut self, version: &TradeVersion, print: u128) -> Verdict {
        match self.get(version.version) {
            None => {
                self.push(version.version, print);
                Verdict::Accepted
            }
            Some(known) if known == print => Verdict::Duplicate,
            Some(_) => Verdict::Rejected(Rejection {
                kind: RejectKind::ConflictingDuplicate,
                detail: format!(
                    "{} v{} already accepted with different content",
                    version.trade_id, version.version
                ),
            }),
        }
    }

    /// Adds restored `(version, fingerprint)` pairs; a version already
    /// remembered keeps its first fingerprint.
    pub fn restore(&mut self, restored: Vec<(u64, u128)>) {
        for (version, print) in restored {
            if version != 0 && self.get(version).is_none() {
                self.push(version, print);
            }
        }
    }
}

/// The version's fingerprint: XXH3-128 of [`TradeVersion::canonical_bytes`].
/// Equal versions (as by the derived `PartialEq`) always have equal
/// fingerprints, and the value is stable across processes, toolchains and
/// releases, so it can be persisted and compared after a restart.
pub fn fingerprint(version: &TradeVersion) -> u128 {
    thread_local! {
        /// The fixed buffer, reused (a fresh one on the stack was zeroed
        /// for every version: a 512-byte `memset` each).
        static FIXED: std::cell::RefCell<[u8; FIXED_BYTES]> =
            const { std::cell::RefCell::new([0; FIXED_BYTES]) };
        /// The growable buffer, reused: one allocation per thread, not per event.
        static CANONICAL: std::cell::RefCell<Vec<u8>> =
            std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    // Encoded in the fixed buffer when it fits (every version without a
    // long correlation id), else in the growable one: the same bytes
    // either way.
    let fixed = FIXED.with_borrow_mut(|bytes| {
        let mut sink = FixedBytes::new(bytes);
        version.canonical_bytes(&mut sink);
        let len = sink.written()?;
        Some(xxhash_rust::xxh3::xxh3_128(bytes.get(..len)?))
    });
    if let Some(print) = fixed {
        return print;
    }
    CANONICAL.with_borrow_mut(|bytes| {
        bytes.clear();
        version.canonical_bytes(bytes);
        xxhash_rust::xxh3::xxh3_128(bytes)
    })
}

/// Room in the fixed buffer for a version's canonical bytes: ids of 64
/// characters take 4 x 68 bytes, the rest without a correlation id ~70,
/// so 512 leaves ~170 for a correlation id.
const FIXED_BYTES: usize = 512;

/// A sink writing into a fixed buffer (the thread's reused one) that
/// notes when the bytes do not fit. It holds the buffer by reference, so
/// its own two fields can live in registers while a version is encoded.
struct FixedBytes<'a> {
    bytes: &'a mut [u8; FIXED_BYTES],
    len: usize,
    overflowed: bool,
}

impl<'a> FixedBytes<'a> {
    /// A sink that has written nothing into `bytes`.
    fn new(bytes: &'a mut [u8; FIXED_BYTES]) -> FixedBytes<'a> {
        FixedBytes {
            bytes,
            len: 0,
            overflowed: false,
        }
    }

    /// How many bytes were written, or `None` when some did not fit.
    fn written(&self) -> Option<usize> {
        (!self.overflowed).then_some(self.len)
    }
}

impl ByteSink for FixedBytes<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                copy_short(room, bytes);
                self.len += bytes.len();
            }
            None => self.overflowed = true,
        }
    }
}

/// `to.copy_from_slice(from)` (the two of one length) without a call to
/// `memcpy` for the short pieces a canonical encoding is made of (ids of
/// a few bytes, numbers): two fixed-size copies that overlap cover any
/// length from 4 to 32 (each a load and a store), a byte or three below.
/// Longer pieces are copied by `copy_from_slice`.
#[inline(always)]
fn copy_short(to: &mut [u8], from: &[u8]) {
    /// The first and last `N` bytes of `from` into `to`: all of them when
    /// `N <= from.len() <= 2 * N`.
    #[inline(always)]
    fn ends<const N: usize>(to: &mut [u8], from: &[u8]) {
        let len = from.len();
        to[..N].copy_from_slice(&from[..N]);
        to[len - N..len].copy_from_slice(&from[len - N..]);
    }
    debug_assert_eq!(to.len(), from.len());
    match from.len() {
        0 => {}
        len @ 1..=3 => {
            to[0] = from[0];
            to[len / 2] = from[len / 2];
            to[len - 1] = from[len - 1];
        }
        4..=8 => ends::<4>(to, from),
        9..=16 => ends::<8>(to, from),
        17..=32 => ends::<16>(to, from),
        _ => to.copy_from_slice(from),
    }
}

impl DuplicateRule {
    /// A gate that has accepted nothing.
    pub fn new() -> DuplicateRule {
        DuplicateRule::default()
    }

    /// Admits one event: `Rejected` if [`parse_event`] fails, otherwise
    /// exactly [`DuplicateRule::admit_parsed`] of the parsed version.
    pub fn admit(&mut self, bytes: &[u8]) -> Admission {
        match parse_event(bytes) {
            Ok(version) => self.admit_parsed(version),
            Err(rejection) => Admission::Rejected(rejection),
        }
    }

    /// The duplicate rule alone, for a version [`parse_event`] produced:
    /// `Accepted` (and remembered) the first time its `(trade_id, version)`
    /// is seen; `Duplicate` if that pair was accepted with equal content;
    /// otherwise `Rejected` with `conflicting_duplicate`, the first copy
    /// staying accepted. Only `Accepted` changes the gate's state.
    pub fn admit_parsed(&mut self, version: TradeVersion) -> Admission {
        let print = fingerprint(&version);
        self.admit_fingerprinted(version, print)
    }

    /// [`DuplicateRule::admit_parsed`] for a version whose [`fingerprint`] the caller
    /// has computed already (and keeps, e.g. to persist it).
    pub fn admit_fingerprinted(&mut self, version: TradeVersion, print: u128) -> Admission {
        let hash = IdHash::of(&version.trade_id);
        self.admit_hashed(version, hash, print)
    }

    /// [`DuplicateRule::admit_fingerprinted`] for a version whose trade
    /// id's [`IdHash`] is known too. Inlined (with [`Prints::admit`]), so
    /// the version is moved once, into its admission.
    #[inline(always)]
    fn admit_hashed(&mut self, version: TradeVersion, hash: IdHash, print: u128) -> Admission {
        let slot = self.accepted.slot_of_hashed(&version.trade_id, hash);
        self.accepted.get_mut(slot).1.admit(version, print)
    }

    /// [`DuplicateRule::admit`] of each of `lines` in turn, calling `each`
    /// with its admission: the same admissions in the same order, and the
    /// same state after, as admitting the lines one at a time. Reads
    /// ahead: a line's trade id is hashed where it is parsed, and its
    /// place in the table of accepted ids (a cache miss in a table of a
    /// million) is prefetched while the next [`ADMIT_AHEAD_LINES`] lines
    /// are parsed; only then is the rule applied to it. Makes room first
    /// for as many new trade ids as `lines` says it has (its lower size
    /// hint), as `Extend` implementations do.
    pub fn admit_all<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a [u8]>,
        mut each: impl FnMut(Admission),
    ) {
        // A ring of the lines read and not yet admitted, in arrival order
        // from `next`: each parsed straight into its place and taken out
        // once, into its admission (a version is 256 bytes; a queue of
        // enums moved it four more times).
        let mut ring: [Option<Parsed>; RING_LINES] = std::array::from_fn(|_| None);
        let mut next = 0usize;
        let lines = lines.into_iter();
        // As `Extend` does: room for the lines known to come, so the table
        // is sized once rather than doubled (and every id rehashed) on the way.
        self.accepted.reserve(lines.size_hint().0);
        for line in lines {
            let place = &mut ring[next];
            if let Some(oldest) = place.take() {
                each(self.admit_read(oldest));
            }
            let parsed = place.insert(Parsed {
                read: parse_event(line),
                hash: IdHash::UNUSED,
                print: 0,
            });
            if let Ok(version) = &parsed.read {
                parsed.hash = IdHash::of(&version.trade_id);
                parsed.print = fingerprint(version);
                self.accepted.prefetch(parsed.hash);
            }
            // The line before this one: its bucket has had a parse to
            // load, so the slot it names can be asked for now.
            let before = (next + RING_LINES - 1) % RING_LINES;
            if let Some(Parsed {
                read: Ok(_), hash, ..
            }) = &ring[before]
            {
                self.accepted.prefetch_slot(*hash);
            }
            next = (next + 1) % RING_LINES;
        }
        for at in 0..RING_LINES {
            if let Some(parsed) = ring[(next + at) % RING_LINES].take() {
                each(self.admit_read(parsed));
            }
        }
    }

    /// The rule for one line [`DuplicateRule::admit_all`] has read.
    #[inline(always)]
    fn admit_read(&mut self, parsed: Parsed) -> Admission {
        match parsed.read {
            Ok(version) => self.admit_hashed(version, parsed.hash, parsed.print),
            Err(rejection) => Admission::Rejected(rejection),
        }
    }

    /// Remembers the `(version, fingerprint)` pairs accepted for `trade_id`
    /// (a restart restoring the gate's state). Pairs already known are kept
    /// as they are: the first copy accepted stays.
    pub fn restore(&mut self, trade_id: Id, fingerprints: Vec<(u64, u128)>) {
        let slot = self.accepted.slot_of(&trade_id);
        self.accepted.get_mut(slot).1.restore(fingerprints);
    }

    /// Number of distinct `(trade_id, version)` pairs accepted so far.
    pub fn accepted_count(&self) -> usize {
        self.accepted.states().map(Prints::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint is XXH3-128 of the canonical bytes whether they are
    /// encoded in the fixed buffer or (a long correlation id) in the
    /// growable one, on both sides of the fixed buffer's size; and the
    /// fixed buffer holds exactly the bytes when they fit and notes when
    /// they do not.
    #[test]
    fn fingerprints_hash_the_canonical_bytes_wherever_encoded() {
        let line = br#"{"trade_id":"T-1","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"2.5","trade_date":"2026-01-02"}"#;
        let base = parse_event(line).expect("the sample parses");
        let mut overflowed = 0;
        for len in [0, 1, 100, 400, 430, 440, 450, 500, 2000] {
            let version = TradeVersion {
                correlation_id: (len > 0).then(|| Id::from("c".repeat(len))),
                ..base.clone()
            };
            let mut bytes = Vec::new();
            version.canonical_bytes(&mut bytes);
            assert_eq!(
                fingerprint(&version),
                xxhash_rust::xxh3::xxh3_128(&bytes),
                "{len}"
            );
            let mut buffer = [0u8; FIXED_BYTES];
            let mut sink = FixedBytes::new(&mut buffer);
            version.canonical_bytes(&mut sink);
            match sink.written() {
                Some(written) => {
                    assert!(bytes.len() <= FIXED_BYTES, "{len}");
                    assert_eq!(&buffer[..written], bytes.as_slice(), "{len}");
                }
                None => {
                    assert!(bytes.len() > FIXED_BYTES, "{len}");
                    overflowed += 1;
                }
            }
        }
        assert!(
            (1..9).contains(&overflowed),
            "both encodings exercised: {overflowed}"
        );
    }

    /// `copy_short` copies exactly the source, at every length on both
    /// sides of each of its cases, into a longer buffer's front without
    /// touching the rest.
    #[test]
    fn short_copies_copy_every_byte_of_every_length() {
        let from: Vec<u8> = (1..=80).collect();
        for len in 0..=from.len() {
            let mut to = [0u8; 96];
            copy_short(&mut to[..len], &from[..len]);
            assert_eq!(&to[..len], &from[..len], "{len}");
            assert!(to[len..].iter().all(|b| *b == 0), "{len}");
        }
    }

    #[test]
    fn prints_remember_every_version_with_its_full_fingerprint() {
        let mut prints = Prints::default();
        assert!(prints.is_empty());
        assert_eq!(prints.highest_version(), 0);
        let pairs = [
            (1, u128::MAX - 3),
            (4, 1u128 << 64),
            (2, 7),
            (9, (3u128 << 100) | 5),
        ];
        for (version, print) in pairs {
            assert_eq!(prints.get(version), None);
            prints.push(version, print);
        }
        assert_eq!(prints.len(), 4);
        assert_eq!(prints.highest_version(), 9);
        assert_eq!(prints.iter().collect::<Vec<_>>(), pairs.to_vec());
        for (version, print) in pairs {
            assert_eq!(prints.get(version), Some(print));
        }
        // Restoring keeps the first fingerprint of a known version.
        prints.restore(vec![(4, 0), (10, 11)]);
        assert_eq!(prints.get(4), Some(1u128 << 64));
        assert_eq!(prints.get(10), Some(11));
        assert_eq!(prints.len(), 5);
    }
}
