//! Runs the engine over a finite, ordered sequence of events in N worker
//! threads and returns the final state and event log, merged over workers.
//! The caller supplies the events (a file reader, a vector in a test), so
//! this module performs no I/O itself. The events are read ONCE, by one
//! reader thread, which cuts them into batches (one engine timestamp each)
//! and hands them to the workers through bounded channels, so a pipe or
//! FIFO is never split between workers and the file is scanned once. A
//! batch's trade events are shared by the workers, each taking chunks of
//! them as it has time (`shared_events.rs`).

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::correction::Correction;
use crate::correction_merge::{CorrectionMerge, MergeMessage};
use crate::decimal::Dec8;
use crate::driver::{Capture, Driver, DriverOptions, TimestampOutput};
use crate::engine::{DeadLetter, Diff, Fault, RawEvent, SourceRef, Time, TradeEvent};
use crate::gate::{RejectKind, Rejection};
use crate::id::Id;
use crate::payload::Payload;
use crate::position::{Lot, PositionSummary};
use crate::query::{compare_rows, render, EvalError, Plan, Row, TableSet, Tables};
use crate::reconcile::{BreakRow, GapRow, ValuationRow};
use crate::shared_events::{EventChunk, SharedEvents, SharedEventsBuilder, CHUNK_LINES};
use crate::trade::LotMethod;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::Scope;

/// Timestamps a worker may run ahead of its slowest output before it waits.
const MAX_BATCHES_IN_FLIGHT: u64 = 4;

/// Most worker threads a run may ask for (the CLI and the service check it too).
pub const MAX_WORKERS: usize = 256;

/// Batches queued per worker between the reader and the worker.
const BATCHES_QUEUED_PER_WORKER: usize = 2;

/// Messages queued from the workers to the correction writer: a slow
/// writer holds the workers back instead of growing memory.
const MERGE_MESSAGES_QUEUED: usize = 64;

/// Where a run writes corrections as it goes (instead of keeping them in
/// the outcome). Called on a thread of the runner's own.
pub trait CorrectionWriter: Send {
    /// One engine timestamp's corrections, sorted by position key; the
    /// timestamps come in order, so the calls together are exactly the
    /// order of `corrections.jsonl`.
    fn write(&mut self, corrections: &[Correction]) -> Result<(), String>;
    /// The run has ended: every correction was written.
    fn finish(&mut self) -> Result<(), String>;
}

/// A [`CorrectionWriter`] handed to a run through [`RunOptions`] (which
/// is cloned, so the writer sits behind a shared slot that the run empties).
#[derive(Clone)]
pub struct CorrectionStream(Arc<Mutex<Option<Box<dyn CorrectionWriter>>>>);

impl CorrectionStream {
    /// A stream into `writer`, for one run.
    pub fn new(writer: impl CorrectionWriter + 'static) -> CorrectionStream {
        CorrectionStream(Arc::new(Mutex::new(Some(Box::new(writer)))))
    }

    fn take(&self) -> Option<Box<dyn CorrectionWriter>> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl std::fmt::Debug for CorrectionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CorrectionStream")
    }
}

/// How to run the engine over a sequence of events.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Lot-method map, applied before the first event.
    pub methods: Vec<(String, LotMethod)>,
    /// Later changes of the lot-method map, each applied at the timestamp of
    /// the batch that holds event number `at_event` (counted from 1), before it.
    pub method_changes: Vec<MethodChange>,
    /// Keep every correction in the outcome (otherwise only count them).
    pub keep_corrections: bool,
    /// Write corrections through this as timestamps complete, instead of
    /// keeping them (then `keep_corrections` is ignored).
    pub stream_corrections: Option<CorrectionStream>,
    /// Called by worker 0 once every event is processed, before the dataflow
    /// is torn down; its result lands in [`BookOutcome::probe_at_end`]
    /// (benchmarks read the allocator's live bytes here).
    pub probe_at_end: Option<fn() -> u64>,
    /// Lines per engine timestamp (>= 1).
    pub batch_size: usize,
    /// Longest event; longer ones are rejected as `not_json` unread.
    pub max_event_bytes: usize,
    /// Timely worker threads (>= 1).
    pub workers: usize,
    /// A break needs |difference| > this (`--tolerance`, default 0).
    pub tolerance: Dec8,
    /// A query answered over the final state ([`BookOutcome::query`]).
    pub query: Option<Arc<Plan>>,
    /// A custom dataflow attached beside the engine from the start.
    pub attach: Option<Attach>,
    /// Run as one process of a timely cluster (`workers` threads in each).
    pub cluster: Option<ClusterOptions>,
}

