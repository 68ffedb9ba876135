//! One TCP connection's handler (mini-redis' `connection.rs` + `Handler`),
//! registered in `registry::ConnRegistry` while it is open: a reader that
//! cuts records, up to `CONN_INFLIGHT_MAX` calls running concurrently, and one
//! writer task that sends each reply as one whole record. A call that may not
//! be answered (`dispatch::Outcome::Close`: fenced, or a failed commit) closes
//! the whole connection at once, dropping replies still queued, so the client
//! reconnects and resends instead of waiting out its timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::dispatch::{Dispatcher, Outcome};
use super::program::Transport;
use super::record::{self, RecordError};
use super::registry::ConnGuard;
use super::shared::CloseReason;

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;

/// Calls of one connection executing at the same time.
pub const CONN_INFLIGHT_MAX: usize = 16;
/// Initial read buffer per connection; it grows up to one record.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A single-fragment record at least this long is read straight into its own
/// exactly-sized buffer (one copy of a WRITE's payload, not several while the
/// shared buffer grows); smaller records share `READ_BUFFER_BYTES` reads.
pub const DIRECT_RECORD_BYTES_MIN: usize = 32 * 1024;

const _: () = assert!(CONN_INFLIGHT_MAX > 0);

/// Serve one TCP connection until the peer closes it, it breaks the record
/// rules, the node shuts down, `close_all` is called, or a call may not be
/// answered (`Outcome::Close`).
pub async fn serve<C: Send + Sync + 'static>(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher<C>>,
    record_bytes_max: u32,
    mut shutdown: broadcast::Receiver<()>,
    mut guard: ConnGuard,
) {
    let (rd, wr) = stream.into_split();
    let (tx, mut writer) = spawn_writer(wr, peer);
    let mut calls = JoinSet::new();
    // The first call that may not be answered asks for the close; one is enough.
    let (close_tx, mut close_rx) = mpsc::channel(1);
    let mut stop = Stop { shutdown: &mut shutdown, closed: &mut guard.closed, unanswered: &mut close_rx };
    let reader = Reader { rd, peer, dispatcher, record_bytes_max, tx: tx.clone(), close: close_tx };
    let peer_done = reader.run(&mut calls, &mut stop).await;
    if peer_done {
        // The peer finished sending: let its calls complete and their replies
        // go out, unless the node stops or fences meanwhile (a peer that never
        // reads its replies must not hold up shutdown).
        let drain = async {
            while calls.join_next().await.is_some() {}
            drop(tx);
            let _ = (&mut writer).await;
        };
        tokio::select! {
            _ = drain => {}
            _ = stop.wait() => {}
        }
    } else {
        drop(tx);
    }
    calls.shutdown().await;
    writer.abort();
    drop(guard);
}

/// The reasons to drop a connection at once: node shutdown, `close_all`, a
/// call that may not be answered.
struct Stop<'a> {
    shutdown: &'a mut broadcast::Receiver<()>,
    closed: &'a mut broadcast::Receiver<()>,
    /// Sent by a call task on `Outcome::Close`. Every sender gone (all calls
    /// done, the reader finished) is no reason to stop.
    unanswered: &'a mut mpsc::Receiver<CloseReason>,
}

impl Stop<'_> {
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.recv() => {}
            _ = self.closed.recv() => {}
            Some(_) = self.unanswered.recv() => {}
        }
    }
}

/// One writer task per connection: each reply goes out as one whole record.
fn spawn_writer(mut wr: OwnedWriteHalf, peer: SocketAddr) -> (mpsc::Sender<Vec<u8>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_INFLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            // The record-mark header and the reply go out in one vectored
            // write: the reply is not copied into a framed buffer.
            let header = match record::header(reply.len()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(%peer, error = ?e, "reply too large to frame; dropped");
                    continue;
                }
            };
            let mut framed = Buf::chain(header.as_slice(), reply.as_slice());
            if wr.write_all_buf(&mut framed).await.is_err() {
                break;
            }
        }
    });
    (tx, writer)
}

