//! The resource ledger: every task, OS thread and connection in the process belongs to an
//! [`Owner`], and each owner keeps live counts and names of what it holds.
//!
//! JRaft's thread leak went unnoticed because nothing knew who had created the RPC processor
//! pools. Here the only way to spawn is through an owner handle (clippy's `disallowed-methods`
//! enforces it), so a stopped owner whose counts are not zero is a leak that can be named.

pub mod conn;
mod verdict;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use verdict::{verdict, Direction, Leak, Residual};

/// The kinds of owner, as they appear in the `owner_kind` metric label (a contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKind {
    /// The node itself, and its HTTP server (`node/http`).
    Node,
    /// The shared gRPC server and its accepted connections.
    RpcServer,
    /// One peer's shared channel: its connection and its worker tasks.
    Peer,
    /// The storage engine's writer thread.
    Storage,
    /// One Raft group: openraft's tasks and the group's RPC streams.
    Group,
    /// The trace exporter: its batching task, its client's tasks and its collector connection.
    Telemetry,
}

impl OwnerKind {
    /// Every kind, as the metrics pre-initialise them.
    pub const ALL: [OwnerKind; 6] = [
        OwnerKind::Node,
        OwnerKind::RpcServer,
        OwnerKind::Peer,
        OwnerKind::Storage,
        OwnerKind::Group,
        OwnerKind::Telemetry,
    ];

    /// The kind as in the `owner_kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Node => "node",
            OwnerKind::RpcServer => "rpc_server",
            OwnerKind::Peer => "peer",
            OwnerKind::Storage => "storage",
            OwnerKind::Group => "group",
            OwnerKind::Telemetry => "telemetry",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Live counts of one owner, read at any moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live tokio tasks.
    pub tasks: i64,
    /// Live OS threads.
    pub threads: i64,
    /// Open accepted connections (or streams).
    pub inbound: i64,
    /// Open dialled connections (or streams).
    pub outbound: i64,
}

/// Process-wide totals kept by the ledger: starts, stops and leak verdicts per owner kind.
#[derive(Default)]
struct KindTotals {
    starts: AtomicU64,
    stops: AtomicU64,
    leaked_tasks: AtomicU64,
    leaked_threads: AtomicU64,
    leaked_connections: AtomicU64,
}

/// Totals for one owner kind, as exported to metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindSnapshot {
    /// Owners of the kind started.
    pub starts: u64,
    /// Owners of the kind stopped (judged).
    pub stops: u64,
    /// Tasks their verdicts found.
    pub leaked_tasks: u64,
    /// Threads their verdicts found.
    pub leaked_threads: u64,
    /// Connections their verdicts found.
    pub leaked_connections: u64,
}

struct LedgerInner {
    /// Whether owners count what they hold. Off only to measure what the accounting costs:
    /// spawns still go through owners and are still joined at stop, but nothing is counted,
    /// named or judged. Per ledger, so that two nodes in one process never share the switch.
    accounting: bool,
    owners: Mutex<BTreeMap<u64, Weak<OwnerInner>>>,
    next_owner: AtomicU64,
    totals: [KindTotals; OwnerKind::ALL.len()],
}