/// One process of a cluster run: every process runs the same command
/// over the same input with the same `workers`, and reads the input's
/// events for its own workers only (event i goes to worker
/// (i-1) % (processes x workers) of the cluster; a process's workers share
/// its trade events). Every output is
/// gathered on worker 0, so process 0's outcome is the whole run's and
/// the others' is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, in process order (timely's hostfile).
    pub addresses: Vec<String>,
}

/// Timely's configuration for `workers` threads: one process, or one
/// process of `cluster` (TCP to the others).
pub fn timely_config(workers: usize, cluster: Option<&ClusterOptions>) -> timely::Config {
    match cluster {
        None => timely::Config::process(workers),
        Some(cluster) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: cluster.process,
                addresses: cluster.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    }
}

/// A custom dataflow for every worker, built beside the engine before the
/// first event: the closure gets a scope of its own and the engine's named
/// tables ([`Tables`]), imports what it reads (`trace.import(scope)`) and
/// sees every change of them, at the engine's timestamps. It must build
/// the same dataflow on every worker (timely's rule); each worker's import
/// holds that worker's part of a table.
#[derive(Clone)]
pub struct Attach {
    tables: TableSet,
    build: Arc<AttachFn>,
}

/// The closure of an [`Attach`].
pub type AttachFn = dyn for<'scope> Fn(Scope<'scope, Time>, &mut Tables) + Send + Sync;

impl Attach {
    /// `build`, which reads `tables` (only those are shared with it).
    pub fn new(
        tables: TableSet,
        build: impl for<'scope> Fn(Scope<'scope, Time>, &mut Tables) + Send + Sync + 'static,
    ) -> Attach {
        Attach {
            tables,
            build: Arc::new(build),
        }
    }
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attach")
    }
}

/// A change of one scope of the lot-method map during a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodChange {
    /// Applied just before this event (1-based).
    pub at_event: u64,
    /// Account, `account_book` or position key.
    pub scope: String,
    /// The new method, or `None` to remove the override.
    pub method: Option<LotMethod>,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad options.
    #[error("invalid run options: {0}")]
    Options(&'static str),
    /// A worker failed (its message).
    #[error("worker failed: {0}")]
    Worker(String),
    /// An output row ended with a multiplicity other than 0 or 1 (an engine bug).
    #[error("output row {0} has multiplicity {1}")]
    Multiplicity(String, isize),
    /// The correction writer failed (its message).
    #[error("writing corrections: {0}")]
    Corrections(String),
}

/// The default longest event, in bytes (the service's `kafka.message_max_bytes`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// One event of a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceLine {
    /// The event's bytes (a line without its newline), shared with the
    /// block the source read them in.
    Event(Payload),
    /// An event longer than the limit: only its length was kept (it is
    /// rejected as `not_json`, never held whole).
    TooLong(u64),
}

/// The events of a run: `events()` yields every event in arrival order; it
/// is called once per run.
pub trait EventSource: Send + Sync + 'static {
    /// A pass over all events; an event longer than `max_bytes` comes as
    /// [`SourceLine::TooLong`]. An `Err` ends the run with that message.
    fn events(&self, max_bytes: usize)
        -> Box<dyn Iterator<Item = Result<SourceLine, String>> + '_>;
}

impl EventSource for Vec<Vec<u8>> {
    fn events(
        &self,
        max_bytes: usize,
    ) -> Box<dyn Iterator<Item = Result<SourceLine, String>> + '_> {
        Box::new(self.iter().map(move |e| {
            Ok(if e.len() > max_bytes {
                SourceLine::TooLong(e.len() as u64)
            } else {
                SourceLine::Event(Payload::from(e.as_slice()))
            })
        }))
    }
}

/// Called by worker 0 after each batch with the number of events read so far.
pub type ProgressFn = Box<dyn FnMut(u64) + Send>;

/// The final state and event log of a run, merged over workers.
#[derive(Debug, Default)]
pub struct BookOutcome {
    /// Open lots.
    pub lots: Vec<(Id, Lot)>,
    /// Position summaries (omitted positions included).
    pub positions: Vec<(Id, PositionSummary)>,
    /// Every correction event (empty when they were streamed).
    pub corrections: Vec<Correction>,
    /// True when the corrections went to [`RunOptions::stream_corrections`].
    pub corrections_streamed: bool,
    /// Every rejected line.
    pub rejected: Vec<DeadLetter>,
    /// Positions that overflowed.
    pub faults: Vec<Fault>,
    /// Rows of `valuations.csv`.
    pub valuations: Vec<ValuationRow>,
    /// Rows of `breaks.csv`.
    pub breaks: Vec<BreakRow>,
    /// Rows of `gaps.csv`.
    pub gaps: Vec<GapRow>,
    /// Every rejected price-tick line.
    pub rejected_prices: Vec<DeadLetter>,
    /// Every rejected custodian-statement line.
    pub rejected_custodian: Vec<DeadLetter>,
    /// Lines read.
    pub lines: u64,
    /// Exact duplicates acknowledged.
    pub duplicates: u64,
    /// Correction events emitted (kept or not).
    pub correction_count: u64,
    /// What `RunOptions::probe_at_end` returned.
    pub probe_at_end: Option<u64>,
    /// Wall time of the dataflow run.
    pub elapsed: Duration,
    /// The answer to [`RunOptions::query`].
    pub query: Option<QueryAnswer>,
}

