//! Nodes down: with the witness down, then with the passive down, the active
//! keeps serving (writes commit with the remaining quorum); with both down it
//! stops serving and drops its connections. Rejoin: a storage node restarted
//! from an empty state directory catches up with the leader through a
//! snapshot (the leader is made to snapshot and purge its log with `debug
//! snapshot` while the node is down, so log replay is impossible) and can then
//! take over with every handle working.

use std::io::Write;

use nfs3_types::nfs3::*;

use super::failover::{check_tree, make_tree};
use super::harness::*;
use crate::nfs3_ops::*;
use crate::util::*;

/// Files created while a node is down in the rejoin test.
const REJOIN_FILES: u32 = 40;

/// CREATE + FILE_SYNC WRITE + GETATTR through a fresh mount: a committed change.
async fn mutate(cl: &Cluster, name: &str) -> nfs_fh3 {
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, name).await.unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    write(&mut c, &fh, 0, name.as_bytes(), stable_how::FILE_SYNC)
        .await
        .unwrap_or_else(|e| panic!("write {name}: {e:?}"));
    getattr(&mut c, &fh).await.unwrap_or_else(|e| panic!("getattr {name}: {e:?}"));
    fh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_one_node_down_continues_two_down_stops() {
    let mut cl = Cluster::start("degraded");
    let active = cl.wait_serving(&[]);
    let passive = Cluster::other_storage(active);

    cl.kill9(WITNESS);
    mutate(&cl, "witness-down").await;
    assert_eq!(cl.wait_serving(&[]), active, "witness down: the same active serves");

    cl.restart(WITNESS);
    cl.wait_caught_up(WITNESS, active);
    cl.kill9(passive);
    mutate(&cl, "passive-down").await;
    assert_eq!(cl.wait_serving(&[]), active, "passive down: the same active serves");

    let mut held = cl.raw_connect(cl.ports.nfs);
    held.write_all(&frame(&call_msg(7, NFS_PROGRAM, NFS_VERSION, 0, CRED_NONE, &[]))).expect("NULL");
    assert!(read_record(&mut held).is_some(), "the active answers before losing its quorum");
    cl.kill9(WITNESS);
    let mut stopped = false;
    for _ in 0..SERVE_POLLS_MAX {
        if !cl.null_answers(cl.ports.nfs, NFS_PROGRAM, NFS_VERSION)
            && !cl.null_answers(cl.ports.mount, MOUNT_PROGRAM, MOUNT_VERSION)
        {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
    assert!(stopped, "with both peers down the active still serves:\n{}", cl.status_text(active));
    let sent = held.write_all(&frame(&call_msg(8, NFS_PROGRAM, NFS_VERSION, 0, CRED_NONE, &[]))).is_ok();
    assert!(
        !(sent && read_record(&mut held).is_some()),
        "a connection accepted before the quorum loss still gets answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_restarted_from_empty_disk_catches_up_and_takes_over() {
    let mut cl = Cluster::start("rejoin");
    let active = cl.wait_serving(&[]);
    let passive = Cluster::other_storage(active);
    let mut c = cl.connect().await;
    let held = make_tree(&mut c).await;
    drop(c);

    cl.kill9(passive);
    cl.wipe(passive);
    let mut files = Vec::new();
    for i in 0..REJOIN_FILES {
        files.push(mutate(&cl, &format!("while-down-{i}")).await);
    }
    let out = cl.cli(active, &["debug", "snapshot"]);
    assert!(out.status.success(), "debug snapshot on the leader: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let snap = text
        .strip_prefix("ok snapshot_index ")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("debug snapshot answer: {text}"));
    assert!(snap > 0, "the leader's snapshot covers the log: {text}");
    cl.restart(passive);
    let (mine, leader) = cl.wait_caught_up(passive, active);
    println!("rejoined node {passive} applied {mine}, leader {active} applied {leader}, leader snapshot {snap}");
    // Caught up by InstallSnapshot: the wiped node holds a snapshot at least
    // as new as the leader's (it never builds one itself below
    // SNAPSHOT_EVERY_ENTRIES) and its log starts after it.
    let st = cl.status(passive).expect("status of the rejoined node");
    let got = st.get("snapshot_index").and_then(|v| v.parse::<u64>().ok());
    assert!(got.is_some_and(|g| g >= snap), "rejoined node's snapshot_index {got:?}, leader snapshot {snap}");
    let purged = st.get("purged_index").and_then(|v| v.parse::<u64>().ok());
    assert!(
        purged.is_some_and(|p| p >= snap),
        "rejoined node's log starts after the snapshot: purged_index {purged:?}"
    );

    cl.kill9(active);
    assert_eq!(cl.wait_serving(&[active]), passive, "the rejoined node takes over");
    let mut c = cl.connect().await;
    check_tree(&mut c, &held, "on the rejoined node").await;
    let mut stale = 0;
    for (i, fh) in files.iter().enumerate() {
        match getattr(&mut c, fh).await {
            Ok(_) => {}
            Err(nfsstat3::NFS3ERR_STALE) => stale += 1,
            Err(e) => panic!("file {i} on the rejoined node: {e:?}"),
        }
    }
    assert_eq!(stale, 0, "STALE handles on the rejoined node");
}
