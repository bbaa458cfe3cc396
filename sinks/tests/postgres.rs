//! The PostgreSQL sink against the real server on 127.0.0.1:5432 (started by
//! `scripts/services.sh`). Each test creates its own database and drops it.
//! A test that cannot reach PostgreSQL fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a failed expectation is the test failing

use deltabook_dataflows::correction::{Cause, Correction};
use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::engine::{AcceptedEvent, DeadLetter, LiveTrade, RestoredTrade, SourceRef};
use deltabook_dataflows::gate::{RejectKind, Rejection};
use deltabook_dataflows::position::{Lot, LotSide, PositionSummary};
use deltabook_dataflows::reconcile::{
    BreakKind, BreakRow, GapRow, LiveStatement, LiveTick, Restored, SequenceRange, SequenceState,
    ValuationRow,
};
use deltabook_dataflows::trade::{Action, BookedTrade, Date, Instant, LotKey, LotMethod, Side};
use deltabook_sinks::postgres::{
    self, MethodEvent, PgError, ReconciliationCommit, SourceOffset, TimestampCommit,
};

const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// A scratch database, dropped when the test ends (also on failure).
struct ScratchDb {
    name: String,
}

impl ScratchDb {
    async fn create() -> ScratchDb {
        let admin = postgres::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/services.sh)");
        let name = format!("deltabook_test_{}_{}", std::process::id(), rand_suffix());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        ScratchDb { name }
    }
    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        )
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) = postgres::connect(ADMIN_URL).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn d(text: &str) -> Dec8 {
    text.parse().expect("decimal")
}

fn lot(id: &str, quantity: &str) -> Lot {
    Lot {
        lot_id: id.into(),
        side: LotSide::Long,
        open_date: Date::from_ymd(2026, 1, 2),
        quantity: d(quantity),
        price: d("10.5"),
    }
}

fn summary(quantity: &str, lots: u64) -> PositionSummary {
    PositionSummary {
        quantity: d(quantity),
        lot_count: lots,
        cost_basis: d(quantity).checked_mul(d("10.5")).expect("fits"),
        ..PositionSummary::default()
    }
}

#[tokio::test]
async fn migrations_are_versioned_and_safe_to_rerun() {
    let db = ScratchDb::create().await;
    let mut client = postgres::connect(&db.url()).await.expect("connect");
    assert_eq!(
        postgres::migrate(&mut client).await.expect("migrate"),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        postgres::migrate(&mut client).await.expect("migrate again"),
        Vec::<i32>::new()
    );
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'event_store'::regclass",
            &[],
        )
        .await
        .expect("count partitions")
        .get(0);
    assert_eq!(partitions, 16);
}

