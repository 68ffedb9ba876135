//! Debian's `rpcinfo` and `showmount` against the real `hanfs-server` binary
//! listening on 127.0.0.1 with our portmapper on port 111, plus the binary's
//! own `exports`, `clients` and `check-config`.
//!
//! The port-111 tests are `#[ignore]`d: they need port 111 free, which a
//! host's own rpcbind usually is not. `./test.sh` runs them (`-- --ignored`)
//! in a network namespace of its own, where nothing else listens. Run where
//! they cannot work, they fail with the reason (port taken, tool missing);
//! they never pass without testing. They run one at a time (`PORT_111`).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::util::*;

/// Port-111 tests must not overlap (the cluster's `showmount -a` test takes it too).
pub(crate) static PORT_111: Mutex<()> = Mutex::new(());
/// Polls while waiting for the server to come up or go down.
const WAIT_POLLS: u32 = 200;
const WAIT_POLL_MS: u64 = 50;

/// The real binary, stopped (SIGTERM, then SIGKILL) on drop.
struct Binary {
    child: Child,
    _state: TempDir,
    state_dir: std::path::PathBuf,
}

impl Binary {
    fn start(export: &Path, clients: &str) -> Binary {
        let state = tempdir("tools-state");
        let state_dir = state.path().to_path_buf();
        let child = Command::new(server_binary())
            .args(["run", "--export"])
            .arg(export)
            .args([
                "--clients",
                clients,
                "--listen",
                "127.0.0.1",
                "--nfs-port",
                "0",
                "--mount-port",
                "0",
                "--state-dir",
            ])
            .arg(&state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hanfs-server");
        let b = Binary { child, _state: state, state_dir };
        b.wait_ready();
        b
    }

    /// Ready once portmap on 111 answers GETPORT for MOUNT.
    fn wait_ready(&self) {
        for _ in 0..WAIT_POLLS {
            if mount_port_via_111().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        }
        panic!("hanfs-server did not come up on 127.0.0.1:111");
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..WAIT_POLLS {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// GETPORT(MOUNT v3, UDP) from the portmapper on 127.0.0.1:111.
fn mount_port_via_111() -> Option<u16> {
    let mut args = Vec::new();
    for w in [100_005u32, 3, 17, 0] {
        put_u32(&mut args, w);
    }
    let reply = udp_call_wait(111, &call_msg(0x111, 100_000, 2, 3, CRED_NONE, &args), 200)?;
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => {
            words(&body).first().and_then(|p| u16::try_from(*p).ok()).filter(|p| *p != 0)
        }
        _ => None,
    }
}

/// Panics with the reason unless port 111 on `addr` is free (TCP and UDP).
pub(crate) fn require_port_111_free(addr: Ipv4Addr) {
    let tcp = TcpListener::bind((addr, 111));
    let udp = UdpSocket::bind((addr, 111));
    if let Err(e) = tcp.and(udp) {
        panic!(
            "port 111 on {addr} is taken ({e}; a system rpcbind?) and this test needs it free: \
             ./test.sh runs the port-111 tests in a network namespace of its own; by hand: \
             ip netns add t; ip -n t link set lo up; \
             ip netns exec t cargo test -p hanfs-tests --test integration -- --ignored"
        );
    }
}

/// The path of `cmd` on PATH; panics naming the Debian package if missing.
pub(crate) fn require_tool(cmd: &str, package: &str) -> String {
    let out = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output();
    let path = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    assert!(!path.is_empty(), "{cmd} is not installed (Debian package {package}; ./test.sh installs it)");
    path
}

fn run_tool(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    println!(
        "$ {cmd} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "exit status {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rows of `rpcinfo -p`: (program, version, proto, port).
fn rpcinfo_rows(text: &str) -> Vec<(u32, u32, String, u16)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.to_string(), f.get(3)?.parse().ok()?))
        })
        .collect()
}

#[test]
#[ignore = "needs port 111 free and rpcbind installed: ./test.sh runs them in a network namespace of its own"]
fn rpcinfo_showmount_and_admin_against_the_binary() {
    let _serial = PORT_111.lock().unwrap_or_else(|p| p.into_inner());
    require_port_111_free(Ipv4Addr::LOCALHOST);
    require_tool("rpcinfo", "rpcbind");
    require_tool("showmount", "nfs-common");
    let export = tempdir("tools-export");
    let mut server = Binary::start(export.path(), "*(rw,insecure) 10.0.0.0/8(ro)");
    let mount_port = mount_port_via_111().expect("mount port");

    let rows = rpcinfo_rows(&stdout(&run_tool("rpcinfo", &["-p", "127.0.0.1"])));
    for proto in ["tcp", "udp"] {
        assert!(rows.contains(&(100_000, 2, proto.to_string(), 111)), "portmapper {proto}: {rows:?}");
        assert!(rows.contains(&(100_005, 3, proto.to_string(), mount_port)), "mountd v3 {proto}: {rows:?}");
        assert!(rows.contains(&(100_005, 1, proto.to_string(), mount_port)), "mountd v1 {proto}: {rows:?}");
        assert!(rows.iter().any(|r| (r.0, r.1, r.2.as_str()) == (100_021, 4, proto)), "nlockmgr v4 {proto}: {rows:?}");
        assert!(rows.iter().any(|r| (r.0, r.1, r.2.as_str()) == (100_024, 1, proto)), "status v1 {proto}: {rows:?}");
    }
    assert!(rows.iter().any(|r| r.0 == 100_003 && r.1 == 3 && r.2 == "tcp"), "nfs v3 tcp: {rows:?}");

    let text = stdout(&run_tool("showmount", &["-e", "127.0.0.1"]));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Export list for 127.0.0.1:"));
    let export_line = lines.next().expect("one export");
    let fields: Vec<&str> = export_line.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"/export"), "{export_line}");
    assert_eq!(fields.get(1), Some(&"*,10.0.0.0/8"), "{export_line}");

    // Mount (MNT over UDP, as mount.nfs does), then showmount -a lists it.
    let mut args = Vec::new();
    put_opaque(&mut args, b"/export");
    let reply = udp_call(mount_port, &call_msg(7, 100_005, 3, 1, (1, &auth_sys_body(0, 0, &[])), &args)).expect("MNT");
    assert!(matches!(parse_reply(&reply), RpcReply::Accepted { stat: SUCCESS, .. }));
    let text = stdout(&run_tool("showmount", &["-a", "127.0.0.1"]));
    assert_eq!(text.lines().collect::<Vec<_>>(), vec!["All mount points on 127.0.0.1:", "127.0.0.1:/export"]);

    // The binary's own admin queries, answered by the running server.
    let dir = server.state_dir.to_string_lossy().into_owned();
    let bin = server_binary();
    let bin = bin.to_string_lossy();
    assert_eq!(stdout(&run_tool(&bin, &["clients", "--state-dir", &dir])), "127.0.0.1 /export\n");
    let exports = stdout(&run_tool(&bin, &["exports", "--state-dir", &dir]));
    assert!(exports.starts_with("1 /export /") && exports.contains(" *(rw,root_squash,sync,insecure,"), "{exports}");

    let status = server.stop().expect("hanfs-server stops on SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    // With no server running, the same answers come from the state directory.
    assert_eq!(stdout(&run_tool(&bin, &["clients", "--state-dir", &dir])), "127.0.0.1 /export\n");
}

