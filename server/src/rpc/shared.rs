//! What every listener and dispatcher of one active node shares: the
//! replicated state behind the duplicate-request cache, the set of calls
//! executing now, the reply-time fence, the counters of calls left
//! unanswered, the registry of open connections with its limits, the
//! node-wide request and reply memory budgets, and the record size limit.
//! Nothing in it belongs to a program: each program's own context is handed
//! to its `Dispatcher` separately. It also holds the node's
//! `metrics::Metrics`, which outlives it (one per node, not per active
//! period); `admit` counts and logs (rate-limited) each connection limit hit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hanfs_raft::commit::Commit;
use hanfs_state::DrcKey;

use super::budget::Budgets;
use super::limits::{Limits, LogLimiter};
use super::registry::{ConnGuard, ConnRegistry, Refused};
use crate::metrics::{ConnStats, Metrics};

pub struct RpcShared {
    /// The replicated state: the DRC is read from it, and a handler's effects
    /// (with the DRC record) are committed through it before the reply.
    pub commit: Arc<dyn Commit>,
    /// Every open connection, so that all can be dropped at once (fencing),
    /// admitted under the connection limits.
    pub conns: ConnRegistry,
    /// Node-wide request and reply memory.
    pub budgets: Budgets,
    /// One log line per limit and interval (`LimitLogs`).
    logs: Arc<LimitLogs>,
    /// Non-idempotent calls executing now, or whose reply record is still
    /// being committed (retransmissions of them are dropped).
    pub in_progress: Arc<InProgress>,
    /// Checked just before each reply is sent (fencing).
    pub fence: Fence,
    /// Largest TCP record accepted.
    pub record_bytes_max: u32,
    /// Calls left unanswered (their TCP connection closed), by reason.
    pub unanswered: Unanswered,
    /// The node's counters (`RpcShared::new`: a private registry).
    pub metrics: Arc<Metrics>,
    /// Told of each accepted TCP connection and of its close (set once by a
    /// cluster node with a VIP, which records them for tickle ACKs).
    pub conn_observer: std::sync::OnceLock<Arc<dyn super::listener::ConnObserver>>,
}

impl RpcShared {
    pub fn new(commit: Arc<dyn Commit>, fence: Fence, record_bytes_max: u32) -> Self {
        let limits = Limits::default();
        RpcShared {
            commit,
            budgets: Budgets::new(&limits),
            conns: ConnRegistry::new(limits),
            logs: Default::default(),
            in_progress: Default::default(),
            fence,
            record_bytes_max,
            unanswered: Default::default(),
            metrics: Metrics::new(),
            conn_observer: Default::default(),
        }
    }

    /// Count into the node's `metrics` instead of a private registry.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Enforce `limits` instead of the defaults (before any connection).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budgets = Budgets::new(&limits);
        self.conns = ConnRegistry::new(limits);
        self
    }

    /// Admit a connection just accepted from `peer` (`ConnRegistry::admit`),
    /// counting and logging a refusal or an eviction; `None`: close it now.
    pub fn admit(&self, peer: SocketAddr) -> Option<ConnGuard> {
        let stats = &self.metrics.conn;
        let limits = self.conns.limits();
        let (metrics, logs) = (self.metrics.clone(), self.logs.clone());
        let on_idle = move |peer: SocketAddr| {
            let total = ConnStats::count(&metrics.conn.idle_closed);
            if let Some(hits) = logs.idle.hit() {
                tracing::info!(%peer, hits, total, "idle connection closed (idle timeout)");
            }
        };
        match self.conns.admit(peer, on_idle) {
            Ok(admitted) => {
                if let Some(evicted) = admitted.evicted {
                    let total = ConnStats::count(&stats.evicted);
                    if let Some(hits) = self.logs.evicted.hit() {
                        let max = limits.connections_max;
                        tracing::warn!(%peer, %evicted, hits, total, connections_max = max, "connection limit reached: the least recently active idle connection closed");
                    }
                }
                Some(admitted.guard)
            }
            Err(Refused::PerAddress) => {
                let total = ConnStats::count(&stats.refused_per_address);
                if let Some(hits) = self.logs.per_address.hit() {
                    let max = limits.connections_per_address_max;
                    tracing::warn!(%peer, hits, total, connections_per_address_max = max, "connection refused: its address has its limit of connections open");
                }
                None
            }
            Err(Refused::Total) => {
                let total = ConnStats::count(&stats.refused_total);
                if let Some(hits) = self.logs.total.hit() {
                    let max = limits.connections_max;
                    tracing::warn!(%peer, hits, total, connections_max = max, "connection refused: connection limit reached and every connection busy");
                }
                None
            }
        }
    }

    /// Count (and log, rate-limited) a connection that stopped starting calls
    /// until its replies drain.
    pub fn reply_wait(&self, peer: SocketAddr, reply_bytes: usize) {
        let total = ConnStats::count(&self.metrics.conn.reply_waits);
        if let Some(hits) = self.logs.reply.hit() {
            let max = self.conns.limits().conn_reply_bytes_max;
            tracing::info!(%peer, reply_bytes, hits, total, conn_reply_bytes_max = max, "replies not being read: connection paused until they drain");
        }
    }

    /// Count (and log, rate-limited) a wait for the node-wide request budget.
    pub fn request_wait(&self, peer: SocketAddr, bytes: usize) {
        let total = ConnStats::count(&self.metrics.conn.request_waits);
        if let Some(hits) = self.logs.request.hit() {
            let max = self.conns.limits().request_bytes_max;
            let held = self.budgets.request_bytes();
            tracing::info!(%peer, bytes, held, hits, total, request_bytes_max = max, "request memory limit reached: connection waits");
        }
    }

    /// Count (and log, rate-limited) calls dropped unstarted because their
    /// connection closed.
    pub fn calls_dropped(&self, peer: SocketAddr, calls: u64) {
        let total = self.metrics.conn.calls_dropped.fetch_add(calls, Ordering::Relaxed).saturating_add(calls);
        if let Some(hits) = self.logs.dropped.hit() {
            tracing::debug!(%peer, calls, hits, total, "connection closed: calls not started are dropped");
        }
    }

    /// May this node send a reply at this instant? A cluster leader whose lease
    /// ran out acknowledges nothing, even before its demotion task runs.
    pub fn serving_now(&self) -> bool {
        self.fence.serving_now()
    }
}

