//! Stage one of argument handling: clap structures that mirror the command
//! line. `config::load_*` turns them into a validated `ServerConfig`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default state directory for the quick start (`run --export`) and for
/// `exports`/`clients`/`locks` without `--state-dir` or `--config`.
pub const QUICK_STATE_DIR: &str = "./hanfs-state";
/// Default client list for the quick start.
pub const QUICK_CLIENTS: &str = "*(rw,root_squash,sync,secure)";

#[derive(Parser, Debug)]
#[command(
    name = "hanfs-server",
    version,
    about = "Highly available NFSv3 server (NFSv3, MOUNT, NLM, NSM, portmap)",
    long_about = "hanfs serves NFSv3 with MOUNT, NLM locks, NSM and a portmapper. Every piece of \
                  client-visible state apart from file data (the mount table, the lock table, the \
                  duplicate-request cache, the write verifier epoch, the key that authenticates \
                  file handles) is committed to a replicated log before a reply depends on it.\n\n\
                  Quick start (one node, no config file):\n    \
                  hanfs-server run --export ./data\n    \
                  mount -t nfs SERVER:/export /mnt          # on a client\n\n\
                  Like knfsd, root on the client is squashed to uid/gid 65534 unless the client \
                  spec says no_root_squash, and `secure` (the default) wants clients on ports \
                  below 1024, as the Linux kernel client uses.\n\n\
                  Logging: RUST_LOG (e.g. RUST_LOG=hanfs_server=debug), default `info`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve NFS: either one directory (--export) or everything in a config file (--config).
    Run(RunArgs),
    /// Check a config file and report every problem with its line number.
    #[command(long_about = "Check a config file and report every problem with its line number.\n\n\
        Example:\n\n\
        [server]\n\
        listen = \"0.0.0.0\"             # default\n\
        state_dir = \"/var/lib/hanfs\"   # default; relative paths are relative to the file\n\
        log_format = \"text\"            # or \"json\"\n\
        record_bytes_max = 1114112     # largest RPC record; default 1 MiB + 64 KiB\n\
        idle_timeout_seconds = 360     # default; idle TCP connections are closed\n\
        connections_per_address_max = 64  # default; TCP connections per client address\n\
        host_cache_ttl_seconds = 600   # default; clients' host names (name, *.domain, @netgroup rules) are cached this long\n\n\
        [metrics]                      # optional; off by default\n\
        listen = \"127.0.0.1:9633\"     # GET /metrics, Prometheus text format\n\n\
        [ports]                        # defaults below\n\
        portmap = 111\n\
        nfs = 2049\n\
        mount = 20048\n\n\
        [[export]]                     # one per exported directory\n\
        name = \"/export\"               # the path clients mount\n\
        dir = \"/srv/nfs/export\"        # must exist; in a cluster it may be absent until on_promote mounts it\n\
        id = 1                         # fsid; the same on every node\n\
        clients = \"10.0.0.0/8(rw) *(ro)\"  # exports(5) syntax\n\n\
        The [[export]] list seeds the replicated export table when a node first serves; after that \
        the table is what every node serves (`hanfs-server exports` lists it, `exports add|update|\
        remove` change it live, `exports reload --config FILE` applies this list like `exportfs -ra`). \
        check-config compares the list with the table of the running node and warns about each \
        difference.\n\n\
        A cluster member adds [cluster] (name, node_id, secret_file, failure_detection_ms: \
        default 1200, heartbeat, election and lease timings derive from it), one [[cluster.peer]] \
        (id, addr, role = storage|witness) per member including itself, and optionally \
        [vip] (interface, addr, prefix, device) and [hooks] (on_promote, on_demote, timeout_ms); \
        see README.md, \"Running a cluster\".")]
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
    /// List the exports (asks the running server, else reads the state), or
    /// change them live on every node: add, update, remove, reload.
    #[command(long_about = "List the exports (asks the running server, else reads the state), or \
        change them live with a subcommand.\n\n\
        Exports are replicated state: a change made on any node is committed through the cluster, \
        served by the active node at once (knfsd's `exportfs`), and served the same by every node \
        after a failover. The config's [[export]] list only seeds the table when the cluster (or a \
        single node) first serves; after that `exports reload --config FILE` applies a file's list \
        the way `exportfs -ra` applies /etc/exports.\n\n\
        Listing: one line per export, `ID NAME DIR CLIENTS`, or `ID NAME (removed)` for a removed \
        one (its id is never given to another name).")]
    Exports(ExportsArgs),
    /// List the mounts recorded in the state, like `showmount -a` (rmtab).
    Clients(StateArgs),
    /// List NLM locks (held, waiting, GRANTED callbacks pending), lock hosts
    /// and NSM monitors from the replicated lock table (on any node).
    Locks(StateArgs),
    /// Per-procedure call counts of the serving node, in `nfsstat -s`'s
    /// layout (NFS v3, MOUNT, NLM, NSM, portmap). On a cluster node that does
    /// not serve, the leader's; the first line says which node answered.
    Stats(StateArgs),
    /// Cluster: bootstrap the membership from the config's [[cluster.peer]]
    /// entries. Run once, on one storage node, after every node runs.
    Init(StateArgs),
    /// Cluster: nodes, roles, term, leader, commit/applied index, lag, VIP,
    /// exports, client count, last failover (asks the running node, which
    /// asks the leader: the same cluster part on every node).
    Status(StatusArgs),
    /// Cluster: graceful move of the service to the other storage node (on
    /// any node; a follower forwards it to the leader): drain, move
    /// leadership, move the VIP.
    Switchover(SwitchoverArgs),
    /// Write the man pages (hanfs-server.8, hanfs.toml.5) or the shell
    /// completions (bash, zsh, fish) into DIR, generated from this binary's
    /// own command-line definitions (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: GenerateWhat,
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
    /// Test-only tools (refused unless the node runs with HANFS_TEST_FAULTS=1).
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

#[derive(Args, Debug)]
pub struct ExportsArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub action: Option<ExportsAction>,
}

