//! Client lists by host name, wildcard and netgroup, against the system's
//! resolver (glibc NSS), with the real binary in a network namespace of this
//! test's own and its own /etc files: `ip netns exec NS` gives the server a
//! mount namespace, where an overlay over /etc puts this test's `hosts`,
//! `host.conf`, `nsswitch.conf` (`hosts: files`, `netgroup: files`: no DNS)
//! and `netgroup` over the system's (an overlay rather than `ip netns exec`'s
//! own /etc/netns bind mounts, which need each file to exist in /etc already,
//! and /etc/netgroup usually does not). Nothing of the host's /etc changes.
//!
//! Clients are UDP sockets bound to 127.0.0.2, .3, ... inside the namespace
//! (a thread that `setns`es into it, as `vip.rs` explains), calling MOUNT's
//! MNT and NFS GETATTR. Needs root and iproute2 (and overlayfs); fails with
//! the reason otherwise.

use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::io::Write;

use crate::util::{
    auth_sys_body, call_msg, frame, in_ns, parse_reply, put_opaque, read_record, server_binary, tempdir, words,
    RpcReply, SUCCESS,
};

const NFS_PORT: u16 = 2049;
const MOUNT_PORT: u16 = 20048;
const MOUNT_PROGRAM: u32 = 100_005;
const NFS_PROGRAM: u32 = 100_003;
const MNT3ERR_ACCES: u32 = 13;
const NFS3ERR_ACCES: u32 = 13;
/// A reply is waited for this long per try.
const REPLY_WAIT: Duration = Duration::from_millis(2000);
/// Polls for the server to answer, and for the cache to follow the hosts file.
const POLLS_MAX: u32 = 300;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `multi off`: a name's forward lookup gives its first line's address only,
/// so 127.0.0.5's reverse name (liar) resolves to 127.0.0.6, not back to it,
/// as a PTR record disagreeing with its A record would.
const HOSTS: &str = "127.0.0.1 localhost
127.0.0.2 named.example.test
127.0.0.3 a.example.test
127.0.0.4 b.other.test
127.0.0.6 liar.example.test
127.0.0.5 liar.example.test
127.0.0.7 m1.other.test
127.0.0.8 mover.example.test
127.0.0.9 rev.example.test fwd.example.test
";

const EXPORTS: [(&str, &str); 4] = [
    // fwd.example.test is 127.0.0.9's alias: matched by its forward lookup.
    ("/named", "named.example.test(insecure) fwd.example.test(insecure)"),
    ("/wild", "*.example.test(insecure)"),
    ("/group", "@trusted(insecure)"),
    ("/mover", "mover.example.test(insecure)"),
];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The namespace (deleted on drop) and the server in it (killed on drop,
/// first).
struct Setup {
    server: Child,
    ns: String,
    log: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let out = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("could not delete network namespace {}: {out:?}", self.ns);
        }
    }
}

impl Setup {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's /etc/hosts, through its own mount namespace (the overlay).
    fn hosts_path(&self) -> String {
        format!("/proc/{}/root/etc/hosts", self.server.id())
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.ns, f)
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(out.status.success(), "ip {args:?} (needs root): {}", String::from_utf8_lossy(&out.stderr));
}

