//! `RaftNode`: one cluster member, assembled — redb stores (with the identity
//! check), the authenticated peer transport (client and server), openraft,
//! the leadership watch and `RaftCommit`. The server's lifecycle starts one
//! of these, watches `leadership()`, and writes through `commit`; what else it
//! reads or drives of Raft is in `status` and `handover` (more `RaftNode`
//! methods), so `raft` itself stays inside this crate.
//!
//! Everything Raft runs — openraft's core, its state-machine worker and
//! ticks, heartbeats and replication, the peer listener and its connections,
//! the leadership watch (lease renewal) and the witness relay — runs on a
//! tokio runtime of its own (`RAFT_WORKER_THREADS` OS thread named
//! `hanfs-raft`, with its own blocking pool for redb writes, applying entries
//! and building snapshots), at a raised priority (`RAFT_THREAD_NICE`), so NFS
//! work on the server's runtime, or anything else on the machine, delays a
//! heartbeat by a scheduling slice at most. The two runtimes meet only at
//! channels: openraft's request channel (one proposal at a time from the
//! group-commit task, which stays on the server's runtime behind its bounded
//! queue, `RAFT_COMMIT_QUEUE_MAX`, because its trial waits for the state's
//! write lock; admin requests) and watch channels (metrics, `Leadership`).
//! The state itself is shared under its lock; Raft's side takes it only on
//! blocking threads (`sm_store`). The runtime stops with the node
//! (`shutdown`, or in the background when a `RaftNode` is dropped).
//!
//! For `Timing::restart_guard_ms` after the start a storage node does not
//! campaign (and no node grants a vote: `network::server`): see `lease`.
//! Whether a storage node may campaign is decided in one place, the
//! election gate (`elect_gate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use openraft::Config;
use redb::Database;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::elect_gate::ElectGate;
use crate::lease::{spawn_leadership_watch, LastDemotion, Leadership, LeaseClock};
use crate::log_store::{bind_identity, open_db, IdentityError, LogStore};
use crate::membership::{initialize, raft_config_with, MembershipError, SNAPSHOT_EVERY_ENTRIES};
use crate::network::auth::ClusterSecret;
use crate::network::client::{fetch_view, forward_admin, PeerAskError, PeerNetwork};
use crate::network::server::PeerServer;
use crate::network::{Faults, PeerSignals};
use crate::raft_commit::RaftCommit;
use crate::relay::spawn_witness_relay;
use crate::role::{spawn_role_watch, RoleView};
use crate::sm_store::StateMachineStore;
use crate::timing::Timing;
use crate::types::{typ, NodeId, PeerNode, Role};
use crate::view::{AdminForward, ClusterView, ServerHooks, ViewExtra};

/// The log database's file name inside `RaftNodeOptions::data_dir`: the
/// vote, the committed and last purged log ids, the node's identity.
pub const LOG_DB_FILE: &str = "raft-log.redb";
/// The log entries' file name inside `RaftNodeOptions::data_dir`
/// (`log_store`'s `file` module).
pub const LOG_ENTRIES_FILE: &str = "raft-log.entries";
/// The snapshot database's file name inside `RaftNodeOptions::data_dir`.
pub const SNAPSHOT_DB_FILE: &str = "raft-snapshot.redb";
/// Worker threads of Raft's own runtime. One: nothing on it blocks (log
/// writes have their own thread, the log reads that may hit the disk, large
/// frames' sealing and snapshot work go to the blocking pool, an apply runs
/// inline only when the state's lock is free at once), and a second worker
/// cost more than it gave. The tasks hand every entry on to each other
/// (core, replication, peer connection and server, log writer callbacks); with
/// two workers they wake each other's threads. Measured, three nodes on
/// tmpfs, one CREATE/RENAME/REMOVE in flight: two workers 11-16 context
/// switches per commit on each node's Raft threads and 1,210-1,270 µs of CPU
/// per commit over the three nodes, p50 ~810 µs; one worker 6-8 switches,
/// 1,080-1,100 µs, p50 ~730 µs.
pub const RAFT_WORKER_THREADS: usize = 1;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct RaftNodeOptions {
    pub node_id: NodeId,
    pub role: Role,
    /// Cluster name: checked in the peer handshake and bound to the database.
    pub cluster: String,
    /// Directory for the node's Raft files: `LOG_ENTRIES_FILE` (the log's
    /// entries), `LOG_DB_FILE` (vote, log ids, identity) and
    /// `SNAPSHOT_DB_FILE` (the state-machine snapshot). Two databases, so
    /// writing a large snapshot never holds up a vote or a purge (redb has
    /// one writer per file).
    pub data_dir: PathBuf,
    pub secret: ClusterSecret,
    /// Heartbeat, election and lease timings (from `failure_detection_ms`).
    pub timing: Timing,
    /// Build a snapshot every this many applied entries
    /// (`membership::SNAPSHOT_EVERY_ENTRIES` unless a test lowers it).
    pub snapshot_every_entries: u64,
    /// openraft configuration; `None` means `membership::raft_config_with`
    /// of `timing` and `snapshot_every_entries`. A given one must carry the
    /// same heartbeat and election timings as `timing`.
    pub config: Option<Arc<Config>>,
}

