//! `deltabook`: the command line.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use deltabook::book_file;
use deltabook::generate::{self, GenerateConfig};
use deltabook::methods_file::parse_methods;
use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::runner::RunOptions;

/// mimalloc (glibc malloc spent ~40% of ingest time on the engine's small
/// strings), called as [`deltabook::allocator::EngineAlloc`] calls it. The
/// benchmarks count allocations in their own binary (`benches/`), so the
/// product pays nothing for it.
#[global_allocator]
static ALLOCATOR: deltabook::allocator::EngineAlloc = deltabook::allocator::EngineAlloc;

#[derive(Parser)]
#[command(
    name = "deltabook",
    version,
    about = "Incremental position keeping on differential dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Books a .jsonl file of trade events and writes lots.csv, positions.csv,
    /// rejected.jsonl and corrections.jsonl; with price ticks and custodian
    /// statements also valuations.csv, breaks.csv, gaps.csv,
    /// rejected_prices.jsonl and rejected_custodian.jsonl (those five are
    /// written on every run, empty when their inputs are absent).
    ///
    /// Interleaving: line i of each input file (trades, prices, custodian)
    /// is fed at engine timestamp 1 + (i-1)/batch_size, so timestamp t holds
    /// the t-th batch of every file. No output depends on it.
    #[command(verbatim_doc_comment)]
    Book {
        /// Trade events, one JSON object per line.
        #[arg(long)]
        trades: PathBuf,
        /// Price ticks, one JSON object per line (reconciliation.md).
        #[arg(long)]
        prices: Option<PathBuf>,
        /// Custodian statements, one JSON object per line (reconciliation.md).
        #[arg(long)]
        custodian: Option<PathBuf>,
        /// A break needs |internal - custodian| above this (absolute, digits[.digits]).
        #[arg(long, default_value = "0", value_parser = parse_tolerance)]
        tolerance: Dec8,
        /// Lot-method map: a JSON object {scope: "FIFO"|"LIFO"|"HIFO"}.
        #[arg(long)]
        methods: Option<PathBuf>,
        /// Output directory (optional with --query).
        #[arg(long, required_unless_present = "query")]
        out: Option<PathBuf>,
        /// A SQL query over the final tables (trades, lots, positions,
        /// valuations, breaks, gaps, corrections): its answer is printed to
        /// standard output as CSV.
        #[arg(long)]
        query: Option<String>,
        /// Lines per engine timestamp (>= 1).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        batch_size: u64,
        /// Worker threads (1-256).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
        /// Longest line in bytes; a longer one is rejected as not_json
        /// (with its length), never held whole. Default: the service's
        /// kafka.message_max_bytes.
        #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
        max_line_bytes: u64,
        /// Run as one process of a timely cluster: a file of `host:port`
        /// lines, one per process (timely's hostfile). Every process runs
        /// the same command over the same files with its own --process and
        /// the same --workers (threads per process); state is exchanged by
        /// key over TCP, and process 0 alone writes the outputs.
        #[arg(long, requires = "process")]
        hosts: Option<PathBuf>,
        /// This process's index in --hosts, from 0.
        #[arg(long, requires = "hosts")]
        process: Option<usize>,
    },
    /// Runs the real-time service: Kafka in, PostgreSQL and Kafka out.
    Run {
        /// Configuration file (default: the built-in config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides, `section.key=value` (after DELTABOOK_* environment variables).
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Log as JSON lines.
        #[arg(long)]
        json_logs: bool,
    },
    /// Sends a .jsonl file to the trades topic (key = position key).
    Produce {
        /// Trade events, one per line (key = position key).
        #[arg(long, required_unless_present_any = ["prices", "custodian"])]
        trades: Option<PathBuf>,
        /// Price ticks, one per line, to kafka.prices_topic (key = security_id).
        #[arg(long)]
        prices: Option<PathBuf>,
        /// Custodian statements, one per line, to kafka.custodian_topic (key = position key).
        #[arg(long)]
        custodian: Option<PathBuf>,
        /// Configuration file (default: the built-in config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides, `section.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// Recomputes lots, positions, valuations, breaks and gaps of a service
    /// database from its event store and persisted inputs with a batch run,
    /// compares them with the live tables, prints every difference and
    /// exits 1 on any.
    Verify {
        /// Configuration file (default: the built-in config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides, `section.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// Subscribes to a live SQL query of a running service (`POST /query`
    /// on its HTTP endpoint): a table redrawn as it changes on a terminal,
    /// JSON lines when piped.
    Query {
        /// The query (SELECT over trades, lots, positions, valuations,
        /// breaks, gaps, corrections).
        sql: String,
        /// Print the snapshot only, then exit.
        #[arg(long)]
        once: bool,
        /// Configuration file (its http.listen is the service to ask).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides, `section.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
    },
    /// Prints the corrections topic from the beginning, one event per line.
    Tail {
        /// Configuration file (default: the built-in config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides, `section.key=value`.
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 15)]
        timeout_seconds: u64,
    },
    /// Writes a synthetic stream of trade events.
    Generate {
        /// Random seed; the same seed gives the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of positions.
        #[arg(long, default_value_t = 100)]
        positions: usize,
        /// Number of lines.
        #[arg(long, default_value_t = 10_000)]
        trades: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Also write price ticks for the generated trades here.
        #[arg(long)]
        prices_out: Option<PathBuf>,
        /// Also write custodian statements for the generated trades here.
        #[arg(long)]
        custodian_out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let json_logs = matches!(
        cli.command,
        Command::Run {
            json_logs: true,
            ..
        }
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    let purge_delay = deltabook::allocator::configure();
    tracing::debug!(?purge_delay, "allocator purge delay");
    match cli.command {
        Command::Book {
            trades,
            prices,
            custodian,
            tolerance,
            methods,
            out,
            query,
            batch_size,
            workers,
            max_line_bytes,
            hosts,
            process,
        } => {
            // A batch job: its heap is all fresh memory (see the function's docs).
            let huge_pages = deltabook::allocator::disable_huge_pages();
            tracing::debug!(?huge_pages, "transparent huge pages");
            let methods = match methods {
                Some(path) => parse_methods(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                )?,
                None => Vec::new(),
            };
            let mut options = RunOptions::new(methods, batch_size as usize, usize::from(workers));
            options.max_event_bytes = max_line_bytes as usize;
            options.tolerance = tolerance;
            if let Some(sql) = &query {
                let plan = book_file::query_plan(sql, prices.is_some(), custodian.is_some())?;
                options.query = Some(std::sync::Arc::new(plan));
            }
            if let (Some(hosts), Some(process)) = (&hosts, process) {
                options.cluster = Some(deltabook::config::cluster_options(hosts, process)?);
            }
            // In a cluster, process 0 gathers every output and alone writes.
            let out = out.filter(|_| process.unwrap_or(0) == 0);
            if let Some(out) = &out {
                book_file::stream_corrections_to(&mut options, out)?;
            } else {
                options.keep_corrections = false;
            }
            let mut outcome =
                book_file::run_book(&trades, prices.as_deref(), custodian.as_deref(), &options)?;
            if let Some(process @ 1..) = process {
                eprintln!(
                    "process {process}: {} lines read; process 0 writes the outputs",
                    outcome.lines
                );
                return Ok(());
            }
            if let Some(out) = &out {
                book_file::write_outputs(&mut outcome, out)?;
            }
            eprint!("{}", book_file::summary(&outcome));
            if let Some(out) = &out {
                eprintln!("outputs        {}", out.display());
            }
            if let Some(answer) = &outcome.query {
                book_file::print_answer(answer)?;
            }
        }
        Command::Run {
            config,
            sets,
            json_logs: _,
        } => {
            let config = deltabook::config::Config::load(config.as_deref(), &sets)?;
            deltabook::service::run(config)?;
        }
        Command::Produce {
            trades,
            prices,
            custodian,
            config,
            sets,
        } => {
            let config = deltabook::config::Config::load(config.as_deref(), &sets)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(deltabook::kafka::ensure_topics(&config.kafka))?;
            let kafka = &config.kafka;
            let files: [(Option<PathBuf>, &str, ProduceFn); 3] = [
                (trades, &kafka.trades_topic, deltabook::kafka::produce_file),
                (
                    prices,
                    &kafka.prices_topic,
                    deltabook::kafka::produce_prices,
                ),
                (
                    custodian,
                    &kafka.custodian_topic,
                    deltabook::kafka::produce_statements,
                ),
            ];
            for (path, topic, produce) in files {
                let Some(path) = path else { continue };
                let started = std::time::Instant::now();
                let sent = produce(kafka, &path)?;
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "sent {sent} events to {topic} in {seconds:.2} s ({:.0} msgs/s)",
                    sent as f64 / seconds.max(1e-9)
                );
            }
        }
        Command::Verify { config, sets } => {
            let config = deltabook::config::Config::load(config.as_deref(), &sets)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(deltabook::verify::verify(&config))?;
            println!("replayed {} accepted events", report.events);
            for (diff, rows) in &report.tables {
                let bad = diff.only_stored.len() + diff.only_recomputed.len();
                println!(
                    "{:<14} {rows} rows, {}",
                    diff.table,
                    if bad == 0 {
                        "equal".to_string()
                    } else {
                        format!("{bad} differences")
                    }
                );
                for row in &diff.only_stored {
                    println!("  only in the table:      {row}");
                }
                for row in &diff.only_recomputed {
                    println!("  only in the recomputed: {row}");
                }
            }
            if report.clean() {
                println!("verify: clean");
            } else {
                println!("verify: DIFFERENCES");
                std::process::exit(1);
            }
        }
        Command::Query {
            sql,
            once,
            config,
            sets,
        } => {
            let config = deltabook::config::Config::load(config.as_deref(), &sets)?;
            deltabook::query_client::run(&config.http.listen, &sql, once)?;
        }
        Command::Tail {
            config,
            sets,
            timeout_seconds,
        } => {
            let config = deltabook::config::Config::load(config.as_deref(), &sets)?;
            deltabook::kafka::tail(
                &config.kafka,
                std::time::Duration::from_secs(timeout_seconds),
            )?;
        }
        Command::Generate {
            seed,
            positions,
            trades,
            out,
            prices_out,
            custodian_out,
        } => {
            let config = GenerateConfig::new(seed, positions, trades);
            let mut file = BufWriter::new(
                File::create(&out).with_context(|| format!("creating {}", out.display()))?,
            );
            let stats = generate::generate(&config, &mut file)?;
            std::io::Write::flush(&mut file)?;
            eprintln!(
                "wrote {} lines to {}: {stats:?}",
                stats.lines,
                out.display()
            );
            if prices_out.is_some() || custodian_out.is_some() {
                let text =
                    std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
                let lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let create = |path: &Option<PathBuf>| -> Result<Box<dyn std::io::Write>> {
                    Ok(match path {
                        Some(path) => Box::new(BufWriter::new(
                            File::create(path)
                                .with_context(|| format!("creating {}", path.display()))?,
                        )),
                        None => Box::new(std::io::sink()),
                    })
                };
                let mut prices = create(&prices_out)?;
                let mut custodian = create(&custodian_out)?;
                let stats = deltabook::market_data::generate_market_data(
                    &lines,
                    seed,
                    &mut prices,
                    &mut custodian,
                )?;
                prices.flush()?;
                custodian.flush()?;
                eprintln!(
                    "wrote {} ticks and {} statements",
                    stats.ticks, stats.statements
                );
            }
        }
    }
    Ok(())
}

/// `--tolerance`: a non-negative decimal, at most 8 places.
fn parse_tolerance(text: &str) -> Result<Dec8, String> {
    Dec8::parse(text).map_err(|e| {
        format!("{text:?} is not a decimal digits[.digits] with at most 8 places ({e})")
    })
}

/// A sender of one .jsonl file to its topic.
type ProduceFn = fn(&deltabook::config::KafkaConfig, &std::path::Path) -> Result<u64>;
