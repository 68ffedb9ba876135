//! Stage two: the TOML config file and the quick-start flags, validated into
//! `hanfs_server::config::ServerConfig`. Every error names the line it is on.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0"            # default
//! state_dir = "/var/lib/hanfs"  # default
//! log_format = "text"           # or "json"
//! record_bytes_max = 1114112    # default: 1 MiB + 64 KiB
//! idle_timeout_seconds = 360    # default; an idle TCP connection is closed
//! connections_per_address_max = 64  # default; TCP connections per client address
//! host_cache_ttl_seconds = 600  # default; how long clients' host names are cached
//!
//! [ports]                       # defaults: 111, 2049, 20048, 0, 0
//! portmap = 111
//! nfs = 2049
//! mount = 20048
//! nlm = 0                       # NLM (locks), TCP+UDP; 0: ephemeral, via portmap
//! nsm = 0                       # NSM (status monitor), TCP+UDP; 0 likewise
//!
//! [[export]]
//! name = "/export"              # the path clients mount
//! dir = "/srv/nfs/export"       # must exist (a cluster member's may be
//!                               # absent until on_promote mounts it)
//! id = 1                        # fsid: the same on every node
//! clients = "*(rw,root_squash)" # exports(5) syntax
//!
//! [nlm]                         # optional; see cluster_config.rs
//! lock_recovery = "transparent" # default; or "notify" (classic)
//!
//! [metrics]                     # optional; off by default
//! listen = "127.0.0.1:9633"     # GET /metrics (Prometheus text format)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::Duration;

use hanfs_server::config::{ClientPattern, ClientRule, ExportConfig, NlmConfig, Ports, ServerConfig};
use hanfs_server::exports::{parse_clients, pattern_string};
use hanfs_server::hostnames::{
    netgroup_support, HOST_CACHE_TTL_SECONDS_DEFAULT, HOST_CACHE_TTL_SECONDS_MAX, HOST_CACHE_TTL_SECONDS_MIN,
};
use hanfs_server::rpc::limits::{Limits, IDLE_TIMEOUT_SECONDS_MAX, IDLE_TIMEOUT_SECONDS_MIN};
use hanfs_server::rpc::record::RECORD_BYTES_MAX;
use serde::Deserialize;
use toml::Spanned;

use crate::args::{LogFormat, RunArgs, QUICK_CLIENTS, QUICK_STATE_DIR};
use crate::cluster_config::{check_nlm, ClusterSection, HooksSection, NlmSection, VipSection};

/// Default state directory with a config file.
pub const CONFIG_STATE_DIR: &str = "/var/lib/hanfs";
/// Smallest record bound accepted (a record must hold at least a header and a small call).
pub const RECORD_BYTES_MIN: u32 = 4096;
/// Largest record bound accepted (the record-marking limit).
pub const RECORD_BYTES_LIMIT: u32 = 0x7fff_ffff;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    ports: PortsSection,
    #[serde(default)]
    export: Vec<ExportSection>,
    cluster: Option<ClusterSection>,
    vip: Option<VipSection>,
    hooks: Option<HooksSection>,
    nlm: Option<NlmSection>,
    #[serde(default)]
    metrics: MetricsSection,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    /// `ADDR:PORT` of `GET /metrics`.
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Spanned<String>>,
    state_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    record_bytes_max: Option<Spanned<u32>>,
    idle_timeout_seconds: Option<Spanned<u64>>,
    connections_per_address_max: Option<Spanned<usize>>,
    host_cache_ttl_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PortsSection {
    portmap: Option<u16>,
    nfs: Option<u16>,
    mount: Option<u16>,
    nlm: Option<Spanned<u16>>,
    nsm: Option<Spanned<u16>>,
    /// Test knob, not for service: the port of the clients' portmappers that
    /// NLM callbacks ask (always 111 on a real network).
    callback_portmap: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportSection {
    name: Spanned<String>,
    dir: Spanned<PathBuf>,
    id: Spanned<u32>,
    clients: Option<Spanned<String>>,
}

/// The validated result: what the server runs, plus what only the CLI uses.
pub struct Config {
    pub server: ServerConfig,
    pub log_format: LogFormat,
}

/// 1-based line of byte offset `at` in `src`.
fn line_of(src: &str, at: usize) -> usize {
    src.get(..at).map_or(1, |s| s.matches('\n').count() + 1)
}

/// Read and validate a config file. On failure, every problem found, one per line.
pub fn load_file(path: &Path) -> Result<Config, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    load_str(&src, path.parent().unwrap_or(Path::new(".")))
        .map_err(|errors| errors.iter().map(|e| format!("{}:{e}", path.display())).collect::<Vec<_>>().join("\n"))
}

