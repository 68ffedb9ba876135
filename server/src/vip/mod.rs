//! The floating service address (VIP): claim it on promotion, release it on
//! demotion, and answer whether this node holds it.
//!
//! - `Vip::new` with a `device` creates the VIP's own TUN interface
//!   (`device.rs`): the address lives there, and dies with the process.
//!   Without one (the loopback test model) the address goes on `interface`.
//! - `Vip::claim` adds `addr/prefix` to the device (or the interface) with
//!   rtnetlink (already present is fine), then announces it: on an Ethernet
//!   link a gratuitous ARP (IPv4) or an unsolicited Neighbor Advertisement
//!   (IPv6), `ANNOUNCE_COUNT` times, `ANNOUNCE_INTERVAL_MS` apart, through an
//!   AF_PACKET socket, so switches and neighbours move to this node's MAC
//!   before clients retransmit. On the loopback device (the cluster tests'
//!   model of a VIP) nothing is announced.
//! - `Vip::release` deletes the address, with whatever prefix it carries
//!   (already absent is fine), from the device and from the interface (a
//!   copy added there by hand or by an older setup would keep the VIP here).
//! - `Vip::held` checks whether the address is where claim puts it.
//!
//! Needs CAP_NET_ADMIN (address changes) and CAP_NET_RAW (announcements).
//! All sockets are opened in the calling thread's network namespace, at the
//! time of the call. Must run inside a tokio runtime.
//!
//! After a failover (called by the promotion, see `node::lifecycle`):
//! `sockdiag::destroy_tcp_on` destroys leftover TCP sockets on the VIP before
//! it is claimed (as `ss -K`), and `tickle::send_tickles` sends each client
//! connection the old active had open a tickle ACK from the VIP, so the
//! client resets it and reconnects at once.
//!
//! Files: `device.rs` (the TUN device), `netlink.rs` (rtnetlink requests),
//! `frame.rs` (ARP/NA frames, pure), `packet.rs` (the raw socket),
//! `sockdiag.rs` (SOCK_DESTROY), `tickle.rs` (tickle ACK packets and their
//! raw socket). Must not import `node`, Raft or config
//! parsing: the lifecycle calls in, this module never calls out.
//!
//! Note for IPv4: the kernel drops secondary addresses when the primary one of
//! the same subnet is deleted (unless `promote_secondaries` is set), so the
//! VIP should not be the only address of its subnet that other services use.

mod device;
mod frame;
mod netlink;
mod packet;
pub mod sockdiag;
pub mod tickle;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use device::{valid_device_name, VipDevice, DEVICE_NAME_BYTES_MAX};
pub use frame::{gratuitous_arp, unsolicited_na, GARP_FRAME_BYTES, MAC_BYTES, NA_FRAME_BYTES};
use netlink::{Link, LinkKind, Netlink};
use packet::PacketSocket;

/// Announcements sent per claim (like keepalived's `garp_master_repeat`): a
/// single frame can be lost on a busy switch.
pub const ANNOUNCE_COUNT: u32 = 3;
/// Gap between two announcements. Claim returns after
/// `(ANNOUNCE_COUNT - 1) * ANNOUNCE_INTERVAL_MS`, which is on the failover path.
pub const ANNOUNCE_INTERVAL_MS: u64 = 50;
pub const IPV4_PREFIX_MAX: u8 = 32;
pub const IPV6_PREFIX_MAX: u8 = 128;
/// The VIP device's name when the config names none: this prefix and the
/// node id (`default_device`), so two nodes on one host never collide.
pub const DEFAULT_DEVICE_PREFIX: &str = "hanfs-vip";

/// The default VIP device name of node `node_id` (`hanfs-vip1`, ...); `None`
/// if the id is too long for an interface name.
pub fn default_device(node_id: u64) -> Option<String> {
    Some(format!("{DEFAULT_DEVICE_PREFIX}{node_id}")).filter(|d| valid_device_name(d))
}
/// Lifetime (valid and preferred) the VIP address is added with. The serving
/// node renews it every `VIP_RENEW_MS` while it may serve, so a process that
/// is alive but stuck (SIGSTOP, blocked on a dead disk) loses the VIP within
/// this many seconds (plus up to 1 s of kernel timer rounding), as a dead one
/// loses it with its device.
pub const VIP_LIFETIME_S: u32 = 3;
/// How often the serving node renews the VIP's lifetime.
pub const VIP_RENEW_MS: u64 = 1_000;
const _: () = assert!(2 * VIP_RENEW_MS <= VIP_LIFETIME_S as u64 * 1_000, "a late renewal must not drop the VIP");

const _: () = assert!(ANNOUNCE_COUNT >= 1);
const _: () = assert!((ANNOUNCE_COUNT as u64 - 1) * ANNOUNCE_INTERVAL_MS <= 500);

