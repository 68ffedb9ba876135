//! Outgoing peer RPCs: openraft's `RaftNetworkFactory` and `RaftNetwork`.
//!
//! One client per target, holding at most one encrypted connection (Noise,
//! see `auth`), made lazily and dropped on any error; the handshake also
//! checks that the node answering at the address is the target. Connect and I/O failures (and fault
//! injection) are reported as `RPCError::Unreachable`, so openraft backs off;
//! an RPC that outlives openraft's deadline is `RPCError::Timeout`.
//!
//! The connection is owned by a task of its own (`Connection`), fed through
//! a bounded queue (`PEER_QUEUE_MAX` requests): openraft bounds an
//! AppendEntries by `heartbeat_ms` and drops the call when that passes, but
//! the request is on the wire by then and the follower will answer it (a
//! follower answers after its fsync, which a busy disk can make longer than a
//! heartbeat). The task still reads that late answer, records it in the
//! `LeaseClock` (it is a genuine acknowledgement of what was sent, at the
//! time it was sent) and keeps the connection for the next request, instead
//! of throwing both away and paying a reconnect and handshake under load. A
//! connection with no answer for `PEER_ANSWER_TIMEOUT_MS` is closed.
//! Snapshots go through openraft's default chunked `full_snapshot`, which
//! calls `install_snapshot` once per `SNAPSHOT_CHUNK_BYTES` chunk.
//! An AppendEntries larger than a frame is cut to a prefix that fits and
//! answered as `PartialSuccess`; openraft sends the rest next.
//! Acknowledged AppendEntries feed the `LeaseClock` used for fencing.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use openraft::error::{NetworkError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::AppendEntriesResponse;

use super::auth::{client_handshake, ClusterSecret};
use super::secure::SecureStream;
use super::{ms, Faults, PeerRequest, PeerResponse, PEER_FRAME_BYTES_MAX, PEER_REQUEST_OVERHEAD_BYTES};
use crate::durable::LogDurable;
use crate::lease::LeaseClock;
use crate::timing::{
    ADMIN_FORWARD_TIMEOUT_MS, CONNECT_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS, INSTALL_SNAPSHOT_TIMEOUT_MS, PEER_BACKOFF_MS,
    VIEW_TIMEOUT_MS,
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
    /// How far this node's log is on disk: the commit index sent to a
    /// follower goes no further (`durable::LogDurable::clamp`).
    pub durable: LogDurable,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerClient { net: self.clone(), target, addr: node.addr.clone(), conn: None }
    }
}

/// Requests queued on one peer connection; a caller finding it full waits
/// (within its deadline).
pub const PEER_QUEUE_MAX: usize = 8;
/// A connection whose peer has not answered the oldest request for this long
/// is closed (the next request reconnects). Longer than any RPC deadline
/// openraft sets (heartbeat, vote, snapshot chunk).
pub const PEER_ANSWER_TIMEOUT_MS: u64 = 2 * INSTALL_SNAPSHOT_TIMEOUT_MS;

/// RPCs to one peer.
pub struct PeerClient {
    net: PeerNetwork,
    target: NodeId,
    addr: String,
    conn: Option<mpsc::Sender<Job>>,
}

/// One request for a `Connection` task.
struct Job {
    req: Vec<u8>,
    /// For an AppendEntries: the vote it carries, so the answer renews the lease.
    lease_vote: Option<typ::Vote>,
    /// Bound on the answer: the caller's deadline, at least `PEER_ANSWER_TIMEOUT_MS`.
    answer_within: Duration,
    /// If the caller gave up, the answer goes nowhere; the lease is renewed anyway.
    reply: oneshot::Sender<Result<PeerResponse, CallError>>,
}

/// The task owning one authenticated connection: sends queued requests in
/// order, reads each answer (however late, within `Job::answer_within`),
/// records lease acknowledgements, hands the answer to its caller if still
/// waiting. Ends on the first error or when every sender is gone.
struct Connection {
    net: PeerNetwork,
    target: NodeId,
    stream: SecureStream,
}

