//! What a restart reads: the source offsets and last committed time, and
//! the engine's state as of that time (the live version of every trade, the
//! fingerprint of every accepted version, the lot-method map). Loading it
//! costs O(trades), not O(events): the event store is not read.

use std::pin::pin;

use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::engine::{LiveTrade, RestoredTrade, SourceRef};
use deltabook_dataflows::gate::{parse_event, PriceTick, Statement};
use deltabook_dataflows::id::Id;
use deltabook_dataflows::reconcile::{Restored, SequenceState};
use deltabook_dataflows::trade::{BookedTrade, Date, Instant, LotKey, LotMethod, Side};
use futures_util::TryStreamExt;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use super::{PgError, SourceOffset};

/// The engine state committed up to `last_time`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Last committed engine time (0 when nothing was committed).
    pub last_time: u64,
    /// Next offset per source partition.
    pub offsets: Vec<SourceOffset>,
    /// Every trade ever accepted: live version and fingerprints.
    pub trades: Vec<RestoredTrade>,
    /// The lot-method map.
    pub methods: Vec<(String, LotMethod)>,
    /// Reconciliation's live ticks, live statements and sequence states.
    pub reconciliation: Vec<Restored>,
}

/// Next offsets per (topic, partition) and the last engine time committed.
pub async fn load_progress(
    client: &impl GenericClient,
) -> Result<(Vec<SourceOffset>, u64), PgError> {
    let rows = client
        .query("SELECT source_topic, source_partition, next_offset, engine_time FROM sink_progress ORDER BY 1, 2", &[])
        .await?;
    let mut last_time = committed_time(client).await?;
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
pub async fn committed_time(client: &impl GenericClient) -> Result<u64, PgError> {
    let row = client
        .query_one(
            "SELECT greatest(
                 (SELECT coalesce(max(engine_time), 0) FROM sink_progress),
                 (SELECT coalesce(max(engine_time), 0) FROM committed_timestamps))",
            &[],
        )
        .await?;
    let time: i64 = row.get(0);
    Ok(time.max(0) as u64)
}

/// Loads everything a restart needs (one row per trade, not per event).
/// Read in one repeatable-read transaction, so the parts agree.
pub async fn load_snapshot(client: &mut Client) -> Result<Snapshot, PgError> {
    load_snapshot_with(client, false).await
}

/// [`load_snapshot`]; with `whole_versions`, each booked live trade's
/// version is also read whole (its event from `event_store`, parsed again)
/// into [`RestoredTrade::whole`], for a service that shares the `trades`
/// table with queries.
pub async fn load_snapshot_with(
    client: &mut Client,
    whole_versions: bool,
) -> Result<Snapshot, PgError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let (offsets, last_time) = load_progress(&tx).await?;
    let mut trades = Vec::new();
    {
        let stream = tx
            .copy_out(
                "COPY (SELECT trade_id, version, position_key, side, quantity::text, price::text,
                              to_char(trade_date, 'YYYYMMDD')::int4, trade_time_s, trade_time_ns, fingerprints
                       FROM live_trades) TO STDOUT (FORMAT binary)",
            )
            .await?;
        let mut rows = pin!(BinaryCopyOutStream::new(
            stream,
            &[
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
                Type::INT8,
                Type::INT4,
                Type::BYTEA,
            ]
        ));
        while let Some(row) = rows.try_next().await? {
            let live = live_trade(&row)?;
            let fingerprints = unpack_fingerprints(&live.trade_id, row.try_get(9)?)?;
            if !fingerprints.iter().any(|(v, _)| *v == live.version) {
                return Err(PgError::Corrupt {
                    what: "live_trades.fingerprints",
                    detail: format!(
                        "no fingerprint for the live version {} of {}",
                        live.version, live.trade_id
                    ),
                });
            }
            trades.push(RestoredTrade {
                live,
                fingerprints,
                whole: None,
            });
        }
    }
    if whole_versions {
        load_whole_versions(&tx, &mut trades).await?;
    }
    let mut methods = Vec::new();
    for row in tx
        .query("SELECT scope, method FROM lot_methods ORDER BY scope", &[])
        .await?
    {
        let scope: String = row.get(0);
        let text: String = row.get(1);
        let method = LotMethod::parse(&text).ok_or_else(|| PgError::Corrupt {
            what: "lot_methods.method",
            detail: format!("{scope}: {text:?}"),
        })?;
        methods.push((scope, method));
    }
    let reconciliation = load_reconciliation(&tx).await?;
    tx.commit().await?;
    Ok(Snapshot {
        last_time,
        offsets,
        trades,
        methods,
        reconciliation,
    })
}

