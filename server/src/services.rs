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
}
