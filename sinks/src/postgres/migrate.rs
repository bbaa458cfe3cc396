//! Versioned migrations: each file under `migrations/` is applied once, in
//! order, in its own transaction, and recorded in `schema_migrations`.

use tokio_postgres::Client;

use super::PgError;

/// The migrations, in order: (version, SQL).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/0001_init.sql")),
    (
        2,
        include_str!("../../../migrations/0002_snapshot_and_fence.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/0003_byte_order_keys.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/0004_reconciliation.sql"),
    ),
];

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
