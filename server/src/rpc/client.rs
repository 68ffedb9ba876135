//! Outbound ONC RPC calls to another host's program (RFC 5531): one call
//! message with AUTH_NONE or AUTH_SYS, sent over UDP (one datagram) or TCP
//! (one record-marked record on a fresh connection), retried with the same xid
//! up to a bounded number of attempts, each bounded in time. The answer is the
//! result bytes of an accepted, successful reply, or a `ClientError` saying
//! why not. Replies are bounded by `CLIENT_REPLY_BYTES_MAX`; replies to other
//! xids (late answers to an earlier call) are skipped. Each datagram or
//! record leaves only while the request's `Fence` passes, checked right
//! before the send (on TCP after the connect): a paused or deposed active
//! sends no callback.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::auth::{AUTH_BODY_BYTES_MAX, AUTH_NONE, AUTH_SYS, AUTH_SYS_GIDS_MAX, MACHINE_NAME_BYTES_MAX};
use super::msg::{MSG_ACCEPTED, MSG_CALL, MSG_DENIED, MSG_REPLY, REJECT_AUTH_ERROR, REJECT_RPC_MISMATCH, RPC_VERSION};
use super::program::{Cred, Transport};
use super::record::{self, RecordError};
use super::shared::Fence;
use super::xdr::Reader;

/// Largest reply accepted (over UDP: the largest datagram read).
pub const CLIENT_REPLY_BYTES_MAX: usize = 64 * 1024;
/// Largest call message sent (over UDP it must fit one datagram).
pub const CLIENT_CALL_BYTES_MAX: usize = 64 * 1024;
/// Attempts a caller may ask for at most.
pub const CLIENT_ATTEMPTS_MAX: u32 = 16;

const _: () = assert!(CLIENT_REPLY_BYTES_MAX as u64 <= record::FRAGMENT_LENGTH_MASK as u64);

/// One outbound call.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub addr: SocketAddr,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    /// `Cred::None`, or `Cred::Sys` with our machine name and ids.
    pub cred: &'a Cred,
    /// The XDR-encoded procedure arguments.
    pub args: &'a [u8],
    pub transport: Transport,
    /// How long one attempt waits for its reply (TCP: connect included).
    pub timeout: Duration,
    /// Attempts in all, at least 1 and at most `CLIENT_ATTEMPTS_MAX`.
    pub attempts: u32,
    /// Checked right before each datagram or record is sent (on TCP after
    /// the connect, which may take long): a node that lost its lease while
    /// the call waited, or was paused, sends nothing more.
    pub fence: &'a Fence,
}

/// Why a call rejected with MSG_DENIED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The server speaks RPC versions `low..=high`, not 2.
    RpcMismatch { low: u32, high: u32 },
    /// The credential was refused with this `auth_stat`.
    Auth { stat: u32 },
}

/// Why a call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reply after {attempts} attempt(s)")]
    Timeout { attempts: u32 },
    #[error("call denied: {0:?}")]
    Denied(Rejected),
    #[error("program not available")]
    ProgUnavail,
    #[error("program version not available (server has {low}..={high})")]
    ProgMismatch { low: u32, high: u32 },
    #[error("procedure not available")]
    ProcUnavail,
    #[error("server could not decode the arguments")]
    GarbageArgs,
    #[error("server system error")]
    SystemErr,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    #[error("reply larger than {max} bytes")]
    ReplyTooLarge { max: usize },
    #[error("call of {len} bytes is larger than {max} bytes")]
    CallTooLarge { len: usize, max: usize },
    #[error("credential over the AUTH_SYS limits (machine name or group list)")]
    BadCredential,
    #[error("not sent: this node no longer holds the lease")]
    Fenced,
}

/// Make the call `req` describes; the result bytes of the successful reply.
pub async fn call(req: &Request<'_>) -> Result<Vec<u8>, ClientError> {
    call_from(req, None).await
}

/// `call`, sent from the local address `local` when given (any port). A
/// callback must come from the address the client called (NLM: the Linux
/// client accepts a GRANTED only from the server address its lock went to).
pub async fn call_from(req: &Request<'_>, local: Option<IpAddr>) -> Result<Vec<u8>, ClientError> {
    let xid = next_xid();
    let message = encode_call(xid, req)?;
    let attempts = req.attempts.clamp(1, CLIENT_ATTEMPTS_MAX);
    match req.transport {
        Transport::Udp => call_udp(req, local, xid, &message, attempts).await,
        Transport::Tcp => call_tcp(req, local, xid, &message, attempts).await,
    }
}

/// A new xid per call: a per-process counter mixed with the process id and the
/// start time, so two runs (or two processes) rarely reuse one.
fn next_xid() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    std::process::id().wrapping_mul(0x9e37_79b9) ^ nanos ^ n.wrapping_mul(0x85eb_ca6b)
}