#[test]
fn check_config_names_the_line() {
    let dir = tempdir("tools-config");
    let good = dir.path().join("good.toml");
    let export = dir.path().to_string_lossy().into_owned();
    std::fs::write(&good, format!("[server]\nlisten = \"127.0.0.1\"\n\n[[export]]\nname = \"/export\"\ndir = \"{export}\"\nid = 1\nclients = \"*(rw)\"\n")).expect("write");
    let bin = server_binary();
    let out = run_tool(&bin.to_string_lossy(), &["check-config", &good.to_string_lossy()]);
    assert!(out.status.success());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[[export]]\nname = \"/export\"\ndir = \"{export}\"\nid = 1\nclients = \"*(rw,frobnicate)\"\n"),
    )
    .expect("write");
    let out = run_tool(&bin.to_string_lossy(), &["check-config", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5: clients:") && err.contains("unknown export option `frobnicate`"), "{err}");
}

/// A system rpcbind started by this test, killed (by its pid) on drop.
struct SystemRpcbind(Child);

impl Drop for SystemRpcbind {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `rpcinfo -p` rows for `prog`.
fn registered(prog: u32) -> Vec<(u32, u32, String, u16)> {
    rpcinfo_rows(&stdout(&run_tool("rpcinfo", &["-p", "127.0.0.1"]))).into_iter().filter(|r| r.0 == prog).collect()
}

#[test]
#[ignore = "needs port 111 free and rpcbind installed: ./test.sh runs them in a network namespace of its own"]
fn registers_with_a_system_rpcbind_and_unregisters_on_exit() {
    let _serial = PORT_111.lock().unwrap_or_else(|p| p.into_inner());
    require_port_111_free(Ipv4Addr::LOCALHOST);
    let rpcbind_bin = require_tool("rpcbind", "rpcbind");
    require_tool("rpcinfo", "rpcbind");
    require_tool("showmount", "nfs-common");
    // rpcbind keeps its lock file and unix socket in /run; give it a private
    // /run (its own mount namespace) so no other rpcbind on this host is touched.
    let script = format!("mount -t tmpfs hanfs-test-run /run && mkdir -p /run/rpcbind && exec {rpcbind_bin} -f");
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rpcbind");
    let _rpcbind = SystemRpcbind(child);
    let mut up = false;
    for _ in 0..WAIT_POLLS {
        if udp_call_wait(111, &call_msg(1, 100_000, 2, 0, CRED_NONE, &[]), 100).is_some() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
    }
    assert!(up, "rpcbind did not come up");

    let export = tempdir("tools-rpcbind");
    let mut server = Binary::start(export.path(), "*(rw,insecure)");
    let mount_port = mount_port_via_111().expect("MOUNT registered with rpcbind");
    let mounts = registered(100_005);
    for (vers, proto) in [(1, "tcp"), (1, "udp"), (3, "tcp"), (3, "udp")] {
        assert!(mounts.contains(&(100_005, vers, proto.to_string(), mount_port)), "{mounts:?}");
    }
    assert_eq!(registered(100_003).len(), 1, "NFS v3 over TCP registered");
    let text = stdout(&run_tool("showmount", &["-e", "127.0.0.1"]));
    assert!(text.lines().any(|l| l.starts_with("/export")), "{text}");

    let status = server.stop().expect("stops on SIGTERM");
    assert!(status.success());
    assert!(registered(100_005).is_empty(), "MOUNT unregistered on exit");
    assert!(registered(100_003).is_empty(), "NFS unregistered on exit");
}
