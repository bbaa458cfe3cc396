//! Live queries in a cluster of processes. Subscribers connect to
//! process 0 (its HTTP port), but a query's dataflow must be built by
//! every worker of every process, in the same order, over the same
//! snapshot time, and the traces it imports must not compact past that
//! time on any process. So worker 0 decides, and tells every worker:
//! - Worker 0's announcer turns the registry into
//!   [`QueryControl`] instructions on the cluster's control dataflow
//!   (`super::cluster`): attach query `id` (its SQL, and the snapshot
//!   time worker 0 chose), detach it, how far the shared traces may
//!   compact (it holds the `AS KNOWN AT` times of process 0's registry),
//!   and finally "no more queries".
//! - Every worker applies the instructions in the order worker 0 sent them
//!   ([`ClusterQueries::poll`]): timely delivers one sender's messages in
//!   order, so every worker attaches the same queries in the same order,
//!   and a compaction never overtakes the attach of a query that reads
//!   an older time.
//! - A query's updates are exchanged to worker 0 inside its dataflow
//!   (`WorkerQueries::new(_, gather = true)`), which sends them and the
//!   progress marks to the subscriber, as in one process.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use deltabook_dataflows::driver::Driver;
use deltabook_dataflows::engine::Time;
use deltabook_dataflows::query::Plan;
use serde::{Deserialize, Serialize};

use super::cluster::ClusterLink;
use super::queries::{QueryRegistry, Subscription, WorkerQueries};

/// How long a stopping worker waits for worker 0's last query
/// instruction (it comes at once unless process 0 is gone).
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// A live-query instruction from worker 0 to every worker of a cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueryControl {
    /// Attach query `id`, compiled from `sql`, its snapshot at the time
    /// before `snapshot_before`.
    Attach {
        /// Registry id on process 0.
        id: u64,
        /// The query's text.
        sql: String,
        /// The engine's completed frontier when worker 0 attached it.
        snapshot_before: Time,
    },
    /// Detach query `id`.
    Detach(u64),
    /// The shared traces may compact up to this time.
    HistoryFrom(Time),
    /// No query is attached after this one.
    Closed,
}

/// Where a worker's end of the control dataflow leaves the query
/// instructions, in the order they arrived.
pub type QueryInbox = Rc<RefCell<VecDeque<QueryControl>>>;

/// Worker 0 of a cluster: tells every worker which queries to attach and
/// detach, and how far the shared traces may compact.
#[derive(Default)]
struct QueryAnnouncer {
    /// Registry entries announced so far.
    announced: usize,
    /// Announced and not yet detached.
    live: Vec<Arc<Subscription>>,
    /// The frontier the last compaction was computed for.
    history_for: Option<Option<Time>>,
    /// The last compaction sent.
    history_sent: Option<Time>,
}

impl QueryAnnouncer {
    /// Sends, in this order: a new compaction (for the completed
    /// frontier `completed`, keeping `window` timestamps and every held
    /// `AS KNOWN AT` time), the queries registered since the last call
    /// (their snapshot before `completed`), and a detach for each
    /// announced query that was closed.
    fn announce(
        &mut self,
        registry: &QueryRegistry,
        completed: Option<Time>,
        window: u64,
        mut send: impl FnMut(QueryControl),
    ) {
        if self.history_for != Some(completed) {
            self.history_for = Some(completed);
            let from = registry.history_from(completed, window);
            if self.history_sent != Some(from) {
                self.history_sent = Some(from);
                send(QueryControl::HistoryFrom(from));
            }
        }
        for subscription in registry.since(self.announced) {
            self.announced += 1;
            send(QueryControl::Attach {
                id: subscription.id,
                sql: subscription.plan.sql.clone(),
                snapshot_before: registry.snapshot_before(completed),
            });
            self.live.push(subscription);
        }
        self.live.retain(|subscription| {
            if subscription.is_closed() {
                send(QueryControl::Detach(subscription.id));
                false
            } else {
                true
            }
        });
    }

