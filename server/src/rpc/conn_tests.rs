//! A TCP client of a real listener sees a call that may not be answered as a
//! closed connection, not as silence: the fence turning false while the call
//! runs, and a failed commit of its effects; closed once the node closes its
//! connections (its demotion), or `UNANSWERED_CLOSE_WAIT_MS` later. A normal
//! reply and a procedure answering with silence keep the connection open.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hanfs_raft::commit::{Commit, CommitError, CommitFuture};
use hanfs_state::{Command, State};

use crate::rpc::dispatch::{Dispatcher, Registry};
use crate::rpc::listener::Listeners;
use crate::rpc::program::{Args, Call, Drc, Proc, ProcError, ProcFuture, Program, Reply};
use crate::rpc::shared::{CloseReason, Fence, RpcShared};

/// Bound on any one blocking read of the test client: a server that leaves a
/// call unanswered on an open connection fails the test instead of hanging it.
const CLIENT_READ_TIMEOUT_MS: u64 = 10_000;
const PROG: u32 = 400_001;
/// How long the client shows the server still holds a socket with an
/// unanswered call (less than the server's wait, so never a race).
const QUIET_MS: u64 = 300;
const _: () = assert!(QUIET_MS < super::UNANSWERED_CLOSE_WAIT_MS);

/// Refuses any commit holding `BumpEpoch`; applies the rest.
struct FailingCommit {
    state: Arc<RwLock<State>>,
}

impl Commit for FailingCommit {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        let result = if cmds.iter().any(|c| matches!(c, Command::BumpEpoch)) {
            Err(CommitError::Storage("test: refused".into()))
        } else {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            cmds.iter().map(|c| state.apply(c).map_err(CommitError::Rejected)).collect()
        };
        Box::pin(async move { result })
    }
    fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }
}

/// The fence of the test node: handlers may turn it off.
struct Ctx {
    serving: Arc<AtomicBool>,
}

fn ok(_ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    Box::pin(async { Ok(Reply::new(b"okay".to_vec())) })
}

/// The node loses its lease while this call runs (after its request was read).
fn lose_lease(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    ctx.serving.store(false, Ordering::SeqCst);
    Box::pin(async { Ok(Reply::new(b"late".to_vec())) })
}

fn silent(_ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    Box::pin(async { Err(ProcError::NoReply) })
}

/// Its effects cannot be committed (`FailingCommit`).
fn effect(_ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    Box::pin(async { Ok(Reply::with_effects(b"done".to_vec(), vec![Command::BumpEpoch])) })
}

static PROCS: [Proc<Ctx>; 4] = [
    Proc { name: "OK", handler: ok, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "LOSE_LEASE", handler: lose_lease, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "SILENT", handler: silent, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "EFFECT", handler: effect, drc: Drc::Skip, recover: None, needs_intent: None },
];
static PROGRAM: Program<Ctx> = Program { name: "close-test", prog: PROG, vers: 1, procs: &PROCS };

const OK: u32 = 0;
const LOSE_LEASE: u32 = 1;
const SILENT: u32 = 2;
const EFFECT: u32 = 3;

struct Node {
    listeners: Listeners,
    shared: Arc<RpcShared>,
    addr: std::net::SocketAddr,
}

async fn node() -> Node {
    let serving = Arc::new(AtomicBool::new(true));
    let check = serving.clone();
    let commit = Arc::new(FailingCommit { state: Arc::new(RwLock::new(State::default())) });
    let shared = Arc::new(RpcShared::new(commit, Fence::new(move || check.load(Ordering::SeqCst)), 1 << 20));
    let dispatcher = Arc::new(Dispatcher::new(shared.clone(), Arc::new(Ctx { serving }), Registry::new(&[&PROGRAM])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listeners = Listeners::new();
    listeners.tcp(listener, dispatcher);
    Node { listeners, shared, addr }
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(CLIENT_READ_TIMEOUT_MS))).unwrap();
    s
}

/// One record-marked AUTH_NONE call of `proc_` with no arguments.
fn send_call(s: &mut TcpStream, xid: u32, proc_: u32) {
    let mut m = Vec::new();
    for w in [xid, 0, 2, PROG, 1, proc_, 0, 0, 0, 0] {
        m.extend_from_slice(&w.to_be_bytes());
    }
    let mark = 0x8000_0000u32 | m.len() as u32;
    let mut framed = mark.to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    s.write_all(&framed).unwrap();
}

