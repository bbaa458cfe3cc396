//! The engine: `engine.workers` timely workers, each with its own
//! [`Driver`] and its own [`PartitionReader`] (each Kafka partition is read
//! by exactly one worker). A restart's snapshot is fed by worker 0 at the
//! last committed time, whose outputs are dropped (they rebuild state,
//! they are not news); live input starts one tick later.
//!
//! Timestamps are cut jointly: a worker closes its current time when its
//! batch is full or has lingered long enough (and fewer than
//! `engine.max_uncommitted_timestamps` are uncommitted: under load batches
//! grow instead of queueing), and publishes the new time on a shared clock;
//! every other worker closes the same time as soon as it sees the clock move
//! (within one idle poll). So all workers advance together, nobody advances
//! while all are idle, and each worker's batch at a time is whatever it read
//! before the cut.
//!
//! Each worker reports, per completed time, its part of the outputs and
//! what it read (offsets, method changes), then its frontier; the committer
//! ([`super::assemble`]) commits a time once every worker has passed it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use deltabook_dataflows::driver::{Capture, Driver, DriverOptions, TimestampOutput};
use deltabook_dataflows::engine::{DeadLetter, RestoredTrade, Time};
use deltabook_dataflows::reconcile::Restored;
use deltabook_dataflows::trade::LotMethod;
use deltabook_sinks::postgres::{MethodEvent, SourceOffset};
use tokio::sync::mpsc::Sender;

use super::cluster::{self, ClusterLink, ProcessState, Relay, Relayed};
use super::cluster_queries::{ClusterQueries, QueryInbox};
use super::metrics::Metrics;
use super::queries::{QueryRegistry, WorkerQueries};
use super::source::{PartitionReader, SourceMessage};
use crate::config::Config;

/// How long an idle worker waits for a message before it looks at the
/// shared clock again (bounds how long a busy worker waits for idle ones).
const IDLE_POLL: Duration = Duration::from_millis(1);

/// What one worker read for one timestamp.
#[derive(Debug, Default)]
pub struct BatchInput {
    /// Lot-method changes (worker 0).
    pub methods: Vec<MethodEvent>,
    /// Lot-method messages that could not be read.
    pub rejected_methods: Vec<DeadLetter>,
    /// Next offsets of the partitions read.
    pub offsets: Vec<SourceOffset>,
    /// When its first message was read.
    pub first_read: Option<Instant>,
}

/// A worker's report to the committer.
#[derive(Debug)]
pub enum EngineMessage {
    /// The worker's part of a completed timestamp.
    Part {
        /// Worker index.
        worker: usize,
        /// Engine time.
        time: Time,
        /// What the engine produced at `time` on this worker.
        output: Box<TimestampOutput>,
        /// What this worker read for `time`.
        input: BatchInput,
    },
    /// Every time before `time` is complete and reported by `worker`.
    Frontier {
        /// Worker index.
        worker: usize,
        /// The worker's frontier.
        time: Time,
    },
}

/// Where the engine starts: a restart's snapshot.
#[derive(Debug, Default)]
pub struct EngineStart {
    /// The last committed time: the snapshot is fed at it.
    pub start_time: Time,
    /// Every trade's live version and fingerprints.
    pub trades: Vec<RestoredTrade>,
    /// The lot-method map.
    pub methods: Vec<(String, LotMethod)>,
    /// Reconciliation's live ticks, live statements and sequence states.
    pub reconciliation: Vec<Restored>,
    /// Next offsets to read.
    pub offsets: Vec<SourceOffset>,
    /// A process of a cluster other than process 0: no snapshot; the
    /// committed time and offsets are read from PostgreSQL once the
    /// cluster is connected.
    pub remote: bool,
}

/// The restored trades, lot-method map and reconciliation state.
type Snapshot = (Vec<RestoredTrade>, Vec<(String, LotMethod)>, Vec<Restored>);

/// Shared by the workers.
struct Shared {
    config: Config,
    /// The last committed time and the next offsets to read: from the
    /// snapshot on process 0; read by the other processes of a cluster once
    /// connected (process 0 has then taken over as the writer).
    progress: Mutex<Option<(Time, Vec<SourceOffset>)>>,
    /// Taken by worker 0.
    snapshot: Mutex<Option<Snapshot>>,
    output: Sender<EngineMessage>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    clock: Arc<AtomicU64>,
    /// Every time before this is committed (or had nothing to commit).
    committed: Arc<AtomicU64>,
    /// Live queries to attach.
    queries: Arc<QueryRegistry>,
    /// The engine is one process of a cluster.
    in_cluster: bool,
}

