//! Everything a handler can reach, shared by all connections of one active node.

use std::sync::Arc;

use hanfs_raft::commit::Commit;

use crate::config::ServerConfig;
use crate::rpc::conn::ConnRegistry;
use crate::vfs::Vfs;

pub struct Services {
    pub config: ServerConfig,
    /// The replicated state: read it, or change it through `commit`.
    pub commit: Arc<dyn Commit>,
    /// Every open connection, so that all can be dropped at once (fencing).
    pub conns: ConnRegistry,
    /// Export table, handle resolution, credential switching.
    pub vfs: Vfs,
}
