//! PostgreSQL: versioned migrations, and the commit of one engine timestamp
//! (accepted events, current-state changes, corrections, dead letters and the
//! source offsets that produced them) in ONE transaction, with multi-row
//! `unnest` statements.

use std::collections::BTreeMap;

use deltabook_dataflows::correction::Correction;
use deltabook_dataflows::engine::{AcceptedEvent, DeadLetter};
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::trade::LotMethod;
use tokio_postgres::{Client, NoTls, Transaction};

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_init.sql"))];

/// Events per engine timestamp (event_ver = time << 20 | index).
pub const MAX_EVENTS_PER_TIMESTAMP: usize = 1 << 20;

/// Errors of the PostgreSQL sink.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database said no, or the connection broke.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A correction could not be rendered.
    #[error(transparent)]
    Delta(#[from] deltabook_dataflows::correction::DeltaOverflow),
    /// More events in one timestamp than event_ver can number.
    #[error("{0} events in one engine timestamp (limit {MAX_EVENTS_PER_TIMESTAMP})")]
    TooManyEvents(usize),
}

/// A lot-method change as the event store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Topic of the accepted trade events.
    pub trades_topic: String,
    /// Accepted trade events.
    pub accepted: Vec<AcceptedEvent>,
    /// Lot-method changes.
    pub methods: Vec<MethodEvent>,
    /// Lot rows retracted (-1) and asserted (+1).
    pub lots: Vec<((String, Lot), isize)>,
    /// Position rows retracted (-1) and asserted (+1).
    pub positions: Vec<((String, PositionSummary), isize)>,
    /// Correction events of this timestamp.
    pub corrections: Vec<Correction>,
    /// Rejected events with their source topic.
    pub dead_letters: Vec<(String, DeadLetter)>,
    /// Source offsets after this timestamp.
    pub offsets: Vec<SourceOffset>,
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

/// Applies the migrations not yet applied, each in its own transaction;
/// returns the versions applied now. Safe to run concurrently and again.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        // Serialise concurrent migrators.
        tx.execute("SELECT pg_advisory_xact_lock(7031)", &[])
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            applied.push(*version);
        }
        tx.commit().await?;
    }
    Ok(applied)
}

/// Next offsets per (topic, partition) and the last engine time committed.
pub async fn load_progress(client: &Client) -> Result<(Vec<SourceOffset>, u64), PgError> {
    let rows = client
        .query("SELECT source_topic, source_partition, next_offset, engine_time FROM sink_progress ORDER BY 1, 2", &[])
        .await?;
    let mut last_time = 0u64;
    let mut offsets = Vec::with_capacity(rows.len());
    for row in rows {
        let time: i64 = row.get(3);
        last_time = last_time.max(time.max(0) as u64);
        offsets.push(SourceOffset {
            topic: row.get(0),
            partition: row.get(1),
            next_offset: row.get(2),
        });
    }
    Ok((offsets, last_time))
}

/// The last engine time whose commit is durable (0 when none).
pub async fn committed_time(client: &Client) -> Result<u64, PgError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(engine_time), 0) FROM sink_progress",
            &[],
        )
        .await?;
    let time: i64 = row.get(0);
    Ok(time.max(0) as u64)
}

