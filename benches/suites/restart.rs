//! Restart time against history: a database holding N accepted events
//! (written by the committer's own code, one transaction per timestamp),
//! then the two ways to get the engine's state back, in the same process:
//!
//! - snapshot (what `run` does): load the live version of every trade, the
//!   fingerprints and the lot-method map, feed them at the last committed
//!   time, step until the dataflow has passed that time;
//! - baseline, full replay (what `run` did before): read the whole event
//!   store in engine order and run every event at its original time.
//!
//! The history keeps a fixed set of live trades (100k trades over 1,000
//! positions) and grows by amending them, so the live state stays the
//! same while the history grows; the duplicate rule still remembers every
//! accepted version (16 bytes each), which is the part of the state that
//! grows with amendments.

use std::pin::pin;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use anyhow::{anyhow, Result};
use deltabook_dataflows::driver::{Capture, Driver};
use deltabook_dataflows::engine::{SourceRef, Time};
use deltabook_sinks::postgres::{self, SourceOffset};
use futures_util::TryStreamExt;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use super::e2e::{create_db, drop_db, unique_config};
use deltabook::service::assemble::AssembledTimestamp;
use deltabook::service::commit::to_commit;
use deltabook::service::engine::BatchInput;

/// Live trades of every history.
const TRADES: u64 = 100_000;
/// Events per engine timestamp.
const BATCH: u64 = 10_000;

