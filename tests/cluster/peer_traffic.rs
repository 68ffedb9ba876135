//! Peer traffic is encrypted (issue 11 item 11): a frame-aware TCP proxy in
//! the test sits in front of the peer port of every node whose address the
//! membership takes from the routed config (storage 2 and the witness; the
//! node that runs `init` records its own real address), so every
//! AppendEntries from the active to the witness, and to the other storage
//! node when storage 1 leads, crosses a proxy. A client mounts from a
//! loopback address of the test's choosing and creates files with a
//! distinctive name through NFS: the address reaches the witness's state on
//! disk (so it did travel, through a proxy), yet neither it nor the file
//! name ever appears in the proxied streams, which carried more than
//! `PEER_TRAFFIC_BYTES_MIN`.
//! Then the proxy flips one byte of a frame the active sends after the
//! handshake: the receiver refuses it (logs it) and drops the connection,
//! and replication resumes on a new connection.
//! Proxies stop (bounded: every socket polls a stop flag) when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nfs3_client::tokio::TokioIo;
use nfs3_client::MountClient;
use nfs3_types::mount::dirpath;
use nfs3_types::rpc::opaque_auth;
use nfs3_types::xdr_codec::Opaque;
use tokio::net::TcpSocket;

use super::harness::*;
use crate::nfs3_ops::*;
use crate::util::*;

/// Fewer proxied bytes than this and the test could pass without traffic.
const PEER_TRAFFIC_BYTES_MIN: u64 = 32 * 1024;
/// Files created with the distinctive name.
const CANARY_FILES: u32 = 100;
/// Read timeout of the proxy's sockets: how often a pump checks `stop`.
const PUMP_POLL_MS: u64 = 50;
/// Bytes kept per proxied direction (the test's runs stay far below).
const CAPTURE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest frame length the proxy parses (the transport's sealed bound is larger,
/// but nothing this test sends comes near this).
const PROXY_FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Polls (of `POLL_MS`) while waiting for the receiver to drop a tampered connection: 20 s.
const DROP_POLLS_MAX: u32 = 400;
/// Files in each state directory searched for the canary, at most.
const STATE_FILES_MAX: usize = 10_000;

/// What every pump of one proxy shares.
#[derive(Default)]
struct Tap {
    stop: AtomicBool,
    /// Bytes forwarded, both directions.
    bytes: AtomicU64,
    /// Each direction's bytes as they arrived at the proxy.
    captured: Mutex<Vec<Vec<u8>>>,
    /// Flip one byte of the next client-to-node frame after the handshake.
    tamper_next: AtomicBool,
    /// Connections whose client-to-node stream had a byte flipped.
    tampered: Mutex<BTreeSet<u64>>,
    /// Which side closed each connection first.
    first_closer: Mutex<BTreeMap<u64, Side>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The connecting node (the Raft client).
    Client,
    /// The node behind the proxy (the peer server).
    Node,
}

/// A proxy on a loopback port forwarding to one node's real peer port.
struct Proxy {
    node: u32,
    port: u16,
    tap: Arc<Tap>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    fn start(node: u32, target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let tap = Arc::new(Tap::default());
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (t, th) = (tap.clone(), threads.clone());
        let accept = std::thread::spawn(move || {
            let target = SocketAddr::from(([127, 0, 0, 1], target_port));
            let mut next_conn = 0u64;
            while !t.stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(PUMP_POLL_MS / 5));
                    continue;
                };
                let Ok(node) = TcpStream::connect(target) else { continue };
                let conn = next_conn;
                next_conn += 1;
                for (from, to, frames) in [(&client, &node, true), (&node, &client, false)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                    let t = t.clone();
                    let pump = std::thread::spawn(move || pump(from, to, frames, conn, &t));
                    th.lock().unwrap_or_else(|p| p.into_inner()).push(pump);
                }
            }
        });
        threads.lock().unwrap_or_else(|p| p.into_inner()).push(accept);
        Proxy { node, port, tap, threads }
    }

    fn stop(&self) {
        self.tap.stop.store(true, Ordering::SeqCst);
        // The accept thread may still add pumps until it sees `stop`: join until none is left.
        loop {
            let Some(t) = self.threads.lock().unwrap_or_else(|p| p.into_inner()).pop() else { break };
            let _ = t.join();
        }
    }

    fn captured(&self) -> Vec<Vec<u8>> {
        self.tap.captured.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copy `from` to `to` until either side closes or the tap stops. With
/// `frames` (client to node), forward whole length-prefixed frames and flip
/// one byte in the middle of a frame after the first when the tap asks.
fn pump(mut from: TcpStream, mut to: TcpStream, frames: bool, conn: u64, tap: &Tap) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(PUMP_POLL_MS)));
    let slot = {
        let mut captured = tap.captured.lock().unwrap_or_else(|p| p.into_inner());
        captured.push(Vec::new());
        captured.len() - 1
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut frame_index = 0u64;
    let mut eof = false;
    while !tap.stop.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(_) => {
                eof = true;
                break;
            }
        };
        let got = &buf[..n];
        tap.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = tap.captured.lock().unwrap_or_else(|p| p.into_inner()).get_mut(slot) {
            if c.len() + n <= CAPTURE_BYTES_MAX {
                c.extend_from_slice(got);
            }
        }
        if !frames {
            if to.write_all(got).is_err() {
                break;
            }
            continue;
        }
        pending.extend_from_slice(got);
        while pending.len() >= 4 {
            let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
            assert!(len <= PROXY_FRAME_BYTES_MAX, "peer frame of {len} bytes");
            if pending.len() < 4 + len {
                break;
            }
            let mut frame: Vec<u8> = pending.drain(..4 + len).collect();
            if frame_index >= 1 && len > 0 && tap.tamper_next.swap(false, Ordering::SeqCst) {
                frame[4 + len / 2] ^= 0x01;
                tap.tampered.lock().unwrap_or_else(|p| p.into_inner()).insert(conn);
            }
            frame_index += 1;
            if to.write_all(&frame).is_err() {
                eof = true;
                break;
            }
        }
    }
    if eof {
        let side = if frames { Side::Client } else { Side::Node };
        tap.first_closer.lock().unwrap_or_else(|p| p.into_inner()).entry(conn).or_insert(side);
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A cluster whose peer ports (as the membership records them) are proxies.
fn proxied_cluster(label: &str) -> (Cluster, Vec<Proxy>) {
    let mut proxies = Vec::new();
    let cl = Cluster::start_routed(label, &mut |node, real| {
        let p = Proxy::start(node, real);
        let port = p.port;
        proxies.push(p);
        port
    });
    (cl, proxies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Does any file under `dir` (depth-first, bounded) contain `needle`?
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            seen += 1;
            if seen > STATE_FILES_MAX {
                return false;
            }
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && std::fs::read(&path).is_ok_and(|bytes| contains(&bytes, needle)) => {
                    return true;
                }
                _ => {}
            }
        }
    }
    false
}