impl RaftNodeOptions {
    /// Options with the default timing and snapshot policy.
    pub fn new(node_id: NodeId, role: Role, cluster: String, data_dir: PathBuf, secret: ClusterSecret) -> Self {
        RaftNodeOptions {
            node_id,
            role,
            cluster,
            data_dir,
            secret,
            timing: Timing::default(),
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES,
            config: None,
        }
    }
}

/// Nice value of Raft's threads (workers and blocking pool), like corosync's
/// raised scheduling priority: under a CPU hog or heavy NFS load on a small
/// machine, a heartbeat, an acknowledgement or a log write must get a core
/// within milliseconds, not after its fair share of a crowded run queue.
/// Needs CAP_SYS_NICE (root has it); without it the threads keep the
/// process's priority and a warning says so.
pub const RAFT_THREAD_NICE: i32 = -10;

/// Give the calling thread `RAFT_THREAD_NICE` (Linux nice values are per
/// thread); warns once per process if that is not allowed.
fn raise_thread_priority() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    // SAFETY: gettid takes no arguments; setpriority takes plain integers.
    let failed = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, RAFT_THREAD_NICE) != 0
    };
    if failed {
        let error = std::io::Error::last_os_error();
        WARNED.call_once(|| {
            tracing::warn!(
                %error,
                nice = RAFT_THREAD_NICE,
                "cannot raise the priority of Raft's threads (needs CAP_SYS_NICE): under CPU load heartbeats wait their turn"
            );
        });
    }
}