/// The log limiter of each limit.
#[derive(Default)]
struct LimitLogs {
    per_address: LogLimiter,
    total: LogLimiter,
    evicted: LogLimiter,
    idle: LogLimiter,
    reply: LogLimiter,
    request: LogLimiter,
    dropped: LogLimiter,
}

/// The reply-time fencing check: `always` for a single node; for a cluster
/// member, "leader holding the lease and not standing down" (see `node::cluster`).
#[derive(Clone)]
pub struct Fence(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Fence(lease)" } else { "Fence(always)" })
    }
}

impl Fence {
    /// A single node: nobody else can serve, so always.
    pub const fn always() -> Self {
        Fence(None)
    }

    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Fence(Some(Arc::new(check)))
    }

    pub fn serving_now(&self) -> bool {
        self.0.as_ref().is_none_or(|check| check())
    }
}

/// Why a call is left unanswered and its TCP connection closed
/// (`dispatch::Outcome::Close`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The reply was ready but the fence no longer passes: this node may not
    /// answer (lease lost, standing down).
    Fenced,
    /// Committing the call's intent or its effects failed: the call is not
    /// answered, and the client resends it (to whichever node serves then).
    CommitFailed,
}

/// Counts of calls left unanswered, per `CloseReason`, since the node started
/// serving (TCP and UDP together).
#[derive(Default, Debug)]
pub struct Unanswered {
    fenced: AtomicU64,
    commit_failed: AtomicU64,
}

impl Unanswered {
    /// Count one call left unanswered for `reason`; returns the new count.
    pub fn count(&self, reason: CloseReason) -> u64 {
        self.counter(reason).fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Calls left unanswered for `reason` so far.
    pub fn get(&self, reason: CloseReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    fn counter(&self, reason: CloseReason) -> &AtomicU64 {
        match reason {
            CloseReason::Fenced => &self.fenced,
            CloseReason::CommitFailed => &self.commit_failed,
        }
    }
}

/// Calls with the same DRC key being executed right now, so that a
/// retransmission arriving meanwhile is dropped instead of run twice; and
/// calls already answered whose reply record is still being committed (off
/// the reply path), so that a retransmission arriving then gets that reply.
#[derive(Default)]
pub struct InProgress {
    keys: Mutex<HashMap<DrcKey, Option<Vec<u8>>>>,
}

/// Why a key cannot be claimed.
pub enum Busy {
    /// The call is running: drop the retransmission.
    Running,
    /// The call was answered with this body; its record is being committed.
    Replied(Vec<u8>),
}

impl InProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DrcKey, Option<Vec<u8>>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim `key`, or say why not.
    fn claim(&self, key: &DrcKey) -> Result<(), Busy> {
        let mut keys = self.lock();
        match keys.get(key) {
            None => {
                keys.insert(key.clone(), None);
                Ok(())
            }
            Some(None) => Err(Busy::Running),
            Some(Some(body)) => Err(Busy::Replied(body.clone())),
        }
    }

    fn replied(&self, key: &DrcKey, body: &[u8]) {
        if let Some(slot) = self.lock().get_mut(key) {
            *slot = Some(body.to_vec());
        }
    }

    fn release(&self, key: &DrcKey) {
        self.lock().remove(key);
    }
}

/// Releases an `InProgress` claim however the call ends (including a panic or
/// the task being aborted on connection close). Owned, so a task committing
/// the reply record after the reply was sent can hold it until it is durable.
pub struct Claim {
    set: Arc<InProgress>,
    pub key: DrcKey,
}

impl Claim {
    /// Claim `key` in `set`, or say why a call with that key holds it.
    pub fn take(set: &Arc<InProgress>, key: DrcKey) -> Result<Self, Busy> {
        set.claim(&key).map(|()| Claim { set: set.clone(), key })
    }

    /// The call was answered with `body`: until the claim is released, a
    /// retransmission gets it.
    pub fn replied(&self, body: &[u8]) {
        self.set.replied(&self.key, body);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.release(&self.key);
    }
}