fn start(dir: &Path) -> Setup {
    let etc = dir.join("etc");
    let work = dir.join("work");
    for d in [&etc, &work] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(etc.join("hosts"), HOSTS).expect("hosts");
    std::fs::write(etc.join("host.conf"), "multi off\n").expect("host.conf");
    std::fs::write(etc.join("nsswitch.conf"), "hosts: files\nnetgroup: files\n").expect("nsswitch.conf");
    std::fs::write(etc.join("netgroup"), "trusted (m1.other.test,,) (a.example.test,,)\n").expect("netgroup");
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1\"\nstate_dir = \"{}\"\nhost_cache_ttl_seconds = 1\n\n\
         [ports]\nportmap = 111\nnfs = {NFS_PORT}\nmount = {MOUNT_PORT}\n",
        dir.join("state").display()
    );
    for (id, (name, clients)) in EXPORTS.iter().enumerate() {
        let export = dir.join(name.trim_start_matches('/'));
        std::fs::create_dir_all(&export).expect("export dir");
        config.push_str(&format!(
            "\n[[export]]\nname = \"{name}\"\ndir = \"{}\"\nid = {}\nclients = \"{clients}\"\n",
            export.display(),
            id + 1
        ));
    }
    let config_path = dir.join("hanfs.toml");
    std::fs::write(&config_path, config).expect("config");

    let ns = format!("hanfs-hosts-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let log = dir.join("server.log");
    let file = OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let overlay = format!("lowerdir=/etc,upperdir={},workdir={}", etc.display(), work.display());
    let server = Command::new("ip")
        .args(["netns", "exec", &ns, "sh", "-c", "mount -t overlay overlay -o \"$0\" /etc && exec \"$@\""])
        .arg(overlay)
        .arg(server_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "hanfs_server=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("clone log")))
        .stderr(Stdio::from(file))
        .spawn();
    let server = match server {
        Ok(child) => child,
        Err(e) => {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            panic!("cannot run ip netns exec: {e}");
        }
    };
    let setup = Setup { server, ns, log };
    let up = setup.run(|| {
        (0..POLLS_MAX).any(|_| {
            std::thread::sleep(POLL_INTERVAL);
            mnt("127.0.0.1", "/wild").is_some()
        })
    });
    assert!(up, "server never answered MNT; its log:\n{}", setup.log());
    setup
}

/// One UDP call from `from` to the server; its accepted reply's body.
fn call(from: &str, port: u16, msg: &[u8]) -> Option<Vec<u8>> {
    let from: IpAddr = from.parse().expect("address");
    let s = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    s.send_to(msg, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    match parse_reply(&buf) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => Some(body),
        other => panic!("MNT/NFS call refused by RPC: {other:?}"),
    }
}

/// MNT of `path` from `from`: the root handle, or the mountstat3 refusal;
/// `None` when nothing answered.
fn mnt(from: &str, path: &str) -> Option<Result<Vec<u8>, u32>> {
    let mut args = Vec::new();
    put_opaque(&mut args, path.as_bytes());
    let body = call(from, MOUNT_PORT, &call_msg(1, MOUNT_PROGRAM, 3, 1, (0, &[]), &args))?;
    let w = words(&body);
    match w.first() {
        Some(0) => {
            let len = *w.get(1).expect("handle length") as usize;
            Some(Ok(body.get(8..8 + len).expect("handle").to_vec()))
        }
        Some(&stat) => Some(Err(stat)),
        None => panic!("empty MNT reply"),
    }
}

fn allowed(from: &str, path: &str) -> bool {
    match mnt(from, path) {
        Some(Ok(_)) => true,
        Some(Err(MNT3ERR_ACCES)) => false,
        other => panic!("MNT {path} from {from}: {other:?}"),
    }
}

/// GETATTR of `fh` from `from` (over TCP: hanfs serves NFS on TCP only):
/// its nfsstat3.
fn getattr(from: &str, fh: &[u8]) -> u32 {
    let from: IpAddr = from.parse().expect("address");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(from, 0))?;
            s.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, NFS_PORT))).await
        })
        .and_then(|s| s.into_std())
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    let mut stream = stream;
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let mut args = Vec::new();
    put_opaque(&mut args, fh);
    let cred = auth_sys_body(0, 0, &[]);
    stream.write_all(&frame(&call_msg(2, NFS_PROGRAM, 3, 1, (1, &cred), &args))).expect("send GETATTR");
    let reply = read_record(&mut stream).expect("GETATTR answered");
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => *words(&body).first().expect("status"),
        other => panic!("GETATTR refused by RPC: {other:?}"),
    }
}

#[test]
fn client_lists_by_name_wildcard_and_netgroup() {
    let dir = tempdir("hostnames");
    let setup = start(dir.path());
    let checks = setup.run(|| {
        vec![
            ("plain name: its address", allowed("127.0.0.2", "/named"), true),
            ("plain name: another address", allowed("127.0.0.3", "/named"), false),
            ("plain name: by its forward lookup (an alias)", allowed("127.0.0.9", "/named"), true),
            ("wildcard: a.example.test", allowed("127.0.0.3", "/wild"), true),
            ("wildcard: b.other.test", allowed("127.0.0.4", "/wild"), false),
            ("wildcard: reverse name that does not resolve back", allowed("127.0.0.5", "/wild"), false),
            ("wildcard: that name's real address", allowed("127.0.0.6", "/wild"), true),
            ("wildcard: an address with no name", allowed("127.0.0.20", "/wild"), false),
            ("netgroup: member m1.other.test", allowed("127.0.0.7", "/group"), true),
            ("netgroup: member a.example.test", allowed("127.0.0.3", "/group"), true),
            ("netgroup: b.other.test is not in it", allowed("127.0.0.4", "/group"), false),
        ]
    });
    let wrong: Vec<_> = checks.iter().filter(|(_, got, want)| got != want).collect();
    assert!(wrong.is_empty(), "wrong answers (what, got, wanted): {wrong:?}\nserver log:\n{}", setup.log());

    // NFS calls are checked the same way, per call: a handle is no pass.
    setup.run(|| {
        let fh = mnt("127.0.0.3", "/wild").expect("answered").expect("a.example.test mounts /wild");
        assert_eq!(getattr("127.0.0.3", &fh), 0, "GETATTR from a.example.test");
        assert_eq!(getattr("127.0.0.4", &fh), NFS3ERR_ACCES, "GETATTR from b.other.test");
    });

    // The name moves to another address: after the TTL (1 s here) the old
    // address is refused and the new one let in.
    setup.run(|| {
        assert!(allowed("127.0.0.8", "/mover"));
        assert!(!allowed("127.0.0.10", "/mover"));
    });
    let moved = HOSTS.replace("127.0.0.8 mover.example.test", "127.0.0.10 mover.example.test");
    std::fs::write(setup.hosts_path(), moved).expect("rewrite the server's hosts file");
    let followed = setup.run(|| {
        (0..POLLS_MAX).any(|_| {
            std::thread::sleep(POLL_INTERVAL);
            !allowed("127.0.0.8", "/mover") && allowed("127.0.0.10", "/mover")
        })
    });
    assert!(followed, "the cache never followed the hosts file; server log:\n{}", setup.log());
}
