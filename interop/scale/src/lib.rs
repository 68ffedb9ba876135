//! hanfs-scale: the tool behind `interop/scale.sh`, hanfs's scale run. Three
//! jobs, one module each: `populate` creates many empty files directly on the
//! disk (multithreaded, after checking free inodes and space), `walk` makes one
//! full recursive READDIRPLUS walk over NFS and saves every returned handle
//! and fileid (`handles` owns that file's format) while `rss` samples a
//! process's memory, and `sample` GETATTRs a random sample of the saved
//! handles and counts OK / STALE / other. `client` is the NFSv3 session.
//! Like interop/bench it talks to the server only through `nfs3_client` and
//! imports no hanfs crate.

pub mod client;
pub mod handles;
pub mod populate;
pub mod rss;
pub mod sample;
pub mod walk;

use std::path::PathBuf;

/// Why a step of the scale run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not enough room in {path}: {detail}")]
    NoRoom { path: PathBuf, detail: String },
    #[error("{path} is not empty: the export tree must be fresh")]
    NotFresh { path: PathBuf },
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
    #[error("handle file {path}: {detail}")]
    BadHandleFile { path: PathBuf, detail: String },
    /// A bound of the run was reached (files, entries, queue, handle size).
    #[error("{0}")]
    Limit(String),
    /// The tool itself failed (runtime, a thread or task).
    #[error("{0}")]
    Internal(String),
}

impl ScaleError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ScaleError {
        ScaleError::Io { path: path.into(), source }
    }
}
