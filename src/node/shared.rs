//! What a running node shares between its servers and its typed handle: the groups, the
//! storage and peer channels they use, the shared RPC server's slot, and the node's state
//! (ready, draining). Group start and stop, proposals and reads live here, since the HTTP API,
//! the RPC server and the embedding program all use them. Nothing here is generic over the
//! state machine: commands and responses are already encoded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::ReadPolicy;
use openraft::BasicNode;
use tonic::service::Routes;
use tracing::Instrument;

use crate::group::inflight::{Inflight, InflightGuard};
use crate::group::{quiesce, Group, GroupDeps};
use crate::ledger::{Ledger, Owner, OwnerKind};
use crate::metrics::RpcMetrics;
use crate::node::config::{NodeConfig, MAX_MESSAGE_BYTES};
use crate::node::error::{GroupOpError, RequestError};
use crate::node::pacing;
use crate::node::plan;
use crate::node::registry::Registry;
use crate::node::route::{self, Route};
use crate::node::types::{AfterPurge, ReadMode};
use crate::raft::state_machine::Raft;
use crate::raft::types::{GroupId, NodeId, Proposal, Reply, RequestId, TypeConfig};
use crate::rpc::client::{self, CallError};
use crate::rpc::methods::{
    rpc, Acquaintance, Introduction, Proposed, QuiesceAnswer, QuiesceRequest, ReadIndexRequest,
    Refusal,
};
use crate::rpc::router::Router;
use crate::rpc::server::{GrpcLimits, RpcServer, Services};
use crate::state_machine::ErasedStateMachine;
use openraft::raft::VoteResponse;

/// How many groups a starting node starts at once: enough for their bootstrap writes to share
/// fsyncs, few enough that a failure stops the start soon.
pub const GROUPS_STARTING_AT_ONCE: usize = 32;

/// Makes a group's state machine, given the group's id.
pub(crate) type MachineFactory = Arc<dyn Fn(GroupId) -> Box<dyn ErasedStateMachine> + Send + Sync>;

/// The node's state, as `/readyz` and the request paths see it.
#[derive(Default)]
pub(crate) struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pub(crate) struct NodeCore {
    pub config: NodeConfig,
    pub ledger: Ledger,
    /// The `node` owner: every other owner of the node is its descendant.
    pub owner: Owner,
    pub deps: GroupDeps,
    pub registry: Registry,
    pub lifecycle: Lifecycle,
    pub rpc_metrics: Arc<RpcMetrics>,
    /// Proposals in flight on this node, its clients' and those forwarded to it.
    pub inflight: Arc<Inflight>,
    /// The tokens clients are checked against; `None` when clients are not authenticated.
    pub auth: Option<Arc<crate::auth::Authorizer>>,
    /// TLS for both servers and the peer channels; `None`: plain text.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Leadership transfers the leader balancer asked for.
    pub leader_moves: std::sync::atomic::AtomicU64,
    /// Other members whose node answers the liveness probe (set by the quiescer's probe).
    pub liveness: crate::node::liveness::Liveness,
    /// The awake budget that the groups woken after a peer's death or return and the leader
    /// balancer's moves share: each wakes groups on several nodes, and together, unpaced, they
    /// loaded a node of ten thousand groups until its peers missed its probe answers.
    pub wakes: std::sync::Mutex<pacing::Pacer>,
    /// Whether the data dir had no state when this process started, and no peer knew this
    /// node by another (`node/meet.rs`): only then may the configured groups be bootstrapped, so a
    /// restarted node, or one whose volume was wiped, never re-initialises.
    fresh: AtomicBool,
    /// This data dir's incarnation, and the peers' as this node knows them.
    pub(crate) incarnations: crate::node::incarnation::Incarnations,
    factory: MachineFactory,
    snapshot_dir: PathBuf,
    /// The program's own gRPC services, served by every incarnation of the shared server. Set
    /// once, before the server first starts (the services need the node's handle).
    app_routes: std::sync::OnceLock<Routes>,
    /// Serialises group start and stop so that two API calls cannot race on one group id.
    group_ops: tokio::sync::Mutex<()>,
    /// The shared gRPC server; `None` only while it restarts or after shutdown took it.
    rpc: tokio::sync::Mutex<Option<RpcServer>>,
    #[cfg(feature = "leak-injection")]
    pub injected: crate::leak_injection::Armed,
}

