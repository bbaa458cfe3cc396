//! The `deltabook` binary's library half: sources, runtime wiring and the
//! synthetic data generator, kept here so tests and benchmarks reuse them.

pub mod allocator;
pub mod book_file;
pub mod config;
pub mod generate;
pub mod kafka;
pub mod line_blocks;
pub mod market_data;
pub mod methods_file;
pub mod query_client;
pub mod service;
pub mod verify;
