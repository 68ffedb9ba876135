//! A cluster member (`[cluster]` in the config): start `RaftNode` with its
//! peer listener on this node's `[[cluster.peer]]` address, build the `Shared`
//! state, the admin socket (`control`), and — on a storage node — the
//! `lifecycle` task that serves NFS only while this node is the promoted
//! leader, and `GET /metrics` (if configured) on every member. A witness runs
//! Raft, the admin socket and `/metrics` only, never NFS listeners.
//!
//! Once this node has applied a seeded export table (bounded by
//! `EXPORTS_CHECK_WAIT_MS`), it compares its config's [[export]] list with
//! the table and logs a warning naming each difference (the table is what
//! every node serves; a promotion warns again).
//!
//! Raft files live in `<state_dir>/raft` (see `RAFT_DIR`); the admin socket
//! in `<state_dir>/admin.sock`, as for a single node. At start the process
//! locks its code in memory (`lock_code_in_memory`), so page faults cannot
//! stall heartbeats on a host short of memory.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use hanfs_raft::cluster::{RaftNode, RaftNodeOptions};
use hanfs_raft::network::auth::ClusterSecret;
use hanfs_raft::types::{NodeId, Role};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use super::control::{self, Control, FAULTS_ENV};
use super::lifecycle;
pub use super::shared::ActiveStatus;
use super::shared::Shared;
use super::NodeError;
use crate::admin;
use crate::config::ServerConfig;
use crate::metrics::http::MetricsServer;
use crate::metrics::Metrics;
use crate::vip::Vip;

/// Sub-directory of `state_dir` holding the Raft log and snapshot databases.
pub const RAFT_DIR: &str = "raft";
/// How long after its start a node waits for a seeded export table to
/// compare its config with, polling every `EXPORTS_CHECK_POLL_MS`.
pub const EXPORTS_CHECK_WAIT_MS: u64 = 60_000;
pub const EXPORTS_CHECK_POLL_MS: u64 = 1_000;

/// Warn (once) if the config's exports differ from the replicated table,
/// when this node has applied a seeded one; gives up after
/// `EXPORTS_CHECK_WAIT_MS`. A config without exports (a witness) is not
/// compared.
async fn check_config_exports(shared: std::sync::Weak<Shared>) {
    for _ in 0..EXPORTS_CHECK_WAIT_MS / EXPORTS_CHECK_POLL_MS {
        tokio::time::sleep(std::time::Duration::from_millis(EXPORTS_CHECK_POLL_MS)).await;
        let Some(shared) = shared.upgrade() else { return };
        if shared.config.exports.is_empty() {
            return;
        }
        let state = hanfs_raft::commit::Commit::state(shared.raft.commit.as_ref());
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        if !guard.exports_seeded() {
            continue;
        }
        crate::exports_admin::warn_differences(&shared.config.exports, &crate::exports_admin::table(&guard));
        return;
    }
}

/// Environment variable (honoured only with `HANFS_TEST_FAULTS=1`) that sets
/// how many applied entries go between two Raft snapshots, so a test can
/// force snapshot builds under load.
pub const SNAPSHOT_EVERY_ENV: &str = "HANFS_TEST_SNAPSHOT_EVERY";

/// `SNAPSHOT_EVERY_ENV`, when test faults are on.
fn test_snapshot_every() -> Result<Option<u64>, NodeError> {
    if !std::env::var(FAULTS_ENV).is_ok_and(|v| v == "1") {
        return Ok(None);
    }
    match std::env::var(SNAPSHOT_EVERY_ENV) {
        Err(_) => Ok(None),
        Ok(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| NodeError::Cluster(format!("{SNAPSHOT_EVERY_ENV}={v} is not a number of entries"))),
    }
}

/// Lock the pages the process has mapped now (its code and libraries, the
/// heap so far) into memory, as corosync does: on a host short of memory the
/// kernel otherwise evicts code pages and a heartbeat waits for them to be
/// read back (measured: the whole process stalled for over a second under
/// memory pressure, which no lease rides out). Anonymous memory allocated
/// later is not locked. Needs CAP_IPC_LOCK (root has it); without it a
/// warning says so and the node runs unlocked.
fn lock_code_in_memory() {
    // SAFETY: mlockall takes a flag word and touches no Rust-visible memory.
    if unsafe { libc::mlockall(libc::MCL_CURRENT) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot lock the process's pages in memory (needs CAP_IPC_LOCK): under memory pressure page faults can delay heartbeats");
    }
}

/// Create the VIP (and its device) and clear copies of the address a previous
/// run or an administrator left on the interface: a follower holds no VIP.
async fn open_vip(cfg: &crate::vip::VipConfig) -> Result<Vip, NodeError> {
    let vip = Vip::new(cfg.clone()).map_err(|e| NodeError::Cluster(format!("VIP {}: {e}", cfg.addr)))?;
    if let Err(e) = vip.release().await {
        tracing::warn!(error = %e, vip = %cfg.addr, "clearing stale copies of the VIP failed");
    }
    Ok(vip)
}

/// A running cluster member.
pub struct ClusterNode {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    lifecycle: Option<JoinHandle<()>>,
    admin_stop: broadcast::Sender<()>,
    admin_task: Option<JoinHandle<()>>,
    metrics_server: Option<MetricsServer>,
    /// `check_config_exports`, aborted at stop.
    exports_check: JoinHandle<()>,
}

