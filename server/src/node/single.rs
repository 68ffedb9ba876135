//! The single active node (no `[cluster]`): open the state on `LocalCommit`,
//! seed the replicated export table from the config if it never was, open
//! and register the exports it holds and start a new write-verifier epoch, build
//! `Services` (each program's context and what the RPC transport shares), bind
//! the listeners (`listen`), start `/metrics` if configured and the admin
//! socket; on stop undo it in reverse order.
//!
//! `start` returns a `Node` with the bound ports, so tests can run a node
//! in-process on port 0.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use hanfs_raft::local::LocalCommit;
use hanfs_state::Command;
use tokio::sync::broadcast;

pub use super::listen::Services;
use super::listen::Serving;
use super::{BoundPorts, NodeError};
use crate::admin;
use crate::config::{ExportConfig, ServerConfig};
use crate::exports::ExportTable;
use crate::exports_admin;
use crate::live::{self, Live, View};
use crate::metrics::http::MetricsServer;
use crate::metrics::Metrics;
use crate::mount::MountCtx;
use crate::nfs3::NfsCtx;
use crate::rpc::shared::{Fence, RpcShared};
use crate::vfs::{self, Vfs};

/// A running node.
pub struct Node {
    services: Arc<Services>,
    serving: Serving,
    admin_stop: broadcast::Sender<()>,
    /// None when the admin socket could not be bound (NFS is served anyway).
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// Closed last on stop, so the state directory can be reopened.
    local: Arc<LocalCommit>,
    metrics: Arc<Metrics>,
    /// `GET /metrics`, when `[metrics] listen` is set.
    metrics_server: Option<MetricsServer>,
}

/// What a node does before it serves: seed the replicated export table from
/// `config` if it was never seeded (a new cluster's first active, a single
/// node's first start), else warn about every way `config` differs from it
/// (the table is the truth); open every export the table serves and commit
/// each with the filesystem found there (idempotent when unchanged), the
/// handle key if none is set yet, and a new write-verifier epoch, so clients
/// resend their uncommitted writes. Then check that each export is on the
/// filesystem the state recorded for it. Any export that cannot be opened
/// fails the whole promotion (the other node may have the right disk).
pub(crate) async fn open_and_commit(config: &ServerConfig, commit: &Arc<dyn Commit>) -> Result<View, NodeError> {
    let state = commit.state();
    let seed = {
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        exports_admin::seed_commands(&config.exports, &guard).map_err(NodeError::Seed)?
    };
    if !seed.is_empty() {
        tracing::info!(exports = seed.len(), "seeding the replicated export table from the config");
        commit.commit(seed).await?;
    }
    let (wanted, refused, revision) = {
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        exports_admin::warn_differences(&config.exports, &exports_admin::table(&guard));
        let (wanted, refused) = live::wanted(&guard);
        (wanted, refused, guard.exports_revision())
    };
    for r in &refused {
        tracing::error!(problem = %r, "export not served");
    }
    let configs: Vec<ExportConfig> = wanted.into_iter().map(|w| w.config).collect();
    let roots = vfs::open_roots(&configs).map_err(NodeError::Export)?;
    let mut cmds = {
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        vfs::register_commands(&roots, &guard).map_err(NodeError::Random)?
    };
    cmds.push(Command::BumpEpoch);
    commit.commit(cmds).await?;
    let guard = state.read().unwrap_or_else(|p| p.into_inner());
    let vfs = Vfs::new(roots, &guard).map_err(NodeError::Export)?;
    // The revision read before opening: a change committed since then
    // (or the identities just registered) makes the next refresh rebuild.
    let exports = ExportTable::with_host_cache(&configs, config.host_cache_ttl);
    Ok(View { vfs: Arc::new(vfs), exports: Arc::new(exports), revision })
}

