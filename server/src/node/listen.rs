//! What an active node serves (`Services`: each program's context and what
//! the RPC transport shares), binding its listeners — NFS (TCP), MOUNT, NLM,
//! NSM and portmap (TCP + UDP) on `server.listen` — and registering the
//! programs with our portmapper, or with a system rpcbind that already owns
//! its port; and closing them again: connections dropped at once, listeners
//! stopped. The NLM callback task (GRANTED_MSG, `_RES`) lives exactly as long
//! as the listeners: it starts in `Serving::open` (and then re-sends every
//! pending grant of the replicated table) and stops in `Serving::close`; so
//! does classic lock recovery (`nlm::grace::Recovery`: NSM state bump and
//! grace period before the listeners open, SM_NOTIFY once they are), and the
//! OFD lock mirror (`nlm::ofd`): `open` takes every lock of the table on the
//! exported files before the listeners bind, `close` releases them all after
//! they stopped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use nfs3_types::portmap::{mapping, IPPROTO_TCP, IPPROTO_UDP};
use tokio::net::{TcpListener, UdpSocket};

use super::{BoundPorts, NodeError};
use crate::config::ServerConfig;
use crate::mount::{self, MountCtx};
use crate::nfs3::{self, NfsCtx};
use crate::nlm::callback::{CallbackConfig, CallbackTask};
use crate::nlm::grace::Recovery;
use crate::nlm::ofd::OfdMirror;
use crate::nlm::{self, NlmCtx};
use crate::nsm::{self, NsmCtx};
use crate::portmap;
use crate::rpc::dispatch::{Dispatcher, Registry};
use crate::rpc::listener::Listeners;
use crate::rpc::program::Program;
use crate::rpc::shared::RpcShared;

/// Attempts to find an ephemeral port free for both TCP and UDP.
pub const EPHEMERAL_BIND_ATTEMPTS: u32 = 16;

/// One active period's wiring: what the RPC transport shares (DRC, fence,
/// connections) and each program's own context. Only the node builds and
/// reads it; no handler sees it.
pub struct Services {
    pub config: ServerConfig,
    /// The replicated state: read it, or change it through `commit`.
    pub commit: Arc<dyn Commit>,
    pub rpc: Arc<RpcShared>,
    pub nfs: Arc<NfsCtx>,
    pub mount: Arc<MountCtx>,
    /// This node's portmap table (local, not replicated).
    pub portmap: Arc<portmap::Table>,
}

/// Open listeners of one active period.
pub struct Serving {
    listeners: Listeners,
    ports: BoundPorts,
    /// Set when a system rpcbind owns the portmap port: what we registered there.
    system_portmap: Option<(u16, Vec<mapping>)>,
    /// GRANTED_MSG and `_RES` calls to clients, while serving.
    callbacks: CallbackTask,
    /// Classic lock recovery (grace period, SM_NOTIFY); empty in transparent mode.
    recovery: Recovery,
    /// The table's locks held as OFD locks on the exported files, while serving.
    ofd: Arc<OfdMirror>,
}

/// The lock programs' contexts of one active period.
struct LockCtxs {
    nlm: Arc<NlmCtx>,
    nsm: Arc<NsmCtx>,
}

impl Serving {
    /// Bind everything for `services` on `services.config.listen`. On failure
    /// whatever was bound is closed again.
    pub async fn open(services: &Arc<Services>) -> Result<Serving, NodeError> {
        let listeners = Listeners::new();
        let ofd = OfdMirror::start(services.nfs.live.clone(), services.commit.clone());
        ofd.rebuild().await;
        let config = CallbackConfig::new(
            services.config.ports.callback_portmap,
            callback_source(&services.config),
            services.rpc.fence.clone(),
        );
        let mut recovery = match Recovery::begin(services.commit.clone(), &services.config, config.clone()).await {
            Ok(recovery) => recovery,
            Err(e) => {
                ofd.close();
                return Err(NodeError::Commit(e));
            }
        };
        let (callbacks, task) = CallbackTask::start(services.commit.clone(), config, ofd.clone());
        let locks = LockCtxs {
            nlm: Arc::new(NlmCtx {
                commit: services.commit.clone(),
                live: services.nfs.live.clone(),
                callbacks: callbacks.clone(),
                grace: recovery.grace(),
                ofd: ofd.clone(),
            }),
            nsm: Arc::new(NsmCtx { commit: services.commit.clone(), callbacks, ofd: ofd.clone() }),
        };
        match bind_all(&listeners, services, &locks).await {
            Ok((ports, system_portmap)) => {
                recovery.listening();
                Ok(Serving { listeners, ports, system_portmap, callbacks: task, recovery, ofd })
            }
            Err(e) => {
                listeners.shutdown().await;
                task.stop().await;
                recovery.stop().await;
                ofd.close();
                Err(e)
            }
        }
    }

    pub fn ports(&self) -> BoundPorts {
        self.ports
    }

    /// Stop serving: drop every connection (no reply of a running call is
    /// sent), stop the listeners and wait for their tasks, unregister from a
    /// system rpcbind.
    pub async fn close(self, services: &Services) {
        services.rpc.conns.close_all();
        self.listeners.shutdown().await;
        services.rpc.conns.close_all();
        self.callbacks.stop().await;
        self.recovery.stop().await;
        self.ofd.close();
        if let Some((port, mappings)) = &self.system_portmap {
            unregister_with_system(*port, mappings).await;
        }
    }
}