/// The registry of owners. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// A ledger that counts everything its owners hold.
    pub fn new() -> Self {
        Self::with_accounting(true)
    }

    /// A ledger whose accounting is on or off (off only to measure what the accounting costs).
    pub fn with_accounting(accounting: bool) -> Self {
        Ledger {
            inner: Arc::new(LedgerInner {
                accounting,
                owners: Mutex::new(BTreeMap::new()),
                next_owner: AtomicU64::new(1),
                totals: Default::default(),
            }),
        }
    }

    /// Whether this ledger counts what its owners hold.
    pub fn accounting(&self) -> bool {
        self.inner.accounting
    }

    /// Creates a root owner (the node). Other owners are its descendants via [`Owner::child`].
    pub fn root(&self, kind: OwnerKind, id: impl Into<String>) -> Owner {
        self.make(kind, id.into(), CancellationToken::new())
    }

    fn make(&self, kind: OwnerKind, id: String, token: CancellationToken) -> Owner {
        let accounting = self.inner.accounting;
        let key = self.inner.next_owner.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(OwnerInner {
            key,
            kind,
            id,
            ledger: self.clone(),
            tracker: TaskTracker::new(),
            token,
            tasks: AtomicI64::new(0),
            threads: AtomicI64::new(0),
            inbound: AtomicI64::new(0),
            outbound: AtomicI64::new(0),
            next_item: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
            children: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            monitor: (kind == OwnerKind::Group && accounting).then(tokio_metrics::TaskMonitor::new),
        });
        lock(&self.inner.owners).insert(key, Arc::downgrade(&inner));
        self.inner.totals[kind.index()]
            .starts
            .fetch_add(1, Ordering::Relaxed);
        Owner { inner }
    }

    /// Every owner that is running, or stopped with resources left, with its live counts.
    pub fn owners(&self) -> Vec<(OwnerKind, String, Counts)> {
        let owners = lock(&self.inner.owners);
        owners
            .values()
            .filter_map(Weak::upgrade)
            .filter(|o| !o.stopped.load(Ordering::Acquire) || o.counts() != Counts::default())
            .map(|o| (o.kind, o.id.clone(), o.counts()))
            .collect()
    }

    /// Tasks owned by anyone, stopped or not, for the unowned-task figure (tokio's alive tasks
    /// minus these).
    pub fn owned_tasks(&self) -> i64 {
        let owners = lock(&self.inner.owners);
        owners
            .values()
            .filter_map(Weak::upgrade)
            .map(|o| o.tasks.load(Ordering::Relaxed))
            .sum()
    }

    /// Every leak verdict this ledger has given, of any kind: tasks, threads and connections
    /// left behind by owners that stopped.
    pub fn leaked(&self) -> u64 {
        OwnerKind::ALL
            .iter()
            .map(|k| {
                let t = self.totals(*k);
                t.leaked_tasks + t.leaked_threads + t.leaked_connections
            })
            .sum()
    }

    /// Starts, stops and leak verdicts of one owner kind so far.
    pub fn totals(&self, kind: OwnerKind) -> KindSnapshot {
        let t = &self.inner.totals[kind.index()];
        KindSnapshot {
            starts: t.starts.load(Ordering::Relaxed),
            stops: t.stops.load(Ordering::Relaxed),
            leaked_tasks: t.leaked_tasks.load(Ordering::Relaxed),
            leaked_threads: t.leaked_threads.load(Ordering::Relaxed),
            leaked_connections: t.leaked_connections.load(Ordering::Relaxed),
        }
    }

    fn record_leak(&self, kind: OwnerKind, leak: &Leak) {
        let t = &self.inner.totals[kind.index()];
        t.leaked_tasks.fetch_add(leak.tasks, Ordering::Relaxed);
        t.leaked_threads.fetch_add(leak.threads, Ordering::Relaxed);
        t.leaked_connections
            .fetch_add(leak.connections, Ordering::Relaxed);
    }

    fn forget(&self, key: u64) {
        lock(&self.inner.owners).remove(&key);
    }
}

/// What a live item is, for naming leftovers in a leak report.
#[derive(Clone, Debug)]
enum Item {
    Task(Cow<'static, str>),
    Thread(String),
    Conn(Direction, String),
}

struct OwnerInner {
    key: u64,
    kind: OwnerKind,
    id: String,
    ledger: Ledger,
    tracker: TaskTracker,
    token: CancellationToken,
    tasks: AtomicI64,
    threads: AtomicI64,
    inbound: AtomicI64,
    outbound: AtomicI64,
    next_item: AtomicU64,
    live: Mutex<BTreeMap<u64, Item>>,
    /// Owners made with [`Owner::child`]: stopping this owner stops those still running first.
    children: Mutex<Vec<Weak<OwnerInner>>>,
    /// Set when a stop begins, so that a second stop (of the owner or by its parent) is a no-op.
    stopping: AtomicBool,
    /// Set at stop. A stopped owner with nothing left drops out of [`Ledger::owners`], so its
    /// series vanish; one with leftovers stays visible until they end.
    stopped: AtomicBool,
    /// Poll and scheduling figures of the owner's tasks (groups only: they are the unit that
    /// can misbehave on its own).
    monitor: Option<tokio_metrics::TaskMonitor>,
}

impl OwnerInner {
    fn counts(&self) -> Counts {
        Counts {
            tasks: self.tasks.load(Ordering::Relaxed),
            threads: self.threads.load(Ordering::Relaxed),
            inbound: self.inbound.load(Ordering::Relaxed),
            outbound: self.outbound.load(Ordering::Relaxed),
        }
    }