/// What the core is built from.
pub(crate) struct CoreParts {
    pub config: NodeConfig,
    pub ledger: Ledger,
    pub owner: Owner,
    pub deps: GroupDeps,
    pub rpc_metrics: Arc<RpcMetrics>,
    pub auth: Option<Arc<crate::auth::Authorizer>>,
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub fresh: bool,
    pub incarnations: crate::node::incarnation::Incarnations,
    pub factory: MachineFactory,
}

impl NodeCore {
    pub fn new(p: CoreParts) -> Arc<NodeCore> {
        let snapshot_dir = p.deps.storage.snapshot_dir().to_path_buf();
        let wakes = std::sync::Mutex::new(pacing::Pacer::new(&p.config));
        let inflight = Inflight::new(p.config.max_inflight_proposals);
        Arc::new(NodeCore {
            config: p.config,
            inflight,
            auth: p.auth,
            tls: p.tls,
            ledger: p.ledger,
            owner: p.owner,
            deps: p.deps,
            registry: Registry::default(),
            lifecycle: Lifecycle::default(),
            rpc_metrics: p.rpc_metrics,
            leader_moves: Default::default(),
            liveness: Default::default(),
            wakes,
            fresh: p.fresh.into(),
            incarnations: p.incarnations,
            factory: p.factory,
            snapshot_dir,
            app_routes: std::sync::OnceLock::new(),
            group_ops: tokio::sync::Mutex::new(()),
            rpc: tokio::sync::Mutex::new(None),
            #[cfg(feature = "leak-injection")]
            injected: Default::default(),
        })
    }

    /// Adds the program's gRPC services to the shared server, before it first starts.
    pub fn set_app_routes(&self, routes: Routes) {
        let _ = self.app_routes.set(routes);
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    }

    fn group(&self, id: GroupId) -> Result<Arc<Group>, RequestError> {
        self.registry.get(id).ok_or(RequestError::GroupNotFound(id))
    }

    /// A place for one more proposal of `g` on this node, under both bounds; refused (and
    /// counted) when either is full.
    fn admit(&self, g: &Group) -> Result<(InflightGuard, InflightGuard), String> {
        let Some(node) = self.inflight.enter() else {
            self.rpc_metrics.refused("node_proposals").inc();
            return Err(format!(
                "this node has {} proposals in flight (max_inflight_proposals); retry later",
                self.inflight.limit()
            ));
        };
        let Some(group) = g.inflight.enter() else {
            self.rpc_metrics.refused("group_proposals").inc();
            return Err(format!(
                "group {} has {} proposals in flight on this node \
                 (max_inflight_proposals_per_group); retry later",
                g.id,
                g.inflight.limit()
            ));
        };
        Ok((node, group))
    }

