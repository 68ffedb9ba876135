//! A cluster member (`[cluster]` in the config): start `RaftNode` with its
//! peer listener on this node's `[[cluster.peer]]` address, the admin socket
//! (`control`), and — on a storage node — the `lifecycle` task that serves NFS
//! only while this node is the promoted leader. A witness runs Raft and the
//! admin socket only, never listeners.
//!
//! Raft files live in `<state_dir>/raft` (see `RAFT_DIR`); the admin socket
//! in `<state_dir>/admin.sock`, as for a single node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hanfs_raft::cluster::{RaftNode, RaftNodeOptions};
use hanfs_raft::lease::Leadership;
use hanfs_raft::network::auth::ClusterSecret;
use hanfs_raft::types::{NodeId, PeerNode, Role};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use super::NodeError;
use crate::admin;
use crate::config::{ClusterSetup, ServerConfig};
use crate::rpc::shared::Fence;
use crate::vip::Vip;

/// Sub-directory of `state_dir` holding the Raft log and snapshot databases.
pub const RAFT_DIR: &str = "raft";
/// Environment variable that enables `debug faults` on the admin socket
/// (value `1`), for tests only.
pub const FAULTS_ENV: &str = "HANFS_TEST_FAULTS";

/// What this node knows about its own service periods (local, not replicated).
#[derive(Clone, Debug, Default)]
pub struct ActiveStatus {
    /// Listeners open now.
    pub serving: bool,
    /// VIP claimed by this node now.
    pub vip_held: bool,
    /// Ports of the current active period (`None` while not serving).
    pub ports: Option<super::BoundPorts>,
    /// Unix ms when this node last started serving.
    pub last_promotion_unix_ms: Option<u64>,
    /// How long that promotion took: from this node seeing itself elected to
    /// its listeners being open (includes the old lease wait, hooks, VIP, epoch).
    pub last_promotion_took_ms: Option<u64>,
    /// The most recent promotion or switchover failure, for `status`.
    pub last_error: Option<String>,
}

/// State shared by the lifecycle task and the admin handler.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub setup: ClusterSetup,
    pub raft: RaftNode,
    /// The VIP (storage nodes with `[vip]`), created at start so its device
    /// exists, with a low descriptor number, for the whole process lifetime.
    pub vip: Option<Vip>,
    /// Set while this node steps aside (switchover, failed promotion): the
    /// lifecycle demotes and does not promote, and the fence refuses replies.
    pub standing_down: Arc<AtomicBool>,
    /// Wakes the lifecycle when `standing_down` changes.
    pub wake: Notify,
    pub active: Mutex<ActiveStatus>,
    /// `debug faults` allowed (`HANFS_TEST_FAULTS=1` at start).
    pub faults_enabled: bool,
    /// Serialises `init` and `switchover`.
    pub admin_op: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn active(&self) -> ActiveStatus {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update_active(&self, f: impl FnOnce(&mut ActiveStatus)) {
        f(&mut self.active.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn set_standing_down(&self, on: bool) {
        self.standing_down.store(on, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn is_standing_down(&self) -> bool {
        self.standing_down.load(Ordering::SeqCst)
    }

    /// The membership of the configuration, as Raft wants it for `init`.
    pub fn config_members(&self) -> BTreeMap<NodeId, PeerNode> {
        self.setup.cluster.peers.iter().map(|p| (p.id, PeerNode { addr: p.addr.to_string(), role: p.role })).collect()
    }

    /// The reply-time check of the RPC layer: leader holding the lease now, and
    /// not stepping aside.
    pub fn fence(&self) -> Fence {
        let leadership = self.raft.leadership();
        let lease = self.raft.lease.clone();
        let metrics = self.raft.raft.metrics();
        let standing_down = self.standing_down.clone();
        Fence::new(move || {
            !standing_down.load(Ordering::SeqCst)
                && matches!(*leadership.borrow(), Leadership::Leader { .. })
                && lease.holds(&metrics.borrow())
        })
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
        let opts = RaftNodeOptions {
            node_id: own.id,
            role: own.role,
            cluster: cluster.name.clone(),
            data_dir: config.state_dir.join(RAFT_DIR),
            secret,
            config: None,
        };
        let raft = RaftNode::start(opts, listener).await.map_err(|e| NodeError::Cluster(e.to_string()))?;
        let faults_enabled = std::env::var(FAULTS_ENV).is_ok_and(|v| v == "1");
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
        });
        let weak = Arc::downgrade(&shared);
        let extra = move || weak.upgrade().map(|s| super::control::view_extra(&s)).unwrap_or_default();
        shared.raft.set_view_extra(Arc::new(extra));
        let weak = Arc::downgrade(&shared);
        shared.raft.set_admin_forward(Arc::new(move |line: String| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(shared) => super::control::forwarded(&shared, &line).await,
                    None => "error: node is stopping\n".to_string(),
                }
            })
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let lifecycle =
            (own.role == Role::Storage).then(|| tokio::spawn(super::lifecycle::run(shared.clone(), stop_rx)));
        let (admin_stop, admin_rx) = broadcast::channel(1);
        let handler = Arc::new(super::control::Control::new(&shared));
        let admin_task = match admin::serve(&shared.config.state_dir, handler, admin_rx) {
            Ok(task) => Some(task),
            Err(e) => {
                let path = admin::socket_path(&shared.config.state_dir);
                tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; init/status/switchover will not reach this node");
                None
            }
        };
        tracing::info!(node = own.id, role = ?own.role, peer_addr = %own.addr, cluster = %shared.setup.cluster.name, faults = faults_enabled, "cluster member started");
        Ok(ClusterNode { shared, stop_tx, lifecycle, admin_stop, admin_task })
    }

    /// Is this node serving NFS right now (listeners open)?
    pub fn serving(&self) -> bool {
        self.shared.active().serving
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.raft.id
    }

    /// Serving flag, ports of the current active period, last promotion.
    pub fn active_status(&self) -> ActiveStatus {
        self.shared.active()
    }

    /// Stop: demote if active (listeners, VIP, `on_demote`), stop the admin
    /// socket, then Raft.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        self.shared.wake.notify_waiters();
        if let Some(task) = self.lifecycle.take() {
            let _ = task.await;
        }
        let _ = self.admin_stop.send(());
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
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
                let _ = shared.raft.raft.shutdown().await;
            }
        }
        tracing::info!("stopped");
    }
}