    fn gauge(&self, item: &Item) -> &AtomicI64 {
        match item {
            Item::Task(_) => &self.tasks,
            Item::Thread(_) => &self.threads,
            Item::Conn(Direction::Inbound, _) => &self.inbound,
            Item::Conn(Direction::Outbound, _) => &self.outbound,
        }
    }

    fn enter(self: &Arc<Self>, item: Item) -> ItemGuard {
        if !self.ledger.inner.accounting {
            // id 0 is never in `live`, so the guard's drop finds nothing to release.
            return ItemGuard {
                owner: self.clone(),
                id: 0,
            };
        }
        let id = self.next_item.fetch_add(1, Ordering::Relaxed);
        self.gauge(&item).fetch_add(1, Ordering::Relaxed);
        lock(&self.live).insert(id, item);
        ItemGuard {
            owner: self.clone(),
            id,
        }
    }
}

impl Drop for OwnerInner {
    fn drop(&mut self) {
        self.ledger.forget(self.key);
    }
}

/// Decrements its owner's gauge when the task, thread or connection it stands for ends.
pub struct ItemGuard {
    owner: Arc<OwnerInner>,
    id: u64,
}

impl Drop for ItemGuard {
    fn drop(&mut self) {
        if let Some(item) = lock(&self.owner.live).remove(&self.id) {
            self.owner.gauge(&item).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

tokio::task_local! {
    /// The owner on whose behalf the current task runs. Libraries that spawn through a static
    /// function (openraft's `AsyncRuntime::spawn`) find their owner here.
    static CURRENT: Owner;
}

/// A handle to one owner. Clones share the same counts.
#[derive(Clone)]
pub struct Owner {
    inner: Arc<OwnerInner>,
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.inner.kind, self.inner.id)
    }
}

impl Owner {
    /// A child owner. Its cancellation token is a child of this owner's, so stopping a parent
    /// signals the whole subtree.
    pub fn child(&self, kind: OwnerKind, id: impl Into<String>) -> Owner {
        let child = self
            .inner
            .ledger
            .make(kind, id.into(), self.inner.token.child_token());
        let mut children = lock(&self.inner.children);
        // Forget children that are gone, so that a node cycling groups does not grow this list.
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child.inner));
        drop(children);
        child
    }

    /// The owner's kind, as in the `owner_kind` metric label.
    pub fn kind(&self) -> OwnerKind {
        self.inner.kind
    }

    /// The owner's stable id, as in the `owner` metric label.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The ledger this owner belongs to.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Whether this owner's stop has begun (or finished).
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Cancelled when this owner, or an ancestor, starts stopping.
    pub fn token(&self) -> &CancellationToken {
        &self.inner.token
    }

    /// What the owner holds right now.
    pub fn counts(&self) -> Counts {
        self.inner.counts()
    }

    /// The tokio-metrics monitor of this owner's tasks, for groups.
    pub fn task_monitor(&self) -> Option<&tokio_metrics::TaskMonitor> {
        self.inner.monitor.as_ref()
    }

    /// Spawns a tokio task owned by this owner. The task also runs with this owner as the
    /// task-local current owner, so that whatever it spawns through [`spawn_current`] is
    /// attributed here as well.
    #[allow(clippy::disallowed_methods)]
    pub fn spawn<F>(
        &self,
        name: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let guard = self.inner.enter(Item::Task(name.into()));
        let scoped = CURRENT.scope(self.clone(), async move {
            let _guard = guard;
            fut.await
        });
        match &self.inner.monitor {
            Some(m) => self.inner.tracker.spawn(m.instrument(scoped)),
            None => self.inner.tracker.spawn(scoped),
        }
    }

