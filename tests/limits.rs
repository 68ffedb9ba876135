//! Connection limits (issue 11, Deliver 4), against an in-process node on
//! 127.0.0.1: 1,100 idle TCP connections from one address (plus 100 each to
//! MOUNT and portmap), or from 1,100 addresses, do not lock a new client out
//! (it is served: NULL, MOUNT's MNT and GETATTR); the node's counters show
//! the refusals and evictions, and it never holds more than its limits. A client's source address is chosen by binding its
//! socket to another loopback address (127.0.0.0/8 is all local on Linux).
//! Every exchange is bounded by `IO_TIMEOUT_MS`; nothing asserts a time.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use hanfs_server::rpc::limits::{CONNECTIONS_MAX, CONNECTIONS_PER_ADDRESS_DEFAULT};

use crate::util::*;

const NFS_PROGRAM: u32 = 100_003;
const MOUNT_PROGRAM: u32 = 100_005;
const PORTMAP_PROGRAM: u32 = 100_000;
/// Idle connections the attacker opens: more than the node's 1,024.
pub const ATTACK_CONNECTIONS: u32 = 1_100;
/// Connections the attacker also opens to MOUNT and portmap.
const ATTACK_CONNECTIONS_OTHER: u32 = 100;

/// Polls of a counter, `POLL_MS` apart, before giving up.
const POLLS_MAX: u32 = 1000;
const POLL_MS: u64 = 10;

/// An in-process node exporting a temporary directory to everyone.
async fn start_node(label: &str) -> (TempDir, TempDir, hanfs_server::node::Node) {
    start_node_with(label, |_| {}).await
}

/// The same, with `edit` applied to its config first.
async fn start_node_with(
    label: &str,
    edit: impl FnOnce(&mut hanfs_server::config::ServerConfig),
) -> (TempDir, TempDir, hanfs_server::node::Node) {
    init_tracing();
    let export = tempdir(label);
    let state = tempdir(&format!("{label}-state"));
    let mut config = test_config(export.path(), "*(rw,insecure,no_root_squash)", state.path());
    edit(&mut config);
    let node = hanfs_server::node::start(config).await.expect("start the node");
    (export, state, node)
}

/// Wait (bounded) until `read()` reaches `want`; its last value.
async fn reaches(what: &str, want: u64, read: impl Fn() -> u64) -> u64 {
    for _ in 0..POLLS_MAX {
        if read() >= want {
            return read();
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    panic!("{what}: {} of {want} within {} ms", read(), u64::from(POLLS_MAX) * POLL_MS);
}

/// A TCP connection to 127.0.0.1:`port` from `src` (any port).
pub async fn connect_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// One call on `s`: its reply message, or `None` if the connection closed or
/// nothing came within `IO_TIMEOUT_MS`.
pub async fn call_on(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        s.write_all(&frame(msg)).await.ok()?;
        let mut header = [0u8; 4];
        s.read_exact(&mut header).await.ok()?;
        let len = (u32::from_be_bytes(header) & 0x7fff_ffff) as usize;
        if len > REPLY_BYTES_MAX {
            return None;
        }
        let mut reply = vec![0u8; len];
        s.read_exact(&mut reply).await.ok()?;
        Some(reply)
    };
    tokio::time::timeout(Duration::from_millis(IO_TIMEOUT_MS), exchange).await.ok().flatten()
}

/// A client from `src` is served: NULL on NFS and portmap, MNT of
/// `/export`, then GETATTR of the root handle it returned.
pub async fn assert_served_from(src: Ipv4Addr, nfs: u16, mount: u16, portmap: u16) {
    for (port, prog, vers) in [(nfs, NFS_PROGRAM, 3), (portmap, PORTMAP_PROGRAM, 2)] {
        let mut s = connect_from(src, port).await.expect("connect");
        let reply = call_on(&mut s, &call_msg(0x5eed, prog, vers, 0, CRED_NONE, &[])).await;
        let reply = reply.unwrap_or_else(|| panic!("NULL of program {prog} from {src} not answered"));
        assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 0x5eed, stat: SUCCESS, body: vec![] });
    }
    let cred = auth_sys_body(0, 0, &[]);
    let mut args = Vec::new();
    put_opaque(&mut args, EXPORT_NAME.as_bytes());
    let mut m = connect_from(src, mount).await.expect("connect to MOUNT");
    let reply = call_on(&mut m, &call_msg(1, MOUNT_PROGRAM, 3, 1, (1, &cred), &args)).await;
    let reply = reply.unwrap_or_else(|| panic!("MNT from {src} not answered"));
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("MNT refused") };
    let w = words(&body);
    assert_eq!(w[0], 0, "MNT3_OK");
    let fh = body[8..8 + w[1] as usize].to_vec();
    let mut args = Vec::new();
    put_opaque(&mut args, &fh);
    let mut n = connect_from(src, nfs).await.expect("connect to NFS");
    let reply = call_on(&mut n, &call_msg(2, NFS_PROGRAM, 3, 1, (1, &cred), &args)).await;
    let reply = reply.unwrap_or_else(|| panic!("GETATTR from {src} not answered"));
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("GETATTR refused") };
    assert_eq!(words(&body)[0], 0, "NFS3_OK");
}

