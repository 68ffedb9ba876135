//! One TCP connection's handler (mini-redis' `connection.rs` + `Handler`),
//! registered in `registry::ConnRegistry` while it is open: a reader that
//! cuts records and starts calls (`reader`: at most `CONN_INFLIGHT_MAX` at a
//! time, each within the connection's and the node's memory budgets; a call
//! that needs no wait runs on the reader's own task), and `Replies`, which
//! sends each reply as one whole record (written by the call itself when it
//! is the only one running, else by the connection's writer task) and
//! releases the reply's memory charge once it is written.
//!
//! How it ends:
//! - The peer closes: calls read but not started are dropped (counted),
//!   running ones finish and their replies go out, unless something below
//!   ends it first (a peer that never reads must not hold it up).
//! - A soft close (`registry::Closing`: idle timeout, or evicted for a new
//!   connection): nothing more is read, started or sent; running calls
//!   finish.
//! - Node shutdown or `close_all`: the whole connection closes at once,
//!   dropping replies still queued and aborting running calls, so the client
//!   reconnects and resends instead of waiting out its timeout.
//! - A call that may not be answered (`dispatch::Outcome::Close`: fenced,
//!   or a failed commit): the same, except that the socket itself is kept
//!   (nothing read or sent) until the node's demotion closes it or, if none
//!   comes, for `UNANSWERED_CLOSE_WAIT_MS`. Such a call almost always means
//!   the node is losing the right to serve; its demotion releases the VIP
//!   first, and a socket closed after that sends the client nothing, so the
//!   client waits for the new active's tickle (`node::lifecycle::demote`).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use super::budget::ReplyCharge;
use super::dispatch::Dispatcher;
use super::msg::Message;
use super::reader::{End, Reader};
use super::record;
use super::registry::{Closing, ConnGuard, ConnState};
use super::shared::CloseReason;

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "conn_limit_tests.rs"]
mod limit_tests;

/// Calls of one connection executing at the same time.
pub const CONN_INFLIGHT_MAX: usize = 16;
/// Base read buffer per connection; a record larger than this is read into
/// its own buffer, charged to the node's request budget.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A single-fragment record at least this long is read straight into its own
/// exactly-sized buffer (one copy of a WRITE's payload, not several while the
/// shared buffer grows); smaller records share `READ_BUFFER_BYTES` reads.
pub const DIRECT_RECORD_BYTES_MIN: usize = 32 * 1024;

/// How long a connection with a call that may not be answered keeps its
/// socket waiting for the node's demotion (module doc) before it closes it
/// anyway, so the client resends to this node, which still serves.
pub const UNANSWERED_CLOSE_WAIT_MS: u64 = 1_000;

const _: () = assert!(CONN_INFLIGHT_MAX > 0);
const _: () = assert!(DIRECT_RECORD_BYTES_MIN <= READ_BUFFER_BYTES);

/// Serve one TCP connection until the peer closes it, it breaks the record
/// rules, the node shuts down, `close_all` is called, it is closed softly
/// (idle, evicted) or a call may not be answered (`Outcome::Close`).
pub async fn serve<C: Send + Sync + 'static>(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher<C>>,
    record_bytes_max: u32,
    mut shutdown: broadcast::Receiver<()>,
    mut guard: ConnGuard,
) {
    let state = guard.state.clone();
    let (rd, wr) = stream.into_split();
    let (replies, mut writer) = spawn_writer(wr, peer, state.clone());
    let mut calls = JoinSet::new();
    // The first call that may not be answered asks for the close; one is enough.
    let (close_tx, mut close_rx) = mpsc::channel(1);
    let mut soft = state.closing();
    let mut stop =
        Stop { shutdown: &mut shutdown, closed: &mut guard.closed, unanswered: &mut close_rx, soft: &mut soft };
    let reader = Reader::new(rd, peer, dispatcher, record_bytes_max, replies.clone(), close_tx, state);
    let end = reader.run(&mut calls, &mut stop).await;
    let unanswered = matches!(end, End::Unanswered);
    match end {
        End::PeerClosed => {
            // Let the running calls complete and their replies go out.
            let drain = async {
                while calls.join_next().await.is_some() {}
                replies.finish();
                let _ = (&mut writer).await;
            };
            tokio::select! {
                _ = drain => {}
                _ = stop.wait() => {}
            }
        }
        End::Soft => {
            replies.finish();
            writer.abort();
            finish_running(&mut calls, &mut stop).await;
        }
        End::Drop | End::Unanswered => replies.finish(),
    }
    calls.shutdown().await;
    writer.abort();
    if unanswered {
        // Running calls and queued replies are gone; the socket waits.
        stop.closed_or(std::time::Duration::from_millis(UNANSWERED_CLOSE_WAIT_MS)).await;
    }
    drop(guard);
}

/// Let running calls finish (their replies are not sent) unless the node
/// stops or fences meanwhile.
async fn finish_running(calls: &mut JoinSet<()>, stop: &mut Stop<'_>) {
    let all = async { while calls.join_next().await.is_some() {} };
    tokio::select! {
        _ = all => {}
        _ = stop.hard() => {}
    }
}

/// How a wait was interrupted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Halt {
    /// Node shutdown or `close_all`.
    Hard,
    /// A call that may not be answered.
    Unanswered,
    /// Idle timeout or eviction.
    Soft(Closing),
}

/// The reasons to stop: node shutdown, `close_all`, a call that may not be
/// answered (hard), or a soft close.
pub(super) struct Stop<'a> {
    shutdown: &'a mut broadcast::Receiver<()>,
    closed: &'a mut broadcast::Receiver<()>,
    /// Sent by a call task on `Outcome::Close`. Every sender gone (all calls
    /// done, the reader finished) is no reason to stop.
    unanswered: &'a mut mpsc::Receiver<CloseReason>,
    soft: &'a mut watch::Receiver<Option<Closing>>,
}

