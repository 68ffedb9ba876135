//! `hanfs-server locks` on every member of a running cluster: the leader, the
//! other storage node and the witness each answer from their own applied
//! copy of the lock table, with the same text. (No NLM program commits locks
//! here; the rows themselves are tested on a single node, `tests/locks.rs`.)

use super::harness::*;

#[test]
fn cluster_every_node_answers_locks() {
    let mut cl = Cluster::start("locks");
    let leader = cl.wait_serving(&[]);
    for id in NODE_IDS.into_iter().filter(|id| *id != leader) {
        cl.wait_caught_up(id, leader);
    }
    let mut texts = Vec::new();
    for id in NODE_IDS {
        let out = cl.cli(id, &["locks"]);
        assert!(out.status.success(), "locks on node {id}: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"nsm_state: 1"), "node {id}:\n{text}");
        for header in ["LOCKS ", "HOSTS ", "MONITORS "] {
            assert!(lines.iter().any(|l| l.starts_with(header)), "node {id} lacks {header}:\n{text}");
        }
        texts.push(text);
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "nodes disagree: {texts:#?}");
}
