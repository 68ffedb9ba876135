//! hanfs-server: the NFSv3 service of one active node.
//!
//! Owns the ONC RPC layer (`rpc`: transport only, generic over each program's
//! context, with the outbound client), the RPC programs (`nfs3`, `mount`,
//! `portmap`, `nlm`, `nsm`, each a procedure table with its own context), the
//! passthrough filesystem with handle resolution and credential switching
//! (`vfs`), the export table (`exports`; `hostnames` looks clients' names up for its
//! host-name, wildcard and netgroup rules), what is served right now and its
//! live replacement when the replicated export table changes (`live`), the
//! `exports add|update|remove|reload` admin commands (`exports_admin`), the
//! floating address (`vip`), the
//! admin socket (`admin`; `locks_view` formats its `locks` answer), the
//! counters and their `/metrics` and `stats` views (`metrics`), and the
//! node lifecycle (`node`): a single node, or a cluster member that serves
//! only while it is the promoted Raft leader, with systemd's readiness and
//! watchdog notifications (`notify`). `fuzzing` (hidden) holds the entry
//! points of the fuzz targets in `tests/fuzz`.
//! Replicated state is read from and changed only through `hanfs_raft::commit::Commit`.
//! Must not import `hanfs-cli` or any clap/TOML types.

pub mod admin;
pub mod clock;
pub mod config;
pub mod exports;
pub mod exports_admin;
#[doc(hidden)]
pub mod fuzzing;
pub mod hostnames;
pub mod live;
pub mod locks_view;
pub mod metrics;
pub mod mount;
pub mod nfs3;
pub mod nlm;
pub mod node;
pub mod notify;
pub mod nsm;
pub mod portmap;
pub mod rpc;
pub mod vfs;
pub mod vip;