/// A query's answer over a run's final state.
#[derive(Debug, Default)]
pub struct QueryAnswer {
    /// Output column names.
    pub columns: Vec<String>,
    /// Rows (a row held n times is listed n times), in ORDER BY order,
    /// ties and the rest byte-wise by their CSV line.
    pub rows: Vec<Row>,
    /// Evaluation errors met (an answer with errors is not an answer).
    pub errors: Vec<String>,
    /// Seconds from attaching the query to its complete answer.
    pub seconds: f64,
    /// Seconds from attaching the query to its first answer row (on any
    /// worker); `None` for an empty answer.
    pub first_row_seconds: Option<f64>,
}

impl RunOptions {
    /// Initial methods, `batch_size` and `workers`; corrections kept; no method changes.
    pub fn new(methods: Vec<(String, LotMethod)>, batch_size: usize, workers: usize) -> RunOptions {
        RunOptions {
            methods,
            method_changes: Vec::new(),
            keep_corrections: true,
            stream_corrections: None,
            probe_at_end: None,
            batch_size,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            workers,
            tolerance: Dec8::ZERO,
            query: None,
            attach: None,
            cluster: None,
        }
    }
}

/// One worker's captured outputs, folded as its timestamps complete.
#[derive(Default)]
struct Captured {
    lots: HashMap<(Id, Lot), isize>,
    positions: HashMap<(Id, PositionSummary), isize>,
    /// The lots and positions read from the books at the end, where they
    /// were not captured as changes (`ClosedDriver::final_tables`).
    final_lots: Vec<(Id, Lot)>,
    final_positions: Vec<(Id, PositionSummary)>,
    valuations: HashMap<ValuationRow, isize>,
    breaks: HashMap<BreakRow, isize>,
    gaps: HashMap<GapRow, isize>,
    rejected_prices: Vec<DeadLetter>,
    rejected_custodian: Vec<DeadLetter>,
    corrections: Vec<Correction>,
    correction_count: u64,
    rejected: Vec<DeadLetter>,
    faults: Vec<Fault>,
    duplicates: u64,
    probe_at_end: Option<u64>,
    query_rows: Vec<(Row, Diff)>,
    query_errors: Vec<(EvalError, Diff)>,
    query_seconds: f64,
    query_first_row_seconds: Option<f64>,
}

impl Captured {
    /// Lots and positions that leave the booking stage as changes are
    /// summed into this worker's final state (as the stage emitted them,
    /// [`DriverOptions::final_state_only`], or consolidated and gathered in
    /// a cluster run); the others are read from the books at the end.
    fn fold(&mut self, output: TimestampOutput, keep_corrections: bool) {
        add_updates(&mut self.lots, output.lots);
        add_updates(&mut self.positions, output.positions);
        add_updates(&mut self.valuations, output.valuations);
        add_updates(&mut self.breaks, output.breaks);
        add_updates(&mut self.gaps, output.gaps);
        self.rejected_prices.extend(output.rejected_prices);
        self.rejected_custodian.extend(output.rejected_custodian);
        self.correction_count += output.correction_count;
        if keep_corrections {
            self.corrections.extend(output.corrections);
        }
        self.rejected.extend(output.dead_letters);
        self.faults.extend(output.faults);
        self.duplicates += output.duplicates.len() as u64;
    }
}

/// Which inputs beside trades a run has (the parts of reconciliation to build).
#[derive(Clone, Copy, Debug)]
struct InputKinds {
    prices: bool,
    statements: bool,
}

/// One input's lines in a batch.
#[derive(Default)]
struct Lines {
    events: Vec<RawEvent>,
    /// Events over the length limit: (where, length).
    too_long: Vec<(SourceRef, u64)>,
}

/// Where line `line_no` (counted from 1) of a file is.
fn line_source(line_no: u64) -> SourceRef {
    SourceRef {
        partition: 0,
        offset: line_no,
    }
}

impl Lines {
    fn push(&mut self, line_no: u64, line: SourceLine) {
        let source = line_source(line_no);
        match line {
            SourceLine::Event(bytes) => self.events.push((source, bytes)),
            SourceLine::TooLong(length) => self.too_long.push((source, length)),
        }
    }
}

