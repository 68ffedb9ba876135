//! What `run` tells a new user at start: the client `mount` line for each
//! address the server answers on, and a warning for every writable export
//! whose root the squashed identity cannot write (the classic first-mount
//! surprise: `mkdir data` as root makes a 0755 root-owned directory, and a
//! client's root, squashed to 65534, gets "Permission denied" on every
//! write with nothing on either side saying why).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hanfs_server::config::{ExportConfig, Squash};
use hanfs_server::exports::pattern_string;

/// Most addresses a mount line is printed for.
pub const MOUNT_LINES_MAX: usize = 8;

/// `mount -t nfs ADDR:NAME /mnt` for each address clients can reach: the
/// `listen` address, or every configured address of this host when it
/// listens on all of them (loopback last, link-local IPv6 left out).
pub fn mount_lines(listen: IpAddr, name: &str) -> Vec<String> {
    let addrs = if listen.is_unspecified() { host_addresses() } else { vec![listen] };
    addrs
        .into_iter()
        .take(MOUNT_LINES_MAX)
        .map(|a| match a {
            IpAddr::V4(v4) => format!("mount -t nfs {v4}:{name} /mnt"),
            IpAddr::V6(v6) => format!("mount -t nfs [{v6}]:{name} /mnt"),
        })
        .collect()
}

/// This host's addresses from getifaddrs(3): non-loopback first.
fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed by freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family
        // tells its real type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET: a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6: a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let v6 = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
                IpAddr::V6(v6)
            }
            _ => continue,
        };
        if !found.contains(&addr) {
            found.push(addr);
        }
    }
    // SAFETY: `head` came from a successful getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    found.sort_by_key(|a| (a.is_loopback(), a.is_ipv6()));
    if found.is_empty() {
        found.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    found
}

/// One warning per writable client rule of `export` whose squashed identity
/// (anonuid/anongid: a client's root under `root_squash`, everyone under
/// `all_squash`) may not create files in the export root, saying what fixes
/// it. Nothing when the root cannot be read (the server reports that itself).
pub fn squash_warnings(export: &ExportConfig) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(&export.dir) else { return Vec::new() };
    let mut warnings = Vec::new();
    for rule in &export.clients {
        let o = rule.options;
        if o.read_only || o.squash == Squash::None {
            continue;
        }
        if writable_by(meta.uid(), meta.gid(), meta.mode(), o.anonuid, o.anongid) {
            continue;
        }
        let who = match o.squash {
            Squash::All => "every client user",
            _ => "a client's root",
        };
        let squash = if o.squash == Squash::All { "all_squash" } else { "root_squash" };
        warnings.push(format!(
            "export {name} ({dir}): {who} is squashed to uid {uid} gid {gid} ({squash}, client rule {pattern}), \
             which cannot write to the export root (owner {owner}:{group}, mode {mode:04o}); \
             fix with `chown {uid}:{gid} {dir}`, `chmod 1777 {dir}` (like /tmp), \
             or {fix_opt} in the client rule",
            name = export.name,
            dir = display(&export.dir),
            uid = o.anonuid,
            gid = o.anongid,
            pattern = pattern_string(&rule.pattern),
            owner = meta.uid(),
            group = meta.gid(),
            mode = meta.mode() & 0o7777,
            fix_opt = if o.squash == Squash::All { "anonuid=/anongid= of the owner" } else { "no_root_squash" },
        ));
    }
    warnings
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Whether `uid`/`gid` may create entries in a directory with this owner
/// and mode (write and search), by the owner/group/other class that applies.
fn writable_by(owner: u32, group: u32, mode: u32, uid: u32, gid: u32) -> bool {
    let bits = if uid == owner {
        (mode >> 6) & 0o7
    } else if gid == group {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & 0o3 == 0o3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_that_applies_decides() {
        assert!(!writable_by(0, 0, 0o755, 65534, 65534), "root-owned 0755: nobody cannot write");
        assert!(writable_by(0, 0, 0o1777, 65534, 65534), "sticky world-writable");
        assert!(writable_by(65534, 0, 0o700, 65534, 65534), "owned by the squashed uid");
        assert!(writable_by(0, 65534, 0o770, 65534, 65534), "group-writable for the squashed gid");
        assert!(!writable_by(65534, 0, 0o577, 65534, 65534), "the owner class applies even if others may");
        assert!(!writable_by(0, 0, 0o777 & !0o1, 65534, 65534), "no search permission");
    }

    #[test]
    fn a_listen_address_gives_one_line() {
        let lines = mount_lines(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), "/export");
        assert_eq!(lines, vec!["mount -t nfs 10.0.0.5:/export /mnt".to_string()]);
        let v6 = mount_lines("fd00::5".parse().expect("addr"), "/e");
        assert_eq!(v6, vec!["mount -t nfs [fd00::5]:/e /mnt".to_string()]);
        let all = mount_lines(IpAddr::V4(Ipv4Addr::UNSPECIFIED), "/export");
        assert!(!all.is_empty() && all.len() <= MOUNT_LINES_MAX, "{all:?}");
    }
}
