//! A minimal NLM v4 client over TCP, written here so the bench needs nothing
//! from hanfs: ONC RPC call/reply framing (record marking, AUTH_UNIX
//! credential), portmapper GETPORT, and NLM4 LOCK / UNLOCK (RFC 1813 §6 and
//! X/Open XNFS: `nlm4_lockargs`, `nlm4_unlockargs`, `nlm4_res`). One call in
//! flight per connection; every call runs under the target's RPC timeout,
//! and after a timeout or transport error the connection refuses further
//! calls (its state is unknown).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

pub const PORTMAP_PROG: u32 = 100_000;
pub const PORTMAP_VERS: u32 = 2;
pub const PMAPPROC_GETPORT: u32 = 3;
pub const IPPROTO_TCP: u32 = 6;
pub const NLM_PROG: u32 = 100_021;
pub const NLM_VERS4: u32 = 4;
pub const NLM4_LOCK: u32 = 2;
pub const NLM4_UNLOCK: u32 = 4;
/// `nlm4_stats` NLM4_GRANTED.
pub const NLM4_GRANTED: u32 = 0;
/// `nlm4_stats` NLM4_DENIED_GRACE_PERIOD.
pub const NLM4_DENIED_GRACE_PERIOD: u32 = 4;

const AUTH_NONE: u32 = 0;
const AUTH_UNIX: u32 = 1;
const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const ACCEPT_SUCCESS: u32 = 0;
/// Last-fragment bit of a record-marking header.
const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Largest reply record read (an NLM or portmap reply is tens of bytes).
pub const REPLY_BYTES_MAX: usize = 64 * 1024;
/// Machine name in the AUTH_UNIX credential.
const MACHINE_NAME: &[u8] = b"hanfs-bench";

/// The `nlm4_stats` name of `stat`, for error tokens.
pub fn stat_name(stat: u32) -> String {
    match stat {
        0 => "NLM4_GRANTED".into(),
        1 => "NLM4_DENIED".into(),
        2 => "NLM4_DENIED_NOLOCKS".into(),
        3 => "NLM4_BLOCKED".into(),
        4 => "NLM4_DENIED_GRACE_PERIOD".into(),
        5 => "NLM4_DEADLCK".into(),
        6 => "NLM4_ROFS".into(),
        7 => "NLM4_STALE_FH".into(),
        8 => "NLM4_FBIG".into(),
        9 => "NLM4_FAILED".into(),
        other => format!("NLM4_STAT_{other}"),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// XDR variable-length opaque (also `string` and `netobj`): length, bytes, pad to 4.
fn put_opaque(out: &mut Vec<u8>, data: &[u8]) {
    put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
}

/// Reads XDR words from a reply; `None` when it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn skip_opaque(&mut self) -> Option<()> {
        let len = usize::try_from(self.u32()?).ok()?;
        let padded = len.checked_add((4 - len % 4) % 4)?;
        self.0 = self.0.get(padded..)?;
        Some(())
    }
}

/// One NLM lock as the client names it (`nlm4_lock`).
#[derive(Debug, Clone)]
pub struct NlmLock {
    pub caller_name: String,
    pub fh: Vec<u8>,
    pub oh: Vec<u8>,
    pub svid: u32,
    pub offset: u64,
    /// 0: to end of file.
    pub len: u64,
}

impl NlmLock {
    fn encode(&self, out: &mut Vec<u8>) {
        put_opaque(out, self.caller_name.as_bytes());
        put_opaque(out, &self.fh);
        put_opaque(out, &self.oh);
        put_u32(out, self.svid);
        put_u64(out, self.offset);
        put_u64(out, self.len);
    }
}

/// `nlm4_lockargs`: cookie, block, exclusive, alock, reclaim, state.
pub fn lock_args(cookie: &[u8], block: bool, exclusive: bool, lock: &NlmLock, nsm_state: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_opaque(&mut out, cookie);
    put_u32(&mut out, u32::from(block));
    put_u32(&mut out, u32::from(exclusive));
    lock.encode(&mut out);
    put_u32(&mut out, 0); // reclaim: false
    put_u32(&mut out, nsm_state);
    out
}

/// `nlm4_unlockargs`: cookie, alock.
pub fn unlock_args(cookie: &[u8], lock: &NlmLock) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_opaque(&mut out, cookie);
    lock.encode(&mut out);
    out
}