/// Validate config text; relative `dir`s are resolved against `base`.
pub fn load_str(src: &str, base: &Path) -> Result<Config, Vec<String>> {
    let file: FileConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(src, s.start));
        vec![format!("{line}: {}", e.message())]
    })?;
    let mut errors = Vec::new();
    let mut at =
        |span: std::ops::Range<usize>, msg: String| errors.push(format!("{}: {msg}", line_of(src, span.start)));

    let listen = match &file.server.listen {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
            at(l.span(), format!("listen: `{}` is not an IP address", l.get_ref()));
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }),
    };
    let record_bytes_max = match &file.server.record_bytes_max {
        None => RECORD_BYTES_MAX,
        Some(r) => {
            let v = *r.get_ref();
            if !(RECORD_BYTES_MIN..=RECORD_BYTES_LIMIT).contains(&v) {
                at(r.span(), format!("record_bytes_max must be between {RECORD_BYTES_MIN} and {RECORD_BYTES_LIMIT}"));
            }
            v
        }
    };
    let mut limits = Limits::default();
    if let Some(t) = &file.server.idle_timeout_seconds {
        let v = *t.get_ref();
        if !(IDLE_TIMEOUT_SECONDS_MIN..=IDLE_TIMEOUT_SECONDS_MAX).contains(&v) {
            at(
                t.span(),
                format!(
                    "idle_timeout_seconds must be between {IDLE_TIMEOUT_SECONDS_MIN} and {IDLE_TIMEOUT_SECONDS_MAX}"
                ),
            );
        }
        limits.idle_timeout = std::time::Duration::from_secs(v);
    }
    if let Some(n) = &file.server.connections_per_address_max {
        let v = *n.get_ref();
        if !(1..=limits.connections_max).contains(&v) {
            at(n.span(), format!("connections_per_address_max must be between 1 and {}", limits.connections_max));
        }
        limits.connections_per_address_max = v;
    }
    let mut host_cache_ttl = Duration::from_secs(HOST_CACHE_TTL_SECONDS_DEFAULT);
    if let Some(t) = &file.server.host_cache_ttl_seconds {
        let v = *t.get_ref();
        if !(HOST_CACHE_TTL_SECONDS_MIN..=HOST_CACHE_TTL_SECONDS_MAX).contains(&v) {
            at(
                t.span(),
                format!(
                    "host_cache_ttl_seconds must be between {HOST_CACHE_TTL_SECONDS_MIN} and {HOST_CACHE_TTL_SECONDS_MAX}"
                ),
            );
        }
        host_cache_ttl = Duration::from_secs(v);
    }
    let defaults = Ports::default();
    let mut ports = Ports {
        portmap: file.ports.portmap.unwrap_or(defaults.portmap),
        nfs: file.ports.nfs.unwrap_or(defaults.nfs),
        mount: file.ports.mount.unwrap_or(defaults.mount),
        callback_portmap: file.ports.callback_portmap.unwrap_or(defaults.callback_portmap),
        ..defaults
    };
    for (name, field, value) in [("nlm", &file.ports.nlm, &mut ports.nlm), ("nsm", &file.ports.nsm, &mut ports.nsm)] {
        let Some(port) = field else { continue };
        let v = *port.get_ref();
        // NLM and NSM share no port with NFS, MOUNT or portmap (0: ephemeral).
        if v != 0 && defaults_or(&file.ports).contains(&v) {
            at(port.span(), format!("{name} port {v} is already used by portmap, nfs or mount"));
        }
        *value = v;
    }
    if let Some(nsm) = file.ports.nsm.as_ref().filter(|_| ports.nlm != 0 && ports.nlm == ports.nsm) {
        at(nsm.span(), format!("nlm and nsm cannot share port {}", ports.nlm));
    }
    let cluster =
        crate::cluster_config::check(file.cluster.as_ref(), file.vip.as_ref(), file.hooks.as_ref(), base, &mut at);
    let nlm = check_nlm(file.nlm.as_ref(), &mut at);
    let metrics_listen = file.metrics.listen.as_ref().and_then(|l| {
        let parsed = l.get_ref().parse::<SocketAddr>();
        if parsed.is_err() {
            at(l.span(), format!("metrics listen: `{}` is not an ADDR:PORT socket address", l.get_ref()));
        }
        parsed.ok()
    });
    // A cluster's export dirs may live on a shared disk that `on_promote`
    // mounts: on a passive node they need not exist yet.
    let dirs_must_exist = file.cluster.is_none();
    let mut exports: Vec<ExportConfig> = Vec::new();
    for e in &file.export {
        if let Some(x) = check_export(e, base, &exports, dirs_must_exist, &mut at) {
            exports.push(x);
        }
    }
    // A witness never serves; a cluster config may leave exports out there.
    if file.export.is_empty() && file.cluster.is_none() {
        errors.push("1: no [[export]] section: nothing to serve".to_string());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let state_dir = file.server.state_dir.unwrap_or_else(|| PathBuf::from(CONFIG_STATE_DIR));
    Ok(Config {
        server: ServerConfig {
            listen,
            ports,
            exports,
            state_dir: base.join(state_dir),
            record_bytes_max,
            cluster,
            nlm,
            metrics_listen,
            limits,
            host_cache_ttl,
        },
        log_format: file.server.log_format.unwrap_or(LogFormat::Text),
    })
}

