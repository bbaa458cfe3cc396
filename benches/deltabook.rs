//! deltabook's benchmarks: `cargo bench --bench deltabook -- <suite> [options]`.
//!
//! Each suite measures its baseline in the same process (these machines are
//! noisy) and prints markdown. This binary counts allocations (live and
//! peak bytes) with its own global allocator; the shipped `deltabook` binary
//! does not pay for that.
//!
//! Suites: `ingest`, `latency`, `all` (those two, no services), `ticks`
//! (price ticks into a book of N lots, no services), and, with
//! the services of `scripts/services.sh`: `e2e` (produce, backlog, steady
//! latency), `ticks-e2e` (ticks through the service: tick -> valuation row
//! committed), `restart` (restart time against history), `pg-writes` (binary
//! COPY against multi-row INSERT).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may stop on a broken setup

mod suites;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[global_allocator]
static ALLOCATOR: suites::alloc::CountingAlloc = suites::alloc::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "deltabook-bench",
    about = "deltabook's benchmarks, each with its baseline"
)]
struct Args {
    /// `ingest`, `gate`, `latency`, `ticks`, `all`, `e2e`, `restart`, `pg-writes` or `queries`.
    #[arg(default_value = "all")]
    suite: String,
    /// Lines of the ingest benchmark; trades of e2e's produce and backlog
    /// phases; events of pg-writes; lots of the ticks benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    trades: usize,
    /// latency: position sizes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,1000000"
    )]
    ks: Vec<u64>,
    /// latency: lot methods to measure (`fifo`, `lifo`, `hifo`); the
    /// plain-reduce baseline runs only when `fifo` is among them.
    #[arg(long, value_delimiter = ',', default_value = "fifo,lifo,hifo")]
    methods: Vec<String>,
    /// latency: fewer samples (a smoke run).
    #[arg(long)]
    quick: bool,
    /// e2e: steady produce rate of the latency phase (trades/s).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// e2e: seconds of the latency phase.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// e2e, restart: service configuration to start from (default: built in).
    #[arg(long)]
    config: Option<PathBuf>,
    /// e2e: worker counts of the backlog phase (one process each).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// e2e: cluster shapes of the backlog phase as PROCESSESxWORKERS
    /// (e.g. 1x1,1x2,2x1); when given, instead of --workers.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// e2e: the phases to run.
    #[arg(long, value_delimiter = ',', default_value = "produce,backlog,steady")]
    phases: Vec<String>,
    /// restart: accepted events of each history.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,5000000")]
    histories: Vec<u64>,
    /// Where generated inputs are kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // The engine's allocator settings, as the shipped binary runs them.
    let purge = deltabook::allocator::configure();
    eprintln!("allocator purge delay: {purge:?}");
    let suite = args.suite.as_str();
    let known = [
        "ingest",
        "gate",
        "latency",
        "ticks",
        "ticks-e2e",
        "all",
        "e2e",
        "restart",
        "pg-writes",
        "queries",
    ];
    anyhow::ensure!(
        known.contains(&suite),
        "unknown suite {suite:?}: one of {}",
        known.join(", ")
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    if suite == "ingest" || suite == "all" {
        suites::ingest::run_suite(&args.data_dir, args.trades)?;
    }
    if suite == "queries" {
        suites::queries::run_suite(&args.data_dir, args.trades)?;
    }
    if suite == "gate" || suite == "all" {
        suites::gate::run_suite(&args.data_dir, args.trades)?;
    }
    if suite == "latency" || suite == "all" {
        anyhow::ensure!(!args.ks.is_empty(), "--ks needs at least one size");
        let methods = args
            .methods
            .iter()
            .map(|m| {
                deltabook_dataflows::trade::LotMethod::parse(&m.to_ascii_uppercase())
                    .ok_or_else(|| anyhow::anyhow!("unknown lot method {m:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        suites::latency::run_suite(&args.ks, &methods, args.quick);
    }
    if suite == "ticks" {
        suites::ticks::run_suite(args.trades as u64);
    }
    if suite == "ticks-e2e" {
        suites::ticks_e2e::run_suite(
            args.config.as_deref(),
            args.trades as u64,
            args.rate,
            args.seconds,
        )?;
    }
    if suite == "e2e" {
        let options = suites::e2e::E2eOptions {
            trades: args.trades,
            rate: args.rate,
            seconds: args.seconds,
            shapes: suites::e2e::shapes(&args.shapes, &args.workers)?,
            phases: args.phases,
        };
        suites::e2e::run_suite(args.config.as_deref(), &args.data_dir, &options)?;
    }
    if suite == "restart" {
        suites::restart::run_suite(args.config.as_deref(), &args.histories)?;
    }
    if suite == "pg-writes" {
        suites::pg_writes::run_suite(args.trades)?;
    }
    Ok(())
}
