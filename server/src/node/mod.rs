//! The node lifecycle. Without `[cluster]` (`single`): one active node on
//! `LocalCommit`, serving from start to stop, as the quick start always did.
//! With `[cluster]` (`cluster`): a Raft member whose `lifecycle` task opens
//! the NFS service only while this node is the promoted leader holding its
//! lease, running the `hooks` and moving the VIP around it, and stands down
//! for another storage node when asked; `control` answers the admin socket
//! (`init`, `status`, `switchover`, `locks`, `debug faults`); both share `shared`.
//! `conns` records the active's client TCP connections on the VIP and, on
//! promotion, destroys leftover sockets and tickles the old active's clients.
//! `listen` binds and closes the portmap, MOUNT, NFS, NLM and NSM listeners
//! (and the NLM callback task) for both.

pub mod cluster;
mod conns;
mod control;
mod hooks;
mod lifecycle;
mod listen;
mod shared;
pub mod single;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use hanfs_raft::commit::CommitError;

use crate::config::ServerConfig;

pub use cluster::ClusterNode;
pub use conns::NO_TICKLE_ENV;
pub use control::FAULTS_ENV;
pub use listen::EPHEMERAL_BIND_ATTEMPTS;
pub use single::{start, Node};

/// Why a node could not start. Each message is complete on its own (no
/// `source` chain), so it reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("state directory {path}: {error}")]
    StateDir { path: String, error: io::Error },
    #[error("opening the state: {0} (is another hanfs-server using this state directory?)")]
    StateOpen(CommitError),
    #[error("registering the exports: {0} (an export id or name changed since the last run?)")]
    Commit(CommitError),
    #[error("{0}")]
    Export(crate::vfs::ExportError),
    #[error("drawing the handle key: {0}")]
    Random(io::Error),
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind { what: &'static str, addr: SocketAddr, error: io::Error },
    #[error("cluster: {0}")]
    Cluster(String),
}

impl From<CommitError> for NodeError {
    fn from(e: CommitError) -> Self {
        NodeError::Commit(e)
    }
}

/// The ports the node listens on (TCP; UDP uses the same numbers where served).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BoundPorts {
    pub portmap: u16,
    pub nfs: u16,
    pub mount: u16,
    pub nlm: u16,
    pub nsm: u16,
}

/// Start (a single node, or a cluster member when the config has `[cluster]`),
/// serve until `shutdown` completes, then stop.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    if config.cluster.is_some() {
        let node = ClusterNode::start(config).await?;
        shutdown.await;
        node.stop().await;
    } else {
        let node = start(config).await?;
        shutdown.await;
        node.stop().await;
    }
    Ok(())
}
