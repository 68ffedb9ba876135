//! `RaftCommit` on a 3-node cluster: group commit, refusal off the leader,
//! one caller's rejected commands not failing the others, fencing on
//! partition; and the transport's cutting of oversize AppendEntries.

use hanfs_state::Command;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

use super::harness::*;
use crate::commit::{Commit, CommitError};
use crate::network::client::fit_in_frame;
use crate::types::{encoded_size, typ};

/// Concurrent callers in the group-commit test.
const CALLERS: u32 = 50;
/// Sequential commits timed for the (reported, never asserted) latency.
const TIMED_COMMITS: u32 = 21;

/// Median latency of `TIMED_COMMITS` sequential one-command commits, in µs.
async fn median_commit_micros(commit: &dyn Commit, base: u32) -> u128 {
    let mut micros = Vec::new();
    for i in 0..TIMED_COMMITS {
        let started = std::time::Instant::now();
        commit.commit(vec![mount(base + i)]).await.expect("timed commit");
        micros.push(started.elapsed().as_micros());
    }
    micros.sort_unstable();
    micros.get(micros.len() / 2).copied().unwrap_or(0)
}

/// A command the state refuses (an rmtab row without a client).
fn refused_command() -> Command {
    Command::Mount { client: String::new(), path: "/x".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_entries_and_reach_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    nodes[0].wait_serving().await;
    let commit = nodes[0].commit.clone();

    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let commit = commit.clone();
        tasks.push(tokio::spawn(async move { commit.commit(vec![mount(i)]).await }));
    }
    // One caller's rejected group fails alone.
    let bad = commit.commit(vec![refused_command()]).await;
    assert!(matches!(bad, Err(CommitError::Rejected(_))), "{bad:?}");
    for task in tasks {
        task.await.expect("join").expect("commit");
    }
    assert!(commit.entries_written() < u64::from(CALLERS), "no grouping: {} entries", commit.entries_written());
    assert_eq!(commit.state().read().expect("state lock").rmtab_len(), u64::from(CALLERS));

    // Followers (the witness too) converge on the same state. The leader's
    // own metrics may trail its answers (Raft runs on its own runtime), so
    // wait for it to report everything in its log applied first.
    let last = nodes[0].raft.metrics().borrow().last_log_index;
    nodes[0].wait_applied(last, "leader applies").await;
    for follower in &nodes[1..] {
        follower.wait_applied(last, "follower applies").await;
        assert_eq!(same_state(&nodes[0], follower), Ok(()));
    }

    eprintln!("commit latency, 3 nodes: median {} us", median_commit_micros(commit.as_ref(), 10_000).await);

    // A follower refuses to commit.
    assert!(matches!(nodes[1].commit.commit(vec![mount(1000)]).await, Err(CommitError::NotLeader)));
    assert!(matches!(nodes[2].commit.commit(vec![mount(1001)]).await, Err(CommitError::NotLeader)));
    for node in nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_acknowledges_no_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    nodes[0].wait_serving().await;
    let old = nodes[0].commit.clone();
    old.commit(vec![mount(1)]).await.expect("commit before the partition");

    nodes[0].faults.block(2);
    nodes[0].faults.block(3);
    nodes[1].faults.block(1);
    nodes[2].faults.block(1);
    nodes[1].wait_serving().await;

    // From now on the old leader must acknowledge nothing.
    let refused = old.commit(vec![mount(2)]).await;
    assert!(matches!(refused, Err(CommitError::NotLeader)), "{refused:?}");
    let new = nodes[1].commit.clone();
    new.commit(vec![mount(3)]).await.expect("new leader commits");
    let rmtab: Vec<String> =
        new.state().read().expect("state lock").rmtab().map(|(client, _)| client.to_string()).collect();
    assert_eq!(rmtab, vec!["10.0.0.1".to_string(), "10.0.0.3".to_string()]);

    for node in nodes {
        node.kill().await;
    }
}

#[test]
fn oversize_append_entries_is_cut_to_a_prefix() {
    let entry = |index: u64| typ::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Mount { client: "c".repeat(100), path: "/e".to_string() }),
    };
    let entries: Vec<typ::Entry> = (1..=10).map(entry).collect();
    let one = encoded_size(&entries[0]);
    let rpc = |entries: Vec<typ::Entry>| typ::AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries,
        leader_commit: None,
    };

    let (kept, cut) = fit_in_frame(rpc(entries.clone()), 3 * one + one / 2);
    assert_eq!(kept.entries.len(), 3);
    assert_eq!(cut.map(|l| l.index), Some(3));

    let (kept, cut) = fit_in_frame(rpc(entries.clone()), 100 * one);
    assert_eq!(kept.entries.len(), 10);
    assert_eq!(cut, None);

    // A single entry larger than the budget still goes (it fits a real frame).
    let (kept, cut) = fit_in_frame(rpc(entries), one / 2);
    assert_eq!(kept.entries.len(), 1);
    assert_eq!(cut.map(|l| l.index), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_voter_cluster_serves_and_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, addr) = listeners(1).await.remove(0);
    let mut node = TestNode::start(1, crate::types::Role::Storage, &dir, listener, SECRET).await;
    let members =
        std::collections::BTreeMap::from([(1, crate::types::PeerNode { addr, role: crate::types::Role::Storage })]);
    node.bootstrap(members).await.expect("bootstrap");
    node.wait_serving().await;
    assert!(node.serving_now());
    node.commit.commit(vec![mount(1), Command::BumpEpoch]).await.expect("commit");
    eprintln!("commit latency, 1 node: median {} us", median_commit_micros(node.commit.as_ref(), 10_000).await);
    assert_eq!(node.commit.state().read().expect("state lock").epoch(), 1);
    node.kill().await;
}
