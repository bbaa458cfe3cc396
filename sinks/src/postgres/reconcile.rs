//! Reconciliation's tables (`migrations/0004_reconciliation.sql`), written
//! in the per-timestamp transaction: for each table, every changed key is
//! deleted and the asserted rows inserted; break events are appended.
//! Decimals travel as text and are cast by PostgreSQL (exact).

use std::collections::BTreeMap;

use tokio_postgres::Transaction;

use super::{PgError, ReconciliationCommit};

/// The final row per key of a timestamp's updates (`None`: retracted
/// only). Updates are summed per row first: a join's output within one
/// timestamp need not be consolidated (a position and its price changing
/// together give +/- pairs of an intermediate row), so the last positive
/// update is not necessarily the row that stands.
fn final_rows<'a, K: Ord, R: Ord>(
    updates: &'a [(R, isize)],
    key: impl Fn(&'a R) -> K,
) -> BTreeMap<K, Option<&'a R>> {
    let mut net: BTreeMap<&'a R, isize> = BTreeMap::new();
    for (row, diff) in updates {
        *net.entry(row).or_insert(0) += diff;
    }
    let mut rows: BTreeMap<K, Option<&'a R>> = BTreeMap::new();
    for (row, count) in net {
        let slot = rows.entry(key(row)).or_insert(None);
        if count > 0 {
            *slot = Some(row);
        }
    }
    rows
}

/// Deletes the keys of `rows` that have no row any more (the others are
/// upserted: an update in place is cheaper than a delete and an insert).
async fn delete_gone<R>(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    rows: &BTreeMap<&str, Option<&R>>,
) -> Result<(), PgError> {
    let gone: Vec<&str> = rows
        .iter()
        .filter(|(_, row)| row.is_none())
        .map(|(k, _)| *k)
        .collect();
    if !gone.is_empty() {
        tx.execute(
            &format!("DELETE FROM {table} WHERE {column} = ANY($1::text[])"),
            &[&gone],
        )
        .await?;
    }
    Ok(())
}