fn put(out: &mut Vec<u8>, word: u32) {
    out.extend_from_slice(&word.to_be_bytes());
}

fn put_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are checked against their (small) limits before this is called.
    put(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
}

/// The call message: header, credential, AUTH_NONE verifier, arguments.
fn encode_call(xid: u32, req: &Request<'_>) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::with_capacity(64 + req.args.len());
    for word in [xid, MSG_CALL, RPC_VERSION, req.prog, req.vers, req.proc_] {
        put(&mut out, word);
    }
    match req.cred {
        Cred::None => {
            put(&mut out, AUTH_NONE);
            put(&mut out, 0);
        }
        Cred::Sys { uid, gid, gids, machine } => {
            if machine.len() > MACHINE_NAME_BYTES_MAX || gids.len() > AUTH_SYS_GIDS_MAX {
                return Err(ClientError::BadCredential);
            }
            let mut body = Vec::new();
            put(&mut body, 0);
            put_opaque(&mut body, machine.as_bytes());
            put(&mut body, *uid);
            put(&mut body, *gid);
            put(&mut body, gids.len() as u32);
            for g in gids {
                put(&mut body, *g);
            }
            put(&mut out, AUTH_SYS);
            put_opaque(&mut out, &body);
        }
    }
    put(&mut out, AUTH_NONE);
    put(&mut out, 0);
    out.extend_from_slice(req.args);
    if out.len() > CLIENT_CALL_BYTES_MAX {
        return Err(ClientError::CallTooLarge { len: out.len(), max: CLIENT_CALL_BYTES_MAX });
    }
    Ok(out)
}

/// What one received message says.
enum Parsed {
    /// A reply to another xid: keep waiting.
    Other,
    Done(Result<Vec<u8>, ClientError>),
}

/// Decode a reply message to `xid`.
fn parse_reply(reply: &[u8], xid: u32) -> Parsed {
    let mut r = Reader::new(reply);
    let malformed = |what| Parsed::Done(Err(ClientError::Malformed(what)));
    match r.u32() {
        Ok(x) if x == xid => {}
        Ok(_) => return Parsed::Other,
        Err(_) => return malformed("shorter than an xid"),
    }
    let Ok(MSG_REPLY) = r.u32() else { return malformed("not a reply") };
    let words = |r: &mut Reader, n: usize| (0..n).map(|_| r.u32()).collect::<Result<Vec<u32>, _>>();
    match r.u32() {
        Ok(MSG_ACCEPTED) => {
            if r.u32().is_err() || r.opaque(AUTH_BODY_BYTES_MAX).is_err() {
                return malformed("bad verifier");
            }
            let Ok(stat) = r.u32() else { return malformed("no accept status") };
            let rest = reply.get(r.position()..).unwrap_or_default();
            let err = match stat {
                0 => return Parsed::Done(Ok(rest.to_vec())),
                1 => ClientError::ProgUnavail,
                2 => match words(&mut r, 2).as_deref() {
                    Ok([low, high]) => ClientError::ProgMismatch { low: *low, high: *high },
                    _ => return malformed("PROG_MISMATCH without its range"),
                },
                3 => ClientError::ProcUnavail,
                4 => ClientError::GarbageArgs,
                5 => ClientError::SystemErr,
                _ => return malformed("unknown accept status"),
            };
            Parsed::Done(Err(err))
        }
        Ok(MSG_DENIED) => {
            let rejected = match r.u32() {
                Ok(REJECT_RPC_MISMATCH) => match words(&mut r, 2).as_deref() {
                    Ok([low, high]) => Rejected::RpcMismatch { low: *low, high: *high },
                    _ => return malformed("RPC_MISMATCH without its range"),
                },
                Ok(REJECT_AUTH_ERROR) => match r.u32() {
                    Ok(stat) => Rejected::Auth { stat },
                    Err(_) => return malformed("AUTH_ERROR without its status"),
                },
                _ => return malformed("unknown reject status"),
            };
            Parsed::Done(Err(ClientError::Denied(rejected)))
        }
        _ => malformed("unknown reply status"),
    }
}