    /// Runs a blocking closure on tokio's blocking pool, counted as one of this owner's tasks.
    #[allow(clippy::disallowed_methods)]
    pub fn spawn_blocking<F, T>(
        &self,
        name: impl Into<Cow<'static, str>>,
        f: F,
    ) -> tokio::task::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.inner.enter(Item::Task(name.into()));
        self.inner.tracker.spawn_blocking(move || {
            let _guard = guard;
            f()
        })
    }

    /// Spawns a named OS thread owned by this owner. Linux shows at most 15 bytes of the name in
    /// `/proc/self/task/*/comm`, so names should start with a short owner prefix.
    #[allow(clippy::disallowed_methods)]
    pub fn spawn_thread<F, T>(
        &self,
        name: impl Into<String>,
        f: F,
    ) -> std::io::Result<std::thread::JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = name.into();
        let guard = self.inner.enter(Item::Thread(name.clone()));
        std::thread::Builder::new().name(name).spawn(move || {
            let _guard = guard;
            f()
        })
    }

    /// Counts one OS thread that a library spawns itself (the state engine's workers), for as
    /// long as the returned guard lives. Its holder drops the guard only after the library
    /// has joined the thread, so that a library that fails to stop its threads shows up as a
    /// leak of this owner like any other.
    pub fn track_foreign_thread(&self, name: impl Into<String>) -> ItemGuard {
        self.inner.enter(Item::Thread(name.into()))
    }

    /// Counts one connection for as long as the returned guard lives. Wrappers around sockets
    /// hold the guard, so the count drops exactly when the socket does.
    pub fn track_connection(&self, direction: Direction, peer: impl Into<String>) -> ItemGuard {
        self.inner.enter(Item::Conn(direction, peer.into()))
    }

    /// Runs `fut` with this owner as the current owner, without spawning. Used around library
    /// calls (such as `openraft::Raft::new`) that spawn their tasks through a static function.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.clone(), fut).await
    }

    /// Stops this owner, within `deadline` in all. It cancels its token (and so its children's),
    /// stops every child owner that is still running (their own stops, concurrently, each with
    /// its own verdict), then waits for its own tasks, and until every gauge reads zero. What remains is a leak: it is counted in the ledger and logged by name at error
    /// level. Returns this owner's own verdict; a second stop returns `None` at once.
    ///
    /// Callers that need an order among the children (the node stops its groups before its
    /// peers, and those before the RPC server) stop them one by one first; this then finds
    /// them stopped. A child nobody stopped is still stopped and judged here, never forgotten.
    pub async fn stop(&self, deadline: Duration) -> Option<Leak> {
        self.stop_until(tokio::time::Instant::now() + deadline)
            .await
    }

    fn stop_until(
        &self,
        until: tokio::time::Instant,
    ) -> futures::future::BoxFuture<'_, Option<Leak>> {
        Box::pin(async move {
            if self.inner.stopping.swap(true, Ordering::AcqRel) {
                return None;
            }
            // Signals the whole subtree at once (children's tokens are child tokens), so that
            // this owner's own tasks end while its children are being judged.
            self.inner.token.cancel();
            let children: Vec<Owner> = lock(&self.inner.children)
                .iter()
                .filter_map(Weak::upgrade)
                .map(|inner| Owner { inner })
                .filter(|c| !c.is_stopping())
                .collect();
            futures::future::join_all(children.iter().map(|c| c.stop_until(until))).await;
            self.inner.tracker.close();
            let _ = tokio::time::timeout_at(until, self.inner.tracker.wait()).await;
            // Threads and connections end on their own schedule; poll their gauges until the
            // deadline.
            while self.counts() != Counts::default() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.finish()
        })
    }

    /// Records the stop and returns the leak verdict on what is still alive now.
    fn finish(&self) -> Option<Leak> {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::Release);
        inner.ledger.inner.totals[inner.kind.index()]
            .stops
            .fetch_add(1, Ordering::Relaxed);
        let residual: Vec<Residual> = lock(&inner.live)
            .values()
            .map(|item| match item {
                Item::Task(n) => Residual::Task(n.to_string()),
                Item::Thread(n) => Residual::Thread(n.clone()),
                Item::Conn(d, p) => Residual::Connection(*d, p.clone()),
            })
            .collect();
        let leak = verdict(&residual)?;
        inner.ledger.record_leak(inner.kind, &leak);
        tracing::error!(
            owner_kind = %inner.kind,
            owner = %inner.id,
            tasks = leak.tasks,
            threads = leak.threads,
            connections = leak.connections,
            remaining = %leak.names.join(", "),
            "leak: owner stopped with live resources"
        );
        Some(leak)
    }
}

/// Spawns on behalf of the task-local current owner. Outside any owner's scope the task is
/// still spawned, but it is counted nowhere and shows up in `raftnode_unowned_tasks`, which is
/// exactly where an attribution gap should show.
#[allow(clippy::disallowed_methods)]
#[track_caller]
pub fn spawn_current<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let location = std::panic::Location::caller();
    match CURRENT.try_with(Owner::clone) {
        Ok(owner) => owner.spawn(
            format!("{}:{}", short_path(location.file()), location.line()),
            fut,
        ),
        Err(_) => tokio::task::spawn(fut),
    }
}

