//! The cluster part of the TOML config: `[cluster]` with `[[cluster.peer]]`,
//! `[vip]` and `[hooks]`, validated into `hanfs_server::config::ClusterSetup`.
//! Every error names its line.
//!
//! ```toml
//! [cluster]
//! name = "prod"
//! node_id = 1
//! secret_file = "/etc/hanfs/secret"   # mode 0600: not group/other readable
//! failure_detection_ms = 1200         # default; how long a silent active
//!                                     # has before the passive campaigns
//!                                     # (480..=3000); heartbeat, election
//!                                     # and lease timings derive from it
//! [[cluster.peer]]                    # every member, this node included
//! id = 1
//! addr = "10.0.0.1:7101"              # raft peer transport, IP:port
//! role = "storage"                    # or "witness" (at most one)
//! [vip]                               # optional
//! interface = "eth0"                  # where the gratuitous ARP goes
//! addr = "10.0.0.100"
//! prefix = 24
//! device = "hanfs-vip1"               # default hanfs-vip<node_id>; the TUN device carrying the
//!                                     # address, gone when the process dies
//!                                     # (with interface = "lo": no device)
//! [hooks]                             # optional, each run with `sh -c`
//! on_promote = "mount /dev/drbd0 /srv"
//! on_demote = "umount /srv"
//! timeout_ms = 30000                  # default
//! ```
//!
//! And `[nlm]`, how locks are recovered when a node starts serving (any
//! config, cluster or not):
//!
//! ```toml
//! [nlm]
//! lock_recovery = "transparent"       # default: the replicated table is
//!                                     # served as it is, no grace period;
//!                                     # "notify": classic NSM recovery
//! grace_seconds = 90                  # "notify" only: 1..=3600, default 90
//! mon_name = "10.0.0.100"             # "notify" only: our name in SM_NOTIFY;
//!                                     # default the [vip] addr, else listen
//! ```

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hanfs_raft::network::auth::ClusterSecret;
use hanfs_raft::timing::{Timing, FAILURE_DETECTION_MS_DEFAULT};
use hanfs_raft::types::Role;
use hanfs_server::config::{
    ClusterConfig, ClusterSetup, HooksConfig, LockRecovery, NlmConfig, PeerConfig, GRACE_SECONDS_MAX,
    GRACE_SECONDS_MIN, HOOK_TIMEOUT_MS_DEFAULT,
};
use hanfs_server::nsm::xdr::SM_MAXSTRLEN;
use hanfs_server::vip::{default_device, valid_device_name, VipConfig, IPV4_PREFIX_MAX, IPV6_PREFIX_MAX};
use serde::Deserialize;
use toml::Spanned;

/// Longest hook run allowed by `hooks.timeout_ms`.
pub const HOOK_TIMEOUT_MS_MAX: u64 = 600_000;
/// Linux's interface name limit, including the terminating NUL.
pub const IFNAMSIZ_BYTES: usize = 16;
/// Longest cluster name (it travels in every peer handshake).
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    name: Spanned<String>,
    node_id: Spanned<u64>,
    secret_file: Spanned<PathBuf>,
    failure_detection_ms: Option<Spanned<u64>>,
    #[serde(default)]
    peer: Vec<PeerSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerSection {
    id: Spanned<u64>,
    addr: Spanned<String>,
    role: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    interface: Spanned<String>,
    addr: Spanned<String>,
    prefix: Spanned<u8>,
    device: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    on_promote: Option<String>,
    on_demote: Option<String>,
    timeout_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NlmSection {
    lock_recovery: Option<Spanned<String>>,
    grace_seconds: Option<Spanned<u64>>,
    mon_name: Option<Spanned<String>>,
}

/// Validate `[nlm]`; defaults (transparent) without it. A problem is
/// reported through `at` and the default kept.
pub fn check_nlm(nlm: Option<&NlmSection>, at: &mut impl FnMut(Range<usize>, String)) -> NlmConfig {
    let mut config = NlmConfig::default();
    let Some(n) = nlm else { return config };
    if let Some(r) = &n.lock_recovery {
        config.lock_recovery = match r.get_ref().as_str() {
            "transparent" => LockRecovery::Transparent,
            "notify" => LockRecovery::Notify,
            other => {
                at(r.span(), format!("lock_recovery `{other}` must be \"transparent\" or \"notify\""));
                LockRecovery::Transparent
            }
        };
    }
    if let Some(g) = &n.grace_seconds {
        let v = *g.get_ref();
        if (GRACE_SECONDS_MIN..=GRACE_SECONDS_MAX).contains(&v) {
            config.grace_seconds = v;
        } else {
            at(g.span(), format!("grace_seconds must be between {GRACE_SECONDS_MIN} and {GRACE_SECONDS_MAX}"));
        }
    }
    if let Some(m) = &n.mon_name {
        let name = m.get_ref();
        if name.is_empty() || name.len() > SM_MAXSTRLEN || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            at(m.span(), format!("mon_name must be 1..={SM_MAXSTRLEN} bytes without spaces"));
        } else {
            config.mon_name = Some(name.clone());
        }
    }
    config
}