/// The local socket address to bind for a call to `to`: `local` (any port)
/// or the unspecified address of `to`'s family.
fn local_addr(to: SocketAddr, local: Option<IpAddr>) -> SocketAddr {
    match (local, to) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (None, SocketAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

async fn call_udp(
    req: &Request<'_>,
    local: Option<IpAddr>,
    xid: u32,
    message: &[u8],
    attempts: u32,
) -> Result<Vec<u8>, ClientError> {
    let socket = UdpSocket::bind(local_addr(req.addr, local)).await?;
    socket.connect(req.addr).await?;
    // One byte more than accepted, so a longer datagram is seen, not cut.
    let mut buf = vec![0u8; CLIENT_REPLY_BYTES_MAX + 1];
    for _ in 0..attempts {
        if !req.fence.serving_now() {
            return Err(ClientError::Fenced);
        }
        socket.send(message).await?;
        let deadline = tokio::time::Instant::now() + req.timeout;
        // Each pass takes one datagram or ends at the deadline.
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(received) => received?,
            };
            if n > CLIENT_REPLY_BYTES_MAX {
                return Err(ClientError::ReplyTooLarge { max: CLIENT_REPLY_BYTES_MAX });
            }
            match parse_reply(buf.get(..n).unwrap_or_default(), xid) {
                Parsed::Other => continue,
                Parsed::Done(result) => return result,
            }
        }
    }
    Err(ClientError::Timeout { attempts })
}

async fn call_tcp(
    req: &Request<'_>,
    local: Option<IpAddr>,
    xid: u32,
    message: &[u8],
    attempts: u32,
) -> Result<Vec<u8>, ClientError> {
    let framed = record::frame(message)
        .map_err(|_| ClientError::CallTooLarge { len: message.len(), max: CLIENT_CALL_BYTES_MAX })?;
    for _ in 0..attempts {
        match tokio::time::timeout(req.timeout, tcp_attempt(req, local, xid, &framed)).await {
            Ok(result) => return result,
            Err(_elapsed) => continue,
        }
    }
    Err(ClientError::Timeout { attempts })
}

