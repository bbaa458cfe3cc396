//! Live SQL subscriptions (`POST /query`), like Materialize's SUBSCRIBE:
//! a consistent snapshot at one engine timestamp, then every change as
//! `(row, diff, time)`, and a progress mark each time a timestamp closes.
//!
//! The HTTP handler compiles the query and appends a [`Subscription`] to
//! the [`QueryRegistry`]. Every engine worker attaches the registry's
//! subscriptions in registry order ([`WorkerQueries::poll`]), so all
//! workers build the same dataflows in the same order (timely's rule): a
//! dataflow of its own that imports the engine's shared traces. Its
//! updates go into the subscription's bounded queue; worker 0 adds the
//! progress marks from the dataflow's probe. A subscriber that leaves, or
//! lets the queue fill, is detached: every worker presses its imports'
//! shutdown buttons and the dataflow finishes and is removed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deltabook_dataflows::engine::{Diff, Time};
use deltabook_dataflows::query::{
    render, EvalError, ImportButton, Plan, RenderError, Row, Table, TableSet, Tables, Value,
};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::core::Exchange as _;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use tokio::sync::mpsc;

/// What a subscription's dataflow sends to its HTTP stream.
#[derive(Debug)]
pub enum QueryEvent {
    /// A row changed by `diff` at `time`.
    Update(Row, Time, Diff),
    /// Every update before this time has been sent.
    Progress(Time),
    /// A row could not be evaluated (it is left out of the answer).
    Error(String),
    /// The query could not be attached (every worker reports the same).
    Failed(String),
}

/// One live query.
pub struct Subscription {
    /// Registry order (also its id).
    pub id: u64,
    /// The compiled query.
    pub plan: Plan,
    /// Dropped when the query is closed, so the subscriber's stream ends
    /// once it has read what was queued.
    sender: Mutex<Option<mpsc::Sender<QueryEvent>>>,
    /// Set by the subscriber leaving, by a full queue or by a failure: every
    /// worker then detaches the query.
    closed: AtomicBool,
    /// Set when the queue was full (the subscriber was too slow).
    overflowed: AtomicBool,
    /// Workers that have detached the query.
    detached_workers: std::sync::atomic::AtomicUsize,
}

impl Subscription {
    /// Queues `event`; a full queue cuts the subscriber off, a closed one
    /// (the subscriber left) detaches the query.
    fn send(&self, event: QueryEvent) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut sender) = self.sender.lock() else {
            return;
        };
        let Some(queue) = sender.as_ref() else {
            return;
        };
        match queue.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                self.closed.store(true, Ordering::Relaxed);
                *sender = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.closed.store(true, Ordering::Relaxed);
                *sender = None;
            }
        }
    }

    /// Asks every worker to detach the query, and ends the subscriber's
    /// stream after what is queued.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut sender) = self.sender.lock() {
            *sender = None;
        }
    }

    /// True once the queue was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// True once the query is to be detached.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Another process's copy of a cluster's query: it has no subscriber
    /// (its worker 0 on process 0 sends the updates on).
    pub fn without_subscriber(id: u64, plan: Plan) -> Subscription {
        Subscription::new(id, plan, None)
    }

    fn new(id: u64, plan: Plan, sender: Option<mpsc::Sender<QueryEvent>>) -> Subscription {
        Subscription {
            id,
            plan,
            sender: Mutex::new(sender),
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            detached_workers: Default::default(),
        }
    }
}

/// The live queries of a service, in attach order (append-only; detached
/// entries stay so every worker's position in it stays valid).
#[derive(Default)]
pub struct QueryRegistry {
    /// The subscriptions, and whether the registry is frozen (stopping).
    subscriptions: Mutex<(Vec<Arc<Subscription>>, bool)>,
    attached: AtomicU64,
    /// How far back the shared traces keep history (`AS KNOWN AT`).
    history: Mutex<History>,
    /// The first time a query's snapshot may be read before: one past the
    /// restart snapshot's time, whose state the engine feeds at start.
    first_snapshot_before: AtomicU64,
}

