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
    /// A single address or a resolved host name.
    Host(String),
    /// Wildcard host name, e.g. `*.example.com`.
    Wildcard(String),
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
}

impl Default for Ports {
    fn default() -> Self {
        Ports { portmap: 111, nfs: 2049, mount: 20048 }
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
}
