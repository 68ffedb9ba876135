//! Shared test helpers: an in-process node on 127.0.0.1 with ephemeral ports
//! (`TestServer`), temporary directories (`TempDir`), raw RPC calls over TCP
//! and UDP for malformed-input tests, an `nfs3_client` connect helper, the
//! real binary's path, and a tracing init guarded by `Once`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use hanfs_server::config::{ExportConfig, Ports, ServerConfig};
use hanfs_server::node;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_types::xdr_codec::Opaque;

/// How long a raw exchange waits for an answer.
pub const IO_TIMEOUT_MS: u64 = 5000;
/// The largest reply record a raw exchange reads.
pub const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Export id of the TestServer's only export.
pub const EXPORT_ID: u32 = 1;
/// Name clients mount.
pub const EXPORT_NAME: &str = "/export";

static TRACING: Once = Once::new();

/// Log to the test's captured output; `RUST_LOG` selects (default `warn`).
pub fn init_tracing() {
    TRACING.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), label)
    }

    /// A fresh directory under `base` (e.g. `/dev/shm`, for a tmpfs export).
    pub fn new_in(base: &Path, label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = base.join(format!("hanfs-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Ports handed out by `free_port`: below Linux's ephemeral range (32768 and
/// up), so the source port of an outgoing connection, which the kernel
/// picks there, never takes a port a test server is about to bind.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// The next port `free_port` tries; starts at a place drawn from the clock
/// and the process id, so runs on one machine seldom start in step.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A port free for TCP and UDP on every address right now, never handed out
/// before in this process, and outside the ephemeral range (a port taken
/// from bind(0) and released could be reused at once by any outgoing
/// connection: under a loaded full run a test node then failed to start).
pub fn free_port() -> u16 {
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let _ = NEXT_PORT.compare_exchange(0, seed() % span + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let Ok(port) = u16::try_from(TEST_PORTS.start + n % span) else { continue };
        let Ok(_tcp) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) else { continue };
        if UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in {TEST_PORTS:?}");
}

fn seed() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().wrapping_mul(2_654_435_761)
}

/// Shorthand for `TempDir::new`.
pub fn tempdir(label: &str) -> TempDir {
    TempDir::new(label)
}

/// The server config a TestServer runs: one export `/export` (id 1) of
/// `export_dir` with `clients`, loopback, ports 0, state in `state_dir`.
pub fn test_config(export_dir: &Path, clients: &str, state_dir: &Path) -> ServerConfig {
    let rules = hanfs_server::exports::parse_clients(clients).expect("client spec parses");
    ServerConfig {
        listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ports: Ports { portmap: 0, nfs: 0, mount: 0, ..Ports::default() },
        exports: vec![ExportConfig {
            name: EXPORT_NAME.to_string(),
            dir: export_dir.to_path_buf(),
            export_id: EXPORT_ID,
            clients: rules,
        }],
        state_dir: state_dir.to_path_buf(),
        record_bytes_max: hanfs_server::rpc::record::RECORD_BYTES_MAX,
        cluster: None,
        nlm: Default::default(),
        metrics_listen: None,
        limits: Default::default(),
        host_cache_ttl: std::time::Duration::from_secs(hanfs_server::hostnames::HOST_CACHE_TTL_SECONDS_DEFAULT),
    }
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A node running in this process on its own runtime thread, on 127.0.0.1
/// with ephemeral ports and a temporary state directory.
pub struct TestServer {
    pub nfs_port: u16,
    pub mount_port: u16,
    pub portmap_port: u16,
    pub nlm_port: u16,
    pub nsm_port: u16,
    pub state_dir: PathBuf,
    config: ServerConfig,
    running: Option<Running>,
    _state_tmp: Option<TempDir>,
}

impl TestServer {
    /// Start a node exporting `export_dir` as `/export` to `clients`
    /// (exports(5) syntax, e.g. `*(rw,no_root_squash,insecure)`).
    pub fn start(export_dir: &Path, clients: &str) -> TestServer {
        let tmp = TempDir::new("state");
        let config = test_config(export_dir, clients, tmp.path());
        let mut server = TestServer::start_config(config);
        server._state_tmp = Some(tmp);
        server
    }

    /// Start a node with any config (the caller owns its state dir).
    pub fn start_config(config: ServerConfig) -> TestServer {
        init_tracing();
        let state_dir = config.state_dir.clone();
        let mut server = TestServer {
            nfs_port: 0,
            mount_port: 0,
            portmap_port: 0,
            nlm_port: 0,
            nsm_port: 0,
            state_dir,
            config,
            running: None,
            _state_tmp: None,
        };
        server.boot();
        server
    }

    fn boot(&mut self) {
        let config = self.config.clone();
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test server runtime");
            rt.block_on(async move {
                match node::start(config).await {
                    Ok(n) => {
                        let _ = ports_tx.send(Ok(n.ports()));
                        let _ = stop_rx.await;
                        n.stop().await;
                    }
                    Err(e) => {
                        let _ = ports_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let ports = ports_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("test server did not start within 30 s")
            .unwrap_or_else(|e| panic!("test server failed to start: {e}"));
        self.nfs_port = ports.nfs;
        self.mount_port = ports.mount;
        self.portmap_port = ports.portmap;
        self.nlm_port = ports.nlm;
        self.nsm_port = ports.nsm;
        self.running = Some(Running { stop: stop_tx, thread });
    }

    /// The address the node listens on.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    /// Stop the node and wait until every task is done (idempotent).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
        }
    }

    /// Stop and start again on the same state directory (new ports).
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// Mount `/export` with `nfs3_client` as root (AUTH_SYS uid 0) from a
    /// privileged port (the tests run as root).
    pub async fn connect(&self) -> Nfs3Connection<TokioIo<tokio::net::TcpStream>> {
        self.connect_as(0, 0, &[]).await
    }

    /// Mount `/export` with AUTH_SYS credentials `uid`/`gid`/`gids`.
    pub async fn connect_as(&self, uid: u32, gid: u32, gids: &[u32]) -> Nfs3Connection<TokioIo<tokio::net::TcpStream>> {
        self.try_connect_as(uid, gid, gids).await.expect("mount /export")
    }

    pub async fn try_connect_as(
        &self,
        uid: u32,
        gid: u32,
        gids: &[u32],
    ) -> Result<Nfs3Connection<TokioIo<tokio::net::TcpStream>>, nfs3_client::ConnectError> {
        Nfs3ConnectionBuilder::new(TokioConnector, self.addr().to_string(), EXPORT_NAME)
            .portmapper_port(self.portmap_port)
            .mount_port(self.mount_port)
            .nfs3_port(self.nfs_port)
            .credential(auth_sys(uid, gid, gids))
            .mount()
            .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An AUTH_SYS credential for nfs3_client.
pub fn auth_sys(uid: u32, gid: u32, gids: &[u32]) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::owned(b"hanfs-test".to_vec()),
        uid,
        gid,
        gids: gids.to_vec(),
    })
}

// ---------------------------------------------------------------- raw RPC

/// AUTH_NONE credential (flavor, body).
pub const CRED_NONE: (u32, &[u8]) = (0, &[]);

/// An XDR-encoded AUTH_SYS body with `gids.len()` groups (no limit checked,
/// so tests can build bad ones).
pub fn auth_sys_body(uid: u32, gid: u32, gids: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    put_u32(&mut b, 1);
    put_opaque(&mut b, b"hanfs-test");
    put_u32(&mut b, uid);
    put_u32(&mut b, gid);
    put_u32(&mut b, gids.len() as u32);
    for g in gids {
        put_u32(&mut b, *g);
    }
    b
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_opaque(out: &mut Vec<u8>, data: &[u8]) {
    put_u32(out, data.len() as u32);
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
}

/// An RPC call message (not record-marked).
pub fn call_msg(xid: u32, prog: u32, vers: u32, proc_: u32, cred: (u32, &[u8]), args: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for w in [xid, 0, 2, prog, vers, proc_, cred.0] {
        put_u32(&mut m, w);
    }
    put_opaque(&mut m, cred.1);
    put_u32(&mut m, 0);
    put_u32(&mut m, 0);
    m.extend_from_slice(args);
    m
}

/// Record-mark `msg` as one last fragment.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

fn connect_tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
    s
}

/// Read one record from `s`: `Some(record)`, or `None` if the server closed
/// the connection (or sent nothing within the timeout).
pub fn read_record(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut record = Vec::new();
    loop {
        let mut header = [0u8; 4];
        s.read_exact(&mut header).ok()?;
        let word = u32::from_be_bytes(header);
        let len = (word & 0x7fff_ffff) as usize;
        if record.len() + len > REPLY_BYTES_MAX {
            return None;
        }
        let start = record.len();
        record.resize(start + len, 0);
        s.read_exact(&mut record[start..]).ok()?;
        if word & 0x8000_0000 != 0 {
            return Some(record);
        }
    }
}

/// Send raw bytes (already record-marked, or deliberately not) on a new TCP
/// connection and read one reply record; `None` if the connection closed.
pub fn raw_tcp(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = connect_tcp(port);
    s.write_all(bytes).ok()?;
    read_record(&mut s)
}

/// Alias of `raw_tcp`: raw bytes in, one reply record (or `None`) out.
pub fn raw_call(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    raw_tcp(port, bytes)
}

/// Like `raw_tcp`, then half-close our side first (a truncated record ends there).
pub fn raw_tcp_then_close(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = connect_tcp(port);
    s.write_all(bytes).ok()?;
    s.shutdown(std::net::Shutdown::Write).ok()?;
    read_record(&mut s)
}

/// One call over TCP: frame `msg`, send it, return the reply message.
pub fn tcp_call(port: u16, msg: &[u8]) -> Option<Vec<u8>> {
    raw_tcp(port, &frame(msg))
}

/// One datagram to `port` on 127.0.0.1, and its answer (None on timeout).
pub fn udp_call(port: u16, msg: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
    s.send_to(msg, (Ipv4Addr::LOCALHOST, port)).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A decoded reply message.
#[derive(Debug, PartialEq, Eq)]
pub enum RpcReply {
    /// MSG_ACCEPTED with `accept_stat` and the bytes after it (result body, or
    /// PROG_MISMATCH's low/high).
    Accepted { xid: u32, stat: u32, body: Vec<u8> },
    /// MSG_DENIED RPC_MISMATCH(low, high).
    RpcMismatch { xid: u32, low: u32, high: u32 },
    /// MSG_DENIED AUTH_ERROR(auth_stat).
    AuthError { xid: u32, stat: u32 },
}

pub const SUCCESS: u32 = 0;
pub const PROG_UNAVAIL: u32 = 1;
pub const PROG_MISMATCH: u32 = 2;
pub const PROC_UNAVAIL: u32 = 3;
pub const GARBAGE_ARGS: u32 = 4;

fn word(b: &[u8], i: usize) -> u32 {
    let s = &b[i * 4..i * 4 + 4];
    u32::from_be_bytes([s[0], s[1], s[2], s[3]])
}

/// Decode a reply message (panics on a malformed one: the server is wrong).
pub fn parse_reply(m: &[u8]) -> RpcReply {
    assert!(m.len() >= 12, "reply too short: {m:?}");
    let xid = word(m, 0);
    assert_eq!(word(m, 1), 1, "not a REPLY");
    if word(m, 2) == 0 {
        let verf_len = word(m, 4) as usize;
        let off = 20 + verf_len.div_ceil(4) * 4;
        let stat = word(&m[off..], 0);
        RpcReply::Accepted { xid, stat, body: m[off + 4..].to_vec() }
    } else if word(m, 3) == 0 {
        RpcReply::RpcMismatch { xid, low: word(m, 4), high: word(m, 5) }
    } else {
        RpcReply::AuthError { xid, stat: word(m, 4) }
    }
}

/// The u32 words of a body.
pub fn words(body: &[u8]) -> Vec<u32> {
    body.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Assert the server still answers a NULL call to `prog`/`vers` on `port` (TCP).
pub fn assert_serves_null(port: u16, prog: u32, vers: u32) {
    let reply = tcp_call(port, &call_msg(0x5eed, prog, vers, 0, CRED_NONE, &[])).expect("NULL answered");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 0x5eed, stat: SUCCESS, body: vec![] });
}

// ---------------------------------------------------------------- real binary

/// Path of the `hanfs-server` binary next to this test binary (target/<profile>/),
/// building it with cargo if it is missing.
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let bin = dir.join("hanfs-server");
    if !bin.exists() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "hanfs-cli", "--bin", "hanfs-server"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of hanfs-server failed");
    }
    bin
}

/// One datagram and its answer, waiting at most `wait_ms` (None: silence).
pub fn udp_call_wait(port: u16, msg: &[u8], wait_ms: u64) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(wait_ms))).expect("timeout");
    s.send_to(msg, (Ipv4Addr::LOCALHOST, port)).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Lowest and highest local port tried for a "privileged" client connection.