/// The shared traces' history: the latest compaction any worker applied,
/// and the times `AS KNOWN AT` queries still need (each with a count).
#[derive(Default)]
struct History {
    floor: Time,
    holds: std::collections::BTreeMap<Time, usize>,
}

/// Where an `AS KNOWN AT` query is answered from.
#[derive(Debug, PartialEq, Eq)]
pub enum KnownAt {
    /// The query looks at the present, or at a time the traces still keep
    /// (held for it until it is detached).
    InMemory,
    /// `AS KNOWN AT` this time, which the traces have compacted away (from
    /// the event store).
    Forgotten(Time),
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The query does not compile.
    #[error("{0}")]
    Query(#[from] deltabook_dataflows::query::QueryError),
    /// It reads a table this service does not share.
    #[error("table {0} is not shared by this service (queries.tables)")]
    NotShared(&'static str),
    /// Too many subscribers.
    #[error("too many live queries (queries.max_subscribers = {0})")]
    Full(usize),
    /// The service is stopping.
    #[error("the service is stopping")]
    Stopping,
    /// `AS KNOWN AT` a time older than the history kept in memory.
    #[error(
        "AS KNOWN AT a time older than the history kept in memory (queries.history_timestamps)"
    )]
    Forgotten,
}

impl QueryRegistry {
    /// A registry for a service whose engine has not started: its traces
    /// hold no history yet, so every `AS KNOWN AT` is answered from the
    /// event store until [`QueryRegistry::history_starts_at`].
    pub fn before_start() -> QueryRegistry {
        let registry = QueryRegistry::default();
        if let Ok(mut history) = registry.history.lock() {
            history.floor = Time::MAX;
        }
        registry
    }

    /// The engine starts from the restart snapshot of `start_time`: its
    /// traces hold that time's state (the snapshot is fed at it) and no
    /// earlier time, so an `AS KNOWN AT` before it comes from the event
    /// store. Call before the engine starts.
    pub fn history_starts_at(&self, start_time: Time) {
        if let Ok(mut history) = self.history.lock() {
            history.floor = start_time;
        }
        self.first_snapshot_before
            .store(start_time.saturating_add(1), Ordering::Release);
    }

    /// The time a query attached now reads its snapshot before: the
    /// engine's `completed` frontier, but never before the restart
    /// snapshot's time has closed. A query that arrives while the engine
    /// is still taking in the restored state waits for it rather than
    /// reading the empty time before it (the traces hold no earlier time).
    pub fn snapshot_before(&self, completed: Option<Time>) -> Time {
        completed
            .unwrap_or(Time::MAX)
            .max(self.first_snapshot_before.load(Ordering::Acquire))
    }

    /// Where a worker's shared traces may compact to now: `window`
    /// timestamps behind its completed `frontier`, and never past a time a
    /// registered `AS KNOWN AT` query still needs. Every worker calls it
    /// before compacting ([`deltabook_dataflows::driver::Driver::keep_history_from`]).
    pub fn history_from(&self, frontier: Option<Time>, window: u64) -> Time {
        let Ok(mut history) = self.history.lock() else {
            return 0;
        };
        // At least the last closed time stays distinct: a query's snapshot
        // is read at it (see `WorkerQueries::poll`).
        let mut from = frontier.map_or(Time::MAX, |f| f.saturating_sub(window.max(1)));
        if let Some((&held, _)) = history.holds.first_key_value() {
            from = from.min(held);
        }
        history.floor = history.floor.max(from);
        from
    }

    /// One worker has detached `subscription`: the last of `peers` to do
    /// so releases the history it held (every worker has imported the
    /// traces by then).
    fn detached(&self, subscription: &Subscription, peers: usize) {
        let detached = subscription.detached_workers.fetch_add(1, Ordering::AcqRel) + 1;
        if let (Some(t), true) = (subscription.plan.as_of.known_at, detached == peers) {
            self.release(t);
        }
    }

