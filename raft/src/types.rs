//! openraft type configuration for hanfs: the log carries `hanfs_state::Command`,
//! nodes are `u64` ids with a `PeerNode` (address + role), and snapshots are
//! in-memory byte buffers produced by `State::to_snapshot()`.
//!
//! Also the one place that encodes openraft values to bytes (bincode 1.3 with
//! the same default options as `hanfs_state`'s codec, so a command has the same
//! size in both; bounded on encode and decode), so the encoding can be swapped
//! in one module.

use std::fmt;
use std::io::Cursor;

use bincode::Options;
use hanfs_state::Outcome;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A Raft node's id.
pub type NodeId = u64;

/// What applying one log entry produced. `State::apply` is deterministic, so a
/// rejected command is rejected identically on every node; it is an answer for
/// the proposer, not a storage failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Applied; what `State::apply` decided (`Outcome::Done` for blank and
    /// membership entries).
    Ok(Outcome),
    Rejected {
        reason: String,
    },
}

/// The role a node plays in the cluster. Stored in the replicated membership,
/// so every node knows which member is the witness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Holds the shared disk when active; may become leader and serve NFS.
    #[default]
    Storage,
    /// Votes and stores the log, never stands for election, never serves.
    Witness,
}

/// A member's peer-transport address and role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the node's peer (Raft) listener.
    pub addr: String,
    pub role: Role,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", self.addr, self.role)
    }
}

openraft::declare_raft_types!(
    /// hanfs' openraft type configuration.
    pub TypeConfig:
        D = hanfs_state::Command,
        R = Applied,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Error and value aliases, as in the openraft examples.
pub mod typ {
    use super::{NodeId, PeerNode, TypeConfig};

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> = openraft::error::RPCError<NodeId, PeerNode, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, PeerNode>;
    pub type InitializeError = openraft::error::InitializeError<NodeId, PeerNode>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
}

/// Encoding failures (local storage or peer frames).
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] bincode::Error);

fn options(limit_bytes: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit_bytes)
}

/// Encode `value`; fails if the encoding would exceed `limit_bytes`.
pub fn encode<T: Serialize>(value: &T, limit_bytes: u64) -> Result<Vec<u8>, CodecError> {
    Ok(options(limit_bytes).serialize(value)?)
}

/// Decode `bytes`; never allocates more than `limit_bytes` in total, so a
/// hostile length prefix inside the payload cannot exhaust memory.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit_bytes: u64) -> Result<T, CodecError> {
    Ok(options(limit_bytes).deserialize(bytes)?)
}

/// Encoded size of `value` (no limit), saturating so a bound check refuses it.
pub fn encoded_size<T: Serialize>(value: &T) -> u64 {
    bincode::DefaultOptions::new().serialized_size(value).unwrap_or(u64::MAX)
}
