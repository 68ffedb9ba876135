//! The reading half of a TCP connection (`conn`): cut records and start one
//! call per record, within these bounds (`limits::Limits`):
//!
//! - Records up to `READ_BUFFER_BYTES` share the connection's base buffer;
//!   a single-fragment record of at least `DIRECT_RECORD_BYTES_MIN` is read
//!   into its own exactly-sized buffer, and a larger multi-fragment record
//!   grows the buffer. Either way the bytes are first taken from the node's
//!   request budget (`budget::Budgets::request`), with nothing else held
//!   while waiting; every record carries its charge until its call ends.
//! - A call starts once one of the connection's `CONN_INFLIGHT_MAX` slots is
//!   free, the connection's reply bytes leave room for its reply estimate
//!   (`conn_reply_bytes_max`, or nothing held at all), and the node's reply
//!   budget has room for it. While it waits the reader keeps reading into
//!   the base buffer (not past it), so a peer that closes is seen.
//! - When the peer closes (end of stream, a reset, or `POLLRDHUP` seen before
//!   a call starts while the buffer is full), the record waiting and every
//!   whole record still buffered are dropped, not run, and counted.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::budget::ReplyCharge;
use super::conn::{Halt, Replies, Stop, CONN_INFLIGHT_MAX, DIRECT_RECORD_BYTES_MIN, READ_BUFFER_BYTES};
use super::dispatch::{Dispatcher, Outcome};
use super::program::Transport;
use super::record::{self, RecordError};
use super::registry::ConnState;
use super::shared::CloseReason;

/// How the reader ended.
pub(super) enum End {
    /// The peer closed its side (or reset the connection).
    PeerClosed,
    /// A soft close: idle timeout or eviction.
    Soft,
    /// Drop the connection now: a broken record, a read error, a hard stop.
    Drop,
    /// A call may not be answered: stop, and keep the socket a while
    /// (`conn`'s module doc).
    Unanswered,
}

impl From<Halt> for End {
    fn from(h: Halt) -> End {
        match h {
            Halt::Hard => End::Drop,
            Halt::Unanswered => End::Unanswered,
            Halt::Soft(_) => End::Soft,
        }
    }
}

/// A whole record and its request charge.
struct Next {
    record: Vec<u8>,
    request: OwnedSemaphorePermit,
}

/// What one read of the socket gave.
enum Read {
    Data,
    PeerClosed,
    Failed,
}

pub(super) struct Reader<C: 'static> {
    rd: OwnedReadHalf,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher<C>>,
    record_bytes_max: u32,
    replies: Arc<Replies>,
    close: mpsc::Sender<CloseReason>,
    state: Arc<ConnState>,
    buf: BytesMut,
    /// Request bytes charged for growing `buf` past `READ_BUFFER_BYTES` (a
    /// multi-fragment record larger than the buffer).
    growth: Option<OwnedSemaphorePermit>,
}