/// Fills [`RestoredTrade::whole`] of every booked trade from the event
/// store: the accepted event of its live version, parsed by the gate.
async fn load_whole_versions(
    client: &impl GenericClient,
    trades: &mut [RestoredTrade],
) -> Result<(), PgError> {
    let mut payloads: std::collections::HashMap<String, Vec<u8>> = client
        .query(
            "SELECT l.trade_id, e.payload FROM live_trades l
               JOIN event_store e ON e.trade_id = l.trade_id AND e.version = l.version
              WHERE l.position_key IS NOT NULL AND e.kind = 'trade'",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for trade in trades.iter_mut().filter(|t| t.live.booked.is_some()) {
        let id = &trade.live.trade_id;
        let payload = payloads
            .remove(id.as_str())
            .ok_or_else(|| PgError::Corrupt {
                what: "event_store",
                detail: format!(
                    "no event for the live version {} of {id}",
                    trade.live.version
                ),
            })?;
        let version = parse_event(&payload).map_err(|e| PgError::Corrupt {
            what: "event_store.payload",
            detail: format!("{id}: {e:?}"),
        })?;
        trade.whole = Some(version);
    }
    Ok(())
}

/// Reconciliation's restart state: the live tick per security, the live
/// statement per position and each account's (min, max, gaps).
async fn load_reconciliation(client: &impl GenericClient) -> Result<Vec<Restored>, PgError> {
    let corrupt = |what: &'static str, detail: String| PgError::Corrupt { what, detail };
    let decimal = |what: &'static str, text: &str| -> Result<Dec8, PgError> {
        text.parse::<Dec8>()
            .map_err(|_| corrupt(what, text.to_string()))
    };
    let source = |partition: i32, offset: i64| SourceRef {
        partition: partition.max(0) as u32,
        offset: offset.max(0) as u64,
    };
    let mut restored = Vec::new();
    for row in client
        .query(
            "SELECT security_id, price::text, as_of_s, as_of_ns, source_partition, source_offset FROM live_prices",
            &[],
        )
        .await?
    {
        let nanos: i32 = row.get(3);
        restored.push(Restored::Tick(
            source(row.get(4), row.get(5)),
            PriceTick {
                security_id: Id::from(row.get::<_, &str>(0)),
                price: decimal("live_prices.price", row.get(1))?,
                as_of: Instant {
                    secs: row.get(2),
                    nanos: u32::try_from(nanos)
                        .map_err(|_| corrupt("live_prices.as_of_ns", nanos.to_string()))?,
                },
                source: None,
            },
        ));
    }
    for row in client
        .query(
            "SELECT position_key, quantity::text, to_char(as_of_date, 'YYYYMMDD')::int4, source_partition, source_offset FROM live_statements",
            &[],
        )
        .await?
    {
        let position: String = row.get(0);
        let mut parts = position.splitn(3, '_');
        let (Some(account_id), Some(book_id), Some(security_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt("live_statements.position_key", position));
        };
        let date: i32 = row.get(2);
        restored.push(Restored::Statement(
            source(row.get(3), row.get(4)),
            Statement {
                account_id: Id::from(account_id),
                book_id: Id::from(book_id),
                security_id: Id::from(security_id),
                quantity: decimal("live_statements.quantity", row.get(1))?,
                as_of_date: Date(date.max(0) as u32),
                source: None,
            },
        ));
    }
    let mut gaps: std::collections::HashMap<String, Vec<(u64, u64)>> = Default::default();
    for row in client
        .query(
            "SELECT account_id, first_missing, last_missing FROM sequence_gaps ORDER BY account_id, first_missing",
            &[],
        )
        .await?
    {
        let first: i64 = row.get(1);
        let last: i64 = row.get(2);
        gaps.entry(row.get(0))
            .or_default()
            .push((first.max(0) as u64, last.max(0) as u64));
    }
    for row in client
        .query(
            "SELECT account_id, min_sequence, max_sequence FROM sequence_ranges",
            &[],
        )
        .await?
    {
        let account_id: String = row.get(0);
        let min: i64 = row.get(1);
        let max: i64 = row.get(2);
        restored.push(Restored::Sequences(SequenceState {
            gaps: gaps.remove(&account_id).unwrap_or_default(),
            account_id: Id::from(account_id),
            min: min.max(0) as u64,
            max: max.max(0) as u64,
        }));
    }
    Ok(restored)
}