/// Validate the cluster sections; `None` when there is no `[cluster]` (then
/// `[vip]` and `[hooks]` are errors: they only mean something in a cluster).
pub fn check(
    cluster: Option<&ClusterSection>,
    vip: Option<&VipSection>,
    hooks: Option<&HooksSection>,
    base: &Path,
    at: &mut impl FnMut(Range<usize>, String),
) -> Option<ClusterSetup> {
    let Some(c) = cluster else {
        if let Some(v) = vip {
            at(v.interface.span(), "[vip] needs a [cluster] section".into());
        }
        if let Some(h) = hooks {
            if let Some(t) = &h.timeout_ms {
                at(t.span(), "[hooks] needs a [cluster] section".into());
            } else {
                at(0..0, "[hooks] needs a [cluster] section".into());
            }
        }
        return None;
    };
    let mut ok = true;
    let name = c.name.get_ref();
    if name.is_empty()
        || name.len() > CLUSTER_NAME_BYTES_MAX
        || name.chars().any(|ch| ch.is_whitespace() || ch.is_control())
    {
        at(c.name.span(), format!("cluster name must be 1..={CLUSTER_NAME_BYTES_MAX} bytes without spaces"));
        ok = false;
    }
    let mut peers: Vec<PeerConfig> = Vec::new();
    for p in &c.peer {
        let id = *p.id.get_ref();
        if peers.iter().any(|x| x.id == id) {
            at(p.id.span(), format!("duplicate peer id {id}"));
            ok = false;
        }
        let addr = match p.addr.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                at(p.addr.span(), format!("peer addr `{}` must be IP:port", p.addr.get_ref()));
                ok = false;
                continue;
            }
        };
        if peers.iter().any(|x| x.addr == addr) {
            at(p.addr.span(), format!("duplicate peer addr {addr}"));
            ok = false;
        }
        let role = match p.role.get_ref().as_str() {
            "storage" => Role::Storage,
            "witness" => Role::Witness,
            other => {
                at(p.role.span(), format!("peer role `{other}` must be \"storage\" or \"witness\""));
                ok = false;
                continue;
            }
        };
        peers.push(PeerConfig { id, addr, role });
    }
    let node_id = *c.node_id.get_ref();
    if ok && !peers.iter().any(|p| p.id == node_id) {
        at(c.node_id.span(), format!("no [[cluster.peer]] entry for this node (node_id = {node_id})"));
        ok = false;
    }
    let witnesses = peers.iter().filter(|p| p.role == Role::Witness).count();
    let storage = peers.len() - witnesses;
    if witnesses > 1 {
        at(c.name.span(), format!("{witnesses} witnesses: at most one peer may have role \"witness\""));
        ok = false;
    }
    if storage == 0 {
        at(c.name.span(), "no peer with role \"storage\": nobody could serve".into());
        ok = false;
    }
    let secret_file = base.join(c.secret_file.get_ref());
    if let Err(e) = ClusterSecret::from_file(&secret_file) {
        at(c.secret_file.span(), e.to_string());
        ok = false;
    }
    let timing = match &c.failure_detection_ms {
        None => Timing::derive(FAILURE_DETECTION_MS_DEFAULT),
        Some(f) => Timing::derive(*f.get_ref()).inspect_err(|e| at(f.span(), e.to_string())),
    };
    ok &= timing.is_ok();
    let vip = match vip {
        None => None,
        Some(v) => {
            let checked = check_vip(v, node_id, at);
            ok &= checked.is_some();
            checked
        }
    };
    let hooks = check_hooks(hooks, at)?;
    let timing = timing.ok()?;
    if !ok {
        return None;
    }
    Some(ClusterSetup {
        cluster: ClusterConfig { name: name.clone(), node_id, secret_file, peers, timing },
        vip,
        hooks,
    })
}

