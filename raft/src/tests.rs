//! Tests of the Raft glue: openraft's storage suite on the redb stores, the
//! authenticated transport, and an in-process 3-node cluster on loopback
//! (two storage nodes plus a witness) through leader failure and partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hanfs_state::Command;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, ServerState};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::lease::{spawn_leadership_watch, LeaseClock, Leadership};
use crate::log_store::{bind_identity, open_db, IdentityError, LogStore};
use crate::membership::{initialize, raft_config, MembershipError};
use crate::network::auth::{client_handshake, server_handshake, ClusterSecret};
use crate::network::client::PeerNetwork;
use crate::network::server::PeerServer;
use crate::network::Faults;
use crate::sm_store::StateMachineStore;
use crate::types::{typ, Applied, NodeId, PeerNode, Role, TypeConfig};

const CLUSTER: &str = "test-cluster";
const SECRET: &[u8] = b"0123456789abcdef-test-secret";
/// Upper bound on any wait for the cluster to converge (never asserted as a
/// duration; only a bound so a broken build fails instead of hanging).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- storage suite

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), typ::StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let db = open_db(&dir.path().join("raft.redb"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let sm = StateMachineStore::open(db.clone())?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_redb() -> Result<(), typ::StorageError> {
    Suite::test_all(RedbBuilder)?;
    Ok(())
}

#[test]
fn identity_binding_refuses_another_cluster_or_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("raft.redb")).expect("open");
    bind_identity(&db, "alpha", 1).expect("first bind");
    bind_identity(&db, "alpha", 1).expect("same identity again");
    let wrong_cluster = bind_identity(&db, "beta", 1);
    assert!(matches!(wrong_cluster, Err(IdentityError::Mismatch { .. })), "{wrong_cluster:?}");
    let wrong_node = bind_identity(&db, "alpha", 2);
    assert!(matches!(wrong_node, Err(IdentityError::Mismatch { .. })), "{wrong_node:?}");
}

// ---------------------------------------------------------------- transport auth

fn secret(bytes: &[u8]) -> ClusterSecret {
    ClusterSecret::new(bytes).expect("valid test secret")
}

/// Run one handshake between a server with `server_secret`/`server_cluster`
/// and a client with `client_secret`/`client_cluster`.
async fn handshake_pair(
    server_secret: &[u8],
    server_cluster: &'static str,
    client_secret: &[u8],
    client_cluster: &'static str,
) -> (std::io::Result<NodeId>, std::io::Result<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ss = secret(server_secret);
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        server_handshake(stream, &ss, server_cluster).await.map(|(id, _)| id)
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let client = client_handshake(stream, &secret(client_secret), client_cluster, 7).await.map(|_| ());
    let server = tokio::time::timeout(CONVERGE_TIMEOUT, server).await.expect("server ends").expect("join");
    (server, client)
}

#[tokio::test]
async fn handshake_with_the_secret_succeeds() {
    let (server, client) = handshake_pair(SECRET, CLUSTER, SECRET, CLUSTER).await;
    assert_eq!(server.expect("server accepts"), 7);
    client.expect("client accepts");
}

