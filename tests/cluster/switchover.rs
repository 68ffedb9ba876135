//! The graceful path and the bootstrap guard: `switchover` moves service to
//! the other storage node and back (`--to`, asked on the witness, which
//! forwards it to the leader) with every held handle working
//! (zero STALE); a second `init`, or `init` on the witness, fails with a
//! one-line error and a non-zero exit; every node's status names the same
//! leader, and the whole cluster part of `status` (lag, VIP holder, ...) is
//! the same on every node.

use super::failover::{check_tree, make_tree};
use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_switchover_moves_service_without_stale() {
    let mut cl = Cluster::start("switchover");
    let first = cl.wait_serving(&[]);
    let second = Cluster::other_storage(first);
    let mut c = cl.connect().await;
    let held = make_tree(&mut c).await;
    drop(c);

    let out = cl.cli(first, &["switchover"]);
    assert!(out.status.success(), "switchover: {}", show(&out));
    assert_eq!(cl.wait_serving(&[first]), second, "service moved to the other storage node");
    let mut c = cl.connect().await;
    check_tree(&mut c, &held, "after switchover").await;
    drop(c);

    // Asked on the witness (a follower), it is forwarded to the leader.
    let target = first.to_string();
    let out = cl.cli_with(WITNESS, &["switchover"], &["--to", &target]);
    assert!(out.status.success(), "switchover --to {first} on the witness: {}", show(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("[run on the leader, node {second}]")), "{said}");
    assert_eq!(cl.wait_serving(&[second]), first, "switchover --to moved service back");
    let mut c = cl.connect().await;
    check_tree(&mut c, &held, "after switchover back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_second_init_and_witness_init_are_refused() {
    let mut cl = Cluster::start("init");
    let leader = cl.wait_serving(&[]);
    for id in [STORAGE_1, WITNESS] {
        let out = cl.cli(id, &["init"]);
        assert!(!out.status.success(), "init on node {id} after bootstrap must fail: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one-line error from init on node {id}: {err:?}");
    }
    for id in NODE_IDS {
        assert_eq!(cl.leader_seen_by(id), Some(leader), "status of node {id}:\n{}", cl.status_text(id));
    }
    assert_eq!(cl.wait_serving(&[]), leader, "a refused init changes nothing");

    // Once every node has caught up, the cluster part of `status` is the
    // same wherever it is asked (the leader's view, fetched by followers).
    for id in NODE_IDS {
        cl.wait_caught_up(id, leader);
    }
    let cluster_part = |s: &std::collections::BTreeMap<String, String>| {
        CLUSTER_KEYS.iter().map(|k| (k.to_string(), s.get(*k).cloned().unwrap_or_default())).collect::<Vec<_>>()
    };
    let on_leader = cl.status(leader).expect("leader status");
    let lag = on_leader.get("lag").cloned().unwrap_or_default();
    let others: Vec<String> = NODE_IDS.iter().filter(|id| **id != leader).map(|id| format!("{id}=0")).collect();
    assert_eq!(lag, others.join(" "), "every member caught up, lag per member");
    // These clusters model the VIP by the service address alone (no [vip]).
    assert_eq!(on_leader.get("vip").map(String::as_str), Some("none configured on this node"), "{on_leader:?}");
    assert_eq!(on_leader.get("serving"), Some(&format!("node {leader}")), "{on_leader:?}");
    for id in NODE_IDS {
        let st = cl.status(id).unwrap_or_else(|| panic!("status of node {id}"));
        assert_eq!(
            cluster_part(&st),
            cluster_part(&on_leader),
            "node {id} and the leader disagree:\n{}",
            cl.status_text(id)
        );
        let expected_view =
            if id == leader { "this node leads".to_string() } else { format!("from the leader, node {leader}") };
        assert_eq!(st.get("view"), Some(&expected_view));
    }
}

/// The keys of the cluster part of `status`.
const CLUSTER_KEYS: [&str; 13] = [
    "cluster",
    "leader",
    "term",
    "commit_index",
    "members",
    "lag",
    "vip",
    "vip_owner",
    "serving",
    "exports",
    "clients",
    "epoch",
    "last_failover",
];
