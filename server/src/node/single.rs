//! The node lifecycle for a single active node: open the state, register the
//! exports and start a new write-verifier epoch, build `Services`, bind the
//! portmap, MOUNT and NFS listeners, register the programs with portmap, and
//! on stop undo it in reverse order (unregister, stop listeners and wait for
//! every connection task, stop the admin socket).
//!
//! `start` returns a `Node` with the bound ports, so tests can run a node
//! in-process on port 0; `run` is the binary's start → wait → stop.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hanfs_raft::commit::{Commit, CommitError};
use hanfs_raft::local::LocalCommit;
use hanfs_state::Command;
use nfs3_types::portmap::{mapping, IPPROTO_TCP, IPPROTO_UDP};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;

use crate::config::ServerConfig;
use crate::exports::ExportTable;
use crate::rpc::dispatch::{Dispatcher, Registry};
use crate::rpc::listener::Listeners;
use crate::rpc::program::Program;
use crate::services::Services;
use crate::vfs::Vfs;
use crate::{admin, mount, nfs3, portmap};

/// Attempts to find an ephemeral port free for both TCP and UDP.
pub const EPHEMERAL_BIND_ATTEMPTS: u32 = 16;

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
    Export(io::Error),
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind { what: &'static str, addr: SocketAddr, error: io::Error },
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
}

/// A running node.
pub struct Node {
    services: Arc<Services>,
    listeners: Listeners,
    ports: BoundPorts,
    /// Set when a system rpcbind owns the portmap port: what we registered there.
    system_portmap: Option<(u16, Vec<mapping>)>,
    admin_stop: broadcast::Sender<()>,
    /// None when the admin socket could not be bound (NFS is served anyway).
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// Closed last on stop, so the state directory can be reopened.
    local: Arc<LocalCommit>,
}


/// Start a node: everything in the module doc, in that order.
pub async fn start(config: ServerConfig) -> Result<Node, NodeError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| NodeError::StateDir { path: config.state_dir.display().to_string(), error: source })?;
    let local = LocalCommit::open(&config.state_dir).map_err(NodeError::StateOpen)?;
    let commit: Arc<dyn Commit> = local.clone();
    let mut cmds: Vec<Command> = config
        .exports
        .iter()
        .map(|e| Command::RegisterExport { export_id: e.export_id, path: e.name.clone() })
        .collect();
    // A restart is a new write-verifier epoch: clients resend uncommitted writes.
    cmds.push(Command::BumpEpoch);
    commit.commit(cmds).await?;
    let vfs = Vfs::new(&config.exports).map_err(NodeError::Export)?;
    let services = Arc::new(Services {
        exports: ExportTable::new(&config.exports),
        config,
        commit,
        conns: Default::default(),
        vfs,
        portmap: Default::default(),
        in_progress: Default::default(),
    });
    let listen = services.config.listen;
    let wanted = services.config.ports.clone();
    let listeners = Listeners::new();

    let nfs = bind_tcp(&listeners, &services, nfs_programs(), "NFS", SocketAddr::new(listen, wanted.nfs)).await?;
    let mount_programs: &[&'static Program] = &[&mount::PROGRAM_V1, &mount::PROGRAM_V3];
    let mount = bind_pair(&listeners, &services, mount_programs, "MOUNT", listen, wanted.mount).await?;

    let mut mappings: Vec<mapping> = nfs_programs()
        .iter()
        .map(|p| mapping { prog: p.prog, vers: p.vers, prot: IPPROTO_TCP, port: u32::from(nfs) })
        .collect();
    for p in mount_programs {
        for prot in [IPPROTO_TCP, IPPROTO_UDP] {
            mappings.push(mapping { prog: p.prog, vers: p.vers, prot, port: u32::from(mount) });
        }
    }
    let pmap_programs: &[&'static Program] = &[&portmap::PROGRAM];
    let (portmap_port, system_portmap) =
        match bind_pair(&listeners, &services, pmap_programs, "portmap", listen, wanted.portmap).await {
            Ok(port) => {
                for prot in [IPPROTO_TCP, IPPROTO_UDP] {
                    mappings.push(mapping { prog: portmap::PMAP_PROGRAM, vers: portmap::PMAP_VERSION, prot, port: u32::from(port) });
                }
                (port, None)
            }
            Err(NodeError::Bind { error, .. }) if error.kind() == io::ErrorKind::AddrInUse && wanted.portmap != 0 => {
                tracing::info!(port = wanted.portmap, "portmap port in use (system rpcbind?): registering with it instead");
                register_with_system(wanted.portmap, &mappings).await;
                (wanted.portmap, Some((wanted.portmap, mappings.clone())))
            }
            Err(e) => return Err(e),
        };
    for m in &mappings {
        services.portmap.set(*m);
    }
    let (admin_stop, admin_rx) = broadcast::channel(1);
    // The admin socket is a convenience: failing to bind it (e.g. a state path
    // longer than a unix socket path allows) must not stop NFS service.
    let admin_task = match admin::serve(services.clone(), admin_rx) {
        Ok(task) => Some(task),
        Err(e) => {
            let path = admin::socket_path(&services.config.state_dir);
            tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; `exports`/`clients` will not reach this server");
            None
        }
    };
    let ports = BoundPorts { portmap: portmap_port, nfs, mount };
    tracing::info!(%listen, ?ports, exports = services.config.exports.len(), "serving");
    Ok(Node { services, listeners, ports, system_portmap, admin_stop, admin_task, local })
}

impl Node {
    pub fn ports(&self) -> BoundPorts {
        self.ports
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn listen(&self) -> IpAddr {
        self.services.config.listen
    }

    /// Stop serving: unregister from a system rpcbind, close the listeners and
    /// every connection, wait until every task has finished.
    pub async fn stop(self) {
        if let Some((port, mappings)) = &self.system_portmap {
            unregister_with_system(*port, mappings).await;
        }
        self.listeners.shutdown().await;
        self.services.conns.close_all();
        let _ = self.admin_stop.send(());
        if let Some(task) = self.admin_task {
            let _ = task.await;
        }
        self.local.shutdown().await;
        tracing::info!("stopped");
    }
}

/// Start, serve until `shutdown` completes, then stop.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let node = start(config).await?;
    shutdown.await;
    node.stop().await;
    Ok(())
}

/// The programs served on the NFS port (TCP only: the Linux client refuses
/// NFS over UDP, and a 1 MiB READ does not fit a datagram).
fn nfs_programs() -> &'static [&'static Program] {
    static NFS_PROGRAMS: [&Program; 1] = [&nfs3::PROGRAM];
    &NFS_PROGRAMS
}

