//! A send-only AF_PACKET raw socket bound to one interface, for the VIP
//! announcements built in `frame.rs`. Needs CAP_NET_RAW.
//!
//! The socket is opened with protocol 0, so the kernel delivers no frames to
//! it: nothing accumulates in its receive buffer. Sends are non-blocking so a
//! full transmit queue surfaces as an error instead of stalling the runtime.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::frame::{ETH_HEADER_BYTES, MAC_BYTES};

pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a raw packet socket that sends on interface `ifindex`. The
    /// socket belongs to the network namespace of the calling thread.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one complete Ethernet frame (header included). The link-layer
    /// destination is taken from the frame's own header.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let header = frame
            .get(..ETH_HEADER_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame shorter than an Ethernet header"))?;
        let mut dst = [0u8; 8];
        dst[..MAC_BYTES].copy_from_slice(&header[..MAC_BYTES]);
        let ethertype = u16::from_be_bytes([header[12], header[13]]);

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = MAC_BYTES as u8;
        addr.sll_addr = dst;

        // SAFETY: frame and addr are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short send of an announcement frame"));
        }
        Ok(())
    }
}