/// Raft's own tokio runtime; shut down in the background when dropped (a
/// runtime cannot be dropped inside another one's async context).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("raft database {path}: {reason}")]
    Storage { path: String, reason: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("raft runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why the leader could not be asked (`forward_to_leader`, `cluster_view`).
#[derive(Debug, thiserror::Error)]
pub enum LeaderAskError {
    #[error("no leader known")]
    NoLeader,
    #[error("leader {0} is not in the membership")]
    NotMember(NodeId),
    /// The leader answered that it runs no forwarded commands.
    #[error("node {0} takes no forwarded commands")]
    NoForwarding(NodeId),
    /// The node asked for the view no longer leads.
    #[error("node {0} no longer leads")]
    NotLeading(NodeId),
    #[error("leader {leader} {error}")]
    Peer { leader: NodeId, error: PeerAskError },
}

/// How long `RaftNode::shutdown` waits for the node's databases to be
/// closed, and how often it looks.
const DB_CLOSE_WAIT_MS: u64 = 5_000;
const DB_CLOSE_POLL_MS: u64 = 5;

/// A running cluster member.
pub struct RaftNode {
    pub id: NodeId,
    pub role: Role,
    pub(crate) raft: typ::Raft,
    pub log: LogStore,
    pub sm: StateMachineStore,
    pub commit: Arc<RaftCommit>,
    /// Test hook: drop traffic to/from chosen peers.
    pub faults: Faults,
    pub(crate) lease: LeaseClock,
    /// For one-off requests to peers (the cluster view, forwarded commands).
    net: PeerNetwork,
    hooks: ServerHooks,
    leadership: watch::Receiver<Leadership>,
    last_demotion: LastDemotion,
    pub timing: Timing,
    server: JoinHandle<()>,
    watch: JoinHandle<()>,
    /// The witness relay (`relay`) on the witness, the election gate's task
    /// (`elect_gate`) on a storage node.
    role_task: JoinHandle<()>,
    pub(crate) gate: ElectGate,
    /// Role, term, leader and fatal error, changed only when one changes
    /// (`role::spawn_role_watch`), and the task publishing it.
    pub(crate) role_view: watch::Receiver<RoleView>,
    role_watch: JoinHandle<()>,
    /// The log and snapshot databases and their files: `shutdown` waits
    /// until both are closed.
    databases: [(Weak<Database>, PathBuf); 2],
    /// Last field: dropped after every handle above.
    runtime: OwnRuntime,
}

impl RaftNode {
    /// Open storage, start Raft on a runtime of its own (see the module doc),
    /// serve peers on `listener` there.
    pub async fn start(opts: RaftNodeOptions, listener: TcpListener) -> Result<RaftNode, RaftNodeError> {
        // Raft's threads log where the starting thread logs (a test's scoped
        // subscriber too, not only the global one): each sets that dispatcher
        // as its default for its whole life.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RAFT_WORKER_THREADS)
            .thread_name("hanfs-raft")
            .on_thread_start(move || {
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                raise_thread_priority();
            })
            .enable_all()
            .build()
            .map_err(RaftNodeError::Runtime)?;
        let runtime = OwnRuntime(Some(runtime));
        // Re-register the listener with Raft's runtime: its readiness must not
        // depend on the caller's runtime being scheduled.
        let listener = listener.into_std().map_err(RaftNodeError::Runtime)?;
        let handle = match &runtime.0 {
            Some(rt) => rt.handle().clone(),
            None => return Err(RaftNodeError::Raft("runtime gone".into())),
        };
        let caller = tokio::runtime::Handle::current();
        let started = handle.spawn(async move {
            let listener = TcpListener::from_std(listener).map_err(RaftNodeError::Runtime)?;
            Self::start_here(opts, listener, caller).await
        });
        match started.await {
            Ok(Ok(mut node)) => {
                node.runtime = runtime;
                Ok(node)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(RaftNodeError::Raft(format!("start task: {e}"))),
        }
    }

    /// `start`'s work, on Raft's runtime; the group-commit task goes on
    /// `caller`'s.
    async fn start_here(
        opts: RaftNodeOptions,
        listener: TcpListener,
        caller: tokio::runtime::Handle,
    ) -> Result<RaftNode, RaftNodeError> {
        let storage_err = |path: &PathBuf, e: &dyn std::fmt::Display| RaftNodeError::Storage {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| storage_err(&opts.data_dir, &e))?;
        let log_path = opts.data_dir.join(LOG_DB_FILE);
        let snapshot_path = opts.data_dir.join(SNAPSHOT_DB_FILE);
        let log_db = open_db(&log_path).map_err(|e| storage_err(&log_path, &e))?;
        bind_identity(&log_db, &opts.cluster, opts.node_id)?;
        let snapshot_db = open_db(&snapshot_path).map_err(|e| storage_err(&snapshot_path, &e))?;
        let databases = [(Arc::downgrade(&log_db), log_path), (Arc::downgrade(&snapshot_db), snapshot_path.clone())];
        let entries_path = opts.data_dir.join(LOG_ENTRIES_FILE);
        let log = LogStore::new(log_db, &entries_path, opts.node_id).map_err(|e| storage_err(&entries_path, &e))?;
        let sm =
            StateMachineStore::open(snapshot_db, Some(log.durable())).map_err(|e| storage_err(&snapshot_path, &e))?;
        let faults = Faults::default();
        opts.timing.check().map_err(MembershipError::from)?;
        let lease = LeaseClock::new(opts.timing.lease());
        let network = PeerNetwork {
            self_id: opts.node_id,
            cluster: opts.cluster.clone(),
            secret: opts.secret.clone(),
            faults: faults.clone(),
            lease: lease.clone(),
            durable: log.durable(),
        };
        let config = match opts.config {
            Some(config) => config,
            None => raft_config_with(&opts.cluster, opts.role, &opts.timing, opts.snapshot_every_entries)?,
        };
        let net = network.clone();
        let raft = typ::Raft::new(opts.node_id, config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        // A restarted node neither votes nor campaigns for a while (`lease`).
        let votes_from = std::time::Instant::now() + opts.timing.restart_guard();
        let signals = PeerSignals::default();
        let gate = ElectGate::new(raft.clone(), opts.role, opts.timing, signals.clone(), votes_from);
        let hooks = ServerHooks::default();
        let server = PeerServer {
            raft: raft.clone(),
            cluster: opts.cluster,
            secret: opts.secret,
            faults: faults.clone(),
            signals: signals.clone(),
            lease: lease.clone(),
            hooks: hooks.clone(),
            votes_from,
        }
        .spawn(listener);
        let role_task = match opts.role {
            Role::Witness => spawn_witness_relay(raft.clone(), signals, opts.timing.relay_silence_ms, votes_from),
            Role::Storage => gate.spawn(),
        };
        let (leadership, watch, last_demotion) =
            spawn_leadership_watch(raft.clone(), opts.role, lease.clone(), opts.timing);
        let commit = RaftCommit::start(&caller, raft.clone(), &sm, leadership.clone());
        let (role_view, role_watch) = spawn_role_watch(raft.metrics());
        Ok(RaftNode {
            id: opts.node_id,
            role: opts.role,
            raft,
            log,
            sm,
            commit,
            faults,
            lease,
            net,
            hooks,
            leadership,
            last_demotion,
            timing: opts.timing,
            server,
            watch,
            role_task,
            gate,
            role_view,
            role_watch,
            databases,
            runtime: OwnRuntime(None),
        })
    }

    /// Bootstrap a new cluster from this (storage) node, once. See
    /// `membership::initialize` for what is refused.
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, PeerNode>) -> Result<(), MembershipError> {
        initialize(&self.raft, self.role, members).await
    }

    /// May this node serve right now? Subscribe for changes.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Why this node last stopped being allowed to serve (lease expired, and
    /// when; another leader; a new term; ...), if it ever was.
    pub fn last_demotion(&self) -> Option<String> {
        self.last_demotion.get()
    }

    /// May this node answer a request at this instant? The watch says Leader
    /// and the lease, checked now rather than at the watch's last tick, holds.
    /// For the server to check just before it sends a reply.
    pub fn serving_now(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. })
            && self.lease.holds(&self.raft.metrics().borrow())
    }

    /// Lines the server adds to the cluster view this node serves as leader.
    pub fn set_view_extra(&self, extra: ViewExtra) {
        self.hooks.set_extra(extra);
    }

    /// What this node runs when another node forwards an admin command.
    pub fn set_admin_forward(&self, admin: AdminForward) {
        self.hooks.set_admin(admin);
    }

    /// Forward an admin command line to the leader; `(leader, answer)`.
    pub async fn forward_to_leader(&self, line: String) -> Result<(NodeId, String), LeaderAskError> {
        let (leader, addr) = self.leader_addr()?;
        match forward_admin(&self.net, leader, &addr, line).await {
            Ok(Some(answer)) => Ok((leader, answer)),
            Ok(None) => Err(LeaderAskError::NoForwarding(leader)),
            Err(error) => Err(LeaderAskError::Peer { leader, error }),
        }
    }

    /// The current leader (not this node) and its peer address.
    fn leader_addr(&self) -> Result<(NodeId, String), LeaderAskError> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.ok_or(LeaderAskError::NoLeader)?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .ok_or(LeaderAskError::NotMember(leader))?;
        Ok((leader, addr))
    }

    /// The leader's `ClusterView`: built here if this node leads, else
    /// fetched from the leader (bounded by `VIEW_TIMEOUT_MS`). `Err` says why
    /// there is none (no leader known, leader unreachable, ...).
    pub async fn cluster_view(&self) -> Result<ClusterView, LeaderAskError> {
        let m = self.raft.metrics().borrow().clone();
        if let Some(view) = self.hooks.local(&m, self.lease.holds(&m)) {
            return Ok(view);
        }
        let (leader, addr) = self.leader_addr()?;
        match fetch_view(&self.net, leader, &addr).await {
            Ok(Some(view)) => Ok(view),
            Ok(None) => Err(LeaderAskError::NotLeading(leader)),
            Err(error) => Err(LeaderAskError::Peer { leader, error }),
        }
    }

    /// Is the peer listener still accepting?
    pub fn peer_server_running(&self) -> bool {
        !self.server.is_finished()
    }

    /// Stop everything: commits (queued ones finish or fail), the peer
    /// listener and its connections, Raft, the watch.
    pub async fn shutdown(self) -> Result<(), RaftNodeError> {
        self.server.abort();
        let _ = self.server.await;
        self.role_task.abort();
        let _ = self.role_task.await;
        let stopped = self.raft.shutdown().await.map_err(|e| RaftNodeError::Raft(e.to_string()));
        self.commit.shutdown().await;
        // The watches end once Raft's metrics channel closes.
        let _ = self.watch.await;
        let _ = self.role_watch.await;
        // The databases are closed once the log writer thread, the runtime's
        // tasks and this node let go of them (a node started again on the
        // directory opens them).
        drop((self.log, self.sm, self.raft, self.commit));
        drop(self.runtime);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(DB_CLOSE_WAIT_MS);
        for (db, path) in &self.databases {
            wait_closed(db, path, deadline).await;
        }
        stopped
    }
}

/// Waits (until `deadline`) for `db` to be closed: no one holds it, and
/// its file's lock is free (the last holder's drop has finished closing it).
async fn wait_closed(db: &Weak<Database>, path: &Path, deadline: std::time::Instant) {
    let closed = || db.strong_count() == 0 && std::fs::File::open(path).is_ok_and(|f| f.try_lock().is_ok());
    while !closed() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(DB_CLOSE_POLL_MS)).await;
    }
}
