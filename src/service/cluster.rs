//! The engine as N processes x W workers (timely's own networking): what
//! the workers of different processes tell each other beside the dataflow.
//!
//! Within one process the workers share atomics (the clock, the committed
//! time, the stop flag). Across processes those travel on a small dataflow
//! of their own, built by every worker right after the engine's:
//! - [`Control`] messages are broadcast to every worker, which applies
//!   them to its process's atomics: a cut time (so idle workers close it
//!   too), the committed time (worker 0 reads it from the committer; every
//!   worker's backpressure needs it) and a stop;
//! - [`Relayed`] reports go to worker 0, which hands them to the
//!   committer: what a remote worker read for each timestamp (offsets,
//!   method changes) and its frontier. The outputs themselves are gathered
//!   on worker 0 inside the engine's dataflow (`DriverOptions::gather`),
//!   so a remote worker's part carries no output.
//!
//! The committer (process 0) therefore sees every worker of the cluster
//! report every timestamp and commits it once, after every worker passed
//! it, exactly as in one process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use deltabook_dataflows::driver::TimestampOutput;
use deltabook_dataflows::engine::{DeadLetter, Time};
use deltabook_sinks::postgres::{MethodEvent, SourceOffset};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Exchange as _;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::InputHandleVec;
use tokio::sync::mpsc::Sender;

use super::cluster_queries::{QueryControl, QueryInbox};
use super::engine::{BatchInput, EngineMessage};

/// A message to every worker of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Control {
    /// A worker closed its time up to this one: every worker follows.
    Clock(Time),
    /// Every time before this one is committed (from worker 0).
    Committed(Time),
    /// A process is stopping: every worker stops.
    Stop,
    /// Live queries (from worker 0, applied in order by each worker).
    Query(QueryControl),
}

/// A remote worker's report for the committer, relayed by worker 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Relayed {
    /// What `worker` read for `time` (its outputs are gathered in the dataflow).
    Part {
        /// Worker index in the cluster.
        worker: usize,
        /// Engine time.
        time: Time,
        /// Lot-method changes read.
        methods: Vec<MethodEvent>,
        /// Lot-method messages that could not be read.
        rejected_methods: Vec<DeadLetter>,
        /// Next offsets of the partitions read.
        offsets: Vec<SourceOffset>,
    },
    /// Every time before `time` is complete and reported by `worker`.
    Frontier {
        /// Worker index in the cluster.
        worker: usize,
        /// The worker's frontier.
        time: Time,
    },
}

impl Relayed {
    /// The report as it travels (a part's output is gathered elsewhere,
    /// so it must be empty).
    pub fn from_message(message: EngineMessage) -> Relayed {
        match message {
            EngineMessage::Part {
                worker,
                time,
                output,
                input,
            } => {
                debug_assert!(output.is_empty(), "a remote worker's outputs are gathered");
                Relayed::Part {
                    worker,
                    time,
                    methods: input.methods,
                    rejected_methods: input.rejected_methods,
                    offsets: input.offsets,
                }
            }
            EngineMessage::Frontier { worker, time } => Relayed::Frontier { worker, time },
        }
    }

    /// The report as the committer reads it.
    fn into_message(self) -> EngineMessage {
        match self {
            Relayed::Part {
                worker,
                time,
                methods,
                rejected_methods,
                offsets,
            } => EngineMessage::Part {
                worker,
                time,
                output: Box::new(TimestampOutput::default()),
                input: BatchInput {
                    methods,
                    rejected_methods,
                    offsets,
                    first_read: None,
                },
            },
            Relayed::Frontier { worker, time } => EngineMessage::Frontier { worker, time },
        }
    }
}

/// What control messages act on: one process's shared state.
#[derive(Clone)]
pub struct ProcessState {
    /// The shared clock (the highest time any worker cut to).
    pub clock: Arc<AtomicU64>,
    /// Every time before this is committed.
    pub committed: Arc<AtomicU64>,
    /// Stop consuming and finish.
    pub stop: Arc<AtomicBool>,
    /// The committer's channel (read on process 0 only).
    pub output: Sender<EngineMessage>,
}

/// Sends `message` on `input` and moves its time on: only closing a time
/// flushes an exchange's buffers (towards another process too), and these
/// messages must leave at once. Their times mean nothing else.
pub fn send_now<D: timely::ExchangeData + Clone>(input: &mut InputHandleVec<Time, D>, message: D) {
    input.send(message);
    let next = input.time().saturating_add(1);
    input.advance_to(next);
}

/// Where a worker of another process than the committer's sends its
/// reports: to worker 0, which hands them to the committer.
pub type Relay = InputHandleVec<Time, Relayed>;

/// One worker's end of the cluster's control dataflow.
pub struct ClusterLink {
    control: InputHandleVec<Time, Control>,
    committed_sent: Time,
    stop_sent: bool,
}

impl ClusterLink {
    /// Builds the control dataflow on `worker` (every worker, in the same
    /// order relative to its other dataflows); returns this worker's end
    /// and its relay to worker 0. Live-query instructions are left in
    /// `queries`, in arrival order.
    pub fn build(
        worker: &mut timely::worker::Worker,
        state: ProcessState,
        queries: QueryInbox,
    ) -> (ClusterLink, Relay) {
        let mut control = InputHandleVec::<Time, Control>::new();
        let mut relay = InputHandleVec::<Time, Relayed>::new();
        worker.dataflow::<Time, _, _>(|scope| {
            let applied = state.clone();
            control.to_stream(scope).broadcast().sink(
                Pipeline,
                "ClusterControl",
                move |(input, _frontier)| {
                    input.for_each(|_, messages| {
                        for message in messages.drain(..) {
                            match message {
                                Control::Clock(t) => {
                                    applied.clock.fetch_max(t, Ordering::AcqRel);
                                }
                                Control::Committed(t) => {
                                    applied.committed.fetch_max(t, Ordering::AcqRel);
                                }
                                Control::Stop => applied.stop.store(true, Ordering::Relaxed),
                                Control::Query(instruction) => {
                                    queries.borrow_mut().push_back(instruction)
                                }
                            }
                        }
                    });
                },
            );
            let output = state.output;
            relay.to_stream(scope).exchange(|_| 0).sink(
                Pipeline,
                "ClusterRelay",
                move |(input, _frontier)| {
                    input.for_each(|_, reports| {
                        for report in reports.drain(..) {
                            // Blocks while the committer is full, as a local report does.
                            if output.blocking_send(report.into_message()).is_err() {
                                tracing::warn!(
                                    "the committer stopped; a relayed report is dropped"
                                );
                            }
                        }
                    });
                },
            );
        });
        let link = ClusterLink {
            control,
            committed_sent: 0,
            stop_sent: false,
        };
        (link, relay)
    }

    /// Tells every worker that this one cut to `time`.
    pub fn clock(&mut self, time: Time) {
        send_now(&mut self.control, Control::Clock(time));
    }

    /// Worker 0: tells every worker the committed time when it moved.
    pub fn committed(&mut self, committed: Time) {
        if committed > self.committed_sent {
            self.committed_sent = committed;
            send_now(&mut self.control, Control::Committed(committed));
        }
    }

    /// Worker 0: sends a live-query instruction to every worker.
    pub fn query(&mut self, instruction: QueryControl) {
        send_now(&mut self.control, Control::Query(instruction));
    }

    /// Tells every worker to stop (once).
    pub fn stop(&mut self) {
        if !self.stop_sent {
            self.stop_sent = true;
            send_now(&mut self.control, Control::Stop);
        }
    }
}