fn dispatcher(services: &Arc<Services>, programs: &[&'static Program]) -> Arc<Dispatcher> {
    Arc::new(Dispatcher::new(services.clone(), Registry::new(programs)))
}

async fn bind_tcp(
    listeners: &Listeners,
    services: &Arc<Services>,
    programs: &[&'static Program],
    what: &'static str,
    addr: SocketAddr,
) -> Result<u16, NodeError> {
    let tcp = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { what, addr, error: source })?;
    let port = tcp.local_addr().map_err(|source| NodeError::Bind { what, addr, error: source })?.port();
    listeners.tcp(tcp, dispatcher(services, programs));
    Ok(port)
}

/// Bind TCP and UDP on the same port (with port 0: the same ephemeral port).
async fn bind_pair(
    listeners: &Listeners,
    services: &Arc<Services>,
    programs: &[&'static Program],
    what: &'static str,
    ip: IpAddr,
    port: u16,
) -> Result<u16, NodeError> {
    let mut last_err = None;
    for _ in 0..EPHEMERAL_BIND_ATTEMPTS {
        let addr = SocketAddr::new(ip, port);
        let tcp = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { what, addr, error: source })?;
        let bound = tcp.local_addr().map_err(|source| NodeError::Bind { what, addr, error: source })?;
        match UdpSocket::bind(bound).await {
            Ok(udp) => {
                let d = dispatcher(services, programs);
                listeners.tcp(tcp, d.clone());
                listeners.udp(udp, d);
                return Ok(bound.port());
            }
            // Port 0 gave a TCP port whose UDP twin is taken: try another.
            Err(source) if port == 0 && source.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(NodeError::Bind { what, addr: bound, error: source });
            }
            Err(source) => return Err(NodeError::Bind { what, addr: bound, error: source }),
        }
    }
    Err(last_err.unwrap_or(NodeError::Bind {
        what,
        addr: SocketAddr::new(ip, port),
        error: io::Error::new(io::ErrorKind::AddrInUse, "no free port for TCP and UDP"),
    }))
}

async fn register_with_system(port: u16, mappings: &[mapping]) {
    for m in mappings {
        // Replace whatever an earlier, crashed instance left behind.
        let _ = portmap::client::call(port, portmap::client::PMAPPROC_UNSET, *m).await;
    }
    for m in mappings {
        match portmap::client::call(port, portmap::client::PMAPPROC_SET, *m).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(prog = m.prog, vers = m.vers, prot = m.prot, "system portmapper refused SET"),
            Err(e) => tracing::warn!(prog = m.prog, error = %e, "system portmapper unreachable"),
        }
    }
}

async fn unregister_with_system(port: u16, mappings: &[mapping]) {
    for m in mappings {
        if let Err(e) = portmap::client::call(port, portmap::client::PMAPPROC_UNSET, *m).await {
            tracing::warn!(prog = m.prog, error = %e, "system portmapper UNSET failed");
        }
    }
}