/// `(version, fingerprint)` pairs packed 24 bytes each, big-endian.
fn unpack_fingerprints(trade_id: &str, bytes: &[u8]) -> Result<Vec<(u64, u128)>, PgError> {
    if !bytes.len().is_multiple_of(24) {
        return Err(PgError::Corrupt {
            what: "live_trades.fingerprints",
            detail: format!("{trade_id}: {} bytes", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(24)
        .map(|entry| {
            let (version, print) = entry.split_at(8);
            let mut v = [0u8; 8];
            v.copy_from_slice(version);
            let mut p = [0u8; 16];
            p.copy_from_slice(print);
            (u64::from_be_bytes(v), u128::from_be_bytes(p))
        })
        .collect())
}

/// One `live_trades` row.
fn live_trade(row: &BinaryCopyOutRow) -> Result<LiveTrade, PgError> {
    let trade_id = Id::from(row.try_get::<&str>(0)?);
    let version: i64 = row.try_get(1)?;
    let position: Option<Id> = row.try_get::<Option<&str>>(2)?.map(Id::from);
    let corrupt = |what: &'static str, detail: String| PgError::Corrupt { what, detail };
    let booked = match position {
        None => None,
        Some(position) => {
            let side = match row.try_get::<Option<&str>>(3)? {
                Some("BUY") => Side::Buy,
                Some("SELL") => Side::Sell,
                other => {
                    return Err(corrupt(
                        "live_trades.side",
                        format!("{trade_id}: {other:?}"),
                    ))
                }
            };
            let decimal = |idx: usize, what: &'static str| -> Result<Dec8, PgError> {
                let text: Option<&str> = row.try_get(idx)?;
                text.and_then(|t| t.parse::<Dec8>().ok())
                    .ok_or_else(|| corrupt(what, format!("{trade_id}: {text:?}")))
            };
            let quantity = decimal(4, "live_trades.quantity")?;
            let price = decimal(5, "live_trades.price")?;
            let date: Option<i32> = row.try_get(6)?;
            let date = date
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| corrupt("live_trades.trade_date", trade_id.to_string()))?;
            let secs: Option<i64> = row.try_get(7)?;
            let nanos: Option<i32> = row.try_get(8)?;
            let trade_time = match (secs, nanos) {
                (Some(secs), Some(nanos)) => Some(Instant {
                    secs,
                    nanos: u32::try_from(nanos)
                        .map_err(|_| corrupt("live_trades.trade_time_ns", trade_id.to_string()))?,
                }),
                (None, None) => None,
                _ => return Err(corrupt("live_trades.trade_time", trade_id.to_string())),
            };
            Some((
                position,
                BookedTrade {
                    key: LotKey::new(Date(date), trade_time, trade_id.clone()),
                    side,
                    quantity,
                    price,
                },
            ))
        }
    };
    Ok(LiveTrade {
        trade_id,
        version: version as u64,
        booked,
    })
}