#[tokio::test]
async fn handshake_without_the_secret_is_refused_on_both_sides() {
    let (server, client) = handshake_pair(SECRET, CLUSTER, b"another-secret-of-16+bytes", CLUSTER).await;
    let server_err = server.expect_err("server must refuse a wrong secret");
    assert_eq!(server_err.kind(), std::io::ErrorKind::PermissionDenied);
    // The client notices first: the server's proof does not verify with its key.
    let client_err = client.expect_err("client must refuse a server without our secret");
    assert_eq!(client_err.kind(), std::io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn handshake_into_another_cluster_is_refused() {
    let (server, client) = handshake_pair(SECRET, CLUSTER, SECRET, "other-cluster").await;
    assert_eq!(server.expect_err("refused").kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(client.expect_err("refused").kind(), std::io::ErrorKind::PermissionDenied);
}

#[test]
fn short_secret_and_loose_permissions_are_rejected() {
    assert!(ClusterSecret::new(b"  short \n").is_err());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, SECRET).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(ClusterSecret::from_file(&path).is_err(), "world-readable secret must be refused");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ClusterSecret::from_file(&path).expect("0600 secret is accepted");
}

// ---------------------------------------------------------------- cluster harness

struct TestNode {
    role: Role,
    raft: typ::Raft,
    log: LogStore,
    sm: StateMachineStore,
    faults: Faults,
    lease: LeaseClock,
    leadership: tokio::sync::watch::Receiver<Leadership>,
    server: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl TestNode {
    async fn start(id: NodeId, role: Role, dir: &TempDir, listener: TcpListener, key: &[u8]) -> TestNode {
        let config = raft_config(CLUSTER, role).expect("config");
        Self::start_with(id, role, dir, listener, key, config).await
    }

    async fn start_with(
        id: NodeId,
        role: Role,
        dir: &TempDir,
        listener: TcpListener,
        key: &[u8],
        config: Arc<openraft::Config>,
    ) -> TestNode {
        let db = open_db(&dir.path().join(format!("node{id}.redb"))).expect("open db");
        bind_identity(&db, CLUSTER, id).expect("identity");
        let log = LogStore::new(db.clone());
        let sm = StateMachineStore::open(db).expect("open sm");
        let faults = Faults::default();
        let lease = LeaseClock::default();
        let network = PeerNetwork {
            self_id: id,
            cluster: CLUSTER.to_string(),
            secret: secret(key),
            faults: faults.clone(),
            lease: lease.clone(),
        };
        let raft = typ::Raft::new(id, config, network, log.clone(), sm.clone()).await.expect("raft");
        let server = PeerServer { raft: raft.clone(), cluster: CLUSTER.to_string(), secret: secret(key), faults: faults.clone() }
            .spawn(listener);
        let (leadership, watch) = spawn_leadership_watch(raft.clone(), role, lease.clone());
        TestNode { role, raft, log, sm, faults, lease, leadership, server, watch }
    }

    /// Kill the node in-process: stop Raft and close its listener and every
    /// peer connection at once.
    async fn kill(self) {
        self.server.abort();
        let _ = self.server.await;
        self.raft.shutdown().await.expect("raft shutdown");
        // The watch ends by itself once Raft's metrics channel closes.
        tokio::time::timeout(CONVERGE_TIMEOUT, self.watch).await.expect("watch ends").expect("watch join");
    }

    /// Wait until the leadership watch says we may serve; returns the term.
    async fn wait_serving(&mut self) -> u64 {
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

    async fn wait_leader(&self, leader: NodeId, why: &str) {
        self.raft.wait(Some(CONVERGE_TIMEOUT)).current_leader(leader, why).await.expect(why);
    }

    /// The `Normal` commands in this node's log, in order.
    async fn logged_commands(&self) -> Vec<Command> {
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

async fn listeners(n: usize) -> Vec<(TcpListener, String)> {
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
async fn start_cluster(dir: &TempDir, keys: [&[u8]; 3]) -> Vec<TestNode> {
    start_cluster_chunked(dir, keys, crate::membership::SNAPSHOT_CHUNK_BYTES).await
}

/// `start_cluster` with every node sending snapshots in `chunk_bytes` chunks.
async fn start_cluster_chunked(dir: &TempDir, keys: [&[u8]; 3], chunk_bytes: u64) -> Vec<TestNode> {
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
    initialize(&nodes[0].raft, Role::Storage, members).await.expect("initialize");
    nodes[0].wait_leader(1, "node 1 leads after init").await;
    nodes
}

fn mount(i: u32) -> Command {
    Command::Mount { client: format!("10.0.0.{i}"), path: "/export".to_string() }
}

/// Compare two nodes' applied states (both must have applied the same index).
fn same_state(a: &TestNode, b: &TestNode) -> Result<(), String> {
    let sa = a.sm.state().read().map_err(|e| e.to_string())?.clone();
    let sb = b.sm.state().read().map_err(|e| e.to_string())?.clone();
    if sa == sb {
        Ok(())
    } else {
        Err(format!("{sa:?} != {sb:?}"))
    }
}

async fn write(raft: &typ::Raft, cmd: Command) -> typ::LogId {
    let resp = raft.client_write(cmd).await.expect("client_write");
    assert_eq!(resp.data, Applied::Ok);
    resp.log_id
}

// ---------------------------------------------------------------- cluster tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_every_committed_command_and_skips_the_witness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    assert_eq!(nodes[2].role, Role::Witness);

    // Initializing cannot happen twice, nor from the witness.
    let again = initialize(&nodes[1].raft, Role::Storage, BTreeMap::new()).await;
    assert!(matches!(again, Err(MembershipError::AlreadyInitialized)), "{again:?}");
    let on_witness = initialize(&nodes[2].raft, Role::Witness, BTreeMap::new()).await;
    assert!(matches!(on_witness, Err(MembershipError::InitOnWitness)), "{on_witness:?}");

    let first_term = nodes[0].wait_serving().await;
    let written: Vec<Command> = (0..20).map(mount).collect();
    for cmd in &written {
        write(&nodes[0].raft, cmd.clone()).await;
    }
    let last = write(&nodes[0].raft, Command::BumpEpoch).await;

    // A command the state machine refuses is an answer, not a storage error:
    // the log moves on and every node refuses it identically.
    let bad = Command::PutHandles(vec![hanfs_state::HandleEntry {
        export_id: 9,
        ino: 5,
        ident: 1,
        parent_ino: 5,
        name: Vec::new(),
    }]);
    let refused = nodes[0].raft.client_write(bad).await.expect("client_write");
    assert!(matches!(refused.data, Applied::Rejected { .. }), "{:?}", refused.data);
    assert_eq!(nodes[0].sm.state().read().expect("state lock").handle_count(), 0);

    // Kill the leader.
    let old = nodes.remove(0);
    old.kill().await;

    // Node 2 (storage) takes over and may serve; the witness never stands.
    nodes[0].wait_leader(2, "node 2 becomes leader").await;
    let second_term = nodes[0].wait_serving().await;
    assert!(second_term > first_term);
    nodes[1].wait_leader(2, "the witness follows node 2").await;
    assert_eq!(*nodes[1].leadership.borrow(), Leadership::Follower);
    assert_eq!(nodes[1].raft.metrics().borrow().state, ServerState::Follower);

    // Every committed command is in the new leader's log and applied (the
    // watch only reports Leader after everything committed is applied).
    let logged = nodes[0].logged_commands().await;
    assert_eq!(logged.get(..written.len()), Some(&written[..]), "new leader lost committed commands");
    assert_eq!(logged.get(written.len()), Some(&Command::BumpEpoch));
    assert!(nodes[0].sm.last_applied().map(|l| l.index) >= Some(last.index));

    let state = nodes[0].sm.state();
    assert_eq!(state.read().expect("state lock").rmtab_len(), written.len() as u64);
    assert_eq!(state.read().expect("state lock").epoch(), 1, "the epoch bump before the failover survives");

    // The surviving storage node and the witness are a quorum: writes go on.
    let after = write(&nodes[0].raft, mount(99)).await;
    assert!(after.index > last.index);
    assert_eq!(nodes[1].logged_commands().await.last(), Some(&mount(99)));
    nodes[1]
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .applied_index_at_least(Some(after.index), "witness applies")
        .await
        .expect("witness applied");
    assert_eq!(same_state(&nodes[0], &nodes[1]), Ok(()), "witness state differs from the leader's");

    for node in nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_never_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(&dir, [SECRET, SECRET, b"not-the-cluster-secret!!"]).await;
    write(&nodes[0].raft, mount(1)).await;
    write(&nodes[0].raft, mount(2)).await;
    // Nodes 1 and 2 commit without the impostor; it receives nothing. Give
    // replication many heartbeats' worth of chances to (wrongly) reach it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(nodes[2].logged_commands().await.is_empty(), "a peer without the secret got log entries");
    assert_eq!(nodes[2].raft.metrics().borrow().current_leader, None);
    assert_eq!(nodes[1].logged_commands().await, vec![mount(1), mount(2)]);
    for node in nodes {
        node.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_serving_before_the_new_leader_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(&dir, [SECRET, SECRET, SECRET]).await;
    nodes[0].wait_serving().await;
    write(&nodes[0].raft, mount(1)).await;

    // Cut node 1 off from both peers, in both directions.
    nodes[0].faults.block(2);
    nodes[0].faults.block(3);
    nodes[1].faults.block(1);
    nodes[2].faults.block(1);

    // Node 2 gets to serve. At that moment node 1 must no longer hold a lease
    // (it is still Raft leader of the old term: it has heard of no other).
    nodes[1].wait_serving().await;
    let old_metrics = nodes[0].raft.metrics().borrow().clone();
    assert!(!nodes[0].lease.holds(&old_metrics), "old leader still holds its lease when the new one serves");
    assert_eq!(*nodes[0].leadership.borrow(), Leadership::Follower, "old leader still serving");
    write(&nodes[1].raft, mount(2)).await;

    // Heal: node 1 rejoins as follower and catches up.
    for node in &nodes {
        node.faults.heal();
    }
    nodes[0].wait_leader(2, "node 1 follows node 2 after healing").await;
    let leader_last = nodes[1].raft.metrics().borrow().last_log_index;
    nodes[0]
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .log_index_at_least(leader_last, "node 1 catches up")
        .await
        .expect("catch up");
    assert_eq!(nodes[0].logged_commands().await, vec![mount(1), mount(2)]);
    assert_eq!(*nodes[0].leadership.borrow(), Leadership::Follower);
    for node in nodes {
        node.kill().await;
    }
}

/// Snapshot chunk size for the rejoin test, so even a small state machine is
/// sent in several chunks.
const TEST_CHUNK_BYTES: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_an_empty_disk_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster_chunked(&dir, [SECRET, SECRET, SECRET], TEST_CHUNK_BYTES).await;
    let written: Vec<Command> = (0..30).map(mount).collect();
    let mut last = None;
    for cmd in &written {
        last = Some(write(&nodes[0].raft, cmd.clone()).await);
    }
    let last = last.expect("wrote");

    // Snapshot on the leader and purge its log, so the log alone cannot
    // bring a new follower up to date.
    nodes[0].raft.trigger().snapshot().await.expect("trigger snapshot");
    nodes[0]
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .snapshot(last, "leader snapshot covers the writes")
        .await
        .expect("snapshot");
    nodes[0].raft.trigger().purge_log(last.index).await.expect("purge");
    nodes[0]
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .purged(Some(last), "leader log purged")
        .await
        .expect("purged");

    // Node 2 dies and comes back on an empty disk with the same id and address.
    let old = nodes.remove(1);
    let addr = old.raft.metrics().borrow().membership_config.membership().get_node(&2).expect("member").addr.clone();
    old.kill().await;
    std::fs::remove_file(dir.path().join("node2.redb")).expect("wipe node 2");
    let listener = TcpListener::bind(&addr).await.expect("rebind node 2's address");
    let mut config = (*raft_config(CLUSTER, Role::Storage).expect("config")).clone();
    config.snapshot_max_chunk_size = TEST_CHUNK_BYTES;
    let fresh = TestNode::start_with(2, Role::Storage, &dir, listener, SECRET, Arc::new(config)).await;

    fresh
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .snapshot(last, "rejoined node installed the leader's snapshot")
        .await
        .expect("snapshot installed");
    assert!(fresh.sm.last_applied().map(|l| l.index) >= Some(last.index));
    // The purged entries never reached it through the log.
    assert!(fresh.logged_commands().await.is_empty());

    // It keeps following: a new write reaches it through the log.
    let next = write(&nodes[0].raft, mount(77)).await;
    fresh
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .applied_index_at_least(Some(next.index), "rejoined node applies new writes")
        .await
        .expect("applied");
    assert_eq!(fresh.logged_commands().await, vec![mount(77)]);
    nodes[0]
        .raft
        .wait(Some(CONVERGE_TIMEOUT))
        .applied_index_at_least(Some(next.index), "leader applied")
        .await
        .expect("leader applied");
    assert_eq!(same_state(&nodes[0], &fresh), Ok(()), "rejoined node's state differs");
    assert_eq!(fresh.sm.state().read().expect("state lock").rmtab_len(), 31);
    nodes.push(fresh);
    for node in nodes {
        node.kill().await;
    }
}

#[tokio::test]
async fn garbage_and_oversize_frames_are_dropped_without_harm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ls = listeners(1).await;
    let (listener, addr) = ls.remove(0);
    let node = TestNode::start(1, Role::Storage, &dir, listener, SECRET).await;
    // An oversize length prefix, then garbage: the server must close, not allocate.
    for payload in [vec![0xff, 0xff, 0xff, 0xff], vec![0, 0, 0, 3, 1, 2, 3]] {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(&payload).await.expect("write");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(CONVERGE_TIMEOUT, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .expect("server closes")
            .unwrap_or(0);
        assert_eq!(n, 0, "server answered a bad frame");
    }
    assert!(!node.server.is_finished(), "accept loop died on bad input");
    node.kill().await;
}