/// The portmap, NFS and MOUNT ports the file asks for, defaults filled in.
fn defaults_or(p: &PortsSection) -> [u16; 3] {
    let d = Ports::default();
    [p.portmap.unwrap_or(d.portmap), p.nfs.unwrap_or(d.nfs), p.mount.unwrap_or(d.mount)]
}

fn check_export(
    e: &ExportSection,
    base: &Path,
    seen: &[ExportConfig],
    dirs_must_exist: bool,
    at: &mut impl FnMut(std::ops::Range<usize>, String),
) -> Option<ExportConfig> {
    let mut ok = true;
    let name = e.name.get_ref();
    if !name.starts_with('/') || name.contains('\0') || name.len() > hanfs_server::mount::MOUNT_PATH_BYTES_MAX {
        at(e.name.span(), format!("export name `{name}` must be an absolute path (like /export)"));
        ok = false;
    }
    if seen.iter().any(|x| x.name == *name) {
        at(e.name.span(), format!("duplicate export name `{name}`"));
        ok = false;
    }
    let id = *e.id.get_ref();
    if seen.iter().any(|x| x.export_id == id) {
        at(e.id.span(), format!("duplicate export id {id}"));
        ok = false;
    }
    let dir = base.join(e.dir.get_ref());
    if dirs_must_exist && !dir.is_dir() {
        at(e.dir.span(), format!("export dir `{}` is not an existing directory", dir.display()));
        ok = false;
    }
    let (spec, span) = match &e.clients {
        Some(c) => (c.get_ref().as_str(), c.span()),
        None => (QUICK_CLIENTS, e.name.span()),
    };
    let clients = match parse_clients(spec).map_err(|e| e.to_string()).and_then(netgroups_usable) {
        Ok(c) => Some(c),
        Err(msg) => {
            at(span, format!("clients: {msg}"));
            None
        }
    };
    let clients = clients.filter(|_| ok)?;
    Some(ExportConfig { name: name.clone(), dir, export_id: id, clients })
}

/// `rules`, unless one is a `@netgroup` and this system has no NSS
/// netgroup source (glibc would quietly answer "not in the group").
fn netgroups_usable(rules: Vec<ClientRule>) -> Result<Vec<ClientRule>, String> {
    match rules.iter().find(|r| matches!(r.pattern, ClientPattern::Netgroup(_))) {
        Some(rule) => match netgroup_support() {
            Ok(()) => Ok(rules),
            Err(e) => Err(format!("`{}`: {e}", pattern_string(&rule.pattern))),
        },
        None => Ok(rules),
    }
}

/// The quick-start flags (`run --export DIR ...`) as a config.
pub fn from_flags(args: &RunArgs) -> Result<Config, String> {
    let dir = args.export.clone().ok_or("--export DIR or --config FILE is required")?;
    if !dir.is_dir() {
        return Err(format!("--export {}: not an existing directory", dir.display()));
    }
    let name = args.name.clone().unwrap_or_else(|| "/export".to_string());
    if !name.starts_with('/') {
        return Err(format!("--name {name}: must be an absolute path (like /export)"));
    }
    let spec = args.clients.clone().unwrap_or_else(|| QUICK_CLIENTS.to_string());
    let clients = parse_clients(&spec)
        .map_err(|e| e.to_string())
        .and_then(netgroups_usable)
        .map_err(|e| format!("--clients: {e}"))?;
    let defaults = Ports::default();
    Ok(Config {
        server: ServerConfig {
            listen: args.listen.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ports: Ports {
                portmap: args.portmap_port.unwrap_or(defaults.portmap),
                nfs: args.nfs_port.unwrap_or(defaults.nfs),
                mount: args.mount_port.unwrap_or(defaults.mount),
                ..defaults
            },
            exports: vec![ExportConfig { name, dir, export_id: args.export_id, clients }],
            state_dir: args.state_dir.clone().unwrap_or_else(|| PathBuf::from(QUICK_STATE_DIR)),
            record_bytes_max: RECORD_BYTES_MAX,
            cluster: None,
            nlm: NlmConfig::default(),
            metrics_listen: args.metrics,
            limits: Limits::default(),
            host_cache_ttl: Duration::from_secs(HOST_CACHE_TTL_SECONDS_DEFAULT),
        },
        log_format: args.log_format.unwrap_or(LogFormat::Text),
    })
}

