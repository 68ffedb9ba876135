//! TCP connections: the registry of every open connection (so fencing can drop
//! them all at once) and the per-connection handler (mini-redis'
//! `connection.rs` + `Handler`): a reader that cuts records, up to
//! `CONN_INFLIGHT_MAX` calls running concurrently, and one writer task that
//! sends each reply as one whole record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::dispatch::Dispatcher;
use super::program::Transport;
use super::record::{self, RecordError};

/// Open TCP connections per node, over all listeners.
pub const CONNECTIONS_MAX: usize = 1024;
/// Calls of one connection executing at the same time.
pub const CONN_INFLIGHT_MAX: usize = 16;
/// Initial read buffer per connection; it grows up to one record.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

const _: () = assert!(CONNECTIONS_MAX > 0);
const _: () = assert!(CONN_INFLIGHT_MAX > 0);

struct Inner {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, SocketAddr>>,
    close_tx: broadcast::Sender<()>,
    permits: Arc<Semaphore>,
}

/// Every open TCP connection of this node.
pub struct ConnRegistry {
    inner: Arc<Inner>,
}

impl Default for ConnRegistry {
    fn default() -> Self {
        Self::new(CONNECTIONS_MAX)
    }
}

impl ConnRegistry {
    pub fn new(connections_max: usize) -> Self {
        let (close_tx, _) = broadcast::channel(1);
        ConnRegistry {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(1),
                open: Mutex::new(HashMap::new()),
                close_tx,
                permits: Arc::new(Semaphore::new(connections_max)),
            }),
        }
    }

    /// Listeners take one permit per accepted connection.
    pub fn permits(&self) -> Arc<Semaphore> {
        self.inner.permits.clone()
    }

    /// Number of open connections.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Peers of the open connections.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.lock().values().copied().collect()
    }

    /// Drop every open connection now (fencing). Calls still running are
    /// aborted and their replies are never sent.
    pub fn close_all(&self) {
        // No receiver means no open connection: nothing to do.
        let _ = self.inner.close_tx.send(());
    }

    /// Track a new connection until the returned guard drops.
    pub fn register(&self, peer: SocketAddr) -> ConnGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = self.inner.close_tx.subscribe();
        self.lock().insert(id, peer);
        ConnGuard { inner: self.inner.clone(), id, closed }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SocketAddr>> {
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One registered connection; unregisters on drop.
pub struct ConnGuard {
    inner: Arc<Inner>,
    id: u64,
    closed: broadcast::Receiver<()>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// Serve one TCP connection until the peer closes it, it breaks the record
/// rules, the node shuts down, or `close_all` is called.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    record_bytes_max: u32,
    mut shutdown: broadcast::Receiver<()>,
    mut guard: ConnGuard,
) {
    let (rd, wr) = stream.into_split();
    let (tx, mut writer) = spawn_writer(wr, peer);
    let mut calls = JoinSet::new();
    let mut stop = Stop { shutdown: &mut shutdown, closed: &mut guard.closed };
    let reader = Reader { rd, peer, dispatcher, record_bytes_max, tx: tx.clone() };
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

/// The two reasons to drop a connection at once: node shutdown, `close_all`.
struct Stop<'a> {
    shutdown: &'a mut broadcast::Receiver<()>,
    closed: &'a mut broadcast::Receiver<()>,
}

impl Stop<'_> {
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.recv() => {}
            _ = self.closed.recv() => {}
        }
    }
}

/// One writer task per connection: each reply goes out as one whole record.
fn spawn_writer(mut wr: OwnedWriteHalf, peer: SocketAddr) -> (mpsc::Sender<Vec<u8>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_INFLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let framed = match record::frame(&reply) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(%peer, error = ?e, "reply too large to frame; dropped");
                    continue;
                }
            };
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
    });
    (tx, writer)
}

struct Reader {
    rd: OwnedReadHalf,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    record_bytes_max: u32,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Reader {
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
            if let Some(record) = record {
                let permit = tokio::select! {
                    p = inflight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return false,
                    },
                    _ = stop.wait() => return false,
                };
                let (dispatcher, tx) = (self.dispatcher.clone(), self.tx.clone());
                calls.spawn(async move {
                    let _permit = permit;
                    if let Some(reply) = dispatcher.call(record, peer, Transport::Tcp).await {
                        // The writer is gone only if the connection is closing.
                        let _ = tx.send(reply).await;
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

fn log_record_error(peer: SocketAddr, e: RecordError) {
    match e {
        RecordError::Oversize { len, max } => {
            tracing::warn!(%peer, len, max, "record larger than the limit; connection closed")
        }
        RecordError::Malformed => tracing::warn!(%peer, "malformed record marking; connection closed"),
        RecordError::Incomplete => {}
    }
}