/// Build the per-active-period services around the opened exports; their
/// calls are counted in the node's `metrics`.
pub(crate) fn services(
    config: ServerConfig,
    commit: Arc<dyn Commit>,
    fence: Fence,
    view: View,
    metrics: &Arc<Metrics>,
) -> Result<Services, NodeError> {
    let live = Live::new(view, config.host_cache_ttl);
    let rpc = Arc::new(
        RpcShared::new(commit.clone(), fence.clone(), config.record_bytes_max)
            .with_metrics(metrics.clone())
            .with_limits(config.limits.clone()),
    );
    metrics.attach(&rpc);
    Ok(Services {
        rpc,
        nfs: Arc::new(NfsCtx { live: live.clone(), commit: commit.clone(), fence }),
        mount: Arc::new(MountCtx { live, commit: commit.clone() }),
        portmap: Default::default(),
        config,
        commit,
    })
}

/// Start a node: everything in the module doc, in that order.
pub async fn start(config: ServerConfig) -> Result<Node, NodeError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| NodeError::StateDir { path: config.state_dir.display().to_string(), error: source })?;
    let local = LocalCommit::open(&config.state_dir).map_err(NodeError::StateOpen)?;
    let commit: Arc<dyn Commit> = local.clone();
    let view = open_and_commit(&config, &commit).await?;
    let metrics = Metrics::new();
    let weak = Arc::downgrade(&local);
    metrics.set_sampler(Arc::new(move || {
        weak.upgrade().map(|local| crate::metrics::single_sample(&local)).unwrap_or_default()
    }));
    let services = Arc::new(services(config, commit.clone(), Fence::always(), view, &metrics)?);
    let serving = Serving::open(&services).await?;
    let metrics_server = match start_metrics(services.config.metrics_listen, &metrics).await {
        Ok(server) => server,
        Err(e) => {
            serving.close(&services).await;
            local.shutdown().await;
            return Err(e);
        }
    };
    let (admin_stop, admin_rx) = broadcast::channel(1);
    // The admin socket is a convenience: failing to bind it (e.g. a state path
    // longer than a unix socket path allows) must not stop NFS service.
    let served = vfs::ServingVfs::default();
    served.set(&services.nfs.live);
    let handler = Arc::new(admin::StateHandler {
        commit,
        serving: served,
        metrics: metrics.clone(),
        admin_op: Default::default(),
    });
    let admin_task = match admin::serve(&services.config.state_dir, handler, admin_rx) {
        Ok(task) => Some(task),
        Err(e) => {
            let path = admin::socket_path(&services.config.state_dir);
            tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; `exports`/`clients` will not reach this server");
            None
        }
    };
    let ports = serving.ports();
    let listen = services.config.listen;
    let exports = services.nfs.live.load().exports.all().count();
    tracing::info!(%listen, ?ports, exports, "serving");
    Ok(Node { services, serving, admin_stop, admin_task, local, metrics, metrics_server })
}

/// Serve `GET /metrics` on `listen`, if set.
pub(crate) async fn start_metrics(
    listen: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
) -> Result<Option<MetricsServer>, NodeError> {
    let Some(addr) = listen else { return Ok(None) };
    MetricsServer::start(addr, metrics.clone()).await.map(Some).map_err(|error| NodeError::Bind {
        what: "metrics",
        addr,
        error,
    })
}

impl Node {
    pub fn ports(&self) -> BoundPorts {
        self.serving.ports()
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn listen(&self) -> IpAddr {
        self.services.config.listen
    }

    /// Where `GET /metrics` is served (`None`: not configured).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// This node's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stop serving: close the listeners and every connection, unregister
    /// from a system rpcbind, wait until every task has finished.
    pub async fn stop(self) {
        self.serving.close(&self.services).await;
        if let Some(server) = self.metrics_server {
            server.stop().await;
        }
        let _ = self.admin_stop.send(());
        if let Some(task) = self.admin_task {
            let _ = task.await;
        }
        self.local.shutdown().await;
        tracing::info!("stopped");
    }
}
