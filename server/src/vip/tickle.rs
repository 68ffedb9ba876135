//! Tickle ACKs (CTDB's `ctdb_sys_send_tcp`): after a failover, for each
//! client TCP connection the old active had open, send the client a bare
//! TCP ACK from the VIP with seq 0 and ack 0. The client's stack finds it
//! outside its window and answers with a (challenge) ACK; that reaches the
//! new active, which has no socket for the connection and answers with a
//! reset; the client drops the connection and reconnects at once instead of
//! waiting out its retransmission backoff (minutes, when the old active's host
//! died with the connection open).
//!
//! `tickle_packet` builds the whole IP packet (header, TCP header, both
//! checksums) as plain bytes; `RawSender` sends it through a raw socket
//! (`IPPROTO_RAW`: the header is ours, so the source is the VIP whatever the
//! routing would pick). Needs CAP_NET_RAW.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ACKs sent per connection (CTDB sends 3): one may be lost, and Linux
/// rate-limits the answers to out-of-window segments per socket.
pub const TICKLE_COUNT: u32 = 3;
/// Most connections tickled per promotion (the replicated table's own bound).
pub const TICKLE_CONNS_MAX: u64 = hanfs_state::CONNS_MAX;
pub const IPV4_HEADER_BYTES: usize = 20;
pub const IPV6_HEADER_BYTES: usize = 40;
pub const TCP_HEADER_BYTES: usize = 20;
pub const IPPROTO_TCP: u8 = 6;
/// TTL / hop limit of a tickle.
pub const TICKLE_TTL: u8 = 64;
/// The window advertised (any value; CTDB uses 1234).
pub const TICKLE_WINDOW: u16 = 1234;
const TCP_FLAG_ACK: u8 = 0x10;
/// IPv4 "don't fragment".
const IPV4_FLAG_DF: u16 = 0x4000;

/// Why no tickle could be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum TickleError {
    #[error("tickle {server} -> {client}: the two ends are of different address families")]
    MixedFamilies { server: SocketAddr, client: SocketAddr },
    #[error("opening a raw socket for tickle ACKs: {0} (needs CAP_NET_RAW)")]
    Socket(io::Error),
    #[error("sending a tickle ACK to {client}: {source}")]
    Send { client: SocketAddr, source: io::Error },
}

/// The IP packet of one tickle: from `server` (the VIP and the served port)
/// to `client`, TCP ACK with seq 0 and ack 0, no payload.
pub fn tickle_packet(server: SocketAddr, client: SocketAddr) -> Result<Vec<u8>, TickleError> {
    let tcp_len = TCP_HEADER_BYTES as u16;
    let mut tcp = [0u8; TCP_HEADER_BYTES];
    tcp[0..2].copy_from_slice(&server.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&client.port().to_be_bytes());
    // seq (4..8) and ack (8..12) stay 0.
    tcp[12] = ((TCP_HEADER_BYTES / 4) as u8) << 4;
    tcp[13] = TCP_FLAG_ACK;
    tcp[14..16].copy_from_slice(&TICKLE_WINDOW.to_be_bytes());
    match (server.ip(), client.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let sum = tcp_checksum_v4(src, dst, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
            let mut ip = [0u8; IPV4_HEADER_BYTES];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(IPV4_HEADER_BYTES as u16 + tcp_len).to_be_bytes());
            ip[6..8].copy_from_slice(&IPV4_FLAG_DF.to_be_bytes());
            ip[8] = TICKLE_TTL;
            ip[9] = IPPROTO_TCP;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = fold(sum_words(&ip, 0));
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            Ok([ip.as_slice(), tcp.as_slice()].concat())
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let sum = tcp_checksum_v6(src, dst, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());
            let mut ip = [0u8; IPV6_HEADER_BYTES];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&tcp_len.to_be_bytes());
            ip[6] = IPPROTO_TCP;
            ip[7] = TICKLE_TTL;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            Ok([ip.as_slice(), tcp.as_slice()].concat())
        }
        _ => Err(TickleError::MixedFamilies { server, client }),
    }
}

