//! Destroy leftover TCP sockets on the VIP before claiming it, as `ss -K src
//! <vip>` does: a NETLINK_SOCK_DIAG dump of every TCP socket (all states),
//! then `SOCK_DESTROY` for each one whose local address is the VIP.
//!
//! Why: a node that was the active and crashed (or was killed) a minute ago
//! may still hold the clients' old connections in the kernel (orphaned
//! FIN-WAIT-1/2, TIME-WAIT). A Linux client reconnects from the same source
//! port; such a socket answers its SYN with an ACK that does not match, and
//! the two sides exchange ACKs until the client gives up (minutes). No
//! listener of ours is open at that point of a promotion, so every TCP socket
//! on the VIP is stale, whatever its port (served ports and NLM callbacks).
//!
//! What the kernel does (net/ipv4/tcp.c `tcp_abort`, via `tcp_diag_destroy`):
//! an open socket gets a reset sent and is closed; a TIME-WAIT socket is
//! descheduled (since Linux 6.5); an orphan (closed by its process, e.g.
//! FIN-WAIT-1 after a kill) is closed too since 6.11 (before, `tcp_abort`
//! skipped SOCK_DEAD sockets). Needs CONFIG_INET_DIAG_DESTROY (else
//! EOPNOTSUPP, reported as `DiagError::Unsupported`) and CAP_NET_ADMIN.
//!
//! Blocking (bounded by `DIAG_TIMEOUT_MS` per read): call it from a blocking
//! thread, in the VIP's network namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Upper bound on one read from the kernel (it answers in microseconds).
pub const DIAG_TIMEOUT_MS: u64 = 2_000;
/// Most dump messages read (every TCP socket of the namespace); beyond it
/// the dump is cut short and what was found so far is destroyed.
pub const DIAG_SOCKETS_MAX: usize = 1 << 20;
/// Receive buffer for one read of the dump.
const DIAG_READ_BYTES: usize = 64 * 1024;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER_BYTES: usize = 16;
/// struct inet_diag_sockid: ports, two 16-byte addresses, interface, cookie.
pub const SOCKID_BYTES: usize = 48;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid.
const REQ_BYTES: usize = 8 + SOCKID_BYTES;
/// struct inet_diag_msg up to and including its sockid.
const MSG_HEAD_BYTES: usize = 4 + SOCKID_BYTES;
/// Every TCP state (1 << TCP_ESTABLISHED ... TIME_WAIT, NEW_SYN_RECV, ...).
const ALL_STATES: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY off).
    #[error("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY not set)")]
    Unsupported,
    #[error("socket diag: permission denied (needs CAP_NET_ADMIN)")]
    Permission,
    #[error("socket diag: {0}")]
    Io(#[from] io::Error),
    #[error("socket diag: malformed answer from the kernel")]
    Malformed,
}

/// One socket of a dump: its identity as the kernel wants it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: u8,
    /// TCP state (1 established ... 6 TIME-WAIT ...).
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub id: [u8; SOCKID_BYTES],
}

/// What `destroy_tcp_on` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestroyReport {
    /// Sockets found on the address.
    pub found: u64,
    pub destroyed: u64,
    /// Gone by the time we asked (ENOENT).
    pub gone: u64,
    pub failed: u64,
}

/// A netlink request: header, then an `inet_diag_req_v2` for `family`/TCP
/// with `id` (zero for a dump).
pub fn diag_request(msg_type: u16, flags: u16, seq: u32, family: u8, id: &[u8; SOCKID_BYTES]) -> Vec<u8> {
    let len = (NLMSG_HEADER_BYTES + REQ_BYTES) as u32;
    let mut m = Vec::with_capacity(NLMSG_HEADER_BYTES + REQ_BYTES);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(id);
    m
}

/// One netlink answer: the sockets it lists, whether the dump is done, or
/// the kernel's error (a negative errno; 0 is an acknowledgement).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub sockets: Vec<DiagSocket>,
    pub done: bool,
    pub error: Option<i32>,
}