impl Stop<'_> {
    /// Resolves at the first reason to stop.
    pub(super) async fn wait(&mut self) -> Halt {
        tokio::select! {
            h = hard(self.shutdown, self.closed, self.unanswered) => h,
            why = soft(self.soft) => Halt::Soft(why),
        }
    }

    /// Resolves at the first hard reason only.
    async fn hard(&mut self) -> Halt {
        hard(self.shutdown, self.closed, self.unanswered).await
    }

    /// Resolves at node shutdown or `close_all`, or after `wait`.
    async fn closed_or(&mut self, wait: std::time::Duration) {
        tokio::select! {
            _ = self.shutdown.recv() => {}
            _ = self.closed.recv() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn hard(
    shutdown: &mut broadcast::Receiver<()>,
    closed: &mut broadcast::Receiver<()>,
    unanswered: &mut mpsc::Receiver<CloseReason>,
) -> Halt {
    tokio::select! {
        _ = shutdown.recv() => Halt::Hard,
        _ = closed.recv() => Halt::Hard,
        Some(_) = unanswered.recv() => Halt::Unanswered,
    }
}

async fn soft(rx: &mut watch::Receiver<Option<Closing>>) -> Closing {
    let why = rx.wait_for(Option::is_some).await.map(|why| why.unwrap_or(Closing::Idle));
    match why {
        Ok(why) => why,
        // The registry's state lives as long as the guard: never.
        Err(_) => std::future::pending().await,
    }
}

/// The sending half of a connection: each reply goes out as one whole
/// record (header and body in one vectored write, not copied together); each
/// write counts as activity, and a reply's charge is released once it is all
/// written. A reply is written at once by the call that made it when it is
/// the connection's only running call, nothing is queued or being written
/// and the socket takes it whole (one request in flight: no other task is
/// woken); otherwise it is queued in order for the writer task (several in
/// flight: the writes overlap the next calls on the other core). The queue is bounded by the replies' memory charges (the
/// reader starts no call without room for its reply).
pub(super) struct Replies {
    wr: OwnedWriteHalf,
    peer: SocketAddr,
    state: Arc<ConnState>,
    queue: std::sync::Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// The writer task has taken a reply and is writing it.
    writing: bool,
    /// No more replies are taken (`finish`, or the socket failed).
    closed: bool,
}

/// A framed reply, `written` bytes of it already sent.
struct Pending {
    header: [u8; record::FRAGMENT_HEADER_BYTES],
    message: Message,
    written: usize,
    _charge: ReplyCharge,
}

impl Pending {
    fn len(&self) -> usize {
        self.header.len().saturating_add(self.message.len())
    }

    /// What is left to send, as at most three slices (record mark, the
    /// message's two parts).
    fn rest(&self) -> [IoSlice<'_>; 3] {
        let [head, body] = self.message.parts();
        unsent([&self.header[..], head, body], self.written).map(IoSlice::new)
    }
}

/// What is left of `parts`, sent back to back, once `written` bytes are out.
fn unsent<const N: usize>(parts: [&[u8]; N], written: usize) -> [&[u8]; N] {
    let mut skip = written;
    parts.map(|part| {
        let from = skip.min(part.len());
        skip -= from;
        part.get(from..).unwrap_or_default()
    })
}

impl Replies {
    /// Send `message` as one record, now if the socket takes it, else queued.
    pub(super) fn send(&self, message: Message, charge: ReplyCharge) {
        let header = match record::header(message.len()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = ?e, "reply too large to frame; dropped");
                return;
            }
        };
        let mut reply = Pending { header, message, written: 0, _charge: charge };
        let mut queue = lock(&self.queue);
        if queue.closed {
            return;
        }
        if queue.pending.is_empty() && !queue.writing && self.state.running() <= 1 {
            match self.wr.try_write_vectored(&reply.rest()) {
                Ok(n) => {
                    self.state.touch();
                    reply.written = n;
                    if n >= reply.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    queue.closed = true;
                    return;
                }
            }
        }
        queue.pending.push_back(reply);
        drop(queue);
        self.wake.notify_one();
    }

    /// Take no more replies; the writer ends once the queue is written.
    pub(super) fn finish(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_one();
    }

    /// The writer task: write queued replies in order until `finish` (or a
    /// failed write) and an empty queue.
    async fn run(self: Arc<Self>) {
        loop {
            let next = {
                let mut queue = lock(&self.queue);
                let next = queue.pending.pop_front();
                queue.writing = next.is_some();
                if next.is_none() && queue.closed {
                    return;
                }
                next
            };
            let Some(mut reply) = next else {
                self.wake.notified().await;
                continue;
            };
            while reply.written < reply.len() {
                if self.wr.writable().await.is_err() {
                    return self.fail();
                }
                match self.wr.try_write_vectored(&reply.rest()) {
                    Ok(0) => return self.fail(),
                    Ok(n) => {
                        self.state.touch();
                        reply.written = reply.written.saturating_add(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return self.fail(),
                }
            }
        }
    }

    /// The socket failed: drop what is queued (releasing its charges).
    fn fail(&self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        queue.pending.clear();
    }
}

fn lock(m: &std::sync::Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection's `Replies` and its writer task.
fn spawn_writer(wr: OwnedWriteHalf, peer: SocketAddr, state: Arc<ConnState>) -> (Arc<Replies>, JoinHandle<()>) {
    let replies = Arc::new(Replies { wr, peer, state, queue: Default::default(), wake: Notify::new() });
    let writer = tokio::spawn(replies.clone().run());
    (replies, writer)
}