impl ClusterNode {
    /// Start Raft, the admin socket and (storage nodes) the lifecycle task.
    pub async fn start(config: ServerConfig) -> Result<ClusterNode, NodeError> {
        let setup = config.cluster.clone().ok_or_else(|| NodeError::Cluster("no [cluster] section".into()))?;
        let cluster = &setup.cluster;
        let own = cluster
            .own()
            .cloned()
            .ok_or_else(|| NodeError::Cluster(format!("no [[cluster.peer]] with id {} (node_id)", cluster.node_id)))?;
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|error| NodeError::StateDir { path: config.state_dir.display().to_string(), error })?;
        lock_code_in_memory();
        let secret = ClusterSecret::from_file(&cluster.secret_file).map_err(|e| NodeError::Cluster(e.to_string()))?;
        let vip = match (&setup.vip, own.role) {
            (Some(cfg), Role::Storage) => Some(open_vip(cfg).await?),
            _ => None,
        };
        let listener = TcpListener::bind(own.addr).await.map_err(|error| NodeError::Bind {
            what: "raft peers",
            addr: own.addr,
            error,
        })?;
        let mut opts =
            RaftNodeOptions::new(own.id, own.role, cluster.name.clone(), config.state_dir.join(RAFT_DIR), secret);
        opts.timing = cluster.timing;
        if let Some(every) = test_snapshot_every()? {
            opts.snapshot_every_entries = every;
        }
        let raft = RaftNode::start(opts, listener).await.map_err(|e| NodeError::Cluster(e.to_string()))?;
        let faults_enabled = std::env::var(FAULTS_ENV).is_ok_and(|v| v == "1");
        let metrics = Metrics::new();
        let metrics_server = match super::single::start_metrics(config.metrics_listen, &metrics).await {
            Ok(server) => server,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            config,
            setup,
            raft,
            vip,
            standing_down: Arc::new(AtomicBool::new(false)),
            wake: Notify::new(),
            active: Mutex::new(ActiveStatus::default()),
            faults_enabled,
            admin_op: tokio::sync::Mutex::new(()),
            serving: Default::default(),
            metrics,
        });
        let weak = Arc::downgrade(&shared);
        shared.metrics.set_sampler(Arc::new(move || {
            let Some(shared) = weak.upgrade() else { return Default::default() };
            crate::metrics::cluster_sample(&shared.raft, shared.active().serving)
        }));
        let weak = Arc::downgrade(&shared);
        let extra = move || weak.upgrade().map(|s| control::view_extra(&s)).unwrap_or_default();
        shared.raft.set_view_extra(Arc::new(extra));
        let weak = Arc::downgrade(&shared);
        shared.raft.set_admin_forward(Arc::new(move |line: String| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(shared) => control::forwarded(&shared, &line).await,
                    None => "error: node is stopping\n".to_string(),
                }
            })
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let lifecycle = (own.role == Role::Storage).then(|| tokio::spawn(lifecycle::run(shared.clone(), stop_rx)));
        let (admin_stop, admin_rx) = broadcast::channel(1);
        let handler = Arc::new(Control::new(&shared));
        let admin_task = match admin::serve(&shared.config.state_dir, handler, admin_rx) {
            Ok(task) => Some(task),
            Err(e) => {
                let path = admin::socket_path(&shared.config.state_dir);
                tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; init/status/switchover will not reach this node");
                None
            }
        };
        let t = &shared.setup.cluster.timing;
        tracing::info!(
            node = own.id,
            role = ?own.role,
            peer_addr = %own.addr,
            cluster = %shared.setup.cluster.name,
            faults = faults_enabled,
            failure_detection_ms = t.failure_detection_ms,
            heartbeat_ms = t.heartbeat_period_ms(),
            election_timeout_ms = %format!("{}..{}", t.election_timeout_min_ms, t.election_timeout_max_ms),
            lease_ms = t.lease_ms,
            promote_wait_ms = t.promote_wait_ms,
            "cluster member started"
        );
        let exports_check = tokio::spawn(check_config_exports(Arc::downgrade(&shared)));
        Ok(ClusterNode { shared, stop_tx, lifecycle, admin_stop, admin_task, metrics_server, exports_check })
    }

    /// Completes when Raft stops by itself on a fatal (storage) error, with
    /// that error (`RaftNode::fatal_error`).
    pub async fn raft_fatal_error(&self) -> String {
        self.shared.raft.fatal_error().await
    }

    /// Is this node serving NFS right now (listeners open)?
    pub fn serving(&self) -> bool {
        self.shared.active().serving
    }

    /// The names of the exports of the replicated table, as this node applied it.
    pub fn export_names(&self) -> String {
        let state = hanfs_raft::commit::Commit::state(self.shared.raft.commit.as_ref());
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        guard.served_exports().map(|(_, name, _)| name).collect::<Vec<_>>().join(" ")
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.raft.id
    }

    /// Where `GET /metrics` is served (`None`: not configured).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Serving flag, ports of the current active period, last promotion.
    pub fn active_status(&self) -> ActiveStatus {
        self.shared.active()
    }

    /// Stop: demote if active (listeners, VIP, `on_demote`), stop the admin
    /// socket, then Raft.
    pub async fn stop(mut self) {
        self.exports_check.abort();
        let _ = self.stop_tx.send(true);
        self.shared.wake.notify_waiters();
        if let Some(task) = self.lifecycle.take() {
            let _ = task.await;
        }
        let _ = self.admin_stop.send(());
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
        if let Some(server) = self.metrics_server.take() {
            server.stop().await;
        }
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => {
                if let Err(e) = shared.raft.shutdown().await {
                    tracing::warn!(error = %e, "raft shutdown");
                }
            }
            // An admin exchange still holds it: stop Raft itself; the rest
            // goes when that exchange ends.
            Err(shared) => {
                let _ = shared.raft.shutdown_raft().await;
            }
        }
        tracing::info!("stopped");
    }
}
