//! The in-process cluster harness: nodes on loopback with real redb stores,
//! the authenticated transport and the leadership watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hanfs_state::{Command, State};
use openraft::{EntryPayload, RaftLogReader, RaftMetrics};
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::cluster::{RaftNode, RaftNodeOptions};
use crate::lease::Leadership;
use crate::membership::raft_config;
use crate::network::auth::ClusterSecret;
use crate::types::{typ, Applied, NodeId, PeerNode, Role};

pub const CLUSTER: &str = "test-cluster";
pub const SECRET: &[u8] = b"0123456789abcdef-test-secret";
/// Upper bound on any wait for the cluster to converge (never asserted as a
/// duration; only a bound so a broken build fails instead of hanging).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn secret(bytes: &[u8]) -> ClusterSecret {
    ClusterSecret::new(bytes).expect("valid test secret")
}

pub struct TestNode {
    pub node: RaftNode,
    pub leadership: tokio::sync::watch::Receiver<Leadership>,
}

impl std::ops::Deref for TestNode {
    type Target = RaftNode;
    fn deref(&self) -> &RaftNode {
        &self.node
    }
}

impl TestNode {
    pub async fn start(id: NodeId, role: Role, dir: &TempDir, listener: TcpListener, key: &[u8]) -> TestNode {
        let config = raft_config(CLUSTER, role).expect("config");
        Self::start_with(id, role, dir, listener, key, config).await
    }

    pub async fn start_with(
        id: NodeId,
        role: Role,
        dir: &TempDir,
        listener: TcpListener,
        key: &[u8],
        config: Arc<openraft::Config>,
    ) -> TestNode {
        let mut opts =
            RaftNodeOptions::new(id, role, CLUSTER.to_string(), dir.path().join(format!("node{id}")), secret(key));
        opts.config = Some(config);
        let node = RaftNode::start(opts, listener).await.expect("start node");
        let leadership = node.leadership();
        TestNode { node, leadership }
    }

    /// Kill the node in-process: close its listener and every peer
    /// connection at once, stop Raft.
    pub async fn kill(self) {
        tokio::time::timeout(CONVERGE_TIMEOUT, self.node.shutdown()).await.expect("shutdown ends").expect("shutdown");
    }

    /// Wait until the leadership watch says we may serve; returns the term.
    pub async fn wait_serving(&mut self) -> u64 {
        let seen = tokio::time::timeout(
            CONVERGE_TIMEOUT,
            self.leadership.wait_for(|l| matches!(l, Leadership::Leader { .. })),
        )
        .await
        .expect("node never got to serve")
        .expect("watch alive");
        match *seen {
            Leadership::Leader { term } => term,
            Leadership::Follower => unreachable!("wait_for returned a non-matching value"),
        }
    }

    pub async fn wait_leader(&self, leader: NodeId, why: &str) {
        self.raft.wait(Some(CONVERGE_TIMEOUT)).current_leader(leader, why).await.expect(why);
    }

    /// Wait (bounded) until this node has applied `index` or more.
    pub async fn wait_applied(&self, index: Option<u64>, why: &str) {
        self.raft.wait(Some(CONVERGE_TIMEOUT)).applied_index_at_least(index, why).await.expect(why);
    }

    /// Wait (bounded) until this node's log reaches `index` or more.
    pub async fn wait_log(&self, index: Option<u64>, why: &str) {
        self.raft.wait(Some(CONVERGE_TIMEOUT)).log_index_at_least(index, why).await.expect(why);
    }

    /// Wait (bounded) until `cond` holds on this node's metrics.
    pub async fn wait_metrics(&self, why: &str, cond: impl Fn(&RaftMetrics<NodeId, PeerNode>) -> bool + Send) {
        self.raft.wait(Some(CONVERGE_TIMEOUT)).metrics(cond, why).await.expect(why);
    }

    /// The `Normal` commands in this node's log, in order.
    pub async fn logged_commands(&self) -> Vec<Command> {
        let mut reader = self.log.clone();
        let entries = reader.try_get_log_entries(0..).await.expect("read log");
        entries
            .into_iter()
            .filter_map(|e| match e.payload {
                EntryPayload::Normal(cmd) => Some(cmd),
                _ => None,
            })
            .collect()
    }
}

pub async fn listeners(n: usize) -> Vec<(TcpListener, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        out.push((l, addr));
    }
    out
}

/// Nodes 1 and 2 are storage nodes, node 3 the witness. `keys[i]` is node
/// i+1's secret. The cluster is initialized from node 1.
pub async fn start_cluster(dir: &TempDir, keys: [&[u8]; 3]) -> Vec<TestNode> {
    start_cluster_chunked(dir, keys, crate::membership::SNAPSHOT_CHUNK_BYTES).await
}

/// `start_cluster` with every node sending snapshots in `chunk_bytes` chunks.
pub async fn start_cluster_chunked(dir: &TempDir, keys: [&[u8]; 3], chunk_bytes: u64) -> Vec<TestNode> {
    let roles = [Role::Storage, Role::Storage, Role::Witness];
    let mut members = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, (listener, addr)) in listeners(3).await.into_iter().enumerate() {
        let id = i as NodeId + 1;
        members.insert(id, PeerNode { addr, role: roles[i] });
        let mut config = (*raft_config(CLUSTER, roles[i]).expect("config")).clone();
        config.snapshot_max_chunk_size = chunk_bytes;
        nodes.push(TestNode::start_with(id, roles[i], dir, listener, keys[i], Arc::new(config)).await);
    }
    nodes[0].bootstrap(members).await.expect("initialize");
    nodes[0].wait_leader(1, "node 1 leads after init").await;
    nodes
}

pub fn mount(i: u32) -> Command {
    Command::Mount { client: format!("10.0.0.{i}"), path: "/export".to_string() }
}

/// Why two nodes' applied states could not be shown equal.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SameStateError {
    #[error("a state lock is poisoned")]
    Poisoned,
    #[error("{a:?} != {b:?}")]
    Differ { a: Box<State>, b: Box<State> },
}

/// Compare two nodes' applied states (both must have applied the same index).
pub fn same_state(a: &TestNode, b: &TestNode) -> Result<(), SameStateError> {
    let sa = a.sm.state().read().map_err(|_| SameStateError::Poisoned)?.clone();
    let sb = b.sm.state().read().map_err(|_| SameStateError::Poisoned)?.clone();
    if sa == sb {
        Ok(())
    } else {
        Err(SameStateError::Differ { a: Box::new(sa), b: Box::new(sb) })
    }
}

pub async fn write(raft: &typ::Raft, cmd: Command) -> typ::LogId {
    let resp = raft.client_write(cmd).await.expect("client_write");
    assert!(matches!(resp.data, Applied::Ok(_)), "{:?}", resp.data);
    resp.log_id
}