/// Open `count` connections to `port`, the i-th from `src(i)`; connections
/// the server closes at once stay in the list (the point is that they were
/// attempted).
async fn open_many(count: u32, port: u16, src: impl Fn(u32) -> Ipv4Addr) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for i in 0..count {
        match connect_from(src(i), port).await {
            Ok(s) => streams.push(s),
            Err(e) => panic!("connection {i} of {count} to port {port} failed: {e}"),
        }
    }
    streams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_lock_out_another() {
    let (_export, _state, node) = start_node("limits-one").await;
    let p = node.ports();
    let from_one = |_| Ipv4Addr::LOCALHOST;
    let _nfs = open_many(ATTACK_CONNECTIONS, p.nfs, from_one).await;
    let _mount = open_many(ATTACK_CONNECTIONS_OTHER, p.mount, from_one).await;
    let _portmap = open_many(ATTACK_CONNECTIONS_OTHER, p.portmap, from_one).await;
    let stats = &node.metrics().conn;
    let attempts = u64::from(ATTACK_CONNECTIONS + 2 * ATTACK_CONNECTIONS_OTHER);
    let refused = attempts - CONNECTIONS_PER_ADDRESS_DEFAULT as u64;
    let read = || stats.refused_per_address.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reaches("connections refused per address", refused, read).await, refused);
    assert_eq!(node.services().rpc.conns.count(), CONNECTIONS_PER_ADDRESS_DEFAULT);
    assert_served_from(Ipv4Addr::new(127, 0, 0, 2), p.nfs, p.mount, p.portmap).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_many_addresses_give_way_to_a_new_client() {
    let (_export, _state, node) = start_node("limits-many").await;
    let p = node.ports();
    // 127.1.x.y: one address per connection.
    let distinct = |i: u32| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    let _nfs = open_many(ATTACK_CONNECTIONS, p.nfs, distinct).await;
    let stats = &node.metrics().conn;
    let over = u64::from(ATTACK_CONNECTIONS) - CONNECTIONS_MAX as u64;
    let read = || stats.evicted.load(std::sync::atomic::Ordering::Relaxed);
    reaches("idle connections evicted", over, read).await;
    assert_served_from(Ipv4Addr::new(127, 0, 0, 3), p.nfs, p.mount, p.portmap).await;
    assert!(node.services().rpc.conns.count() <= CONNECTIONS_MAX);
    assert_eq!(stats.refused_total.load(std::sync::atomic::Ordering::Relaxed), 0, "idle ones give way, none refused");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_is_closed_and_counted() {
    let (_export, _state, node) =
        start_node_with("limits-idle", |c| c.limits.idle_timeout = Duration::from_secs(1)).await;
    let p = node.ports();
    let mut s = connect_from(Ipv4Addr::LOCALHOST, p.nfs).await.expect("connect");
    let reply = call_on(&mut s, &call_msg(1, NFS_PROGRAM, 3, 0, CRED_NONE, &[])).await.expect("NULL answered");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 1, stat: SUCCESS, body: vec![] });
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(IO_TIMEOUT_MS * 2), s.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was not closed: {read:?}");
    let stats = &node.metrics().conn;
    reaches("idle closes counted", 1, || stats.idle_closed.load(std::sync::atomic::Ordering::Relaxed)).await;
    let text = hanfs_server::metrics::text::render(node.metrics());
    assert!(text.contains("hanfs_rpc_connections_closed_total{reason=\"idle\"} 1\n"), "{text}");
    assert!(text.contains("hanfs_rpc_limit{limit=\"idle_timeout_seconds\"} 1\n"), "{text}");
    assert!(text.contains("hanfs_rpc_limit{limit=\"connections_per_address_max\"} 64\n"), "{text}");
    node.stop().await;
}