struct Reader<C: 'static> {
    rd: OwnedReadHalf,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher<C>>,
    record_bytes_max: u32,
    tx: mpsc::Sender<Vec<u8>>,
    close: mpsc::Sender<CloseReason>,
}

impl<C: Send + Sync + 'static> Reader<C> {
    /// Cut records and start a call for each, at most `CONN_INFLIGHT_MAX` at a
    /// time. True if the peer closed its side cleanly, false if the connection
    /// must be dropped now.
    async fn run(mut self, calls: &mut JoinSet<()>, stop: &mut Stop<'_>) -> bool {
        let inflight = Arc::new(Semaphore::new(CONN_INFLIGHT_MAX));
        let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let peer = self.peer;
        loop {
            let record = match record::parse(&mut buf, self.record_bytes_max) {
                Ok(r) => r,
                Err(e) => {
                    log_record_error(peer, e);
                    return false;
                }
            };
            let record = match record {
                Some(r) => Some(r),
                None => match record::pending_single(&buf, self.record_bytes_max) {
                    Some(len) if len >= DIRECT_RECORD_BYTES_MIN => {
                        match self.read_direct(&mut buf, len, calls, stop).await {
                            Direct::Record(r) => Some(r),
                            Direct::PeerClosed => return true,
                            Direct::Drop => return false,
                        }
                    }
                    _ => None,
                },
            };
            if let Some(record) = record {
                let permit = tokio::select! {
                    p = inflight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return false,
                    },
                    _ = stop.wait() => return false,
                };
                let (dispatcher, tx, close) = (self.dispatcher.clone(), self.tx.clone(), self.close.clone());
                calls.spawn(async move {
                    let _permit = permit;
                    match dispatcher.call(record, peer, Transport::Tcp).await {
                        Outcome::Reply(reply) => {
                            // The writer is gone only if the connection is closing.
                            let _ = tx.send(reply).await;
                        }
                        Outcome::Silent => {}
                        Outcome::Close { reason, xid } => {
                            // Logged once per connection: the first close request wins.
                            if close.try_send(reason).is_ok() {
                                let total = dispatcher.shared().unanswered.get(reason);
                                tracing::warn!(%peer, xid, ?reason, total, "call cannot be answered here; connection closed so the client resends");
                            }
                        }
                    }
                });
                continue;
            }
            tokio::select! {
                n = self.rd.read_buf(&mut buf) => match n {
                    Ok(0) => {
                        if !buf.is_empty() {
                            tracing::debug!(%peer, bytes = buf.len(), "connection closed inside a record");
                        }
                        return true;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "read failed");
                        return false;
                    }
                },
                Some(_) = calls.join_next() => {}
                _ = stop.wait() => return false,
            }
        }
    }
}

/// How reading one record straight into its own buffer ended.
enum Direct {
    Record(Vec<u8>),
    /// The peer closed its side inside the record.
    PeerClosed,
    /// A read error or a stop: drop the connection now.
    Drop,
}

impl<C: Send + Sync + 'static> Reader<C> {
    /// Read the rest of a single-fragment record of `len` bytes (bounded by
    /// `record_bytes_max`, checked by `record::pending_single`) whose header
    /// and first bytes are in `buf`, straight into an exactly-sized buffer:
    /// the payload is copied once, from the socket. Nothing past the record is
    /// read, so the next record starts in `buf` as usual.
    async fn read_direct(
        &mut self,
        buf: &mut BytesMut,
        len: usize,
        calls: &mut JoinSet<()>,
        stop: &mut Stop<'_>,
    ) -> Direct {
        buf.advance(record::FRAGMENT_HEADER_BYTES);
        let mut record = Vec::with_capacity(len);
        let head = buf.len().min(len);
        record.extend_from_slice(&buf[..head]);
        buf.advance(head);
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
                    _ = stop.wait() => return Direct::Drop,
                }
            };
            match read {
                Some(Ok(0)) => {
                    tracing::debug!(%peer, bytes = record.len(), "connection closed inside a record");
                    return Direct::PeerClosed;
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    return Direct::Drop;
                }
                Some(Ok(_)) | None => {}
            }
        }
        Direct::Record(record)
    }
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
