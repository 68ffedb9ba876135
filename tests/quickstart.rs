//! The quick start as a new user runs it (`run --export DIR`, the real
//! binary): it prints the client's `mount` line, and warns when the squashed
//! identity cannot write the export root, naming the fix; silent when it can.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// Polls of the log while waiting for the start-up lines.
const LOG_POLLS: u32 = 300;
const LOG_POLL_MS: u64 = 50;

/// Runs `run --export dir` with the quick start's default client list until
/// its log shows the mount line; returns the log.
fn start_up_log(dir: &Path) -> String {
    let state = tempdir("quick-state");
    let log = state.path().join("server.log");
    let file = OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let mut child = Command::new(server_binary())
        .args(["run", "--export"])
        .arg(dir)
        .args(["--listen", "127.0.0.1"])
        .args(["--portmap-port", &free_port().to_string()])
        .args(["--nfs-port", &free_port().to_string()])
        .args(["--mount-port", &free_port().to_string()])
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("clone log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start hanfs-server");
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

#[test]
fn a_root_owned_0755_export_is_warned_about_with_the_fix() {
    let dir = tempdir("quick-0755");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = start_up_log(dir.path());
    assert!(log.contains("on a client: mount -t nfs 127.0.0.1:/export /mnt"), "no mount line in:\n{log}");
    assert!(log.contains("squashed to uid 65534 gid 65534"), "no squash warning in:\n{log}");
    assert!(log.contains("chmod 1777") && log.contains("no_root_squash"), "the warning names no fix:\n{log}");
}

#[test]
fn a_writable_export_gets_no_warning() {
    let dir = tempdir("quick-1777");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let log = start_up_log(dir.path());
    assert!(log.contains("on a client: mount -t nfs 127.0.0.1:/export /mnt"), "no mount line in:\n{log}");
    assert!(!log.contains("squashed to"), "a warning for a writable root:\n{log}");
}
