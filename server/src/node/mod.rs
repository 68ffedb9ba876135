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

/// Why a node could not start (or, `RaftFailed`, stopped on its own). Each
/// message is complete on its own (no
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
    /// The config's exports cannot seed the replicated export table.
    #[error("seeding the export table from the config: {0}")]
    Seed(crate::exports_admin::ExportsAdminError),
    #[error("drawing the handle key: {0}")]
    Random(io::Error),
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind { what: &'static str, addr: SocketAddr, error: io::Error },
    #[error("cluster: {0}")]
    Cluster(String),
    /// Raft stopped by itself while the node ran (a log write failed: the
    /// state directory's disk is full or failing). The node has demoted and
    /// stopped; the process exits non-zero so its supervisor starts it again,
    /// and it rejoins once the disk takes writes again.
    #[error("raft stopped on a storage error, node stopped: {0}")]
    RaftFailed(String),
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
/// serve until `shutdown` completes, then stop. A cluster member also stops,
/// with `NodeError::RaftFailed`, when its Raft stops on a storage error.
/// Under systemd (`Type=notify`) it reports READY once the node serves
/// (single) or has joined its cluster (serving or following), feeds the
/// watchdog while it runs, and reports STOPPING (`crate::notify`). The STATUS line names the exports of the
/// replicated table (as served, or as this node last applied it).
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    if config.cluster.is_some() {
        let node = std::sync::Arc::new(ClusterNode::start(config).await?);
        let status = |n: &ClusterNode| {
            let role = if n.serving() { "active: serving" } else { "passive: following" };
            format!("{role} {}", n.export_names())
        };
        crate::notify::notify(&format!("READY=1\nSTATUS={}", status(&node)));
        let watched = node.clone();
        let watchdog = crate::notify::spawn_watchdog(move || status(&watched));
        let failed = tokio::select! {
            () = shutdown => None,
            error = node.raft_fatal_error() => Some(error),
        };
        if let Some(error) = &failed {
            tracing::error!(%error, "raft stopped on a storage error; stopping the node (its supervisor restarts it)");
        }
        crate::notify::notify("STOPPING=1");
        if let Some(w) = watchdog {
            w.abort();
            let _ = w.await;
        }
        match std::sync::Arc::try_unwrap(node) {
            Ok(node) => node.stop().await,
            Err(_) => tracing::error!("cluster node still referenced at shutdown; not stopped cleanly"),
        }
        if let Some(error) = failed {
            return Err(NodeError::RaftFailed(error));
        }
    } else {
        let node = start(config).await?;
        let live = node.services().nfs.live.clone();
        let status = move || {
            let view = live.load();
            let names: Vec<&str> = view.exports.all().map(|e| e.name.as_str()).collect();
            format!("serving {}", names.join(" "))
        };
        crate::notify::notify(&format!("READY=1\nSTATUS={}", status()));
        let watchdog = crate::notify::spawn_watchdog(status);
        shutdown.await;
        crate::notify::notify("STOPPING=1");
        if let Some(w) = watchdog {
            w.abort();
        }
        node.stop().await;
    }
    Ok(())
}
