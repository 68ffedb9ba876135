//! Observability (issue 10): a known workload through `nfs3_client` (3
//! GETATTR, 1 CREATE, 1 LOOKUP of a missing name) on an in-process node with
//! `[metrics] listen` on an ephemeral port; then `hanfs-server stats` (the
//! real binary, asking the node's admin socket) shows exactly those counts in
//! nfsstat's layout, and `GET /metrics` parses with python3's
//! `prometheus_client` text parser and carries the same counts (and the
//! LOOKUP's NFS3ERR_NOENT as an error). The HTTP responder answers junk
//! with 400, an oversize head with 431, another path with 404, a scrape
//! past its concurrency bound with 503, and never hangs (every read below
//! is bounded by a socket timeout).
//!
//! The HTTP and parser helpers are shared with `cluster::stats`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hanfs_server::node;

use crate::nfs3_ops::{create, getattr, lookup, RW_NO_SQUASH};
use crate::util::*;

/// Socket timeout of every HTTP exchange here: a server that hangs fails
/// the test (with that reason) instead of blocking it.
pub const HTTP_TIMEOUT_MS: u64 = 10_000;
/// Polls for a free scrape slot after the busy test, `SLOT_POLL_MS` apart.
const SLOT_POLLS_MAX: u32 = 100;
const SLOT_POLL_MS: u64 = 20;
/// Largest HTTP answer read.
const HTTP_ANSWER_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The python check: parse stdin with prometheus_client, print one line per
/// sample (`name labels value`, labels sorted), so the test reads what the
/// parser understood.
const PARSE_SCRIPT: &str = r#"
from prometheus_client.parser import text_string_to_metric_families as p
import sys
for f in p(sys.stdin.read()):
    for s in f.samples:
        labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))
        print(s.name, '{' + labels + '}', s.value)
"#;

/// An in-process single node with `/metrics` on an ephemeral port.
struct MetricsNode {
    nfs: u16,
    mount: u16,
    metrics: SocketAddr,
    state_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _state: TempDir,
}

impl MetricsNode {
    fn start(export: &Path) -> MetricsNode {
        init_tracing();
        let state = tempdir("metrics-state");
        let mut config = test_config(export, RW_NO_SQUASH, state.path());
        config.metrics_listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                match node::start(config).await {
                    Ok(n) => {
                        let _ = tx.send(Ok((n.ports(), n.metrics_addr())));
                        let _ = stop_rx.await;
                        n.stop().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (ports, metrics) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node did not start within 30 s")
            .unwrap_or_else(|e| panic!("node failed to start: {e}"));
        let metrics = metrics.expect("[metrics] listen is set, so /metrics is served");
        MetricsNode {
            nfs: ports.nfs,
            mount: ports.mount,
            metrics,
            state_dir: state.path().to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
            _state: state,
        }
    }

    async fn connect(&self) -> crate::nfs3_ops::Conn {
        nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, "127.0.0.1", EXPORT_NAME)
            .mount_port(self.mount)
            .nfs3_port(self.nfs)
            .credential(auth_sys(0, 0, &[]))
            .mount()
            .await
            .expect("mount /export")
    }
}

impl Drop for MetricsNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `request` on a new connection to `addr`, half-close, and read the
/// whole answer; fails (with the reason) if the server does not close the
/// connection within `HTTP_TIMEOUT_MS`.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    let timeout = Some(Duration::from_millis(HTTP_TIMEOUT_MS));
    s.set_read_timeout(timeout).expect("read timeout");
    s.set_write_timeout(timeout).expect("write timeout");
    s.write_all(request).expect("send the request");
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    if let Err(e) = s.take(HTTP_ANSWER_BYTES_MAX).read_to_end(&mut answer) {
        let got = String::from_utf8_lossy(&answer);
        panic!("the metrics server did not answer and close within {HTTP_TIMEOUT_MS} ms: {e} (read so far: {got:?})");
    }
    String::from_utf8(answer).expect("an HTTP answer in UTF-8")
}

/// The status code of an HTTP answer.
pub fn status_code(answer: &str) -> u16 {
    let line = answer.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    assert!(words.next().is_some_and(|v| v.starts_with("HTTP/1.")), "not an HTTP answer: {answer:?}");
    words.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status code: {line:?}"))
}

