//! Outgoing peer RPCs: openraft's `RaftNetworkFactory` and `RaftNetwork`.
//!
//! One client per target, holding at most one authenticated connection, made
//! lazily and dropped on any error. Connect and I/O failures (and fault
//! injection) are reported as `RPCError::Unreachable`, so openraft backs off;
//! an RPC that outlives openraft's deadline is `RPCError::Timeout`.
//! Snapshots go through openraft's default chunked `full_snapshot`, which
//! calls `install_snapshot` once per `SNAPSHOT_CHUNK_BYTES` chunk.
//! An AppendEntries larger than a frame is cut to a prefix that fits and
//! answered as `PartialSuccess`; openraft sends the rest next.
//! Acknowledged AppendEntries feed the `LeaseClock` used for fencing.

use std::time::{Duration, Instant};

use openraft::error::{NetworkError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::AppendEntriesResponse;

use super::auth::{client_handshake, ClusterSecret, SecureStream};
use super::{ms, Faults, PeerRequest, PeerResponse, PEER_FRAME_BYTES_MAX, PEER_REQUEST_OVERHEAD_BYTES};
use crate::lease::LeaseClock;
use crate::timing::{
    ADMIN_FORWARD_TIMEOUT_MS, CONNECT_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS, PEER_BACKOFF_MS, VIEW_TIMEOUT_MS,
};
use crate::types::{decode, encode, encoded_size, typ, NodeId, PeerNode, TypeConfig};

/// What every outgoing connection of this node shares.
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    pub self_id: NodeId,
    pub cluster: String,
    pub secret: ClusterSecret,
    pub faults: Faults,
    pub lease: LeaseClock,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerClient { net: self.clone(), target, addr: node.addr.clone(), conn: None }
    }
}

/// RPCs to one peer.
pub struct PeerClient {
    net: PeerNetwork,
    target: NodeId,
    addr: String,
    conn: Option<SecureStream>,
}

/// Why a one-off request to a peer (the cluster view, a forwarded admin
/// command) got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerAskError {
    #[error("unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("no answer within {ttl_ms} ms")]
    Timeout { ttl_ms: u64 },
    /// The answer could not be decoded.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The peer answered, but to another kind of request.
    #[error("peer answered another RPC")]
    OtherAnswer,
}

enum CallError {
    Unreachable(std::io::Error),
    Timeout,
    /// The peer answered with a frame we could not make sense of.
    Protocol(String),
}

