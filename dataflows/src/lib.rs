//! Pure dataflow logic of deltabook: the validation gate, live trade
//! versions, lot booking, position summaries and correction events.
//! Nothing in this crate performs I/O, so all of it is testable in memory.

pub mod booking;
pub mod calendar;
pub mod correction;
pub mod correction_merge;
pub mod decimal;
pub mod driver;
pub mod engine;
pub mod gate;
pub mod id;
mod id_slots;
mod ordered;
pub mod payload;
pub mod position;
mod prefetch;
pub mod query;
pub mod reconcile;
pub mod runner;
mod shared_events;
pub mod sorted;
pub mod trade;
