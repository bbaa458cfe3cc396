//! Bulk writes measured: binary COPY (what the committer uses,
//! `sinks::postgres::commit`) against the multi-row `INSERT ... SELECT FROM
//! unnest(...)` statements it replaced, on the three biggest tables of a
//! per-timestamp commit: `event_store`, `lots`, `corrections`. Same rows,
//! same transaction shape (one per timestamp), each method on a fresh
//! database, alternated over rounds; the median round is reported.

use std::time::Instant;

use anyhow::Result;
use deltabook_dataflows::correction::Correction;
use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::engine::{AcceptedEvent, SourceRef};
use deltabook_dataflows::position::{Lot, LotSide, PositionSummary};
use deltabook_dataflows::trade::{Action, Date};
use deltabook_sinks::postgres::{self, commit, TimestampCommit};
use tokio_postgres::{Client, Transaction};

use super::e2e::{create_db, drop_db};
use super::median;

/// Events per timestamp (the service's default `kafka.batch_max_messages`).
const EVENTS_PER_TIMESTAMP: usize = 10_000;
/// Rows per multi-row INSERT (the default `postgres.write_batch_rows`).
const ROWS_PER_STATEMENT: usize = 5_000;
const ROUNDS: usize = 3;

/// Seconds spent per table by one method over all timestamps.
#[derive(Clone, Copy, Debug, Default)]
struct TableSeconds {
    events: f64,
    lots: f64,
    corrections: f64,
}

/// Reads one table's seconds.
type Pick = fn(&TableSeconds) -> f64;

fn timestamps(events: usize) -> Vec<TimestampCommit> {
    let count = events.div_ceil(EVENTS_PER_TIMESTAMP).max(1);
    (0..count)
        .map(|t| {
            let time = t as u64 + 1;
            let accepted = (0..EVENTS_PER_TIMESTAMP)
                .map(|i| {
                    let n = t * EVENTS_PER_TIMESTAMP + i;
                    let position_key = format!("ACC{}_BK_SEC{}", n % 10, n % 1000);
                    AcceptedEvent {
                        time,
                        source: SourceRef {
                            partition: (n % 16) as u32,
                            offset: n as u64,
                        },
                        trade_id: format!("T{n}").into(),
                        version: 1,
                        action: Action::New,
                        correlation_id: Some(format!("c-{n}").into()),
                        sequence: None,
                        fingerprint: n as u128,
                        payload: format!(
                            r#"{{"trade_id":"T{n}","account_id":"ACC{}","book_id":"BK","security_id":"SEC{}","side":"BUY","quantity":"{}","price":"100.25","trade_date":"2026-03-02"}}"#,
                            n % 10,
                            n % 1000,
                            1 + n % 7
                        )
                        .into_bytes()
                        .into(),
                        position_key: position_key.into(),
                    }
                })
                .collect::<Vec<_>>();
            let lot = |n: usize| Lot {
                lot_id: format!("T{n}").into(),
                side: LotSide::Long,
                open_date: Date::from_ymd(2026, 3, 2),
                quantity: Dec8((1 + n as i128 % 7) * 100_000_000),
                price: Dec8(10_025_000_000),
            };
            let lots = accepted
                .iter()
                .enumerate()
                .map(|(i, e)| ((e.position_key.clone(), lot(t * EVENTS_PER_TIMESTAMP + i)), 1))
                .collect();
            let corrections = (0..EVENTS_PER_TIMESTAMP / 2)
                .map(|i| Correction {
                    position_key: format!("ACC{}_BK_SEC{}", i % 10, i % 1000).into(),
                    as_of: time * 10_000 + i as u64,
                    cause: Vec::new(),
                    before: PositionSummary::default(),
                    after: PositionSummary::default(),
                    lots_closed: Vec::new(),
                    lots_opened: vec![lot(t * EVENTS_PER_TIMESTAMP + i)],
                })
                .collect();
            TimestampCommit {
                time,
                trades_topic: "trade-events".into(),
                methods_topic: "lot-methods".into(),
                accepted,
                lots,
                corrections,
                ..TimestampCommit::default()
            }
        })
        .collect()
}

/// Runs the comparison over `events` accepted events and prints markdown.
pub fn run_suite(events: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let events = events.min(1_000_000);
    let commits = timestamps(events);
    runtime.block_on(async {
        let mut copy = Vec::new();
        let mut insert = Vec::new();
        for round in 0..ROUNDS {
            for use_copy in [round % 2 == 0, round % 2 != 0] {
                let db = format!(
                    "deltabook_bench_pgw{}_{}",
                    std::process::id(),
                    round * 2 + usize::from(use_copy)
                );
                create_db(&db).await?;
                let mut client = postgres::connect(&format!(
                    "host=127.0.0.1 port=5432 user=postgres dbname={db}"
                ))
                .await?;
                postgres::migrate(&mut client).await?;
                let seconds = write_all(&mut client, &commits, use_copy).await;
                drop(client);
                drop_db(&db).await;
                let seconds = seconds?;
                if use_copy {
                    copy.push(seconds);
                } else {
                    insert.push(seconds);
                }
            }
        }
        let rows = commits.len() * EVENTS_PER_TIMESTAMP;
        let mid = |runs: &[TableSeconds], pick: Pick| {
            let mut v: Vec<f64> = runs.iter().map(pick).collect();
            median(&mut v)
        };
        println!("| table ({} timestamps of {EVENTS_PER_TIMESTAMP} events; median of {ROUNDS} rounds) | rows | INSERT ... unnest rows/s | binary COPY rows/s | COPY / INSERT |", commits.len());
        println!("|---|---:|---:|---:|---:|");
        let tables: [(&str, usize, Pick); 3] = [
            ("event_store", rows, |t| t.events),
            ("lots", rows, |t| t.lots),
            ("corrections", rows / 2, |t| t.corrections),
        ];
        for (name, n, pick) in tables {
            let (i, c) = (mid(&insert, pick), mid(&copy, pick));
            println!(
                "| {name} | {n} | {:.0} | {:.0} | {:.2}x |",
                n as f64 / i,
                n as f64 / c,
                i / c
            );
        }
        Ok(())
    })
}