/// Event `i` of the history: trade `i % TRADES`, version `i / TRADES + 1`.
fn history_line(i: u64) -> Vec<u8> {
    let k = i % TRADES;
    let version = i / TRADES + 1;
    let (action, version_field) = if version == 1 {
        ("NEW", String::new())
    } else {
        ("AMEND", format!(r#""version":{version},"#))
    };
    let side = if k % 3 == 2 { "SELL" } else { "BUY" };
    format!(
        r#"{{"trade_id":"R{k}",{version_field}"action":"{action}","account_id":"ACC{}","book_id":"BK","security_id":"SEC{}","side":"{side}","quantity":"{}","price":"{}.25","trade_date":"2026-{:02}-{:02}"}}"#,
        k % 10,
        k % 100,
        1 + (i * 7) % 13,
        100 + i % 50,
        1 + (k / 28) % 12,
        1 + k % 28,
    )
    .into_bytes()
}

/// One measured history.
struct RestartRow {
    events: u64,
    fingerprints: u64,
    load_seconds: f64,
    /// The load when the `trades` table is shared (each live version read
    /// whole from `event_store` and parsed again).
    load_whole_seconds: f64,
    rebuild_seconds: f64,
    replay_seconds: f64,
}

/// Runs the suite over `histories` (accepted events each) and prints markdown.
pub fn run_suite(base: Option<&std::path::Path>, histories: &[u64]) -> Result<()> {
    // The history is what it claims: valid events, a fixed set of trades.
    for i in [0, TRADES - 1, TRADES, 3 * TRADES + 17] {
        let v = deltabook_dataflows::gate::parse_event(&history_line(i))
            .map_err(|e| anyhow!("history line {i}: {e}"))?;
        anyhow::ensure!(v.trade_id == format!("R{}", i % TRADES) && v.version == i / TRADES + 1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &events in histories {
        let (config, db) = unique_config(base, "rs", &[])?;
        runtime.block_on(create_db(&db))?;
        let result = measure(&runtime, &config, events);
        runtime.block_on(drop_db(&db));
        rows.push(result?);
    }
    println!("| accepted events | live trades | fingerprints | snapshot: load | snapshot: rebuild | restart from snapshot | baseline: full replay of event_store | replay / snapshot | load with whole versions (trades shared) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let restart = r.load_seconds + r.rebuild_seconds;
        println!(
            "| {} | {TRADES} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.1}x | {:.2} s |",
            r.events,
            r.fingerprints,
            r.load_seconds,
            r.rebuild_seconds,
            restart,
            r.replay_seconds,
            r.replay_seconds / restart,
            r.load_whole_seconds
        );
    }
    Ok(())
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    config: &deltabook::config::Config,
    events: u64,
) -> Result<RestartRow> {
    let url = config.postgres.url.clone();
    let epoch = runtime.block_on(async {
        let mut client = postgres::connect(&url).await?;
        postgres::migrate(&mut client).await?;
        Ok::<_, anyhow::Error>(postgres::take_over(&client).await?)
    })?;
    let built = Instant::now();
    write_history(runtime, config, epoch, events)?;
    eprintln!(
        "restart: wrote a history of {events} events in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    // Restart from the snapshot.
    let started = Instant::now();
    let snapshot = runtime.block_on(async {
        let mut client = postgres::connect(&url).await?;
        Ok::<_, anyhow::Error>(postgres::load_snapshot(&mut client).await?)
    })?;
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let whole = runtime.block_on(async {
        let mut client = postgres::connect(&url).await?;
        Ok::<_, anyhow::Error>(postgres::load_snapshot_with(&mut client, true).await?)
    })?;
    let load_whole_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        whole
            .trades
            .iter()
            .all(|t| t.live.booked.is_none() || t.whole.is_some()),
        "every booked live trade restored whole"
    );
    drop(whole);
    let fingerprints = snapshot
        .trades
        .iter()
        .map(|t| t.fingerprints.len() as u64)
        .sum();
    let start = snapshot.last_time;
    let started = Instant::now();
    timely::execute_directly(move |worker| {
        let mut driver = Driver::new(worker, start, Capture::StateOnly);
        for (scope, method) in snapshot.methods {
            driver.set_method(&scope, Some(method));
        }
        for trade in snapshot.trades {
            driver.restore(trade);
        }
        driver.advance_to(start + 1);
        while driver.less_than(start + 1) {
            worker.step();
        }
    });
    let rebuild_seconds = started.elapsed().as_secs_f64();

    // Baseline: replay the event store at the original engine times.
    let started = Instant::now();
    let (tx, rx) = sync_channel::<Vec<(Time, SourceRef, Vec<u8>)>>(4);
    let reader = runtime.spawn(async move {
        let client = postgres::connect(&url).await?;
        let stream = client
            .copy_out(
                "COPY (SELECT engine_time, source_partition, source_offset, payload FROM event_store
                       WHERE kind = 'trade' ORDER BY engine_time, event_ver) TO STDOUT (FORMAT binary)",
            )
            .await?;
        let mut rows = pin!(BinaryCopyOutStream::new(
            stream,
            &[Type::INT8, Type::INT4, Type::INT8, Type::BYTEA]
        ));
        let mut chunk = Vec::with_capacity(BATCH as usize);
        while let Some(row) = rows.try_next().await? {
            let time: i64 = row.try_get(0)?;
            let partition: i32 = row.try_get(1)?;
            let offset: i64 = row.try_get(2)?;
            let payload: &[u8] = row.try_get(3)?;
            chunk.push((
                time as Time,
                SourceRef {
                    partition: partition as u32,
                    offset: offset as u64,
                },
                payload.to_vec(),
            ));
            if chunk.len() == BATCH as usize {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(BATCH as usize));
                if tx.send(full).is_err() {
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(chunk);
        }
        Ok::<_, anyhow::Error>(())
    });
    replay(rx);
    runtime.block_on(reader)??;
    let replay_seconds = started.elapsed().as_secs_f64();
    Ok(RestartRow {
        load_whole_seconds,
        events,
        fingerprints,
        load_seconds,
        rebuild_seconds,
        replay_seconds,
    })
}

/// Runs replayed events at their original times until all are computed.
fn replay(input: Receiver<Vec<(Time, SourceRef, Vec<u8>)>>) {
    // `execute_directly` wants a `Sync` closure; the worker runs on this thread.
    let input = std::sync::Mutex::new(input);
    timely::execute_directly(move |worker| {
        let Ok(input) = input.lock() else { return };
        let mut driver = Driver::new(worker, 0, Capture::StateOnly);
        driver.advance_to(1);
        while let Ok(chunk) = input.recv() {
            for (time, source, payload) in chunk {
                if time > driver.time() {
                    driver.advance_to(time);
                    worker.step();
                    while driver.less_than(time.saturating_sub(4)) {
                        worker.step();
                    }
                    // The outputs are not needed: a replay only rebuilds state.
                    drop(driver.take_completed());
                }
                driver.send(source, payload);
            }
        }
        let end = driver.time() + 1;
        driver.advance_to(end);
        while driver.less_than(end) {
            worker.step();
            drop(driver.take_completed());
        }
    });
}

/// Writes `events` history events through the engine and the committer's
/// own per-timestamp transaction.
fn write_history(
    runtime: &tokio::runtime::Runtime,
    config: &deltabook::config::Config,
    epoch: i64,
    events: u64,
) -> Result<()> {
    let handle = runtime.handle().clone();
    let config = config.clone();
    timely::execute_directly(move |worker| -> Result<()> {
        let mut client = handle.block_on(postgres::connect(&config.postgres.url))?;
        let mut driver = Driver::new(worker, 0, Capture::All);
        driver.advance_to(1);
        let mut sent = 0u64;
        let mut time: Time = 1;
        let commit_done = |completed: Vec<(Time, deltabook_dataflows::driver::TimestampOutput)>,
                           client: &mut tokio_postgres::Client|
         -> Result<()> {
            for (t, output) in completed {
                let offsets = vec![SourceOffset {
                    topic: config.kafka.trades_topic.clone(),
                    partition: 0,
                    next_offset: (t * BATCH).min(events) as i64,
                }];
                let (commit, _) = to_commit(
                    AssembledTimestamp {
                        time: t,
                        output,
                        inputs: vec![BatchInput {
                            offsets,
                            ..BatchInput::default()
                        }],
                    },
                    &config,
                    epoch,
                );
                handle
                    .block_on(postgres::commit_timestamp(
                        client,
                        &commit,
                        config.postgres.write_batch_rows,
                    ))
                    .map_err(|e| anyhow!("committing {t}: {e}"))?;
            }
            Ok(())
        };
        while sent < events {
            let upto = (sent + BATCH).min(events);
            while sent < upto {
                driver.send(
                    SourceRef {
                        partition: 0,
                        offset: sent,
                    },
                    history_line(sent),
                );
                sent += 1;
            }
            time += 1;
            driver.advance_to(time);
            while driver.less_than(time) {
                worker.step();
            }
            commit_done(driver.take_completed(), &mut client)?;
        }
        Ok(())
    })
}
