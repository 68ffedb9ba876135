//! Incoming peer connections: the Noise handshake (`auth`), then serve Raft
//! RPCs from the peer on the local `Raft` one request at a time (a peer's
//! replication stream is sequential anyway). A peer that fails
//! authentication (another secret or cluster, not a hanfs peer, a handshake
//! that times out) and a frame that does not decrypt afterwards (tampered on
//! the way) are logged as warnings, at most one line per
//! `PEER_REFUSAL_LOG_EVERY_MS` with a count of the ones in between, and the
//! connection dropped; a peer that merely closes mid-handshake or between
//! requests is logged at debug.
//! For `Timing::restart_guard_ms` after this node's Raft started, a vote
//! request is not passed to Raft: the connection closes unanswered (see
//! `lease` for why a restarted node must not vote at once).
//! Stopping the server (aborting the task `spawn` returns) closes the listener
//! and every connection at once: connection tasks live in the accept loop's
//! `JoinSet`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::auth::{server_handshake, ClusterSecret};
use super::secure::SecureStream;
use super::{
    ms, Faults, LogLimiter, PeerRequest, PeerResponse, PeerSignals, PEER_CONNECTIONS_MAX, PEER_FRAME_BYTES_MAX,
};
use crate::timing::{HANDSHAKE_TIMEOUT_MS, PEER_BACKOFF_MS, PEER_IDLE_TIMEOUT_MS};
use crate::types::{decode, encode, typ, NodeId};

/// What the peer server needs.
#[derive(Clone)]
pub struct PeerServer {
    pub raft: typ::Raft,
    pub cluster: String,
    pub secret: ClusterSecret,
    pub faults: Faults,
    pub signals: PeerSignals,
    pub lease: crate::lease::LeaseClock,
    pub hooks: crate::view::ServerHooks,
    /// Until when this node grants no vote (`Timing::restart_guard_ms` after
    /// its Raft started): see `lease` for why.
    pub votes_from: std::time::Instant,
}

impl PeerServer {
    /// Serve peers on `listener` until the returned task is aborted.
    pub fn spawn(self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.accept_loop(listener))
    }

    async fn accept_loop(self, listener: TcpListener) {
        let permits = Arc::new(Semaphore::new(PEER_CONNECTIONS_MAX));
        let warnings = LogLimiter::default();
        let mut conns = JoinSet::new();
        loop {
            // Reap finished connection tasks so the set stays bounded.
            while conns.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(ms(PEER_BACKOFF_MS)).await;
                    continue;
                }
            };
            let server = self.clone();
            let warnings = warnings.clone();
            conns.spawn(async move {
                server.connection(stream, addr, warnings).await;
                drop(permit);
            });
        }
    }

    async fn connection(self, stream: tokio::net::TcpStream, addr: std::net::SocketAddr, warnings: LogLimiter) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay");
        }
        let own_id = self.raft.metrics().borrow().id;
        let handshake = server_handshake(stream, &self.secret, &self.cluster, own_id);
        let (peer, conn) = match tokio::time::timeout(ms(HANDSHAKE_TIMEOUT_MS), handshake).await {
            Ok(Ok(accepted)) => accepted,
            // A refusal (bad magic, another secret or cluster) or a frame
            // that is not the protocol's is a stranger worth a warning.
            Ok(Err(e)) if handshake_refused(&e) => {
                if let Some(suppressed) = warnings.allow() {
                    tracing::warn!(%addr, error = %e, suppressed, "peer refused: authentication failed");
                }
                return;
            }
            // The peer went away mid-handshake (its RPC timed out, it
            // stopped): nothing was refused.
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "peer closed the connection during the handshake");
                return;
            }
            Err(_) => {
                if let Some(suppressed) = warnings.allow() {
                    tracing::warn!(%addr, suppressed, "peer refused: handshake timed out");
                }
                return;
            }
        };
        tracing::debug!(%addr, peer, "peer authenticated");
        match self.serve(peer, conn).await {
            // A frame that does not decrypt or decode: never passed to Raft.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                if let Some(suppressed) = warnings.allow() {
                    tracing::warn!(%addr, peer, error = %e, suppressed, "peer frame refused; connection dropped");
                }
            }
            Err(e) => tracing::debug!(%addr, peer, error = %e, "peer connection closed"),
            Ok(()) => {}
        }
    }

    async fn serve(&self, peer: NodeId, mut conn: SecureStream) -> std::io::Result<()> {
        loop {
            let frame = tokio::time::timeout(ms(PEER_IDLE_TIMEOUT_MS), conn.recv())
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer idle"))??;
            if self.faults.is_blocked(peer) {
                return Err(std::io::Error::other("fault injection: dropping traffic from peer"));
            }
            let req: PeerRequest = decode(&frame, PEER_FRAME_BYTES_MAX)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let Some(resp) = self.dispatch(req).await else {
                tracing::debug!(peer, "vote request refused: this node restarted less than restart_guard_ms ago");
                return Ok(());
            };
            if self.faults.is_blocked(peer) {
                return Err(std::io::Error::other("fault injection: dropping traffic to peer"));
            }
            let bytes = encode(&resp, PEER_FRAME_BYTES_MAX)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            conn.send(&bytes).await?;
        }
    }

    /// The answer to `req`; `None`: close the connection without one.
    async fn dispatch(&self, req: PeerRequest) -> Option<PeerResponse> {
        let resp = match req {
            PeerRequest::Append(rpc) => {
                // In hand (the election gate's signal) until answered.
                let _open = self.signals.append_received();
                let resp = self.raft.append_entries(rpc).await;
                if let Some(delay) = self.faults.append_delay() {
                    tokio::time::sleep(delay).await;
                }
                PeerResponse::Append(resp)
            }
            PeerRequest::Vote(_) if std::time::Instant::now() < self.votes_from => {
                // Just restarted: acknowledgements given before the restart
                // may still hold an old leader's lease. No answer; the
                // candidate counts no vote and tries again later.
                return None;
            }
            PeerRequest::Vote(rpc) => {
                let candidate_last = rpc.last_log_id;
                let resp = self.raft.vote(rpc).await;
                if let Ok(r) = &resp {
                    if !r.vote_granted && candidate_last < r.last_log_id {
                        self.signals.vote_refused_behind();
                    }
                }
                PeerResponse::Vote(resp)
            }
            PeerRequest::Snapshot(rpc) => PeerResponse::Snapshot(self.raft.install_snapshot(rpc).await),
            PeerRequest::View => {
                let m = self.raft.metrics().borrow().clone();
                PeerResponse::View(self.hooks.local(&m, self.lease.holds(&m)))
            }
            PeerRequest::Admin(line) if line.len() > crate::view::ADMIN_LINE_BYTES_MAX => {
                PeerResponse::Admin(Some("error: forwarded command too long\n".into()))
            }
            PeerRequest::Admin(line) => PeerResponse::Admin(self.hooks.admin(line).await),
        };
        Some(resp)
    }
}

/// Did the handshake fail because the peer was refused (rather than because
/// the connection closed under it)?
fn handshake_refused(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData)
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::handshake_refused;

    #[test]
    fn a_closed_connection_is_not_an_authentication_failure() {
        assert!(handshake_refused(&Error::new(ErrorKind::PermissionDenied, "wrong proof")));
        assert!(handshake_refused(&Error::new(ErrorKind::InvalidData, "frame too large")));
        for kind in [ErrorKind::UnexpectedEof, ErrorKind::BrokenPipe, ErrorKind::ConnectionReset] {
            assert!(!handshake_refused(&Error::new(kind, "closed")), "{kind:?}");
        }
    }
}
