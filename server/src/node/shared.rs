//! What a cluster member's parts share: `Shared` (the configuration, the
//! `RaftNode`, the VIP, the standing-down flag and its wake-up, this node's
//! `ActiveStatus`, the admin lock), built by `cluster`, used by the
//! `lifecycle` task and the `control` admin handler. Also the reply-time
//! fence a promotion hands the services (`Shared::fence`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hanfs_raft::cluster::RaftNode;
use hanfs_raft::types::{NodeId, PeerNode};
use tokio::sync::Notify;

use crate::config::{ClusterSetup, ServerConfig};
use crate::rpc::shared::Fence;
use crate::vip::Vip;

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
    /// How long that promotion took: from this node seeing itself elected in
    /// its current term (or, regaining the lease in the same term, from the
    /// end of its demotion) to its listeners being open (includes the old
    /// lease wait, hooks, VIP, epoch).
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
    /// exists for the whole process lifetime (its descriptor moved high: `vip::device`).
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
    /// The exports while this node serves them (`locks` names files through them).
    pub serving: crate::vfs::ServingVfs,
    /// This node's counters, over all its active periods.
    pub metrics: Arc<crate::metrics::Metrics>,
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

    /// The reply-time check for `Services`: leader holding the lease now, and
    /// not stepping aside.
    pub fn fence(&self) -> Fence {
        let check = self.raft.serving_check();
        let standing_down = self.standing_down.clone();
        Fence::new(move || !standing_down.load(Ordering::SeqCst) && check.holds())
    }
}