impl Shared {
    /// The last committed time and next offsets (see `Shared::progress`):
    /// the first worker to ask in a process that has none reads them.
    fn progress(&self) -> Result<(Time, Vec<SourceOffset>)> {
        let mut progress = self
            .progress
            .lock()
            .map_err(|_| anyhow!("progress lock poisoned"))?;
        if let Some(progress) = progress.as_ref() {
            return Ok(progress.clone());
        }
        let url = self.config.postgres.url.clone();
        let (offsets, time) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async move {
                let client = deltabook_sinks::postgres::connect(&url).await?;
                deltabook_sinks::postgres::load_progress(&client).await
            })
            .map_err(|e| anyhow!("reading the committed offsets: {e}"))?;
        self.clock.fetch_max(time + 1, Ordering::AcqRel);
        self.committed.fetch_max(time + 1, Ordering::AcqRel);
        Ok(progress.insert((time, offsets)).clone())
    }
}

/// Starts the workers on their own thread; the handle yields when every
/// worker has finished (after `stop` is set, or on the first error).
pub fn spawn(
    config: Config,
    start: EngineStart,
    output: Sender<EngineMessage>,
    committed: Arc<AtomicU64>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    queries: Arc<QueryRegistry>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let workers = config.engine.workers;
    let cluster = config.cluster.options()?;
    let timely_config = deltabook_dataflows::runner::timely_config(workers, cluster.as_ref());
    let shared = Arc::new(Shared {
        progress: Mutex::new((!start.remote).then_some((start.start_time, start.offsets))),
        snapshot: Mutex::new(Some((start.trades, start.methods, start.reconciliation))),
        clock: Arc::new(AtomicU64::new(start.start_time + 1)),
        committed,
        config,
        output,
        metrics,
        stop,
        queries,
        in_cluster: cluster.is_some(),
    });
    Ok(std::thread::Builder::new()
        .name("deltabook-engine".into())
        .spawn(move || {
            let guards = timely::execute(timely_config, move |worker| {
                let result = run_worker(worker, &shared);
                if result.is_err() {
                    // The others stop too, so the dataflow can finish.
                    shared.stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| anyhow!("starting the engine: {e}"))?;
            let mut first_error = None;
            for result in guards.join() {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(panic) => {
                        first_error.get_or_insert(anyhow!("engine worker panicked: {panic}"));
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        })?)
}

/// A worker's batch at its current time.
#[derive(Default)]
struct Batch {
    messages: usize,
    input: BatchInput,
}

fn run_worker(worker: &mut timely::worker::Worker, shared: &Shared) -> Result<()> {
    // In a cluster, indices are the cluster's: worker 0 is process 0's first.
    let index = worker.index();
    let peers = worker.peers();
    let in_cluster = shared.in_cluster;
    let (start_time, offsets) = shared.progress()?;
    let engine = &shared.config.engine;
    let kafka = &shared.config.kafka;
    let mut driver = Driver::with_options(
        worker,
        start_time,
        Capture::All,
        DriverOptions {
            tolerance: engine.tolerance(),
            prices: true,
            statements: true,
            final_state_only: false,
            share_tables: shared.config.queries.table_set()?,
            // A cluster gathers every output on worker 0, for one commit.
            gather: in_cluster,
        },
    );
    // Workers of the other processes than the committer's report through
    // worker 0.
    let remote = in_cluster && shared.config.cluster.process > 0;
    let local_workers = shared.config.engine.workers;
    let inbox = QueryInbox::default();
    let (mut link, relay) = if in_cluster {
        let state = ProcessState {
            clock: Arc::clone(&shared.clock),
            committed: Arc::clone(&shared.committed),
            stop: Arc::clone(&shared.stop),
            output: shared.output.clone(),
        };
        let (link, relay) = ClusterLink::build(worker, state, Rc::clone(&inbox));
        (Some(link), Some(relay).filter(|_| remote))
    } else {
        (None, None)
    };
    // One process attaches from the registry; a cluster's workers attach
    // what worker 0 announces (`cluster_queries`).
    let mut queries = WorkerQueries::new(local_workers, false);
    let mut cluster_queries =
        in_cluster.then(|| ClusterQueries::new(worker, inbox, &mut driver, local_workers));
    if index == 0 {
        let snapshot = shared
            .snapshot
            .lock()
            .map_err(|_| anyhow!("snapshot lock poisoned"))?
            .take();
        if let Some((trades, methods, reconciliation)) = snapshot {
            for (scope, method) in methods {
                driver.set_method(&scope, Some(method));
            }
            for trade in trades {
                driver.restore(trade);
            }
            for state in reconciliation {
                driver.restore_reconciliation(state);
            }
        }
    }
    driver.advance_to(start_time + 1);
    let mut reader = PartitionReader::new(kafka, index, peers, &offsets, shared.metrics.clone())?;
    let linger = Duration::from_millis(kafka.batch_linger_ms);
    let max_messages = (kafka.batch_max_messages / peers).max(1);
    let max_in_flight = engine.max_uncommitted_timestamps as u64;
    let mut reporter = Reporter::new(index, start_time, &shared.output, relay);
    let mut batch = Batch::default();
    let history_timestamps = shared.config.queries.history_timestamps;
    let mut history_for = None;
    while !shared.stop.load(Ordering::Relaxed) {
        // Before the traces compact past a new frontier: they keep the
        // last `history_timestamps` times, and any an AS KNOWN AT query
        // holds (a hold registered meanwhile is at or after the floor
        // already set, which the old setting never passes).
        let frontier = driver.frontier();
        if cluster_queries.is_none() && history_for != Some(frontier) {
            history_for = Some(frontier);
            let from = shared.queries.history_from(frontier, history_timestamps);
            driver.keep_history_from(from);
        }
        // Adaptive batching: a time is only closed while fewer than
        // `max_in_flight` are uncommitted; until then the open batch keeps
        // growing (to `max_messages`), so a slow sink gets fewer, bigger
        // timestamps instead of a queue. A full batch with no room stops reading.
        let in_flight = driver
            .time()
            .saturating_sub(shared.committed.load(Ordering::Acquire));
        let room = in_flight < max_in_flight;
        if index == 0 {
            shared.metrics.frontier_lag.set(in_flight as i64);
        }
        if !room && batch.messages >= max_messages {
            worker.step_or_park(Some(Duration::from_millis(1)));
            reporter.report(&mut driver)?;
            continue;
        }
        // Wait for a message at most until the batch is due (never spin:
        // a due batch that cannot be cut yet waits one idle poll).
        let wait = match batch.input.first_read {
            Some(first) if room => linger.saturating_sub(first.elapsed()).min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        if let Some(message) = reader.poll(wait, driver.time()) {
            batch.input.first_read.get_or_insert_with(Instant::now);
            batch.messages += 1;
            match message {
                SourceMessage::Trade(source, payload) => driver.send(source, payload),
                SourceMessage::TooLong(dead) => {
                    driver.reject(dead.source, dead.reason, dead.payload)
                }
                SourceMessage::Method(event) => {
                    driver.set_method(&event.scope, event.method);
                    batch.input.methods.push(event);
                }
                SourceMessage::RejectedMethod(dead) => batch.input.rejected_methods.push(dead),
                SourceMessage::Price(source, payload) => driver.send_price(source, payload),
                SourceMessage::Statement(source, payload) => driver.send_statement(source, payload),
            }
        }
        let clock = shared.clock.load(Ordering::Acquire);
        let lingered = batch
            .input
            .first_read
            .is_some_and(|first| first.elapsed() >= linger);
        if clock > driver.time() || room && (batch.messages >= max_messages || lingered) {
            let next = (driver.time() + 1).max(clock);
            if shared.clock.fetch_max(next, Ordering::AcqRel) < next {
                if let Some(link) = link.as_mut() {
                    link.clock(next);
                }
            }
            cut(&mut driver, &mut reader, &mut batch, &mut reporter, next);
        }
        worker.step();
        match (cluster_queries.as_mut(), link.as_mut()) {
            (Some(cluster_queries), Some(link)) => cluster_queries.poll(
                worker,
                &mut driver,
                &shared.queries,
                link,
                history_timestamps,
            )?,
            _ => queries.poll(
                worker,
                driver.shared_tables(),
                &shared.queries,
                driver.frontier(),
            ),
        }
        if index == 0 {
            shared
                .metrics
                .queries_attached
                .set(shared.queries.attached() as i64);
        }
        if let (Some(link), 0) = (link.as_mut(), index) {
            link.committed(shared.committed.load(Ordering::Acquire));
        }
        reporter.report(&mut driver)?;
        reader.report_lag();
    }
    // Live queries end with the service.
    match (cluster_queries.as_mut(), link.as_mut()) {
        (Some(cluster_queries), Some(link)) => {
            // Whoever stops first stops the cluster.
            link.stop();
            cluster_queries.stop(worker, &mut driver, &shared.queries, link)?;
        }
        _ => queries.stop(worker, driver.shared_tables(), &shared.queries),
    }
    // Stopping: close the current time and finish what was read.
    let next = driver.time() + 1;
    cut(&mut driver, &mut reader, &mut batch, &mut reporter, next);
    let mut closed = driver.close();
    while !closed.done() {
        worker.step();
        reporter.deliver(closed.take_completed(), closed.frontier())?;
    }
    reporter.deliver(closed.take_completed(), None)
}

/// Closes the driver's current time (recording what was read for it) and
/// moves every input to `next`.
fn cut(
    driver: &mut Driver,
    reader: &mut PartitionReader,
    batch: &mut Batch,
    reporter: &mut Reporter<'_>,
    next: Time,
) {
    let Batch {
        messages,
        mut input,
    } = std::mem::take(batch);
    if messages > 0 {
        input.offsets = reader.take_offsets();
        reporter.inputs.insert(driver.time(), input);
    }
    driver.advance_to(next);
}

/// Sends a worker's completed parts and frontier to the committer.
struct Reporter<'a> {
    worker: usize,
    /// Times at or before this are the restored snapshot: never reported.
    start_time: Time,
    inputs: BTreeMap<Time, BatchInput>,
    reported: Time,
    output: &'a Sender<EngineMessage>,
    /// Set on a worker of another process than the committer's: its
    /// reports go through worker 0 instead of `output`.
    relay: Option<Relay>,
}

impl<'a> Reporter<'a> {
    fn new(
        worker: usize,
        start_time: Time,
        output: &'a Sender<EngineMessage>,
        relay: Option<Relay>,
    ) -> Reporter<'a> {
        Reporter {
            worker,
            start_time,
            inputs: BTreeMap::new(),
            reported: start_time + 1,
            output,
            relay,
        }
    }

    fn report(&mut self, driver: &mut Driver) -> Result<()> {
        let completed = driver.take_completed();
        self.deliver(completed, driver.frontier())
    }

    /// Sends the parts of every time before `frontier` (all when `None`),
    /// then the frontier if it moved. Blocks while the committer is full.
    fn deliver(
        &mut self,
        completed: Vec<(Time, TimestampOutput)>,
        frontier: Option<Time>,
    ) -> Result<()> {
        let limit = frontier.unwrap_or(Time::MAX);
        let mut parts: BTreeMap<Time, (TimestampOutput, BatchInput)> = BTreeMap::new();
        for (time, output) in completed {
            parts.entry(time).or_default().0 = output;
        }
        let later = self.inputs.split_off(&limit);
        for (time, input) in std::mem::replace(&mut self.inputs, later) {
            parts.entry(time).or_default().1 = input;
        }
        for (time, (output, input)) in parts {
            if time <= self.start_time {
                continue; // The snapshot's rebuild, not news.
            }
            let part = EngineMessage::Part {
                worker: self.worker,
                time,
                output: Box::new(output),
                input,
            };
            self.send(part)?;
        }
        if limit > self.reported {
            self.reported = limit;
            let frontier = EngineMessage::Frontier {
                worker: self.worker,
                time: limit,
            };
            self.send(frontier)?;
        }
        Ok(())
    }

    fn send(&mut self, message: EngineMessage) -> Result<()> {
        match self.relay.as_mut() {
            Some(relay) => {
                cluster::send_now(relay, Relayed::from_message(message));
                Ok(())
            }
            None => self
                .output
                .blocking_send(message)
                .map_err(|_| anyhow!("the committer stopped")),
        }
    }
}