    fn release(&self, known_at: Time) {
        if let Ok(mut history) = self.history.lock() {
            if let Some(count) = history.holds.get_mut(&known_at) {
                *count -= 1;
                if *count == 0 {
                    history.holds.remove(&known_at);
                }
            }
        }
    }

    /// Where `plan` is answered from. [`KnownAt::InMemory`] holds the
    /// traces' history at its `AS KNOWN AT` time, if no worker has
    /// compacted past it (released when the subscription is detached).
    pub fn place(&self, plan: &Plan) -> KnownAt {
        let Some(known_at) = plan.as_of.known_at else {
            return KnownAt::InMemory;
        };
        let Ok(mut history) = self.history.lock() else {
            return KnownAt::Forgotten(known_at);
        };
        if known_at < history.floor {
            return KnownAt::Forgotten(known_at);
        }
        *history.holds.entry(known_at).or_insert(0) += 1;
        KnownAt::InMemory
    }

    /// Compiles `sql` and registers it; the receiver gets its events. An
    /// `AS KNOWN AT` older than the history kept in memory is refused
    /// here ([`SubscribeError::Forgotten`]); the HTTP handler answers
    /// those from the event store instead.
    pub fn subscribe(
        &self,
        sql: &str,
        shared: TableSet,
        max_subscribers: usize,
        queue: usize,
    ) -> Result<(Arc<Subscription>, mpsc::Receiver<QueryEvent>), SubscribeError> {
        let plan = Plan::compile(sql)?;
        match self.place(&plan) {
            KnownAt::InMemory => self.subscribe_plan(plan, shared, max_subscribers, queue),
            KnownAt::Forgotten(_) => Err(SubscribeError::Forgotten),
        }
    }

    /// Registers a compiled plan that [`QueryRegistry::place`] placed in
    /// memory (its hold, if any, is released when the subscription is
    /// detached, or now if it is refused).
    pub fn subscribe_plan(
        &self,
        plan: Plan,
        shared: TableSet,
        max_subscribers: usize,
        queue: usize,
    ) -> Result<(Arc<Subscription>, mpsc::Receiver<QueryEvent>), SubscribeError> {
        let known_at = plan.as_of.known_at;
        let registered = self.register(plan, shared, max_subscribers, queue);
        if let (Err(_), Some(t)) = (&registered, known_at) {
            self.release(t);
        }
        registered
    }

    fn register(
        &self,
        plan: Plan,
        shared: TableSet,
        max_subscribers: usize,
        queue: usize,
    ) -> Result<(Arc<Subscription>, mpsc::Receiver<QueryEvent>), SubscribeError> {
        if let Some(table) = Table::ALL
            .into_iter()
            .find(|t| plan.tables().contains(*t) && !shared.contains(*t))
        {
            return Err(SubscribeError::NotShared(table.name()));
        }
        let mut registry = self
            .subscriptions
            .lock()
            .map_err(|_| SubscribeError::Stopping)?;
        let (subscriptions, frozen) = &mut *registry;
        if *frozen {
            return Err(SubscribeError::Stopping);
        }
        let live = subscriptions
            .iter()
            .filter(|s| !s.closed.load(Ordering::Relaxed))
            .count();
        if live >= max_subscribers {
            return Err(SubscribeError::Full(max_subscribers));
        }
        let (sender, receiver) = mpsc::channel(queue.max(1));
        let subscription = Arc::new(Subscription::new(
            subscriptions.len() as u64,
            plan,
            Some(sender),
        ));
        subscriptions.push(Arc::clone(&subscription));
        Ok((subscription, receiver))
    }

    /// Subscription `id`, if registered here.
    pub(super) fn get(&self, id: u64) -> Option<Arc<Subscription>> {
        let index = usize::try_from(id).ok()?;
        self.subscriptions.lock().ok()?.0.get(index).cloned()
    }

