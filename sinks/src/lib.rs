//! Output sinks of deltabook: the reference output files of `trades.md`
//! and `corrections.md`, and PostgreSQL (event store, current state,
//! corrections outbox, dead letters, source progress).

pub mod files;
pub mod postgres;
