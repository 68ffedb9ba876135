//! hanfs-raft: how replicated state is committed.
//!
//! Owns the `Commit` interface the server writes through, its single-node
//! implementation on redb (`LocalCommit`), and the openraft glue: the type
//! configuration (`types`), the log's storage (`log_store`: its entries in
//! an append-only file, vote and log ids on redb) and the state machine's on
//! redb (`sm_store`) and how far the log is on disk, which lets a leader replicate
//! during its own fsync (`durable`), the authenticated peer transport
//! (`network`), membership and timing (`membership`), when a storage node may
//! campaign (`elect_gate`: not while a live leader's append is in hand), the leader lease and leadership watch used for
//! fencing (`lease`), and `RaftCommit`, the `Commit` implementation over Raft
//! with group commit (`raft_commit`), the group-commit batcher both commit
//! paths share (`batch`), and the witness relay (`relay`: the witness leads only
//! to hand a lagging storage node the log), and the leader's cluster view that
//! `status` shows on every node (`view`); `cluster::RaftNode` assembles them.
//! `stats` holds read-only counters of the commit path (latency, batch
//! sizes) and each follower's replication lag, for the server's `/metrics`.
//! The server drives and reads Raft only through `RaftNode`: `status` (a copy
//! of the metrics in our own types, a watch of this node's role, term,
//! leader and fatal error (`role`: changed only when one of them changes),
//! the reply-time
//! `ServingCheck`, `debug snapshot`), `handover` (switchover and stepping
//! aside) and `lease::Leadership` (may this node serve); it never names the
//! Raft library's types.
//! Every timing figure (heartbeat, election timeout, lease, peer timeouts,
//! relay and switchover bounds) lives in `timing`.
//! `fuzzing` (hidden) holds the entry points of the peer-frame fuzz target.
//! Imports `hanfs-state`; must never import `hanfs-server` or `hanfs-cli`.

mod batch;
pub mod cluster;
pub mod commit;
pub mod durable;
pub mod elect_gate;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod lease;
pub mod local;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod raft_commit;
pub mod relay;
pub mod role;
pub mod sm_store;
pub mod stats;
pub mod status;
pub mod timing;
pub mod types;
pub mod view;

pub use batch::DEFER_US_MAX;
pub use local::LocalCommit;

#[cfg(test)]
mod tests;
