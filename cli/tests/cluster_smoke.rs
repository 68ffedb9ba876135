//! Process-level smoke test of the cluster lifecycle: three `hanfs-server run`
//! processes on loopback (storage 1, storage 2, witness 3; the service address
//! a loopback IP only the active node binds), `init` (a second `init` and an
//! `init` on the witness are refused), the leader serves NFS NULL, `status`
//! agrees on every node, `switchover` moves the service, and after `kill -9`
//! of the active node the other storage node serves.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Poll period of every wait.
const POLL_MS: u64 = 100;
/// Bound on probing for free ports.
const PORT_TRIES_MAX: usize = 256;
/// Polls before a wait fails (bounded: 30 s at `POLL_MS`).
const POLLS_MAX: u32 = 300;
/// Bound on one TCP exchange with the service.
const IO_TIMEOUT_MS: u64 = 1_000;
const NFS_PROGRAM: u32 = 100_003;
const NFS_VERSION: u32 = 3;
const STORAGE: [u32; 2] = [1, 2];
const NODES: [u32; 3] = [1, 2, 3];

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        // A failed run keeps its node logs for the reader.
        if std::thread::panicking() {
            eprintln!("cluster smoke test failed; node logs kept in {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Running nodes; every one still running is killed on drop.
struct Nodes {
    children: Vec<(u32, Child)>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Nodes {
    fn kill(&mut self, id: u32) {
        if let Some(pos) = self.children.iter().position(|(n, _)| *n == id) {
            let (_, mut c) = self.children.remove(pos);
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

/// `n` distinct ports free for TCP and UDP on every address (the nodes bind
/// the service ports over both). The probe sockets are held until all are
/// chosen, so no port is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    for _ in 0..PORT_TRIES_MAX {
        if held.len() == n {
            break;
        }
        let Ok(tcp) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)) else { continue };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else { continue };
        if let Ok(udp) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)) {
            held.push((port, tcp, udp));
        }
    }
    assert_eq!(held.len(), n, "free ports");
    held.into_iter().map(|(port, _, _)| port).collect()
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hanfs-server")
}