/// Where the VIP lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipConfig {
    /// Interface name, e.g. `eth0`; `lo` for the loopback test mode.
    pub interface: String,
    pub addr: IpAddr,
    /// Prefix length, e.g. 24.
    pub prefix: u8,
    /// The TUN device this process creates to carry the address (see
    /// `device.rs`); `None` puts the address on `interface` itself.
    #[serde(default)]
    pub device: Option<String>,
}

/// `10.0.0.100/24 on device hanfs-vip, announced on eth0`, or
/// `127.0.0.9/32 on lo` without a device.
impl std::fmt::Display for VipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Some(d) => write!(f, "{}/{} on device {d}, announced on {}", self.addr, self.prefix, self.interface),
            None => write!(f, "{}/{} on {}", self.addr, self.prefix, self.interface),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    #[error("VIP {addr}/{prefix}: prefix longer than {max} bits")]
    Prefix { addr: IpAddr, prefix: u8, max: u8 },
    #[error("VIP interface {interface:?} does not exist")]
    InterfaceMissing { interface: String },
    #[error("VIP interface {interface:?} is down")]
    InterfaceDown { interface: String },
    #[error("VIP device {device:?}: {reason}")]
    Device { device: String, reason: String },
    #[error("{op} on {interface:?}: permission denied (needs CAP_NET_ADMIN and CAP_NET_RAW)")]
    Permission { op: &'static str, interface: String },
    #[error("{op} on {interface:?}: {source}")]
    Netlink { op: &'static str, interface: String, source: io::Error },
    #[error("announcing {addr} on {interface:?} (the address is added): {source}")]
    Announce { addr: IpAddr, interface: String, source: io::Error },
}

/// The VIP of this node. Apart from its configuration it holds only the
/// VIP device (shared by clones); every call asks the kernel, so claim and
/// release are idempotent and safe to retry.
#[derive(Clone, Debug)]
pub struct Vip {
    config: VipConfig,
    device: Option<Arc<VipDevice>>,
}

impl Vip {
    /// Checks the prefix length against the address family and, with a
    /// `device` configured, creates that device (in the calling thread's
    /// network namespace). It lives as long as this `Vip` and its clones.
    pub fn new(config: VipConfig) -> Result<Vip, VipError> {
        let max = if config.addr.is_ipv4() { IPV4_PREFIX_MAX } else { IPV6_PREFIX_MAX };
        if config.prefix > max {
            return Err(VipError::Prefix { addr: config.addr, prefix: config.prefix, max });
        }
        let device = match &config.device {
            None => None,
            Some(name) => {
                Some(Arc::new(VipDevice::create(name).map_err(|e| device_error(name, &config.interface, e))?))
            }
        };
        Ok(Vip { config, device })
    }

    pub fn config(&self) -> &VipConfig {
        &self.config
    }

    /// Adds the address and announces it. On return the address is bound-able
    /// and every announcement has been handed to the kernel.
    pub async fn claim(&self) -> Result<(), VipError> {
        self.add_address().await?;
        self.announce_claim().await
    }

    /// The first half of `claim`: add the address (or renew its lifetime,
    /// `VIP_LIFETIME_S`, if it is there), announce nothing yet. A
    /// promotion binds its listeners in between, so no client redirected by
    /// the announcement meets the address without a listener (a refused
    /// connect costs a kernel client seconds of reconnect backoff).
    pub async fn add_address(&self) -> Result<(), VipError> {
        let c = &self.config;
        let nl = self.open("claim")?;
        let link = self.link(&nl, "claim").await?;
        if !link.up && link.kind != LinkKind::Loopback {
            return Err(VipError::InterfaceDown { interface: c.interface.clone() });
        }
        let Some(device) = &self.device else {
            return nl
                .add(link.index, c.addr, c.prefix, false, VIP_LIFETIME_S)
                .await
                .map_err(|e| self.netlink_error("address add", e));
        };
        let dev = self.device_link(&nl, device).await?;
        if !dev.up {
            nl.set_up(dev.index).await.map_err(|e| self.netlink_error("device up", e))?;
        }
        nl.add(dev.index, c.addr, c.prefix, true, VIP_LIFETIME_S)
            .await
            .map_err(|e| self.netlink_error("address add", e))
    }

    /// The second half of `claim`: the gratuitous ARP announcements.
    pub async fn announce_claim(&self) -> Result<(), VipError> {
        let c = &self.config;
        let nl = self.open("claim")?;
        let link = self.link(&nl, "claim").await?;
        self.announce(&link).await?;
        tracing::info!(vip = %c.addr, prefix = c.prefix, interface = %c.interface, "VIP claimed");
        Ok(())
    }

    /// Deletes the address from the device and from the interface. A
    /// missing interface means the address is gone too, which is what
    /// release wants: logged, not an error.
    pub async fn release(&self) -> Result<(), VipError> {
        let c = &self.config;
        let nl = self.open("release")?;
        if let Some(device) = &self.device {
            let dev = self.device_link(&nl, device).await?;
            self.delete_every_copy(&nl, dev.index).await?;
        }
        match self.link(&nl, "release").await {
            Ok(link) => self.delete_every_copy(&nl, link.index).await?,
            Err(VipError::InterfaceMissing { interface }) => {
                tracing::warn!(%interface, vip = %c.addr, "VIP interface gone; nothing to release there");
            }
            Err(e) => return Err(e),
        }
        tracing::info!(vip = %c.addr, interface = %c.interface, device = ?c.device, "VIP released");
        Ok(())
    }

    /// Delete every copy on link `index`, whatever its prefix: one left
    /// behind (added by hand, or before a prefix change in the config) would
    /// keep the VIP on this node.
    async fn delete_every_copy(&self, nl: &Netlink, index: u32) -> Result<(), VipError> {
        let addr = self.config.addr;
        let prefixes = nl.prefixes(index, addr).await.map_err(|e| self.netlink_error("address lookup", e))?;
        for prefix in prefixes {
            nl.delete(index, addr, prefix).await.map_err(|e| self.netlink_error("address delete", e))?;
        }
        Ok(())
    }

    /// Whether the address is where `claim` puts it (the device, else the
    /// interface). A lookup failure is logged and counts as not held.
    pub async fn held(&self) -> bool {
        let lookup = async {
            let nl = self.open("lookup")?;
            let index = match &self.device {
                Some(device) => self.device_link(&nl, device).await?.index,
                None => self.link(&nl, "lookup").await?.index,
            };
            let prefixes = nl.prefixes(index, self.config.addr).await;
            prefixes.map(|p| !p.is_empty()).map_err(|e| self.netlink_error("address lookup", e))
        };
        match lookup.await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "VIP lookup failed; reporting not held");
                false
            }
        }
    }

    async fn device_link(&self, nl: &Netlink, device: &VipDevice) -> Result<Link, VipError> {
        nl.link(device.name()).await.map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => VipError::Device {
                device: device.name().to_string(),
                reason: "gone (deleted by hand?); restart this node to recreate it".into(),
            },
            _ => self.netlink_error("device lookup", e),
        })
    }

    fn open(&self, op: &'static str) -> Result<Netlink, VipError> {
        Netlink::open().map_err(|e| self.netlink_error(op, e))
    }

    async fn link(&self, nl: &Netlink, op: &'static str) -> Result<Link, VipError> {
        nl.link(&self.config.interface).await.map_err(|e| self.netlink_error(op, e))
    }

    fn netlink_error(&self, op: &'static str, source: io::Error) -> VipError {
        let interface = self.config.interface.clone();
        match source.raw_os_error() {
            Some(libc::ENODEV) => VipError::InterfaceMissing { interface },
            Some(libc::EPERM) | Some(libc::EACCES) => VipError::Permission { op, interface },
            _ => VipError::Netlink { op, interface, source },
        }
    }

    async fn announce(&self, link: &Link) -> Result<(), VipError> {
        let c = &self.config;
        let mac = match link.kind {
            LinkKind::Loopback => return Ok(()),
            LinkKind::Ethernet(mac) => mac,
            LinkKind::Other(link_type) => {
                tracing::warn!(interface = %c.interface, link_type, "VIP link is not Ethernet; no announcement sent");
                return Ok(());
            }
        };
        let frame: Vec<u8> = match c.addr {
            IpAddr::V4(a) => gratuitous_arp(mac, a).to_vec(),
            IpAddr::V6(a) => unsolicited_na(mac, a).to_vec(),
        };
        let announce_error = |source: io::Error| match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                VipError::Permission { op: "announce", interface: c.interface.clone() }
            }
            _ => VipError::Announce { addr: c.addr, interface: c.interface.clone(), source },
        };
        let socket = PacketSocket::open(link.index).map_err(announce_error)?;
        for round in 0..ANNOUNCE_COUNT {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(ANNOUNCE_INTERVAL_MS)).await;
            }
            socket.send(&frame).map_err(announce_error)?;
        }
        Ok(())
    }
}

/// A VIP device failure, worded for the administrator.
fn device_error(device: &str, interface: &str, e: io::Error) -> VipError {
    let device = device.to_string();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            VipError::Permission { op: "device create", interface: interface.to_string() }
        }
        Some(libc::EBUSY) => VipError::Device { device, reason: "another process holds a device of this name".into() },
        Some(libc::ENOENT) | Some(libc::ENODEV) => VipError::Device {
            device,
            reason: format!("no TUN support ({}: {e}); load the tun module", device::TUN_CONTROL_PATH),
        },
        _ => VipError::Device { device, reason: e.to_string() },
    }
}
