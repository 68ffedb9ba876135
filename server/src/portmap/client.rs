//! Talking to a system rpcbind on port 111 when it, not hanfs, owns the port:
//! PMAP SET our programs at startup and PMAP UNSET them on shutdown (portmap v2
//! over UDP to the loopback address, as `pmap_set(3)` does).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nfs3_types::portmap::mapping;
use tokio::net::UdpSocket;

use crate::rpc::msg::{MSG_ACCEPTED, MSG_CALL, MSG_REPLY, RPC_VERSION};
use crate::rpc::xdr::Reader;

use super::{PMAP_PROGRAM, PMAP_VERSION};

pub const PMAPPROC_SET: u32 = 1;
pub const PMAPPROC_UNSET: u32 = 2;
/// How long to wait for one answer.
pub const PMAP_CALL_TIMEOUT_MS: u64 = 1000;
/// Attempts per call (UDP may drop a datagram).
pub const PMAP_CALL_ATTEMPTS: u32 = 3;
/// Largest reply read.
pub const PMAP_REPLY_BYTES_MAX: usize = 512;

/// Send PMAPPROC_SET or PMAPPROC_UNSET for `m` to the portmapper on
/// 127.0.0.1:`port`. Returns the portmapper's boolean answer.
pub async fn call(port: u16, proc_: u32, m: mapping) -> io::Result<bool> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let xid = std::process::id().wrapping_mul(0x9e37_79b9) ^ m.prog ^ (m.vers << 16) ^ proc_;
    let mut request = Vec::with_capacity(56);
    for word in [xid, MSG_CALL, RPC_VERSION, PMAP_PROGRAM, PMAP_VERSION, proc_, 0, 0, 0, 0] {
        request.extend_from_slice(&word.to_be_bytes());
    }
    for word in [m.prog, m.vers, m.prot, m.port] {
        request.extend_from_slice(&word.to_be_bytes());
    }
    let mut buf = [0u8; PMAP_REPLY_BYTES_MAX];
    for _ in 0..PMAP_CALL_ATTEMPTS {
        socket.send(&request).await?;
        let wait = Duration::from_millis(PMAP_CALL_TIMEOUT_MS);
        match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if let Some(answer) = buf.get(..n).and_then(|reply| parse_bool_reply(reply, xid)) {
                    return Ok(answer);
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => continue,
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from the portmapper"))
}

/// The boolean result of an accepted, successful reply to `xid`.
fn parse_bool_reply(reply: &[u8], xid: u32) -> Option<bool> {
    let mut r = Reader::new(reply);
    if r.u32().ok()? != xid || r.u32().ok()? != MSG_REPLY || r.u32().ok()? != MSG_ACCEPTED {
        return None;
    }
    let _verf_flavor = r.u32().ok()?;
    r.opaque(crate::rpc::auth::AUTH_BODY_BYTES_MAX).ok()?;
    if r.u32().ok()? != 0 {
        return None;
    }
    r.bool().ok()
}