/// Flags given with `--config` override the file's ports, listen and state dir.
pub fn apply_overrides(config: &mut Config, args: &RunArgs) {
    let s = &mut config.server;
    if let Some(l) = args.listen {
        s.listen = l;
    }
    if let Some(d) = &args.state_dir {
        s.state_dir = d.clone();
    }
    if let Some(p) = args.portmap_port {
        s.ports.portmap = p;
    }
    if let Some(p) = args.nfs_port {
        s.ports.nfs = p;
    }
    if let Some(p) = args.mount_port {
        s.ports.mount = p;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    if let Some(m) = args.metrics {
        s.metrics_listen = Some(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<String> {
        match load_str(src, Path::new("/")) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }

    #[test]
    fn full_config_loads() {
        let src = "[server]\nlisten = \"127.0.0.1\"\nstate_dir = \"/tmp/st\"\nlog_format = \"json\"\n\
                   [ports]\nportmap = 1111\nnfs = 2222\nmount = 3333\nnlm = 4444\nnsm = 5555\n\
                   [[export]]\nname = \"/export\"\ndir = \"/tmp\"\nid = 7\nclients = \"127.0.0.0/8(rw,insecure)\"\n";
        let c = load_str(src, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((c.server.ports.portmap, c.server.ports.nfs, c.server.ports.mount), (1111, 2222, 3333));
        assert_eq!((c.server.ports.nlm, c.server.ports.nsm, c.server.ports.callback_portmap), (4444, 5555, 111));
        assert_eq!(c.server.exports[0].export_id, 7);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = errs("[server]\nlisten = \n");
        assert!(e[0].starts_with("2: "), "{e:?}");
        let e = errs("[server]\n\nbogus = 1\n");
        assert!(e[0].starts_with("3: ") && e[0].contains("bogus"), "{e:?}");
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let src = "[[export]]\nname = \"/a\"\ndir = \"/tmp\"\nid = 1\n\
                   [[export]]\nname = \"/b\"\ndir = \"/nonexistent-hanfs-dir\"\nid = 1\nclients = \"*(rw,bogus)\"\n";
        let e = errs(src);
        assert!(e.iter().any(|m| m.starts_with("7: ") && m.contains("not an existing directory")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("8: ") && m.contains("duplicate export id 1")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("9: ") && m.contains("unknown export option `bogus`")), "{e:?}");
    }

    #[test]
    fn nlm_and_nsm_ports_default_to_ephemeral_and_must_not_collide() {
        let head = "[[export]]\nname = \"/export\"\ndir = \"/tmp\"\nid = 1\n";
        let c = load_str(head, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!((c.server.ports.nlm, c.server.ports.nsm), (0, 0));
        let e = errs(&format!("[ports]\nnfs = 2049\nnlm = 2049\n{head}"));
        assert!(e.iter().any(|m| m.starts_with("3: ") && m.contains("nlm port 2049")), "{e:?}");
        let e = errs(&format!("[ports]\nnlm = 4045\nnsm = 4045\n{head}"));
        assert!(e.iter().any(|m| m.contains("nlm and nsm cannot share port 4045")), "{e:?}");
    }

    #[test]
    fn nlm_table_defaults_to_transparent_and_is_checked() {
        use hanfs_server::config::LockRecovery;
        let head = "[[export]]\nname = \"/export\"\ndir = \"/tmp\"\nid = 1\n";
        let c = load_str(head, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.nlm, NlmConfig::default());
        assert_eq!((c.server.nlm.lock_recovery, c.server.nlm.grace_seconds), (LockRecovery::Transparent, 90));
        assert_eq!(
            c.server.nsm_mon_name(),
            hanfs_server::nlm::callback::CallbackConfig::new(111, None, hanfs_server::rpc::shared::Fence::always())
                .machine
        );
        // Exactly what interop/lib/lockfailover.sh appends.
        let classic = format!(
            "[server]\nlisten = \"10.99.0.1\"\n{head}\n[nlm]\nlock_recovery = \"notify\"\ngrace_seconds = 15\n"
        );
        let c = load_str(&classic, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!((c.server.nlm.lock_recovery, c.server.nlm.grace_seconds), (LockRecovery::Notify, 15));
        assert_eq!(c.server.nsm_mon_name(), "10.99.0.1", "the listen address without a [vip]");
        let named = format!("{head}[nlm]\nmon_name = \"nfs.example.com\"\n");
        let c = load_str(&named, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.nsm_mon_name(), "nfs.example.com");
        let bad = format!("{head}[nlm]\nlock_recovery = \"grace\"\ngrace_seconds = 0\nmon_name = \"a b\"\n");
        let e = errs(&bad);
        assert!(e.iter().any(|m| m.starts_with("6: ") && m.contains("lock_recovery `grace`")), "{e:?}");
        assert!(
            e.iter().any(|m| m.starts_with("7: ") && m.contains("grace_seconds must be between 1 and 3600")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.starts_with("8: ") && m.contains("mon_name")), "{e:?}");
        let e = errs(&format!("{head}[nlm]\ngrace_seconds = 3601\n"));
        assert!(e.iter().any(|m| m.starts_with("6: ") && m.contains("grace_seconds")), "{e:?}");
        let e = errs(&format!("{head}[nlm]\nbogus = 1\n"));
        assert!(e.iter().any(|m| m.starts_with("6: ") && m.contains("bogus")), "{e:?}");
    }

    #[test]
    fn host_cache_ttl_and_netgroups_are_checked() {
        let dir = std::env::temp_dir();
        let export = |clients: &str| {
            format!("[[export]]\nname = \"/e\"\ndir = \"{}\"\nid = 1\nclients = \"{clients}\"\n", dir.display())
        };
        let c = load_str(&export("*.example.test(rw)"), &dir).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.host_cache_ttl, Duration::from_secs(HOST_CACHE_TTL_SECONDS_DEFAULT));
        let src = format!("[server]\nhost_cache_ttl_seconds = 5\n{}", export("a.example.test"));
        let c = load_str(&src, &dir).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.host_cache_ttl, Duration::from_secs(5));
        let e = errs(&format!("[server]\nhost_cache_ttl_seconds = 0\n{}", export("*")));
        assert!(e.iter().any(|m| m.starts_with("2: host_cache_ttl_seconds must be between 1 and 86400")), "{e:?}");
        // `@group` loads only where NSS can answer for netgroups.
        let loaded = load_str(&export("@staff(rw) *(ro)"), &dir);
        match netgroup_support() {
            Ok(()) => assert!(loaded.is_ok()),
            Err(why) => {
                let e = loaded.err().unwrap_or_default();
                assert!(
                    e.iter().any(|m| m.starts_with("5: clients: `@staff`: ") && m.contains(&why.to_string())),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn connection_limits_default_and_are_checked() {
        let dir = std::env::temp_dir();
        let export = format!("[[export]]\nname = \"/e\"\ndir = \"{}\"\nid = 1\n", dir.display());
        let c = load_str(&export, &dir).ok().unwrap();
        assert_eq!(c.server.limits, Limits::default());
        let src = format!("[server]\nidle_timeout_seconds = 5\nconnections_per_address_max = 8\n{export}");
        let c = load_str(&src, &dir).ok().unwrap();
        assert_eq!(c.server.limits.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.server.limits.connections_per_address_max, 8);
        let src = format!("[server]\nidle_timeout_seconds = 0\nconnections_per_address_max = 0\n{export}");
        let errors = load_str(&src, &dir).err().unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("2: idle_timeout_seconds"), "{errors:?}");
        assert!(errors[1].starts_with("3: connections_per_address_max"), "{errors:?}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        let head = "[[export]]\nname = \"/export\"\ndir = \"/tmp\"\nid = 1\n";
        let c = load_str(head, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.metrics_listen, None);
        let on = format!("{head}[metrics]\nlisten = \"127.0.0.1:9633\"\n");
        let c = load_str(&on, Path::new("/")).map_err(|e| e.join("; ")).unwrap();
        assert_eq!(c.server.metrics_listen, Some("127.0.0.1:9633".parse().unwrap()));
        let e = errs(&format!("{head}[metrics]\nlisten = \"127.0.0.1\"\n"));
        assert!(e.iter().any(|m| m.starts_with("6: ") && m.contains("metrics listen")), "{e:?}");
    }

    #[test]
    fn no_export_is_an_error() {
        assert!(errs("[server]\n")[0].contains("no [[export]]"));
    }
}