    pub(super) fn since(&self, next: usize) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .map(|s| s.0.get(next..).map(<[_]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Refuses new subscriptions from now on (the service is stopping), so
    /// every worker attaches the same ones before it stops.
    pub fn freeze(&self) {
        if let Ok(mut registry) = self.subscriptions.lock() {
            registry.1 = true;
        }
    }

    /// Live queries attached now (worker 0's count).
    pub fn attached(&self) -> u64 {
        self.attached.load(Ordering::Relaxed)
    }
}

/// One attached query on one worker.
struct Attached {
    subscription: Arc<Subscription>,
    probe: ProbeHandle<Time>,
    shutdown: Vec<ImportButton>,
    /// The last progress mark sent (at first: the time before the snapshot's).
    progress_sent: Time,
}

/// One worker's side of the registry.
pub struct WorkerQueries {
    next: usize,
    attached: Vec<Attached>,
    /// This process's workers (the last of them to detach a query
    /// releases the history it held).
    local_workers: usize,
    /// Send every update to worker 0 (a cluster: only process 0 has the
    /// subscribers).
    gather: bool,
}

impl WorkerQueries {
    /// A worker's queries, in a process of `local_workers` workers; with
    /// `gather`, each query's updates go to worker 0, which sends them on.
    pub fn new(local_workers: usize, gather: bool) -> WorkerQueries {
        WorkerQueries {
            next: 0,
            attached: Vec::new(),
            local_workers,
            gather,
        }
    }

    /// Attaches new subscriptions (in registry order), sends progress
    /// marks (worker 0) and detaches closed ones. Call between steps, with
    /// the engine's completed frontier (`Driver::frontier`): a query
    /// attached now has its snapshot at the time before it, and its first
    /// progress mark is at or after it. (One process; a cluster's workers
    /// attach what worker 0 tells them, see `super::cluster_queries`.)
    pub fn poll(
        &mut self,
        worker: &mut timely::worker::Worker,
        tables: &Tables,
        registry: &QueryRegistry,
        completed: Option<Time>,
    ) {
        for subscription in registry.since(self.next) {
            self.next += 1;
            let snapshot_before = registry.snapshot_before(completed);
            self.attach(worker, tables, subscription, registry, snapshot_before);
        }
        self.detach_where(worker, registry, Subscription::is_closed);
        self.send_progress(worker);
    }

    /// Worker 0: sends each query's progress mark when its frontier moved.
    pub(super) fn send_progress(&mut self, worker: &timely::worker::Worker) {
        if worker.index() != 0 {
            return;
        }
        for query in &mut self.attached {
            let subscription = &query.subscription;
            let frontier = query.probe.with_frontier(|f| f.first().copied());
            let mark = match subscription.plan.as_of.known_at {
                None => frontier,
                // Complete (one mark, the snapshot's) once the engine passed `t`.
                Some(t) => match frontier {
                    Some(f) if f <= t => None,
                    _ => Some(t.saturating_add(1)),
                },
            };
            if let Some(time) = mark {
                if time > query.progress_sent {
                    query.progress_sent = time;
                    subscription.send(QueryEvent::Progress(time));
                }
            }
        }
    }

    /// Detaches query `id` if it is attached here.
    pub(super) fn detach(
        &mut self,
        worker: &timely::worker::Worker,
        id: u64,
        registry: &QueryRegistry,
    ) {
        self.detach_where(worker, registry, |s| s.id == id);
    }

    /// Detaches every query attached here (the service is stopping).
    pub(super) fn detach_all(&mut self, worker: &timely::worker::Worker, registry: &QueryRegistry) {
        self.detach_where(worker, registry, |_| true);
    }

    /// Detaches the attached queries `which` selects: their imports'
    /// shutdown buttons are pressed, so their dataflows finish and are
    /// removed.
    fn detach_where(
        &mut self,
        worker: &timely::worker::Worker,
        registry: &QueryRegistry,
        which: impl Fn(&Subscription) -> bool,
    ) {
        // Called between steps of the engine loop: no allocation.
        let mut at = 0;
        while at < self.attached.len() {
            if !which(&self.attached[at].subscription) {
                at += 1;
                continue;
            }
            let mut query = self.attached.swap_remove(at);
            for button in &mut query.shutdown {
                button.press();
            }
            if worker.index() == 0 {
                registry.attached.fetch_sub(1, Ordering::Relaxed);
            }
            registry.detached(&query.subscription, self.local_workers);
        }
    }

    /// The service is stopping: attaches what this worker has not yet
    /// (the registry is frozen, so every worker attaches the same), then
    /// detaches everything, so every query's dataflow finishes.
    pub fn stop(
        &mut self,
        worker: &mut timely::worker::Worker,
        tables: &Tables,
        registry: &QueryRegistry,
    ) {
        registry.freeze();
        for subscription in registry.since(0) {
            subscription.close();
        }
        self.poll(worker, tables, registry, None);
    }

    /// Builds `subscription`'s dataflow on this worker, its snapshot at
    /// the time before `snapshot_before`. A query that cannot be built
    /// (every worker fails alike) is reported by worker 0 and closed.
    pub(super) fn attach(
        &mut self,
        worker: &mut timely::worker::Worker,
        tables: &Tables,
        subscription: Arc<Subscription>,
        registry: &QueryRegistry,
        snapshot_before: Time,
    ) {
        let probe = ProbeHandle::new();
        let mut tables = tables.clone();
        let gather = self.gather;
        let built = worker.dataflow::<Time, _, _>(|scope| {
            // The snapshot is read at the last closed time, so operators
            // that wait for a time to close (GROUP BY, AS OF DATE's
            // booking) answer it at once.
            let snapshot_at = snapshot_before.saturating_sub(1);
            let rendered = render(&subscription.plan, &mut tables, scope, snapshot_at)?;
            send_updates(
                rendered.rows,
                gather,
                &subscription,
                &probe,
                QueryEvent::Update,
            );
            send_updates(
                rendered.errors,
                gather,
                &subscription,
                &probe,
                |e: EvalError, _, _| QueryEvent::Error(e.0),
            );
            Ok::<_, RenderError>(rendered.shutdown)
        });
        match built {
            Ok(shutdown) => {
                if worker.index() == 0 {
                    registry.attached.fetch_add(1, Ordering::Relaxed);
                }
                let known_at = subscription.plan.as_of.known_at;
                self.attached.push(Attached {
                    subscription,
                    probe,
                    shutdown,
                    // The traces hold every update before `snapshot_before`:
                    // the probe passing it completes the snapshot. An
                    // `AS KNOWN AT t` snapshot completes at `t + 1`.
                    progress_sent: snapshot_before
                        .saturating_sub(1)
                        .min(known_at.unwrap_or(Time::MAX)),
                });
            }
            Err(missing) => {
                if worker.index() == 0 {
                    subscription.send(QueryEvent::Failed(missing.to_string()));
                }
                subscription.close();
                registry.detached(&subscription, self.local_workers);
            }
        }
    }
}

/// Sends each update of `collection` to the subscriber (from worker 0,
/// with `gather`), then probes it.
fn send_updates<'scope, D: differential_dataflow::ExchangeData>(
    collection: VecCollection<'scope, Time, D, Diff>,
    gather: bool,
    subscription: &Arc<Subscription>,
    probe: &ProbeHandle<Time>,
    event: impl Fn(D, Time, Diff) -> QueryEvent + 'static,
) {
    let subscription = Arc::clone(subscription);
    let collection = if gather {
        collection.inner.exchange(|_| 0).as_collection()
    } else {
        collection
    };
    collection
        .inspect(move |(data, time, diff)| {
            subscription.send(event(data.clone(), *time, *diff));
        })
        .probe_with(probe);
}

/// A value as JSON: decimals as strings in the spec's normal form (as in
/// every other output), dates as `YYYY-MM-DD`, NULL as null.
fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        other => serde_json::Value::String(other.to_string()),
    }
}