/// Runs a closure on tokio's blocking pool on behalf of the current owner.
#[allow(clippy::disallowed_methods)]
pub fn spawn_blocking_current<F, T>(f: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match CURRENT.try_with(Owner::clone) {
        Ok(owner) => owner.spawn_blocking("blocking", f),
        Err(_) => tokio::task::spawn_blocking(f),
    }
}

/// Trims a source path to its crate-relative tail so that task names stay readable.
fn short_path(path: &str) -> &str {
    match path.find("/src/") {
        Some(i) => {
            let head = &path[..i];
            let start = head.rfind('/').map(|j| j + 1).unwrap_or(0);
            &path[start..]
        }
        None => path,
    }
}

/// Poisoning only means another thread panicked while holding the lock; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_return_to_zero_after_stop() {
        let ledger = Ledger::new();
        let node = ledger.root(OwnerKind::Node, "main");
        let group = node.child(OwnerKind::Group, "7");
        let token = group.token().clone();
        group.spawn("waits-for-cancel", async move { token.cancelled().await });
        let t = group.token().clone();
        group
            .spawn_thread("rn-test", move || {
                while !t.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        assert_eq!(group.counts().tasks, 1);
        assert_eq!(group.counts().threads, 1);
        assert!(group.stop(Duration::from_secs(5)).await.is_none());
        assert_eq!(group.counts(), Counts::default());
        assert_eq!(ledger.totals(OwnerKind::Group).stops, 1);
    }

    #[tokio::test]
    async fn a_task_that_ignores_cancel_is_a_named_leak() {
        let ledger = Ledger::new();
        let group = ledger.root(OwnerKind::Group, "3");
        group.spawn("stubborn", std::future::pending::<()>());
        let _conn = group.track_connection(Direction::Outbound, "127.0.0.1:9");
        let leak = group.stop(Duration::from_millis(50)).await.unwrap();
        assert_eq!((leak.tasks, leak.connections), (1, 1));
        assert!(leak.names.iter().any(|n| n.contains("stubborn")));
        assert_eq!(ledger.totals(OwnerKind::Group).leaked_tasks, 1);
    }

    #[tokio::test]
    async fn stopping_a_parent_stops_and_judges_its_children_first() {
        let ledger = Ledger::new();
        let node = ledger.root(OwnerKind::Node, "main");
        let clean = node.child(OwnerKind::Group, "1");
        let leaky = node.child(OwnerKind::Group, "2");
        let token = clean.token().clone();
        clean.spawn("waits", async move { token.cancelled().await });
        leaky.spawn("stubborn", std::future::pending::<()>());
        let own = node.token().clone();
        node.spawn("node-task", async move { own.cancelled().await });
        // The node's own verdict is clean; the leaky child's verdict is its own.
        assert!(node.stop(Duration::from_millis(200)).await.is_none());
        assert!(clean.is_stopping() && leaky.is_stopping());
        assert_eq!(ledger.totals(OwnerKind::Group).stops, 2);
        assert_eq!(ledger.totals(OwnerKind::Group).leaked_tasks, 1);
        assert_eq!(ledger.totals(OwnerKind::Node).stops, 1);
        assert_eq!(ledger.leaked(), 1);
        // A second stop is a no-op: no second verdict, no second count.
        assert!(leaky.stop(Duration::from_millis(10)).await.is_none());
        assert_eq!(ledger.totals(OwnerKind::Group).stops, 2);
    }

    #[tokio::test]
    async fn accounting_off_counts_nothing_but_still_joins() {
        let ledger = Ledger::with_accounting(false);
        let group = ledger.root(OwnerKind::Group, "1");
        let token = group.token().clone();
        group.spawn("waits", async move { token.cancelled().await });
        assert_eq!(group.counts(), Counts::default());
        assert!(group.task_monitor().is_none());
        assert!(group.stop(Duration::from_secs(5)).await.is_none());
    }

    #[tokio::test]
    async fn spawn_current_attributes_nested_tasks() {
        let ledger = Ledger::new();
        let group = ledger.root(OwnerKind::Group, "1");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        group
            .scope(async {
                spawn_current(async move {
                    let _ = rx.await;
                });
            })
            .await;
        assert_eq!(group.counts().tasks, 1);
        drop(tx);
        assert!(group.stop(Duration::from_secs(5)).await.is_none());
    }
}