    /// The service is stopping: refuses new subscriptions, ends the
    /// streams of those never announced, detaches the announced ones and
    /// sends the last instruction.
    fn close(&mut self, registry: &QueryRegistry, mut send: impl FnMut(QueryControl)) {
        registry.freeze();
        for subscription in registry.since(self.announced) {
            subscription.close();
        }
        for subscription in self.live.drain(..) {
            subscription.close();
            send(QueryControl::Detach(subscription.id));
        }
        send(QueryControl::Closed);
    }
}

/// One worker's live queries in a cluster: what worker 0 told it (and,
/// on worker 0, the telling).
pub struct ClusterQueries {
    inbox: QueryInbox,
    queries: WorkerQueries,
    /// Worker 0's announcer.
    announcer: Option<QueryAnnouncer>,
    /// `Closed` arrived.
    closed: bool,
}

impl ClusterQueries {
    /// `worker`'s queries, reading `inbox`; `local_workers` is its
    /// process's worker count. Until the first compaction instruction the
    /// driver keeps all history.
    pub fn new(
        worker: &timely::worker::Worker,
        inbox: QueryInbox,
        driver: &mut Driver,
        local_workers: usize,
    ) -> ClusterQueries {
        driver.keep_history_from(0);
        ClusterQueries {
            inbox,
            queries: WorkerQueries::new(local_workers, true),
            announcer: (worker.index() == 0).then(QueryAnnouncer::default),
            closed: false,
        }
    }

    /// Call between steps of the engine loop. Worker 0 first announces
    /// what changed in `registry` (keeping `window` timestamps of
    /// history); then every worker applies the instructions that arrived,
    /// in order, and worker 0 sends progress marks. A query's SQL that
    /// does not compile here is an error (the processes run different
    /// builds), since this worker could not build the dataflow the others
    /// build.
    pub fn poll(
        &mut self,
        worker: &mut timely::worker::Worker,
        driver: &mut Driver,
        registry: &QueryRegistry,
        link: &mut ClusterLink,
        window: u64,
    ) -> Result<()> {
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.announce(registry, driver.frontier(), window, |i| link.query(i));
        }
        self.apply(worker, driver, registry)
    }

    fn apply(
        &mut self,
        worker: &mut timely::worker::Worker,
        driver: &mut Driver,
        registry: &QueryRegistry,
    ) -> Result<()> {
        loop {
            let next = self.inbox.borrow_mut().pop_front();
            let Some(instruction) = next else { break };
            match instruction {
                QueryControl::HistoryFrom(from) => driver.keep_history_from(from),
                QueryControl::Attach {
                    id,
                    sql,
                    snapshot_before,
                } => {
                    // Only process 0's registry holds subscriptions.
                    let subscription = match registry.get(id) {
                        Some(subscription) => subscription,
                        None => {
                            let plan = Plan::compile(&sql).map_err(|e| {
                                anyhow!("live query {id} does not compile on this process ({e}); do the processes run one build?")
                            })?;
                            Arc::new(Subscription::without_subscriber(id, plan))
                        }
                    };
                    self.queries.attach(
                        worker,
                        driver.shared_tables(),
                        subscription,
                        registry,
                        snapshot_before,
                    );
                }
                QueryControl::Detach(id) => self.queries.detach(worker, id, registry),
                QueryControl::Closed => self.closed = true,
            }
        }
        self.queries.send_progress(worker);
        Ok(())
    }

    /// The service is stopping: worker 0 closes the registry and sends its
    /// last instructions; every worker steps until the last one arrived,
    /// so all have attached the same queries, then detaches what is left.
    pub fn stop(
        &mut self,
        worker: &mut timely::worker::Worker,
        driver: &mut Driver,
        registry: &QueryRegistry,
        link: &mut ClusterLink,
    ) -> Result<()> {
        if let Some(announcer) = self.announcer.as_mut() {
            announcer.close(registry, |i| link.query(i));
        }
        let started = Instant::now();
        while !self.closed {
            if started.elapsed() > CLOSE_WAIT {
                return Err(anyhow!(
                    "stopping: worker 0's last live-query instruction did not arrive in {CLOSE_WAIT:?}"
                ));
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.apply(worker, driver, registry)?;
        }
        self.queries.detach_all(worker, registry);
        Ok(())
    }
}