    /// Starts group `id` on this node. Returns `false` when it was already running. The
    /// group's preferred leader bootstraps a group that has no state yet, at the first start of a fresh
    /// node or when an operator creates the group through the API (`explicit`).
    pub async fn start_group(
        &self,
        id: GroupId,
        explicit: bool,
        after_purge: AfterPurge,
    ) -> Result<bool, GroupOpError> {
        let _serial = self.group_ops.lock().await;
        if self.deps.storage.is_erased(id) && self.registry.get(id).is_none() {
            let alone = self.config.other_peers().is_empty();
            match after_purge {
                AfterPurge::Rejoin => {}
                AfterPurge::Ask if !alone => return Err(GroupOpError::Purged(id)),
                AfterPurge::Ask | AfterPurge::Fresh => {
                    self.deps
                        .storage
                        .rejoined(id)
                        .await
                        .map_err(|e| GroupOpError::Purge {
                            group: id,
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let started = self.start_group_serialized(id, explicit).await?;
        // Its leader may sleep without it (it did not run here when asked, or its data was
        // erased here and the leader's replication to it gave up): wake the group on the
        // other members, so that the leader catches this replica up now, not at the group's
        // next write. An idle group would otherwise leave a re-added replica empty for ever.
        if let Some(g) = started.as_ref() {
            let bound = self.config.election_timeout();
            if g.is_erased() {
                let me = self.node_id();
                self.tell_members::<rpc::Erased>(g, &me, bound).await;
            } else if g.is_quiesced() {
                self.wake_members(g, bound).await;
            }
        }
        Ok(started.is_some())
    }

    /// Starts the node's configured groups, [`GROUPS_STARTING_AT_ONCE`] at a time. One by one,
    /// each bootstrap write (and its fsync) paced the start of the next, and ten thousand groups
    /// took minutes; started together, their writes share fsyncs. The groups another node
    /// bootstraps start first: they only wait for their leader, and are there when it calls.
    /// The groups this node bootstraps follow, paced by how many of them are still awake
    /// ([`pacing`]). Every start runs to its end; the first failure is returned.
    pub async fn start_groups(&self, ids: &[GroupId]) -> Result<(), GroupOpError> {
        let _serial = self.group_ops.lock().await;
        let (mine, others): (Vec<GroupId>, Vec<GroupId>) = ids
            .iter()
            .copied()
            .partition(|id| self.bootstraps(*id, false));
        let mut first_err = None;
        let mut erased = Vec::new();
        let mut note = |r: Result<Option<Arc<Group>>, GroupOpError>| match r {
            Ok(Some(g)) if g.is_erased() => {
                erased.push(g.clone());
                Some(g)
            }
            Ok(g) => g,
            Err(e) => {
                first_err.get_or_insert(e);
                None
            }
        };
        self.start_together(&others)
            .await
            .into_iter()
            .for_each(|r| {
                note(r);
            });
        let mut pacer = pacing::Pacer::new(&self.config);
        for batch in mine.chunks(GROUPS_STARTING_AT_ONCE) {
            pacer.admit(batch.len()).await;
            let started = self.start_together(batch).await;
            pacer.started(started.into_iter().filter_map(&mut note));
        }
        // Replicas still erased (a wiped data dir, or a restart before catching up after a
        // purge) tell their leaders to replicate to them from the beginning, as on an add.
        let bound = self.config.election_timeout();
        let me = self.node_id();
        use futures::StreamExt;
        futures::stream::iter(&erased)
            .for_each_concurrent(GROUPS_STARTING_AT_ONCE, |g| {
                self.tell_members::<rpc::Erased>(g, &me, bound)
            })
            .await;
        first_err.map_or(Ok(()), Err)
    }

    /// Starts `ids`, [`GROUPS_STARTING_AT_ONCE`] at a time, with the group-operations lock held.
    async fn start_together(
        &self,
        ids: &[GroupId],
    ) -> Vec<Result<Option<Arc<Group>>, GroupOpError>> {
        use futures::StreamExt;
        futures::stream::iter(ids.iter().copied())
            .map(|id| self.start_group_serialized(id, false))
            .buffer_unordered(GROUPS_STARTING_AT_ONCE)
            .collect()
            .await
    }

    /// The groups running here with `node` among their members.
    fn groups_with_member(&self, node: NodeId) -> Vec<GroupId> {
        self.registry
            .all()
            .iter()
            .filter(|g| {
                g.raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .nodes()
                    .any(|(id, _)| *id == node)
            })
            .map(|g| g.id)
            .collect()
    }

    /// Records what the start-up check found this data dir to be (`node/meet.rs`).
    pub(crate) fn set_fresh(&self, fresh: bool) {
        self.fresh.store(fresh, Ordering::Release);
    }

    /// Whether this node bootstraps group `id` when it starts it: it is the group's preferred
    /// leader, and the group has no state yet, at the first start of a fresh node or when an
    /// operator creates the group (`explicit`).
    fn bootstraps(&self, id: GroupId, explicit: bool) -> bool {
        // An erased replica joins the group its peers still run; it never starts a new one.
        (self.fresh.load(Ordering::Acquire) || explicit)
            && self.config.is_bootstrapper(id)
            && !self.deps.storage.has_group(id)
            && !self.deps.storage.is_erased(id)
    }

    /// The body of [`NodeCore::start_group`], with the group-operations lock held. Returns the
    /// group, or `None` when it was already running.
    #[tracing::instrument(name = "group.start", skip_all, fields(group = id))]
    async fn start_group_serialized(
        &self,
        id: GroupId,
        explicit: bool,
    ) -> Result<Option<Arc<Group>>, GroupOpError> {
        if self.lifecycle.is_draining() {
            return Err(GroupOpError::Draining);
        }
        if self.registry.get(id).is_some() {
            return Ok(None);
        }
        let bootstrap = self.bootstraps(id, explicit).then(|| self.members());
        let owner = self.owner.child(OwnerKind::Group, id.to_string());
        let machine = (self.factory)(id);
        let group = Arc::new(Group::start(&self.deps, id, owner, machine, bootstrap).await?);
        tracing::info!(group = id, "group started");
        self.registry.insert(group.clone());
        Ok(Some(group))
    }

    /// Stops group `id` on this node; the shared server and the other groups keep serving.
    #[tracing::instrument(name = "group.stop", skip_all, fields(group = id, purge))]
    pub async fn stop_group(&self, id: GroupId, purge: bool) -> Result<(), GroupOpError> {
        let _serial = self.group_ops.lock().await;
        let group = self.registry.get(id).ok_or(GroupOpError::NotFound(id))?;
        let plan = plan::group_stop(self.config.shutdown_grace(), self.config.leak_deadline());
        // The group stays routable while it hands over: the new leader's heartbeats must reach
        // it, or it never learns that leadership moved and waits out the deadline.
        crate::node::handover::hand_over_leadership(std::slice::from_ref(&group), plan.handover)
            .await;
        self.registry.remove(id);
        // Its replicas elsewhere may sleep, trusting this node, which stays alive: wake them.
        self.wake_members(&group, plan.handover).await;
        #[cfg(feature = "leak-injection")]
        self.injected
            .before_group_stop(&group, self.config.grpc_addr);
        group.stop(plan.verdict).await;
        if purge {
            self.deps
                .storage
                .drop_group(id)
                .await
                .map_err(|e| GroupOpError::Purge {
                    group: id,
                    reason: e.to_string(),
                })?;
        }
        tracing::info!(group = id, purge, "group stopped");
        Ok(())
    }

    /// Proposes on this node only: the path of a forwarded proposal, and the first attempt of
    /// every proposal.
    async fn propose_here(
        &self,
        g: &Group,
        command: Vec<u8>,
        request: Option<RequestId>,
    ) -> Result<Proposed, Refusal> {
        // Counted before the wake, so that the quiescer never puts the group to sleep under it.
        let guard = g.stats.proposal();
        g.wake_for_work().await;
        // From submit through commit to apply: client_write answers once the entry is applied
        // here. The entry carries this span's context to every node, so that replication and
        // apply on every member join the proposal's trace.
        let span = tracing::info_span!(
            "raft.propose",
            group = g.id,
            raft.index = tracing::field::Empty
        );
        let written = async {
            let proposal = Proposal {
                command,
                trace: crate::otel::propagation::current_traceparent(),
                request,
            };
            let written = g.raft.client_write(proposal).await;
            if let Ok(w) = &written {
                tracing::debug!(index = w.log_id.index, "proposal applied");
            }
            written
        }
        .instrument(span.clone())
        .await;
        match written {
            Ok(resp) => {
                span.record("raft.index", resp.log_id.index);
                guard.finish(Some(true));
                Ok(Proposed {
                    index: resp.log_id.index,
                    reply: resp.data,
                })
            }
            Err(e) => match e.forward_to_leader() {
                Some(f) => {
                    guard.finish(None);
                    Err(Refusal::NotLeader {
                        leader: f.leader_id,
                        addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                    })
                }
                None => {
                    guard.finish(Some(false));
                    // Quorum loss, a fatal stop of the group: transient to a client.
                    tracing::debug!(group = g.id, error = %e, "proposal refused");
                    Err(Refusal::Unavailable(e.to_string()))
                }
            },
        }
    }

    /// Proposes `command` to `group`, through whichever node leads it, retrying until the
    /// request timeout. Returns the log index it was applied at and the encoded response.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Vec<u8>,
    ) -> Result<(u64, Reply), RequestError> {
        let g = self.client_group(group)?;
        let _admitted = self.admit(&g).map_err(RequestError::Overloaded)?;
        // Numbered once: every attempt proposes the same request, which the state machine
        // applies once however many copies reach the log.
        let open = g.requests.open();
        drop(g);
        // What is forwarded is the command and its number: the leader's own proposal span is
        // the parent that replication and apply join.
        let proposal = Proposal {
            command,
            trace: None,
            request: Some(open.id),
        };
        let proposal = &proposal;
        self.with_retry(group, |leader| async move {
            let g = self.client_group(group)?;
            // Fail-stop: a node whose storage failed takes no writes, not even to forward.
            if self.deps.storage.is_failed() {
                return Err(RequestError::StorageFailed);
            }
            let Some((leader, addr)) = leader else {
                return Ok(self
                    .propose_here(&g, proposal.command.clone(), proposal.request)
                    .await
                    .map(|p| (p.index, p.reply)));
            };
            let span = tracing::info_span!("raft.forward", group, leader, otel.kind = "client");
            let sent = self
                .forward::<rpc::Propose>(group, leader, &addr, proposal, &span)
                .instrument(span.clone())
                .await;
            match sent {
                Ok(Ok(p)) => Ok(Ok((p.index, p.reply))),
                Ok(Err(Refusal::Invalid(e))) => Err(RequestError::Rejected(e)),
                Ok(Err(r)) => Ok(Err(r)),
                Err(e) => Ok(Err(Refusal::Unavailable(e.to_string()))),
            }
        })
        .await
    }

    /// Waits until a read of `group` at `mode` is linearizable here, and returns the group.
    /// On a follower, the leader grants a read index and this node waits until it has
    /// applied that far: the read is then served here, from this node's state.
    pub async fn read_barrier(
        &self,
        group: GroupId,
        mode: ReadMode,
    ) -> Result<Arc<Group>, RequestError> {
        if mode == ReadMode::Local {
            return self.client_group(group);
        }
        let lease = mode == ReadMode::Lease;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout();
        let span = tracing::info_span!("raft.read_barrier", group, ?mode);
        self.with_retry(group, |leader| async move {
            let g = self.client_group(group)?;
            let linearizer = match leader {
                None => {
                    g.wake_for_work().await;
                    let policy = if lease {
                        ReadPolicy::LeaseRead
                    } else {
                        ReadPolicy::ReadIndex
                    };
                    match g.raft.get_read_linearizer(policy).await {
                        Ok(l) => l,
                        Err(e) => {
                            return Ok(Err(match e.forward_to_leader() {
                                Some(f) => Refusal::NotLeader {
                                    leader: f.leader_id,
                                    addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                                },
                                None => Refusal::Unavailable(e.to_string()),
                            }))
                        }
                    }
                }
                Some((leader, addr)) => {
                    let req = ReadIndexRequest { lease };
                    let fwd =
                        tracing::info_span!("raft.forward", group, leader, otel.kind = "client");
                    let granted = self
                        .forward::<rpc::ReadIndex>(group, leader, &addr, &req, &fwd)
                        .instrument(fwd.clone())
                        .await;
                    match granted {
                        Ok(Ok(grant)) => {
                            Linearizer::new(grant.leader, grant.read_log_id, grant.applied)
                        }
                        Ok(Err(r)) => return Ok(Err(r)),
                        Err(e) => return Ok(Err(Refusal::Unavailable(e.to_string()))),
                    }
                }
            };
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            match linearizer.try_await_ready(&g.raft, Some(wait)).await {
                Ok(Ok(_)) => Ok(Ok(g)),
                Ok(Err(_)) => Ok(Err(Refusal::Unavailable(format!(
                    "group {group}: this node did not catch up with the leader in time"
                )))),
                Err(e) => Ok(Err(Refusal::Unavailable(e.to_string()))),
            }
        })
        .instrument(span)
        .await
    }

    /// The group for a client's request: refused while the node drains.
    fn client_group(&self, id: GroupId) -> Result<Arc<Group>, RequestError> {
        if self.lifecycle.is_draining() {
            return Err(RequestError::Draining);
        }
        self.group(id)
    }

    /// Runs `attempt` until it completes or the request timeout passes. Each attempt is given
    /// the leader to forward to (`None`: try here), from the routing policy and the refusal of
    /// the attempt before; it answers `Ok(Ok(done))`, `Ok(Err(refusal))` to go on, or an error
    /// that ends the request.
    async fn with_retry<T, F, Fut>(&self, group: GroupId, mut attempt: F) -> Result<T, RequestError>
    where
        F: FnMut(Option<(NodeId, String)>) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, Refusal>, RequestError>>,
    {
        let started = tokio::time::Instant::now();
        let timeout = self.config.request_timeout();
        let mut backoff = route::FIRST_BACKOFF;
        let mut leader = None;
        loop {
            let forwarded = leader.is_some();
            let refusal = match attempt(leader.take()).await? {
                Ok(done) => return Ok(done),
                Err(r) => r,
            };
            let hint = match refusal {
                Refusal::NotLeader { leader, addr } => Some((leader, addr)),
                Refusal::GroupNotFound | Refusal::Unavailable(_) | Refusal::Invalid(_) => None,
                // Retrying at once would only add to the leader's load.
                Refusal::Overloaded(m) => return Err(RequestError::Overloaded(m)),
            };
            if let Route::Forward { leader: l, addr } = route::route(self.node_id(), hint) {
                leader = Some((l, addr));
                // Straight to the leader this node just learned of, with no wait; after a
                // forward that was refused (leadership moved meanwhile), wait like any retry.
                if !forwarded {
                    continue;
                }
            }
            if !route::retry_allowed(started.elapsed(), backoff, timeout) {
                return Err(RequestError::NoLeader(group));
            }
            tokio::time::sleep(backoff).await;
            backoff = route::next_backoff(backoff);
        }
    }

    /// Calls `M` for `group` on peer `to` at `addr` over its shared channel, untraced.
    pub(crate) async fn call_peer<M: crate::rpc::methods::Rpc>(
        &self,
        to: NodeId,
        addr: &str,
        group: GroupId,
        req: &M::Request,
        timeout: Duration,
    ) -> Result<M::Response, CallError> {
        let channel = self
            .deps
            .network
            .peers
            .channel(to, addr)
            .map_err(|e| CallError::Remote(e.to_string()))?;
        let mut c = client::client(channel, MAX_MESSAGE_BYTES, self.deps.network.peers.stamp());
        client::call::<M>(&mut c, group, req, timeout, &tracing::Span::none()).await
    }

    /// Asks openraft to hand `g`'s leadership to `to`, waking the group here first (it is
    /// awake until it sleeps again under its new leader). A transfer whose target never takes
    /// over (it went down, or lacks entries) leaves openraft's leader refusing writes and
    /// sending no heartbeats, waiting for the other members to elect; their replicas may sleep,
    /// trusting this live node, and would wait forever. So when leadership has not moved after
    /// two election timeouts, the group is woken on every member, whose timers then elect.
    pub async fn transfer_leadership(
        self: &Arc<Self>,
        g: &Arc<Group>,
        to: NodeId,
    ) -> Result<(), String> {
        g.wake();
        let term = g.raft.metrics().borrow_watched().current_term;
        g.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| e.to_string())?;
        let (core, group) = (Arc::downgrade(self), Arc::downgrade(g));
        let after = self.config.election_timeout() * 2;
        // The watch ends with the group: a group stopped mid-transfer must not keep it alive
        // past its stop deadline (that would be judged a leak).
        let stop = g.owner().token().clone();
        let watch = async move {
            tokio::time::sleep(after).await;
            let (Some(core), Some(g)) = (core.upgrade(), group.upgrade()) else {
                return;
            };
            let stuck = g.is_leader() && g.raft.metrics().borrow_watched().current_term == term;
            if stuck {
                tracing::warn!(
                    group = g.id,
                    to,
                    "leadership transfer did not complete; waking the members to elect"
                );
                core.wake_members(&g, after).await;
            }
        };
        g.owner().spawn("transfer-watch", async move {
            stop.run_until_cancelled(watch).await;
        });
        Ok(())
    }

    /// Wakes `g`'s replicas on the other members, bounded by `bound`: when this node stops
    /// hosting a group and stays alive, their liveness probes would never wake them.
    async fn wake_members(&self, g: &Group, bound: Duration) {
        self.tell_members::<rpc::Ping>(g, &(), bound).await;
    }

    /// Sends `req` for group `g` to every other member, within `bound`; answers are ignored.
    async fn tell_members<M: crate::rpc::methods::Rpc>(
        &self,
        g: &Group,
        req: &M::Request,
        bound: Duration,
    ) {
        let m = g.raft.metrics().borrow_watched().clone();
        let me = self.node_id();
        let mut members: Vec<(NodeId, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        // A replica without state knows no membership yet: its group spans the configured
        // members.
        if m.membership_config.membership().nodes().next().is_none() {
            members = self.config.other_peers();
        }
        let calls = members
            .iter()
            .map(|(id, addr)| self.call_peer::<M>(*id, addr, g.id, req, bound));
        let _ = tokio::time::timeout(bound, futures::future::join_all(calls)).await;
    }

    /// Sends `M` for `group` to the leader at `addr` over its shared channel.
    async fn forward<M: crate::rpc::methods::Rpc>(
        &self,
        group: GroupId,
        leader: NodeId,
        addr: &str,
        req: &M::Request,
        span: &tracing::Span,
    ) -> Result<M::Response, CallError> {
        let channel = self.deps.network.peers.channel(leader, addr).map_err(|e| {
            tracing::warn!(group, error = %e, "cannot forward to leader");
            CallError::Remote(e.to_string())
        })?;
        let mut c = client::client(channel, MAX_MESSAGE_BYTES, self.deps.network.peers.stamp());
        client::call::<M>(&mut c, group, req, self.config.request_timeout(), span).await
    }
}

impl Router for NodeCore {
    fn raft(&self, group: GroupId, wake: bool) -> Option<Raft> {
        let g = self.registry.get(group)?;
        if wake {
            g.wake();
        }
        Some(g.raft.clone())
    }

    fn quiesce(&self, req: &QuiesceRequest) -> Vec<QuiesceAnswer> {
        // A draining node keeps its timers: its groups are about to change leaders.
        let draining = self.lifecycle.is_draining();
        req.groups
            .iter()
            .map(|item| {
                let Some(g) = self.registry.get(item.group) else {
                    return QuiesceAnswer::NotHere;
                };
                let accepts = !draining
                    && quiesce::follower_accepts(&g.follower_facts(), req.leader, item)
                    && g.quiesce_if(Some(item.last_log), Default::default());
                if accepts {
                    QuiesceAnswer::Agreed
                } else {
                    QuiesceAnswer::Refused
                }
            })
            .collect()
    }

    fn wake(&self, group: GroupId) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(g) = self.registry.get(group) {
                g.wake_for_work().await;
            }
        })
    }

    fn draining(&self) -> bool {
        self.lifecycle.is_draining()
    }

    fn pre_vote_refusal(&self, group: GroupId) -> Option<VoteResponse<TypeConfig>> {
        let g = self.registry.get(group)?;
        if !g.is_quiesced() {
            return None;
        }
        let m = g.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let trusted = leader == m.id || self.liveness.with(|live| live.contains(&leader));
        if !trusted {
            return None;
        }
        if leader != m.id {
            self.check_leader(&g, leader, &m);
        }
        Some(self.refusal(group, &m))
    }

    fn erased_refusal(&self, group: GroupId) -> Option<VoteResponse<TypeConfig>> {
        let g = self.registry.get(group)?;
        if !g.is_erased() {
            return None;
        }
        tracing::info!(
            group,
            "refusing a vote: this replica's data was erased and it has not caught up"
        );
        let m = g.raft.metrics().borrow_watched().clone();
        Some(self.refusal(group, &m))
    }

    fn fail_stopped(&self) -> bool {
        self.deps.storage.is_failed()
    }

    fn serving(&self) -> bool {
        self.lifecycle.is_ready()
    }

    fn meet(&self, intro: Introduction) -> Result<Acquaintance, String> {
        let mut a = self
            .incarnations
            .answer(self.node_id(), intro, |node| self.groups_with_member(node))?;
        a.cluster = self.deps.network.peers.identity().get().map(String::from);
        Ok(a)
    }

    fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    fn propose(
        &self,
        group: GroupId,
        proposal: Proposal,
    ) -> BoxFuture<'_, Result<Proposed, Refusal>> {
        Box::pin(async move {
            // A draining leader still takes forwarded proposals: it leads until it hands over.
            let g = self.registry.get(group).ok_or(Refusal::GroupNotFound)?;
            g.sm.read(|m, _| m.check(&proposal.command))
                .map_err(Refusal::Invalid)?;
            let _admitted = self.admit(&g).map_err(Refusal::Overloaded)?;
            let proposed = self
                .propose_here(&g, proposal.command, proposal.request)
                .await;
            #[cfg(feature = "leak-injection")]
            if proposed.is_ok() {
                use crate::leak_injection::ProposeFault;
                match self.injected.take_propose() {
                    Some(ProposeFault::LoseReply) => {
                        tracing::warn!(
                            group,
                            "injected fault: losing a forwarded proposal's reply"
                        );
                        return Err(Refusal::Unavailable("injected fault: reply lost".into()));
                    }
                    Some(ProposeFault::Exit) => {
                        tracing::warn!(group, "injected fault: exiting after a forwarded proposal");
                        std::process::exit(137);
                    }
                    None => {}
                }
            }
            proposed
        })
    }
}