/// One engine timestamp's share of the input for one worker.
#[derive(Default)]
struct Batch {
    time: Time,
    /// The timestamp's trade events, shared by this process's workers
    /// (each takes chunks of them, [`SharedEvents`]).
    trades: Arc<SharedEvents>,
    /// Trade lines over the length limit: (where, length).
    trades_too_long: Vec<(SourceRef, u64)>,
    prices: Lines,
    statements: Lines,
    /// Lot-method changes at this time (worker 0 only).
    methods: Vec<(Id, Option<LotMethod>)>,
}

/// The inputs of `reconciliation.md` beside trades, for a run that has them.
#[derive(Clone, Default)]
pub struct ExtraSources {
    /// Price ticks, one JSON object per event.
    pub prices: Option<Arc<dyn EventSource>>,
    /// Custodian statements, one JSON object per event.
    pub custodian: Option<Arc<dyn EventSource>>,
}

/// Runs the engine over `source`, `batch_size` events per engine timestamp
/// (event i, counted from 1, at time 1 + (i-1)/batch_size), and returns the
/// merged outcome. The initial lot-method map is at time 0. The result does
/// not depend on `workers`.
pub fn run<S: EventSource>(
    source: Arc<S>,
    options: &RunOptions,
    progress: Option<ProgressFn>,
) -> Result<BookOutcome, RunError> {
    run_with(source, ExtraSources::default(), options, progress)
}