#[tokio::test]
async fn a_timestamp_commits_state_events_corrections_and_offsets_together() {
    let db = ScratchDb::create().await;
    let mut client = postgres::connect(&db.url()).await.expect("connect");
    postgres::migrate(&mut client).await.expect("migrate");
    let key = "ACC1_EQ_AAPL".to_string();
    let accepted = AcceptedEvent {
        time: 1,
        source: SourceRef {
            partition: 3,
            offset: 41,
        },
        position_key: key.clone().into(),
        trade_id: "T1".into(),
        version: 1,
        action: Action::New,
        correlation_id: Some("c-1".into()),
        sequence: None,
        fingerprint: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        payload: br#"{"trade_id":"T1"}"#.to_vec().into(),
    };
    let correction = Correction {
        position_key: key.clone().into(),
        as_of: 1,
        cause: vec![Cause::MethodChange(LotMethod::Lifo)],
        before: PositionSummary::default(),
        after: summary("100", 1),
        lots_closed: vec![],
        lots_opened: vec![lot("T1", "100")],
    };
    let dead = DeadLetter {
        source: SourceRef {
            partition: 3,
            offset: 42,
        },
        reason: Rejection {
            kind: RejectKind::NotJson,
            detail: "empty or blank input".into(),
        },
        payload: b"".to_vec(),
    };
    let epoch = postgres::take_over(&client).await.expect("writer epoch");
    let booked = BookedTrade {
        key: LotKey::new(
            Date::from_ymd(2026, 1, 2),
            Some(Instant {
                secs: 1_767_312_000,
                nanos: 1_000_000_000,
            }),
            "T1".into(),
        ),
        side: Side::Buy,
        quantity: d("100"),
        price: d("10.5"),
    };
    let first = TimestampCommit {
        time: 1,
        writer_epoch: epoch,
        trades_topic: "trade-events".into(),
        methods_topic: "my-methods".into(),
        accepted: vec![accepted],
        live: vec![LiveTrade {
            trade_id: "T1".into(),
            version: 1,
            booked: Some((key.clone().into(), booked.clone())),
        }],
        methods: vec![MethodEvent {
            time: 1,
            scope: "ACC1".into(),
            method: Some(LotMethod::Lifo),
            partition: 0,
            offset: 0,
            payload: b"LIFO".to_vec(),
        }],
        lots: vec![((key.clone().into(), lot("T1", "100")), 1)],
        positions: vec![((key.clone().into(), summary("100", 1)), 1)],
        corrections: vec![correction],
        dead_letters: vec![("trade-events".into(), dead)],
        offsets: vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 3,
            next_offset: 43,
        }],
        reconciliation: ReconciliationCommit::default(),
    };
    postgres::commit_timestamp(&mut client, &first, 2)
        .await
        .expect("commit 1");
    // Time 2: the lot shrinks (retract + assert), the position changes.
    let second = TimestampCommit {
        time: 2,
        writer_epoch: epoch,
        trades_topic: "trade-events".into(),
        lots: vec![
            ((key.clone().into(), lot("T1", "100")), -1),
            ((key.clone().into(), lot("T1", "60")), 1),
        ],
        positions: vec![
            ((key.clone().into(), summary("100", 1)), -1),
            ((key.clone().into(), summary("60", 1)), 1),
        ],
        offsets: vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 3,
            next_offset: 50,
        }],
        ..TimestampCommit::default()
    };
    postgres::commit_timestamp(&mut client, &second, 2)
        .await
        .expect("commit 2");

    let lot_row = client
        .query_one(
            "SELECT quantity::text, price::text, open_date::text FROM lots",
            &[],
        )
        .await
        .expect("lot");
    assert_eq!(
        (
            lot_row.get::<_, String>(0),
            lot_row.get::<_, String>(1),
            lot_row.get::<_, String>(2)
        ),
        ("60".into(), "10.5".into(), "2026-01-02".into())
    );
    let pos = client
        .query_one(
            "SELECT quantity::text, cost_basis::text, as_of FROM positions",
            &[],
        )
        .await
        .expect("position");
    assert_eq!(
        (
            pos.get::<_, String>(0),
            pos.get::<_, String>(1),
            pos.get::<_, i64>(2)
        ),
        ("60".into(), "630".into(), 2)
    );
    let events: Vec<(String, i64, i64)> = client
        .query(
            "SELECT kind, engine_time, event_ver FROM event_store ORDER BY event_ver",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        events,
        vec![
            ("trade".into(), 1, 1 << 20),
            ("method".into(), 1, (1 << 20) | 1)
        ]
    );
    let text: String = client
        .query_one("SELECT event::text FROM corrections WHERE as_of = 1", &[])
        .await
        .expect("correction")
        .get(0);
    let correction: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(correction["after"]["cost_basis"], "1050");
    assert_eq!(correction["cause"][0]["method_change"], "LIFO");
    let dead: String = client
        .query_one("SELECT reason FROM dead_letters", &[])
        .await
        .expect("dead letter")
        .get(0);
    assert_eq!(dead, "not_json: empty or blank input");
    let (offsets, last_time) = postgres::load_progress(&client).await.expect("progress");
    assert_eq!(last_time, 2);
    assert_eq!(
        offsets,
        vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 3,
            next_offset: 50
        }]
    );
    let method_topic: String = client
        .query_one(
            "SELECT source_topic FROM event_store WHERE kind = 'method'",
            &[],
        )
        .await
        .expect("method event")
        .get(0);
    assert_eq!(method_topic, "my-methods", "the configured topic is stored");
    // What a restart loads: the live trade (with its leap-second time), its
    // fingerprint and the lot-method map, as committed.
    let snapshot = postgres::load_snapshot(&mut client)
        .await
        .expect("snapshot");
    assert_eq!(snapshot.last_time, 2);
    assert_eq!(
        snapshot.trades,
        vec![RestoredTrade {
            live: LiveTrade {
                trade_id: "T1".into(),
                version: 1,
                booked: Some((key.clone().into(), booked)),
            },
            fingerprints: vec![(1, 0x0123_4567_89ab_cdef_0011_2233_4455_6677)],
            whole: None,
        }]
    );
    assert_eq!(
        snapshot.methods,
        vec![("ACC1".to_string(), LotMethod::Lifo)]
    );
    let epochs: Vec<(i64, i64)> = client
        .query(
            "SELECT engine_time, writer_epoch FROM committed_timestamps ORDER BY 1",
            &[],
        )
        .await
        .expect("commit log")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(epochs, vec![(1, epoch), (2, epoch)]);
}

