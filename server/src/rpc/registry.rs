//! The registry of every open TCP connection of a node, over all listeners, so
//! fencing can drop them all at once; it also bounds their number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Semaphore};

/// Open TCP connections per node, over all listeners.
pub const CONNECTIONS_MAX: usize = 1024;

const _: () = assert!(CONNECTIONS_MAX > 0);

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
    /// Receives once `close_all` is called.
    pub(super) closed: broadcast::Receiver<()>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}