/// The TCP checksum over the IPv4 pseudo-header and `segment` (whose
/// checksum field is zero).
pub fn tcp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_TCP;
    pseudo[10..12].copy_from_slice(&(segment.len() as u16).to_be_bytes());
    fold(sum_words(segment, sum_words(&pseudo, 0)))
}

/// The TCP checksum over the IPv6 pseudo-header (RFC 8200 §8.1) and `segment`.
pub fn tcp_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(segment.len() as u32).to_be_bytes());
    pseudo[39] = IPPROTO_TCP;
    fold(sum_words(segment, sum_words(&pseudo, 0)))
}

/// One's complement sum of big-endian 16-bit words (an odd tail byte padded).
fn sum_words(bytes: &[u8], start: u32) -> u32 {
    bytes.chunks(2).fold(start, |acc, w| {
        let word = u16::from_be_bytes([w.first().copied().unwrap_or(0), w.get(1).copied().unwrap_or(0)]);
        let s = acc + u32::from(word);
        (s & 0xffff) + (s >> 16)
    })
}

/// The complement of a folded sum (the value a header carries).
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A send-only raw IP socket of one family (`IPPROTO_RAW`: the packet
/// carries its own header). Nothing is delivered to it, so nothing queues.
pub struct RawSender {
    fd: OwnedFd,
    v4: bool,
}

impl RawSender {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(v4: bool) -> Result<RawSender, TickleError> {
        let family = if v4 { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(TickleError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(RawSender { fd: unsafe { OwnedFd::from_raw_fd(fd) }, v4 })
    }

    /// `sendto(2)` of `packet` to `addr`, a `sockaddr_in` or `sockaddr_in6`
    /// of this socket's family; the raw result.
    fn send_to<A>(&self, packet: &[u8], addr: &A) -> isize {
        // SAFETY: packet and addr are valid for the lengths passed.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                libc::MSG_DONTWAIT,
                (addr as *const A).cast(),
                std::mem::size_of::<A>() as libc::socklen_t,
            )
        }
    }

    /// Sends one packet built by `tickle_packet` to `client` (non-blocking).
    pub fn send(&self, packet: &[u8], client: SocketAddr) -> Result<(), TickleError> {
        let send_error = |source| TickleError::Send { client, source };
        let sent = match client.ip() {
            IpAddr::V4(ip) if self.v4 => {
                // SAFETY: sockaddr_in is plain old data; all-zero is valid.
                let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                addr.sin_family = libc::AF_INET as libc::sa_family_t;
                addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                self.send_to(packet, &addr)
            }
            IpAddr::V6(ip) if !self.v4 => {
                // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
                let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                addr.sin6_addr.s6_addr = ip.octets();
                self.send_to(packet, &addr)
            }
            _ => return Err(send_error(io::Error::new(io::ErrorKind::InvalidInput, "address family mismatch"))),
        };
        if sent < 0 {
            return Err(send_error(io::Error::last_os_error()));
        }
        if sent as usize != packet.len() {
            return Err(send_error(io::Error::new(io::ErrorKind::WriteZero, "short send of a tickle")));
        }
        Ok(())
    }
}

/// What `send_tickles` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickleReport {
    /// Connections at least one ACK went out for.
    pub tickled: u64,
    /// Connections no ACK could be sent for (the first error is returned too).
    pub failed: u64,
}

