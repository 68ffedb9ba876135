//! The quick start as a new user runs it (`run --export DIR`, the real
//! binary): it prints the client's `mount` line, and warns when the squashed
//! identity cannot write the export root, naming the fix; silent when it can.
//! And the same binary under systemd's notification protocol.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// Polls of the log while waiting for the start-up lines.
const LOG_POLLS: u32 = 300;
const LOG_POLL_MS: u64 = 50;

/// `run --export dir` with the quick start's default client list, its
/// output in `log`, with `env` added.
fn spawn(dir: &Path, state: &Path, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let file = OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(server_binary())
        .args(["run", "--export"])
        .arg(dir)
        .args(["--listen", "127.0.0.1"])
        .args(["--portmap-port", &free_port().to_string()])
        .args(["--nfs-port", &free_port().to_string()])
        .args(["--mount-port", &free_port().to_string()])
        .arg("--state-dir")
        .arg(state.join("state"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("clone log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start hanfs-server")
}

/// Runs the quick start on `dir` (with `env` added) until its log shows the
/// mount line; returns the log.
fn start_up_log(dir: &Path, env: &[(&str, &str)]) -> String {
    let state = tempdir("quick-state");
    let log = state.path().join("server.log");
    let mut child = spawn(dir, state.path(), &log, env);
    let mut text = String::new();
    for _ in 0..LOG_POLLS {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("on a client:") || child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(LOG_POLL_MS));
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once serving, then
/// WATCHDOG=1 at half the period, and STOPPING=1 on SIGTERM, each a datagram
/// on `$NOTIFY_SOCKET` (here a socket of the test's).
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempdir("quick-notify");
    let state = tempdir("quick-notify-state");
    let socket_path = state.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let log = state.path().join("server.log");
    let notify = socket_path.to_str().expect("utf-8 path");
    let mut child = spawn(dir.path(), state.path(), &log, &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "200000")]);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    // READY, then at least two watchdog feeds (100 ms apart): at most 20 datagrams.
    for _ in 0..20 {
        let Ok(n) = socket.recv(&mut buf) else { break };
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if seen.iter().filter(|m| m.starts_with("WATCHDOG=1")).count() >= 2 {
            break;
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..20 {
        let Ok(n) = socket.recv(&mut buf) else { break };
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        let stopping = m.starts_with("STOPPING=1");
        seen.push(m);
        if stopping {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.first().is_some_and(|m| m.starts_with("READY=1\nSTATUS=serving /export")), "{seen:?}\n{log}");
    assert!(seen.iter().filter(|m| m.starts_with("WATCHDOG=1")).count() >= 2, "{seen:?}\n{log}");
    assert!(seen.last().is_some_and(|m| m == "STOPPING=1"), "{seen:?}\n{log}");
}

#[test]
fn a_root_owned_0755_export_is_warned_about_with_the_fix() {
    let dir = tempdir("quick-0755");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = start_up_log(dir.path(), &[]);
    assert!(log.contains("on a client: mount -t nfs 127.0.0.1:/export /mnt"), "no mount line in:\n{log}");
    assert!(log.contains("squashed to uid 65534 gid 65534"), "no squash warning in:\n{log}");
    assert!(log.contains("chmod 1777") && log.contains("no_root_squash"), "the warning names no fix:\n{log}");
}

#[test]
fn a_writable_export_gets_no_warning() {
    let dir = tempdir("quick-1777");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let log = start_up_log(dir.path(), &[]);
    assert!(log.contains("on a client: mount -t nfs 127.0.0.1:/export /mnt"), "no mount line in:\n{log}");
    assert!(!log.contains("squashed to"), "a warning for a writable root:\n{log}");
}

/// The shipped unit (cli/pkg/hanfs.service) passes `systemd-analyze verify`
/// with its ExecStart pointed at the binary under test (the man pages it
/// names are checked by the man page test, not here).
#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing (Debian package systemd): ./test.sh installs it");
    };
    assert!(out.status.success(), "systemd-analyze --version failed");
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/pkg/hanfs.service")).expect("unit");
    let binary = server_binary();
    let dir = tempdir("unit");
    let path = dir.path().join("hanfs.service");
    std::fs::write(&path, unit.replace("/usr/sbin/hanfs-server", binary.to_str().expect("utf-8 path"))).expect("write");
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect("run systemd-analyze");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
}

/// Every shipped man page (cli/pkg/man, kept equal to `generate man` by the
/// cli's own test) renders with `man -l` without a groff warning.
#[test]
fn the_man_pages_render() {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/pkg/man"));
    let mut pages: Vec<_> =
        std::fs::read_dir(&dir).expect("cli/pkg/man").filter_map(|e| e.ok().map(|e| e.path())).collect();
    pages.sort();
    assert!(pages.len() >= 2, "no man pages in {}", dir.display());
    for page in pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .output()
            .unwrap_or_else(|e| panic!("man is missing (Debian package man-db; ./test.sh installs it): {e}"));
        let (text, warnings) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "man -l {}: {warnings}", page.display());
        assert!(warnings.trim().is_empty(), "man -l {} warns: {warnings}", page.display());
        assert!(text.contains("NAME"), "man -l {} rendered no NAME section:\n{text}", page.display());
    }
}

/// Under systemd (`JOURNAL_STREAM` set) every log line starts with its
/// syslog priority, so journald records the level: `<6>` for info, `<4>`
/// for the squash warning, and no timestamp of its own.
#[test]
fn journald_sees_each_lines_level() {
    let dir = tempdir("quick-journal");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = start_up_log(dir.path(), &[("JOURNAL_STREAM", "8:12345")]);
    assert!(text.lines().any(|l| l.starts_with("<6>") && l.contains("on a client:")), "no <6> info line:\n{text}");
    assert!(text.lines().any(|l| l.starts_with("<4>") && l.contains("squashed to")), "no <4> warning line:\n{text}");
    assert!(text.lines().all(|l| l.starts_with('<')), "a line without its priority:\n{text}");
}