/// `GET /metrics`: the body of a 200 answer (with the 0.0.4 content type).
pub fn scrape(addr: SocketAddr) -> String {
    let answer = http_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n");
    assert_eq!(status_code(&answer), 200, "{answer:.300}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The Debian python, whose packages (python3-prometheus-client) apt
/// installs; a `python3` earlier on PATH (pyenv, a venv) may not see them.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Parse an exposition with python3's prometheus_client; one line per sample.
/// Fails with the reason if python3 or python3-prometheus-client is missing
/// (test.sh installs python3-prometheus-client).
pub fn prometheus_parse(text: &str) -> Vec<String> {
    let python = if Path::new(DEBIAN_PYTHON).exists() { DEBIAN_PYTHON } else { "python3" };
    let mut child = match Command::new(python)
        .args(["-c", PARSE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run {python} ({e}): install python3-prometheus-client (test.sh does)"),
    };
    let mut stdin = child.stdin.take().expect("python stdin");
    let input = text.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("python3 output");
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "{python} has no prometheus_client (apt-get install python3-prometheus-client; test.sh does): {stderr}"
    );
    assert!(out.status.success(), "the prometheus_client parser refused the exposition: {stderr}");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The value of the NFS v3 procedure `proc_` in `stats` text (nfsstat layout).
pub fn nfsstat_count(text: &str, section: &str, proc_: &str) -> u64 {
    let lines: Vec<&str> = text.lines().skip_while(|l| *l != section).skip(1).take_while(|l| !l.is_empty()).collect();
    for pair in lines.chunks(2) {
        let [names, counts] = pair else { continue };
        let counts: Vec<&str> = counts.split_whitespace().filter(|w| !w.ends_with('%')).collect();
        if let Some(i) = names.split_whitespace().position(|n| n == proc_) {
            return counts.get(i).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no count for {proc_}"));
        }
    }
    panic!("no {proc_} in {section}:\n{text}");
}

/// The three numbers under `calls badcalls badfmt ...` in `stats` text.
fn rpc_numbers(text: &str) -> Vec<u64> {
    let mut lines = text.lines().skip_while(|l| *l != "Server rpc stats:").skip(2);
    let numbers = lines.next().unwrap_or_else(|| panic!("no rpc stats:\n{text}"));
    numbers.split_whitespace().map(|n| n.parse().expect("a number")).collect()
}

/// NFS v3 procedures in nfsstat's order.
pub const NFS3_PROCS: [&str; 22] = [
    "null",
    "getattr",
    "setattr",
    "lookup",
    "access",
    "readlink",
    "read",
    "write",
    "create",
    "mkdir",
    "symlink",
    "mknod",
    "remove",
    "rmdir",
    "rename",
    "link",
    "readdir",
    "readdirplus",
    "fsstat",
    "fsinfo",
    "pathconf",
    "commit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_show_a_known_workload() {
    let export = tempdir("metrics-export");
    let node = MetricsNode::start(export.path());
    let mut c = node.connect().await;
    let root = c.root_nfs_fh3();
    for _ in 0..3 {
        getattr(&mut c, &root).await.expect("GETATTR");
    }
    create(&mut c, &root, "made").await.expect("CREATE");
    assert!(lookup(&mut c, &root, "missing").await.is_err(), "LOOKUP of a missing name fails");

    // `hanfs-server stats`, the real binary, through the node's admin socket.
    let dir = node.state_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(server_binary()).arg("stats").arg("--state-dir").arg(&dir).output().expect("run stats")
    })
    .await
    .expect("stats task");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stats failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("Answered by this node (single node)\n"), "{text}");
    assert!(text.contains("\nServer rpc stats:\ncalls      badcalls   badfmt     badauth    badclnt\n"), "{text}");
    assert!(text.contains("\nServer nfs v3:\nnull         getattr      setattr      lookup       access"), "{text}");
    for p in NFS3_PROCS {
        let want = match p {
            "getattr" => 3,
            "create" | "lookup" => 1,
            _ => 0,
        };
        assert_eq!(nfsstat_count(&text, "Server nfs v3:", p), want, "{p} in:\n{text}");
    }
    assert_eq!(nfsstat_count(&text, "Server mount v3:", "mnt"), 1, "{text}");
    // 5 NFS calls and the MOUNT MNT; nothing refused.
    assert_eq!(rpc_numbers(&text), [6, 0, 0, 0, 0], "{text}");
    assert!(text.contains("Server nlm v4:\n") && text.contains("Server portmap v2:\n"), "{text}");

    let addr = node.metrics;
    let samples = tokio::task::spawn_blocking(move || prometheus_parse(&scrape(addr))).await.expect("scrape task");
    let has = |line: &str| samples.iter().any(|s| s == line);
    for (proc_, n) in [("GETATTR", 3), ("CREATE", 1), ("LOOKUP", 1), ("READ", 0)] {
        let line = format!("hanfs_rpc_calls_total {{procedure={proc_},program=nfs,version=3}} {n}.0");
        assert!(has(&line), "{line} missing from:\n{}", samples.join("\n"));
    }
    let status_error = "hanfs_rpc_errors_total {kind=status,procedure=LOOKUP,program=nfs,version=3} 1.0";
    assert!(has(status_error), "the LOOKUP's NFS3ERR_NOENT counts as an error");
    let getattr_count = "hanfs_rpc_duration_seconds_count {procedure=GETATTR,program=nfs,version=3} 3.0";
    assert!(has(getattr_count), "{}", samples.join("\n"));
    assert!(has("hanfs_serving {} 1.0"));
    assert!(has("hanfs_connections {client=127.0.0.1} 2.0"), "the MOUNT and NFS connections are open");
    assert!(samples.iter().any(|s| s.starts_with("hanfs_commit_duration_seconds_count {} ")));
    assert!(samples.iter().any(|s| s.starts_with("hanfs_commit_batch_callers_bucket {le=1} ")));
    for gauge in ["hanfs_nlm_locks_held {} 0.0", "hanfs_nlm_lock_waiters {} 0.0", "hanfs_drc_hits_total {} 0.0"] {
        assert!(has(gauge), "{gauge}");
    }
    drop(c);
}