impl Connection {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let answer = self.one(&job).await;
            let failed = answer.is_err();
            let _ = job.reply.send(answer);
            if failed {
                return;
            }
        }
    }

    async fn one(&mut self, job: &Job) -> Result<PeerResponse, CallError> {
        let blocked = || CallError::Unreachable(std::io::Error::other("fault injection: peer blocked"));
        if self.net.faults.is_blocked(self.target) {
            return Err(blocked());
        }
        let sent_at = Instant::now();
        let round_trip = async {
            self.stream.send(&job.req).await?;
            self.stream.recv().await
        };
        let resp = match tokio::time::timeout(job.answer_within, round_trip).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    // An answer that does not decrypt: tampered or corrupted on the way.
                    tracing::warn!(target_node = self.target, error = %e, "peer answer refused; connection dropped");
                }
                return Err(CallError::Unreachable(e));
            }
            Err(_) => return Err(CallError::Timeout),
        };
        if self.net.faults.is_blocked(self.target) {
            return Err(blocked());
        }
        let resp: PeerResponse = decode(&resp, PEER_FRAME_BYTES_MAX).map_err(|e| CallError::Protocol(e.to_string()))?;
        if let (Some(vote), PeerResponse::Append(Ok(append))) = (job.lease_vote, &resp) {
            // Success or conflict both mean the peer accepted `vote` as its
            // leader at `sent_at` or later: that renews the lease.
            if !matches!(append, AppendEntriesResponse::HigherVote(_)) {
                self.net.lease.record_ack(self.target, vote, sent_at);
            }
        }
        Ok(resp)
    }
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
        let handshake = client_handshake(stream, &self.net.secret, &self.net.cluster, self.net.self_id, self.target);
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

    /// The queue of the live connection, connecting first if there is none.
    async fn queue(&mut self) -> std::io::Result<mpsc::Sender<Job>> {
        if let Some(tx) = self.conn.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        self.conn = None;
        let stream = self.connect().await?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let conn = Connection { net: self.net.clone(), target: self.target, stream };
        tokio::spawn(conn.run(rx));
        self.conn = Some(tx.clone());
        Ok(tx)
    }

    async fn call(&mut self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        self.call_with(req, None, ttl).await
    }

    /// Send `req` and wait (at most `ttl`, connecting included) for its
    /// answer; `lease_vote` makes its acknowledgement renew the lease even
    /// if it comes after `ttl`.
    async fn call_with(
        &mut self,
        req: PeerRequest,
        lease_vote: Option<typ::Vote>,
        ttl: Duration,
    ) -> Result<PeerResponse, CallError> {
        if self.net.faults.is_blocked(self.target) {
            self.conn = None;
            return Err(CallError::Unreachable(std::io::Error::other("fault injection: peer blocked")));
        }
        let bytes = encode(&req, PEER_FRAME_BYTES_MAX).map_err(|e| CallError::Protocol(e.to_string()))?;
        let exchange = async {
            let queue = self.queue().await.map_err(CallError::Unreachable)?;
            let (reply, answer) = oneshot::channel();
            let answer_within = ttl.max(ms(PEER_ANSWER_TIMEOUT_MS));
            let job = Job { req: bytes, lease_vote, answer_within, reply };
            if queue.send(job).await.is_err() {
                return Err(CallError::Unreachable(std::io::Error::other("peer connection closed")));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(CallError::Unreachable(std::io::Error::other("peer connection closed"))))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            // The request may still be answered: its connection lives on.
            Err(_) => Err(CallError::Timeout),
        }
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
        mut rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, typ::RPCError> {
        let ttl = option.hard_ttl();
        let vote = rpc.vote;
        rpc.leader_commit = self.net.durable.clamp(rpc.leader_commit);
        let (rpc, cut_at) = fit_in_frame(rpc, PEER_FRAME_BYTES_MAX - PEER_REQUEST_OVERHEAD_BYTES);
        // The connection task renews the lease from the answer.
        let resp = self.call_with(PeerRequest::Append(rpc), Some(vote), ttl).await;
        match resp {
            Ok(PeerResponse::Append(Ok(resp))) => match (resp, cut_at) {
                (AppendEntriesResponse::Success, Some(last_sent)) => {
                    Ok(AppendEntriesResponse::PartialSuccess(Some(last_sent)))
                }
                (resp, _) => Ok(resp),
            },
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