/// Writes every reconciliation table for timestamp `time`.
pub async fn write_reconciliation(
    tx: &Transaction<'_>,
    time: u64,
    r: &ReconciliationCommit,
) -> Result<(), PgError> {
    let time = time as i64;

    let rows = final_rows(&r.valuations, |v| v.position_key.as_str());
    if !rows.is_empty() {
        delete_gone(tx, "valuations", "position_key", &rows).await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let k: Vec<&str> = new.iter().map(|v| v.position_key.as_str()).collect();
        let p: Vec<String> = new.iter().map(|v| v.price.to_string()).collect();
        let m: Vec<String> = new.iter().map(|v| v.market_value.to_string()).collect();
        let u: Vec<String> = new.iter().map(|v| v.unrealized_pnl.to_string()).collect();
        tx.execute(
            "INSERT INTO valuations (position_key, price, market_value, unrealized_pnl, engine_time)
             SELECT k, p::numeric, m::numeric, u::numeric, $5
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(k, p, m, u)
             ON CONFLICT (position_key) DO UPDATE SET price = EXCLUDED.price,
                 market_value = EXCLUDED.market_value, unrealized_pnl = EXCLUDED.unrealized_pnl,
                 engine_time = EXCLUDED.engine_time",
            &[&k, &p, &m, &u, &time],
        )
        .await?;
    }

    let rows = final_rows(&r.breaks, |b| b.position_key.as_str());
    if !rows.is_empty() {
        delete_gone(tx, "breaks", "position_key", &rows).await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let k: Vec<&str> = new.iter().map(|b| b.position_key.as_str()).collect();
        let d: Vec<String> = new.iter().map(|b| b.as_of_date.to_string()).collect();
        let kind: Vec<&str> = new.iter().map(|b| b.kind.as_str()).collect();
        let i: Vec<String> = new
            .iter()
            .map(|b| b.internal_quantity.to_string())
            .collect();
        let c: Vec<String> = new
            .iter()
            .map(|b| b.custodian_quantity.to_string())
            .collect();
        let diff: Vec<String> = new.iter().map(|b| b.difference.to_string()).collect();
        tx.execute(
            "INSERT INTO breaks (position_key, as_of_date, kind, internal_quantity, custodian_quantity, difference, engine_time)
             SELECT k, d::date, t, i::numeric, c::numeric, f::numeric, $7
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS x(k, d, t, i, c, f)
             ON CONFLICT (position_key) DO UPDATE SET as_of_date = EXCLUDED.as_of_date, kind = EXCLUDED.kind,
                 internal_quantity = EXCLUDED.internal_quantity, custodian_quantity = EXCLUDED.custodian_quantity,
                 difference = EXCLUDED.difference, engine_time = EXCLUDED.engine_time",
            &[&k, &d, &kind, &i, &c, &diff, &time],
        )
        .await?;
    }

    let rows = final_rows(&r.gaps, |g| (g.account_id.as_str(), g.first_missing));
    if !rows.is_empty() {
        let accounts: Vec<&str> = rows.keys().map(|(a, _)| *a).collect();
        let firsts: Vec<i64> = rows.keys().map(|(_, f)| *f as i64).collect();
        tx.execute(
            "DELETE FROM sequence_gaps g USING unnest($1::text[], $2::int8[]) AS x(a, f)
             WHERE g.account_id = x.a AND g.first_missing = x.f",
            &[&accounts, &firsts],
        )
        .await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let a: Vec<&str> = new.iter().map(|g| g.account_id.as_str()).collect();
        let f: Vec<i64> = new.iter().map(|g| g.first_missing as i64).collect();
        let l: Vec<i64> = new.iter().map(|g| g.last_missing as i64).collect();
        tx.execute(
            "INSERT INTO sequence_gaps (account_id, first_missing, last_missing, engine_time)
             SELECT a, f, l, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) AS x(a, f, l)",
            &[&a, &f, &l, &time],
        )
        .await?;
    }

    let rows = final_rows(&r.sequence_ranges, |s| s.account_id.as_str());
    if !rows.is_empty() {
        delete_gone(tx, "sequence_ranges", "account_id", &rows).await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let a: Vec<&str> = new.iter().map(|s| s.account_id.as_str()).collect();
        let lo: Vec<i64> = new.iter().map(|s| s.min as i64).collect();
        let hi: Vec<i64> = new.iter().map(|s| s.max as i64).collect();
        tx.execute(
            "INSERT INTO sequence_ranges (account_id, min_sequence, max_sequence, engine_time)
             SELECT a, lo, hi, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) AS x(a, lo, hi)
             ON CONFLICT (account_id) DO UPDATE SET min_sequence = EXCLUDED.min_sequence,
                 max_sequence = EXCLUDED.max_sequence, engine_time = EXCLUDED.engine_time",
            &[&a, &lo, &hi, &time],
        )
        .await?;
    }

    let rows = final_rows(&r.live_ticks, |t| t.security_id.as_str());
    if !rows.is_empty() {
        delete_gone(tx, "live_prices", "security_id", &rows).await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let s: Vec<&str> = new.iter().map(|t| t.security_id.as_str()).collect();
        let p: Vec<String> = new.iter().map(|t| t.price.to_string()).collect();
        let secs: Vec<i64> = new.iter().map(|t| t.as_of.secs).collect();
        let nanos: Vec<i32> = new.iter().map(|t| t.as_of.nanos as i32).collect();
        let part: Vec<i32> = new.iter().map(|t| t.source.partition as i32).collect();
        let off: Vec<i64> = new.iter().map(|t| t.source.offset as i64).collect();
        tx.execute(
            "INSERT INTO live_prices (security_id, price, as_of_s, as_of_ns, source_partition, source_offset, engine_time)
             SELECT s, p::numeric, a, n, sp, so, $7
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int4[], $5::int4[], $6::int8[]) AS x(s, p, a, n, sp, so)
             ON CONFLICT (security_id) DO UPDATE SET price = EXCLUDED.price, as_of_s = EXCLUDED.as_of_s,
                 as_of_ns = EXCLUDED.as_of_ns, source_partition = EXCLUDED.source_partition,
                 source_offset = EXCLUDED.source_offset, engine_time = EXCLUDED.engine_time",
            &[&s, &p, &secs, &nanos, &part, &off, &time],
        )
        .await?;
    }

    let rows = final_rows(&r.live_statements, |t| t.position_key.as_str());
    if !rows.is_empty() {
        delete_gone(tx, "live_statements", "position_key", &rows).await?;
        let new: Vec<_> = rows.values().flatten().collect();
        let k: Vec<&str> = new.iter().map(|t| t.position_key.as_str()).collect();
        let q: Vec<String> = new.iter().map(|t| t.quantity.to_string()).collect();
        let d: Vec<String> = new.iter().map(|t| t.as_of_date.to_string()).collect();
        let part: Vec<i32> = new.iter().map(|t| t.source.partition as i32).collect();
        let off: Vec<i64> = new.iter().map(|t| t.source.offset as i64).collect();
        tx.execute(
            "INSERT INTO live_statements (position_key, quantity, as_of_date, source_partition, source_offset, engine_time)
             SELECT k, q::numeric, d::date, sp, so, $6
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[]) AS x(k, q, d, sp, so)
             ON CONFLICT (position_key) DO UPDATE SET quantity = EXCLUDED.quantity,
                 as_of_date = EXCLUDED.as_of_date, source_partition = EXCLUDED.source_partition,
                 source_offset = EXCLUDED.source_offset, engine_time = EXCLUDED.engine_time",
            &[&k, &q, &d, &part, &off, &time],
        )
        .await?;
    }

    if !r.break_events.is_empty() {
        let k: Vec<&str> = r.break_events.iter().map(|(k, _)| k.as_str()).collect();
        let e: Vec<&str> = r.break_events.iter().map(|(_, e)| e.as_str()).collect();
        // WITH ORDINALITY keeps the outbox ids in the events' order.
        tx.execute(
            "INSERT INTO break_events (position_key, engine_time, event)
             SELECT k, $3, e::json FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(k, e, n) ORDER BY n",
            &[&k, &e, &time],
        )
        .await?;
    }
    Ok(())
}
