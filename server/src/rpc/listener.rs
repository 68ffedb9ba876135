//! TCP and UDP listeners (mini-redis' `server.rs`): each accepted connection
//! admitted under the connection limits (`RpcShared::admit`: per address and
//! in total, else closed at once), one task per connection, a broadcast for shutdown, and
//! a channel that closes once every task is done, so `shutdown` can wait for
//! all of them. A UDP call that may not be answered (`Outcome::Close`) is
//! dropped: the client retransmits on its own. Each accepted TCP socket
//! resets its connection if the process dies (`tracked`, below), and is
//! reported to `RpcShared::conn_observer` when it opens and closes.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, Semaphore};

use super::conn;
use super::dispatch::{Dispatcher, Outcome};
use super::program::Transport;

/// Largest UDP datagram received or sent.
pub const UDP_DATAGRAM_BYTES_MAX: usize = 64 * 1024;
/// UDP calls executing at the same time, per socket.
pub const UDP_INFLIGHT_MAX: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors).
pub const ACCEPT_RETRY_MS: u64 = 100;

const _: () = assert!(UDP_INFLIGHT_MAX > 0);

/// A set of listeners that stop together.
pub struct Listeners {
    shutdown_tx: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self::new()
    }
}

impl Listeners {
    pub fn new() -> Self {
        let (shutdown_tx, _) = broadcast::channel(1);
        let (done_tx, done_rx) = mpsc::channel(1);
        Listeners { shutdown_tx, done_tx, done_rx }
    }

    /// Serve `dispatcher`'s programs on a bound TCP listener.
    pub fn tcp<C: Send + Sync + 'static>(&self, listener: TcpListener, dispatcher: Arc<Dispatcher<C>>) {
        let shutdown = self.shutdown_tx.subscribe();
        let done = self.done_tx.clone();
        let handle_tx = self.shutdown_tx.clone();
        tokio::spawn(accept_loop(listener, dispatcher, shutdown, handle_tx, done));
    }

    /// Serve `dispatcher`'s programs on a bound UDP socket.
    pub fn udp<C: Send + Sync + 'static>(&self, socket: UdpSocket, dispatcher: Arc<Dispatcher<C>>) {
        let shutdown = self.shutdown_tx.subscribe();
        let done = self.done_tx.clone();
        tokio::spawn(udp_loop(Arc::new(socket), dispatcher, shutdown, done));
    }

    /// Stop accepting, close every connection of these listeners, and wait
    /// until every task they started has finished.
    pub async fn shutdown(self) {
        let Listeners { shutdown_tx, done_tx, mut done_rx } = self;
        // No receiver means nothing is running.
        let _ = shutdown_tx.send(());
        drop(done_tx);
        // Returns None once every task has dropped its sender.
        let _ = done_rx.recv().await;
    }
}

async fn accept_loop<C: Send + Sync + 'static>(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher<C>>,
    mut shutdown: broadcast::Receiver<()>,
    shutdown_tx: broadcast::Sender<()>,
    done: mpsc::Sender<()>,
) {
    let shared = dispatcher.shared().clone();
    let record_bytes_max = shared.record_bytes_max;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        // Over a connection limit: closed before anything is read.
        let Some(guard) = shared.admit(peer) else { continue };
        let _ = stream.set_nodelay(true);
        let tracked = Tracked::accepted(&stream, peer, shared.conn_observer.get().cloned());
        let (dispatcher, conn_shutdown, done) = (dispatcher.clone(), shutdown_tx.subscribe(), done.clone());
        tokio::spawn(async move {
            conn::serve(stream, peer, dispatcher, record_bytes_max, conn_shutdown, guard).await;
            tracked.closed();
            drop(done);
        });
    }
}

/// Told of each accepted TCP connection (our local address, the peer's) and
/// of its close.
pub trait ConnObserver: Send + Sync {
    fn opened(&self, local: SocketAddr, peer: SocketAddr);
    fn closed(&self, local: SocketAddr, peer: SocketAddr);
}

