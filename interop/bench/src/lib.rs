//! hanfs-bench: bounded NFSv3 workloads against any server (hanfs, nfs-ganesha,
//! knfsd) reachable by address and ports, printing one `metric=...` line per
//! measurement. Owns the one-call-at-a-time client session (`client`, on
//! nfs3_client), a pipelined connection for the throughput mode (`pipe`,
//! nfs3_types' XDR with its own record handling), a minimal NLM v4 client
//! (`nlm`), the workloads (`workloads`), the local measurements of the
//! physical budget (`probe`) and the statistics and output format (`stats`).
//! It speaks only ONC RPC (NFSv3, MOUNT, portmap, NLM); it must not import
//! hanfs crates, so the same binary measures every server the same way.

pub mod client;
pub mod nlm;
pub mod pipe;
pub mod probe;
pub mod stats;
pub mod workloads;

use std::time::{Duration, Instant};

/// Why a workload stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connect/mount failed: {0}")]
    Connect(String),
    #[error("{op} timed out")]
    Timeout { op: &'static str },
    #[error("{op}: RPC error: {detail}")]
    Rpc { op: &'static str, detail: String },
    #[error("{op}: {status}")]
    Nfs { op: &'static str, status: String },
    #[error("{op}: session unusable after an earlier transport error")]
    Broken { op: &'static str },
    #[error("check failed: {0}")]
    Verify(String),
    #[error("no NLM (100021 v4 TCP) registered with the server's portmapper")]
    NoNlm,
}

impl BenchError {
    /// A short token for the `error=` field of a metric line.
    pub fn token(&self) -> String {
        match self {
            BenchError::Connect(_) => "connect".to_string(),
            BenchError::Timeout { op } => format!("{op}_timeout"),
            BenchError::Rpc { op, .. } => format!("{op}_rpc"),
            BenchError::Nfs { op, status } => format!("{op}_{status}"),
            BenchError::Broken { op } => format!("{op}_broken"),
            BenchError::Verify(_) => "verify".to_string(),
            BenchError::NoNlm => "no_NLM_registered".to_string(),
        }
    }
}

/// Bounds of one loop: at most `count` iterations, and none started after
/// `deadline`. A workload that hits the deadline reports what it did with
/// `complete=0`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub count: u32,
    pub deadline: Instant,
}

impl Budget {
    pub fn new(count: u32, time: Duration) -> Budget {
        Budget { count, deadline: Instant::now() + time }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}