#[tokio::test]
async fn a_writer_whose_epoch_was_taken_over_cannot_commit() {
    let db = ScratchDb::create().await;
    let mut client = postgres::connect(&db.url()).await.expect("connect");
    postgres::migrate(&mut client).await.expect("migrate");
    let old = postgres::take_over(&client).await.expect("epoch");
    let commit = |time: u64, epoch: i64| TimestampCommit {
        time,
        writer_epoch: epoch,
        trades_topic: "trade-events".into(),
        offsets: vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 0,
            next_offset: time as i64 * 10,
        }],
        ..TimestampCommit::default()
    };
    postgres::commit_timestamp(&mut client, &commit(1, old), 100)
        .await
        .expect("the current writer commits");
    let new = postgres::take_over(&client).await.expect("takeover");
    assert_eq!(new, old + 1);
    match postgres::commit_timestamp(&mut client, &commit(2, old), 100).await {
        Err(PgError::Fenced { mine, current }) => assert_eq!((mine, current), (old, new)),
        other => panic!("expected Fenced, got {other:?}"),
    }
    let (offsets, last_time) = postgres::load_progress(&client).await.expect("progress");
    assert_eq!(
        (offsets[0].next_offset, last_time),
        (10, 1),
        "nothing of the fenced commit"
    );
    postgres::commit_timestamp(&mut client, &commit(2, new), 100)
        .await
        .expect("the new writer commits");
}

#[tokio::test]
async fn a_failing_commit_leaves_nothing_behind() {
    let db = ScratchDb::create().await;
    let mut client = postgres::connect(&db.url()).await.expect("connect");
    postgres::migrate(&mut client).await.expect("migrate");
    let key = "ACC1_EQ_AAPL".to_string();
    let epoch = postgres::take_over(&client).await.expect("epoch");
    let commit = TimestampCommit {
        time: 1,
        writer_epoch: epoch,
        trades_topic: "trade-events".into(),
        positions: vec![((key.clone().into(), summary("1", 1)), 1)],
        offsets: vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 0,
            next_offset: 10,
        }],
        ..TimestampCommit::default()
    };
    postgres::commit_timestamp(&mut client, &commit, 100)
        .await
        .expect("commit");
    // Same as_of for the same position twice violates UNIQUE (position_key, as_of): the whole commit must roll back.
    let bad = Correction {
        position_key: key.clone().into(),
        as_of: 2,
        cause: vec![],
        before: PositionSummary::default(),
        after: summary("1", 1),
        lots_closed: vec![],
        lots_opened: vec![],
    };
    let failing = TimestampCommit {
        time: 2,
        writer_epoch: epoch,
        trades_topic: "trade-events".into(),
        positions: vec![
            ((key.clone().into(), summary("1", 1)), -1),
            ((key.clone().into(), summary("2", 1)), 1),
        ],
        corrections: vec![bad.clone(), bad],
        offsets: vec![SourceOffset {
            topic: "trade-events".into(),
            partition: 0,
            next_offset: 20,
        }],
        ..TimestampCommit::default()
    };
    assert!(postgres::commit_timestamp(&mut client, &failing, 100)
        .await
        .is_err());
    let quantity: String = client
        .query_one("SELECT quantity::text FROM positions", &[])
        .await
        .expect("position")
        .get(0);
    assert_eq!(quantity, "1");
    let (offsets, last_time) = postgres::load_progress(&client).await.expect("progress");
    assert_eq!((offsets[0].next_offset, last_time), (10, 1));
    let corrections: i64 = client
        .query_one("SELECT count(*) FROM corrections", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(corrections, 0);
}