/// A row as a JSON array (decimals as strings, NULL as null).
fn row_json(row: &Row) -> serde_json::Value {
    serde_json::Value::Array(row.iter().map(value_json).collect())
}

/// The first line of a body: the answer's column names.
pub fn columns_line(columns: &[String]) -> serde_json::Value {
    serde_json::json!({ "columns": columns })
}

/// A row that changed by `diff` at `time`.
pub fn update_line(time: Time, diff: Diff, row: &Row) -> serde_json::Value {
    serde_json::json!({ "time": time, "diff": diff, "row": row_json(row) })
}

/// Every update before `time` has been sent.
pub fn progress_line(time: Time) -> serde_json::Value {
    serde_json::json!({ "progress": time })
}

/// An error: a row that could not be evaluated, or why the body ends.
pub fn error_line(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

fn line(value: serde_json::Value) -> Result<axum::body::Bytes, Infallible> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(axum::body::Bytes::from(text))
}

/// Closes the subscription when the HTTP stream is dropped (the client left).
struct CloseOnDrop(Arc<Subscription>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The HTTP body of a subscription, one JSON object per line:
/// `{"columns": [...]}`; the snapshot as `{"time", "diff", "row"}` updates
/// consolidated at the time before the first progress mark; then every
/// update as it happens; `{"progress": t}` each time all updates before
/// `t` were sent; `{"error": ...}` for a row that could not be evaluated;
/// and a last `{"error": ...}` when the subscriber is cut off. With `once`
/// the body ends after the snapshot's progress mark. Dropping the body
/// (the client left) detaches the query.
pub fn body_stream(
    subscription: Arc<Subscription>,
    events: mpsc::Receiver<QueryEvent>,
    once: bool,
    queue: usize,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, Infallible>> + Send {
    let mut state = BodyState {
        guard: CloseOnDrop(Arc::clone(&subscription)),
        events,
        snapshot: Some(HashMap::new()),
        pending: std::collections::VecDeque::new(),
        done: false,
        once,
        queue,
    };
    state
        .pending
        .push_back(columns_line(&subscription.plan.columns));
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(value) = state.pending.pop_front() {
                return Some((line(value), state));
            }
            if state.done {
                return None;
            }
            match state.events.recv().await {
                Some(event) => state.take(event),
                None => {
                    state.done = true;
                    if state.guard.0.overflowed() {
                        let message = format!(
                            "subscriber too slow: more than {} updates queued; cut off (the query is detached)",
                            state.queue
                        );
                        state.pending.push_back(error_line(&message));
                    }
                }
            }
        }
    })
}