/// Commits one timestamp in one transaction. Either all of it is visible
/// afterwards (state, corrections, dead letters, offsets) or none of it.
pub async fn commit_timestamp(
    client: &mut Client,
    commit: &TimestampCommit,
    rows_per_statement: usize,
) -> Result<(), PgError> {
    let events = commit.accepted.len() + commit.methods.len();
    if events > MAX_EVENTS_PER_TIMESTAMP {
        return Err(PgError::TooManyEvents(events));
    }
    let tx = client.transaction().await?;
    write_events(&tx, commit, rows_per_statement).await?;
    write_state(&tx, commit, rows_per_statement).await?;
    write_corrections(&tx, commit, rows_per_statement).await?;
    write_dead_letters(&tx, commit, rows_per_statement).await?;
    for o in &commit.offsets {
        tx.execute(
            "INSERT INTO sink_progress (source_topic, source_partition, next_offset, engine_time) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source_topic, source_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, engine_time = EXCLUDED.engine_time",
            &[&o.topic, &o.partition, &o.next_offset, &(commit.time as i64)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn write_events(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    let base = (c.time as i64) << 20;
    #[derive(Default)]
    struct Cols {
        key: Vec<String>,
        ver: Vec<i64>,
        kind: Vec<String>,
        trade_id: Vec<Option<String>>,
        version: Vec<Option<i64>>,
        action: Vec<Option<String>>,
        method: Vec<Option<String>>,
        payload: Vec<Vec<u8>>,
        topic: Vec<String>,
        partition: Vec<i32>,
        offset: Vec<i64>,
        correlation: Vec<Option<String>>,
    }
    let mut rows: Vec<Cols> = Vec::new();
    let mut index = 0i64;
    let push = |rows: &mut Vec<Cols>, f: &dyn Fn(&mut Cols)| {
        if rows.last().is_none_or(|c| c.key.len() >= chunk) {
            rows.push(Cols::default());
        }
        if let Some(cols) = rows.last_mut() {
            f(cols);
        }
    };
    for e in &c.accepted {
        let ver = base | index;
        index += 1;
        push(&mut rows, &|cols: &mut Cols| {
            cols.key.push(e.position_key.clone());
            cols.ver.push(ver);
            cols.kind.push("trade".into());
            cols.trade_id.push(Some(e.trade_id.clone()));
            cols.version.push(Some(e.version as i64));
            cols.action.push(Some(e.action.as_str().into()));
            cols.method.push(None);
            cols.payload.push(e.payload.clone());
            cols.topic.push(c.trades_topic.clone());
            cols.partition.push(e.source.partition as i32);
            cols.offset.push(e.source.offset as i64);
            cols.correlation.push(e.correlation_id.clone());
        });
    }
    for m in &c.methods {
        let ver = base | index;
        index += 1;
        push(&mut rows, &|cols: &mut Cols| {
            cols.key.push(m.scope.clone());
            cols.ver.push(ver);
            cols.kind.push("method".into());
            cols.trade_id.push(None);
            cols.version.push(None);
            cols.action.push(None);
            cols.method.push(m.method.map(|x| x.as_str().to_string()));
            cols.payload.push(m.payload.clone());
            cols.topic.push("lot-methods".into());
            cols.partition.push(m.partition);
            cols.offset.push(m.offset);
            cols.correlation.push(None);
        });
    }
    let time = c.time as i64;
    for cols in rows {
        tx.execute(
            "INSERT INTO event_store (position_key, event_ver, engine_time, kind, trade_id, version, action, method, payload,
                                      source_topic, source_partition, source_offset, correlation_id)
             SELECT k, v, $13, kind, t, ver, a, m, p, topic, part, off, corr
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::bytea[],
                         $9::text[], $10::int4[], $11::int8[], $12::text[])
                  AS u(k, v, kind, t, ver, a, m, p, topic, part, off, corr)",
            &[
                &cols.key, &cols.ver, &cols.kind, &cols.trade_id, &cols.version, &cols.action, &cols.method, &cols.payload,
                &cols.topic, &cols.partition, &cols.offset, &cols.correlation, &time,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn write_state(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    // Net change per row key: retractions delete, assertions (re)insert.
    let mut lots: BTreeMap<(&str, &str), Option<&Lot>> = BTreeMap::new();
    for ((key, lot), diff) in &c.lots {
        let slot = lots
            .entry((key.as_str(), lot.lot_id.as_str()))
            .or_insert(None);
        if *diff > 0 {
            *slot = Some(lot);
        }
    }
    let mut positions: BTreeMap<&str, Option<&PositionSummary>> = BTreeMap::new();
    for ((key, summary), diff) in &c.positions {
        let slot = positions.entry(key.as_str()).or_insert(None);
        if *diff > 0 {
            *slot = Some(summary);
        }
    }
    let lot_keys: Vec<(&(&str, &str), &Option<&Lot>)> = lots.iter().collect();
    for part in lot_keys.chunks(chunk) {
        let keys: Vec<String> = part.iter().map(|((k, _), _)| k.to_string()).collect();
        let ids: Vec<String> = part.iter().map(|((_, id), _)| id.to_string()).collect();
        tx.execute(
            "DELETE FROM lots l USING unnest($1::text[], $2::text[]) AS u(k, id) WHERE l.position_key = u.k AND l.lot_id = u.id",
            &[&keys, &ids],
        )
        .await?;
        let new: Vec<(&str, &Lot)> = part
            .iter()
            .filter_map(|((k, _), lot)| lot.map(|l| (*k, l)))
            .collect();
        if !new.is_empty() {
            let keys: Vec<String> = new.iter().map(|(k, _)| k.to_string()).collect();
            let ids: Vec<String> = new.iter().map(|(_, l)| l.lot_id.clone()).collect();
            let sides: Vec<String> = new
                .iter()
                .map(|(_, l)| l.side.as_str().to_string())
                .collect();
            let dates: Vec<String> = new.iter().map(|(_, l)| l.open_date.to_string()).collect();
            let qty: Vec<String> = new.iter().map(|(_, l)| l.quantity.to_string()).collect();
            let px: Vec<String> = new.iter().map(|(_, l)| l.price.to_string()).collect();
            tx.execute(
                "INSERT INTO lots (position_key, lot_id, side, open_date, quantity, price)
                 SELECT k, id, s, d::date, q::numeric, p::numeric
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(k, id, s, d, q, p)",
                &[&keys, &ids, &sides, &dates, &qty, &px],
            )
            .await?;
        }
    }
    let time = c.time as i64;
    let position_keys: Vec<(&&str, &Option<&PositionSummary>)> = positions.iter().collect();
    for part in position_keys.chunks(chunk) {
        let keys: Vec<String> = part.iter().map(|(k, _)| k.to_string()).collect();
        tx.execute(
            "DELETE FROM positions WHERE position_key = ANY($1::text[])",
            &[&keys],
        )
        .await?;
        let new: Vec<(&str, &PositionSummary)> = part
            .iter()
            .filter_map(|(k, s)| s.map(|s| (**k, s)))
            .collect();
        if !new.is_empty() {
            let keys: Vec<String> = new.iter().map(|(k, _)| k.to_string()).collect();
            let qty: Vec<String> = new.iter().map(|(_, s)| s.quantity.to_string()).collect();
            let count: Vec<i64> = new.iter().map(|(_, s)| s.lot_count as i64).collect();
            let cost: Vec<String> = new.iter().map(|(_, s)| s.cost_basis.to_string()).collect();
            let pnl: Vec<String> = new
                .iter()
                .map(|(_, s)| s.realized_pnl.to_string())
                .collect();
            tx.execute(
                "INSERT INTO positions (position_key, quantity, lot_count, cost_basis, realized_pnl, as_of)
                 SELECT k, q::numeric, n, c::numeric, r::numeric, $6
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[]) AS u(k, q, n, c, r)",
                &[&keys, &qty, &count, &cost, &pnl, &time],
            )
            .await?;
        }
    }
    Ok(())
}

async fn write_corrections(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    let mut ordered: Vec<&Correction> = c.corrections.iter().collect();
    ordered.sort_by(|a, b| (a.as_of, &a.position_key).cmp(&(b.as_of, &b.position_key)));
    for part in ordered.chunks(chunk) {
        let keys: Vec<String> = part.iter().map(|c| c.position_key.clone()).collect();
        let as_of: Vec<i64> = part.iter().map(|c| c.as_of as i64).collect();
        let mut events = Vec::with_capacity(part.len());
        for c in part {
            events.push(c.to_json()?.to_string());
        }
        // WITH ORDINALITY keeps the (as_of, position_key) order in the ids.
        tx.execute(
            "INSERT INTO corrections (position_key, as_of, event)
             SELECT k, a, e::json FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY AS u(k, a, e, n) ORDER BY n",
            &[&keys, &as_of, &events],
        )
        .await?;
    }
    Ok(())
}

async fn write_dead_letters(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    let mut ordered: Vec<&(String, DeadLetter)> = c.dead_letters.iter().collect();
    ordered.sort_by(|a, b| (&a.0, a.1.source).cmp(&(&b.0, b.1.source)));
    let time = c.time as i64;
    for part in ordered.chunks(chunk) {
        let topics: Vec<String> = part.iter().map(|(t, _)| t.clone()).collect();
        let partitions: Vec<i32> = part
            .iter()
            .map(|(_, d)| d.source.partition as i32)
            .collect();
        let offsets: Vec<i64> = part.iter().map(|(_, d)| d.source.offset as i64).collect();
        let reasons: Vec<String> = part.iter().map(|(_, d)| d.reason.to_string()).collect();
        let payloads: Vec<Vec<u8>> = part.iter().map(|(_, d)| d.payload.clone()).collect();
        tx.execute(
            "INSERT INTO dead_letters (engine_time, source_topic, source_partition, source_offset, reason, payload)
             SELECT $6, t, p, o, r, b FROM unnest($1::text[], $2::int4[], $3::int8[], $4::text[], $5::bytea[])
                  WITH ORDINALITY AS u(t, p, o, r, b, n) ORDER BY n",
            &[&topics, &partitions, &offsets, &reasons, &payloads, &time],
        )
        .await?;
    }
    Ok(())
}
