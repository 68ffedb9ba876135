//! The process-cluster harness: three real `hanfs-server run --config`
//! processes (storage 1, storage 2, witness 3) with `HANFS_TEST_FAULTS=1`,
//! distinct loopback peer ports, one shared export directory, a state
//! directory and log file per node, a 0600 secret, and one loopback service
//! address per cluster (the modelled VIP: only the active binds its NFS, MOUNT
//! and portmap ports there). It runs `init`, waits (bounded) until `status`
//! names a leader whose listeners answer, kills with SIGKILL, restarts, wipes a
//! node's disk, and kills every process it started on drop (printing each
//! node's log tail when the test failed). Cluster tests hold `SERIAL` so at
//! most three server processes run at once on this 2-core machine.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_types::rpc::opaque_auth;

use crate::nfs3_ops::{Conn, RW_NO_SQUASH};
use crate::util::*;

/// The storage nodes and the witness, by node id.
pub const STORAGE_1: u32 = 1;
pub const STORAGE_2: u32 = 2;
pub const WITNESS: u32 = 3;
pub const NODE_IDS: [u32; 3] = [STORAGE_1, STORAGE_2, WITNESS];

pub const NFS_PROGRAM: u32 = 100_003;
pub const NFS_VERSION: u32 = 3;
pub const MOUNT_PROGRAM: u32 = 100_005;
pub const MOUNT_VERSION: u32 = 3;

/// Interval of every polling loop below.
pub const POLL_MS: u64 = 50;
/// Polls while waiting for a leader to serve (start, failover, switchover): 30 s.
pub const SERVE_POLLS_MAX: u32 = 600;
/// Polls while waiting for a node's admin socket after its start: 20 s.
const ADMIN_POLLS_MAX: u32 = 400;
/// Polls while waiting for a CLI command to exit: 20 s.
const CLI_POLLS_MAX: u32 = 400;
/// Connect / read timeout of a probe of the service address.
pub const PROBE_TIMEOUT_MS: u64 = 500;
/// Time a client mount through the service address may take.
pub const MOUNT_TIMEOUT_MS: u64 = 10_000;
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Bytes of the cluster secret.
const SECRET_BYTES: usize = 32;

/// The portmapper's well-known port, where `showmount` looks.
pub const STANDARD_PORTMAP_PORT: u16 = 111;

/// Cluster tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `N` ports free right now, different from each other and from `taken`.
fn distinct_free_ports<const N: usize>(taken: &[u16]) -> [u16; N] {
    let mut chosen = [0u16; N];
    for i in 0..N {
        chosen[i] = (0..64)
            .map(|_| free_port())
            .find(|p| !taken.contains(p) && !chosen[..i].contains(p))
            .expect("a distinct free port");
    }
    chosen
}

/// A loopback address of its own for each cluster of this test process.
fn service_address() -> Ipv4Addr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Ipv4Addr::new(127, 77, (pid % 250) as u8 + 1, (n % 250) as u8 + 1)
}

/// NFS, MOUNT, NLM, NSM and portmap ports on the service address.
#[derive(Copy, Clone, Debug)]
pub struct ServicePorts {
    pub portmap: u16,
    pub nfs: u16,
    pub mount: u16,
    pub nlm: u16,
    pub nsm: u16,
    /// Where the nodes look for clients' portmappers (NLM callbacks): a
    /// test can run a fake client portmapper there on a loopback address.
    pub callback_portmap: u16,
}