/// One TCP attempt on a fresh connection: send the record, read records until
/// the reply to `xid` (bounded by the caller's timeout).
async fn tcp_attempt(
    req: &Request<'_>,
    local: Option<IpAddr>,
    xid: u32,
    framed: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let addr = req.addr;
    let mut stream = match local {
        None => TcpStream::connect(addr).await?,
        Some(_) => {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.bind(local_addr(addr, local))?;
            socket.connect(addr).await?
        }
    };
    if !req.fence.serving_now() {
        return Err(ClientError::Fenced);
    }
    stream.write_all(framed).await?;
    let max = CLIENT_REPLY_BYTES_MAX as u32;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match record::parse(&mut buf, max) {
            Ok(Some(reply)) => match parse_reply(&reply, xid) {
                Parsed::Other => continue,
                Parsed::Done(result) => return result,
            },
            Ok(None) => {}
            Err(RecordError::Oversize { .. }) => {
                return Err(ClientError::ReplyTooLarge { max: CLIENT_REPLY_BYTES_MAX })
            }
            Err(_) => return Err(ClientError::Malformed("bad record marking")),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the reply",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::msg::{self, AcceptStat};

    const TIMEOUT: Duration = Duration::from_millis(200);
    static ALWAYS: Fence = Fence::always();

    fn request<'a>(addr: SocketAddr, cred: &'a Cred, transport: Transport) -> Request<'a> {
        Request {
            addr,
            prog: 400_000,
            vers: 1,
            proc_: 0,
            cred,
            args: &[],
            transport,
            timeout: TIMEOUT,
            attempts: 2,
            fence: &ALWAYS,
        }
    }

    /// A UDP server that answers each call with the datagrams `answer(xid)`,
    /// at most `calls` times.
    async fn udp_answering(calls: usize, answer: fn(u32) -> Vec<Vec<u8>>) -> SocketAddr {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            for _ in 0..calls {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let header = msg::decode_call(&buf[..n]).unwrap();
                for datagram in answer(header.xid) {
                    let _ = socket.send_to(&datagram, peer).await;
                }
            }
        });
        addr
    }

    /// One whole record from a test server's accepted connection.
    async fn read_record(st: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = BytesMut::new();
        loop {
            if let Some(r) = record::parse(&mut buf, 4096).unwrap() {
                return r;
            }
            assert!(st.read_buf(&mut buf).await.unwrap() > 0);
        }
    }

    #[tokio::test]
    async fn silent_udp_peer_times_out() {
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = silent.local_addr().unwrap();
        let err = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { attempts: 2 }), "{err:?}");
        drop(silent);
    }

    #[tokio::test]
    async fn accept_errors_are_told_apart() {
        let addr = udp_answering(1, |xid| vec![msg::accepted(xid, AcceptStat::ProgUnavail)]).await;
        let err = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap_err();
        assert!(matches!(err, ClientError::ProgUnavail), "{err:?}");
        let addr = udp_answering(1, |xid| vec![msg::prog_mismatch(xid, 2, 4)]).await;
        let err = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap_err();
        assert!(matches!(err, ClientError::ProgMismatch { low: 2, high: 4 }), "{err:?}");
        let addr = udp_answering(1, |xid| vec![msg::auth_error(xid, 5)]).await;
        let err = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap_err();
        assert!(matches!(err, ClientError::Denied(Rejected::Auth { stat: 5 })), "{err:?}");
    }

    #[tokio::test]
    async fn malformed_reply_is_an_error() {
        // Our xid, then a reply status that does not exist.
        let addr =
            udp_answering(1, |xid| vec![[xid, MSG_REPLY, 7].iter().flat_map(|w| w.to_be_bytes()).collect()]).await;
        let err = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap_err();
        assert!(matches!(err, ClientError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn other_xids_are_skipped() {
        let addr = udp_answering(1, |xid| {
            vec![msg::success(xid ^ 1, vec![0, 0, 0, 9]).to_vec(), msg::success(xid, vec![0, 0, 0, 7]).to_vec()]
        })
        .await;
        let body = call(&request(addr, &Cred::None, Transport::Udp)).await.unwrap();
        assert_eq!(body, vec![0, 0, 0, 7]);
    }

    #[tokio::test]
    async fn auth_sys_call_over_tcp() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut st, _) = listener.accept().await.unwrap();
            let rec = read_record(&mut st).await;
            let header = msg::decode_call(&rec).unwrap();
            // A late reply to another xid first, then ours.
            for reply in
                [msg::success(header.xid ^ 1, vec![1; 4]), msg::success(header.xid, rec[header.args_offset..].to_vec())]
            {
                let reply = reply.to_vec();
                st.write_all(&record::header(reply.len()).unwrap()).await.unwrap();
                st.write_all(&reply).await.unwrap();
            }
            header.cred
        });
        let cred = Cred::Sys { uid: 1, gid: 2, gids: vec![3], machine: "hanfs".into() };
        let mut req = request(addr, &cred, Transport::Tcp);
        req.args = &[0, 0, 0, 42];
        assert_eq!(call(&req).await.unwrap(), vec![0, 0, 0, 42]);
        assert_eq!(server.await.unwrap(), cred);
    }

    #[tokio::test]
    async fn call_from_sends_from_the_given_address() {
        let local: IpAddr = Ipv4Addr::new(127, 0, 0, 9).into();
        for transport in [Transport::Udp, Transport::Tcp] {
            let (addr, seen) = match transport {
                Transport::Udp => {
                    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
                    let addr = socket.local_addr().unwrap();
                    let seen = tokio::spawn(async move {
                        let mut buf = vec![0u8; 2048];
                        let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
                        let header = msg::decode_call(&buf[..n]).unwrap();
                        socket.send_to(&msg::success(header.xid, Vec::new()).to_vec(), peer).await.unwrap();
                        peer.ip()
                    });
                    (addr, seen)
                }
                Transport::Tcp => {
                    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
                    let addr = listener.local_addr().unwrap();
                    let seen = tokio::spawn(async move {
                        let (mut st, peer) = listener.accept().await.unwrap();
                        let rec = read_record(&mut st).await;
                        let reply = msg::success(msg::decode_call(&rec).unwrap().xid, Vec::new()).to_vec();
                        st.write_all(&record::header(reply.len()).unwrap()).await.unwrap();
                        st.write_all(&reply).await.unwrap();
                        peer.ip()
                    });
                    (addr, seen)
                }
            };
            call_from(&request(addr, &Cred::None, transport), Some(local)).await.unwrap();
            assert_eq!(seen.await.unwrap(), local, "{transport:?}");
        }
    }

    #[test]
    fn oversize_credentials_are_refused() {
        let cred = Cred::Sys { uid: 0, gid: 0, gids: vec![0; 17], machine: String::new() };
        let req = request("127.0.0.1:1".parse().unwrap(), &cred, Transport::Udp);
        assert!(matches!(encode_call(1, &req), Err(ClientError::BadCredential)));
    }

    /// A node that lost its lease while the call waited sends nothing: on
    /// TCP the connect completes (the kernel does it even while the process
    /// is stopped) but no byte follows it; on UDP no datagram leaves.
    #[tokio::test]
    async fn a_failing_fence_stops_the_send_after_the_connect() {
        let fenced = Fence::new(|| false);
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut st, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), st.read_to_end(&mut got)).await;
            (n.is_ok(), got.len())
        });
        let mut req = request(addr, &Cred::None, Transport::Tcp);
        req.fence = &fenced;
        let err = call(&req).await.unwrap_err();
        assert!(matches!(err, ClientError::Fenced), "{err:?}");
        assert_eq!(server.await.unwrap(), (true, 0), "connected, then closed with no byte sent");

        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let mut req = request(udp.local_addr().unwrap(), &Cred::None, Transport::Udp);
        req.fence = &fenced;
        let err = call(&req).await.unwrap_err();
        assert!(matches!(err, ClientError::Fenced), "{err:?}");
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(TIMEOUT, udp.recv_from(&mut buf)).await;
        assert!(got.is_err(), "a datagram was sent past the fence: {got:?}");
    }
}
