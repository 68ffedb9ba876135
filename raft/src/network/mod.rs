//! Peer transport between Raft nodes: TCP, length-prefixed frames with a
//! bound, encrypted and authenticated with the Noise protocol keyed by the
//! cluster secret (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, the `snow`
//! crate): file names, client addresses and cached replies in Raft entries
//! never cross the storage network in clear, and a peer without the secret
//! (or of another cluster) is refused at the handshake.
//!
//! `client` implements openraft's `RaftNetworkFactory` / `RaftNetwork`,
//! `server` accepts peers and hands their requests to the local `Raft`,
//! `auth` owns the secret and the handshake, `secure` the encrypted frames
//! after it (chunked into Noise messages, nonce = message counter, so frames
//! cannot be forged, replayed or reordered).
//! `Faults` is the test hook that drops all traffic to or from chosen peers.
//! `PeerSignals` is what the server saw lately (a leader's appends, a
//! candidate refused for being behind), for the witness relay.
//! `LogLimiter` keeps a stranger from flooding the log with refusals.
//! Its timeouts and retry period live in `timing`.

pub mod auth;
pub mod client;
pub mod secure;
pub mod server;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::{typ, NodeId};

/// What a request adds around its entries or chunk (vote, log ids, tags).
pub const PEER_REQUEST_OVERHEAD_BYTES: u64 = 64 * 1024;
/// Upper bound on one frame's plaintext after authentication: one largest
/// log entry, or one snapshot chunk, plus overhead (`secure::SEALED_FRAME_BYTES_MAX`
/// adds the encryption's own). An AppendEntries whose entries do not
/// fit is sent as a prefix that does (openraft's `PartialSuccess`).
pub const PEER_FRAME_BYTES_MAX: u64 = crate::log_store::ENTRY_BYTES_MAX + PEER_REQUEST_OVERHEAD_BYTES;
/// Upper bound on one handshake frame, before the peer is authenticated: an
/// unauthenticated peer can never make us allocate more than this (a Noise
/// handshake message here is under 100 bytes).
pub const HANDSHAKE_FRAME_BYTES_MAX: u64 = 4 * 1024;
/// Concurrent inbound peer connections (a 3-node cluster needs a handful).
pub const PEER_CONNECTIONS_MAX: usize = 32;

const _: () = assert!(HANDSHAKE_FRAME_BYTES_MAX < PEER_FRAME_BYTES_MAX);
const _: () = assert!(PEER_FRAME_BYTES_MAX <= u32::MAX as u64);

/// One request from a Raft peer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    Append(typ::AppendEntriesRequest),
    Vote(typ::VoteRequest),
    Snapshot(typ::InstallSnapshotRequest),
    /// The leader's `ClusterView`, for `status` on another node.
    View,
    /// An admin command line forwarded to the leader (`switchover`).
    Admin(String),
}

/// The answer to a `PeerRequest`, same variant.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    Append(Result<typ::AppendEntriesResponse, typ::RaftError>),
    Vote(Result<typ::VoteResponse, typ::RaftError>),
    Snapshot(Result<typ::InstallSnapshotResponse, typ::RaftError<typ::InstallSnapshotError>>),
    /// `None` if the answering node is not the leader.
    View(Option<crate::view::ClusterView>),
    /// The answer; `None` if this node takes no forwarded commands.
    Admin(Option<String>),
}

/// Fault injection for tests: a node drops all traffic to and from the peers
/// in its blocked set. Outgoing RPCs to them fail as `Unreachable`; their
/// incoming requests are dropped and the connection is closed. With
/// `slow_appends`, the peer server holds every AppendEntries answer that
/// long after Raft gave it (a follower whose log disk is slow: Raft saw the
/// request at once, the leader hears back late and sends nothing new on that
/// connection meanwhile). Cloning shares the settings.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
    slow_appends_ms: Arc<AtomicU64>,
}

impl Faults {
    /// Hold every AppendEntries answer `ms` (0: no more).
    pub fn slow_appends(&self, ms: u64) {
        self.slow_appends_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn append_delay(&self) -> Option<Duration> {
        let ms = self.slow_appends_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn block(&self, peer: NodeId) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).insert(peer);
    }

