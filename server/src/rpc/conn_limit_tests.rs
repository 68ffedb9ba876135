//! The connection limits against a real listener with small limits: the
//! idle timeout (a running call keeps its connection), the per-address and
//! total limits (refusal, eviction of the least recently active idle
//! connection), calls dropped when their peer closes, a peer that does not
//! read its replies paused (its replies bounded) while another is served,
//! and the node-wide request budget. Every wait is bounded (`WAIT_MS`);
//! nothing asserts a time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hanfs_raft::commit::{Commit, CommitFuture};
use hanfs_state::{Command, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::rpc::conn::CONN_INFLIGHT_MAX;
use crate::rpc::dispatch::{Dispatcher, Registry};
use crate::rpc::limits::Limits;
use crate::rpc::listener::Listeners;
use crate::rpc::program::{Args, Call, Drc, Proc, ProcFuture, Program, Reply};
use crate::rpc::shared::{Fence, RpcShared};

/// Bound on every wait of these tests.
const WAIT_MS: u64 = 10_000;
/// Poll interval of the bounded waits.
const POLL_MS: u64 = 5;
const PROG: u32 = 400_002;
/// The BIG procedure's reply size.
const BIG_BYTES: usize = 1024 * 1024;

struct NoCommit(Arc<RwLock<State>>);

impl Commit for NoCommit {
    fn commit(&self, _cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn state(&self) -> Arc<RwLock<State>> {
        self.0.clone()
    }
}

struct Ctx {
    /// GATE and BIG calls started.
    started: AtomicUsize,
    /// GATE calls wait until this is true.
    gate: watch::Sender<bool>,
}

fn ok(_ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    Box::pin(async { Ok(Reply::new(b"okay".to_vec())) })
}

fn gate(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    ctx.started.fetch_add(1, Ordering::SeqCst);
    let mut open = ctx.gate.subscribe();
    Box::pin(async move {
        let _ = open.wait_for(|o| *o).await;
        Ok(Reply::new(b"gate".to_vec()))
    })
}

fn big(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    ctx.started.fetch_add(1, Ordering::SeqCst);
    Box::pin(async { Ok(Reply::new(vec![7; BIG_BYTES])) })
}

static PROCS: [Proc<Ctx>; 3] = [
    Proc { name: "OK", handler: ok, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "GATE", handler: gate, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "BIG", handler: big, drc: Drc::Skip, recover: None, needs_intent: None },
];
static PROGRAM: Program<Ctx> = Program { name: "limit-test", prog: PROG, vers: 1, procs: &PROCS };

const OK: u32 = 0;
const GATE: u32 = 1;
const BIG: u32 = 2;

struct Node {
    listeners: Listeners,
    shared: Arc<RpcShared>,
    ctx: Arc<Ctx>,
    port: u16,
}

async fn node(limits: Limits) -> Node {
    let commit = Arc::new(NoCommit(Arc::new(RwLock::new(State::default()))));
    let shared = Arc::new(RpcShared::new(commit, Fence::always(), 1 << 21).with_limits(limits));
    let ctx = Arc::new(Ctx { started: AtomicUsize::new(0), gate: watch::channel(false).0 });
    let dispatcher = Arc::new(Dispatcher::new(shared.clone(), ctx.clone(), Registry::new(&[&PROGRAM])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let listeners = Listeners::new();
    listeners.tcp(listener, dispatcher);
    Node { listeners, shared, ctx, port }
}

async fn connect(src: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((Ipv4Addr::from(src), 0))).unwrap();
    socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.unwrap()
}

/// One record-marked AUTH_NONE call of `proc_` with `args`.
fn call(xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for w in [xid, 0, 2, PROG, 1, proc_, 0, 0, 0, 0] {
        m.extend_from_slice(&w.to_be_bytes());
    }
    m.extend_from_slice(args);
    let mut framed = (0x8000_0000u32 | m.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

/// The next reply's xid and length; `None`: closed (or nothing in `WAIT_MS`).
async fn reply(s: &mut TcpStream) -> Option<(u32, usize)> {
    let read = async {
        let mut mark = [0u8; 4];
        s.read_exact(&mut mark).await.ok()?;
        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        Some((u32::from_be_bytes(body.get(..4)?.try_into().ok()?), len))
    };
    tokio::time::timeout(Duration::from_millis(WAIT_MS), read).await.ok().flatten()
}

/// The server closed `s`: end of stream or reset within `WAIT_MS`.
async fn assert_closed(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(WAIT_MS), s.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("data instead of a close"),
        Err(_) => panic!("the connection was left open"),
    }
}

async fn ok_call(s: &mut TcpStream, xid: u32) -> bool {
    s.write_all(&call(xid, OK, &[])).await.is_ok() && reply(s).await.map(|r| r.0) == Some(xid)
}

/// Wait (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..WAIT_MS / POLL_MS {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    panic!("not within {WAIT_MS} ms: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_not_one_with_a_call_running() {
    let n = node(Limits { idle_timeout: Duration::from_millis(200), ..Limits::default() }).await;
    let mut busy = connect([127, 0, 0, 1], n.port).await;
    busy.write_all(&call(1, GATE, &[])).await.unwrap();
    let mut idle = connect([127, 0, 0, 1], n.port).await;
    assert!(ok_call(&mut idle, 2).await);
    assert_closed(&mut idle).await;
    until("the idle close counted", || n.shared.metrics.conn.idle_closed.load(Ordering::Relaxed) >= 1).await;
    // The running call kept its connection through several timeouts.
    n.ctx.gate.send_replace(true);
    assert_eq!(reply(&mut busy).await.map(|r| r.0), Some(1));
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_at_its_limit_is_refused_and_the_oldest_idle_connection_gives_way() {
    let limits = Limits { connections_max: 4, connections_per_address_max: 2, ..Limits::default() };
    let n = node(limits).await;
    let stats = &n.shared.metrics.conn;
    let mut a1 = connect([127, 0, 0, 1], n.port).await;
    assert!(ok_call(&mut a1, 1).await);
    // a1's last activity is certainly the oldest (not a tie).
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut a2 = connect([127, 0, 0, 1], n.port).await;
    assert!(ok_call(&mut a2, 2).await);
    let mut a3 = connect([127, 0, 0, 1], n.port).await;
    assert_closed(&mut a3).await;
    assert_eq!(stats.refused_per_address.load(Ordering::Relaxed), 1);
    let mut b1 = connect([127, 0, 0, 2], n.port).await;
    assert!(ok_call(&mut b1, 3).await);
    let mut b2 = connect([127, 0, 0, 2], n.port).await;
    assert!(ok_call(&mut b2, 4).await);
    assert_eq!(n.shared.conns.count(), 4);
    // At the total: the least recently active idle connection (a1) closes.
    assert!(ok_call(&mut a2, 5).await);
    let mut c1 = connect([127, 0, 0, 3], n.port).await;
    assert!(ok_call(&mut c1, 6).await);
    assert_closed(&mut a1).await;
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
    assert!(ok_call(&mut a2, 7).await, "the others are still served");
    // Every connection busy: a new one is refused, none evicted.
    for (i, s) in [&mut a2, &mut b1, &mut b2, &mut c1].into_iter().enumerate() {
        s.write_all(&call(10 + i as u32, GATE, &[])).await.unwrap();
    }
    until("four calls running", || n.ctx.started.load(Ordering::SeqCst) == 4).await;
    let mut d1 = connect([127, 0, 0, 4], n.port).await;
    assert_closed(&mut d1).await;
    assert_eq!(stats.refused_total.load(Ordering::Relaxed), 1);
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
    n.ctx.gate.send_replace(true);
    assert_eq!(reply(&mut c1).await.map(|r| r.0), Some(13));
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_not_started_when_the_peer_closes_are_dropped() {
    const CALLS: u32 = 40;
    let n = node(Limits::default()).await;
    let mut s = connect([127, 0, 0, 1], n.port).await;
    let mut batch = Vec::new();
    for xid in 0..CALLS {
        batch.extend(call(xid, GATE, &[]));
    }
    s.write_all(&batch).await.unwrap();
    until("a call running", || n.ctx.started.load(Ordering::SeqCst) >= 1).await;
    drop(s);
    let dropped = || n.shared.metrics.conn.calls_dropped.load(Ordering::Relaxed);
    until("the queued calls dropped", || dropped() > 0).await;
    n.ctx.gate.send_replace(true);
    until("the connection gone", || n.shared.conns.count() == 0).await;
    let started = n.ctx.started.load(Ordering::SeqCst);
    assert!((1..=CONN_INFLIGHT_MAX).contains(&started), "{started} started");
    assert_eq!(started as u64 + dropped(), u64::from(CALLS), "every call either ran or was dropped");
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_paused_and_another_is_served() {
    const CALLS: u32 = 64;
    let n = node(Limits::default()).await;
    let cap = n.shared.conns.limits().conn_reply_bytes_max;
    let mut deaf = connect([127, 0, 0, 1], n.port).await;
    let mut batch = Vec::new();
    for xid in 0..CALLS {
        batch.extend(call(xid, BIG, &[]));
    }
    deaf.write_all(&batch).await.unwrap();
    // Until the started count stops moving (the socket buffers are full and
    // the connection paused), the replies held stay within the bound.
    let mut peak = 0;
    let mut last = (usize::MAX, 0);
    for _ in 0..WAIT_MS / POLL_MS {
        peak = peak.max(n.shared.budgets.reply_bytes());
        let started = n.ctx.started.load(Ordering::SeqCst);
        last = if started == last.0 { (started, last.1 + 1) } else { (started, 0) };
        if last.1 >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    let started = n.ctx.started.load(Ordering::SeqCst);
    assert!(started < CALLS as usize, "every call ran although no reply was read");
    assert!(n.shared.metrics.conn.reply_waits.load(Ordering::Relaxed) >= 1);
    assert!(peak <= cap + BIG_BYTES + 64, "{peak} bytes of replies held (bound {cap})");
    let mut other = connect([127, 0, 0, 2], n.port).await;
    assert!(ok_call(&mut other, 1000).await, "a well-behaved client is served meanwhile");
    // Paused, not dropped: reading resumes it, and every call is answered.
    let mut answered = 0;
    while answered < CALLS {
        assert_eq!(reply(&mut deaf).await.map(|r| r.1), Some(BIG_BYTES + 24), "reply {answered}");
        answered += 1;
    }
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_wait_for_the_request_budget() {
    const RECORD: usize = 200 * 1024;
    let n = node(Limits { request_bytes_max: 256 * 1024, ..Limits::default() }).await;
    let payload = vec![1u8; RECORD];
    let mut first = connect([127, 0, 0, 1], n.port).await;
    first.write_all(&call(1, GATE, &payload)).await.unwrap();
    until("the first call running", || n.ctx.started.load(Ordering::SeqCst) == 1).await;
    assert!(n.shared.budgets.request_bytes() >= RECORD);
    let mut second = connect([127, 0, 0, 2], n.port).await;
    second.write_all(&call(2, OK, &payload)).await.unwrap();
    let waits = || n.shared.metrics.conn.request_waits.load(Ordering::Relaxed);
    until("the second record waiting for the budget", || waits() >= 1).await;
    assert!(n.shared.budgets.request_bytes() <= 256 * 1024);
    n.ctx.gate.send_replace(true);
    assert_eq!(reply(&mut first).await.map(|r| r.0), Some(1));
    assert_eq!(reply(&mut second).await.map(|r| r.0), Some(2));
    until("the budget released", || n.shared.budgets.request_bytes() == 0).await;
    n.listeners.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_fragment_record_larger_than_the_buffer_is_charged_and_served() {
    const FRAGMENT: usize = 50 * 1024;
    let n = node(Limits::default()).await;
    let whole = call(5, OK, &vec![3u8; 4 * FRAGMENT]);
    // Re-frame the message (after its own mark) as four fragments.
    let msg = &whole[4..];
    let mut bytes = Vec::new();
    let pieces: Vec<&[u8]> = msg.chunks(msg.len().div_ceil(4)).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = if i + 1 == pieces.len() { 0x8000_0000u32 } else { 0 };
        bytes.extend_from_slice(&(last | piece.len() as u32).to_be_bytes());
        bytes.extend_from_slice(piece);
    }
    let mut s = connect([127, 0, 0, 1], n.port).await;
    s.write_all(&bytes).await.unwrap();
    assert_eq!(reply(&mut s).await.map(|r| r.0), Some(5));
    assert!(ok_call(&mut s, 6).await, "the next record is read as usual");
    until("the budget released", || n.shared.budgets.request_bytes() == 0).await;
    n.listeners.shutdown().await;
}
