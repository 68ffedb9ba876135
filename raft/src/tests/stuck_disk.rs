//! A leader whose log disk stops answering hands over: it signals its own
//! appends flushed before their fsync (`durable`) only while its
//! writer keeps up, so the next append after a write has hung for
//! `LOG_WRITE_SLOW_MS` holds openraft's core, its heartbeats stop, and the
//! other storage node takes over. Nothing the stuck node had only queued is
//! applied anywhere before its disk has it; once the disk answers again it
//! follows and ends with the same state.

use std::time::Duration;

use openraft::ServerState;

use super::harness::*;
use crate::lease::Leadership;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_hangs_hands_over_and_loses_nothing_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    nodes[0].wait_serving().await;
    write(&nodes[0].raft, mount(1)).await;

    // The disk hangs. The first write is signalled early; the next one,
    // once the writer has hung for longer than a slow write, is not.
    nodes[0].log.stall_writes(true);
    let stuck = nodes[0].raft.clone();
    let first = tokio::spawn(async move { stuck.client_write(mount(2)).await });
    tokio::time::sleep(Duration::from_millis(crate::durable::LOG_WRITE_SLOW_MS * 3)).await;
    let stuck = nodes[0].raft.clone();
    let second = tokio::spawn(async move { stuck.client_write(mount(3)).await });
    assert!(!first.is_finished(), "a write was answered by a leader whose disk does not have it");

    // The other storage node takes over and commits with the witness.
    nodes[1].wait_leader(2, "node 2 takes over from the stuck leader").await;
    nodes[1].wait_serving().await;
    let after = write(&nodes[1].raft, mount(4)).await;
    assert!(
        *nodes[0].leadership.borrow() == Leadership::Follower || !nodes[0].serving_now(),
        "the stuck node still serves"
    );

    // The disk answers again: the old leader follows and converges.
    nodes[0].log.stall_writes(false);
    let _ = tokio::time::timeout(CONVERGE_TIMEOUT, first).await;
    let _ = tokio::time::timeout(CONVERGE_TIMEOUT, second).await;
    nodes[0]
        .wait_metrics("the old leader follows node 2", |m| {
            m.state == ServerState::Follower && m.current_leader == Some(2)
        })
        .await;
    nodes[0].wait_applied(Some(after.index), "the old leader catches up").await;
    nodes[1].wait_applied(Some(after.index), "node 2 applied its own write").await;
    assert_eq!(same_state(&nodes[0], &nodes[1]), Ok(()), "the old leader's state differs");
    for node in nodes {
        node.kill().await;
    }
}