/// One `hanfs-server run` process and its files.
pub struct Node {
    pub id: u32,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// Extra environment of the process (test faults).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open node log");
        let err = log.try_clone().expect("clone log handle");
        let child = Command::new(server_binary())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("HANFS_TEST_FAULTS", "1")
            .env("RUST_LOG", std::env::var("HANFS_CLUSTER_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // A core dump of a test fault's abort, if any, lands in the node's temp dir.
            .current_dir(self.state_dir.parent().unwrap_or(&self.state_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start hanfs-server run");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Three nodes of one cluster, killed on drop.
pub struct Cluster {
    nodes: Vec<Node>,
    pub export: PathBuf,
    pub service: Ipv4Addr,
    pub ports: ServicePorts,
    _root: TempDir,
    _serial: MutexGuard<'static, ()>,
    /// Held by a cluster on port 111 (`tools::PORT_111`), released on drop.
    _port_111: Option<MutexGuard<'static, ()>>,
}

impl Cluster {
    /// Write the configs, start the three nodes, `init` on storage 1 and wait
    /// for a leader serving.
    pub fn start(label: &str) -> Cluster {
        Cluster::start_with(label, false, &[], "")
    }

    /// Like `start`, with `extra` appended to every node's config (e.g. an
    /// `[nlm]` table).
    pub fn start_with_config(label: &str, extra: &str) -> Cluster {
        Cluster::start_with(label, false, &[], extra)
    }

    /// Like `start`, with extra environment for every node (test faults).
    pub fn start_with_env(label: &str, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(label, false, env, "")
    }

    /// Like `start`, with the portmapper on port 111 of the service address
    /// (for `showmount`); panics with the reason if that port cannot be bound.
    /// Holds `tools::PORT_111` until dropped, so no other port-111 test overlaps.
    pub fn start_portmap_111(label: &str) -> Cluster {
        Cluster::start_with(label, true, &[], "")
    }

    /// Like `start`, with each node's peer address as the other nodes (and
    /// so the membership `init` records) see it given by `route(node id, its
    /// real peer port)`; every node still listens on its real port. A test
    /// can put a proxy in front of every node's peer port this way.
    pub fn start_routed(label: &str, route: &mut dyn FnMut(u32, u16) -> u16) -> Cluster {
        Cluster::start_routed_with(label, false, &[], "", route)
    }

    fn start_with(label: &str, portmap_111: bool, env: &[(&str, &str)], extra: &str) -> Cluster {
        Cluster::start_routed_with(label, portmap_111, env, extra, &mut |_, port| port)
    }

    fn start_routed_with(
        label: &str,
        portmap_111: bool,
        env: &[(&str, &str)],
        extra: &str,
        route: &mut dyn FnMut(u32, u16) -> u16,
    ) -> Cluster {
        init_tracing();
        let guard = serial();
        let service = service_address();
        let port_111 = portmap_111.then(|| crate::tools::PORT_111.lock().unwrap_or_else(|p| p.into_inner()));
        let portmap = if portmap_111 {
            crate::tools::require_port_111_free(service);
            STANDARD_PORTMAP_PORT
        } else {
            free_port()
        };
        let root = tempdir(&format!("cluster-{label}"));
        let export = root.path().join("export");
        std::fs::create_dir_all(&export).expect("export dir");
        let secret = root.path().join("secret");
        let bytes: String =
            (0..SECRET_BYTES).map(|i| char::from(b'a' + ((i * 7 + std::process::id() as usize) % 26) as u8)).collect();
        std::fs::write(&secret, bytes).expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
        // Distinct ports: a config naming one port twice is refused.
        let [nfs, mount, nlm, nsm, callback_portmap] = distinct_free_ports(&[portmap]);
        let ports = ServicePorts { portmap, nfs, mount, nlm, nsm, callback_portmap };
        let peers: Vec<(u32, u16, &str)> = vec![
            (STORAGE_1, free_port(), "storage"),
            (STORAGE_2, free_port(), "storage"),
            (WITNESS, free_port(), "witness"),
        ];
        let advertised: Vec<u16> = peers.iter().map(|(id, port, _)| route(*id, *port)).collect();
        let mut nodes = Vec::new();
        for (id, _, _) in &peers {
            // A node listens on its own real port and reaches the others where they are advertised.
            let seen: Vec<(u32, u16, &str)> = peers
                .iter()
                .zip(&advertised)
                .map(|(&(p, real, role), &routed)| (p, if p == *id { real } else { routed }, role))
                .collect();
            let dir = root.path().join(format!("node{id}"));
            let state_dir = dir.join("state");
            std::fs::create_dir_all(&state_dir).expect("state dir");
            let config = dir.join("hanfs.toml");
            std::fs::write(
                &config,
                config_text(*id, &format!("test-{label}"), service, ports, &state_dir, &export, &secret, &seen) + extra,
            )
            .expect("write config");
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            nodes.push(Node { id: *id, config, state_dir, log: dir.join("node.log"), env, child: None });
        }
        let mut cluster = Cluster { nodes, export, service, ports, _root: root, _serial: guard, _port_111: port_111 };
        for id in NODE_IDS {
            cluster.node(id).spawn();
        }
        for id in NODE_IDS {
            cluster.wait_admin(id);
        }
        let out = cluster.cli(STORAGE_1, &["init"]);
        assert!(out.status.success(), "init failed: {}", show(&out));
        cluster.wait_serving(&[]);
        cluster
    }

    pub fn node(&mut self, id: u32) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The other storage node.
    pub fn other_storage(id: u32) -> u32 {
        if id == STORAGE_1 {
            STORAGE_2
        } else {
            STORAGE_1
        }
    }

    /// Wait until node `id`'s admin socket takes connections (after a kill -9
    /// the old socket file is still there until the new process replaces it).
    fn wait_admin(&mut self, id: u32) {
        let sock = self.node(id).state_dir.join("admin.sock");
        for _ in 0..ADMIN_POLLS_MAX {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            assert!(self.node(id).running(), "node {id} exited at start:\n{}", self.node(id).log_text());
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        panic!("node {id}: no admin socket after start");
    }

    /// Run `hanfs-server <args> --config <node's config>` (bounded).
    pub fn cli(&mut self, id: u32, args: &[&str]) -> Output {
        self.cli_with(id, args, &[])
    }

    /// Run `hanfs-server <command> --config <node's config> <rest>` (bounded),
    /// e.g. `debug faults --config FILE block 2` as the contract spells it.
    pub fn cli_with(&mut self, id: u32, command: &[&str], rest: &[&str]) -> Output {
        let config = self.node(id).config.clone();
        let args: Vec<&str> = command.iter().chain(rest).copied().collect();
        let mut cmd = Command::new(server_binary());
        cmd.args(command).arg("--config").arg(&config).args(rest);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hanfs-server cli");
        for _ in 0..CLI_POLLS_MAX {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().expect("cli output");
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("cli output");
        panic!("`hanfs-server {}` on node {id} did not exit: {}", args.join(" "), show(&out));
    }

    /// `status` of node `id` as `key: value` pairs (keys lower-case), or None if it failed.
    pub fn status(&mut self, id: u32) -> Option<BTreeMap<String, String>> {
        if !self.node(id).running() {
            return None;
        }
        let out = self.cli(id, &["status"]);
        if !out.status.success() {
            return None;
        }
        Some(parse_status(&String::from_utf8_lossy(&out.stdout)))
    }

    pub fn status_text(&mut self, id: u32) -> String {
        show(&self.cli(id, &["status"]))
    }

    /// The leader named by node `id`'s status.
    pub fn leader_seen_by(&mut self, id: u32) -> Option<u32> {
        self.status(id).and_then(|s| s.get("leader").and_then(|v| first_number(v))).and_then(|n| u32::try_from(n).ok())
    }

    /// Wait (bounded) until a running storage node outside `exclude` is leader
    /// by its own status and the service address answers NFS and MOUNT NULL.
    pub fn wait_serving(&mut self, exclude: &[u32]) -> u32 {
        for _ in 0..SERVE_POLLS_MAX {
            for id in [STORAGE_1, STORAGE_2] {
                if exclude.contains(&id) || !self.node(id).running() {
                    continue;
                }
                let Some(st) = self.status(id) else { continue };
                let leader = st.get("leader").and_then(|v| first_number(v));
                // `serving_here` when the binary reports it; the wire probes decide anyway.
                let serving = st.get("serving_here").is_none_or(|v| v == "yes");
                if leader == Some(u64::from(id))
                    && serving
                    && self.null_answers(self.ports.nfs, NFS_PROGRAM, NFS_VERSION)
                    && self.null_answers(self.ports.mount, MOUNT_PROGRAM, MOUNT_VERSION)
                {
                    return id;
                }
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let mut report = String::new();
        for id in NODE_IDS {
            if self.node(id).running() {
                report += &format!("node {id} status:\n{}\n", self.status_text(id));
            }
        }
        panic!("no leader serving on {} (excluded {exclude:?}):\n{report}", self.service);
    }

    /// Does the service address answer a NULL call on `port` right now?
    pub fn null_answers(&self, port: u16, prog: u32, vers: u32) -> bool {
        let Some(mut s) = self.probe_connect(port) else { return false };
        if s.write_all(&frame(&call_msg(0x0123_4567, prog, vers, 0, CRED_NONE, &[]))).is_err() {
            return false;
        }
        read_record(&mut s).is_some_and(|r| matches!(parse_reply(&r), RpcReply::Accepted { stat: SUCCESS, .. }))
    }

    /// A TCP connection to the service address with short timeouts.
    pub fn probe_connect(&self, port: u16) -> Option<TcpStream> {
        let addr = SocketAddr::from((self.service, port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(PROBE_TIMEOUT_MS)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(PROBE_TIMEOUT_MS))).ok()?;
        s.set_write_timeout(Some(Duration::from_millis(PROBE_TIMEOUT_MS))).ok()?;
        Some(s)
    }

    /// A TCP connection to the service address for raw calls (IO_TIMEOUT_MS timeouts).
    pub fn raw_connect(&self, port: u16) -> TcpStream {
        let s = TcpStream::connect(SocketAddr::from((self.service, port))).expect("connect to the service address");
        s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
        s.set_write_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
        s
    }

    /// Mount `/export` through the service address as root.
    pub async fn connect(&self) -> Conn {
        let b = Nfs3ConnectionBuilder::new(TokioConnector, self.service.to_string(), EXPORT_NAME)
            .portmapper_port(self.ports.portmap)
            .mount_port(self.ports.mount)
            .nfs3_port(self.ports.nfs)
            .credential(auth_sys(0, 0, &[]));
        match tokio::time::timeout(Duration::from_millis(MOUNT_TIMEOUT_MS), b.mount()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("mount {}:/export: {e:?}", self.service),
            Err(_) => panic!("mount {}:/export timed out", self.service),
        }
    }

    /// MOUNT DUMP through the service address: (host, directory) rows.
    pub async fn mount_dump(&self) -> Vec<(String, String)> {
        let stream = tokio::net::TcpStream::connect(SocketAddr::from((self.service, self.ports.mount)))
            .await
            .expect("connect MOUNT");
        let mut c =
            nfs3_client::MountClient::new_with_auth(TokioIo::new(stream), auth_sys(0, 0, &[]), opaque_auth::default());
        let list = tokio::time::timeout(Duration::from_millis(MOUNT_TIMEOUT_MS), c.dump())
            .await
            .expect("DUMP timed out")
            .expect("DUMP");
        list.into_inner()
            .into_iter()
            .map(|b| {
                (
                    String::from_utf8_lossy(&b.ml_hostname.0 .0).into_owned(),
                    String::from_utf8_lossy(&b.ml_directory.0 .0).into_owned(),
                )
            })
            .collect()
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill9(&mut self, id: u32) {
        self.node(id).kill9();
    }

    /// Start node `id` again on its (possibly wiped) state directory.
    pub fn restart(&mut self, id: u32) {
        self.node(id).spawn();
        self.wait_admin(id);
    }

    /// Empty node `id`'s state directory (the node must be stopped).
    pub fn wipe(&mut self, id: u32) {
        let node = self.node(id);
        assert!(node.child.is_none(), "wipe of a running node {id}");
        let dir = node.state_dir.clone();
        std::fs::remove_dir_all(&dir).expect("remove state dir");
        std::fs::create_dir_all(&dir).expect("recreate state dir");
    }

    /// `debug faults <args>` on node `id`, asserting success.
    pub fn faults(&mut self, id: u32, args: &[&str]) {
        let out = self.cli_with(id, &["debug", "faults"], args);
        assert!(out.status.success(), "debug faults {args:?} on node {id}: {}", show(&out));
    }

    /// Node `id`'s applied log index by its own status.
    pub fn applied(&mut self, id: u32) -> Option<u64> {
        let s = self.status(id)?;
        applied_index(&s)
    }

    /// Node `id`'s Raft term by its own status.
    pub fn term(&mut self, id: u32) -> Option<u64> {
        self.status(id).and_then(|s| s.get("term").and_then(|t| first_number(t)))
    }

    /// Wait (bounded) until node `id` has applied at least what `leader` has.
    pub fn wait_caught_up(&mut self, id: u32, leader: u32) -> (u64, u64) {
        let mut last = (None, None);
        for _ in 0..SERVE_POLLS_MAX {
            let target = self.applied(leader);
            let mine = self.applied(id);
            if let (Some(t), Some(m)) = (target, mine) {
                if m >= t {
                    return (m, t);
                }
            }
            last = (mine, target);
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        panic!(
            "node {id} did not catch up with leader {leader} (applied {:?} vs {:?}):\n{}\n{}",
            last.0,
            last.1,
            self.status_text(id),
            self.status_text(leader)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let text = n.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(LOG_TAIL_LINES);
                println!("---- node {} log (last {} lines) ----", n.id, lines.len() - from);
                for l in lines.iter().skip(from) {
                    println!("{l}");
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn config_text(
    id: u32,
    name: &str,
    service: Ipv4Addr,
    ports: ServicePorts,
    state_dir: &Path,
    export: &Path,
    secret: &Path,
    peers: &[(u32, u16, &str)],
) -> String {
    let mut t = String::new();
    t += &format!("[server]\nlisten = \"{service}\"\nstate_dir = \"{}\"\n\n", state_dir.display());
    t += &format!(
        "[ports]\nportmap = {}\nnfs = {}\nmount = {}\nnlm = {}\nnsm = {}\ncallback_portmap = {}\n\n",
        ports.portmap, ports.nfs, ports.mount, ports.nlm, ports.nsm, ports.callback_portmap
    );
    t += &format!(
        "[[export]]\nname = \"{EXPORT_NAME}\"\ndir = \"{}\"\nid = {EXPORT_ID}\nclients = \"{RW_NO_SQUASH}\"\n\n",
        export.display()
    );
    t += &format!("[cluster]\nname = \"{name}\"\nnode_id = {id}\nsecret_file = \"{}\"\n\n", secret.display());
    for (peer, port, role) in peers {
        t += &format!("[[cluster.peer]]\nid = {peer}\naddr = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n\n");
    }
    t
}

/// `key: value` lines; keys trimmed and lower-cased, first occurrence wins.
pub fn parse_status(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            m.entry(k.trim().to_ascii_lowercase()).or_insert_with(|| v.trim().to_string());
        }
    }
    m
}

/// The first unsigned integer in `v` ("2", "node 2", "2 (storage)").
pub fn first_number(v: &str) -> Option<u64> {
    v.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).and_then(|s| s.parse().ok())
}

/// This node's applied index: the `applied`/`applied_index`/`last_applied`
/// key, else the first key that mentions "applied".
pub fn applied_index(s: &BTreeMap<String, String>) -> Option<u64> {
    for k in ["applied", "applied_index", "applied index", "last_applied", "last applied"] {
        if let Some(n) = s.get(k).and_then(|v| first_number(v)) {
            return Some(n);
        }
    }
    s.iter().find(|(k, _)| k.contains("applied")).and_then(|(_, v)| first_number(v))
}

/// Exit status, stdout and stderr of a command, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "{:?}\nstdout:\n{}stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Wait (bounded by `IO_TIMEOUT_MS`) until `s` has bytes to read, without
/// consuming them: the server has answered, so its commit is done.
pub fn wait_readable(s: &TcpStream) -> bool {
    let mut b = [0u8; 4];
    let _ = s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)));
    matches!(s.peek(&mut b), Ok(n) if n > 0)
}
