//! `deltabook verify`: recomputes every output of a service database from
//! what it persisted, with a batch run of the same dataflow, and compares
//! with the live tables.
//!
//! Inputs read: the accepted trade events of `event_store` in commit order
//! (only first copies are stored, so the duplicate rule sees the same set),
//! the lot-method map as it stands (`lot_methods`: final lots depend only
//! on the final map), and the live tick and statement per key
//! (`live_prices`, `live_statements`: valuations and breaks depend only on
//! those). Sequence gaps are recomputed from the events' payloads.
//! Compared: `lots`, `positions`, `valuations`, `breaks`, `sequence_gaps`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use deltabook_dataflows::decimal::Amount;
use deltabook_dataflows::driver::{Capture, Driver, TimestampOutput};
use deltabook_dataflows::engine::{SourceRef, Time};
use deltabook_dataflows::id::Id;
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::reconcile::{BreakRow, GapRow, Restored, ValuationRow};
use deltabook_dataflows::trade::LotMethod;
use deltabook_sinks::postgres;

use crate::config::Config;

/// Events per engine timestamp of the batch run.
const EVENTS_PER_TIMESTAMP: usize = 10_000;

/// One table's differences: rows only in the database, rows only in the recomputation.
#[derive(Debug, Default)]
pub struct TableDiff {
    /// The table.
    pub table: &'static str,
    /// Rows the database has and the recomputation does not.
    pub only_stored: Vec<String>,
    /// Rows the recomputation has and the database does not.
    pub only_recomputed: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Accepted events replayed.
    pub events: usize,
    /// Per table, the rows compared and the differences.
    pub tables: Vec<(TableDiff, usize)>,
}

impl Report {
    /// True when every table matches.
    pub fn clean(&self) -> bool {
        self.tables
            .iter()
            .all(|(d, _)| d.only_stored.is_empty() && d.only_recomputed.is_empty())
    }
}

/// A decimal as PostgreSQL writes `numeric::text`, in the spec's normal form.
fn normal(text: &str) -> String {
    text.parse::<Amount>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// Reads the database, recomputes, compares.
pub async fn verify(config: &Config) -> Result<Report> {
    let mut client = postgres::connect(&config.postgres.url)
        .await
        .context("connecting to PostgreSQL")?;
    let snapshot = postgres::load_snapshot(&mut client)
        .await
        .context("loading the persisted inputs")?;
    let restored: Vec<Restored> = snapshot
        .reconciliation
        .into_iter()
        .filter(|r| !matches!(r, Restored::Sequences(_)))
        .collect();
    let methods: Vec<(String, LotMethod)> = snapshot.methods;
    let events: Vec<(i32, i64, Vec<u8>)> = client
        .query(
            "SELECT source_partition, source_offset, payload FROM event_store
             WHERE kind = 'trade' ORDER BY engine_time, event_ver",
            &[],
        )
        .await
        .context("reading event_store")?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let recomputed = recompute(&events, &methods, restored, config.engine.tolerance());
    let stored = stored_rows(&client).await?;
    let mut report = Report {
        events: events.len(),
        tables: Vec::new(),
    };
    for (table, computed) in recomputed {
        let in_db = stored.get(table).cloned().unwrap_or_default();
        let diff = TableDiff {
            table,
            only_stored: in_db.difference(&computed).cloned().collect(),
            only_recomputed: computed.difference(&in_db).cloned().collect(),
        };
        report.tables.push((diff, computed.len().max(in_db.len())));
    }
    Ok(report)
}

/// The batch run: every event once, in commit order, on one worker.
fn recompute(
    events: &[(i32, i64, Vec<u8>)],
    methods: &[(String, LotMethod)],
    restored: Vec<Restored>,
    tolerance: deltabook_dataflows::decimal::Dec8,
) -> BTreeMap<&'static str, BTreeSet<String>> {
    let events = events.to_vec();
    let methods = methods.to_vec();
    timely::execute_directly(move |worker| {
        let mut driver = Driver::with_tolerance(worker, 0, Capture::StateOnly, tolerance);
        for (scope, method) in &methods {
            driver.set_method(scope, Some(*method));
        }
        for state in restored {
            driver.restore_reconciliation(state);
        }
        let mut time: Time = 1;
        driver.advance_to(time);
        for chunk in events.chunks(EVENTS_PER_TIMESTAMP) {
            for (partition, offset, payload) in chunk {
                driver.send(
                    SourceRef {
                        partition: *partition as u32,
                        offset: *offset as u64,
                    },
                    payload.clone(),
                );
            }
            time += 1;
            driver.advance_to(time);
        }
        let mut closed = driver.close();
        while !closed.done() {
            worker.step();
        }
        let mut all = TimestampOutput::default();
        for (_, output) in closed.take_completed() {
            all.merge(output);
        }
        rows_of(all)
    })
}