impl<C: Send + Sync + 'static> Reader<C> {
    pub(super) fn new(
        rd: OwnedReadHalf,
        peer: SocketAddr,
        dispatcher: Arc<Dispatcher<C>>,
        record_bytes_max: u32,
        replies: Arc<Replies>,
        close: mpsc::Sender<CloseReason>,
        state: Arc<ConnState>,
    ) -> Self {
        let buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        Reader { rd, peer, dispatcher, record_bytes_max, replies, close, state, buf, growth: None }
    }

    /// Read records and start their calls until the connection ends.
    pub(super) async fn run(mut self, calls: &mut JoinSet<()>, stop: &mut Stop<'_>) -> End {
        let inflight = Arc::new(Semaphore::new(CONN_INFLIGHT_MAX));
        loop {
            let next = match self.next_record(calls, stop).await {
                Ok(next) => next,
                Err(end) => return end,
            };
            let started = match self.admit(&inflight, calls, stop).await {
                Ok(started) => started,
                Err(end) => {
                    if matches!(end, End::PeerClosed) {
                        self.drop_queued(1);
                    }
                    return end;
                }
            };
            self.start(next, started, calls).await;
        }
    }

    /// The next whole record, charged to the request budget.
    async fn next_record(&mut self, calls: &mut JoinSet<()>, stop: &mut Stop<'_>) -> Result<Next, End> {
        let max = self.record_bytes_max;
        loop {
            match record::check(&self.buf, max) {
                Ok(used) => {
                    let request = match self.growth.take() {
                        // The grown buffer's charge (the largest record) covers
                        // the record: nothing to wait for.
                        Some(mut grown) => {
                            let rest = used.saturating_sub(grown.num_permits());
                            if let Some(more) = self.dispatcher.shared().budgets.try_request(rest) {
                                grown.merge(more);
                            }
                            grown
                        }
                        None => self.request_bytes(used, calls, stop).await?,
                    };
                    let record = match record::parse(&mut self.buf, max) {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => return Err(End::Drop),
                    };
                    self.shrink();
                    return Ok(Next { record, request });
                }
                Err(RecordError::Incomplete) => {}
                Err(e) => {
                    log_record_error(self.peer, e);
                    return Err(End::Drop);
                }
            }
            if let Some(len) = record::pending_single(&self.buf, max).filter(|l| *l >= DIRECT_RECORD_BYTES_MIN) {
                return self.read_direct(len, calls, stop).await;
            }
            if self.buf.len() >= READ_BUFFER_BYTES && self.growth.is_none() {
                // A multi-fragment record larger than the buffer: charge the
                // largest record at once (no hold-and-wait); the base buffer
                // leaves room for its fragment headers.
                self.growth = Some(self.request_bytes(max as usize, calls, stop).await?);
            }
            let room = self.buf_max().saturating_sub(self.buf.len());
            if room == 0 {
                // Only when `record_bytes_max` exceeds the request budget.
                tracing::warn!(peer = %self.peer, bytes = self.buf.len(), "record larger than the request memory budget; connection closed");
                return Err(End::Drop);
            }
            match self.read_some(room, calls, stop).await? {
                Read::Data => {}
                Read::PeerClosed => {
                    if !self.buf.is_empty() {
                        tracing::debug!(peer = %self.peer, bytes = self.buf.len(), "connection closed inside a record");
                    }
                    return Err(End::PeerClosed);
                }
                Read::Failed => return Err(End::Drop),
            }
        }
    }

    /// The most `buf` may hold now.
    fn buf_max(&self) -> usize {
        READ_BUFFER_BYTES + self.growth.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// After a large record left the buffer, give its memory back.
    fn shrink(&mut self) {
        if self.buf.capacity() > 2 * READ_BUFFER_BYTES && self.buf.len() < READ_BUFFER_BYTES {
            let mut fresh = BytesMut::with_capacity(READ_BUFFER_BYTES);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
    }

    /// Read at most `room` more bytes into `buf`, reaping finished calls
    /// meanwhile (each reaped call ends one pass: `Read::Data`).
    async fn read_some(&mut self, room: usize, calls: &mut JoinSet<()>, stop: &mut Stop<'_>) -> Result<Read, End> {
        self.buf.reserve(room);
        let peer = self.peer;
        let mut limited = (&mut self.buf).limit(room);
        tokio::select! {
            n = self.rd.read_buf(&mut limited) => match n {
                Ok(0) => Ok(Read::PeerClosed),
                Ok(_) => {
                    self.state.touch();
                    Ok(Read::Data)
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    Ok(if is_reset(&e) { Read::PeerClosed } else { Read::Failed })
                }
            },
            Some(_) = calls.join_next() => Ok(Read::Data),
            h = stop.wait() => Err(h.into()),
        }
    }

    /// `bytes` from the node's request budget, counting a wait.
    async fn request_bytes(
        &mut self,
        bytes: usize,
        calls: &mut JoinSet<()>,
        stop: &mut Stop<'_>,
    ) -> Result<OwnedSemaphorePermit, End> {
        let shared = self.dispatcher.shared().clone();
        if let Some(p) = shared.budgets.try_request(bytes) {
            return Ok(p);
        }
        shared.request_wait(self.peer, bytes);
        let wanted = shared.budgets.request(bytes);
        tokio::pin!(wanted);
        loop {
            tokio::select! {
                p = &mut wanted => return p.ok_or(End::Drop),
                Some(_) = calls.join_next() => {}
                h = stop.wait() => return Err(h.into()),
            }
        }
    }

    /// Read the rest of a single-fragment record of `len` bytes (bounded by
    /// `record_bytes_max`, checked by `record::pending_single`) whose header
    /// and first bytes are in `buf`, straight into an exactly-sized buffer
    /// charged to the request budget first: the payload is copied once, from
    /// the socket. Nothing past the record is read, so the next record
    /// starts in `buf` as usual.
    async fn read_direct(&mut self, len: usize, calls: &mut JoinSet<()>, stop: &mut Stop<'_>) -> Result<Next, End> {
        let request = self.request_bytes(len, calls, stop).await?;
        self.buf.advance(record::FRAGMENT_HEADER_BYTES);
        let mut record = Vec::with_capacity(len);
        let head = self.buf.len().min(len);
        record.extend_from_slice(&self.buf[..head]);
        self.buf.advance(head);
        let peer = self.peer;
        // Each pass reads at least one byte or reaps a finished call (at most
        // CONN_INFLIGHT_MAX of them), so the loop ends.
        while record.len() < len {
            let want = len - record.len();
            let read = {
                let mut rest = (&mut record).limit(want);
                tokio::select! {
                    n = self.rd.read_buf(&mut rest) => Some(n),
                    Some(_) = calls.join_next() => None,
                    h = stop.wait() => return Err(h.into()),
                }
            };
            match read {
                Some(Ok(0)) => {
                    tracing::debug!(%peer, bytes = record.len(), "connection closed inside a record");
                    return Err(End::PeerClosed);
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    return Err(if is_reset(&e) { End::PeerClosed } else { End::Drop });
                }
                Some(Ok(_)) => self.state.touch(),
                None => {}
            }
        }
        Ok(Next { record, request })
    }
}

/// What interrupted the wait for a call's start.
enum Wait {
    Ready(Option<Started>),
    Read(std::io::Result<usize>),
    Reaped,
}

/// The permits a call starts with.
struct Started {
    slot: OwnedSemaphorePermit,
    reply: ReplyCharge,
}

impl<C: Send + Sync + 'static> Reader<C> {
    /// Wait until the next call may start (see the module doc), reading
    /// ahead meanwhile so a peer that closes is seen.
    async fn admit(
        &mut self,
        inflight: &Arc<Semaphore>,
        calls: &mut JoinSet<()>,
        stop: &mut Stop<'_>,
    ) -> Result<Started, End> {
        let shared = self.dispatcher.shared().clone();
        let state = self.state.clone();
        let cap = shared.conns.limits().conn_reply_bytes_max;
        let wanted = async {
            let slot = inflight.clone().acquire_owned().await.ok()?;
            let room =
                |s: &ConnState| s.reply_bytes() == 0 || s.reply_bytes().saturating_add(s.reply_estimate()) <= cap;
            if !room(&state) {
                shared.reply_wait(state.peer, state.reply_bytes());
                state.wait_room(room).await;
            }
            let reply = shared.budgets.reserve_reply(&state).await?;
            Some(Started { slot, reply })
        };
        tokio::pin!(wanted);
        loop {
            let room = READ_BUFFER_BYTES.saturating_sub(self.buf.len());
            let can_read = room > 0;
            let mut limited = (&mut self.buf).limit(room);
            let event = tokio::select! {
                started = &mut wanted => Wait::Ready(started),
                n = self.rd.read_buf(&mut limited), if can_read => Wait::Read(n),
                Some(_) = calls.join_next() => Wait::Reaped,
                h = stop.wait() => return Err(h.into()),
            };
            match event {
                Wait::Ready(started) => {
                    let started = started.ok_or(End::Drop)?;
                    // Not reading (the buffer is full): ask the kernel whether
                    // the peer closed before running another of its calls.
                    if !can_read && peer_closed(&self.rd) {
                        return Err(End::PeerClosed);
                    }
                    return Ok(started);
                }
                Wait::Read(Ok(0)) => return Err(End::PeerClosed),
                Wait::Read(Ok(_)) => self.state.touch(),
                Wait::Read(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "read failed");
                    return Err(if is_reset(&e) { End::PeerClosed } else { End::Drop });
                }
                Wait::Reaped => {}
            }
        }
    }

    /// Start the call of `next`: it holds its slot, request and reply
    /// charges until it ends; its reply goes to the writer with the charge
    /// resized to the reply. The call is polled once here first: one that
    /// needs no wait (GETATTR, ACCESS, LOOKUP, a DRC hit: filesystem work of
    /// a few cached syscalls, `nfs3::common::run_inline`) completes on this
    /// task, without waking another thread for a task of its own; one that
    /// waits (a commit, the blocking pool) continues as its own task.
    async fn start(&mut self, next: Next, started: Started, calls: &mut JoinSet<()>) {
        let Next { record, request } = next;
        let Started { slot, mut reply } = started;
        let (dispatcher, replies, close, state) =
            (self.dispatcher.clone(), self.replies.clone(), self.close.clone(), self.state.clone());
        let peer = self.peer;
        state.call_started();
        let mut call = Box::pin(async move {
            let _running = Running(state.clone());
            let _slot = slot;
            let outcome = dispatcher.call(record, peer, Transport::Tcp).await;
            drop(request);
            match outcome {
                Outcome::Reply(body) => {
                    state.replied(body.len());
                    reply.resize(body.len().saturating_add(record::FRAGMENT_HEADER_BYTES));
                    replies.send(body, reply);
                }
                Outcome::Silent => {}
                Outcome::Close { reason, xid } => {
                    // Logged once per connection: the first close request wins.
                    if close.try_send(reason).is_ok() {
                        let total = dispatcher.shared().unanswered.get(reason);
                        tracing::warn!(%peer, xid, ?reason, total, "call cannot be answered here; connection closed (at the demotion, or in 1 s) so the client resends");
                    }
                }
            }
        });
        let done = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_ready())).await;
        if !done {
            calls.spawn(call);
        }
    }

    /// The peer closed: `waiting` records read but not started, and every
    /// whole record still buffered, are dropped.
    fn drop_queued(&mut self, waiting: u64) {
        let mut dropped = waiting;
        while let Ok(Some(_)) = record::parse(&mut self.buf, self.record_bytes_max) {
            dropped += 1;
        }
        self.dispatcher.shared().calls_dropped(self.peer, dropped);
    }
}

/// Marks a call finished however its task ends (also when aborted).
struct Running(Arc<ConnState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.call_finished();
    }
}

/// A reset or broken connection: the peer is gone, as after a close.
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::BrokenPipe
    )
}

/// Has the peer closed its side (or reset), even with data still unread?
/// One `poll(2)` with `POLLRDHUP` and no timeout.
fn peer_closed(rd: &OwnedReadHalf) -> bool {
    let mut fd = libc::pollfd { fd: rd.as_ref().as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one initialised pollfd for an open socket, count 1, timeout 0:
    // poll only writes `revents` and does not block.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn log_record_error(peer: SocketAddr, e: RecordError) {
    match e {
        RecordError::Oversize { len, max } => {
            tracing::warn!(%peer, len, max, "record larger than the limit; connection closed")
        }
        RecordError::Malformed => tracing::warn!(%peer, "malformed record marking; connection closed"),
        RecordError::Incomplete => {}
    }
}