fn check_vip(v: &VipSection, node_id: u64, at: &mut impl FnMut(Range<usize>, String)) -> Option<VipConfig> {
    let interface = v.interface.get_ref();
    if interface.is_empty() || interface.len() >= IFNAMSIZ_BYTES || interface.contains('/') {
        at(v.interface.span(), format!("vip interface `{interface}` is not an interface name"));
        return None;
    }
    let addr: IpAddr = match v.addr.get_ref().parse() {
        Ok(a) => a,
        Err(_) => {
            at(v.addr.span(), format!("vip addr `{}` is not an IP address", v.addr.get_ref()));
            return None;
        }
    };
    let prefix = *v.prefix.get_ref();
    let max = if addr.is_ipv4() { IPV4_PREFIX_MAX } else { IPV6_PREFIX_MAX };
    if prefix > max {
        at(v.prefix.span(), format!("vip prefix {prefix} is longer than {max}"));
        return None;
    }
    // The loopback test model puts the address on `lo` itself: nothing to
    // announce, and no device to outlive.
    let device = match (&v.device, interface.as_str()) {
        (Some(d), "lo") => {
            at(d.span(), "vip device is not used with interface = \"lo\"; remove it".into());
            return None;
        }
        (None, "lo") => None,
        (Some(d), _) if !valid_device_name(d.get_ref()) => {
            at(d.span(), format!("vip device `{}` is not an interface name (1-15 characters, no / or :)", d.get_ref()));
            return None;
        }
        (Some(d), _) if d.get_ref() == interface => {
            at(d.span(), format!("vip device `{interface}` must differ from the interface (it is created by hanfs)"));
            return None;
        }
        (Some(d), _) => Some(d.get_ref().clone()),
        // Two nodes on one host must not take the same device.
        (None, _) => match default_device(node_id) {
            Some(d) => Some(d),
            None => {
                at(
                    v.interface.span(),
                    format!("node_id {node_id} is too long for the default vip device name; set device"),
                );
                return None;
            }
        },
    };
    Some(VipConfig { interface: interface.clone(), addr, prefix, device })
}