impl NodeCore {
    /// Asks `leader`'s node, in the background, whether it still leads `g`, and wakes `g` here
    /// if not. A sleeping replica trusts a leader whose node is alive; but that node may have
    /// stopped running the group (an operator removed or purged it) while this node was down,
    /// missing the wake it sent. Asked only when a member campaigns, so it costs nothing while
    /// groups sleep undisturbed; one check per group at a time, at most one per election
    /// timeout.
    fn check_leader(&self, g: &Arc<Group>, leader: NodeId, m: &openraft::RaftMetrics<TypeConfig>) {
        if g.leader_check.swap(true, Ordering::AcqRel) {
            return;
        }
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .or_else(|| self.config.peers.get(&leader).cloned());
        let channel = addr.and_then(|a| self.deps.network.peers.channel(leader, &a).ok());
        let Some(channel) = channel else {
            g.leader_check.store(false, Ordering::Release);
            return;
        };
        let (group, timeout) = (Arc::downgrade(g), self.config.election_timeout());
        let stop = g.owner().token().clone();
        let stamp = self.deps.network.peers.stamp();
        let check = async move {
            let mut c = client::client(channel, MAX_MESSAGE_BYTES, stamp);
            let Some(id) = group.upgrade().map(|g| g.id) else {
                return;
            };
            let req = ReadIndexRequest { lease: true };
            let answer =
                client::call::<rpc::ReadIndex>(&mut c, id, &req, timeout, &tracing::Span::none())
                    .await;
            if let (Ok(Err(Refusal::NotLeader { .. } | Refusal::GroupNotFound)), Some(g)) =
                (&answer, group.upgrade())
            {
                tracing::info!(
                    group = id,
                    leader,
                    "the leader's node no longer leads the group: waking it here"
                );
                g.wake();
            }
            tokio::time::sleep(timeout).await;
        };
        let flag = Arc::downgrade(g);
        g.owner().spawn("leader-check", async move {
            stop.run_until_cancelled(check).await;
            if let Some(g) = flag.upgrade() {
                g.leader_check.store(false, Ordering::Release);
            }
        });
    }

