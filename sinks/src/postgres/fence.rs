//! The writer fence. The advisory lock (held by the service on its own
//! connection) makes a second instance wait; but a PostgreSQL restart drops
//! session locks, after which another instance can take the lock while the
//! first one still runs. So taking over also bumps the epoch in the
//! one-row `writer` table, and every per-timestamp transaction starts by
//! updating that row WHERE epoch is its own: an instance whose epoch is
//! stale can never commit again ([`super::PgError::Fenced`]).

use tokio_postgres::{Client, GenericClient, Transaction};

use super::PgError;

/// Becomes the writer: bumps the epoch and returns it. Call while holding
/// the advisory lock, after migrations.
pub async fn take_over(client: &Client) -> Result<i64, PgError> {
    let row = client
        .query_one(
            "UPDATE writer SET epoch = epoch + 1, taken_at = now() RETURNING epoch",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The current writer epoch (the last instance that took over).
pub async fn current_epoch(client: &impl GenericClient) -> Result<i64, PgError> {
    Ok(client
        .query_one("SELECT epoch FROM writer", &[])
        .await?
        .get(0))
}

/// The first statement of every commit: locks the writer row if `epoch` is
/// still current (records `time` as the last committed), or fails with
/// [`PgError::Fenced`].
pub(super) async fn check(tx: &Transaction<'_>, epoch: i64, time: u64) -> Result<(), PgError> {
    let updated = tx
        .execute(
            "UPDATE writer SET engine_time = $2 WHERE epoch = $1",
            &[&epoch, &(time as i64)],
        )
        .await?;
    if updated == 1 {
        return Ok(());
    }
    Err(PgError::Fenced {
        mine: epoch,
        current: current_epoch(tx).await?,
    })
}