pub const PRIVILEGED_PORT_RANGE: (u16, u16) = (600, 1023);

/// A tokio TCP connection to 127.0.0.1:`port`, from a privileged source port
/// (< 1024, needs root) or an ordinary ephemeral one.
pub async fn tokio_connect(port: u16, privileged: bool) -> TokioIo<tokio::net::TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if !privileged {
        return TokioIo::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    for local in PRIVILEGED_PORT_RANGE.0..=PRIVILEGED_PORT_RANGE.1 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, local))).is_err() {
            continue;
        }
        if let Ok(stream) = socket.connect(addr).await {
            return TokioIo::new(stream);
        }
    }
    panic!("no privileged source port available (tests must run as root)");
}

/// An `nfs3_client` MOUNT client on `port` with AUTH_SYS root credentials.
pub async fn mount_client(port: u16, privileged: bool) -> nfs3_client::MountClient<TokioIo<tokio::net::TcpStream>> {
    let io = tokio_connect(port, privileged).await;
    nfs3_client::MountClient::new_with_auth(io, auth_sys(0, 0, &[]), opaque_auth::default())
}

/// A fake RPC service (a client's lockd, statd or portmapper) for tests:
/// answers calls on `sock` until `stop`; `answer(source, proc, args)` is the
/// result body of an accepted, successful reply. Bad datagrams are skipped.
pub fn serve_udp_rpc(
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    mut answer: impl FnMut(IpAddr, u32, &[u8]) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            let m = &buf[..n];
            let w = |i: usize| m.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let (Some(xid), Some(proc_), Some(cred_len)) = (w(0), w(20), w(28)) else { continue };
            let verf_at = 32 + (cred_len as usize).div_ceil(4) * 4;
            let Some(verf_len) = w(verf_at + 4) else { continue };
            let Some(args) = m.get(verf_at + 8 + (verf_len as usize).div_ceil(4) * 4..) else { continue };
            let result = answer(from.ip(), proc_, args);
            let mut reply = Vec::new();
            for word in [xid, 1, 0, 0, 0, 0] {
                put_u32(&mut reply, word);
            }
            reply.extend_from_slice(&result);
            let _ = sock.send_to(&reply, from);
        }
    })
}