    /// A vote refused, with this replica's vote and last log id, as openraft answers one.
    fn refusal(
        &self,
        group: GroupId,
        m: &openraft::RaftMetrics<TypeConfig>,
    ) -> VoteResponse<TypeConfig> {
        let last = self
            .deps
            .storage
            .with_group(group, |l| l.and_then(|l| l.last_log_id()));
        VoteResponse::new(m.vote, last, false)
    }

    /// Starts the shared gRPC server on `listener` under a fresh `rpc_server` owner.
    pub async fn start_rpc_server(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> Result<std::net::SocketAddr, GroupOpError> {
        let owner = self.owner.child(OwnerKind::RpcServer, "main");
        let services = Services {
            router: self.clone(),
            app: self.app_routes.get().cloned(),
            metrics: self.rpc_metrics.clone(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            auth: self.auth.clone(),
            cluster: self.deps.network.peers.identity().clone(),
            tls: self.tls.clone(),
            limits: GrpcLimits {
                max_connections: self.config.max_connections,
                max_concurrent_streams: self.config.grpc_max_concurrent_streams,
            },
        };
        let addr = self.config.grpc_addr;
        let server = RpcServer::start(listener, owner, services)
            .map_err(|source| GroupOpError::RpcRestart { addr, source })?;
        let local = server.local_addr();
        *self.rpc.lock().await = Some(server);
        Ok(local)
    }

    /// Stops the shared gRPC server (drain, then the owner's leak verdict). Groups keep running;
    /// their peers see this node unreachable until it serves again.
    pub async fn stop_rpc_server(
        &self,
        drain: Duration,
        verdict: Duration,
    ) -> Option<std::net::SocketAddr> {
        let server = self.rpc.lock().await.take()?;
        let addr = server.local_addr();
        #[cfg(feature = "leak-injection")]
        self.injected.before_rpc_stop(server.owner());
        server.stop(drain, verdict).await;
        Some(addr)
    }

    /// Stops and restarts the shared gRPC server on the same address: the soak test's
    /// equivalent of JRaft users recreating their shared RPC server.
    pub async fn restart_rpc_server(self: &Arc<Self>) -> Result<(), GroupOpError> {
        if self.lifecycle.is_draining() {
            return Err(GroupOpError::Draining);
        }
        let grace = self.config.shutdown_grace();
        // The address it listened on, which may be a port the OS chose at start.
        let addr = self
            .stop_rpc_server(grace / 4, self.config.leak_deadline())
            .await
            .unwrap_or(self.config.grpc_addr);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GroupOpError::RpcRestart { addr, source })?;
        self.start_rpc_server(listener).await?;
        tracing::info!(%addr, "gRPC server restarted");
        Ok(())
    }
}
