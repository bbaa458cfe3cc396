//! Intake: the validation gate as a dataflow stage (stateless parsing
//! wherever the event was read), then, where the trade id is owned, the
//! duplicate rule and the live-version rule of [`super::versions`]. Restored
//! trades (a restart's snapshot) enter here too.

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use super::versions::{self, AcceptedEvent, BookInput, LiveTrade, RestoredTrade, TradeUpsert};
use super::{DeadLetter, Diff, RawEvent, SourceRef, Time};
use crate::gate::parse_event;
use crate::id::Id;

/// Outputs of the intake stage.
pub(super) struct IntakeStreams<'scope> {
    /// Changes of booked trades and the causes they carry, keyed by position.
    pub book_input: VecCollection<'scope, Time, (Id, BookInput), Diff>,
    /// Rejected events.
    pub dead_letters: StreamVec<'scope, Time, DeadLetter>,
    /// Acknowledged duplicates.
    pub duplicates: StreamVec<'scope, Time, SourceRef>,
    /// Accepted events, once each (empty without the event log).
    pub accepted: StreamVec<'scope, Time, AcceptedEvent>,
    /// Trades whose live version changed (empty without the event log).
    pub live: StreamVec<'scope, Time, LiveTrade>,
    /// `(account, sequence)` of each accepted event that has one.
    pub sequences: StreamVec<'scope, Time, (Id, u64)>,
    /// New live versions whole, as upserts (empty unless `trade_versions`).
    pub trades: StreamVec<'scope, Time, TradeUpsert>,
}

/// An event after parsing: a candidate version or an early rejection.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Parsed {
    /// Passed every stateless check.
    Candidate(SourceRef, Box<crate::trade::TradeVersion>, Vec<u8>),
    /// Failed a stateless check.
    Rejected(DeadLetter),
    /// A trade's state loaded by a restart.
    Restore(Box<RestoredTrade>),
}

impl Parsed {
    /// Where the event is routed: its trade id's owner, or (rejections) any worker.
    pub(super) fn route(&self) -> u64 {
        match self {
            Parsed::Candidate(_, version, _) => version.trade_id.hashed(),
            Parsed::Rejected(d) => d.source.offset,
            Parsed::Restore(r) => r.live.trade_id.hashed(),
        }
    }
}

pub(super) fn intake<'scope>(
    raw: StreamVec<'scope, Time, RawEvent>,
    rejected: Option<StreamVec<'scope, Time, DeadLetter>>,
    restore: Option<StreamVec<'scope, Time, RestoredTrade>>,
    event_log: bool,
    trade_versions: bool,
) -> IntakeStreams<'scope> {
    let parsed = raw.map(|(source, payload)| match parse_event(&payload) {
        Ok(version) => Parsed::Candidate(source, Box::new(version), payload),
        Err(reason) => Parsed::Rejected(DeadLetter {
            source,
            reason,
            payload,
        }),
    });
    let parsed = match rejected {
        Some(rejected) => parsed.concat(rejected.map(Parsed::Rejected)),
        None => parsed,
    };
    let parsed = match restore {
        Some(restore) => parsed.concat(restore.map(|r| Parsed::Restore(Box::new(r)))),
        None => parsed,
    };
    let versions::VersionStreams {
        book,
        accepted,
        rejected,
        duplicates,
        live,
        sequences,
        trades,
    } = versions::admit(parsed, event_log, trade_versions);
    IntakeStreams {
        book_input: book.as_collection(),
        dead_letters: rejected,
        duplicates,
        accepted,
        live,
        sequences,
        trades,
    }
}
