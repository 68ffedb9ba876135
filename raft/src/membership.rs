//! Cluster membership and the openraft configuration: two storage nodes and a
//! witness, all voters. Every openraft `Config` field is set here, once, with
//! the reason for its value; the timing figures among them live in `timing`.
//!
//! The witness: openraft 0.9 lets every voter become leader; there is no
//! "non-candidate voter". We keep the witness a full voter (it stores the log
//! and votes, so one storage node plus the witness is a quorum) and switch off
//! its election timer (`Config::enable_elect = false`, the same flag as
//! `Raft::runtime_config().elect(false)`). It then never starts an election, so
//! it never stands as candidate; it still answers vote and append requests.
//! `initialize` is only ever run on a storage node (openraft starts an
//! election on the initializing node), and leadership transfer does not exist
//! in 0.9. The one exception is deliberate: `relay` lets the witness lead
//! briefly when a storage node's candidacy fails only because the witness
//! holds committed entries it lacks, to hand them over; it never serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use crate::timing::{Timing, TimingError, INSTALL_SNAPSHOT_TIMEOUT_MS};
use crate::types::{typ, NodeId, PeerNode, Role};

/// Snapshot chunk size: large enough to move a full DRC and lock table
/// quickly, small enough that one chunk fits well inside a peer frame.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Entries per AppendEntries (the transport further cuts a request to the
/// prefix that fits in `PEER_FRAME_BYTES_MAX`).
pub const PAYLOAD_ENTRIES_MAX: u64 = 64;
/// A follower further behind than this many entries is caught up by snapshot.
pub const REPLICATION_LAG_ENTRIES_MAX: u64 = 5_000;
/// Build a snapshot every this many applied entries (log purge policy), by
/// default (`RaftNodeOptions::snapshot_every_entries`).
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Fewest entries between two snapshots a node accepts (tests lower the
/// default to force builds under load; `LOG_KEEP_AFTER_SNAPSHOT_ENTRIES` is
/// then capped below it).
pub const SNAPSHOT_EVERY_ENTRIES_MIN: u64 = 100;
/// Entries kept after a snapshot, so a briefly lagging follower catches up from
/// the log rather than by a full snapshot.
pub const LOG_KEEP_AFTER_SNAPSHOT_ENTRIES: u64 = 1_000;
/// Entries deleted per purge call.
pub const PURGE_BATCH_ENTRIES: u64 = 256;

const _: () = assert!(
    crate::log_store::ENTRY_BYTES_MAX + crate::network::PEER_REQUEST_OVERHEAD_BYTES
        <= crate::network::PEER_FRAME_BYTES_MAX,
    "one largest entry must fit in one peer frame"
);
const _: () =
    assert!(SNAPSHOT_CHUNK_BYTES + crate::network::PEER_REQUEST_OVERHEAD_BYTES <= crate::network::PEER_FRAME_BYTES_MAX);
const _: () = assert!(LOG_KEEP_AFTER_SNAPSHOT_ENTRIES < SNAPSHOT_EVERY_ENTRIES);

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid raft config: {0}")]
    Config(Box<openraft::ConfigError>),
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error("snapshot_every_entries {0} is below {SNAPSHOT_EVERY_ENTRIES_MIN}")]
    SnapshotEvery(u64),
    #[error("cluster needs exactly one storage node to initialize from, got a witness")]
    InitOnWitness,
    #[error("this node is already part of an initialized cluster; refusing a second init")]
    AlreadyInitialized,
    #[error("initialize: {0}")]
    Initialize(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// The openraft configuration for a node of `role` in cluster `cluster_name`,
/// with the default timings and snapshot policy.
pub fn raft_config(cluster_name: &str, role: Role) -> Result<Arc<Config>, MembershipError> {
    raft_config_with(cluster_name, role, &Timing::default(), SNAPSHOT_EVERY_ENTRIES)
}

/// The openraft configuration for a node of `role` in cluster `cluster_name`
/// with `timing` (checked again here) and a snapshot every
/// `snapshot_every_entries` applied entries.
/// Every field is set (no `..Default`), so an openraft upgrade that adds one
/// fails to compile here instead of silently taking a default.
#[allow(deprecated)] // `send_snapshot_timeout` has to be named to be set
pub fn raft_config_with(
    cluster_name: &str,
    role: Role,
    timing: &Timing,
    snapshot_every_entries: u64,
) -> Result<Arc<Config>, MembershipError> {
    timing.check()?;
    if snapshot_every_entries < SNAPSHOT_EVERY_ENTRIES_MIN {
        return Err(MembershipError::SnapshotEvery(snapshot_every_entries));
    }
    let config = Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: PAYLOAD_ENTRIES_MAX,
        replication_lag_threshold: REPLICATION_LAG_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every_entries),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        max_in_snapshot_log_to_keep: LOG_KEEP_AFTER_SNAPSHOT_ENTRIES.min(snapshot_every_entries / 2),
        purge_batch_size: PURGE_BATCH_ENTRIES,
        enable_tick: true,
        enable_heartbeat: true,
        // The witness never campaigns (see the module doc).
        enable_elect: role == Role::Storage,
        // Deprecated in 0.9; 0 means "use install_snapshot_timeout" per chunk.
        send_snapshot_timeout: 0,
    };
    Ok(Arc::new(config.validate().map_err(|e| MembershipError::Config(Box::new(e)))?))
}

/// Bootstrap the cluster once, from a storage node. Refuses (with a clear
/// error) if this node already has a log or a vote: a second init, or starting
/// a node that belongs to another cluster, must never overwrite membership.
pub async fn initialize(
    raft: &typ::Raft,
    self_role: Role,
    members: BTreeMap<NodeId, PeerNode>,
) -> Result<(), MembershipError> {
    if self_role == Role::Witness {
        return Err(MembershipError::InitOnWitness);
    }
    let initialized = raft.is_initialized().await.map_err(|e| MembershipError::Fatal(e.to_string()))?;
    if initialized {
        return Err(MembershipError::AlreadyInitialized);
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {
            Err(MembershipError::AlreadyInitialized)
        }
        Err(e) => Err(MembershipError::Initialize(e.to_string())),
    }
}

/// The witness ids in a membership (for status and for refusing to serve).
pub fn witnesses(nodes: &BTreeMap<NodeId, PeerNode>) -> Vec<NodeId> {
    nodes.iter().filter(|(_, n)| n.role == Role::Witness).map(|(id, _)| *id).collect()
}