/// Sends `TICKLE_COUNT` tickle ACKs to each (server, client) connection, in
/// rounds (every connection once, then again), at most `TICKLE_CONNS_MAX`
/// connections. Blocking but short (non-blocking sends); call it from a
/// blocking thread in the VIP's network namespace. Returns the counts and
/// the first error.
pub fn send_tickles(conns: &[(SocketAddr, SocketAddr)]) -> (TickleReport, Option<TickleError>) {
    let mut report = TickleReport::default();
    let mut first_error = None;
    let mut senders: [Option<RawSender>; 2] = [None, None];
    let limit = usize::try_from(TICKLE_CONNS_MAX).unwrap_or(usize::MAX);
    let conns = conns.get(..conns.len().min(limit)).unwrap_or_default();
    let mut sent_any = vec![false; conns.len()];
    for _round in 0..TICKLE_COUNT {
        for (i, &(server, client)) in conns.iter().enumerate() {
            let attempt = tickle_packet(server, client).and_then(|packet| {
                let slot = usize::from(!client.is_ipv4());
                let sender = match senders.get_mut(slot) {
                    Some(Some(s)) => s,
                    Some(empty) => empty.insert(RawSender::open(client.is_ipv4())?),
                    None => return Err(TickleError::Socket(io::Error::other("no socket slot"))),
                };
                sender.send(&packet, client)
            });
            match attempt {
                Ok(()) => {
                    if let Some(flag) = sent_any.get_mut(i) {
                        *flag = true;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    report.tickled = sent_any.iter().filter(|&&s| s).count() as u64;
    report.failed = conns.len() as u64 - report.tickled;
    (report, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> (SocketAddr, SocketAddr) {
        (SocketAddr::from(([10, 0, 0, 100], 2049)), SocketAddr::from(([10, 0, 0, 2], 915)))
    }

    #[test]
    fn ipv4_tickle_is_an_ack_with_seq_and_ack_zero() {
        let (server, client) = v4();
        let p = tickle_packet(server, client).unwrap_or_default();
        assert_eq!(p.len(), IPV4_HEADER_BYTES + TCP_HEADER_BYTES);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 40);
        assert_eq!((p[8], p[9]), (TICKLE_TTL, IPPROTO_TCP));
        assert_eq!(&p[12..16], &[10, 0, 0, 100]);
        assert_eq!(&p[16..20], &[10, 0, 0, 2]);
        let tcp = &p[IPV4_HEADER_BYTES..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 2049);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 915);
        assert_eq!(&tcp[4..12], &[0; 8], "seq and ack are 0");
        assert_eq!(tcp[12], 0x50, "data offset 5 words");
        assert_eq!(tcp[13], TCP_FLAG_ACK, "ACK only");
    }

    #[test]
    fn ipv4_checksums_verify() {
        let (server, client) = v4();
        let p = tickle_packet(server, client).unwrap_or_default();
        // A receiver sums a header including its checksum: the complement is 0.
        assert_eq!(fold(sum_words(&p[..IPV4_HEADER_BYTES], 0)), 0);
        let (IpAddr::V4(s), IpAddr::V4(d)) = (server.ip(), client.ip()) else { panic!("v4") };
        assert_eq!(tcp_checksum_v4(s, d, &p[IPV4_HEADER_BYTES..]), 0);
        // A different port gives a different checksum.
        let q = tickle_packet(server, SocketAddr::from(([10, 0, 0, 2], 916))).unwrap_or_default();
        assert_ne!(
            p[IPV4_HEADER_BYTES + 16..IPV4_HEADER_BYTES + 18],
            q[IPV4_HEADER_BYTES + 16..IPV4_HEADER_BYTES + 18]
        );
    }

    #[test]
    fn known_checksum_vector() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7: sum ddf2, complement 220d.
        assert_eq!(fold(sum_words(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)), 0x220d);
        // An odd tail byte is padded with zero.
        assert_eq!(fold(sum_words(&[0x01], 0)), !0x0100);
    }

    #[test]
    fn ipv6_tickle_and_checksum() {
        let server = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 0x100], 2049));
        let client = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], 700));
        let p = tickle_packet(server, client).unwrap_or_default();
        assert_eq!(p.len(), IPV6_HEADER_BYTES + TCP_HEADER_BYTES);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), TCP_HEADER_BYTES as u16);
        assert_eq!((p[6], p[7]), (IPPROTO_TCP, TICKLE_TTL));
        let (IpAddr::V6(s), IpAddr::V6(d)) = (server.ip(), client.ip()) else { panic!("v6") };
        assert_eq!(&p[8..24], &s.octets());
        assert_eq!(&p[24..40], &d.octets());
        assert_eq!(tcp_checksum_v6(s, d, &p[IPV6_HEADER_BYTES..]), 0);
    }

    #[test]
    fn mixed_families_are_refused() {
        let server = SocketAddr::from(([10, 0, 0, 100], 2049));
        let client = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 2], 700));
        assert!(matches!(tickle_packet(server, client), Err(TickleError::MixedFamilies { .. })));
    }
}
