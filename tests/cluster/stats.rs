//! Observability on a running cluster: `hanfs-server stats` asked on every
//! member answers with the serving leader's counts (the leader itself, the
//! other storage node and the witness forward it to the leader) and says
//! which node answered; and every member serves `/metrics` (`[metrics]
//! listen` on an ephemeral port, found in its log), which parses with
//! python3's prometheus_client and shows its own Raft state, the leader's
//! lag per follower and the term.

use std::net::SocketAddr;

use super::harness::*;
use crate::metrics::{nfsstat_count, prometheus_parse, scrape};
use crate::nfs3_ops::getattr;

/// Polls while waiting for a node's log to name its metrics address: 20 s.
const METRICS_LOG_POLLS_MAX: u32 = 400;

/// The `/metrics` address node `id` logged at start.
fn metrics_addr(cl: &mut Cluster, id: u32) -> SocketAddr {
    let log = cl.node(id).log.clone();
    for _ in 0..METRICS_LOG_POLLS_MAX {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .filter(|l| l.contains("metrics listening"))
            .find_map(|l| l.split("addr=").nth(1).and_then(|a| a.split_whitespace().next()?.parse().ok()));
        if let Some(addr) = found {
            return addr;
        }
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
    panic!("node {id} never logged its metrics address");
}

#[test]
fn cluster_stats_come_from_the_leader_on_every_node_and_every_node_serves_metrics() {
    let mut cl = Cluster::start_with_config("stats", "\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let leader = cl.wait_serving(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = cl.connect().await;
        let root = c.root_nfs_fh3();
        for _ in 0..2 {
            getattr(&mut c, &root).await.expect("GETATTR");
        }
    });
    for id in NODE_IDS {
        let out = cl.cli(id, &["stats"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "stats on node {id}: {}", show(&out));
        let first = text.lines().next().unwrap_or_default();
        let expected = if id == leader {
            format!("Answered by node {leader} (serving)")
        } else {
            format!("Answered by node {leader} (the leader, serving; forwarded)")
        };
        assert_eq!(first, expected, "node {id}:\n{text}");
        // Only the two GETATTRs; the harness' probes are NULL calls.
        assert_eq!(nfsstat_count(&text, "Server nfs v3:", "getattr"), 2, "node {id}:\n{text}");
    }
    let follower = Cluster::other_storage(leader);
    let term = cl.term(leader).expect("term");
    for id in NODE_IDS {
        let addr = metrics_addr(&mut cl, id);
        let samples = prometheus_parse(&scrape(addr));
        let has = |line: &str| samples.iter().any(|s| s == line);
        let state = if id == leader { "Leader" } else { "Follower" };
        assert!(has(&format!("hanfs_raft_state {{state={state}}} 1.0")), "node {id}: {}", samples.join("\n"));
        assert!(has(&format!("hanfs_raft_term {{}} {term}.0")), "node {id}: {}", samples.join("\n"));
        assert!(has(&format!("hanfs_serving {{}} {}.0", u8::from(id == leader))), "node {id}");
        let lag_lines = samples.iter().filter(|s| s.starts_with("hanfs_raft_commit_lag_entries ")).count();
        if id == leader {
            assert_eq!(lag_lines, 2, "the leader reports each follower's lag: {}", samples.join("\n"));
            let peer = format!("hanfs_raft_commit_lag_entries {{peer={follower}}} ");
            assert!(samples.iter().any(|s| s.starts_with(&peer)), "{}", samples.join("\n"));
            let promoted = samples.iter().any(|s| s.starts_with("hanfs_promotions_total {} ") && !s.ends_with(" 0.0"));
            assert!(promoted, "the leader counts its promotion: {}", samples.join("\n"));
        } else {
            assert_eq!(lag_lines, 0, "only the leader knows the lag (node {id})");
        }
    }
}