fn check_hooks(h: Option<&HooksSection>, at: &mut impl FnMut(Range<usize>, String)) -> Option<HooksConfig> {
    let Some(h) = h else {
        return Some(HooksConfig::default());
    };
    let timeout_ms = match &h.timeout_ms {
        None => HOOK_TIMEOUT_MS_DEFAULT,
        Some(t) => {
            let v = *t.get_ref();
            if !(1..=HOOK_TIMEOUT_MS_MAX).contains(&v) {
                at(t.span(), format!("hooks timeout_ms must be between 1 and {HOOK_TIMEOUT_MS_MAX}"));
                return None;
            }
            v
        }
    };
    let nonempty = |s: &Option<String>| s.as_ref().filter(|c| !c.trim().is_empty()).cloned();
    Some(HooksConfig { on_promote: nonempty(&h.on_promote), on_demote: nonempty(&h.on_demote), timeout_ms })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::load_str;

    /// A temporary directory holding a secret file with `mode`.
    struct SecretDir(PathBuf);

    impl SecretDir {
        fn new(label: &str, mode: u32) -> Self {
            let dir = std::env::temp_dir().join(format!("hanfs-cli-{label}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let secret = dir.join("secret");
            std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write secret");
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).expect("chmod");
            SecretDir(dir)
        }
    }

    impl Drop for SecretDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HEAD: &str = "[[export]]\nname = \"/export\"\ndir = \"/nonexistent-shared-disk\"\nid = 1\n";

    fn cluster(node_id: u64, peers: &[(u64, &str, &str)]) -> String {
        let mut t = format!("{HEAD}[cluster]\nname = \"prod\"\nnode_id = {node_id}\nsecret_file = \"secret\"\n");
        for (id, addr, role) in peers {
            t += &format!("[[cluster.peer]]\nid = {id}\naddr = \"{addr}\"\nrole = \"{role}\"\n");
        }
        t
    }

    const THREE: [(u64, &str, &str); 3] =
        [(1, "127.0.0.1:7101", "storage"), (2, "127.0.0.1:7102", "storage"), (3, "127.0.0.1:7103", "witness")];

    fn errs(src: &str, base: &Path) -> Vec<String> {
        load_str(src, base).err().unwrap_or_default()
    }

    #[test]
    fn full_cluster_config_loads() {
        let d = SecretDir::new("full", 0o600);
        let src = cluster(2, &THREE)
            + "[vip]\ninterface = \"br0\"\naddr = \"10.99.0.100\"\nprefix = 24\n\
               [hooks]\non_promote = \"mount /dev/drbd0 /srv\"\non_demote = \"umount /srv\"\ntimeout_ms = 5000\n";
        let c = load_str(&src, &d.0).map_err(|e| e.join("; ")).expect("loads");
        let setup = c.server.cluster.expect("cluster");
        assert_eq!(setup.cluster.node_id, 2);
        assert_eq!(setup.cluster.own().map(|p| p.role), Some(Role::Storage));
        assert_eq!(setup.cluster.peers.len(), 3);
        assert_eq!(setup.cluster.peers[2].role, Role::Witness);
        let vip = setup.vip.expect("vip");
        assert_eq!((vip.interface.as_str(), vip.prefix), ("br0", 24));
        assert_eq!(vip.device.as_deref(), Some("hanfs-vip2"), "a device by default, named after the node");
        assert_eq!(setup.hooks.on_promote.as_deref(), Some("mount /dev/drbd0 /srv"));
        assert_eq!(setup.hooks.timeout_ms, 5000);
    }

    #[test]
    fn membership_problems_name_the_line() {
        let d = SecretDir::new("members", 0o600);
        // node_id 9 has no peer entry (line 7 is `node_id`).
        let e = errs(&cluster(9, &THREE), &d.0);
        assert!(e.iter().any(|m| m.starts_with("7: ") && m.contains("no [[cluster.peer]] entry")), "{e:?}");
        let e = errs(&cluster(1, &[(1, "127.0.0.1:1", "storage"), (1, "127.0.0.1:2", "witness")]), &d.0);
        assert!(e.iter().any(|m| m.contains("duplicate peer id 1")), "{e:?}");
        let e = errs(
            &cluster(1, &[(1, "127.0.0.1:1", "storage"), (2, "127.0.0.1:2", "witness"), (3, "127.0.0.1:3", "witness")]),
            &d.0,
        );
        assert!(e.iter().any(|m| m.contains("2 witnesses")), "{e:?}");
        let e = errs(&cluster(1, &[(1, "127.0.0.1:1", "witness")]), &d.0);
        assert!(e.iter().any(|m| m.contains("no peer with role \"storage\"")), "{e:?}");
        let e = errs(&cluster(1, &[(1, "nohost", "storage"), (2, "127.0.0.1:2", "arbiter")]), &d.0);
        assert!(e.iter().any(|m| m.contains("must be IP:port")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("\"storage\" or \"witness\"")), "{e:?}");
    }

    #[test]
    fn failure_detection_ms_is_derived_and_checked() {
        let d = SecretDir::new("timing", 0o600);
        let c = load_str(&cluster(1, &THREE), &d.0).map_err(|e| e.join("; ")).expect("loads");
        assert_eq!(c.server.cluster.map(|s| s.cluster.timing), Some(Timing::default()));
        let with = |ms: u64| {
            cluster(1, &THREE).replace(
                "secret_file = \"secret\"\n",
                &format!("secret_file = \"secret\"\nfailure_detection_ms = {ms}\n"),
            )
        };
        let c = load_str(&with(1000), &d.0).map_err(|e| e.join("; ")).expect("loads");
        let t = c.server.cluster.map(|s| s.cluster.timing).expect("cluster");
        assert_eq!((t.failure_detection_ms, t.election_timeout_max_ms, t.restart_guard_ms), (1000, 500, 500));
        let e = errs(&with(100), &d.0);
        assert!(e.iter().any(|m| m.starts_with("9: ") && m.contains("failure_detection_ms = 100 is outside")), "{e:?}");
    }

    #[test]
    fn secret_file_must_exist_and_be_private() {
        let open = SecretDir::new("open", 0o644);
        let e = errs(&cluster(1, &THREE), &open.0);
        assert!(e.iter().any(|m| m.starts_with("8: ") && m.contains("readable by group or others")), "{e:?}");
        let missing = std::env::temp_dir().join("hanfs-cli-no-such-dir");
        let e = errs(&cluster(1, &THREE), &missing);
        assert!(e.iter().any(|m| m.starts_with("8: ") && m.contains("cluster secret file")), "{e:?}");
    }

    #[test]
    fn vip_and_hooks_are_checked() {
        let d = SecretDir::new("vip", 0o600);
        let e = errs(&(cluster(1, &THREE) + "[vip]\ninterface = \"br0\"\naddr = \"10.0.0.1\"\nprefix = 33\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("prefix 33")), "{e:?}");
        let e = errs(&(cluster(1, &THREE) + "[hooks]\ntimeout_ms = 0\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("timeout_ms")), "{e:?}");
        let vip =
            |extra: &str| cluster(1, &THREE) + "[vip]\ninterface = \"br0\"\naddr = \"10.0.0.1\"\nprefix = 24\n" + extra;
        let e = errs(&vip("device = \"a/b\"\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("vip device `a/b` is not an interface name")), "{e:?}");
        let e = errs(&vip("device = \"br0\"\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("must differ from the interface")), "{e:?}");
        let named = load_str(&vip("device = \"hanfs-vip2\"\n"), &d.0).map_err(|e| e.join("; ")).expect("loads");
        assert_eq!(named.server.cluster.and_then(|c| c.vip).and_then(|v| v.device).as_deref(), Some("hanfs-vip2"));
        let lo = cluster(1, &THREE) + "[vip]\ninterface = \"lo\"\naddr = \"127.0.0.9\"\nprefix = 32\n";
        let on_lo = load_str(&lo, &d.0).map_err(|e| e.join("; ")).expect("loads");
        assert_eq!(on_lo.server.cluster.and_then(|c| c.vip).map(|v| v.device), Some(None), "no device on lo");
        let e = errs(&(lo + "device = \"x\"\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("not used with interface = \"lo\"")), "{e:?}");
        let e = errs(&format!("{HEAD}[vip]\ninterface = \"br0\"\naddr = \"10.0.0.1\"\nprefix = 24\n"), &d.0);
        assert!(e.iter().any(|m| m.contains("[vip] needs a [cluster]")), "{e:?}");
    }
}
