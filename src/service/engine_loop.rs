//! The engine thread: one timely worker fed by engine batches (replayed from
//! the event store, then consumed from Kafka), emitting one
//! [`TimestampCommit`] per completed live timestamp, in time order.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use deltabook_dataflows::engine::{self, DeadLetter, SourceRef, Time};
use deltabook_dataflows::trade::LotMethod;
use deltabook_sinks::postgres::{MethodEvent, SourceOffset, TimestampCommit};
use differential_dataflow::input::Input;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::InputHandleVec;

/// One engine timestamp's input.
#[derive(Debug, Default)]
pub struct EngineBatch {
    /// Engine time (strictly increasing).
    pub time: Time,
    /// Raw trade events.
    pub events: Vec<(SourceRef, Vec<u8>)>,
    /// Lot-method changes.
    pub methods: Vec<MethodEvent>,
    /// Method messages that could not be read (committed as dead letters).
    pub rejected_methods: Vec<DeadLetter>,
    /// Source offsets after this batch.
    pub offsets: Vec<SourceOffset>,
    /// Replayed from the event store: rebuild state, commit nothing.
    pub replay: bool,
    /// When its first message was read (batch latency).
    pub first_read: Option<Instant>,
}

/// A committed-to-be timestamp plus when its first message was read.
pub type Outgoing = (TimestampCommit, Option<Instant>);

struct InFlight {
    time: Time,
    methods: Vec<MethodEvent>,
    rejected_methods: Vec<DeadLetter>,
    offsets: Vec<SourceOffset>,
    replay: bool,
    first_read: Option<Instant>,
}

/// Runs until `input` disconnects and everything in flight is emitted.
/// At most `max_in_flight` timestamps are computed ahead of the sender.
pub fn run(
    input: Receiver<EngineBatch>,
    output: SyncSender<Outgoing>,
    trades_topic: String,
    methods_topic: String,
    max_in_flight: usize,
) -> Result<()> {
    // `execute_directly` wants a `Sync` closure; the worker runs on this thread only.
    let input = std::sync::Mutex::new(input);
    let output = std::sync::Mutex::new(output);
    timely::execute_directly(move |worker| -> Result<()> {
        let input = input
            .lock()
            .map_err(|_| anyhow!("engine input lock poisoned"))?;
        let output = output
            .lock()
            .map_err(|_| anyhow!("engine output lock poisoned"))?;
        let captured: Rc<RefCell<BTreeMap<Time, TimestampCommit>>> =
            Rc::new(RefCell::new(BTreeMap::new()));
        let mut raw = InputHandleVec::<Time, (SourceRef, Vec<u8>)>::new();
        let probe = ProbeHandle::new();
        let mut methods_input = worker.dataflow::<Time, _, _>(|scope| {
            let (methods_input, methods) = scope.new_collection::<(String, LotMethod), isize>();
            let e = engine::build(raw.to_stream(scope), methods);
            let sink = captured.clone();
            e.lots
                .as_collection(|k, v| (k.clone(), v.clone()))
                .inner
                .inspect(move |(row, t, d)| sink.borrow_mut().entry(*t).or_default().lots.push((row.clone(), *d)))
                .probe_with(&probe);
            let sink = captured.clone();
            e.positions
                .as_collection(|k, v| (k.clone(), v.clone()))
                .inner
                .inspect(move |(row, t, d)| sink.borrow_mut().entry(*t).or_default().positions.push((row.clone(), *d)))
                .probe_with(&probe);
            let sink = captured.clone();
            e.corrections
                .inner
                .inspect(move |(c, t, _)| sink.borrow_mut().entry(*t).or_default().corrections.push(c.clone()))
                .probe_with(&probe);
            let sink = captured.clone();
            e.accepted
                .inspect(move |a| sink.borrow_mut().entry(a.time).or_default().accepted.push(a.clone()))
                .probe_with(&probe);
            let sink = captured.clone();
            let topic = trades_topic.clone();
            e.dead_letters
                .inspect_core(move |event| {
                    if let Ok((stamp, data)) = event {
                        if let Some(t) = stamp.elements().first() {
                            let mut c = sink.borrow_mut();
                            let entry = c.entry(*t).or_default();
                            entry.dead_letters.extend(data.iter().map(|d| (topic.clone(), d.clone())));
                        }
                    }
                })
                .probe_with(&probe);
            e.faults
                .inspect(|f| tracing::error!(position = %f.position_key, time = f.time, detail = %f.detail, "position fault"))
                .probe_with(&probe);
            e.booked.stream.probe_with(&probe);
            methods_input
        });

        let mut current_methods: HashMap<String, LotMethod> = HashMap::new();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut open = true;
        while open || !in_flight.is_empty() {
            // Take new input while there is room; block briefly only when idle.
            while open && in_flight.len() < max_in_flight {
                let wait = if in_flight.is_empty() {
                    Duration::from_millis(50)
                } else {
                    Duration::ZERO
                };
                let batch = match input.recv_timeout(wait) {
                    Ok(batch) => batch,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                };
                if batch.time < *raw.time() {
                    return Err(anyhow!(
                        "engine time went backwards: {} after {}",
                        batch.time,
                        raw.time()
                    ));
                }
                raw.advance_to(batch.time);
                methods_input.advance_to(batch.time);
                for event in batch.events {
                    raw.send(event);
                }
                for m in &batch.methods {
                    if let Some(old) = current_methods.remove(&m.scope) {
                        methods_input.remove((m.scope.clone(), old));
                    }
                    if let Some(new) = m.method {
                        current_methods.insert(m.scope.clone(), new);
                        methods_input.insert((m.scope.clone(), new));
                    }
                }
                raw.advance_to(batch.time + 1);
                methods_input.advance_to(batch.time + 1);
                methods_input.flush();
                in_flight.push_back(InFlight {
                    time: batch.time,
                    methods: batch.methods,
                    rejected_methods: batch.rejected_methods,
                    offsets: batch.offsets,
                    replay: batch.replay,
                    first_read: batch.first_read,
                });
            }
            if !open {
                // No more input: let the frontier pass the last time.
                raw.advance_to(Time::MAX);
                methods_input.advance_to(Time::MAX);
                methods_input.flush();
            }
            worker.step();
            while let Some(front) = in_flight.front() {
                if probe.less_equal(&front.time) {
                    break;
                }
                let Some(done) = in_flight.pop_front() else {
                    break;
                };
                let mut commit = captured.borrow_mut().remove(&done.time).unwrap_or_default();
                if done.replay {
                    continue;
                }
                commit.time = done.time;
                commit.trades_topic = trades_topic.clone();
                commit.methods = done.methods;
                commit.offsets = done.offsets;
                commit.dead_letters.extend(
                    done.rejected_methods
                        .into_iter()
                        .map(|d| (methods_topic.clone(), d)),
                );
                if output.send((commit, done.first_read)).is_err() {
                    return Err(anyhow!("committer stopped"));
                }
            }
        }
        Ok(())
    })
}
