//! Runs the engine over a finite, ordered sequence of events in N worker
//! threads and returns the final state and event log, merged over workers.
//! The caller supplies the events (a file reader, a vector in a test), so
//! this module performs no I/O itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, StreamVec};

use crate::correction::Correction;
use crate::engine::{self, DeadLetter, Fault, SourceRef, Time};
use crate::position::{Lot, PositionSummary};
use crate::trade::LotMethod;

/// Timestamps a worker may run ahead of its slowest output before it waits.
const MAX_BATCHES_IN_FLIGHT: u64 = 4;

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
    /// Called by worker 0 once every event is processed, before the dataflow
    /// is torn down; its result lands in [`BookOutcome::probe_at_end`]
    /// (benchmarks read the allocator's live bytes here).
    pub probe_at_end: Option<fn() -> u64>,
    /// Lines per engine timestamp (>= 1).
    pub batch_size: usize,
    /// Timely worker threads (>= 1).
    pub workers: usize,
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
}

/// The events of a run: `events()` yields every event in arrival order, and
/// is called once per worker (each keeps the events it is assigned).
pub trait EventSource: Send + Sync + 'static {
    /// A fresh pass over all events.
    fn events(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, String>> + '_>;
}

impl EventSource for Vec<Vec<u8>> {
    fn events(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, String>> + '_> {
        Box::new(self.iter().map(|e| Ok(e.clone())))
    }
}

/// Called by worker 0 after each batch with the number of events read so far.
pub type ProgressFn = Box<dyn FnMut(u64) + Send>;

/// The final state and event log of a run, merged over workers.
#[derive(Debug, Default)]
pub struct BookOutcome {
    /// Open lots.
    pub lots: Vec<(String, Lot)>,
    /// Position summaries (omitted positions included).
    pub positions: Vec<(String, PositionSummary)>,
    /// Every correction event.
    pub corrections: Vec<Correction>,
    /// Every rejected line.
    pub rejected: Vec<DeadLetter>,
    /// Positions that overflowed.
    pub faults: Vec<Fault>,
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
}

impl RunOptions {
    /// Initial methods, `batch_size` and `workers`; corrections kept; no method changes.
    pub fn new(methods: Vec<(String, LotMethod)>, batch_size: usize, workers: usize) -> RunOptions {
        RunOptions {
            methods,
            method_changes: Vec::new(),
            keep_corrections: true,
            probe_at_end: None,
            batch_size,
            workers,
        }
    }
}

/// One worker's captured outputs.
#[derive(Default)]
struct Captured {
    lots: HashMap<(String, Lot), isize>,
    positions: HashMap<(String, PositionSummary), isize>,
    corrections: Vec<Correction>,
    correction_count: u64,
    rejected: Vec<DeadLetter>,
    faults: Vec<Fault>,
    duplicates: u64,
    probe_at_end: Option<u64>,
}

