//! The client TCP connections of an active period, in the replicated state
//! (`Command::ConnOpen`/`ConnClose`), and what a promotion does with the ones
//! an earlier active left there: tickle each (`vip::tickle`) and forget them
//! (`Command::ConnsForget`).
//!
//! Recording is off the reply path: the listener reports each accepted and
//! closed connection on the VIP (`ConnRecorder`, a `ConnObserver`) into a
//! bounded queue, and one task per active period commits them in batches. A
//! full queue or a refused commit costs only that connection's tickle after
//! a failover (counted, logged at powers of two).
//!
//! `HANFS_NO_TICKLE=1` in the environment switches the tickles off (they are
//! still recorded and forgotten), to measure a failover without them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hanfs_raft::commit::{Commit, CommitError};
use hanfs_state::{Command, TcpConn};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::rpc::listener::ConnObserver;
use crate::vip::sockdiag::{self, DiagError};
use crate::vip::tickle;

/// Set to `1` to send no tickle ACKs on promotion.
pub const NO_TICKLE_ENV: &str = "HANFS_NO_TICKLE";
/// Connection events queued for recording; beyond it they are dropped.
pub const CONN_EVENTS_QUEUE_MAX: usize = 4096;
/// Most connection events committed in one call.
pub const CONN_EVENTS_BATCH_MAX: usize = 256;

/// Reports the VIP's connections to the recording task.
pub(crate) struct ConnRecorder {
    vip: IpAddr,
    tx: mpsc::Sender<Command>,
    dropped: AtomicU64,
}

/// Both ends in plain form (an IPv4-mapped IPv6 address as IPv4), or None
/// if the connection is not to the VIP.
fn to_vip(vip: IpAddr, local: SocketAddr, peer: SocketAddr) -> Option<TcpConn> {
    let server = SocketAddr::new(local.ip().to_canonical(), local.port());
    let client = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    (server.ip() == vip.to_canonical()).then_some(TcpConn { client, server })
}

impl ConnRecorder {
    fn report(&self, cmd: Option<Command>) {
        let Some(cmd) = cmd else { return };
        if self.tx.try_send(cmd).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "connection recording queue full; those clients get no tickle");
            }
        }
    }
}

impl ConnObserver for ConnRecorder {
    fn opened(&self, local: SocketAddr, peer: SocketAddr) {
        self.report(to_vip(self.vip, local, peer).map(|conn| Command::ConnOpen { conn }));
    }

    fn closed(&self, local: SocketAddr, peer: SocketAddr) {
        self.report(to_vip(self.vip, local, peer).map(|conn| Command::ConnClose { conn }));
    }
}

/// Starts recording the connections to `vip`: the observer for the
/// listeners, and the task (it ends when every observer is gone; abort it
/// at demotion).
pub(crate) fn start_recording(commit: Arc<dyn Commit>, vip: IpAddr) -> (Arc<ConnRecorder>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CONN_EVENTS_QUEUE_MAX);
    let recorder = Arc::new(ConnRecorder { vip, tx, dropped: AtomicU64::new(0) });
    (recorder, tokio::spawn(record(commit, rx)))
}

async fn record(commit: Arc<dyn Commit>, mut rx: mpsc::Receiver<Command>) {
    let refused = AtomicU64::new(0);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < CONN_EVENTS_BATCH_MAX {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        match commit.commit(batch.clone()).await {
            Ok(_) => {}
            // One bad or surplus entry refuses the batch: record the others one by one.
            Err(CommitError::Rejected(_)) => {
                for cmd in batch {
                    if let Err(e) = commit.commit(vec![cmd]).await {
                        let n = refused.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                        if n.is_power_of_two() {
                            tracing::warn!(error = %e, refused = n, "recording a client connection failed");
                        }
                    }
                }
            }
            // Not leader any more (or storage failing): the next active tickles what is recorded.
            Err(e) => tracing::debug!(error = %e, "recording client connections failed"),
        }
    }
}

/// Whether tickles are switched off (`NO_TICKLE_ENV`).
fn tickles_off() -> bool {
    std::env::var(NO_TICKLE_ENV).is_ok_and(|v| v == "1")
}

/// Before claiming the VIP: destroy every leftover TCP socket on it (see
/// `vip::sockdiag`). Never fails the promotion; a kernel without
/// SOCK_DESTROY is logged once per process.
pub(crate) fn destroy_stale(vip: IpAddr) {
    static UNSUPPORTED_LOGGED: AtomicBool = AtomicBool::new(false);
    match sockdiag::destroy_tcp_on(vip) {
        Ok(r) if r.found == 0 => {}
        Ok(r) => tracing::info!(%vip, found = r.found, destroyed = r.destroyed, gone = r.gone, failed = r.failed,
            "leftover TCP sockets on the VIP destroyed"),
        Err(DiagError::Unsupported) => {
            if !UNSUPPORTED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY); leftover connections on the VIP stay");
            }
        }
        Err(e) => tracing::warn!(%vip, error = %e, "destroying leftover TCP sockets on the VIP failed"),
    }
}

/// After announcing the VIP: tickle every connection recorded in an earlier
/// active period (epoch below the current one) and then forget them (in the
/// background: the promotion does not wait for that commit).
pub(crate) fn tickle_and_forget(commit: &Arc<dyn Commit>) {
    let (epoch, old): (u64, Vec<(SocketAddr, SocketAddr)>) = {
        let state = commit.state();
        let s = state.read().unwrap_or_else(|p| p.into_inner());
        let old = s.conns().filter(|(_, e)| *e < s.epoch()).map(|(c, _)| (c.server, c.client)).collect();
        (s.epoch(), old)
    };
    if old.is_empty() {
        return;
    }
    if tickles_off() {
        tracing::info!(connections = old.len(), env = NO_TICKLE_ENV, "tickle ACKs switched off; none sent");
    } else {
        let (report, error) = tickle::send_tickles(&old);
        match error {
            None => tracing::info!(tickled = report.tickled, "tickle ACKs sent to the old active's clients"),
            Some(e) => tracing::warn!(tickled = report.tickled, failed = report.failed, error = %e,
                "tickle ACKs sent to the old active's clients, some failed"),
        }
    }
    let commit = commit.clone();
    tokio::spawn(async move {
        if let Err(e) = commit.commit(vec![Command::ConnsForget { epoch }]).await {
            tracing::debug!(error = %e, "forgetting the tickled connections failed; the next active tickles them too");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_to_the_vip_are_recorded() {
        let vip = IpAddr::from([10, 0, 0, 100]);
        let local = SocketAddr::from(([10, 0, 0, 100], 2049));
        let peer = SocketAddr::from(([10, 0, 0, 2], 700));
        assert_eq!(to_vip(vip, local, peer), Some(TcpConn { client: peer, server: local }));
        assert_eq!(to_vip(vip, SocketAddr::from(([10, 0, 0, 1], 2049)), peer), None);
        // A dual-stack listener reports IPv4-mapped addresses.
        let mapped = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        assert_eq!(to_vip(vip, mapped(local), mapped(peer)), Some(TcpConn { client: peer, server: local }));
    }
}
