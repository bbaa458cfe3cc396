//! Live queries in a cluster of processes. Subscribers connect to
//! process 0 (its HTTP port), but a query's dataflow must be built by
//! every worker of every process, in the same order, over the same
//! snapshot time, and the traces it imports must not compact past that
//! time on any process. So worker 0 decides, and tells every worker:
//! - [`QueryAnnouncer`] (worker 0) turns the registry into
//!   [`QueryControl`] instructions on the cluster's control dataflow
//!   (`super::cluster`): attach query `id` (its SQL, and the snapshot
//!   time worker 0 chose), detach it, how far the shared traces may
//!   compact (it holds the `AS KNOWN AT` times of process 0's registry),
//!   and finally "no more queries".
//! - Every worker applies the instructions in the order worker 0 sent them
//!   ([`ClusterQueries::apply`]): timely delivers one sender's messages in
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
    /// No query is attached after this one: `announced` were, in all.
    Closed {
        /// How many `Attach` instructions were sent.
        announced: u64,
    },
}

/// Where a worker's end of the control dataflow leaves the query
/// instructions, in the order they arrived.
pub type QueryInbox = Rc<RefCell<VecDeque<QueryControl>>>;

/// Worker 0 of a cluster: tells every worker which queries to attach and
/// detach, and how far the shared traces may compact.
#[derive(Default)]
pub struct QueryAnnouncer {
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
    pub fn announce(
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
                snapshot_before: completed.unwrap_or(Time::MAX),
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
    pub fn close(&mut self, registry: &QueryRegistry, mut send: impl FnMut(QueryControl)) {
        registry.freeze();
        for subscription in registry.since(self.announced) {
            subscription.close();
        }
        for subscription in self.live.drain(..) {
            subscription.close();
            send(QueryControl::Detach(subscription.id));
        }
        send(QueryControl::Closed {
            announced: self.announced as u64,
        });
    }
}

/// One worker's live queries in a cluster: what worker 0 told it.
pub struct ClusterQueries {
    inbox: QueryInbox,
    queries: WorkerQueries,
    /// This worker is on process 0 (which has the registry).
    on_process_0: bool,
    /// `Closed` arrived.
    closed: bool,
}

impl ClusterQueries {
    /// A worker's queries, reading `inbox`; `local_workers` is its
    /// process's worker count. Until the first compaction instruction the
    /// driver keeps all history.
    pub fn new(
        inbox: QueryInbox,
        driver: &mut Driver,
        local_workers: usize,
        on_process_0: bool,
    ) -> ClusterQueries {
        driver.keep_history_from(0);
        ClusterQueries {
            inbox,
            queries: WorkerQueries::new(local_workers, true),
            on_process_0,
            closed: false,
        }
    }

    /// Applies the instructions that arrived, in order, then sends
    /// progress marks (worker 0). A query's SQL that does not compile here
    /// is an error (the processes run different builds), since this worker
    /// could not build the dataflow the others build.
    pub fn apply(
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
                    let subscription = match registry.get(id).filter(|_| self.on_process_0) {
                        Some(subscription) => subscription,
                        None => {
                            let plan = Plan::compile(&sql).map_err(|e| {
                                anyhow!("live query {id} does not compile on this process ({e}); do the processes run one build?")
                            })?;
                            Arc::new(Subscription::without_subscriber(id, plan))
                        }
                    };
                    let tables = driver.shared_tables().clone();
                    self.queries
                        .attach(worker, &tables, subscription, registry, snapshot_before);
                }
                QueryControl::Detach(id) => self.queries.detach(worker, id, registry),
                QueryControl::Closed { .. } => self.closed = true,
            }
        }
        self.queries.send_progress(worker);
        Ok(())
    }

    /// The service is stopping (after [`QueryAnnouncer::close`] on worker
    /// 0): steps until worker 0's last instruction arrived, so every
    /// worker has attached the same queries, then detaches what is left.
    pub fn stop(
        &mut self,
        worker: &mut timely::worker::Worker,
        driver: &mut Driver,
        registry: &QueryRegistry,
    ) -> Result<()> {
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