impl PeerClient {
    async fn connect(&self) -> std::io::Result<SecureStream> {
        let stream = tokio::time::timeout(ms(CONNECT_TIMEOUT_MS), tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let handshake = client_handshake(stream, &self.net.secret, &self.net.cluster, self.net.self_id);
        match tokio::time::timeout(ms(HANDSHAKE_TIMEOUT_MS), handshake).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    tracing::warn!(target_node = self.target, addr = %self.addr, error = %e, "peer authentication failed");
                }
                Err(e)
            }
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")),
        }
    }

    async fn round_trip(&mut self, req: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        conn.send(req).await?;
        let resp = conn.recv().await?;
        self.conn = Some(conn);
        Ok(resp)
    }

    async fn call(&mut self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        if self.net.faults.is_blocked(self.target) {
            self.conn = None;
            return Err(CallError::Unreachable(std::io::Error::other("fault injection: peer blocked")));
        }
        let bytes = encode(&req, PEER_FRAME_BYTES_MAX).map_err(|e| CallError::Protocol(e.to_string()))?;
        let resp = match tokio::time::timeout(ttl, self.round_trip(&bytes)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(CallError::Unreachable(e));
            }
            Err(_) => {
                // The connection is mid-RPC; it cannot be reused.
                self.conn = None;
                return Err(CallError::Timeout);
            }
        };
        if self.net.faults.is_blocked(self.target) {
            self.conn = None;
            return Err(CallError::Unreachable(std::io::Error::other("fault injection: peer blocked")));
        }
        decode(&resp, PEER_FRAME_BYTES_MAX).map_err(|e| {
            self.conn = None;
            CallError::Protocol(e.to_string())
        })
    }

    fn rpc_error<E: std::error::Error>(&self, e: CallError, action: RPCTypes, ttl: Duration) -> typ::RPCError<E> {
        match e {
            CallError::Unreachable(io) => openraft::error::RPCError::Unreachable(Unreachable::new(&io)),
            CallError::Timeout => openraft::error::RPCError::Timeout(Timeout {
                action,
                id: self.net.self_id,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Protocol(msg) => {
                openraft::error::RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
            }
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> typ::RPCError<E> {
        openraft::error::RPCError::Network(NetworkError::new(&std::io::Error::other("peer answered another RPC")))
    }
}

/// Ask node `target` at `addr` for its `ClusterView` (one short-lived
/// connection). `Ok(None)`: it answered but is not the leader.
pub(crate) async fn fetch_view(
    net: &PeerNetwork,
    target: NodeId,
    addr: &str,
) -> Result<Option<crate::view::ClusterView>, PeerAskError> {
    match one_off(net, target, addr, PeerRequest::View, VIEW_TIMEOUT_MS).await? {
        PeerResponse::View(view) => Ok(view),
        _ => Err(PeerAskError::OtherAnswer),
    }
}

/// Forward an admin command line to node `target` at `addr`; its answer,
/// `Ok(None)` if it takes no forwarded commands.
pub(crate) async fn forward_admin(
    net: &PeerNetwork,
    target: NodeId,
    addr: &str,
    line: String,
) -> Result<Option<String>, PeerAskError> {
    match one_off(net, target, addr, PeerRequest::Admin(line), ADMIN_FORWARD_TIMEOUT_MS).await? {
        PeerResponse::Admin(answer) => Ok(answer),
        _ => Err(PeerAskError::OtherAnswer),
    }
}

/// One request on a short-lived connection, bounded by `ttl_ms`.
async fn one_off(
    net: &PeerNetwork,
    target: NodeId,
    addr: &str,
    req: PeerRequest,
    ttl_ms: u64,
) -> Result<PeerResponse, PeerAskError> {
    let mut client = PeerClient { net: net.clone(), target, addr: addr.to_string(), conn: None };
    client.call(req, ms(ttl_ms)).await.map_err(|e| match e {
        CallError::Unreachable(e) => PeerAskError::Unreachable(e),
        CallError::Timeout => PeerAskError::Timeout { ttl_ms },
        CallError::Protocol(e) => PeerAskError::BadAnswer(e),
    })
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, typ::RPCError> {
        let ttl = option.hard_ttl();
        let vote = rpc.vote;
        let (rpc, cut_at) = fit_in_frame(rpc, PEER_FRAME_BYTES_MAX - PEER_REQUEST_OVERHEAD_BYTES);
        let sent_at = Instant::now();
        let resp = self.call(PeerRequest::Append(rpc), ttl).await;
        match resp {
            Ok(PeerResponse::Append(Ok(resp))) => {
                // Success or conflict both mean the peer accepted `vote` as its
                // leader at `sent_at` or later: that renews the lease.
                if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                    self.net.lease.record_ack(self.target, vote, sent_at);
                }
                match (resp, cut_at) {
                    (AppendEntriesResponse::Success, Some(last_sent)) => {
                        Ok(AppendEntriesResponse::PartialSuccess(Some(last_sent)))
                    }
                    (resp, _) => Ok(resp),
                }
            }
            Ok(PeerResponse::Append(Err(e))) => {
                Err(openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<typ::InstallSnapshotResponse, typ::RPCError<typ::InstallSnapshotError>> {
        let ttl = option.hard_ttl();
        match self.call(PeerRequest::Snapshot(rpc), ttl).await {
            Ok(PeerResponse::Snapshot(Ok(resp))) => Ok(resp),
            Ok(PeerResponse::Snapshot(Err(e))) => {
                Err(openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)),
        }
    }

    async fn vote(&mut self, rpc: typ::VoteRequest, option: RPCOption) -> Result<typ::VoteResponse, typ::RPCError> {
        let ttl = option.hard_ttl();
        match self.call(PeerRequest::Vote(rpc), ttl).await {
            Ok(PeerResponse::Vote(Ok(resp))) => Ok(resp),
            Ok(PeerResponse::Vote(Err(e))) => {
                Err(openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote, ttl)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(ms(PEER_BACKOFF_MS)))
    }
}

/// Cut `rpc` to the longest prefix of its entries (at least one) whose encoded
/// size fits in `budget` bytes. Returns the last kept log id if it was cut.
pub(crate) fn fit_in_frame(
    mut rpc: typ::AppendEntriesRequest,
    budget: u64,
) -> (typ::AppendEntriesRequest, Option<typ::LogId>) {
    let mut total = 0u64;
    let mut keep = 0usize;
    for entry in &rpc.entries {
        total = total.saturating_add(encoded_size(entry));
        if total > budget && keep > 0 {
            break;
        }
        keep += 1;
    }
    if keep >= rpc.entries.len() {
        return (rpc, None);
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|e| e.log_id);
    (rpc, last)
}