/// A fake client host for callback tests: one RPC service on `ip` (UDP),
/// answered by `answer(source, proc, args)`, and a portmapper on
/// `ip:portmap_port` (0: any) whose GETPORT maps `prog` to that service (and
/// anything else to 0). Both threads stop and are joined on drop.
pub struct FakeHost {
    pub portmap_port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FakeHost {
    pub fn start(
        ip: Ipv4Addr,
        portmap_port: u16,
        prog: u32,
        answer: impl FnMut(IpAddr, u32, &[u8]) -> Vec<u8> + Send + 'static,
    ) -> FakeHost {
        const PMAPPROC_GETPORT: u32 = 3;
        let stop = Arc::new(AtomicBool::new(false));
        let service = UdpSocket::bind((ip, 0)).expect("bind the fake service");
        let service_port = service.local_addr().expect("fake service address").port();
        let pmap = UdpSocket::bind((ip, portmap_port)).expect("bind the fake client portmapper");
        let portmap_port = pmap.local_addr().expect("fake portmapper address").port();
        let t1 = serve_udp_rpc(service, stop.clone(), answer);
        let t2 = serve_udp_rpc(pmap, stop.clone(), move |_, proc_, args| {
            let asked = args.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let port = if proc_ == PMAPPROC_GETPORT && asked == Some(prog) { u32::from(service_port) } else { 0 };
            port.to_be_bytes().to_vec()
        });
        FakeHost { portmap_port, stop, threads: vec![t1, t2] }
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns` (`/run/netns/NS`,
/// made by `ip netns add`); the test's own threads stay where they are.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: plain syscall on a descriptor we own; moves only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        match worker.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
