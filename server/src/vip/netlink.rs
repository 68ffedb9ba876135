//! The rtnetlink side of the VIP: look up the interface, add, delete and find
//! the address. One short-lived netlink connection per operation, opened in
//! the calling thread's network namespace; every request is bounded by
//! `NETLINK_TIMEOUT_MS`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, CacheInfo};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec};
use tokio::task::JoinHandle;

use super::frame::MAC_BYTES;

/// Upper bound on one netlink request (the kernel answers in microseconds;
/// this only keeps a wedged socket from hanging a promotion or demotion).
pub const NETLINK_TIMEOUT_MS: u64 = 2_000;
/// Copies of the VIP (one per prefix length) a lookup accepts on one interface.
pub const ADDRESS_COPIES_MAX: usize = 129;

/// What the VIP code needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub up: bool,
    pub kind: LinkKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// The loopback device: the address is only local, nothing to announce.
    Loopback,
    /// An Ethernet-framed link with this MAC: announce with ARP / NA.
    Ethernet([u8; MAC_BYTES]),
    /// Any other link type (tun, IPoIB, ...): no announcement we can build.
    Other(u16),
}

/// A netlink connection whose driver task ends when this is dropped.
pub struct Netlink {
    handle: Handle,
    driver: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An rtnetlink failure, as an errno where the kernel gave one.
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

async fn bounded<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(Duration::from_millis(NETLINK_TIMEOUT_MS), fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "netlink request timed out")),
    }
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's namespace. The
    /// connection driver is spawned on the current tokio runtime; outside one
    /// this is an error, not a panic.
    pub fn open() -> io::Result<Netlink> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("the VIP code must run inside a tokio runtime"))?;
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let driver = runtime.spawn(conn);
        Ok(Netlink { handle, driver })
    }

    /// The interface called `name`. A missing interface is `ENODEV`.
    pub async fn link(&self, name: &str) -> io::Result<Link> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let msg = bounded(async { links.try_next().await.map_err(to_io) })
            .await?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; MAC_BYTES]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let kind = match (msg.header.link_layer_type, mac) {
            (LinkLayerType::Loopback, _) => LinkKind::Loopback,
            (LinkLayerType::Ether, Some(mac)) => LinkKind::Ethernet(mac),
            (other, _) => LinkKind::Other(u16::from(other)),
        };
        Ok(Link { index: msg.header.index, up: msg.header.flags.contains(LinkFlags::Up), kind })
    }

    /// Adds `addr/prefix` to interface `index`, valid for `lifetime_s`
    /// seconds; already present, it is replaced with a fresh lifetime.
    /// IPv6 addresses skip duplicate address detection: the VIP is ours by
    /// Raft leadership, and a tentative address could not be bound for ~1 s.
    /// `no_prefix_route`: add no route for the prefix (the VIP's own device
    /// must not capture the subnet's traffic).
    pub async fn add(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        no_prefix_route: bool,
        lifetime_s: u32,
    ) -> io::Result<()> {
        let mut req = self.handle.address().add(index, addr, prefix).replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = lifetime_s;
        lifetime.ifa_valid = lifetime_s;
        req.message_mut().attributes.push(AddressAttribute::CacheInfo(lifetime));
        let mut flags = AddressFlags::empty();
        if addr.is_ipv6() {
            flags |= AddressFlags::Nodad;
        }
        if no_prefix_route {
            flags |= AddressFlags::Noprefixroute;
        }
        if !flags.is_empty() {
            req.message_mut().attributes.push(AddressAttribute::Flags(flags));
        }
        match bounded(async { req.execute().await.map_err(to_io) }).await {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Brings interface `index` up (`ip link set dev X up`).
    pub async fn set_up(&self, index: u32) -> io::Result<()> {
        let req = self.handle.link().set(LinkUnspec::new_with_index(index).up().build());
        bounded(async { req.execute().await.map_err(to_io) }).await
    }

    /// Deletes `addr/prefix` from interface `index`. Absent is success.
    pub async fn delete(&self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let message = match addr {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(a, prefix).build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(a, prefix).build(),
        };
        let req = self.handle.address().del(message);
        match bounded(async { req.execute().await.map_err(to_io) }).await {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other,
        }
    }

    /// The prefix lengths with which `addr` is assigned to interface `index`
    /// (IPv4 allows the same address once per prefix); empty if absent.
    pub async fn prefixes(&self, index: u32, addr: IpAddr) -> io::Result<Vec<u8>> {
        let mut found = self.handle.address().get().set_link_index_filter(index).set_address_filter(addr).execute();
        bounded(async {
            let mut prefixes = Vec::new();
            while let Some(msg) = found.try_next().await.map_err(to_io)? {
                if prefixes.len() >= ADDRESS_COPIES_MAX {
                    return Err(io::Error::other("too many copies of the VIP on the interface"));
                }
                prefixes.push(msg.header.prefix_len);
            }
            Ok(prefixes)
        })
        .await
    }
}
