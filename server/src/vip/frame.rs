//! The announcement frames a node sends after it claims the VIP, built as
//! plain bytes (Ethernet header included) for an AF_PACKET `SOCK_RAW` socket.
//!
//! - IPv4: a gratuitous ARP request (RFC 5227 §2.3 "ARP Announcement"):
//!   broadcast, sender IP = target IP = the VIP, sender MAC = the interface's,
//!   target MAC zero. Neighbours that have the VIP cached update the entry.
//! - IPv6: an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) to the
//!   all-nodes group with the Override flag set and the interface's MAC in a
//!   Target Link-Layer Address option.
//!
//! Pure functions, no I/O: the socket lives in `packet.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of an Ethernet MAC address.
pub const MAC_BYTES: usize = 6;
/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HEADER_BYTES: usize = 14;
/// Shortest Ethernet frame without the FCS; shorter frames are zero-padded
/// here rather than trusting every driver to pad.
pub const ETH_FRAME_BYTES_MIN: usize = 60;
/// An Ethernet/IPv4 ARP body (RFC 826).
pub const ARP_BODY_BYTES: usize = 28;
/// The gratuitous ARP frame, padded.
pub const GARP_FRAME_BYTES: usize = ETH_FRAME_BYTES_MIN;
/// IPv6 fixed header.
pub const IPV6_HEADER_BYTES: usize = 40;
/// ICMPv6 Neighbor Advertisement without options.
pub const NA_BODY_BYTES: usize = 24;
/// Target Link-Layer Address option for Ethernet (type, length, MAC).
pub const NA_TLLA_OPTION_BYTES: usize = 8;
/// The unsolicited NA frame.
pub const NA_FRAME_BYTES: usize = ETH_HEADER_BYTES + IPV6_HEADER_BYTES + NA_BODY_BYTES + NA_TLLA_OPTION_BYTES;

const _: () = assert!(ETH_HEADER_BYTES + ARP_BODY_BYTES <= GARP_FRAME_BYTES);
const _: () = assert!(NA_FRAME_BYTES >= ETH_FRAME_BYTES_MIN);

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ARP_HTYPE_ETHERNET: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ETH_BROADCAST: [u8; MAC_BYTES] = [0xff; MAC_BYTES];
/// ff02::1 mapped to Ethernet (RFC 2464 §7: 33:33 + low 32 bits).
pub const ETH_IPV6_ALL_NODES: [u8; MAC_BYTES] = [0x33, 0x33, 0, 0, 0, 1];
pub const IPV6_ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const IPPROTO_ICMPV6: u8 = 58;
/// Neighbor Discovery packets must carry hop limit 255 (RFC 4861 §7.1.2).
pub const ND_HOP_LIMIT: u8 = 255;
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The Override flag of a Neighbor Advertisement (R=0, S=0, O=1).
pub const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
pub const ND_OPT_TARGET_LINK_LAYER_ADDRESS: u8 = 2;

/// A gratuitous ARP request announcing that `vip` is at `mac`.
pub fn gratuitous_arp(mac: [u8; MAC_BYTES], vip: Ipv4Addr) -> [u8; GARP_FRAME_BYTES] {
    let mut f = [0u8; GARP_FRAME_BYTES];
    let mut w = Writer::new(&mut f);
    w.put(&ETH_BROADCAST);
    w.put(&mac);
    w.put(&ETHERTYPE_ARP.to_be_bytes());
    w.put(&ARP_HTYPE_ETHERNET.to_be_bytes());
    w.put(&ETHERTYPE_IPV4.to_be_bytes());
    w.put(&[MAC_BYTES as u8, 4]);
    w.put(&ARP_OP_REQUEST.to_be_bytes());
    w.put(&mac);
    w.put(&vip.octets());
    w.put(&[0u8; MAC_BYTES]);
    w.put(&vip.octets());
    // The rest stays zero: Ethernet padding.
    f
}

