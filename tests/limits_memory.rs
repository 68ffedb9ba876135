//! Reply memory is bounded (issue 11, Deliver 4): 20 connections pipeline
//! 1 MiB READs to the real `hanfs-server` binary and never read a reply. The
//! server pauses each of them once its replies are not being written, so
//! its `hanfs_rpc_reply_bytes` gauge stays within the bound of 20 paused
//! connections and its resident memory (`VmRSS`) grows by tens of MiB, not
//! by the 640 MiB the READs would produce; a well-behaved client is served
//! meanwhile. The run samples until the READ count stops moving; every wait
//! is bounded, nothing asserts a time.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hanfs_server::rpc::limits::CONN_REPLY_BYTES_MAX;

use crate::metrics::scrape;
use crate::util::*;

const NFS_PROGRAM: u32 = 100_003;
const MOUNT_PROGRAM: u32 = 100_005;
/// Connections that never read their replies.
const DEAF_CONNECTIONS: usize = 20;
/// 1 MiB READs each of them sends.
const READS_PER_CONNECTION: u64 = 32;
const READ_BYTES: u32 = 1024 * 1024;
/// Samples of the gauge and VmRSS, `SAMPLE_MS` apart, at most; the run
/// stops earlier once the READ count held still for `STILL_SAMPLES`.
const SAMPLES_MAX: u32 = 400;
const SAMPLE_MS: u64 = 50;
const STILL_SAMPLES: u32 = 20;
/// Allowed growth of the server's VmRSS: the paused connections' replies
/// (`CONN_REPLY_BYTES_MAX` plus one reply each) and 64 MiB for everything
/// else (allocator slack, the well-behaved client, buffers).
const RSS_GROWTH_BYTES_MAX: u64 =
    (DEAF_CONNECTIONS as u64) * (CONN_REPLY_BYTES_MAX as u64 + READ_BYTES as u64) + 64 * 1024 * 1024;
/// Polls for the server to answer at start.
const START_POLLS_MAX: u32 = 400;
const START_POLL_MS: u64 = 50;
/// Starts tried (fresh ports each) before the test fails.
const START_ATTEMPTS: u32 = 3;

/// A port free for TCP and UDP on 127.0.0.1 (MOUNT and portmap bind both).
fn free_port() -> u16 {
    for _ in 0..64 {
        let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else { continue };
        let Ok(addr) = tcp.local_addr() else { continue };
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, addr.port())).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port found");
}