/// A subscription body's state between polls.
struct BodyState {
    guard: CloseOnDrop,
    events: mpsc::Receiver<QueryEvent>,
    /// The snapshot's updates until the first progress mark.
    snapshot: Option<HashMap<Row, Diff>>,
    pending: std::collections::VecDeque<serde_json::Value>,
    done: bool,
    once: bool,
    queue: usize,
}

impl BodyState {
    fn take(&mut self, event: QueryEvent) {
        match event {
            QueryEvent::Failed(message) => {
                if !message.is_empty() {
                    self.pending.push_back(error_line(&message));
                    self.finish();
                }
            }
            QueryEvent::Error(message) => self.pending.push_back(error_line(&message)),
            QueryEvent::Update(row, time, diff) => match self.snapshot.as_mut() {
                Some(rows) => *rows.entry(row).or_insert(0) += diff,
                None => self.pending.push_back(update_line(time, diff, &row)),
            },
            QueryEvent::Progress(time) => {
                if let Some(rows) = self.snapshot.take() {
                    let at = time.saturating_sub(1);
                    let mut rows: Vec<(Row, Diff)> =
                        rows.into_iter().filter(|(_, d)| *d != 0).collect();
                    rows.sort();
                    for (row, diff) in rows {
                        self.pending.push_back(update_line(at, diff, &row));
                    }
                    self.pending.push_back(progress_line(time));
                    if self.once {
                        self.finish();
                    }
                } else {
                    self.pending.push_back(progress_line(time));
                }
            }
        }
    }