/// Parses the netlink messages in `buf`.
pub fn parse_answer(buf: &[u8]) -> Result<Answer, DiagError> {
    let mut answer = Answer::default();
    let mut at = 0usize;
    while at + NLMSG_HEADER_BYTES <= buf.len() {
        let word = |o: usize| buf.get(at + o..at + o + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        let len = word(0).ok_or(DiagError::Malformed)? as usize;
        let kind = buf.get(at + 4..at + 6).and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes);
        if len < NLMSG_HEADER_BYTES || at + len > buf.len() {
            return Err(DiagError::Malformed);
        }
        let body = buf.get(at + NLMSG_HEADER_BYTES..at + len).ok_or(DiagError::Malformed)?;
        match kind {
            Some(NLMSG_DONE) => answer.done = true,
            Some(NLMSG_ERROR) => {
                let code = body.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes);
                answer.error = Some(code.ok_or(DiagError::Malformed)?);
            }
            Some(SOCK_DIAG_BY_FAMILY) => answer.sockets.push(parse_socket(body)?),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(answer)
}

fn parse_socket(body: &[u8]) -> Result<DiagSocket, DiagError> {
    let head = body.get(..MSG_HEAD_BYTES).ok_or(DiagError::Malformed)?;
    let (family, state) = (head[0], head[1]);
    let id: [u8; SOCKID_BYTES] = head[4..].try_into().map_err(|_| DiagError::Malformed)?;
    let local_port = u16::from_be_bytes([id[0], id[1]]);
    let src: [u8; 16] = id[4..20].try_into().map_err(|_| DiagError::Malformed)?;
    let local = if i32::from(family) == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(src))
    };
    Ok(DiagSocket { family, state, local, local_port, id })
}

/// Whether a socket's local address is `addr` (an IPv4 address also as
/// IPv4-mapped IPv6, for sockets of a dual-stack listener).
pub fn is_on(local: IpAddr, addr: IpAddr) -> bool {
    match (local, addr) {
        (IpAddr::V6(l), IpAddr::V4(a)) => l.to_ipv4_mapped() == Some(a),
        _ => local == addr,
    }
}

struct DiagSocketFd(OwnedFd);

impl DiagSocketFd {
    fn open() -> Result<Self, DiagError> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: (DIAG_TIMEOUT_MS / 1_000) as libc::time_t,
            tv_usec: ((DIAG_TIMEOUT_MS % 1_000) * 1_000) as libc::suseconds_t,
        };
        // SAFETY: tv is valid for its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(DiagSocketFd(fd))
    }

    fn send(&self, msg: &[u8]) -> Result<(), DiagError> {
        // SAFETY: sockaddr_nl is plain old data; all-zero (pid 0: the kernel) is valid.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and kernel are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<Answer, DiagError> {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        parse_answer(buf.get(..n as usize).ok_or(DiagError::Malformed)?)
    }
}

fn errno_error(code: i32) -> DiagError {
    match -code {
        libc::EOPNOTSUPP => DiagError::Unsupported,
        libc::EPERM | libc::EACCES => DiagError::Permission,
        e => DiagError::Io(io::Error::from_raw_os_error(e)),
    }
}

/// Every TCP socket of `family` in the calling thread's namespace.
pub fn dump_tcp(family: u8) -> Result<Vec<DiagSocket>, DiagError> {
    let sock = DiagSocketFd::open()?;
    sock.send(&diag_request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, family, &[0; SOCKID_BYTES]))?;
    let mut buf = vec![0u8; DIAG_READ_BYTES];
    let mut all = Vec::new();
    // Each read holds at least one message, so this bounds the loop.
    for _ in 0..DIAG_SOCKETS_MAX {
        let answer = sock.recv(&mut buf)?;
        if let Some(code) = answer.error.filter(|&c| c != 0) {
            return Err(errno_error(code));
        }
        all.extend(answer.sockets);
        if answer.done || all.len() >= DIAG_SOCKETS_MAX {
            break;
        }
    }
    Ok(all)
}

