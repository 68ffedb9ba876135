//! Tests of the Raft glue: openraft's storage suite on the redb stores, the
//! authenticated transport, and an in-process 3-node cluster on loopback
//! (two storage nodes plus a witness) through leader failure and partition.

#![allow(clippy::result_large_err)] // openraft's StorageError, as in the stores

mod cluster;
mod disk_full;
mod early_flush;
mod group_commit;
mod harness;
mod stuck_disk;
mod transport;
mod transport_cost;
mod witness_relay;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::log_store::{bind_identity, open_db, IdentityError, LogStore};
use crate::network::auth::{client_handshake, server_handshake, ClusterSecret};
use crate::sm_store::StateMachineStore;
use crate::types::{typ, NodeId, Role, TypeConfig};
use harness::{listeners, secret, TestNode, CLUSTER, CONVERGE_TIMEOUT, SECRET};

// ---------------------------------------------------------------- storage suite

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), typ::StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let db = open_db(&dir.path().join("raft.redb"))
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        let sm = StateMachineStore::open(db.clone(), None)?;
        let log = LogStore::new(db, &dir.path().join("raft.entries"), 1)
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_redb() -> Result<(), typ::StorageError> {
    Suite::test_all(RedbBuilder)?;
    Ok(())
}

/// A purge returns without waiting for the log's writer or any other write
/// transaction (openraft's core, which renews the lease, awaits it): here
/// while the test holds redb's one write transaction, which a purge that
/// wrote itself (as it did before) would wait for forever. Once the writer
/// has run, the log state shows it.
#[tokio::test]
async fn purge_does_not_wait_for_a_write_transaction() {
    use openraft::storage::RaftLogStorage;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("raft.redb")).expect("open");
    let mut log = LogStore::new(db.clone(), &dir.path().join("raft.entries"), 1).expect("log store");
    let purged = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 5);
    let held = db.begin_write().expect("a write transaction");
    let purge = tokio::time::timeout(std::time::Duration::from_secs(30), log.purge(purged));
    purge.await.expect("purge waited for the held write transaction").expect("purge");
    drop(held);
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(purged));
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
        server_handshake(stream, &ss, server_cluster, 1).await.map(|(id, _)| id)
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let client = client_handshake(stream, &secret(client_secret), client_cluster, 7, 1).await.map(|_| ());
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
    // The server's message 1 did not decrypt; it says so before closing.
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
    assert!(node.peer_server_running(), "accept loop died on bad input");
    node.kill().await;
}

/// A `MakeWriter` that keeps everything logged, for asserting on log lines.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

// Current-thread runtime: every task runs on this thread, under the
// thread-local subscriber installed below.
#[tokio::test]
async fn a_peer_without_the_secret_is_logged_as_refused() {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt().with_writer(log.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, addr) = listeners(1).await.remove(0);
    let node = TestNode::start(1, Role::Storage, &dir, listener, SECRET).await;
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let attempt = client_handshake(stream, &secret(b"guessed-secret-000000"), CLUSTER, 9, 1).await;
    assert!(attempt.is_err(), "a wrong secret was accepted");
    // The server logs the refusal when its side of the handshake ends; poll
    // a bounded number of times for the line.
    let mut logged = false;
    for _ in 0..200 {
        if log.text().contains("peer refused: authentication failed") {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(logged, "refusal not logged; log was:\n{}", log.text());
    node.kill().await;
}