/// Reads one single-fragment reply; returns its xid and last 4 bytes.
fn read_reply(s: &mut TcpStream) -> (u32, Vec<u8>) {
    let mut mark = [0u8; 4];
    s.read_exact(&mut mark).unwrap();
    let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
    let mut reply = vec![0u8; len];
    s.read_exact(&mut reply).unwrap();
    let xid = u32::from_be_bytes(reply[..4].try_into().unwrap());
    (xid, reply[len - 4..].to_vec())
}

/// The server closed the connection: end of stream or a reset, not a timeout.
fn assert_closed(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("a reply was sent"),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
        Err(e) => panic!("the connection was left open (read: {e})"),
    }
}

/// Runs blocking client code off the runtime that serves it.
async fn client<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_and_silent_calls_keep_the_connection() {
    let n = node().await;
    let addr = n.addr;
    let replies = client(move || {
        let mut s = connect(addr);
        send_call(&mut s, 1, OK);
        let first = read_reply(&mut s);
        send_call(&mut s, 2, SILENT);
        send_call(&mut s, 3, OK);
        // The silent call gets nothing; the next call on the same connection
        // is answered.
        (first, read_reply(&mut s))
    })
    .await;
    assert_eq!(replies, ((1, b"okay".to_vec()), (3, b"okay".to_vec())));
    assert_eq!(n.shared.unanswered.get(CloseReason::Fenced), 0);
    assert_eq!(n.shared.unanswered.get(CloseReason::CommitFailed), 0);
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_reply_closes_the_connection() {
    let n = node().await;
    let addr = n.addr;
    client(move || {
        let mut s = connect(addr);
        send_call(&mut s, 7, LOSE_LEASE);
        assert_closed(&mut s);
    })
    .await;
    assert_eq!(n.shared.unanswered.get(CloseReason::Fenced), 1);
    assert_eq!(n.shared.unanswered.get(CloseReason::CommitFailed), 0);
    n.listeners.shutdown().await;
}

/// A demotion releases the VIP before it closes the connections: a socket
/// closed before that would tell the client too early (module doc of `conn`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_keeps_the_socket_until_the_node_closes_its_connections() {
    let n = node().await;
    let addr = n.addr;
    let mut s = client(move || {
        let mut s = connect(addr);
        send_call(&mut s, 7, LOSE_LEASE);
        s.set_read_timeout(Some(Duration::from_millis(QUIET_MS))).unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("the socket was not kept for the demotion: {other:?}"),
        }
        s.set_read_timeout(Some(Duration::from_millis(CLIENT_READ_TIMEOUT_MS))).unwrap();
        s
    })
    .await;
    let shared = n.shared.clone();
    let closing = tokio::spawn(n.listeners.shutdown());
    client(move || assert_closed(&mut s)).await;
    closing.await.unwrap();
    assert_eq!(shared.unanswered.get(CloseReason::Fenced), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_closes_the_connection() {
    let n = node().await;
    let addr = n.addr;
    client(move || {
        let mut s = connect(addr);
        send_call(&mut s, 8, OK);
        assert_eq!(read_reply(&mut s), (8, b"okay".to_vec()));
        send_call(&mut s, 9, EFFECT);
        assert_closed(&mut s);
        // The node still serves: a new connection is answered.
        let mut again = connect(addr);
        send_call(&mut again, 10, OK);
        assert_eq!(read_reply(&mut again), (10, b"okay".to_vec()));
    })
    .await;
    assert_eq!(n.shared.unanswered.get(CloseReason::CommitFailed), 1);
    assert_eq!(n.shared.unanswered.get(CloseReason::Fenced), 0);
    n.listeners.shutdown().await;
}

#[test]
fn a_partly_written_reply_resumes_at_the_right_byte() {
    let (mark, head, body) = ([0x80u8, 0, 0, 9], [1u8, 2, 3], [4u8, 5, 6, 7, 8, 9]);
    let whole: Vec<u8> = [&mark[..], &head, &body].concat();
    for written in 0..=whole.len() + 1 {
        let rest: Vec<u8> = super::unsent([&mark[..], &head, &body], written).concat();
        assert_eq!(rest, whole.get(written..).unwrap_or_default(), "after {written} bytes");
    }
    // An empty part anywhere is skipped over.
    assert_eq!(super::unsent([&[][..], &[1, 2], &[]], 1).concat(), [2]);
}