    /// Ends the body after what is pending, and detaches the query.
    fn finish(&mut self) {
        self.done = true;
        self.guard.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn number(n: i128) -> Value {
        Value::Number(deltabook_dataflows::query::Number::from_i128(n))
    }

    /// Subscribes, sends `events`, then (unless `keep_open`) closes as the
    /// engine does when it detaches; returns the body's lines.
    async fn lines_for(
        events: Vec<QueryEvent>,
        queue: usize,
        once: bool,
    ) -> Vec<serde_json::Value> {
        let registry = QueryRegistry::default();
        let (subscription, receiver) = registry
            .subscribe("SELECT lot_count FROM positions", TableSet::ALL, 4, queue)
            .unwrap_or_else(|e| panic!("{e}"));
        for event in events {
            subscription.send(event);
        }
        if !once {
            subscription.close();
        }
        let body = body_stream(Arc::clone(&subscription), receiver, once, queue);
        let chunks =
            tokio::time::timeout(std::time::Duration::from_secs(5), body.collect::<Vec<_>>())
                .await
                .unwrap_or_else(|_| panic!("the body did not end"));
        chunks
            .into_iter()
            .flat_map(|chunk| {
                let text = String::from_utf8_lossy(&chunk.unwrap_or_default()).to_string();
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_default())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_snapshot_is_consolidated_at_one_time_then_changes_stream() {
        let lines = lines_for(
            vec![
                QueryEvent::Update(vec![number(1)], 3, 1),
                QueryEvent::Update(vec![number(1)], 4, -1),
                QueryEvent::Update(vec![number(2)], 4, 1),
                QueryEvent::Progress(5),
                QueryEvent::Update(vec![number(3)], 5, 1),
                QueryEvent::Progress(6),
            ],
            100,
            false,
        )
        .await;
        assert_eq!(
            lines,
            [
                serde_json::json!({"columns": ["lot_count"]}),
                serde_json::json!({"time": 4, "diff": 1, "row": ["2"]}),
                serde_json::json!({"progress": 5}),
                serde_json::json!({"time": 5, "diff": 1, "row": ["3"]}),
                serde_json::json!({"progress": 6}),
            ]
        );
    }

    #[tokio::test]
    async fn once_ends_after_the_snapshot() {
        let lines = lines_for(
            vec![
                QueryEvent::Update(vec![number(7)], 1, 1),
                QueryEvent::Progress(2),
                QueryEvent::Update(vec![number(8)], 2, 1),
            ],
            100,
            true,
        )
        .await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[2], serde_json::json!({"progress": 2}));
    }

    #[tokio::test]
    async fn a_full_queue_cuts_the_subscriber_off_with_a_message() {
        let lines = lines_for(
            (1..=3)
                .map(|t| QueryEvent::Update(vec![number(t)], 1, 1))
                .collect(),
            2,
            false,
        )
        .await;
        let last = lines
            .last()
            .and_then(|l| l.get("error"))
            .and_then(|e| e.as_str());
        assert!(
            last.is_some_and(|m| m.starts_with("subscriber too slow: more than 2 updates queued")),
            "{lines:?}"
        );
    }

    #[test]
    fn as_known_at_before_the_restart_snapshot_comes_from_the_event_store() {
        let plan = |t: u64| {
            Plan::compile(&format!("SELECT * FROM positions AS KNOWN AT {t}"))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let registry = QueryRegistry::before_start();
        assert_eq!(registry.place(&plan(0)), KnownAt::Forgotten(0));
        assert_eq!(registry.place(&plan(9)), KnownAt::Forgotten(9));
        registry.history_starts_at(5);
        assert_eq!(registry.place(&plan(4)), KnownAt::Forgotten(4));
        assert_eq!(registry.place(&plan(5)), KnownAt::InMemory);
        assert_eq!(registry.place(&plan(7)), KnownAt::InMemory);
    }

    /// The race CI met: a query that arrives after `/ready` but before
    /// the engine has taken in the restart snapshot (fed at `start`,
    /// still in flight) must wait for it, not read the empty time before it.
    #[test]
    fn a_query_attached_before_the_restored_state_is_taken_in_reads_it() {
        use deltabook_dataflows::decimal::Dec8;
        use deltabook_dataflows::driver::{Capture, Driver, DriverOptions};
        use deltabook_dataflows::engine::{LiveTrade, RestoredTrade};
        use deltabook_dataflows::trade::{BookedTrade, Date, LotKey, Side};

        let start: Time = 5;
        let registry = Arc::new(QueryRegistry::before_start());
        registry.history_starts_at(start);
        let (_subscription, mut receiver) = registry
            .subscribe(
                "SELECT position_key, quantity FROM positions",
                TableSet::ALL,
                4,
                100,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let worker_registry = Arc::clone(&registry);
        timely::execute_directly(move |worker| {
            let mut driver = Driver::with_options(
                worker,
                start,
                Capture::All,
                DriverOptions {
                    tolerance: Dec8::ZERO,
                    prices: false,
                    statements: false,
                    final_state_only: false,
                    share_tables: TableSet::NONE.with(Table::Positions),
                    gather: false,
                },
            );
            // The state the engine starts from: a restored trade at
            // `start`, as the engine feeds a restart's snapshot.
            let booked = BookedTrade {
                key: LotKey::new(Date::from_ymd(2026, 1, 2), None, "T1".into()),
                side: Side::Buy,
                quantity: Dec8::parse("7").unwrap_or_else(|e| panic!("{e}")),
                price: Dec8::parse("10").unwrap_or_else(|e| panic!("{e}")),
            };
            driver.restore(RestoredTrade {
                live: LiveTrade {
                    trade_id: "T1".into(),
                    version: 1,
                    booked: Some(("A_B_S".into(), booked)),
                },
                fingerprints: vec![(1, 1)],
                whole: None,
            });
            driver.advance_to(start + 1);
            // As the engine loop: steps until the engine's frontier
            // reaches `start` (the restored state still in flight), then
            // the query arrives.
            while driver.frontier() < Some(start) {
                worker.step();
            }
            assert_eq!(
                driver.frontier(),
                Some(start),
                "the restored state is in flight"
            );
            let mut queries = WorkerQueries::new(1, false);
            queries.poll(
                worker,
                driver.shared_tables(),
                &worker_registry,
                driver.frontier(),
            );
            while driver.less_than(start + 1) {
                worker.step();
                queries.send_progress(worker);
            }
            // The query's own operators follow the engine's.
            for _ in 0..100 {
                worker.step();
                queries.send_progress(worker);
            }
            queries.detach_all(worker, &worker_registry);
        });
        let mut before_mark = Vec::new();
        let mut first_mark = None;
        while let Ok(event) = receiver.try_recv() {
            match event {
                QueryEvent::Update(row, time, diff) if first_mark.is_none() => {
                    before_mark.push((row, time, diff));
                }
                QueryEvent::Progress(time) => {
                    first_mark.get_or_insert(time);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            first_mark,
            Some(start + 1),
            "the snapshot completes after the restored time"
        );
        assert_eq!(
            before_mark,
            [(vec![Value::Text("A_B_S".into()), number(7)], start, 1)]
        );
    }

    #[test]
    fn refusals_before_attaching() {
        let registry = QueryRegistry::default();
        let shared = TableSet::NONE.with(deltabook_dataflows::query::Table::Lots);
        let refused = |sql: &str, max: usize| match registry.subscribe(sql, shared, max, 10) {
            Ok(_) => panic!("{sql} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(refused("SELECT * FROM trades", 4).contains("table trades is not shared"));
        assert!(refused("SELECT DISTINCT side FROM lots", 4).contains("DISTINCT"));
        assert!(registry
            .subscribe("SELECT * FROM lots", shared, 1, 10)
            .is_ok());
        assert!(refused("SELECT * FROM lots", 1).contains("too many live queries"));
        registry.freeze();
        assert!(refused("SELECT * FROM lots", 4).contains("stopping"));
    }
}
