//! How far this node's log is on its own disk (`LogDurable`: the log store
//! and its writer move it, the state machine waits on it, the peer network
//! clamps the commit index it sends to it), and the rules that let a leader
//! send its new entries to its followers while its own fsync runs.
//!
//! openraft 0.9 waits inside its core for a leader's own `LogFlushed` before
//! it runs the commands that replicate the entries, so a commit would cost
//! the leader's fsync and then the follower's, in series. A leader therefore
//! signals `LogFlushed` for its own new entries as soon as they are queued
//! (`early_flush`), and keeps "durable on a majority" true where it can be
//! observed:
//! - nothing is applied (so no reply, no state a call can read) until the
//!   local log is durable up to it: `StateMachineStore::apply` waits for
//!   `wait_for`. openraft counts an entry committed with the leader's early
//!   signal and one follower's (real) acknowledgement; with the leader's own
//!   fsync done as well, it is on two disks of three;
//! - a follower is never told a commit index beyond what is durable here
//!   (`clamp`, on every AppendEntries this node sends), so no follower
//!   applies an entry that is on its disk alone.
//!
//! Entries still only queued when the leader dies were applied nowhere, so
//! losing them loses nothing anyone saw; a follower that has them drops them
//! when the next leader's log differs, as for any uncommitted entry.
//!
//! Only the leader of the current term signals early, only for entries of
//! its own term (a follower acknowledges an entry only once it is on its
//! disk), and only while the writer keeps up: when the transaction in
//! progress has run for `LOG_WRITE_SLOW_MS`, appends wait for their fsync
//! again, so a stuck disk stops openraft's core (and with it heartbeats and
//! the lease) as before, and the other storage node takes over. An apply that
//! waits `APPLY_WAIT_MS` for the local log, or a failed log write, is a
//! storage error: openraft stops and the server exits (`RaftNode::fatal_error`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::types::typ;

/// A log write (fsync included) slower than this is logged (`log_store`),
/// and turns a leader's early flush off until the writer catches up.
pub const LOG_WRITE_SLOW_MS: u64 = 100;

/// Longest an apply waits for the local log to be durable up to its entries.
pub const APPLY_WAIT_MS: u64 = 10_000;

const _: () = assert!(APPLY_WAIT_MS > LOG_WRITE_SLOW_MS);

/// What the writer has made durable, or why it stopped.
#[derive(Clone, Debug)]
struct Mark {
    /// The last log id on disk (in log order: every entry before it is too).
    upto: Option<typ::LogId>,
    /// A write failed: nothing more becomes durable.
    failed: Option<String>,
}

/// The durable end of this node's log, shared by the log store, its writer,
/// the state machine (which waits on it) and the peer network (which clamps
/// the commit index it sends to it). Cloning shares it.
#[derive(Clone, Debug)]
pub struct LogDurable {
    mark: Arc<watch::Sender<Mark>>,
    /// When the writer's transaction in progress started (ns since `epoch`,
    /// plus one), 0 when it is idle.
    busy_since: Arc<AtomicU64>,
    epoch: Instant,
}

impl LogDurable {
    /// Everything up to `upto` is already on disk (the log as opened).
    pub(crate) fn new(upto: Option<typ::LogId>) -> Self {
        let (mark, _) = watch::channel(Mark { upto, failed: None });
        Self { mark: Arc::new(mark), busy_since: Arc::default(), epoch: Instant::now() }
    }

    /// The last log id on disk.
    pub fn upto(&self) -> Option<typ::LogId> {
        self.mark.borrow().upto
    }

    /// `leader_commit` as this node may tell a follower: no further than its
    /// own durable log (module doc).
    pub fn clamp(&self, leader_commit: Option<typ::LogId>) -> Option<typ::LogId> {
        let upto = self.upto();
        match (leader_commit, upto) {
            (Some(c), Some(u)) if c.index > u.index => Some(u),
            (Some(_), None) => None,
            (c, _) => c,
        }
    }

    /// Waits until the log is durable up to `index` (at most `APPLY_WAIT_MS`).
    pub async fn wait_for(&self, index: u64) -> Result<(), String> {
        let mut rx = self.mark.subscribe();
        let reached = |m: &Mark| m.failed.is_some() || m.upto.is_some_and(|u| u.index >= index);
        let waited = tokio::time::timeout(Duration::from_millis(APPLY_WAIT_MS), rx.wait_for(reached)).await;
        match waited {
            Err(_) => Err(format!(
                "the raft log is not on disk up to index {index} after {APPLY_WAIT_MS} ms: the state directory's disk is stuck"
            )),
            Ok(Err(_)) => Err("the raft log writer has stopped".to_owned()),
            Ok(Ok(mark)) => match &mark.failed {
                Some(e) => Err(format!("the raft log could not be written: {e}")),
                None => Ok(()),
            },
        }
    }

    /// May an append be signalled flushed before its fsync (module doc)?
    pub(crate) fn keeps_up(&self) -> bool {
        if self.mark.borrow().failed.is_some() {
            return false;
        }
        let since = self.busy_since.load(Ordering::Acquire);
        since == 0 || self.nanos().saturating_sub(since - 1) < LOG_WRITE_SLOW_MS * 1_000_000
    }

    /// The writer starts a transaction.
    pub(crate) fn busy(&self) {
        self.busy_since.store(self.nanos() + 1, Ordering::Release);
    }

    /// The writer's transaction ended: everything up to `last` (if it wrote
    /// entries) is on disk, or the write failed with `error`.
    pub(crate) fn done(&self, last: Option<typ::LogId>, error: Option<String>) {
        self.busy_since.store(0, Ordering::Release);
        self.mark.send_modify(|m| {
            if let Some(e) = error {
                m.failed.get_or_insert(e);
            } else if let Some(last) = last {
                m.upto = Some(last);
            }
        });
    }

    /// The log was cut after `last` (a truncate): what followed is gone.
    pub(crate) fn truncated(&self, last: Option<typ::LogId>) {
        self.mark.send_modify(|m| {
            if m.upto.map(|u| u.index) > last.map(|l| l.index) {
                m.upto = last;
            }
        });
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }
}
