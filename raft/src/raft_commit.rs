//! `RaftCommit`: the `Commit` interface over Raft, with group commit.
//!
//! Callers queue their commands on a bounded channel. One task
//! (`crate::batch`) takes whatever is queued (bounded in commands and bytes),
//! dry-runs each caller's group on the applied state (`State::trial`, so one
//! caller's rejected commands never fail the others), and proposes the
//! accepted groups as ONE log entry (`Command::Batch` of `Batch`es).
//! `client_write` returns once the entry is committed by a quorum and applied
//! here, so a reply sent afterwards never depends on uncommitted state. Entries
//! go one at a time: the trial always runs on exactly the state the next entry
//! applies to.
//!
//! Only a node whose leadership watch says `Leader` (promoted, lease held)
//! accepts commits; everything else gets `CommitError::NotLeader`.
//!
//! The group-commit task runs on the server's runtime, not on Raft's own
//! (`cluster`): its trial takes the state's write lock, which NFS readers and
//! a snapshot's copy hold, and that wait must never hold a thread that
//! heartbeats need. It reaches Raft through openraft's request channel, one
//! proposal at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hanfs_state::{Command, Outcome, State, COMMAND_BYTES_MAX};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::watch;

use crate::batch::{self, storage, Batcher, Durable, REQUEST_OVERHEAD_BYTES};
use crate::commit::{Commit, CommitError, CommitFuture};
use crate::lease::Leadership;
use crate::sm_store::StateMachineStore;
use crate::timing::RAFT_WRITE_TIMEOUT_MS;
use crate::types::{typ, Applied};

/// Requests waiting for the group-commit task; senders wait when it is full.
pub const RAFT_COMMIT_QUEUE_MAX: usize = batch::COMMIT_QUEUE_MAX;
/// Most commands folded into one log entry (a single larger caller goes alone).
pub const RAFT_BATCH_COMMANDS_MAX: usize = batch::BATCH_COMMANDS_MAX;
/// Most encoded command bytes in one entry: what the state codec accepts, less
/// the outer `Batch`'s tag and length prefix. Fits `log_store::ENTRY_BYTES_MAX`.
pub const RAFT_ENTRY_COMMAND_BYTES_MAX: u64 = COMMAND_BYTES_MAX - 16;

const _: () = assert!(RAFT_ENTRY_COMMAND_BYTES_MAX + 16 <= crate::log_store::ENTRY_BYTES_MAX);
const _: () = assert!(RAFT_ENTRY_COMMAND_BYTES_MAX > REQUEST_OVERHEAD_BYTES);

/// Group commit through Raft. See the module doc.
pub struct RaftCommit {
    state: Arc<RwLock<State>>,
    leadership: watch::Receiver<Leadership>,
    /// The group-commit queue and task (`crate::batch`).
    batcher: Batcher,
}

impl RaftCommit {
    /// Start the group-commit task for `raft`, whose state machine is `sm`,
    /// on `runtime` (the server's).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        raft: typ::Raft,
        sm: &StateMachineStore,
        leadership: watch::Receiver<Leadership>,
    ) -> Arc<Self> {
        let durable = Proposer { raft, leadership: leadership.clone() };
        let batcher = Batcher::start_on(runtime, durable, sm.state(), RAFT_ENTRY_COMMAND_BYTES_MAX);
        Arc::new(RaftCommit { state: sm.state(), leadership, batcher })
    }

    /// Log entries proposed and committed since `start`.
    pub fn entries_written(&self) -> u64 {
        self.batcher.entries_written()
    }

    /// Commit latency, batch sizes and failures since `start` (for `/metrics`).
    pub fn commit_stats(&self) -> Arc<crate::stats::CommitStats> {
        self.batcher.stats()
    }

    /// Stop taking commits, let queued ones finish, wait for the task.
    pub async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }

    async fn submit(&self, cmds: Vec<Command>, deferred: bool) -> Result<Vec<Outcome>, CommitError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if !self.serving() {
            return Err(CommitError::NotLeader);
        }
        if deferred {
            self.batcher.submit_deferred(cmds).await
        } else {
            self.batcher.submit(cmds).await
        }
    }

    fn serving(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. })
    }
}

impl Commit for RaftCommit {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(self.submit(cmds, false))
    }

    fn commit_deferred(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(self.submit(cmds, true))
    }

    fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }
}

/// How the group-commit task makes an entry durable here: a Raft proposal,
/// made only while this node is the serving leader.
struct Proposer {
    raft: typ::Raft,
    leadership: watch::Receiver<Leadership>,
}

impl Durable for Proposer {
    fn refuse(&self) -> Option<CommitError> {
        if matches!(*self.leadership.borrow(), Leadership::Leader { .. }) {
            None
        } else {
            Some(CommitError::NotLeader)
        }
    }

    async fn write(&mut self, entry: Command, entries_written: &AtomicU64) -> Result<Outcome, CommitError> {
        let write = self.raft.client_write(entry);
        let resp = match tokio::time::timeout(Duration::from_millis(RAFT_WRITE_TIMEOUT_MS), write).await {
            Ok(resp) => resp,
            Err(_) => {
                tracing::warn!("raft write not committed in time; answering NotLeader");
                return Err(CommitError::NotLeader);
            }
        };
        match resp {
            Ok(resp) => {
                entries_written.fetch_add(1, Ordering::Relaxed);
                match resp.data {
                    Applied::Ok(outcome) => Ok(outcome),
                    // The trial ran on this very state, so this is a bug; the
                    // entry is still applied identically everywhere.
                    Applied::Rejected { reason } => {
                        tracing::error!(%reason, index = resp.log_id.index, "entry passed trial but failed apply");
                        Err(storage(format!("entry passed trial but failed apply: {reason}")))
                    }
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(CommitError::NotLeader),
            Err(e) => Err(storage(e)),
        }
    }

    async fn after_batch(&mut self) {}
}
