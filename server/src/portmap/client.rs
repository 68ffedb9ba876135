//! Calls to another portmapper, over `rpc::client`: PMAP SET and UNSET to a
//! system rpcbind on this host when it, not hanfs, owns port 111 (portmap v2
//! over UDP to the loopback address, as `pmap_set(3)` does), and GETPORT to
//! any host, to find where one of its programs listens.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nfs3_types::portmap::mapping;

use crate::rpc::client::{self, ClientError, Request};
use crate::rpc::program::{Cred, Transport};
use crate::rpc::shared::Fence;
use crate::rpc::xdr::Reader;

use super::{PMAP_PROGRAM, PMAP_VERSION};

pub const PMAPPROC_SET: u32 = 1;
pub const PMAPPROC_UNSET: u32 = 2;
pub const PMAPPROC_GETPORT: u32 = 3;
/// How long to wait for one answer.
pub const PMAP_CALL_TIMEOUT_MS: u64 = 1000;
/// Attempts per call (UDP may drop a datagram).
pub const PMAP_CALL_ATTEMPTS: u32 = 3;

/// Register `m` with the portmapper on 127.0.0.1:`port`; its boolean answer.
pub async fn set(port: u16, m: mapping) -> Result<bool, ClientError> {
    let answer = call(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), PMAPPROC_SET, m, &Fence::always()).await?;
    decode_bool(&answer)
}

/// Remove every mapping of (`m.prog`, `m.vers`) from the portmapper on
/// 127.0.0.1:`port`; its boolean answer.
pub async fn unset(port: u16, m: mapping) -> Result<bool, ClientError> {
    let answer = call(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), PMAPPROC_UNSET, m, &Fence::always()).await?;
    decode_bool(&answer)
}

/// The port where the host whose portmapper listens on `portmapper` serves
/// (`prog`, `vers`) over `prot` (`IPPROTO_TCP` or `IPPROTO_UDP`); `None` if
/// it has no such mapping. Each datagram is sent only while `fence` passes
/// (a callback's lookup must not leave a node that lost its lease).
pub async fn getport(
    portmapper: SocketAddr,
    prog: u32,
    vers: u32,
    prot: u32,
    fence: &Fence,
) -> Result<Option<u16>, ClientError> {
    let answer = call(portmapper, PMAPPROC_GETPORT, mapping { prog, vers, prot, port: 0 }, fence).await?;
    let mut r = Reader::new(&answer);
    let port = r.u32().map_err(|_| ClientError::Malformed("GETPORT result"))?;
    r.finish().map_err(|_| ClientError::Malformed("GETPORT result"))?;
    match port {
        0 => Ok(None),
        p => u16::try_from(p).map(Some).map_err(|_| ClientError::Malformed("GETPORT port over 65535")),
    }
}

/// One portmap v2 call with a `mapping` argument, over UDP with AUTH_NONE.
async fn call(addr: SocketAddr, proc_: u32, m: mapping, fence: &Fence) -> Result<Vec<u8>, ClientError> {
    let mut args = Vec::with_capacity(16);
    for word in [m.prog, m.vers, m.prot, m.port] {
        args.extend_from_slice(&word.to_be_bytes());
    }
    let req = Request {
        addr,
        prog: PMAP_PROGRAM,
        vers: PMAP_VERSION,
        proc_,
        cred: &Cred::None,
        args: &args,
        transport: Transport::Udp,
        timeout: Duration::from_millis(PMAP_CALL_TIMEOUT_MS),
        attempts: PMAP_CALL_ATTEMPTS,
        fence,
    };
    client::call(&req).await
}

