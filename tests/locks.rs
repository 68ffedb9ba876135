//! `hanfs-server locks` against a running node: an in-process single node
//! (its admin socket answers the real binary), a file created over NFS, and
//! NLM LOCK commands committed through the node's own `Commit` (the NLM
//! program that would commit them for a client is tested elsewhere). Then the
//! same answer from the state directory with the node stopped.

use std::process::{Command, Stdio};

use hanfs_server::node;
use hanfs_state::locks::{FileId, LockArgs, LockKind, LockOwner, LockRange};
use hanfs_state::NlmCommand;
use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;

use crate::nfs3_ops::create;
use crate::util::*;

/// Runs `hanfs-server locks --state-dir DIR`; its stdout, after checking it exited 0.
fn locks_via_binary(state_dir: &std::path::Path) -> String {
    let out = Command::new(server_binary())
        .arg("locks")
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run hanfs-server locks");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

fn lock_cmd(
    file: &[u8],
    host: &str,
    svid: u32,
    range: (u64, u64),
    kind: LockKind,
    block: bool,
) -> hanfs_state::Command {
    let owner = LockOwner { caller_name: host.into(), svid, oh: format!("{svid}@{host}").into_bytes() };
    let args =
        LockArgs { file: FileId(file.to_vec()), owner, range: LockRange { offset: range.0, len: range.1 }, kind };
    hanfs_state::Command::Nlm(NlmCommand::Lock { args, block, client_addr: "127.0.0.1".into(), now_ms: 1 })
}

#[test]
fn locks_lists_the_replicated_table_from_the_running_node_and_the_state_dir() {
    init_tracing();
    let export = tempdir("locks-export");
    let state = tempdir("locks-state");
    let config = test_config(export.path(), "*(rw,no_root_squash,insecure)", state.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let node = rt.block_on(node::start(config)).expect("node starts");

    // An empty table: the headers only.
    let empty = locks_via_binary(state.path());
    let lines: Vec<&str> = empty.lines().collect();
    assert_eq!(lines.first(), Some(&"nsm_state: 1"), "{empty}");
    assert!(lines.iter().any(|l| l.starts_with("LOCKS ") && l.ends_with("FILE")), "{empty}");
    assert!(lines.iter().any(|l| l.starts_with("HOSTS ")), "{empty}");
    assert!(lines.iter().any(|l| l.starts_with("MONITORS ")), "{empty}");
    assert!(!lines.iter().any(|l| l.starts_with("held") || l.starts_with("waiting")), "{empty}");

    // A file created over NFS: the serving node names it by its current path.
    let ports = node.ports();
    let commit = node.services().commit.clone();
    let fh = rt.block_on(async {
        let mut c = Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", EXPORT_NAME)
            .portmapper_port(ports.portmap)
            .mount_port(ports.mount)
            .nfs3_port(ports.nfs)
            .credential(auth_sys(0, 0, &[]))
            .mount()
            .await
            .expect("mount /export");
        let root = c.root_nfs_fh3();
        let fh = create(&mut c, &root, "locked file").await.expect("CREATE");
        fh.data.as_ref().to_vec()
    });
    let cmds = vec![
        lock_cmd(&fh, "client-a", 4242, (0, 0), LockKind::Exclusive, false),
        lock_cmd(&fh, "client-b", 7, (10, 5), LockKind::Shared, true),
        lock_cmd(&[0xde, 0xad], "client-b", 8, (0, 1), LockKind::Shared, false),
    ];
    let outcomes = rt.block_on(commit.commit(cmds)).expect("commit the locks");
    assert_eq!(outcomes.len(), 3);

    let text = locks_via_binary(state.path());
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    let row = |kind: &str| -> Vec<Vec<&str>> { rows.iter().filter(|r| r.first() == Some(&kind)).cloned().collect() };
    assert_eq!(
        row("held"),
        vec![
            vec!["held", "client-a", "4242", "exclusive", "0", "to", "EOF", "/export/locked", "file"],
            vec!["held", "client-b", "8", "shared", "0", "1", "dead"],
        ],
        "{text}"
    );
    assert_eq!(row("waiting"), vec![vec!["waiting", "client-b", "7", "shared", "10", "5", "/export/locked", "file"]]);
    assert_eq!(row("host"), vec![vec!["host", "client-a", "127.0.0.1"], vec!["host", "client-b", "127.0.0.1"]]);
    assert!(text.contains("counts: held 2, waiting 1, granting 0, hosts 2, monitors 0\n"), "{text}");

    rt.block_on(node.stop());
    // No server: the same answer, read from the state directory, except that
    // nothing serves the export to find the file's path: it is named by its
    // filesystem handle.
    let offline = locks_via_binary(state.path());
    let named: Vec<&str> = offline.lines().filter_map(|l| l.split_once("/export#").map(|(_, h)| h)).collect();
    assert_eq!(named.len(), 2, "{offline}");
    assert!(named.iter().all(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())), "{offline}");
    assert_eq!(offline.replace(&format!("/export#{}", named[0]), "/export/locked file"), text);
}