/// The `stat` of an `nlm4_res` (cookie, stat).
pub fn res_stat(body: &[u8]) -> Option<u32> {
    let mut c = Cursor(body);
    c.skip_opaque()?;
    c.u32()
}

/// An RPC call message (no record mark) with an AUTH_UNIX (uid, gid) or
/// AUTH_NONE credential and an AUTH_NONE verifier.
pub fn call_message(xid: u32, prog: u32, vers: u32, proc_: u32, unix: Option<(u32, u32)>, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + args.len());
    for w in [xid, MSG_CALL, RPC_VERSION, prog, vers, proc_] {
        put_u32(&mut out, w);
    }
    match unix {
        Some((uid, gid)) => {
            let mut body = Vec::new();
            put_u32(&mut body, 1); // stamp
            put_opaque(&mut body, MACHINE_NAME);
            put_u32(&mut body, uid);
            put_u32(&mut body, gid);
            put_u32(&mut body, 1);
            put_u32(&mut body, gid);
            put_u32(&mut out, AUTH_UNIX);
            put_opaque(&mut out, &body);
        }
        None => {
            put_u32(&mut out, AUTH_NONE);
            put_u32(&mut out, 0);
        }
    }
    put_u32(&mut out, AUTH_NONE);
    put_u32(&mut out, 0);
    out.extend_from_slice(args);
    out
}

/// The result body of an accepted, successful reply to `xid`, or why not.
pub fn reply_body(xid: u32, reply: &[u8]) -> Result<&[u8], String> {
    let mut c = Cursor(reply);
    let short = || "short reply".to_string();
    let got = c.u32().ok_or_else(short)?;
    if got != xid {
        return Err(format!("reply xid {got:#x}, expected {xid:#x}"));
    }
    if c.u32().ok_or_else(short)? != MSG_REPLY {
        return Err("not a reply".into());
    }
    if c.u32().ok_or_else(short)? != MSG_ACCEPTED {
        return Err("call denied (MSG_DENIED)".into());
    }
    c.u32().ok_or_else(short)?; // verifier flavor
    c.skip_opaque().ok_or_else(short)?;
    match c.u32().ok_or_else(short)? {
        ACCEPT_SUCCESS => Ok(c.0),
        1 => Err("PROG_UNAVAIL".into()),
        2 => Err("PROG_MISMATCH".into()),
        3 => Err("PROC_UNAVAIL".into()),
        4 => Err("GARBAGE_ARGS".into()),
        other => Err(format!("accept_stat {other}")),
    }
}

/// One TCP connection to an RPC program.
pub struct RpcConn {
    stream: TcpStream,
    next_xid: u32,
    timeout: Duration,
    unix: Option<(u32, u32)>,
    broken: bool,
}

impl RpcConn {
    /// Connects (under `timeout`) with TCP_NODELAY. `unix`: AUTH_UNIX (uid,
    /// gid) for every call, or AUTH_NONE.
    pub async fn connect(addr: SocketAddr, timeout: Duration, unix: Option<(u32, u32)>) -> Result<RpcConn, BenchError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Timeout { op: "connect" })?
            .map_err(|e| BenchError::Connect(format!("{addr}: {e}")))?;
        stream.set_nodelay(true).map_err(|e| BenchError::Connect(e.to_string()))?;
        // Distinct xids per connection make a stray reply easy to spot.
        let next_xid = u32::from(stream.local_addr().map_or(0, |a| a.port())) << 16;
        Ok(RpcConn { stream, next_xid, timeout, unix, broken: false })
    }

    /// The local address of this connection (the bench's caller_name).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    /// One call; the result body of a successful reply.
    pub async fn call(
        &mut self,
        op: &'static str,
        prog: u32,
        vers: u32,
        proc_: u32,
        args: &[u8],
    ) -> Result<Vec<u8>, BenchError> {
        if self.broken {
            return Err(BenchError::Broken { op });
        }
        self.next_xid = self.next_xid.wrapping_add(1);
        let xid = self.next_xid;
        let msg = call_message(xid, prog, vers, proc_, self.unix, args);
        let exchange = async {
            let mark = LAST_FRAGMENT | u32::try_from(msg.len()).unwrap_or(0);
            let mut record = Vec::with_capacity(4 + msg.len());
            record.extend_from_slice(&mark.to_be_bytes());
            record.extend_from_slice(&msg);
            self.stream.write_all(&record).await?;
            read_record(&mut self.stream).await
        };
        let reply = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                self.broken = true;
                return Err(BenchError::Timeout { op });
            }
            Ok(Err(e)) => {
                self.broken = true;
                return Err(BenchError::Rpc { op, detail: e.to_string() });
            }
            Ok(Ok(reply)) => reply,
        };
        match reply_body(xid, &reply) {
            Ok(body) => Ok(body.to_vec()),
            Err(detail) => Err(BenchError::Rpc { op, detail }),
        }
    }
}

