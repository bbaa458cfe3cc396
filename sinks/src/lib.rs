//! Output sinks of deltabook. Today: the reference output files of
//! `trades.md` and `corrections.md` (`lots.csv`, `positions.csv`,
//! `rejected.jsonl`, `corrections.jsonl`).

pub mod files;
