//! The duplicate / conflicting-duplicate rule, the one rule of the gate
//! that depends on arrival order: [`DuplicateRule`].

use rustc_hash::FxHashMap as HashMap;

use super::{parse_event, RejectKind, Rejection};
use crate::id::Id;
use crate::trade::TradeVersion;

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

/// Stateful gate: [`parse_event`] plus the duplicate / conflicting-duplicate
/// rule, which depends on arrival order. Remembers a 128-bit fingerprint of
/// every accepted `(trade_id, version)`; the first copy accepted stays.
/// Kept per trade id (one key per trade, its versions in a short list), so
/// a lookup allocates nothing.
#[derive(Default)]
pub struct DuplicateRule {
    accepted: HashMap<Id, Vec<(u64, u128)>>,
}

/// The duplicate rule for one trade id whose accepted `(version,
/// fingerprint)` pairs are `prints` (the caller found them by the version's
/// trade id): `Accepted` (and remembered) when the version is new,
/// `Duplicate` when it was accepted with an equal fingerprint, else
/// `Rejected` with `conflicting_duplicate`, the first copy staying.
pub fn admit_to(prints: &mut Vec<(u64, u128)>, version: TradeVersion, print: u128) -> Admission {
    match prints.iter().find(|(v, _)| *v == version.version) {
        None => {
            // Most trades have one version: room for exactly one (a plain
            // `push` on an empty Vec reserves four, 96 bytes unused).
            if prints.is_empty() {
                prints.reserve_exact(1);
            }
            prints.push((version.version, print));
            Admission::Accepted(version)
        }
        Some((_, known)) if *known == print => Admission::Duplicate(version),
        Some(_) => Admission::Rejected(Rejection {
            kind: RejectKind::ConflictingDuplicate,
            detail: format!(
                "{} v{} already accepted with different content",
                version.trade_id, version.version
            ),
        }),
    }
}

/// Adds restored `(version, fingerprint)` pairs to one trade id's `prints`;
/// a version already there keeps its first fingerprint.
pub fn restore_to(prints: &mut Vec<(u64, u128)>, restored: Vec<(u64, u128)>) {
    for (version, print) in restored {
        if !prints.iter().any(|(v, _)| *v == version) {
            prints.push((version, print));
        }
    }
}

/// The version's fingerprint: XXH3-128 of [`TradeVersion::canonical_bytes`].
/// Equal versions (as by the derived `PartialEq`) always have equal
/// fingerprints, and the value is stable across processes, toolchains and
/// releases, so it can be persisted and compared after a restart.
pub fn fingerprint(version: &TradeVersion) -> u128 {
    let mut bytes = Vec::with_capacity(160);
    version.canonical_bytes(&mut bytes);
    xxhash_rust::xxh3::xxh3_128(&bytes)
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
        match self.accepted.get_mut(&version.trade_id) {
            Some(prints) => admit_to(prints, version, print),
            None => {
                self.accepted
                    .insert(version.trade_id.clone(), vec![(version.version, print)]);
                Admission::Accepted(version)
            }
        }
    }

    /// Remembers the `(version, fingerprint)` pairs accepted for `trade_id`
    /// (a restart restoring the gate's state). Pairs already known are kept
    /// as they are: the first copy accepted stays.
    pub fn restore(&mut self, trade_id: Id, fingerprints: Vec<(u64, u128)>) {
        restore_to(self.accepted.entry(trade_id).or_default(), fingerprints);
    }

    /// Number of distinct `(trade_id, version)` pairs accepted so far.
    pub fn accepted_count(&self) -> usize {
        self.accepted.values().map(Vec::len).sum()
    }
}
