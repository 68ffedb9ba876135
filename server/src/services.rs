//! Everything a handler can reach, shared by all connections of one active node.

use std::sync::Arc;

use hanfs_raft::commit::Commit;

use crate::config::ServerConfig;
use crate::exports::ExportTable;
use crate::portmap;
use crate::rpc::conn::ConnRegistry;
use crate::rpc::dispatch::InProgress;
use crate::vfs::Vfs;

pub struct Services {
    pub config: ServerConfig,
    /// The replicated state: read it, or change it through `commit`.
    pub commit: Arc<dyn Commit>,
    /// Every open connection, so that all can be dropped at once (fencing).
    pub conns: ConnRegistry,
    /// Export table, handle resolution, credential switching.
    pub vfs: Vfs,
    /// Exports by id and name, and each export's client list.
    pub exports: ExportTable,
    /// This node's portmap table (local, not replicated).
    pub portmap: portmap::Table,
    /// Non-idempotent calls executing now (retransmissions of them are dropped).
    pub in_progress: InProgress,
    /// Checked just before each reply is sent (fencing).
    pub fence: Fence,
}

impl Services {
    /// May this node send a reply at this instant? A cluster leader whose lease
    /// ran out acknowledges nothing, even before its demotion task runs.
    pub fn serving_now(&self) -> bool {
        self.fence.serving_now()
    }
}

/// The reply-time fencing check: `always` for a single node; for a cluster
/// member, "leader holding the lease and not standing down" (see `node::cluster`).
#[derive(Clone)]
pub struct Fence(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl Fence {
    /// A single node: nobody else can serve, so always.
    pub fn always() -> Self {
        Fence(None)
    }

    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Fence(Some(Arc::new(check)))
    }

    pub fn serving_now(&self) -> bool {
        self.0.as_ref().is_none_or(|check| check())
    }
}