/// An accepted TCP connection's close behaviour and report.
///
/// SO_LINGER {on, 0} is set at accept, so that when the process dies (kill
/// -9, crash) the kernel closes the socket with a reset: the client learns
/// at once and no orphaned FIN-WAIT or TIME-WAIT socket is left behind to
/// answer the client's return with ACKs that do not match (a stall of
/// minutes when this node takes over again). A reset discards unsent bytes,
/// so our own deliberate closes must not use it: `conn::serve` ends a
/// connection after the peer half-closed and its last replies were written
/// (still queued in the kernel). Hence a duplicate of the descriptor keeps
/// the socket open past `serve`, and `closed` turns lingering off again
/// before the last close: the kernel then sends what is queued and a FIN,
/// as for any close of ours.
struct Tracked {
    ends: Option<(SocketAddr, SocketAddr)>,
    observer: Option<Arc<dyn ConnObserver>>,
    dup: Option<OwnedFd>,
}

impl Tracked {
    fn accepted(stream: &tokio::net::TcpStream, peer: SocketAddr, observer: Option<Arc<dyn ConnObserver>>) -> Self {
        let dup = stream.as_fd().try_clone_to_owned().ok();
        if let Some(fd) = &dup {
            if let Err(e) = set_linger_zero(fd, true) {
                tracing::debug!(%peer, error = %e, "SO_LINGER 0 failed");
            }
        }
        let ends = stream.local_addr().ok().map(|local| (local, peer));
        if let (Some(o), Some((local, peer))) = (&observer, ends) {
            o.opened(local, peer);
        }
        Tracked { ends, observer, dup }
    }

    fn closed(self) {
        if let Some(fd) = &self.dup {
            let _ = set_linger_zero(fd, false);
        }
        drop(self.dup);
        if let (Some(o), Some((local, peer))) = (&self.observer, self.ends) {
            o.closed(local, peer);
        }
    }
}

/// SO_LINGER {on, 0} (`on`) or {off, 0}.
fn set_linger_zero(fd: &OwnedFd, on: bool) -> std::io::Result<()> {
    let linger = libc::linger { l_onoff: i32::from(on), l_linger: 0 };
    // SAFETY: plain setsockopt on a descriptor we own, with a valid value.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn udp_loop<C: Send + Sync + 'static>(
    socket: Arc<UdpSocket>,
    dispatcher: Arc<Dispatcher<C>>,
    mut shutdown: broadcast::Receiver<()>,
    done: mpsc::Sender<()>,
) {
    let inflight = Arc::new(Semaphore::new(UDP_INFLIGHT_MAX));
    let mut buf = vec![0u8; UDP_DATAGRAM_BYTES_MAX];
    loop {
        let permit = tokio::select! {
            p = inflight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.recv() => return,
        };
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let Some(datagram) = buf.get(..n).map(<[u8]>::to_vec) else { continue };
        let (socket, dispatcher, done) = (socket.clone(), dispatcher.clone(), done.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match dispatcher.call(datagram, peer, Transport::Udp).await {
                Outcome::Reply(reply) if reply.len() > UDP_DATAGRAM_BYTES_MAX => {
                    tracing::warn!(%peer, bytes = reply.len(), "udp reply too large; dropped");
                }
                Outcome::Reply(reply) => {
                    if let Err(e) = socket.send_to(&reply.to_vec(), peer).await {
                        tracing::debug!(%peer, error = %e, "udp send failed");
                    }
                }
                Outcome::Silent => {}
                Outcome::Close { reason, xid } => {
                    // No connection to close: the client retransmits on its
                    // own. Logged at the 1st, 2nd, 4th, 8th ... occurrence.
                    let total = dispatcher.shared().unanswered.get(reason);
                    if total.is_power_of_two() {
                        tracing::warn!(%peer, xid, ?reason, total, "udp call cannot be answered here; dropped");
                    }
                }
            }
            drop(done);
        });
    }
}
