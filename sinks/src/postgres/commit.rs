//! One engine timestamp, one transaction: the writer fence first, then the
//! event store, the restart snapshot (live trades, fingerprints, lot
//! methods), current state (lots, positions), the outboxes (corrections,
//! dead letters), the source offsets and the commit log. Either all of it
//! is visible afterwards or none of it.
//!
//! Append-only and bulk rows go in with binary COPY (measured faster than
//! multi-row `INSERT ... SELECT FROM unnest` on every table it is used for:
//! docs/bench/pg-writes-2026-11-29.md); rows that replace a previous row
//! (positions, live trades, lot methods) are upserts or delete + insert.

use std::collections::{BTreeMap, HashMap};

use deltabook_dataflows::correction::Correction;
use deltabook_dataflows::engine::DeadLetter;
use deltabook_dataflows::position::{Lot, PositionSummary};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use super::copy::{self, JsonText, Numeric, PgDate};
use super::{fence, PgError, TimestampCommit, MAX_EVENTS_PER_TIMESTAMP};

/// Commits one timestamp in one transaction, fenced by `commit.writer_epoch`.
/// `rows_per_statement` bounds the multi-row statements (upserts, deletes).
pub async fn commit_timestamp(
    client: &mut Client,
    commit: &TimestampCommit,
    rows_per_statement: usize,
) -> Result<(), PgError> {
    let events = commit.accepted.len() + commit.methods.len();
    if events > MAX_EVENTS_PER_TIMESTAMP {
        return Err(PgError::TooManyEvents(events));
    }
    let chunk = rows_per_statement.max(1);
    let mut phases = Phases::new();
    let tx = client.transaction().await?;
    fence::check(&tx, commit.writer_epoch, commit.time).await?;
    phases.mark("fence");
    write_events(&tx, commit).await?;
    phases.mark("event_store");
    write_snapshot(&tx, commit, chunk).await?;
    phases.mark("snapshot");
    write_lots(&tx, commit, chunk).await?;
    phases.mark("lots");
    write_positions(&tx, commit, chunk).await?;
    phases.mark("positions");
    write_corrections(&tx, commit).await?;
    phases.mark("corrections");
    write_dead_letters(&tx, commit).await?;
    phases.mark("dead_letters");
    super::reconcile::write_reconciliation(&tx, commit.time, &commit.reconciliation).await?;
    phases.mark("reconciliation");
    for o in &commit.offsets {
        tx.execute(
            "INSERT INTO sink_progress (source_topic, source_partition, next_offset, engine_time) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source_topic, source_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, engine_time = EXCLUDED.engine_time",
            &[&o.topic, &o.partition, &o.next_offset, &(commit.time as i64)],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO committed_timestamps (engine_time, writer_epoch, accepted, corrections) VALUES ($1, $2, $3, $4)",
        &[
            &(commit.time as i64),
            &commit.writer_epoch,
            &(commit.accepted.len() as i32),
            &(commit.corrections.len() as i32),
        ],
    )
    .await?;
    phases.mark("progress");
    tx.commit().await?;
    phases.mark("commit");
    tracing::debug!(
        time = commit.time,
        accepted = commit.accepted.len(),
        corrections = commit.corrections.len(),
        phases = %phases,
        "commit phases (ms)"
    );
    Ok(())
}

/// Wall time per phase of one commit, for the debug log.
struct Phases {
    last: std::time::Instant,
    done: Vec<(&'static str, f64)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::with_capacity(10),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.done
            .push((phase, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, ms)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{phase}={ms:.1}")?;
        }
        Ok(())
    }
}

/// `event_store`: accepted trade events, then lot-method changes, numbered
/// `event_ver = time << 20 | index` in that order (binary COPY).
pub async fn write_events(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<(), PgError> {
    if c.accepted.is_empty() && c.methods.is_empty() {
        return Ok(());
    }
    let base = (c.time as i64) << 20;
    let time = c.time as i64;
    let mut writer = copy::start(
        tx,
        "event_store (position_key, event_ver, engine_time, kind, trade_id, version, action, method, payload, source_topic, source_partition, source_offset, correlation_id)",
        &[
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
        ],
    )
    .await?;
    let mut index = 0i64;
    for e in &c.accepted {
        let ver = base | index;
        index += 1;
        writer
            .as_mut()
            .write(&[
                &e.position_key.as_str(),
                &ver,
                &time,
                &"trade",
                &e.trade_id.as_str(),
                &(e.version as i64),
                &e.action.as_str(),
                &None::<&str>,
                &e.payload.as_bytes(),
                &c.trades_topic,
                &(e.source.partition as i32),
                &(e.source.offset as i64),
                &e.correlation_id.as_deref(),
            ])
            .await?;
    }
    for m in &c.methods {
        let ver = base | index;
        index += 1;
        writer
            .as_mut()
            .write(&[
                &m.scope,
                &ver,
                &time,
                &"method",
                &None::<&str>,
                &None::<i64>,
                &None::<&str>,
                &m.method.map(|x| x.as_str()),
                &m.payload,
                &c.methods_topic,
                &m.partition,
                &m.offset,
                &None::<&str>,
            ])
            .await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// What a restart loads: for each trade touched, its live version (when it
/// changed) and the fingerprints of the versions accepted now, appended to
/// the ones it has; the lot-method map.
async fn write_snapshot(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    // Fingerprints accepted now, per trade: 24 bytes each (version, print).
    let mut prints: HashMap<&str, Vec<u8>> = HashMap::with_capacity(c.accepted.len());
    for e in &c.accepted {
        let bytes = prints.entry(e.trade_id.as_str()).or_default();
        bytes.extend_from_slice(&e.version.to_be_bytes());
        bytes.extend_from_slice(&e.fingerprint.to_be_bytes());
    }
    let time = c.time as i64;
    for part in c.live.chunks(chunk) {
        let mut ids = Vec::with_capacity(part.len());
        let mut versions = Vec::with_capacity(part.len());
        let mut keys: Vec<Option<&str>> = Vec::with_capacity(part.len());
        let mut sides: Vec<Option<&str>> = Vec::with_capacity(part.len());
        let mut quantities: Vec<Option<Numeric>> = Vec::with_capacity(part.len());
        let mut prices: Vec<Option<Numeric>> = Vec::with_capacity(part.len());
        let mut dates: Vec<Option<PgDate>> = Vec::with_capacity(part.len());
        let mut secs: Vec<Option<i64>> = Vec::with_capacity(part.len());
        let mut nanos: Vec<Option<i32>> = Vec::with_capacity(part.len());
        let mut new_prints: Vec<Vec<u8>> = Vec::with_capacity(part.len());
        for live in part {
            ids.push(live.trade_id.as_str());
            versions.push(live.version as i64);
            new_prints.push(prints.remove(live.trade_id.as_str()).unwrap_or_default());
            match &live.booked {
                Some((key, trade)) => {
                    keys.push(Some(key));
                    sides.push(Some(trade.side.as_str()));
                    quantities.push(Some(Numeric(trade.quantity)));
                    prices.push(Some(Numeric(trade.price)));
                    dates.push(Some(PgDate(trade.key.trade_date)));
                    secs.push(trade.key.trade_time().map(|t| t.secs));
                    nanos.push(trade.key.trade_time().map(|t| t.nanos as i32));
                }
                None => {
                    keys.push(None);
                    sides.push(None);
                    quantities.push(None);
                    prices.push(None);
                    dates.push(None);
                    secs.push(None);
                    nanos.push(None);
                }
            }
        }
        tx.execute(
            "INSERT INTO live_trades (trade_id, version, position_key, side, quantity, price, trade_date, trade_time_s, trade_time_ns, engine_time, fingerprints)
             SELECT id, v, k, s, q, p, d, ts, tn, $10, f
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::date[], $8::int8[], $9::int4[], $11::bytea[])
                  AS u(id, v, k, s, q, p, d, ts, tn, f)
             ON CONFLICT (trade_id) DO UPDATE SET
                 version = EXCLUDED.version, position_key = EXCLUDED.position_key, side = EXCLUDED.side,
                 quantity = EXCLUDED.quantity, price = EXCLUDED.price, trade_date = EXCLUDED.trade_date,
                 trade_time_s = EXCLUDED.trade_time_s, trade_time_ns = EXCLUDED.trade_time_ns,
                 engine_time = EXCLUDED.engine_time,
                 fingerprints = live_trades.fingerprints || EXCLUDED.fingerprints",
            &[
                &ids, &versions, &keys, &sides, &quantities, &prices, &dates, &secs, &nanos, &time,
                &new_prints,
            ],
        )
        .await?;
    }
    // Versions accepted below the live one: only their fingerprints change.
    if !prints.is_empty() {
        let rest: Vec<(&str, Vec<u8>)> = prints.into_iter().collect();
        for part in rest.chunks(chunk) {
            let ids: Vec<&str> = part.iter().map(|(id, _)| *id).collect();
            let bytes: Vec<&[u8]> = part.iter().map(|(_, b)| b.as_slice()).collect();
            tx.execute(
                "UPDATE live_trades l SET fingerprints = l.fingerprints || u.f
                 FROM unnest($1::text[], $2::bytea[]) AS u(id, f) WHERE l.trade_id = u.id",
                &[&ids, &bytes],
            )
            .await?;
        }
    }
    for m in &c.methods {
        match m.method {
            Some(method) => {
                tx.execute(
                    "INSERT INTO lot_methods (scope, method, engine_time) VALUES ($1, $2, $3)
                     ON CONFLICT (scope) DO UPDATE SET method = EXCLUDED.method, engine_time = EXCLUDED.engine_time",
                    &[&m.scope, &method.as_str(), &time],
                )
                .await?;
            }
            None => {
                tx.execute("DELETE FROM lot_methods WHERE scope = $1", &[&m.scope])
                    .await?;
            }
        }
    }
    Ok(())
}

/// `lots`: the net change per (position, lot id): every changed key is
/// deleted, the asserted rows are copied in (binary COPY).
pub async fn write_lots(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    let mut lots: BTreeMap<(&str, &str), Option<&Lot>> = BTreeMap::new();
    for ((key, lot), diff) in &c.lots {
        let slot = lots
            .entry((key.as_str(), lot.lot_id.as_str()))
            .or_insert(None);
        if *diff > 0 {
            *slot = Some(lot);
        }
    }
    if lots.is_empty() {
        return Ok(());
    }
    let keys: Vec<(&(&str, &str), &Option<&Lot>)> = lots.iter().collect();
    for part in keys.chunks(chunk) {
        let positions: Vec<&str> = part.iter().map(|((k, _), _)| *k).collect();
        let ids: Vec<&str> = part.iter().map(|((_, id), _)| *id).collect();
        tx.execute(
            "DELETE FROM lots l USING unnest($1::text[], $2::text[]) AS u(k, id) WHERE l.position_key = u.k AND l.lot_id = u.id",
            &[&positions, &ids],
        )
        .await?;
    }
    let mut writer = copy::start(
        tx,
        "lots (position_key, lot_id, side, open_date, quantity, price)",
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::DATE,
            Type::NUMERIC,
            Type::NUMERIC,
        ],
    )
    .await?;
    for ((key, _), lot) in &lots {
        let Some(lot) = lot else { continue };
        writer
            .as_mut()
            .write(&[
                key,
                &lot.lot_id.as_str(),
                &lot.side.as_str(),
                &PgDate(lot.open_date),
                &Numeric(lot.quantity),
                &Numeric(lot.price),
            ])
            .await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// `positions`: every changed key is deleted, the asserted rows inserted.
async fn write_positions(
    tx: &Transaction<'_>,
    c: &TimestampCommit,
    chunk: usize,
) -> Result<(), PgError> {
    let mut positions: BTreeMap<&str, Option<&PositionSummary>> = BTreeMap::new();
    for ((key, summary), diff) in &c.positions {
        let slot = positions.entry(key.as_str()).or_insert(None);
        if *diff > 0 {
            *slot = Some(summary);
        }
    }
    let time = c.time as i64;
    let keys: Vec<(&&str, &Option<&PositionSummary>)> = positions.iter().collect();
    for part in keys.chunks(chunk) {
        let all: Vec<&str> = part.iter().map(|(k, _)| **k).collect();
        tx.execute(
            "DELETE FROM positions WHERE position_key = ANY($1::text[])",
            &[&all],
        )
        .await?;
        let new: Vec<(&str, &PositionSummary)> = part
            .iter()
            .filter_map(|(k, s)| s.map(|s| (**k, s)))
            .collect();
        if new.is_empty() {
            continue;
        }
        let keys: Vec<&str> = new.iter().map(|(k, _)| *k).collect();
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
    Ok(())
}

/// `corrections`, in `(as_of, position_key)` order, so the outbox id (the
/// serial, assigned in COPY row order) keeps that order (binary COPY).
pub async fn write_corrections(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<(), PgError> {
    if c.corrections.is_empty() {
        return Ok(());
    }
    let mut ordered: Vec<&Correction> = c.corrections.iter().collect();
    ordered.sort_by(|a, b| (a.as_of, &a.position_key).cmp(&(b.as_of, &b.position_key)));
    let mut writer = copy::start(
        tx,
        "corrections (position_key, as_of, event)",
        &[Type::TEXT, Type::INT8, Type::JSON],
    )
    .await?;
    for correction in ordered {
        let mut event = Vec::with_capacity(1024);
        correction.write_json(&mut event)?;
        // The writer emits JSON text, which is UTF-8.
        let event = String::from_utf8(event)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        writer
            .as_mut()
            .write(&[
                &correction.position_key.as_str(),
                &(correction.as_of as i64),
                &JsonText(&event),
            ])
            .await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// `dead_letters`, in (topic, source) order (the DLQ outbox order).
async fn write_dead_letters(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<(), PgError> {
    if c.dead_letters.is_empty() {
        return Ok(());
    }
    let mut ordered: Vec<&(String, DeadLetter)> = c.dead_letters.iter().collect();
    ordered.sort_by(|a, b| (&a.0, a.1.source).cmp(&(&b.0, b.1.source)));
    let time = c.time as i64;
    let mut writer = copy::start(
        tx,
        "dead_letters (engine_time, source_topic, source_partition, source_offset, reason, payload)",
        &[
            Type::INT8,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::BYTEA,
        ],
    )
    .await?;
    for (topic, dead) in ordered {
        writer
            .as_mut()
            .write(&[
                &time,
                topic,
                &(dead.source.partition as i32),
                &(dead.source.offset as i64),
                &dead.reason.to_string(),
                &dead.payload,
            ])
            .await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}
