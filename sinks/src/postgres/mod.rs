//! PostgreSQL: versioned migrations, the commit of one engine timestamp
//! (accepted events, current state, the restart snapshot, corrections, dead
//! letters and the source offsets that produced them) in ONE fenced
//! transaction, and what a restart loads.
//!
//! - [`migrate`]: schema versions under `migrations/`.
//! - [`fence`]: the writer epoch that every commit checks.
//! - [`commit`]: one timestamp, one transaction (binary COPY for the
//!   append-only and bulk tables).
//! - [`snapshot`]: offsets, last time, live trades, fingerprints and the
//!   lot-method map, read back on start.

mod copy;

pub mod commit;
pub mod fence;
pub mod migrate;
pub mod reconcile;
pub mod snapshot;

use deltabook_dataflows::correction::Correction;
use deltabook_dataflows::engine::{AcceptedEvent, DeadLetter, LiveTrade};
use deltabook_dataflows::id::Id;
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::reconcile::{
    BreakRow, GapRow, LiveStatement, LiveTick, SequenceRange, ValuationRow,
};
use deltabook_dataflows::trade::LotMethod;
use tokio_postgres::{Client, NoTls};

pub use commit::commit_timestamp;
pub use fence::take_over;
pub use migrate::{migrate, MIGRATIONS};
pub use snapshot::{committed_time, load_progress, load_snapshot, load_snapshot_with, Snapshot};

/// Events per engine timestamp (event_ver = time << 20 | index).
pub const MAX_EVENTS_PER_TIMESTAMP: usize = 1 << 20;

/// Errors of the PostgreSQL sink.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database said no, or the connection broke.
    #[error("postgres: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A correction could not be rendered.
    #[error(transparent)]
    Delta(#[from] deltabook_dataflows::correction::DeltaOverflow),
    /// More events in one timestamp than event_ver can number.
    #[error("{0} events in one engine timestamp (limit {MAX_EVENTS_PER_TIMESTAMP})")]
    TooManyEvents(usize),
    /// Another instance took over as the writer: this one must stop.
    #[error("fenced: writer epoch {mine} is no longer current (another instance took over at epoch {current})")]
    Fenced {
        /// The epoch this instance holds.
        mine: i64,
        /// The epoch in the database now.
        current: i64,
    },
    /// The database holds something this version cannot read.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which table or column.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// A database error with the server's message, detail and where it came from.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(wherein) = db.where_() {
                text.push_str(&format!(" [{wherein}]"));
            }
            text
        }
        None => error.to_string(),
    }
}

impl PgError {
    /// True when retrying cannot help (fenced, or the data cannot be written).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PgError::Fenced { .. } | PgError::TooManyEvents(_) | PgError::Delta(_)
        )
    }
}

/// A lot-method change as the event store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MethodEvent {
    /// Engine time.
    pub time: u64,
    /// Account, `account_book` or position key.
    pub scope: String,
    /// New method, `None` = override removed.
    pub method: Option<LotMethod>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The original value bytes.
    pub payload: Vec<u8>,
}

/// The next offset to read of one source partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SourceOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
}

/// Everything one engine timestamp produced, committed atomically.
#[derive(Clone, Debug, Default)]
pub struct TimestampCommit {
    /// Engine time.
    pub time: u64,
    /// The writer epoch this instance holds ([`fence::take_over`]).
    pub writer_epoch: i64,
    /// Topic of the accepted trade events.
    pub trades_topic: String,
    /// Topic of the lot-method changes.
    pub methods_topic: String,
    /// Accepted trade events.
    pub accepted: Vec<AcceptedEvent>,
    /// Trades whose live version changed.
    pub live: Vec<LiveTrade>,
    /// Lot-method changes.
    pub methods: Vec<MethodEvent>,
    /// Lot rows retracted (-1) and asserted (+1).
    pub lots: Vec<((Id, Lot), isize)>,
    /// Position rows retracted (-1) and asserted (+1).
    pub positions: Vec<((Id, PositionSummary), isize)>,
    /// Correction events of this timestamp.
    pub corrections: Vec<Correction>,
    /// Rejected events with their source topic.
    pub dead_letters: Vec<(String, DeadLetter)>,
    /// Source offsets after this timestamp.
    pub offsets: Vec<SourceOffset>,
    /// Reconciliation's changes at this timestamp.
    pub reconciliation: ReconciliationCommit,
}

/// Reconciliation's part of a timestamp's commit: current-state changes
/// (-1 retracts, +1 asserts), the restart snapshot's changes, and the break
/// events, already rendered.
#[derive(Clone, Debug, Default)]
pub struct ReconciliationCommit {
    /// `valuations` rows.
    pub valuations: Vec<(ValuationRow, isize)>,
    /// `breaks` rows.
    pub breaks: Vec<(BreakRow, isize)>,
    /// `sequence_gaps` rows.
    pub gaps: Vec<(GapRow, isize)>,
    /// `live_prices` rows.
    pub live_ticks: Vec<(LiveTick, isize)>,
    /// `live_statements` rows.
    pub live_statements: Vec<(LiveStatement, isize)>,
    /// `sequence_ranges` rows.
    pub sequence_ranges: Vec<(SequenceRange, isize)>,
    /// `break_events` rows: (position key, event JSON text).
    pub break_events: Vec<(Id, String)>,
}

/// Connects (no TLS; the database is local) and drives the connection on the runtime.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}