async fn write_all(
    client: &mut Client,
    commits: &[TimestampCommit],
    use_copy: bool,
) -> Result<TableSeconds> {
    let mut seconds = TableSeconds::default();
    for c in commits {
        let tx = client.transaction().await?;
        let started = Instant::now();
        if use_copy {
            commit::write_events(&tx, c).await?;
        } else {
            insert_events(&tx, c).await?;
        }
        seconds.events += started.elapsed().as_secs_f64();
        let started = Instant::now();
        if use_copy {
            commit::write_lots(&tx, c, ROWS_PER_STATEMENT).await?;
        } else {
            insert_lots(&tx, c).await?;
        }
        seconds.lots += started.elapsed().as_secs_f64();
        let started = Instant::now();
        if use_copy {
            commit::write_corrections(&tx, c).await?;
        } else {
            insert_corrections(&tx, c).await?;
        }
        seconds.corrections += started.elapsed().as_secs_f64();
        tx.commit().await?;
    }
    Ok(seconds)
}

/// Baseline: the multi-row INSERT the committer used before COPY.
async fn insert_events(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<()> {
    let base = (c.time as i64) << 20;
    for (chunk_index, part) in c.accepted.chunks(ROWS_PER_STATEMENT).enumerate() {
        let keys: Vec<&str> = part.iter().map(|e| e.position_key.as_str()).collect();
        let vers: Vec<i64> = (0..part.len())
            .map(|i| base | (chunk_index * ROWS_PER_STATEMENT + i) as i64)
            .collect();
        let kinds: Vec<&str> = vec!["trade"; part.len()];
        let ids: Vec<&str> = part.iter().map(|e| e.trade_id.as_str()).collect();
        let versions: Vec<i64> = part.iter().map(|e| e.version as i64).collect();
        let actions: Vec<&str> = part.iter().map(|e| e.action.as_str()).collect();
        let methods: Vec<Option<&str>> = vec![None; part.len()];
        let payloads: Vec<&[u8]> = part.iter().map(|e| e.payload.as_bytes()).collect();
        let topics: Vec<&str> = vec![c.trades_topic.as_str(); part.len()];
        let partitions: Vec<i32> = part.iter().map(|e| e.source.partition as i32).collect();
        let offsets: Vec<i64> = part.iter().map(|e| e.source.offset as i64).collect();
        let correlations: Vec<Option<&str>> =
            part.iter().map(|e| e.correlation_id.as_deref()).collect();
        tx.execute(
            "INSERT INTO event_store (position_key, event_ver, engine_time, kind, trade_id, version, action, method, payload,
                                      source_topic, source_partition, source_offset, correlation_id)
             SELECT k, v, $13, kind, t, ver, a, m, p, topic, part, off, corr
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::bytea[],
                         $9::text[], $10::int4[], $11::int8[], $12::text[])
                  AS u(k, v, kind, t, ver, a, m, p, topic, part, off, corr)",
            &[
                &keys, &vers, &kinds, &ids, &versions, &actions, &methods, &payloads, &topics,
                &partitions, &offsets, &correlations, &(c.time as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Baseline: DELETE of the changed keys, then multi-row INSERT.
async fn insert_lots(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<()> {
    for part in c.lots.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<&str> = part.iter().map(|((k, _), _)| k.as_str()).collect();
        let ids: Vec<&str> = part.iter().map(|((_, l), _)| l.lot_id.as_str()).collect();
        tx.execute(
            "DELETE FROM lots l USING unnest($1::text[], $2::text[]) AS u(k, id) WHERE l.position_key = u.k AND l.lot_id = u.id",
            &[&keys, &ids],
        )
        .await?;
        let sides: Vec<&str> = part.iter().map(|((_, l), _)| l.side.as_str()).collect();
        let dates: Vec<String> = part
            .iter()
            .map(|((_, l), _)| l.open_date.to_string())
            .collect();
        let qty: Vec<String> = part
            .iter()
            .map(|((_, l), _)| l.quantity.to_string())
            .collect();
        let px: Vec<String> = part.iter().map(|((_, l), _)| l.price.to_string()).collect();
        tx.execute(
            "INSERT INTO lots (position_key, lot_id, side, open_date, quantity, price)
             SELECT k, id, s, d::date, q::numeric, p::numeric
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(k, id, s, d, q, p)",
            &[&keys, &ids, &sides, &dates, &qty, &px],
        )
        .await?;
    }
    Ok(())
}

/// Baseline: multi-row INSERT keeping the order in the serial.
async fn insert_corrections(tx: &Transaction<'_>, c: &TimestampCommit) -> Result<()> {
    for part in c.corrections.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<&str> = part.iter().map(|c| c.position_key.as_str()).collect();
        let as_of: Vec<i64> = part.iter().map(|c| c.as_of as i64).collect();
        let mut events = Vec::with_capacity(part.len());
        for c in part {
            events.push(c.to_json()?.to_string());
        }
        tx.execute(
            "INSERT INTO corrections (position_key, as_of, event)
             SELECT k, a, e::json FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY AS u(k, a, e, n) ORDER BY n",
            &[&keys, &as_of, &events],
        )
        .await?;
    }
    Ok(())
}
