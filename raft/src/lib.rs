//! hanfs-raft: how replicated state is committed.
//!
//! Owns the `Commit` interface the server writes through, its single-node
//! implementation on redb (`LocalCommit`), and (later) the openraft glue: log and
//! state-machine storage, the authenticated peer transport, membership and lease.
//! Imports `hanfs-state`; must never import `hanfs-server` or `hanfs-cli`.

pub mod commit;
pub mod local;

pub use local::LocalCommit;