/// The binary, killed on drop.
struct Server {
    child: Child,
    nfs: u16,
    mount: u16,
    metrics: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary on fresh ports; a start that exits (a port taken by
/// another test between `free_port` and the bind) is retried with new ones,
/// `START_ATTEMPTS` times at most.
fn start(export: &std::path::Path, state: &std::path::Path) -> Server {
    let log = state.join("server.log");
    for _ in 0..START_ATTEMPTS {
        if let Some(server) = try_start(export, state, &log) {
            return server;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    panic!("hanfs-server exited at start {START_ATTEMPTS} times; its log:\n{text}");
}

fn try_start(export: &std::path::Path, state: &std::path::Path, log: &std::path::Path) -> Option<Server> {
    let (portmap, nfs, mount) = (free_port(), free_port(), free_port());
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let out = std::fs::File::create(log).expect("create the server log");
    let err = out.try_clone().expect("clone the log");
    let child = Command::new(server_binary())
        .args(["run", "--export"])
        .arg(export)
        .args(["--clients", "*(rw,insecure,no_root_squash)", "--listen", "127.0.0.1"])
        .args(["--portmap-port", &portmap.to_string(), "--nfs-port", &nfs.to_string()])
        .args(["--mount-port", &mount.to_string(), "--metrics", &metrics.to_string()])
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start hanfs-server");
    let mut server = Server { child, nfs, mount, metrics };
    for _ in 0..START_POLLS_MAX {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, nfs)).is_ok() {
            assert_serves_null(nfs, NFS_PROGRAM, 3);
            return Some(server);
        }
        if matches!(server.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(START_POLL_MS));
    }
    panic!("hanfs-server did not answer within {} ms", u64::from(START_POLLS_MAX) * START_POLL_MS);
}

fn vm_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// The value of the first sample of `name` (with `labels`, if any) in `text`.
fn sample(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}{labels} in /metrics"))
}

fn reads_called(text: &str) -> u64 {
    sample(text, "hanfs_rpc_calls_total", "{program=\"nfs\",version=\"3\",procedure=\"READ\"}")
}

/// A handle from a MOUNT or LOOKUP result body at word `at` (length, bytes).
fn handle_at(body: &[u8], at: usize) -> Vec<u8> {
    let len = words(body)[at] as usize;
    body[(at + 1) * 4..(at + 1) * 4 + len].to_vec()
}

fn read_args(fh: &[u8]) -> Vec<u8> {
    let mut args = Vec::new();
    put_opaque(&mut args, fh);
    args.extend_from_slice(&0u64.to_be_bytes());
    put_u32(&mut args, READ_BYTES);
    args
}

#[test]
fn a_client_that_never_reads_its_replies_holds_bounded_memory() {
    let export = tempdir("limits-memory");
    let state = tempdir("limits-memory-state");
    std::fs::write(export.path().join("big"), vec![5u8; READ_BYTES as usize]).expect("write the file");
    let server = start(export.path(), state.path());
    let pid = server.child.id();
    let cred = auth_sys_body(0, 0, &[]);
    let mut args = Vec::new();
    put_opaque(&mut args, EXPORT_NAME.as_bytes());
    let reply = tcp_call(server.mount, &call_msg(1, MOUNT_PROGRAM, 3, 1, (1, &cred), &args)).expect("MNT");
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("MNT refused") };
    let root = handle_at(&body, 1);
    let mut args = Vec::new();
    put_opaque(&mut args, &root);
    put_opaque(&mut args, b"big");
    let reply = tcp_call(server.nfs, &call_msg(2, NFS_PROGRAM, 3, 3, (1, &cred), &args)).expect("LOOKUP");
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("LOOKUP refused") };
    assert_eq!(words(&body)[0], 0, "LOOKUP NFS3_OK");
    let fh = handle_at(&body, 1);
    let read = |xid: u32| frame(&call_msg(xid, NFS_PROGRAM, 3, 6, (1, &cred), &read_args(&fh)));

    let rss_before = vm_rss_bytes(pid);
    let mut deaf = Vec::new();
    for c in 0..DEAF_CONNECTIONS as u32 {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, server.nfs)).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
        let batch: Vec<u8> = (0..READS_PER_CONNECTION as u32).flat_map(|i| read(1000 * (c + 1) + i)).collect();
        s.write_all(&batch).expect("send the READs");
        deaf.push(s);
    }
    let (mut peak_gauge, mut peak_rss, mut last_reads, mut still) = (0, 0, u64::MAX, 0);
    for _ in 0..SAMPLES_MAX {
        let text = scrape(server.metrics);
        peak_gauge = peak_gauge.max(sample(&text, "hanfs_rpc_reply_bytes", ""));
        peak_rss = peak_rss.max(vm_rss_bytes(pid));
        let reads = reads_called(&text);
        still = if reads == last_reads { still + 1 } else { 0 };
        last_reads = reads;
        if still >= STILL_SAMPLES {
            break;
        }
        std::thread::sleep(Duration::from_millis(SAMPLE_MS));
    }
    assert!(still >= STILL_SAMPLES, "the READ count never settled ({last_reads})");

    // A well-behaved client still gets a whole 1 MiB READ.
    let mut good = TcpStream::connect((Ipv4Addr::LOCALHOST, server.nfs)).expect("connect");
    good.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
    good.write_all(&read(7)).expect("send");
    let reply = read_record(&mut good).expect("the well-behaved client is answered");
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("READ refused") };
    assert_eq!(words(&body)[0], 0, "READ NFS3_OK");
    assert!(body.len() > READ_BYTES as usize, "the whole 1 MiB came back");

    let text = scrape(server.metrics);
    let all = DEAF_CONNECTIONS as u64 * READS_PER_CONNECTION;
    let growth = peak_rss.saturating_sub(rss_before);
    eprintln!(
        "non-reading READs: {last_reads} of {all} run; reply bytes peak {peak_gauge}; VmRSS {rss_before} -> peak {peak_rss} (+{growth}); reply waits {}",
        sample(&text, "hanfs_rpc_reply_waits_total", "")
    );
    assert!(last_reads < all, "every READ ran although no reply was read");
    assert!(sample(&text, "hanfs_rpc_reply_waits_total", "") >= 1, "no connection was paused");
    let gauge_max = DEAF_CONNECTIONS * (CONN_REPLY_BYTES_MAX + READ_BYTES as usize);
    assert!(peak_gauge <= gauge_max as u64, "reply bytes peaked at {peak_gauge} (bound {gauge_max})");
    assert!(growth <= RSS_GROWTH_BYTES_MAX, "VmRSS grew by {growth} bytes (bound {RSS_GROWTH_BYTES_MAX})");
    let mut byte = [0u8; 1];
    for s in &mut deaf {
        // Nothing is read until here; the connections are still open.
        s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
        assert!(matches!(s.read(&mut byte), Ok(1)), "a paused connection still answers once read");
    }
}
