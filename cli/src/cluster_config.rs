//! The cluster part of the TOML config: `[cluster]` with `[[cluster.peer]]`,
//! `[vip]` and `[hooks]`, validated into `hanfs_server::config::ClusterSetup`.
//! Every error names its line.
//!
//! ```toml
//! [cluster]
//! name = "prod"
//! node_id = 1
//! secret_file = "/etc/hanfs/secret"   # mode 0600: not group/other readable
//! [[cluster.peer]]                    # every member, this node included
//! id = 1
//! addr = "10.0.0.1:7101"              # raft peer transport, IP:port
//! role = "storage"                    # or "witness" (at most one)
//! [vip]                               # optional
//! interface = "eth0"
//! addr = "10.0.0.100"
//! prefix = 24
//! [hooks]                             # optional, each run with `sh -c`
//! on_promote = "mount /dev/drbd0 /srv"
//! on_demote = "umount /srv"
//! timeout_ms = 30000                  # default
//! ```

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hanfs_raft::network::auth::ClusterSecret;
use hanfs_raft::types::Role;
use hanfs_server::config::{ClusterConfig, ClusterSetup, HooksConfig, PeerConfig, HOOK_TIMEOUT_MS_DEFAULT};
use hanfs_server::vip::{VipConfig, IPV4_PREFIX_MAX, IPV6_PREFIX_MAX};
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    on_promote: Option<String>,
    on_demote: Option<String>,
    timeout_ms: Option<Spanned<u64>>,
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
    if name.is_empty() || name.len() > CLUSTER_NAME_BYTES_MAX || name.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
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
    let vip = match vip {
        None => None,
        Some(v) => {
            let checked = check_vip(v, at);
            ok &= checked.is_some();
            checked
        }
    };
    let hooks = check_hooks(hooks, at)?;
    if !ok {
        return None;
    }
    Some(ClusterSetup {
        cluster: ClusterConfig { name: name.clone(), node_id, secret_file, peers },
        vip,
        hooks,
    })
}

fn check_vip(v: &VipSection, at: &mut impl FnMut(Range<usize>, String)) -> Option<VipConfig> {
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
    Some(VipConfig { interface: interface.clone(), addr, prefix })
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
