//! The example config the Debian package installs as /etc/hanfs/hanfs.toml
//! (cli/pkg/hanfs.toml) cannot rot: `hanfs-server check-config` accepts it as
//! shipped (a single node), accepts it with every commented-out setting
//! (`#key = value`, `#[table]`) switched on (a cluster member: so each one
//! names a real setting with a valid value), and it mentions every setting
//! `check-config --help` documents.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/hanfs.toml");
/// Where the example points `secret_file`; the test substitutes its own.
const SHIPPED_SECRET: &str = "\"/etc/hanfs/secret\"";

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("hanfs-example-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hanfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hanfs-server")).args(args).output().expect("run hanfs-server")
}

fn check_config(path: &Path) -> String {
    let out = hanfs(&["check-config", path.to_str().expect("utf-8 path")]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-config {} failed:\n{stderr}{stdout}", path.display());
    assert!(stderr.trim().is_empty(), "check-config {} warned:\n{stderr}", path.display());
    stdout.into_owned()
}

/// A line that is a commented-out setting or table header: `#key = ...`,
/// `#[table]`, `#[[array]]` (prose comments start with `# `).
fn commented_setting(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[').then_some(rest)
}

#[test]
fn the_shipped_example_passes_check_config() {
    let out = check_config(Path::new(EXAMPLE));
    assert!(out.contains(": OK:"), "{out}");
    assert!(out.contains("export /export id 1 dir /srv clients 127.0.0.1"), "{out}");
    assert!(!out.contains("cluster"), "the shipped example is a single node:\n{out}");
}

#[test]
fn every_commented_setting_is_valid_when_switched_on() {
    let example = std::fs::read_to_string(EXAMPLE).expect("read the example");
    let dir = Dir::new("all");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
    assert!(example.contains(SHIPPED_SECRET), "the example's secret_file moved: update this test");
    let mut switched = 0;
    let mut all = String::new();
    for line in example.lines() {
        match commented_setting(line) {
            Some(setting) => {
                switched += 1;
                all.push_str(&setting.replace(SHIPPED_SECRET, &format!("{:?}", secret.display().to_string())));
            }
            None => all.push_str(line),
        }
        all.push('\n');
    }
    assert!(switched >= 30, "only {switched} commented settings found");
    let path = dir.0.join("hanfs.toml");
    std::fs::write(&path, all).expect("write the switched-on example");
    let out = check_config(&path);
    for part in ["cluster prod node 1", "peer 3 10.0.0.3:7101 Witness", "vip 10.0.0.100/24", "metrics http://"] {
        assert!(out.contains(part), "`{part}` missing: a commented block did not switch on:\n{out}");
    }
}

#[test]
fn every_documented_setting_is_in_the_example() {
    let example = std::fs::read_to_string(EXAMPLE).expect("read the example");
    let out = hanfs(&["check-config", "--help"]);
    assert!(out.status.success(), "check-config --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let mut keys = 0;
    for line in help.lines() {
        let Some((key, _)) = line.trim_start().split_once(" = ") else { continue };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        keys += 1;
        let set = example.lines().any(|l| {
            let l = l.strip_prefix('#').unwrap_or(l);
            l.starts_with(&format!("{key} = "))
        });
        assert!(set, "check-config --help documents `{key}`, the example (cli/pkg/hanfs.toml) does not");
    }
    assert!(keys >= 10, "found only {keys} settings in check-config --help:\n{help}");
}