/// [`run`] with price ticks and custodian statements beside the trades:
/// line i of each input is at engine timestamp 1 + (i-1)/batch_size.
pub fn run_with<S: EventSource>(
    source: Arc<S>,
    extra: ExtraSources,
    options: &RunOptions,
    progress: Option<ProgressFn>,
) -> Result<BookOutcome, RunError> {
    if options.batch_size == 0 {
        return Err(RunError::Options("batch_size must be at least 1"));
    }
    if !(1..=MAX_WORKERS).contains(&options.workers) {
        return Err(RunError::Options("workers must be between 1 and 256"));
    }
    if options.max_event_bytes == 0 {
        return Err(RunError::Options("max_event_bytes must be at least 1"));
    }
    if let Some(cluster) = &options.cluster {
        if cluster.process >= cluster.addresses.len() {
            return Err(RunError::Options(
                "the process index must be below the number of hosts",
            ));
        }
        if options.query.is_some() || options.attach.is_some() {
            return Err(RunError::Options(
                "queries and attached dataflows run in one process (no --hosts)",
            ));
        }
    }
    let started = Instant::now();
    let workers = options.workers;
    let inputs = InputKinds {
        prices: extra.prices.is_some(),
        statements: extra.custodian.is_some(),
    };
    let mut senders = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = sync_channel::<Batch>(BATCHES_QUEUED_PER_WORKER);
        senders.push(tx);
        receivers.push(Some(rx));
    }
    let receivers = Arc::new(Mutex::new(receivers));
    let reader = {
        let options = options.clone();
        std::thread::Builder::new()
            .name("deltabook-reader".into())
            .spawn(move || read_batches(source.as_ref(), &extra, &options, senders, progress))
            .map_err(|e| RunError::Worker(format!("starting the reader: {e}")))?
    };
    let writer = options
        .stream_corrections
        .as_ref()
        .and_then(CorrectionStream::take);
    let streamed = writer.is_some();
    let (merge_tx, merger) = match writer {
        Some(writer) => {
            let (tx, rx) = sync_channel::<MergeMessage>(MERGE_MESSAGES_QUEUED);
            let merger = std::thread::Builder::new()
                .name("deltabook-corrections".into())
                .spawn(move || write_merged(rx, workers, writer))
                .map_err(|e| RunError::Worker(format!("starting the correction writer: {e}")))?;
            (Some(tx), Some(merger))
        }
        None => (None, None),
    };
    let query = options.query.clone();
    let options = options.clone();
    let config = timely_config(workers, options.cluster.as_ref());
    // The closure owns the one sender kept here, so the writer sees its
    // channel close once every worker is done.
    let guards = timely::execute(config, move |worker| -> Result<Captured, String> {
        // Receivers are this process's (worker indices are the cluster's).
        let index = worker.index() % workers;
        let merge_tx = merge_tx.clone();
        let input = receivers
            .lock()
            .map_err(|_| "input lock poisoned".to_string())?
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| format!("no input for worker {index}"))?;
        run_worker(worker, input, &options, inputs, merge_tx)
    })
    .map_err(RunError::Worker)?;

    let mut outcome = BookOutcome::default();
    let mut lots: HashMap<(Id, Lot), isize> = HashMap::default();
    let mut positions: HashMap<(Id, PositionSummary), isize> = HashMap::default();
    let mut valuations: HashMap<ValuationRow, isize> = HashMap::default();
    let mut breaks: HashMap<BreakRow, isize> = HashMap::default();
    let mut gaps: HashMap<GapRow, isize> = HashMap::default();
    let mut query_rows: HashMap<Row, isize> = HashMap::default();
    let mut query_errors: HashMap<EvalError, isize> = HashMap::default();
    let mut query_seconds = 0.0f64;
    let mut query_first_row: Option<f64> = None;
    let mut failure = None;
    for result in guards.join() {
        let captured = match result
            .map_err(RunError::Worker)
            .and_then(|r| r.map_err(RunError::Worker))
        {
            Ok(c) => c,
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        add_counts(&mut lots, captured.lots);
        add_counts(&mut positions, captured.positions);
        // Read from each worker's books: disjoint (a position is booked
        // by one worker), so they are only joined.
        outcome.lots.extend(captured.final_lots);
        outcome.positions.extend(captured.final_positions);
        add_counts(&mut valuations, captured.valuations);
        add_counts(&mut breaks, captured.breaks);
        add_counts(&mut gaps, captured.gaps);
        outcome.rejected_prices.extend(captured.rejected_prices);
        outcome
            .rejected_custodian
            .extend(captured.rejected_custodian);
        outcome.corrections.extend(captured.corrections);
        outcome.rejected.extend(captured.rejected);
        outcome.faults.extend(captured.faults);
        outcome.duplicates += captured.duplicates;
        outcome.correction_count += captured.correction_count;
        outcome.probe_at_end = outcome.probe_at_end.or(captured.probe_at_end);
        for (row, diff) in captured.query_rows {
            *query_rows.entry(row).or_insert(0) += diff;
        }
        for (error, diff) in captured.query_errors {
            *query_errors.entry(error).or_insert(0) += diff;
        }
        query_seconds = query_seconds.max(captured.query_seconds);
        if let Some(first) = captured.query_first_row_seconds {
            query_first_row = Some(query_first_row.map_or(first, |f: f64| f.min(first)));
        }
    }
    let read = reader
        .join()
        .map_err(|_| RunError::Worker("the reader panicked".into()))?;
    // A read error explains a worker failure (its input ended early), so it comes first.
    outcome.lines = read.map_err(RunError::Worker)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(merger) = merger {
        merger
            .join()
            .map_err(|_| RunError::Corrections("the correction writer panicked".into()))?
            .map_err(RunError::Corrections)?;
    }
    outcome.corrections_streamed = streamed;
    outcome.lots.extend(consolidate(lots)?);
    outcome.positions.extend(consolidate(positions)?);
    outcome.valuations = consolidate(valuations)?;
    outcome.breaks = consolidate(breaks)?;
    outcome.gaps = consolidate(gaps)?;
    if let Some(plan) = &query {
        let mut answer = query_answer(plan, query_rows, query_errors, query_seconds)?;
        answer.first_row_seconds = query_first_row;
        outcome.query = Some(answer);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// The reader: every event once, cut into batches. A batch's trade events
/// are shared by this process's workers in chunks ([`SharedEvents`]), which
/// the reader parses too when the workers leave a core free; of the
/// other lines (prices, statements, over-long trade lines) event i goes to
/// worker (i-1) % workers; method changes go to worker 0. Timestamp t holds lines
/// (t-1)*batch_size+1 ..= t*batch_size of each input (trades, prices,
/// custodian statements). Returns the trade events read.
fn read_batches<S: EventSource + ?Sized>(
    source: &S,
    extra: &ExtraSources,
    options: &RunOptions,
    senders: Vec<SyncSender<Batch>>,
    mut progress: Option<ProgressFn>,
) -> Result<u64, String> {
    let workers = senders.len();
    // With a core the workers leave free, the reader parses too: a batch
    // it has sent, from its last chunk back to where the workers have got.
    // One worker on two cores then books ~25% more lines a second; with
    // as many workers as cores it only takes their time
    // (docs/bench/insert-order-and-read-ahead-2026-12-03.md).
    let read_ahead = std::thread::available_parallelism().map_or(1, |n| n.get()) > workers;
    // This process's workers are [base, base + workers) of `total`.
    let (base, total) = match &options.cluster {
        None => (0, workers),
        Some(cluster) => (cluster.process * workers, cluster.addresses.len() * workers),
    };
    let local = |line_no: u64| {
        let global = ((line_no - 1) % total as u64) as usize;
        global.checked_sub(base).filter(|i| *i < workers)
    };
    let mut pending_changes: Vec<&MethodChange> = options.method_changes.iter().collect();
    pending_changes.sort_by_key(|c| std::cmp::Reverse(c.at_event));
    let new_batches = |time: Time| -> Vec<Batch> {
        (0..workers)
            .map(|_| Batch {
                time,
                ..Batch::default()
            })
            .collect()
    };
    let send = |batches: Vec<Batch>| -> bool {
        batches
            .into_iter()
            .zip(&senders)
            .all(|(batch, tx)| tx.send(batch).is_ok())
    };
    let max = options.max_event_bytes;
    let mut trades = source.events(max).fuse();
    let mut prices = extra.prices.as_ref().map(|s| s.events(max).fuse());
    let mut statements = extra.custodian.as_ref().map(|s| s.events(max).fuse());
    let mut counts = [0u64; 3];
    let mut time: Time = 1;
    let mut trade_events = SharedEventsBuilder::new(CHUNK_LINES);
    loop {
        let mut batches = new_batches(time);
        let mut any = false;
        for _ in 0..options.batch_size {
            let Some(event) = trades.next() else { break };
            let event = event?;
            any = true;
            counts[0] += 1;
            let line_no = counts[0];
            while pending_changes
                .last()
                .is_some_and(|c| c.at_event <= line_no)
            {
                if let Some(change) = pending_changes.pop() {
                    // Worker 0 of the cluster applies every method change.
                    if base == 0 {
                        batches[0]
                            .methods
                            .push((Id::from(change.scope.as_str()), change.method));
                    }
                }
            }
            if let Some(i) = local(line_no) {
                match event {
                    SourceLine::Event(bytes) => trade_events.push((line_source(line_no), bytes)),
                    SourceLine::TooLong(length) => batches[i]
                        .trades_too_long
                        .push((line_source(line_no), length)),
                }
            }
        }
        for (kind, lines) in [(1, prices.as_mut()), (2, statements.as_mut())] {
            let Some(lines) = lines else { continue };
            for _ in 0..options.batch_size {
                let Some(event) = lines.next() else { break };
                let event = event?;
                any = true;
                counts[kind] += 1;
                let line_no = counts[kind];
                // An over-long tick or statement changes no state and is
                // reported where it is read: by process 0 in a cluster.
                let owner = match event {
                    SourceLine::TooLong(_) => (base == 0).then_some(0),
                    SourceLine::Event(_) => local(line_no),
                };
                let Some(i) = owner else { continue };
                let batch = &mut batches[i];
                match kind {
                    1 => batch.prices.push(line_no, event),
                    _ => batch.statements.push(line_no, event),
                }
            }
        }
        if !any && batches.iter().all(|b| b.methods.is_empty()) {
            break;
        }
        let shared = Arc::new(trade_events.finish());
        for batch in &mut batches {
            batch.trades = Arc::clone(&shared);
        }
        if !send(batches) {
            return Err("a worker stopped early".into());
        }
        if read_ahead {
            shared.read_ahead();
        }
        if let Some(report) = progress.as_mut() {
            report(counts[0]);
        }
        time += 1;
    }
    Ok(counts[0])
}

/// Longest a waiting worker sleeps before it looks again (a message from
/// another worker wakes it sooner).
const WAIT_PARK: Duration = Duration::from_millis(1);

/// One step of a worker that waits for the dataflow (its own in-flight
/// timestamps, or another worker's part): it parks when it has nothing to
/// do instead of spinning, leaving the core to the workers, the reader and
/// the correction writer it waits for.
fn wait_step(worker: &mut timely::worker::Worker) {
    worker.step_or_park(Some(WAIT_PARK));
}

/// One worker: feeds its batches to the engine and folds each completed
/// timestamp's outputs.
fn run_worker(
    worker: &mut timely::worker::Worker,
    input: Receiver<Batch>,
    options: &RunOptions,
    inputs: InputKinds,
    merge_tx: Option<SyncSender<MergeMessage>>,
) -> Result<Captured, String> {
    let mut captured = Captured::default();
    let keep = options.keep_corrections && merge_tx.is_none();
    // The correction writer counts this process's workers.
    let index = worker.index() % options.workers;
    let gather = options.cluster.is_some();
    // Hands a completed timestamp's corrections to the writer (when
    // streaming), then folds the rest. A closed channel means the writer
    // failed; the run reports its error.
    let fold = |captured: &mut Captured,
                completed: Vec<(Time, TimestampOutput)>,
                through: Option<Time>| {
        for (time, mut output) in completed {
            if let Some(tx) = &merge_tx {
                let corrections = std::mem::take(&mut output.corrections);
                if !corrections.is_empty() {
                    let _ = tx.send(MergeMessage::Corrections(time, corrections));
                }
            }
            captured.fold(output, keep);
        }
        if let Some(tx) = &merge_tx {
            let _ = tx.send(MergeMessage::Through(index, through));
        }
    };
    let mut driver = Driver::with_options(
        worker,
        0,
        if keep || merge_tx.is_some() {
            Capture::StateOnly
        } else {
            Capture::StateCountingCorrections
        },
        DriverOptions {
            tolerance: options.tolerance,
            prices: inputs.prices,
            statements: inputs.statements,
            // A cluster gathers every output on worker 0, lots and
            // positions as they change (the final read is per worker).
            final_state_only: !gather,
            gather,
            share_tables: options
                .query
                .as_ref()
                .map_or(TableSet::NONE, |plan| plan.tables())
                .union(options.attach.as_ref().map_or(TableSet::NONE, |a| a.tables)),
        },
    );
    if let Some(known_at) = options.query.as_ref().and_then(|p| p.as_of.known_at) {
        driver.keep_history_from(known_at);
    }
    if let Some(attach) = &options.attach {
        let mut tables = driver.tables();
        worker.dataflow::<Time, _, _>(|scope| (attach.build)(scope, &mut tables));
    }
    if worker.index() == 0 {
        for (scope, method) in &options.methods {
            driver.set_method(scope, Some(*method));
        }
    }
    driver.advance_to(1);
    while let Ok(batch) = input.recv() {
        if batch.time < driver.time() {
            return Err(format!("batch time {} after {}", batch.time, driver.time()));
        }
        driver.advance_to(batch.time);
        for (scope, method) in &batch.methods {
            driver.set_method(scope, *method);
        }
        // Chunks of the timestamp's trade events, the dataflow stepped
        // after each: a worker behind on the positions it owns takes fewer.
        while let Some(chunk) = batch.trades.take() {
            match chunk {
                EventChunk::Raw(events) => {
                    let mut read: Vec<TradeEvent> =
                        events.into_iter().map(TradeEvent::parse).collect();
                    driver.send_read_batch(&mut read);
                }
                EventChunk::Read(mut events) => driver.send_read_batch(&mut events),
            }
            worker.step();
        }
        for (source, length) in batch.trades_too_long {
            driver.reject(
                source,
                too_long(length, options.max_event_bytes),
                Vec::new(),
            );
        }
        for (source, payload) in batch.prices.events {
            driver.send_price(source, payload);
        }
        for (source, payload) in batch.statements.events {
            driver.send_statement(source, payload);
        }
        // Over-long ticks and statements are rejected here: they change no state.
        let limit = options.max_event_bytes;
        for (lines, rejected) in [
            (batch.prices.too_long, &mut captured.rejected_prices),
            (batch.statements.too_long, &mut captured.rejected_custodian),
        ] {
            rejected.extend(lines.into_iter().map(|(source, length)| DeadLetter {
                source,
                reason: too_long(length, limit),
                payload: Vec::new(),
            }));
        }
        driver.advance_to(batch.time + 1);
        worker.step();
        while driver.less_than((batch.time + 1).saturating_sub(MAX_BATCHES_IN_FLIGHT)) {
            wait_step(worker);
        }
        let completed = driver.take_completed();
        fold(&mut captured, completed, driver.frontier());
    }
    if let Some(measure) = options.probe_at_end {
        // Let every worker catch up on all events while the dataflow still
        // holds its state, then measure (worker 0 only).
        let end = driver.time() + 1;
        driver.advance_to(end);
        while driver.less_than(end) {
            wait_step(worker);
        }
        let completed = driver.take_completed();
        fold(&mut captured, completed, driver.frontier());
        if worker.index() == 0 {
            captured.probe_at_end = Some(measure());
        }
    }
    let mut closed = driver.close();
    while !closed.done() {
        wait_step(worker);
    }
    let completed = closed.take_completed();
    fold(&mut captured, completed, None);
    (captured.final_lots, captured.final_positions) = closed.final_tables();
    if let Some(plan) = &options.query {
        let started = Instant::now();
        let (rows, errors, first_row) = answer_query(worker, plan, closed.tables())?;
        captured.query_rows = rows;
        captured.query_errors = errors;
        captured.query_seconds = started.elapsed().as_secs_f64();
        captured.query_first_row_seconds =
            first_row.map(|at| at.duration_since(started).as_secs_f64());
    }
    Ok(captured)
}

/// This worker's part of `plan`'s answer over the finished tables: a
/// dataflow of its own that imports them, run to completion; and when its
/// first row arrived.
#[allow(clippy::type_complexity)]
fn answer_query(
    worker: &mut timely::worker::Worker,
    plan: &Plan,
    mut tables: Tables,
) -> Result<(Vec<(Row, Diff)>, Vec<(EvalError, Diff)>, Option<Instant>), String> {
    let first_row: Rc<std::cell::Cell<Option<Instant>>> = Rc::default();
    let rows: Rc<RefCell<Vec<(Row, Diff)>>> = Rc::default();
    let errors: Rc<RefCell<Vec<(EvalError, Diff)>>> = Rc::default();
    let probe = ProbeHandle::new();
    let built = worker.dataflow::<Time, _, _>(|scope| -> Result<(), String> {
        let rendered = render(plan, &mut tables, scope, 0).map_err(|e| e.to_string())?;
        let sink = Rc::clone(&rows);
        let first = Rc::clone(&first_row);
        rendered
            .rows
            .inspect(move |(row, _, diff)| {
                if first.get().is_none() {
                    first.set(Some(Instant::now()));
                }
                sink.borrow_mut().push((row.clone(), *diff))
            })
            .probe_with(&probe);
        let sink = Rc::clone(&errors);
        rendered
            .errors
            .inspect(move |(error, _, diff)| sink.borrow_mut().push((error.clone(), *diff)))
            .probe_with(&probe);
        Ok(())
    });
    built?;
    drop(tables);
    while !probe.done() {
        worker.step();
    }
    let rows = std::mem::take(&mut *rows.borrow_mut());
    let errors = std::mem::take(&mut *errors.borrow_mut());
    Ok((rows, errors, first_row.get()))
}

/// The correction writer's thread: merges the workers' corrections into
/// file order and writes each timestamp as soon as every worker is past it.
/// After a write fails it keeps draining (so no worker blocks) and returns
/// the first error.
fn write_merged(
    messages: Receiver<MergeMessage>,
    workers: usize,
    mut writer: Box<dyn CorrectionWriter>,
) -> Result<(), String> {
    let mut merge = CorrectionMerge::new(workers);
    let mut result = Ok(());
    let mut write = |ready: Vec<Vec<Correction>>| {
        for corrections in ready {
            if result.is_ok() {
                result = writer.write(&corrections);
            }
        }
    };
    for message in messages {
        write(merge.take(message));
    }
    write(merge.finish());
    result.and_then(|()| writer.finish())
}

/// The rejection of an event of `length` bytes over the `limit`.
pub fn too_long(length: u64, limit: usize) -> Rejection {
    Rejection {
        kind: RejectKind::NotJson,
        detail: format!("event of {length} bytes exceeds the limit of {limit} bytes"),
    }
}

/// The merged answer: rows expanded by multiplicity and sorted; errors
/// that net to a positive count.
fn query_answer(
    plan: &Plan,
    rows: HashMap<Row, isize>,
    errors: HashMap<EvalError, isize>,
    seconds: f64,
) -> Result<QueryAnswer, RunError> {
    let mut answer = QueryAnswer {
        columns: plan.columns.clone(),
        seconds,
        ..QueryAnswer::default()
    };
    for (row, count) in rows {
        if count < 0 {
            return Err(RunError::Multiplicity(format!("{row:?}"), count));
        }
        answer
            .rows
            .extend(std::iter::repeat_n(row, count.unsigned_abs()));
    }
    answer.rows.sort_by(|a, b| compare_rows(&plan.order, a, b));
    let mut errors: Vec<String> = errors
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(e, _)| e.0)
        .collect();
    errors.sort();
    answer.errors = errors;
    Ok(answer)
}

/// Adds updates to per-row counts; a row whose count returns to zero
/// leaves (lots open and close all run long: the map holds what is open).
fn add_updates<K: std::hash::Hash + Eq>(
    counts: &mut HashMap<K, isize>,
    updates: impl IntoIterator<Item = (K, isize)>,
) {
    for (row, diff) in updates {
        match counts.entry(row) {
            Entry::Occupied(mut slot) => {
                *slot.get_mut() += diff;
                if *slot.get() == 0 {
                    slot.remove();
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(diff);
            }
        }
    }
}

/// Adds one worker's row counts to the counts so far; the first worker's
/// map is taken whole (with one worker nothing is hashed again).
fn add_counts<K: std::hash::Hash + Eq>(into: &mut HashMap<K, isize>, from: HashMap<K, isize>) {
    if into.is_empty() {
        *into = from;
        return;
    }
    into.reserve(from.len());
    add_updates(into, from);
}

/// Keeps rows whose multiplicity is one; any other non-zero count is a bug.
fn consolidate<K: std::fmt::Debug>(rows: HashMap<K, isize>) -> Result<Vec<K>, RunError> {
    let mut out = Vec::with_capacity(rows.len());
    for (row, count) in rows {
        match count {
            0 => {}
            1 => out.push(row),
            other => return Err(RunError::Multiplicity(format!("{row:?}"), other)),
        }
    }
    Ok(out)
}