/// Destroys every TCP socket whose local address is `addr` (see the module
/// doc). `Err` only when nothing could be tried (no dump, no destroy
/// support, no permission); single failures are counted.
pub fn destroy_tcp_on(addr: IpAddr) -> Result<DestroyReport, DiagError> {
    let families: &[i32] = if addr.is_ipv4() { &[libc::AF_INET, libc::AF_INET6] } else { &[libc::AF_INET6] };
    let mut report = DestroyReport::default();
    let sock = DiagSocketFd::open()?;
    let mut buf = vec![0u8; DIAG_READ_BYTES];
    let mut seq = 1u32;
    for &family in families {
        let family = family as u8;
        let dump = match dump_tcp(family) {
            Ok(all) => all,
            // IPv4-mapped sockets only: a kernel without IPv6 has none.
            Err(DiagError::Io(_)) if addr.is_ipv4() && i32::from(family) == libc::AF_INET6 => Vec::new(),
            Err(e) => return Err(e),
        };
        let victims: Vec<DiagSocket> = dump.into_iter().filter(|s| is_on(s.local, addr)).collect();
        for victim in victims {
            report.found += 1;
            seq = seq.wrapping_add(1);
            sock.send(&diag_request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, family, &victim.id))?;
            match sock.recv(&mut buf)?.error {
                Some(0) => report.destroyed += 1,
                Some(code) if -code == libc::ENOENT => report.gone += 1,
                Some(code) if -code == libc::EOPNOTSUPP || -code == libc::EPERM => return Err(errno_error(code)),
                _ => report.failed += 1,
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HEADER_BYTES + body.len()) as u32;
        let mut m = [len.to_ne_bytes().as_slice(), &kind.to_ne_bytes(), &[0; 10], body].concat();
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    #[test]
    fn request_layout() {
        let id = [7u8; SOCKID_BYTES];
        let r = diag_request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 9, libc::AF_INET as u8, &id);
        assert_eq!(r.len(), NLMSG_HEADER_BYTES + REQ_BYTES);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]) as usize, r.len());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DESTROY);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 9);
        assert_eq!(&r[16..18], &[libc::AF_INET as u8, libc::IPPROTO_TCP as u8]);
        assert_eq!(&r[24..], &id);
    }

    #[test]
    fn dump_answers_parse() {
        let mut body = vec![libc::AF_INET as u8, 6, 0, 0];
        let mut id = [0u8; SOCKID_BYTES];
        id[0..2].copy_from_slice(&2049u16.to_be_bytes());
        id[4..8].copy_from_slice(&[10, 0, 0, 100]);
        body.extend_from_slice(&id);
        body.extend_from_slice(&[0; 20]);
        let buf = [message(SOCK_DIAG_BY_FAMILY, &body), message(NLMSG_DONE, &[0; 4])].concat();
        let a = parse_answer(&buf).unwrap_or_default();
        assert!(a.done);
        assert_eq!(a.sockets.len(), 1);
        let s = a.sockets[0];
        assert_eq!((s.state, s.local_port, s.local), (6, 2049, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))));
        assert_eq!(s.id, id);
        let err = parse_answer(&message(NLMSG_ERROR, &(-libc::EOPNOTSUPP).to_ne_bytes())).unwrap_or_default();
        assert_eq!(err.error, Some(-libc::EOPNOTSUPP));
        assert!(matches!(errno_error(-libc::EOPNOTSUPP), DiagError::Unsupported));
    }

    #[test]
    fn malformed_answers_are_errors() {
        let mut m = message(NLMSG_DONE, &[0; 4]);
        m[0] = 200; // longer than the buffer
        assert!(matches!(parse_answer(&m), Err(DiagError::Malformed)));
        assert!(matches!(parse_answer(&message(SOCK_DIAG_BY_FAMILY, &[2, 1])), Err(DiagError::Malformed)));
    }

    #[test]
    fn mapped_addresses_match() {
        let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        assert!(is_on(vip, vip));
        assert!(is_on(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 100).to_ipv6_mapped()), vip));
        assert!(!is_on(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101)), vip));
    }
}
