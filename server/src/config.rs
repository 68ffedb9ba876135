//! Validated server configuration. Built by `cli` (from flags or TOML); the
//! server never sees clap or TOML types.

use std::net::IpAddr;
use std::path::PathBuf;

/// One exported directory.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// Path clients mount (e.g. "/export"), as shown by `showmount -e`.
    pub name: String,
    /// Directory on the shared filesystem.
    pub dir: PathBuf,
    /// Cluster-assigned export id (the fsid in attributes, the export id in handles).
    pub export_id: u32,
    /// exports(5)-style client list: (pattern, options), first match wins.
    pub clients: Vec<ClientRule>,
}

#[derive(Clone, Debug)]
pub struct ClientRule {
    pub pattern: ClientPattern,
    pub options: ExportOptions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPattern {
    /// `*`
    Any,
    /// A single address, or a host name (lowercase): matches the client whose
    /// verified name it is or whose address it resolves to (`hostnames`).
    Host(String),
    /// Wildcard host name (lowercase), e.g. `*.example.com`, matched against
    /// the client's verified name.
    Wildcard(String),
    /// `@group`: an NSS netgroup (the name without its `@`).
    Netgroup(String),
    /// Network in CIDR form.
    Cidr { addr: IpAddr, prefix: u8 },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Squash {
    /// uid/gid 0 become anonuid/anongid (default).
    Root,
    /// Nothing is squashed.
    None,
    /// Every uid/gid becomes anonuid/anongid.
    All,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    pub read_only: bool,
    pub squash: Squash,
    pub anonuid: u32,
    pub anongid: u32,
    /// `sync` (default): UNSTABLE writes are still acknowledged as UNSTABLE, but
    /// metadata operations are fsynced before replying. `async` skips those fsyncs.
    pub sync: bool,
    /// `secure` (default): requests must come from a port below 1024.
    pub secure: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            // exports(5): `ro` unless the client spec says `rw`.
            read_only: true,
            squash: Squash::Root,
            anonuid: 65534,
            anongid: 65534,
            sync: true,
            secure: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ports {
    pub portmap: u16,
    pub nfs: u16,
    pub mount: u16,
    /// NLM (TCP and UDP); 0: an ephemeral port free for both, found through
    /// the portmapper (as knfsd's lockd does by default).
    pub nlm: u16,
    /// NSM (TCP and UDP); 0 as for `nlm`.
    pub nsm: u16,
    /// Where the *clients'* portmappers listen, asked for the client's NLM
    /// port before a GRANTED_MSG or `_RES` callback. Always 111 in service;
    /// a test knob (not in the config file) so that tests can run a fake
    /// client portmapper on loopback without owning port 111.
    pub callback_portmap: u16,
}

/// The port every portmapper listens on (RFC 1833).
pub const PORTMAP_PORT: u16 = 111;

impl Default for Ports {
    fn default() -> Self {
        Ports { portmap: PORTMAP_PORT, nfs: 2049, mount: 20048, nlm: 0, nsm: 0, callback_portmap: PORTMAP_PORT }
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: IpAddr,
    pub ports: Ports,
    pub exports: Vec<ExportConfig>,
    pub state_dir: PathBuf,
    /// Largest RPC record accepted, in bytes.
    pub record_bytes_max: u32,
    /// `[cluster]`, `[vip]`, `[hooks]`; `None`: a single node on `LocalCommit`.
    pub cluster: Option<ClusterSetup>,
    /// `[nlm]`: how locks are recovered when a node starts serving.
    pub nlm: NlmConfig,
    /// `[metrics] listen`: where `GET /metrics` is served (Prometheus text
    /// format); `None` (the default): nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The transport's connection and memory limits (`[server]
    /// idle_timeout_seconds` and `connections_per_address_max`; the rest are
    /// the defaults of `rpc::limits`).
    pub limits: crate::rpc::limits::Limits,
    /// `[server] host_cache_ttl_seconds`: how long a client's looked-up host
    /// names (and the rules' names' addresses) are trusted
    /// (`hostnames::HOST_CACHE_TTL_SECONDS_DEFAULT`).
    pub host_cache_ttl: std::time::Duration,
}

impl ServerConfig {
    /// The name this server announces in SM_NOTIFY (`NlmConfig::mon_name`),
    /// else the VIP address, else the listen address unless it is
    /// unspecified, else this host's name. Clients monitor a server by the
    /// name they mounted it with (the address, as in `mount vip:/export`).
    pub fn nsm_mon_name(&self) -> String {
        if let Some(name) = &self.nlm.mon_name {
            return name.clone();
        }
        let vip = self.cluster.as_ref().and_then(|c| c.vip.as_ref()).map(|v| v.addr);
        match vip.or_else(|| (!self.listen.is_unspecified()).then_some(self.listen)) {
            Some(addr) => addr.to_string(),
            None => crate::nlm::callback::hostname(),
        }
    }
}

/// What a node does about client locks when it starts serving (`[nlm]
/// lock_recovery`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum LockRecovery {
    /// The replicated table is served as it is: no grace period, no
    /// SM_NOTIFY, the NSM state number unchanged (the default).
    #[default]
    Transparent,
    /// Classic NSM recovery, as knfsd after a restart: the NSM state goes up
    /// by 2, every lock host gets SM_NOTIFY, and for `grace_seconds` only
    /// reclaims are granted (lifted early once every host has reclaimed or
    /// holds nothing).
    Notify,
}

/// Default grace period of classic recovery (knfsd's and sm-notify's 90 s).
pub const GRACE_SECONDS_DEFAULT: u64 = 90;
/// Accepted `grace_seconds` range.
pub const GRACE_SECONDS_MIN: u64 = 1;
pub const GRACE_SECONDS_MAX: u64 = 3600;

/// `[nlm]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NlmConfig {
    pub lock_recovery: LockRecovery,
    /// Grace period of `LockRecovery::Notify`, in seconds.
    pub grace_seconds: u64,
    /// Our name in SM_NOTIFY; `None`: see `ServerConfig::nsm_mon_name`.
    pub mon_name: Option<String>,
}

impl Default for NlmConfig {
    fn default() -> Self {
        NlmConfig { lock_recovery: LockRecovery::Transparent, grace_seconds: GRACE_SECONDS_DEFAULT, mon_name: None }
    }
}

/// Bound on one hook command (`on_promote` / `on_demote`) unless configured.
pub const HOOK_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// One cluster member, from `[[cluster.peer]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub id: u64,
    /// Raft peer transport address (`host:port`).
    pub addr: std::net::SocketAddr,
    pub role: hanfs_raft::types::Role,
}

/// `[cluster]`: this node is one member of a Raft cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    /// This node's id; `peers` has exactly one entry with it.
    pub node_id: u64,
    /// File holding the cluster secret (mode 0600 or stricter).
    pub secret_file: PathBuf,
    /// Every member, this node included.
    pub peers: Vec<PeerConfig>,
    /// Heartbeat, election and lease timings, derived from and checked
    /// against `failure_detection_ms` (`hanfs_raft::timing::Timing::derive`).
    pub timing: hanfs_raft::timing::Timing,
}

impl ClusterConfig {
    /// This node's own `[[cluster.peer]]` entry.
    pub fn own(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }
}

/// `[hooks]`: shell commands run (`sh -c`) around promotion and demotion.
#[derive(Clone, Debug)]
pub struct HooksConfig {
    pub on_promote: Option<String>,
    pub on_demote: Option<String>,
    /// Bound on each hook run; a hook still running then is killed and failed.
    pub timeout_ms: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig { on_promote: None, on_demote: None, timeout_ms: HOOK_TIMEOUT_MS_DEFAULT }
    }
}

/// Everything that makes a node a cluster member rather than a single node.
#[derive(Clone, Debug)]
pub struct ClusterSetup {
    pub cluster: ClusterConfig,
    /// `[vip]`: the address the active node claims; `None` claims nothing.
    pub vip: Option<crate::vip::VipConfig>,
    pub hooks: HooksConfig,
}
