//! A leader whose log writes fail (its state directory's disk is full) stops
//! leading at once, with the error reported (`RaftNode::fatal_error`: the
//! server stops and exits on it, and its supervisor starts it again); the
//! other storage node takes over; started again on the same directory once
//! writes work, the node rejoins and catches up.

use openraft::ServerState;
use tokio::net::TcpListener;

use super::harness::*;
use crate::lease::Leadership;
use crate::types::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_is_full_steps_down_and_rejoins_once_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    nodes[0].wait_serving().await;
    let before = write(&nodes[0].raft, mount(1)).await;

    // The disk fills: the next append fails, and Raft stops on it.
    nodes[0].log.fail_writes(true);
    let refused = nodes[0].raft.client_write(mount(2)).await;
    assert!(refused.is_err(), "a write was acknowledged by a leader that cannot write its log: {refused:?}");
    let error =
        tokio::time::timeout(CONVERGE_TIMEOUT, nodes[0].fatal_error()).await.expect("raft stops on the write error");
    assert!(error.contains("No space left on device"), "{error}");
    tokio::time::timeout(CONVERGE_TIMEOUT, nodes[0].leadership.wait_for(|l| *l == Leadership::Follower))
        .await
        .expect("the node stops serving")
        .expect("watch alive");
    assert!(!nodes[0].serving_now());

    // The other storage node takes over and commits with the witness.
    nodes[1].wait_leader(2, "node 2 takes over").await;
    nodes[1].wait_serving().await;
    let after = write(&nodes[1].raft, mount(3)).await;

    // Space returns; the node is started again on the same directory (as its
    // supervisor does after the server exits) and catches up.
    let old = nodes.remove(0);
    let addr = old.raft.metrics().borrow().membership_config.membership().get_node(&1).expect("member").addr.clone();
    let _ = tokio::time::timeout(CONVERGE_TIMEOUT, old.node.shutdown()).await.expect("shutdown ends");
    let listener = TcpListener::bind(&addr).await.expect("rebind node 1's address");
    let back = TestNode::start(1, Role::Storage, &dir, listener, SECRET).await;
    back.wait_applied(Some(after.index), "the restarted node catches up").await;
    back.wait_metrics("it follows node 2", |m| m.state == ServerState::Follower && m.current_leader == Some(2)).await;
    assert!(after.index > before.index);
    assert_eq!(same_state(&nodes[0], &back), Ok(()), "the restarted node's state differs");
    nodes.push(back);
    for node in nodes {
        node.kill().await;
    }
}
