//! The VIP's own device: a TUN interface this process creates and holds open
//! for as long as it runs. The VIP is added to it (not to the Ethernet
//! interface), with `noprefixroute` so it brings no subnet route along; the
//! kernel still answers ARP / neighbour solicitations for it on the Ethernet
//! interface (Linux's weak host model, `arp_ignore = 0`, the default), and
//! the gratuitous ARP goes out there as before.
//!
//! Why: the device is not persistent. When the process ends, `kill -9`
//! included, the kernel closes its descriptors, destroys the device and the
//! VIP with it. A crashed active therefore never keeps the VIP (no duplicate
//! address on the LAN until someone cleans up), and never answers a client's
//! immediate reconnect with a RST: the Linux client treats a refused connect
//! as "server up, service down" and backs off for 3 s or more, whereas an
//! unanswered SYN is retransmitted after 1 s, to the new active by then.
//!
//! The descriptor is opened close-on-exec, so hooks started by the node do
//! not keep the device alive. It is moved to a high descriptor number
//! (`DEVICE_FD_HIGH`, or just below the open-file limit): at exit the kernel
//! closes descriptors in ascending order but runs the final release of each
//! file as task work, last queued first, so the file closed last, the
//! device, is released first: the address is gone before the NFS sockets
//! are released, and the reset (`SO_LINGER` 0) or FIN they would send has no
//! route (its source is no longer local). A crashed active then leaves its
//! clients as a power-off does, retransmitting on their connection until the
//! new active tickles it (`tickle.rs`), instead of reconnecting at once into
//! a VIP nobody holds yet and backing off 1 s, then 3 s, on their SYN.
//! (Measured with `interop/powerfail.sh`: with the device on a low number,
//! crash stalls followed that SYN schedule.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// The character device through which TUN interfaces are created.
pub const TUN_CONTROL_PATH: &str = "/dev/net/tun";
/// The descriptor number the device's file is moved to (or the highest the
/// open-file limit allows, if lower).
pub const DEVICE_FD_HIGH: i32 = 65_535;
/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub const DEVICE_NAME_BYTES_MAX: usize = libc::IFNAMSIZ - 1;

/// A TUN device owned by this process; destroyed when dropped (or when the
/// process dies).
#[derive(Debug)]
pub struct VipDevice {
    name: String,
    _file: File,
}

/// Is `name` something the kernel takes as an interface name?
pub fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DEVICE_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

impl VipDevice {
    /// Create the TUN interface `name` in the calling thread's network
    /// namespace. `EBUSY` means another process holds a device of that name.
    pub fn create(name: &str) -> io::Result<VipDevice> {
        if !valid_device_name(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not an interface name")));
        }
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new().read(true).write(true).open(TUN_CONTROL_PATH)?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which we own.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut libc::ifreq) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(VipDevice { name: name.to_string(), _file: to_high_fd(file) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `file` moved to a high descriptor number (see the module doc); `file`
/// itself if that fails.
fn to_high_fd(file: File) -> File {
    use std::os::fd::FromRawFd;
    // SAFETY: rlimit is plain data; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 { rl.rlim_cur } else { 0 };
    let high = i32::try_from(soft.saturating_sub(1)).unwrap_or(DEVICE_FD_HIGH).min(DEVICE_FD_HIGH);
    if high <= file.as_raw_fd() {
        return file;
    }
    // SAFETY: plain fcntl on a descriptor we own; the result is checked.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, high) };
    if fd < 0 {
        return file;
    }
    // SAFETY: fd is a fresh duplicate nothing else owns; `file` (the low one) is closed on return.
    unsafe { File::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert!(valid_device_name("hanfs-vip"));
        assert!(valid_device_name("hanfs-vip12345"));
        assert!(!valid_device_name(""));
        assert!(!valid_device_name("hanfs-vip-too-long"));
        assert!(!valid_device_name("a/b"));
        assert!(!valid_device_name("a b"));
        assert!(!valid_device_name("eth0:1"));
        assert!(!valid_device_name(".."));
    }
}