fn decode_bool(answer: &[u8]) -> Result<bool, ClientError> {
    let mut r = Reader::new(answer);
    let b = r.bool().map_err(|_| ClientError::Malformed("boolean result"))?;
    r.finish().map_err(|_| ClientError::Malformed("boolean result"))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use hanfs_raft::commit::{Commit, CommitFuture};
    use hanfs_state::{Command, State};
    use nfs3_types::portmap::{IPPROTO_TCP, IPPROTO_UDP};
    use tokio::net::{TcpListener, UdpSocket};

    use super::*;
    use crate::portmap::{Table, PROGRAM};
    use crate::rpc::dispatch::{Dispatcher, Registry};
    use crate::rpc::listener::Listeners;
    use crate::rpc::record::RECORD_BYTES_MAX;
    use crate::rpc::shared::{Fence, RpcShared};

    /// The portmap program commits nothing; this only has to exist.
    struct NoState(Arc<RwLock<State>>);

    impl Commit for NoState {
        fn commit(&self, _cmds: Vec<Command>) -> CommitFuture<'_> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn state(&self) -> Arc<RwLock<State>> {
            self.0.clone()
        }
    }

    /// hanfs' own portmap program on an ephemeral loopback port (TCP and UDP).
    async fn serve(table: Arc<Table>) -> (Listeners, SocketAddr) {
        let shared = Arc::new(RpcShared::new(Arc::new(NoState(Default::default())), Fence::always(), RECORD_BYTES_MAX));
        let dispatcher = Arc::new(Dispatcher::new(shared, table, Registry::new(&[&PROGRAM])));
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = udp.local_addr().unwrap();
        let listeners = Listeners::new();
        listeners.udp(udp, dispatcher.clone());
        listeners.tcp(TcpListener::bind(addr).await.unwrap(), dispatcher);
        (listeners, addr)
    }

    /// GETPORT through our own portmap; SET and UNSET from this client's
    /// ephemeral source port are refused there (a system rpcbind has the same
    /// rule for non-root; hanfs never SETs in its own portmapper).
    #[tokio::test]
    async fn getport_set_unset_against_our_portmap() {
        let table = Arc::new(Table::default());
        table.set_own(mapping { prog: 100_021, vers: 4, prot: IPPROTO_UDP, port: 4045 });
        let (listeners, addr) = serve(table.clone()).await;
        assert_eq!(getport(addr, 100_021, 4, IPPROTO_UDP, &Fence::always()).await.unwrap(), Some(4045));
        assert_eq!(getport(addr, 100_021, 4, IPPROTO_TCP, &Fence::always()).await.unwrap(), None);
        let m = mapping { prog: 100_024, vers: 1, prot: IPPROTO_TCP, port: 662 };
        assert!(!set(addr.port(), m).await.unwrap(), "SET from an unprivileged port");
        assert_eq!(getport(addr, 100_024, 1, IPPROTO_TCP, &Fence::always()).await.unwrap(), None);
        let nlm = mapping { prog: 100_021, vers: 4, prot: IPPROTO_UDP, port: 0 };
        assert!(!unset(addr.port(), nlm).await.unwrap(), "UNSET from an unprivileged port");
        assert_eq!(table.getport(100_021, 4, IPPROTO_UDP), 4045);
        assert_eq!(table.refused(), 2);
        listeners.shutdown().await;
    }

    #[tokio::test]
    async fn our_portmap_refuses_other_programs_and_versions() {
        let (listeners, addr) = serve(Arc::new(Table::default())).await;
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut req = Request {
                addr,
                prog: 100_003,
                vers: 3,
                proc_: 0,
                cred: &Cred::None,
                args: &[],
                transport,
                timeout: Duration::from_millis(PMAP_CALL_TIMEOUT_MS),
                attempts: 1,
                fence: &Fence::always(),
            };
            let err = client::call(&req).await.unwrap_err();
            assert!(matches!(err, ClientError::ProgUnavail), "{err:?}");
            // rpcbind v3 gets PROG_MISMATCH(2, 2).
            req.prog = PMAP_PROGRAM;
            req.vers = 3;
            let err = client::call(&req).await.unwrap_err();
            assert!(matches!(err, ClientError::ProgMismatch { low: 2, high: 2 }), "{err:?}");
            req.vers = PMAP_VERSION;
            req.proc_ = 99;
            let err = client::call(&req).await.unwrap_err();
            assert!(matches!(err, ClientError::ProcUnavail), "{err:?}");
        }
        listeners.shutdown().await;
    }
}