#[tokio::test]
async fn reconciliation_tables_keep_the_final_rows_and_the_snapshot_restores_them() {
    let db = ScratchDb::create().await;
    let mut client = postgres::connect(&db.url()).await.expect("connect");
    postgres::migrate(&mut client).await.expect("migrate");
    let epoch = postgres::take_over(&client).await.expect("writer epoch");
    let d = |t: &str| t.parse::<Dec8>().expect("decimal");
    let valuation = |price: &str| ValuationRow {
        position_key: "A_B_S".into(),
        price: d(price),
        market_value: d(price).checked_mul(d("2")).expect("fits"),
        unrealized_pnl: d("1").to_amount(),
    };
    let brk = |custodian: &str| BreakRow {
        position_key: "A_B_S".into(),
        as_of_date: Date::from_ymd(2026, 3, 2),
        kind: BreakKind::QuantityMismatch,
        internal_quantity: d("2"),
        custodian_quantity: d(custodian),
        difference: d("2").checked_sub(d(custodian)).expect("fits"),
    };
    let tick = |price: &str, offset: u64| LiveTick {
        security_id: "S".into(),
        as_of: Instant {
            secs: 1_772_467_200,
            nanos: 1_000_000_000, // inside a leap second: kept as is
        },
        source: SourceRef {
            partition: 2,
            offset,
        },
        price: d(price),
    };
    let statement = LiveStatement {
        position_key: "A_B_S".into(),
        as_of_date: Date::from_ymd(2026, 3, 2),
        source: SourceRef {
            partition: 1,
            offset: 7,
        },
        quantity: "-5".parse().expect("decimal"),
    };
    let gap = |first: u64, last: u64| GapRow {
        account_id: "A".into(),
        first_missing: first,
        last_missing: last,
    };
    let range = |max: u64| SequenceRange {
        account_id: "A".into(),
        min: 1,
        max,
    };
    // Time 1: everything appears.
    let first = TimestampCommit {
        time: 1,
        writer_epoch: epoch,
        reconciliation: ReconciliationCommit {
            valuations: vec![(valuation("10"), 1)],
            breaks: vec![(brk("1"), 1)],
            gaps: vec![(gap(2, 9), 1)],
            live_ticks: vec![(tick("10", 3), 1)],
            live_statements: vec![(statement.clone(), 1)],
            sequence_ranges: vec![(range(10), 1)],
            break_events: vec![(
                "A_B_S".into(),
                r#"{"position_key":"A_B_S","as_of":1,"event":"OPENED"}"#.into(),
            )],
        },
        ..TimestampCommit::default()
    };
    postgres::commit_timestamp(&mut client, &first, 100)
        .await
        .expect("commit 1");
    // Time 2: unconsolidated join output (an intermediate row asserted and
    // retracted), a gap split, a new tick, the break resolved.
    let second = TimestampCommit {
        time: 2,
        writer_epoch: epoch,
        reconciliation: ReconciliationCommit {
            valuations: vec![
                (valuation("10"), -1),
                (valuation("12"), 1),
                (valuation("11"), 1),
                (valuation("11"), -1),
            ],
            breaks: vec![(brk("1"), -1)],
            gaps: vec![(gap(2, 9), -1), (gap(2, 4), 1), (gap(6, 9), 1)],
            live_ticks: vec![(tick("10", 3), -1), (tick("12", 4), 1)],
            sequence_ranges: vec![],
            ..ReconciliationCommit::default()
        },
        ..TimestampCommit::default()
    };
    postgres::commit_timestamp(&mut client, &second, 100)
        .await
        .expect("commit 2");
    let price: String = client
        .query_one("SELECT price::text FROM valuations", &[])
        .await
        .expect("valuation")
        .get(0);
    assert_eq!(price, "12", "the row that stands, not the intermediate one");
    let breaks: i64 = client
        .query_one("SELECT count(*) FROM breaks", &[])
        .await
        .expect("breaks")
        .get(0);
    assert_eq!(breaks, 0);
    let events: i64 = client
        .query_one("SELECT count(*) FROM break_events", &[])
        .await
        .expect("events")
        .get(0);
    assert_eq!(events, 1);
    let snapshot = postgres::load_snapshot(&mut client)
        .await
        .expect("snapshot");
    let mut restored = snapshot.reconciliation;
    restored.sort();
    let mut expected = vec![
        Restored::Tick(
            SourceRef {
                partition: 2,
                offset: 4,
            },
            deltabook_dataflows::gate::PriceTick {
                security_id: "S".into(),
                price: d("12"),
                as_of: tick("12", 4).as_of,
                source: None,
            },
        ),
        Restored::Statement(
            statement.source,
            deltabook_dataflows::gate::Statement {
                account_id: "A".into(),
                book_id: "B".into(),
                security_id: "S".into(),
                quantity: statement.quantity,
                as_of_date: statement.as_of_date,
                source: None,
            },
        ),
        Restored::Sequences(SequenceState {
            account_id: "A".into(),
            min: 1,
            max: 10,
            gaps: vec![(2, 4), (6, 9)],
        }),
    ];
    expected.sort();
    assert_eq!(restored, expected);
}