#[derive(Subcommand, Debug)]
pub enum ExportsAction {
    /// Export a directory now, like an /etc/exports line and `exportfs`:
    /// `exports add /srv/data '10.0.0.0/8(rw) *(ro)'`.
    Add(ExportsAddArgs),
    /// Change an export's client list and/or directory now (its clients keep their mounts and handles).
    Update(ExportsUpdateArgs),
    /// Stop exporting NAME now, like `exportfs -u`: new mounts are refused
    /// and its clients' file handles get STALE. Its NLM locks stay in the
    /// lock table until their clients release them (a client reboot frees
    /// them) or the export is added again.
    Remove(ExportsRemoveArgs),
    /// Apply a config file's [[export]] list, like `exportfs -ra`: exports
    /// not in the table are added, changed ones updated, and exports not in
    /// the file removed. Ids come from the file and must match the table's.
    Reload(ExportsReloadArgs),
}

#[derive(Args, Debug)]
pub struct ExportsAddArgs {
    /// The path clients mount (`mount SERVER:NAME /mnt`); also the directory unless --dir is given.
    pub name: String,
    /// Who may mount, in exports(5) syntax (several words are joined with blanks):
    /// `*`, host, *.domain, a.b.c.d/nn, each with options rw|ro,
    /// root_squash|no_root_squash|all_squash, anonuid=N, anongid=N, sync|async, secure|insecure.
    #[arg(required = true, num_args = 1.., value_name = "CLIENTS")]
    pub clients: Vec<String>,
    /// The directory to export, if not NAME (must exist on the active node; relative: to the current directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Export id (fsid) [default: the name's old id if it was exported before, else the next id never used].
    #[arg(long, value_name = "N")]
    pub id: Option<u32>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct ExportsUpdateArgs {
    /// The export's name.
    pub name: String,
    /// The new client list, in exports(5) syntax (as for `add`).
    #[arg(value_name = "CLIENTS")]
    pub clients: Vec<String>,
    /// The new directory: the same filesystem root as before (e.g. mounted
    /// elsewhere now); another directory needs a new export name.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct ExportsRemoveArgs {
    /// The export's name.
    pub name: String,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct ExportsReloadArgs {
    /// TOML config file whose [[export]] list to apply (its state directory is asked unless --state-dir is given).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// State directory of the node to ask.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Node id to hand over to (must be the other storage node).
    #[arg(long, value_name = "NODE")]
    pub to: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Drop Raft traffic to/from peers on the running node.
    Faults {
        #[command(flatten)]
        state: StateArgs,
        #[command(subcommand)]
        action: FaultAction,
    },
    /// Build a Raft snapshot now and purge the log up to it.
    Snapshot {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum FaultAction {
    /// Drop all traffic with this peer.
    Block { peer: u64 },
    /// Restore traffic with this peer.
    Unblock { peer: u64 },
    /// Answer every AppendEntries this many milliseconds late (0: stop), as
    /// a follower whose log disk is slow.
    SlowAppends { ms: u64 },
    /// Restore traffic with every peer and stop slowing answers.
    Heal,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML config file (see check-config). Conflicts with --export.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["export", "name", "clients", "export_id"])]
    pub config: Option<PathBuf>,

    /// Quick start: export this directory.
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub export: Option<PathBuf>,

    /// Path clients mount (`mount -t nfs SERVER:/export /mnt`).
    #[arg(long, value_name = "PATH", default_value = "/export")]
    pub name: Option<String>,

    /// Who may mount, in exports(5) syntax: `*`, host, a.b.c.d/nn, with options
    /// rw|ro, root_squash|no_root_squash|all_squash, anonuid=N, anongid=N,
    /// sync|async, secure|insecure. Example: '10.0.0.0/8(rw) *(ro)'.
    #[arg(long, value_name = "SPEC", default_value = QUICK_CLIENTS)]
    pub clients: Option<String>,

    /// Export id (fsid): must be the same on every node serving this export.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub export_id: u32,

    /// Address to listen on [default: 0.0.0.0, every IPv4 address; use :: for IPv6].
    #[arg(long, value_name = "IP")]
    pub listen: Option<IpAddr>,

    /// Where the replicated state lives [quick-start default: ./hanfs-state].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Portmapper port [default: 111]. If a system rpcbind already owns it,
    /// hanfs registers its programs there instead.
    #[arg(long, value_name = "N")]
    pub portmap_port: Option<u16>,

    /// NFS port [default: 2049].
    #[arg(long, value_name = "N")]
    pub nfs_port: Option<u16>,

    /// MOUNT port [default: 20048].
    #[arg(long, value_name = "N")]
    pub mount_port: Option<u16>,

    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Serve Prometheus metrics (GET /metrics) on this address [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenerateWhat {
    Man,
    Completions,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Print one JSON object (each `key: value` line a string member; a key
    /// that repeats becomes an array), for monitoring scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StateArgs {
    /// State directory of the node to ask [default: ./hanfs-state].
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
    /// Take the state directory from this config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