/// MNT from `source` (a loopback address of the test's choosing) through the
/// service address: the mount, with the client's address, goes into the
/// replicated rmtab.
async fn mount_from(cl: &Cluster, source: Ipv4Addr) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind the client's source address");
    let stream = socket.connect(SocketAddr::from((cl.service, cl.ports.mount))).await.expect("connect MOUNT");
    let mut c = MountClient::new_with_auth(TokioIo::new(stream), auth_sys(0, 0, &[]), opaque_auth::default());
    let export = dirpath(Opaque::owned(EXPORT_NAME.as_bytes().to_vec()));
    tokio::time::timeout(Duration::from_millis(MOUNT_TIMEOUT_MS), c.mnt(export))
        .await
        .expect("MNT timed out")
        .expect("MNT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_peer_traffic_carries_no_plaintext_file_name_or_client_address() {
    let (mut cl, proxies) = proxied_cluster("noise-capture");
    let active = cl.wait_serving(&[]);
    // Two needles: a client address (the rmtab and every DRC key carry it)
    // and a file name (carried once calls' intents record their arguments).
    let pid = std::process::id();
    let client = Ipv4Addr::new(127, 83, (pid % 200) as u8 + 20, 229);
    let file = format!("noise-canary-{pid}-Qz7");
    mount_from(&cl, client).await;
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    for i in 0..CANARY_FILES {
        create(&mut c, &root, &format!("{file}-{i}")).await.unwrap_or_else(|e| panic!("create {i}: {e:?}"));
    }
    cl.wait_caught_up(WITNESS, active);
    cl.wait_caught_up(Cluster::other_storage(active), active);
    // The client address did travel: the witness, which is reached only
    // through its proxy, has it on disk.
    let client = client.to_string();
    let witness_state = cl.node(WITNESS).state_dir.clone();
    assert!(
        any_file_contains(&witness_state, client.as_bytes()),
        "client address {client} never reached the witness's state directory: nothing to look for on the wire"
    );
    for p in &proxies {
        p.stop();
    }
    let total: u64 = proxies.iter().map(|p| p.tap.bytes.load(Ordering::Relaxed)).sum();
    println!("peer_traffic: {total} bytes crossed the proxies");
    assert!(total > PEER_TRAFFIC_BYTES_MIN, "only {total} bytes of peer traffic crossed the proxies");
    for needle in [client.as_bytes(), file.as_bytes()] {
        for p in &proxies {
            for (i, stream) in p.captured().iter().enumerate() {
                assert!(
                    !contains(stream, needle),
                    "{:?} crossed the proxy of node {} in clear (stream {i}, {} bytes)",
                    String::from_utf8_lossy(needle),
                    p.node,
                    stream.len()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tampered_peer_frame_is_refused_and_the_connection_dropped() {
    let (mut cl, proxies) = proxied_cluster("noise-tamper");
    cl.wait_serving(&[]);
    // The witness's proxy: the active's AppendEntries to it always cross it.
    let proxy = proxies.iter().find(|p| p.node == WITNESS).expect("the witness's proxy");
    proxy.tap.tamper_next.store(true, Ordering::SeqCst);
    let mut dropped = None;
    for _ in 0..DROP_POLLS_MAX {
        let tampered = proxy.tap.tampered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let closers = proxy.tap.first_closer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(conn) = tampered.iter().find(|c| closers.contains_key(c)) {
            dropped = Some((*conn, closers[conn]));
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    let (conn, closer) = dropped.expect("the connection carrying a tampered frame was never closed");
    assert_eq!(closer, Side::Node, "connection {conn}: the sender closed it first, not the receiver");
    let log = std::fs::read_to_string(&cl.node(WITNESS).log).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("peer frame refused") && l.contains("failed authentication")),
        "the witness did not log the refused frame"
    );
    // Replication goes on over a new connection.
    let mut c = cl.connect().await;
    let root = c.root_nfs_fh3();
    create(&mut c, &root, "after-tamper").await.expect("create after the tampered frame");
    let now_active = cl.wait_serving(&[]);
    cl.wait_caught_up(WITNESS, now_active);
    drop(proxies);
}
