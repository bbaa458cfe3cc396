//! Intake: events the gate has read ([`TradeEvent::parse`], stateless,
//! on whichever thread read or parsed the line), then, where the trade id
//! is owned, the duplicate rule and the live-version rule of
//! [`super::versions`]. Restored trades (a restart's snapshot) and events a
//! source rejected enter here too.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;

use super::versions::{self, AcceptedEvent, BookInput, LiveTrade, RestoredTrade, TradeUpsert};
use super::{DeadLetter, Diff, RawEvent, SourceRef, Time};
use crate::gate::{fingerprint, parse_event};
use crate::id::Id;
use crate::id_slots::IdHash;
use crate::payload::Payload;
use crate::trade::TradeVersion;

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

/// A trade event as the engine takes it: read by the gate (on whichever
/// thread parsed the line), rejected before the gate, or restored by a
/// restart. One input carries all three, in source order where they have one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum TradeEvent {
    /// Passed every stateless check.
    Candidate {
        /// Where the event was read.
        source: SourceRef,
        /// The version the gate read.
        version: Box<TradeVersion>,
        /// [`IdHash::of`] its trade id, computed where the gate read it
        /// (the versions stage looks the id up by it without first reading
        /// the boxed version, which another worker wrote).
        trade_hash: IdHash,
        /// Its [`TradeVersion::position_key`], joined where the gate read it.
        position: Id,
        /// [`fingerprint`] of `version`, computed where the gate read it
        /// (with a read-ahead, off the worker that applies the rules, as
        /// is `position`).
        fingerprint: u128,
        /// The raw bytes.
        payload: Payload,
    },
    /// Failed a stateless check, the gate's or the source's own (e.g. a
    /// line over its length limit).
    Rejected(DeadLetter),
    /// A trade's state loaded by a restart.
    Restore(Box<RestoredTrade>),
}

impl TradeEvent {
    /// The gate's reading of one raw event ([`parse_event`]): a candidate
    /// with its position key and fingerprint, or a rejection naming the
    /// first failing check.
    pub fn parse((source, payload): RawEvent) -> TradeEvent {
        match parse_event(&payload) {
            Ok(version) => TradeEvent::Candidate {
                source,
                position: version.position_key(),
                fingerprint: fingerprint(&version),
                trade_hash: IdHash::of(&version.trade_id),
                version: Box::new(version),
                payload,
            },
            Err(reason) => TradeEvent::Rejected(DeadLetter {
                source,
                reason,
                // Its own copy: a dead letter may be kept to the end of
                // a run, and a shared payload would keep its whole block.
                payload: payload.into_vec(),
            }),
        }
    }

    /// Where the event is routed: its trade id's owner, or (rejections) any worker.
    pub(super) fn route(&self) -> u64 {
        match self {
            // The hash the versions stage looks the id up by: computed
            // once, where the gate read the event. A restored trade is
            // routed by the same function of its id, to the same owner.
            TradeEvent::Candidate { trade_hash, .. } => trade_hash.value(),
            TradeEvent::Rejected(d) => d.source.offset,
            TradeEvent::Restore(r) => IdHash::of(&r.live.trade_id).value(),
        }
    }
}

pub(super) fn intake<'scope>(
    events: StreamVec<'scope, Time, TradeEvent>,
    event_log: bool,
    trade_versions: bool,
) -> IntakeStreams<'scope> {
    let versions::VersionStreams {
        book,
        accepted,
        rejected,
        duplicates,
        live,
        sequences,
        trades,
    } = versions::admit(events, event_log, trade_versions);
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