fn cli(config: &Path, args: &[&str]) -> Output {
    let (cmd, rest) = args.split_first().expect("a command");
    Command::new(bin()).arg(cmd).arg("--config").arg(config).args(rest).output().expect("run hanfs-server")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status_field(config: &Path, key: &str) -> Option<String> {
    let o = cli(config, &["status"]);
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

/// Does `addr` answer an NFSv3 NULL call (accepted, success)?
fn null_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(IO_TIMEOUT_MS)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)));
    let xid: u32 = 0x5eed;
    let words = [xid, 0, 2, NFS_PROGRAM, NFS_VERSION, 0, 0, 0, 0, 0];
    let mut msg: Vec<u8> = Vec::new();
    msg.extend_from_slice(&(0x8000_0000u32 | (words.len() as u32 * 4)).to_be_bytes());
    for w in words {
        msg.extend_from_slice(&w.to_be_bytes());
    }
    if s.write_all(&msg).is_err() {
        return false;
    }
    let mut reply = [0u8; 28];
    if s.read_exact(&mut reply).is_err() {
        return false;
    }
    let word = |i: usize| u32::from_be_bytes([reply[i], reply[i + 1], reply[i + 2], reply[i + 3]]);
    // mark, xid, REPLY, MSG_ACCEPTED, verf flavor, verf len, SUCCESS
    word(4) == xid && word(8) == 1 && word(12) == 0 && word(24) == 0
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..POLLS_MAX {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn three_nodes_init_serve_switchover_and_fail_over() {
    let root = Dir(std::env::temp_dir().join(format!("hanfs-cluster-smoke-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(root.0.join("export")).expect("export dir");
    let secret = root.0.join("secret");
    std::fs::write(&secret, "smoke-test-cluster-secret-0123456789\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // The service address: a loopback IP only the active node binds.
    let service = Ipv4Addr::new(127, 0, 0, 77);
    let ports = free_ports(3 + NODES.len());
    let (nfs, mount, portmap) = (ports[0], ports[1], ports[2]);
    let peers: Vec<(u32, u16, &str)> = NODES
        .iter()
        .zip(&ports[3..])
        .map(|(id, port)| (*id, *port, if *id == 3 { "witness" } else { "storage" }))
        .collect();
    let mut configs = Vec::new();
    let mut nodes = Nodes { children: Vec::new() };
    for id in NODES {
        let mut t = format!(
            "[server]\nlisten = \"{service}\"\nstate_dir = \"{}\"\n[ports]\nportmap = {portmap}\nnfs = {nfs}\nmount = {mount}\n\
             [[export]]\nname = \"/export\"\ndir = \"{}\"\nid = 1\nclients = \"*(rw,insecure)\"\n\
             [cluster]\nname = \"smoke\"\nnode_id = {id}\nsecret_file = \"{}\"\n",
            root.0.join(format!("state{id}")).display(),
            root.0.join("export").display(),
            secret.display()
        );
        for (pid, port, role) in &peers {
            t += &format!("[[cluster.peer]]\nid = {pid}\naddr = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n");
        }
        t += &format!(
            "[hooks]\non_promote = \"echo promote >> {0}\"\non_demote = \"echo demote >> {0}\"\n",
            root.0.join(format!("hooks{id}")).display()
        );
        let path = root.0.join(format!("node{id}.toml"));
        std::fs::write(&path, t).expect("config");
        let check = Command::new(bin()).arg("check-config").arg(&path).output().expect("check-config");
        assert!(check.status.success(), "check-config node {id}: {}", text(&check));
        let log = std::fs::File::create(root.0.join(format!("node{id}.log"))).expect("log file");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .env("HANFS_TEST_FAULTS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        nodes.children.push((id, child));
        configs.push(path);
    }
    let config = |id: u32| configs[(id - 1) as usize].clone();
    let service_nfs = SocketAddr::from((service, nfs));

    // The admin sockets come up with the processes.
    wait_until("admin sockets", || NODES.iter().all(|id| status_field(&config(*id), "node").is_some()));
    let witness_init = cli(&config(3), &["init"]);
    assert!(!witness_init.status.success(), "init on the witness must fail: {}", text(&witness_init));
    let init = cli(&config(1), &["init"]);
    assert!(init.status.success(), "init: {}", text(&init));
    let again = cli(&config(1), &["init"]);
    assert!(!again.status.success(), "a second init must fail: {}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"), "{}", text(&again));

    let serving_leader = |exclude: u32| -> Option<u32> {
        STORAGE.iter().copied().filter(|id| *id != exclude).find(|id| {
            status_field(&config(*id), "serving_here").as_deref() == Some("yes")
                && status_field(&config(*id), "leader").as_deref() == Some(&id.to_string())
        })
    };
    let mut leader = 0;
    wait_until("a serving leader", || {
        leader = serving_leader(0).unwrap_or(0);
        leader != 0 && null_answers(service_nfs)
    });
    // Leader, term and membership agree on every node.
    wait_until("status agreement", || {
        let fields = |key: &str| NODES.iter().map(|id| status_field(&config(*id), key)).collect::<Vec<_>>();
        let same = |v: Vec<Option<String>>| v.iter().all(|x| x.is_some() && *x == v[0]);
        same(fields("leader")) && same(fields("term")) && same(fields("members"))
    });

    // Switchover to the other storage node.
    let other = if leader == 1 { 2 } else { 1 };
    let sw = cli(&config(leader), &["switchover", "--to", &other.to_string()]);
    assert!(sw.status.success(), "switchover: {}", text(&sw));
    wait_until("the switchover target serving", || serving_leader(leader) == Some(other) && null_answers(service_nfs));
    assert_eq!(status_field(&config(leader), "serving_here").as_deref(), Some("no"));
    let hooks = std::fs::read_to_string(root.0.join(format!("hooks{leader}"))).unwrap_or_default();
    assert_eq!(hooks.lines().collect::<Vec<_>>(), ["promote", "demote"], "hooks of the old leader");
    leader = other;

    // kill -9 the active node: the other storage node takes over.
    let survivor = if leader == 1 { 2 } else { 1 };
    nodes.kill(leader);
    let killed = std::time::Instant::now();
    wait_until("the survivor serving", || serving_leader(leader) == Some(survivor) && null_answers(service_nfs));
    // Reported, never asserted (no wall-clock assertions in tests).
    eprintln!(
        "kill -9 of node {leader} to node {survivor} answering NULL: {} ms (poll {POLL_MS} ms)",
        killed.elapsed().as_millis()
    );
    // The last failover is replicated: the witness reports the survivor's promotion too.
    wait_until("the last failover on every live node", || {
        let here = status_field(&config(survivor), "last_failover").unwrap_or_default();
        here.starts_with(&format!("node {survivor} ")) && status_field(&config(3), "last_failover") == Some(here)
    });
    let log = std::fs::read_to_string(root.0.join(format!("node{survivor}.log"))).unwrap_or_default();
    assert!(log.contains("serving"), "survivor log:\n{log}");
    // For the reader of the test output: the survivor's view and its lifecycle lines.
    eprintln!("{}", text(&cli(&config(survivor), &["status"])));
    for line in log.lines().filter(|l| l.contains("serving") || l.contains("demoted") || l.contains("switchover")) {
        eprintln!("node {survivor}: {line}");
    }
}