/// Rows whose updates sum to one, rendered like the tables' rows.
fn fold<R: Ord>(updates: Vec<(R, isize)>, render: impl Fn(&R) -> String) -> BTreeSet<String> {
    let mut counts: BTreeMap<R, isize> = BTreeMap::new();
    for (row, diff) in updates {
        *counts.entry(row).or_insert(0) += diff;
    }
    counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(row, _)| render(row))
        .collect()
}

/// A `lots` row as text (`lots.csv` order of columns).
pub fn render_lot((key, l): &(Id, Lot)) -> String {
    format!(
        "{key},{},{},{},{},{}",
        l.lot_id,
        l.side.as_str(),
        l.open_date,
        l.quantity,
        l.price
    )
}

/// A `positions` row as text.
pub fn render_position((key, s): &(Id, PositionSummary)) -> String {
    format!(
        "{key},{},{},{},{}",
        s.quantity, s.lot_count, s.cost_basis, s.realized_pnl
    )
}

/// A `valuations` row as text.
pub fn render_valuation(v: &ValuationRow) -> String {
    format!(
        "{},{},{},{}",
        v.position_key, v.price, v.market_value, v.unrealized_pnl
    )
}

/// A `breaks` row as text.
pub fn render_break(b: &BreakRow) -> String {
    format!(
        "{},{},{},{},{},{}",
        b.position_key,
        b.as_of_date,
        b.kind.as_str(),
        b.internal_quantity,
        b.custodian_quantity,
        b.difference
    )
}

/// A `sequence_gaps` row as text.
pub fn render_gap(g: &GapRow) -> String {
    format!("{},{},{}", g.account_id, g.first_missing, g.last_missing)
}

fn rows_of(all: TimestampOutput) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    out.insert("lots", fold(all.lots, render_lot));
    out.insert("positions", fold(all.positions, render_position));
    out.insert("valuations", fold(all.valuations, render_valuation));
    out.insert("breaks", fold(all.breaks, render_break));
    out.insert("sequence_gaps", fold(all.gaps, render_gap));
    out
}

/// The tables' rows (`lots`, `positions`, `valuations`, `breaks`,
/// `sequence_gaps`), rendered like the `render_*` functions, decimals in
/// normal form.
pub async fn stored_rows(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<&'static str, BTreeSet<String>>> {
    let queries: [(&'static str, &str, &[bool]); 5] = [
        (
            "lots",
            "SELECT position_key, lot_id, side, open_date::text, quantity::text, price::text FROM lots",
            &[false, false, false, false, true, true],
        ),
        (
            "positions",
            "SELECT position_key, quantity::text, lot_count::text, cost_basis::text, realized_pnl::text FROM positions",
            &[false, true, false, true, true],
        ),
        (
            "valuations",
            "SELECT position_key, price::text, market_value::text, unrealized_pnl::text FROM valuations",
            &[false, true, true, true],
        ),
        (
            "breaks",
            "SELECT position_key, as_of_date::text, kind, internal_quantity::text, custodian_quantity::text, difference::text FROM breaks",
            &[false, false, false, true, true, true],
        ),
        (
            "sequence_gaps",
            "SELECT account_id, first_missing::text, last_missing::text FROM sequence_gaps",
            &[false, false, false],
        ),
    ];
    let mut out = BTreeMap::new();
    for (table, sql, decimal) in queries {
        let rows = client
            .query(sql, &[])
            .await
            .with_context(|| format!("reading {table}"))?;
        let rendered = rows
            .iter()
            .map(|r| {
                (0..decimal.len())
                    .map(|i| {
                        let text: String = r.get(i);
                        if decimal[i] {
                            normal(&text)
                        } else {
                            text
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        out.insert(table, rendered);
    }
    Ok(out)
}