#[test]
fn the_metrics_responder_refuses_junk_and_oversize_requests_without_hanging() {
    let export = tempdir("metrics-junk");
    let node = MetricsNode::start(export.path());
    let addr = node.metrics;
    let junk = http_exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk\r\n\r\n");
    assert_eq!(status_code(&junk), 400, "{junk}");
    // Junk that never ends its head: the half-close ends it.
    assert_eq!(status_code(&http_exchange(addr, b"GET /metr")), 400);
    assert_eq!(status_code(&http_exchange(addr, b"GET / HTTP/1.1\r\n\r\n")), 404);
    assert_eq!(status_code(&http_exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n")), 405);
    let mut oversize = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    oversize.resize(64 * 1024, b'a');
    assert_eq!(status_code(&http_exchange(addr, &oversize)), 431);
    let head = http_exchange(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status_code(&head), 200);
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body");

    // One connection more than there are slots, all open at once: the idle
    // ones hold their slots (the accept loop takes one per connection, in
    // accept order), so one of them, or the scrape behind them, gets 503 at
    // once. (Which one: an earlier exchange may still be releasing its slot.)
    let idle: Vec<TcpStream> = (0..hanfs_server::metrics::http::METRICS_SCRAPES_MAX)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(HTTP_TIMEOUT_MS))).expect("timeout");
            s
        })
        .collect();
    let mut codes = vec![status_code(&http_exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"))];
    for mut s in idle {
        // An idle client that ends without a request gets 400.
        let _ = s.shutdown(std::net::Shutdown::Write);
        codes.push(status_code(&read_answer(&mut s)));
    }
    assert!(codes.contains(&503), "one connection past the bound is refused: {codes:?}");
    assert!(codes.iter().all(|c| [200, 400, 503].contains(c)), "{codes:?}");
    // Slots free again (once the last exchanges have released theirs).
    let freed = (0..SLOT_POLLS_MAX).any(|_| {
        let code = status_code(&http_exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"));
        if code != 200 {
            std::thread::sleep(Duration::from_millis(SLOT_POLL_MS));
        }
        code == 200
    });
    assert!(freed, "every scrape refused after the idle clients left");
}