/// Runs the engine over `source`, `batch_size` events per engine timestamp
/// (event i, counted from 1, at time 1 + (i-1)/batch_size), and returns the
/// merged outcome. The result does not depend on `workers`.
pub fn run<S: EventSource>(
    source: Arc<S>,
    options: &RunOptions,
    progress: Option<ProgressFn>,
) -> Result<BookOutcome, RunError> {
    if options.batch_size == 0 {
        return Err(RunError::Options("batch_size must be at least 1"));
    }
    if options.workers == 0 {
        return Err(RunError::Options("workers must be at least 1"));
    }
    let started = Instant::now();
    let options = options.clone();
    let progress = Arc::new(Mutex::new(progress));
    let keep_corrections = options.keep_corrections;
    let config = timely::Config::process(options.workers);
    let guards = timely::execute(config, move |worker| -> Result<(Captured, u64), String> {
        let index = worker.index();
        let peers = worker.peers();
        let captured = Rc::new(RefCell::new(Captured::default()));
        let mut raw_input = InputHandleVec::<Time, (SourceRef, Vec<u8>)>::new();
        let probe = ProbeHandle::new();
        let mut methods_input = worker.dataflow::<Time, _, _>(|scope| {
            let (methods_input, methods) = scope.new_collection::<(String, LotMethod), isize>();
            let engine = engine::build(raw_input.to_stream(scope), methods);
            let lots = engine
                .lots
                .as_collection(|k, v| (k.clone(), v.clone()))
                .inner;
            capture(lots, &captured, &probe, |c, (row, _, diff)| {
                *c.lots.entry(row.clone()).or_insert(0) += diff
            });
            let positions = engine
                .positions
                .as_collection(|k, v| (k.clone(), v.clone()))
                .inner;
            capture(positions, &captured, &probe, |c, (row, _, diff)| {
                *c.positions.entry(row.clone()).or_insert(0) += diff
            });
            capture(
                engine.corrections.inner,
                &captured,
                &probe,
                move |c, (row, _, _)| {
                    c.correction_count += 1;
                    if keep_corrections {
                        c.corrections.push(row.clone());
                    }
                },
            );
            capture(engine.dead_letters, &captured, &probe, |c, row| {
                c.rejected.push(row.clone())
            });
            capture(engine.duplicates, &captured, &probe, |c, _| {
                c.duplicates += 1
            });
            capture(engine.faults, &captured, &probe, |c, row| {
                c.faults.push(row.clone())
            });
            engine.booked.stream.probe_with(&probe);
            methods_input
        });

        let mut current_methods: HashMap<String, LotMethod> = HashMap::new();
        let mut change_method = |input: &mut differential_dataflow::input::InputSession<
            Time,
            (String, LotMethod),
            isize,
        >,
                                 scope: &str,
                                 method: Option<LotMethod>| {
            if index != 0 {
                return;
            }
            if let Some(old) = current_methods.remove(scope) {
                input.remove((scope.to_string(), old));
            }
            if let Some(new) = method {
                current_methods.insert(scope.to_string(), new);
                input.insert((scope.to_string(), new));
            }
        };
        for (scope, method) in &options.methods {
            change_method(&mut methods_input, scope, Some(*method));
        }
        let mut pending_changes: Vec<&MethodChange> = options.method_changes.iter().collect();
        pending_changes.sort_by_key(|c| std::cmp::Reverse(c.at_event));
        let mut time: Time = 1;
        raw_input.advance_to(time);
        methods_input.advance_to(time);
        methods_input.flush();

        let mut line_no: u64 = 0;
        for event in source.events() {
            let event = event?;
            line_no += 1;
            while pending_changes
                .last()
                .is_some_and(|c| c.at_event <= line_no)
            {
                if let Some(change) = pending_changes.pop() {
                    change_method(&mut methods_input, &change.scope, change.method);
                }
            }
            if (line_no - 1) % peers as u64 == index as u64 {
                raw_input.send((
                    SourceRef {
                        partition: 0,
                        offset: line_no,
                    },
                    event,
                ));
            }
            if line_no.is_multiple_of(options.batch_size as u64) {
                time += 1;
                raw_input.advance_to(time);
                methods_input.advance_to(time);
                methods_input.flush();
                worker.step();
                while probe.less_than(&time.saturating_sub(MAX_BATCHES_IN_FLIGHT)) {
                    worker.step();
                }
                if index == 0 {
                    if let Ok(mut p) = progress.lock() {
                        if let Some(report) = p.as_mut() {
                            report(line_no);
                        }
                    }
                }
            }
        }
        if let Some(measure) = options.probe_at_end {
            // Let every worker catch up on all events while the dataflow still
            // holds its state, then measure (worker 0 only).
            time += 1;
            raw_input.advance_to(time);
            methods_input.advance_to(time);
            methods_input.flush();
            while probe.less_than(&time) {
                worker.step();
            }
            if index == 0 {
                captured.borrow_mut().probe_at_end = Some(measure());
            }
        }
        drop(raw_input);
        drop(methods_input);
        while !probe.done() {
            worker.step();
        }
        let captured = std::mem::take(&mut *captured.borrow_mut());
        Ok((captured, line_no))
    })
    .map_err(RunError::Worker)?;

    let mut outcome = BookOutcome::default();
    let mut lots: HashMap<(String, Lot), isize> = HashMap::new();
    let mut positions: HashMap<(String, PositionSummary), isize> = HashMap::new();
    for result in guards.join() {
        let (captured, lines) = result
            .map_err(RunError::Worker)?
            .map_err(RunError::Worker)?;
        outcome.lines = lines;
        for (row, diff) in captured.lots {
            *lots.entry(row).or_insert(0) += diff;
        }
        for (row, diff) in captured.positions {
            *positions.entry(row).or_insert(0) += diff;
        }
        outcome.corrections.extend(captured.corrections);
        outcome.rejected.extend(captured.rejected);
        outcome.faults.extend(captured.faults);
        outcome.duplicates += captured.duplicates;
        outcome.correction_count += captured.correction_count;
        outcome.probe_at_end = outcome.probe_at_end.or(captured.probe_at_end);
    }
    outcome.lots = consolidate(lots)?;
    outcome.positions = consolidate(positions)?;
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// Records every update of `stream` into the worker's captured outputs and
/// attaches the probe.
fn capture<'scope, D: Clone + 'static>(
    stream: StreamVec<'scope, Time, D>,
    captured: &Rc<RefCell<Captured>>,
    probe: &ProbeHandle<Time>,
    mut record: impl FnMut(&mut Captured, &D) + 'static,
) {
    let sink = Rc::clone(captured);
    stream
        .inspect(move |row| record(&mut sink.borrow_mut(), row))
        .probe_with(probe);
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
