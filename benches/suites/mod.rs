//! The benchmark suites, each against a baseline measured in the same
//! process: ingest throughput and memory, single-trade correction latency,
//! and, with the services of scripts/services.sh, the service end to end,
//! restart time against history, and bulk writes.

pub mod alloc;
pub mod cpu;
pub mod e2e;
pub mod gate;
pub mod ingest;
pub mod latency;
pub mod pg_writes;
pub mod queries;
pub mod restart;
pub mod ticks;
pub mod ticks_e2e;

/// Percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted samples.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    percentile(samples, 50.0)
}
