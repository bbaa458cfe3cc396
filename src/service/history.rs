//! `AS KNOWN AT t` older than the history the shared traces keep: a batch
//! dataflow over the event store.
//!
//! The accepted trade events with `engine_time <= t`, in commit order
//! (`engine_time, event_ver`), are booked again from nothing under the
//! lot-method map as it stood at `t` (the event store's method rows up to
//! `t`), by the same engine `book` runs; the query is then answered over
//! that final state. This is the engine's state when `t` closed: a run's
//! final state does not depend on how its events are cut into timestamps
//! (the spec's batch-size rule), and the event store holds every accepted
//! event with the timestamp it was assigned.
//!
//! Only tables rebuilt from the accepted trades alone can be answered so
//! (`trades`, `lots`, `positions`, `gaps`): valuations and breaks need the
//! prices and statements of the time, and corrections would carry the
//! replay's timestamps, not the engine's (the `corrections` table in
//! PostgreSQL has them: `WHERE as_of <= t`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use deltabook_dataflows::engine::{Diff, Time};
use deltabook_dataflows::query::{Plan, Row, Table};
use deltabook_dataflows::runner::{self, RunOptions};
use deltabook_dataflows::trade::LotMethod;
use deltabook_sinks::postgres;

/// Events booked per timestamp of the replay (the answer does not depend on it).
const REPLAY_BATCH_EVENTS: usize = 10_000;

/// Why a query cannot be answered from the event store.
pub fn refusal(plan: &Plan, known_at: Time) -> Option<String> {
    let rebuilt = [Table::Trades, Table::Lots, Table::Positions, Table::Gaps];
    Table::ALL
        .into_iter()
        .find(|t| plan.tables().contains(*t) && !rebuilt.contains(t))
        .map(|t| {
            format!(
                "AS KNOWN AT {known_at} is older than the history kept in memory \
                 (queries.history_timestamps), and {} cannot be rebuilt from the event store \
                 (only trades, lots, positions and gaps can)",
                t.name()
            )
        })
}

/// The answer to `plan` as the engine had it when `known_at` closed: its
/// rows with their multiplicities, in the answer's order, and the
/// evaluation errors met.
pub async fn answer(
    postgres_url: &str,
    plan: &Plan,
    known_at: Time,
) -> Result<(Vec<(Row, Diff)>, Vec<String>)> {
    let client = postgres::connect(postgres_url)
        .await
        .context("connecting to PostgreSQL for the event store")?;
    let at = i64::try_from(known_at).unwrap_or(i64::MAX);
    let mut methods: BTreeMap<String, LotMethod> = BTreeMap::new();
    for row in client
        .query(
            "SELECT position_key, method FROM event_store
              WHERE kind = 'method' AND engine_time <= $1 ORDER BY engine_time, event_ver",
            &[&at],
        )
        .await
        .context("reading lot-method changes from event_store")?
    {
        let scope: String = row.get(0);
        let method: Option<String> = row.get(1);
        match method {
            None => {
                methods.remove(&scope);
            }
            Some(text) => {
                let method = LotMethod::parse(&text)
                    .ok_or_else(|| anyhow!("event_store: method {text:?} of {scope}"))?;
                methods.insert(scope, method);
            }
        }
    }
    let events: Vec<Vec<u8>> = client
        .query(
            "SELECT payload FROM event_store
              WHERE kind = 'trade' AND engine_time <= $1 ORDER BY engine_time, event_ver",
            &[&at],
        )
        .await
        .context("reading trade events from event_store")?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let mut now = plan.clone();
    now.as_of.known_at = None;
    let mut options = RunOptions::new(methods.into_iter().collect(), REPLAY_BATCH_EVENTS, 1);
    options.keep_corrections = false;
    options.query = Some(Arc::new(now));
    let outcome =
        tokio::task::spawn_blocking(move || runner::run(Arc::new(events), &options, None))
            .await
            .context("the event-store replay panicked")?
            .map_err(|e| anyhow!("replaying the event store: {e}"))?;
    let answer = outcome
        .query
        .ok_or_else(|| anyhow!("the replay gave no answer"))?;
    // Rows come repeated, in order: as (row, count).
    let mut rows: Vec<(Row, Diff)> = Vec::new();
    for row in answer.rows {
        match rows.last_mut() {
            Some((last, count)) if *last == row => *count += 1,
            _ => rows.push((row, 1)),
        }
    }
    Ok((rows, answer.errors))
}