    pub fn unblock(&self, peer: NodeId) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).remove(&peer);
    }

    /// Unblock every peer and stop slowing answers.
    pub fn heal(&self) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.slow_appends(0);
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked.read().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }
}

/// When this node's peer server last saw these: an AppendEntries from a
/// leader (any leader talking to us is alive), the answer to one, one still
/// being handled, and a vote it refused because the candidate's log was
/// behind ours. Cloning shares the record.
#[derive(Clone, Debug, Default)]
pub struct PeerSignals {
    seen: Arc<Mutex<SignalTimes>>,
}

/// A copy of `PeerSignals` at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalTimes {
    pub last_append: Option<Instant>,
    /// When the last AppendEntries handling ended (answered or abandoned).
    pub last_answer: Option<Instant>,
    /// Since when AppendEntries have been in hand without a break (`None`:
    /// none is).
    pub append_open_since: Option<Instant>,
    /// How many are in hand (one per connection at most).
    pub appends_open: u32,
    pub refused_behind: Option<Instant>,
}

/// One AppendEntries in the peer server's hands; dropping it (answered, or
/// the connection gone) records the end.
pub(crate) struct AppendOpen(PeerSignals);

impl Drop for AppendOpen {
    fn drop(&mut self) {
        let mut seen = self.0.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.appends_open = seen.appends_open.saturating_sub(1);
        if seen.appends_open == 0 {
            seen.append_open_since = None;
        }
        seen.last_answer = Some(Instant::now());
    }
}

impl PeerSignals {
    /// An AppendEntries arrived; it is in hand until the result is dropped.
    pub(crate) fn append_received(&self) -> AppendOpen {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.last_append = Some(now);
        seen.appends_open += 1;
        seen.append_open_since.get_or_insert(now);
        drop(seen);
        AppendOpen(self.clone())
    }

    pub(crate) fn vote_refused_behind(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).refused_behind = Some(Instant::now());
    }

    pub fn times(&self) -> SignalTimes {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A refused or misbehaving peer is logged at most once per this interval
/// (per listener); the refusals in between are counted in the next line.
pub const PEER_REFUSAL_LOG_EVERY_MS: u64 = 10_000;

/// Rate limit for the peer server's warnings about strangers. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogLimiter {
    state: Arc<Mutex<LimiterState>>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(lines suppressed since the last one)` if a line may be logged
    /// now; `None` if not (it is counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.last.is_some_and(|t| now.duration_since(t) < ms(PEER_REFUSAL_LOG_EVERY_MS)) {
            s.suppressed += 1;
            return None;
        }
        s.last = Some(now);
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// Write one length-prefixed frame (u32 big-endian length, then the bytes).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8], max: u64) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| u64::from(*len) <= max)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "peer frame over its bound"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Read one frame, refusing (before allocating) a length above `max`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if u64::from(len) > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes exceeds the bound of {max}"),
        ));
    }
    // Grow with the bytes that actually arrive: a peer announcing a large frame
    // and then stalling costs us nothing.
    let mut payload = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut payload).await?;
    if payload.len() as u64 != u64::from(len) {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer frame truncated"));
    }
    Ok(payload)
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LogLimiter, PEER_REFUSAL_LOG_EVERY_MS};

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_suppressed() {
        let limiter = LogLimiter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limiter.allow_at(at(0)), Some(0), "the first refusal is logged");
        assert_eq!(limiter.allow_at(at(1)), None);
        assert_eq!(limiter.allow_at(at(PEER_REFUSAL_LOG_EVERY_MS - 1)), None);
        assert_eq!(limiter.allow_at(at(PEER_REFUSAL_LOG_EVERY_MS)), Some(2), "the next line counts the two suppressed");
        assert_eq!(limiter.clone().allow_at(at(PEER_REFUSAL_LOG_EVERY_MS + 1)), None, "clones share the limit");
    }
}