/// One record (all fragments), at most `REPLY_BYTES_MAX` bytes.
async fn read_record(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mark = stream.read_u32().await?;
        let len = (mark & !LAST_FRAGMENT) as usize;
        if out.len() + len > REPLY_BYTES_MAX {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "reply record too large"));
        }
        let start = out.len();
        out.resize(start + len, 0);
        stream.read_exact(&mut out[start..]).await?;
        if mark & LAST_FRAGMENT != 0 {
            return Ok(out);
        }
    }
}

/// GETPORT(`prog`, `vers`, TCP) from the portmapper at `portmap`; 0 means
/// not registered.
pub async fn getport(portmap: SocketAddr, prog: u32, vers: u32, timeout: Duration) -> Result<u16, BenchError> {
    let mut conn = RpcConn::connect(portmap, timeout, None).await?;
    let mut args = Vec::with_capacity(16);
    for w in [prog, vers, IPPROTO_TCP, 0] {
        put_u32(&mut args, w);
    }
    let body = conn.call("GETPORT", PORTMAP_PROG, PORTMAP_VERS, PMAPPROC_GETPORT, &args).await?;
    let port = Cursor(&body).u32().ok_or_else(|| BenchError::Rpc { op: "GETPORT", detail: "short reply".into() })?;
    u16::try_from(port).map_err(|_| BenchError::Rpc { op: "GETPORT", detail: format!("port {port}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("whole words"))).collect()
    }

    #[test]
    fn lock_args_follow_nlm4_lockargs() {
        let lock = NlmLock {
            caller_name: "abcde".into(),
            fh: vec![1, 2, 3, 4],
            oh: vec![9],
            svid: 7,
            offset: 1 << 32,
            len: 0,
        };
        let w = words(&lock_args(&[0xaa; 8], false, true, &lock, 3));
        let expected = [
            8,
            0xaaaa_aaaa,
            0xaaaa_aaaa, // cookie
            0,
            1, // block, exclusive
            5,
            0x6162_6364,
            0x6500_0000, // caller_name, padded
            4,
            0x0102_0304, // fh
            1,
            0x0900_0000, // oh
            7,
            1,
            0,
            0,
            0, // svid, l_offset, l_len
            0,
            3, // reclaim, state
        ];
        assert_eq!(w, expected);
        let w = words(&unlock_args(&[], &lock));
        assert_eq!(w[..2], [0, 5]);
        assert_eq!(w.len(), 13);
    }

    #[test]
    fn call_and_reply() {
        let msg = call_message(0x42, NLM_PROG, NLM_VERS4, NLM4_LOCK, Some((0, 0)), &[0, 0, 0, 1]);
        let w = words(&msg);
        assert_eq!(w[..7], [0x42, 0, 2, NLM_PROG, NLM_VERS4, NLM4_LOCK, AUTH_UNIX]);
        assert_eq!(*w.last().expect("args"), 1);
        // xid, REPLY, MSG_ACCEPTED, verf AUTH_NONE, SUCCESS, nlm4_res{cookie "ab", GRANTED}
        let mut reply = Vec::new();
        for v in [0x42, 1, 0, 0, 0, 0] {
            put_u32(&mut reply, v);
        }
        put_opaque(&mut reply, b"ab");
        put_u32(&mut reply, NLM4_GRANTED);
        let body = reply_body(0x42, &reply).expect("accepted");
        assert_eq!(res_stat(body), Some(NLM4_GRANTED));
        assert!(reply_body(0x43, &reply).is_err());
        let mut unavail = reply[..20].to_vec();
        put_u32(&mut unavail, 1);
        assert_eq!(reply_body(0x42, &unavail), Err("PROG_UNAVAIL".to_string()));
        assert_eq!(res_stat(&[0, 0, 0, 9]), None);
        assert_eq!(stat_name(4), "NLM4_DENIED_GRACE_PERIOD");
    }
}