/// An unsolicited Neighbor Advertisement announcing that `vip` is at `mac`.
pub fn unsolicited_na(mac: [u8; MAC_BYTES], vip: Ipv6Addr) -> [u8; NA_FRAME_BYTES] {
    const PAYLOAD_BYTES: usize = NA_BODY_BYTES + NA_TLLA_OPTION_BYTES;
    let mut icmp = [0u8; PAYLOAD_BYTES];
    let mut w = Writer::new(&mut icmp);
    w.put(&[ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, 0]); // type, code, checksum
    w.put(&NA_FLAG_OVERRIDE.to_be_bytes());
    w.put(&vip.octets());
    w.put(&[ND_OPT_TARGET_LINK_LAYER_ADDRESS, (NA_TLLA_OPTION_BYTES / 8) as u8]);
    w.put(&mac);
    let sum = icmpv6_checksum(&vip, &IPV6_ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = [0u8; NA_FRAME_BYTES];
    let mut w = Writer::new(&mut f);
    w.put(&ETH_IPV6_ALL_NODES);
    w.put(&mac);
    w.put(&ETHERTYPE_IPV6.to_be_bytes());
    w.put(&0x6000_0000u32.to_be_bytes()); // version 6, class 0, flow 0
    w.put(&(PAYLOAD_BYTES as u16).to_be_bytes());
    w.put(&[IPPROTO_ICMPV6, ND_HOP_LIMIT]);
    w.put(&vip.octets());
    w.put(&IPV6_ALL_NODES.octets());
    w.put(&icmp);
    f
}

/// The ICMPv6 checksum (RFC 4443 §2.3): one's complement sum over the IPv6
/// pseudo-header and the message, with the message's checksum field zero.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair.first().copied().unwrap_or(0));
            let lo = u64::from(pair.get(1).copied().unwrap_or(0));
            sum += (hi << 8) | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Appends into a fixed buffer. Every caller writes a compile-time-known
/// layout that fits its buffer, so an overflow is a bug in this file.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        self.buf[self.at..end].copy_from_slice(bytes);
        self.at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; MAC_BYTES] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn u16_at(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    #[test]
    fn garp_ethernet_header_is_broadcast_from_the_interface() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(f.len(), ETH_FRAME_BYTES_MIN);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(u16_at(&f, 12), 0x0806);
    }

    #[test]
    fn garp_body_has_sender_ip_equal_target_ip() {
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let f = gratuitous_arp(MAC, vip);
        let arp = &f[ETH_HEADER_BYTES..];
        assert_eq!(u16_at(arp, 0), 1, "htype Ethernet");
        assert_eq!(u16_at(arp, 2), 0x0800, "ptype IPv4");
        assert_eq!(arp[4], 6, "hlen");
        assert_eq!(arp[5], 4, "plen");
        assert_eq!(u16_at(arp, 6), 1, "request");
        assert_eq!(&arp[8..14], &MAC, "sender MAC");
        assert_eq!(&arp[14..18], &[192, 0, 2, 10], "sender IP");
        assert_eq!(&arp[18..24], &[0; 6], "target MAC zero (RFC 5227)");
        assert_eq!(&arp[24..28], &[192, 0, 2, 10], "target IP");
    }

    #[test]
    fn garp_padding_is_zero() {
        let f = gratuitous_arp([0xff; 6], Ipv4Addr::new(255, 255, 255, 255));
        assert!(f[ETH_HEADER_BYTES + ARP_BODY_BYTES..].iter().all(|b| *b == 0));
    }

    #[test]
    fn garp_differs_by_address_and_mac() {
        let a = gratuitous_arp(MAC, Ipv4Addr::new(10, 0, 0, 1));
        let b = gratuitous_arp(MAC, Ipv4Addr::new(10, 0, 0, 2));
        let c = gratuitous_arp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn na_headers() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        assert_eq!(&f[0..6], &ETH_IPV6_ALL_NODES);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(u16_at(&f, 12), 0x86dd);
        let ip = &f[ETH_HEADER_BYTES..];
        assert_eq!(ip[0] >> 4, 6, "version");
        assert_eq!(u16_at(ip, 4), 32, "payload length");
        assert_eq!(ip[6], 58, "next header ICMPv6");
        assert_eq!(ip[7], 255, "hop limit");
        assert_eq!(&ip[8..24], &vip.octets(), "source");
        assert_eq!(&ip[24..40], &IPV6_ALL_NODES.octets(), "destination");
    }

    #[test]
    fn na_body_has_override_target_and_mac() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let icmp = &f[ETH_HEADER_BYTES + IPV6_HEADER_BYTES..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[1], 0);
        assert_eq!(&icmp[4..8], &[0x20, 0, 0, 0], "O set, R and S clear");
        assert_eq!(&icmp[8..24], &vip.octets());
        assert_eq!(&icmp[24..26], &[2, 1], "TLLA option, 8 bytes");
        assert_eq!(&icmp[26..32], &MAC);
    }

    #[test]
    fn na_checksum_verifies() {
        // A receiver sums the message including its checksum: the result is 0
        // (the complement of 0xffff).
        let vip: Ipv6Addr = "fe80::1:2:3:4".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let icmp = &f[ETH_HEADER_BYTES + IPV6_HEADER_BYTES..];
        assert_eq!(icmpv6_checksum(&vip, &IPV6_ALL_NODES, icmp), 0);
        assert_ne!(u16_at(icmp, 2), 0);
    }

    #[test]
    fn checksum_of_known_vector() {
        // Odd-length message: the last byte is padded with zero.
        let src = Ipv6Addr::LOCALHOST;
        let dst = Ipv6Addr::LOCALHOST;
        // Sum: ::1 twice = 2, length 3, next header 58, 0x0102, 0x0300.
        let expected = !(2u16 + 3 + 58 + 0x0102 + 0x0300);
        assert_eq!(icmpv6_checksum(&src, &dst, &[1, 2, 3]), expected);
    }
}