/// The address NLM callbacks come from: the VIP when there is one, else the
/// listen address unless it is unspecified (see `CallbackConfig::source`).
fn callback_source(config: &ServerConfig) -> Option<IpAddr> {
    let vip = config.cluster.as_ref().and_then(|c| c.vip.as_ref()).map(|v| v.addr);
    vip.or_else(|| (!config.listen.is_unspecified()).then_some(config.listen))
}

async fn bind_all(
    listeners: &Listeners,
    services: &Arc<Services>,
    locks: &LockCtxs,
) -> Result<(BoundPorts, Option<(u16, Vec<mapping>)>), NodeError> {
    let listen = services.config.listen;
    let wanted = services.config.ports.clone();
    let nfs_dispatcher = dispatcher(services, &services.nfs, nfs_programs());
    let nfs = bind_tcp(listeners, nfs_dispatcher, "NFS", SocketAddr::new(listen, wanted.nfs)).await?;
    let mount_programs: &[&'static Program<MountCtx>] = &[&mount::PROGRAM_V1, &mount::PROGRAM_V3];
    let mount_dispatcher = dispatcher(services, &services.mount, mount_programs);
    let mount = bind_pair(listeners, mount_dispatcher, "MOUNT", listen, wanted.mount).await?;
    let nlm =
        bind_pair(listeners, dispatcher(services, &locks.nlm, &[&nlm::PROGRAM]), "NLM", listen, wanted.nlm).await?;
    let nsm =
        bind_pair(listeners, dispatcher(services, &locks.nsm, &[&nsm::PROGRAM]), "NSM", listen, wanted.nsm).await?;
    tracing::info!(nlm, nsm, "nlm (100021 v4) and nsm (100024 v1) listening on TCP and UDP");

    let mut mappings: Vec<mapping> = nfs_programs()
        .iter()
        .map(|p| mapping { prog: p.prog, vers: p.vers, prot: IPPROTO_TCP, port: u32::from(nfs) })
        .collect();
    let paired = mount_programs
        .iter()
        .map(|p| (p.prog, p.vers, mount))
        .chain([(nlm::PROGRAM.prog, nlm::PROGRAM.vers, nlm), (nsm::PROGRAM.prog, nsm::PROGRAM.vers, nsm)]);
    for (prog, vers, port) in paired {
        for prot in [IPPROTO_TCP, IPPROTO_UDP] {
            mappings.push(mapping { prog, vers, prot, port: u32::from(port) });
        }
    }
    let pmap_dispatcher = dispatcher(services, &services.portmap, &[&portmap::PROGRAM]);
    let (portmap_port, system_portmap) = match bind_pair(listeners, pmap_dispatcher, "portmap", listen, wanted.portmap)
        .await
    {
        Ok(port) => {
            for prot in [IPPROTO_TCP, IPPROTO_UDP] {
                mappings.push(mapping {
                    prog: portmap::PMAP_PROGRAM,
                    vers: portmap::PMAP_VERSION,
                    prot,
                    port: u32::from(port),
                });
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
        services.portmap.set_own(*m);
    }
    Ok((BoundPorts { portmap: portmap_port, nfs, mount, nlm, nsm }, system_portmap))
}

/// The programs served on the NFS port (TCP only: the Linux client refuses
/// NFS over UDP, and a 1 MiB READ does not fit a datagram).
fn nfs_programs() -> &'static [&'static Program<NfsCtx>] {
    static NFS_PROGRAMS: [&Program<NfsCtx>; 1] = [&nfs3::PROGRAM];
    &NFS_PROGRAMS
}

/// A dispatcher for `programs`, whose handlers get `ctx`.
fn dispatcher<C: Send + Sync + 'static>(
    services: &Services,
    ctx: &Arc<C>,
    programs: &[&'static Program<C>],
) -> Arc<Dispatcher<C>> {
    Arc::new(Dispatcher::new(services.rpc.clone(), ctx.clone(), Registry::new(programs)))
}

async fn bind_tcp<C: Send + Sync + 'static>(
    listeners: &Listeners,
    dispatcher: Arc<Dispatcher<C>>,
    what: &'static str,
    addr: SocketAddr,
) -> Result<u16, NodeError> {
    let tcp = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { what, addr, error: source })?;
    let port = tcp.local_addr().map_err(|source| NodeError::Bind { what, addr, error: source })?.port();
    listeners.tcp(tcp, dispatcher);
    Ok(port)
}

/// Bind TCP and UDP on the same port (with port 0: the same ephemeral port).
async fn bind_pair<C: Send + Sync + 'static>(
    listeners: &Listeners,
    dispatcher: Arc<Dispatcher<C>>,
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
                listeners.tcp(tcp, dispatcher.clone());
                listeners.udp(udp, dispatcher);
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
        let _ = portmap::client::unset(port, *m).await;
    }
    for m in mappings {
        match portmap::client::set(port, *m).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(prog = m.prog, vers = m.vers, prot = m.prot, "system portmapper refused SET"),
            Err(e) => tracing::warn!(prog = m.prog, error = %e, "system portmapper unreachable"),
        }
    }
}

async fn unregister_with_system(port: u16, mappings: &[mapping]) {
    for m in mappings {
        if let Err(e) = portmap::client::unset(port, *m).await {
            tracing::warn!(prog = m.prog, error = %e, "system portmapper UNSET failed");
        }
    }
}
