//! The one narrow interface through which the server changes replicated state.
//! The single-node implementation (`LocalCommit`) persists to redb; the Raft
//! implementation replaces it without the server noticing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use hanfs_state::{Command, Outcome, State};

#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// This node may not change state (not leader, lease lost, shutting down).
    #[error("not the active node")]
    NotLeader,
    /// The durable write failed.
    #[error("storage: {0}")]
    Storage(String),
    /// `State::apply` refused these commands; nothing of them was applied.
    /// Other callers grouped into the same log entry are unaffected.
    #[error("rejected: {0}")]
    Rejected(hanfs_state::ApplyError),
}

/// One `Outcome` per committed command, in order: what `State::apply`
/// decided on the committed state (a lock granted or blocked, ...).
pub type CommitFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Outcome>, CommitError>> + Send + 'a>>;

pub trait Commit: Send + Sync + 'static {
    /// Durably commit `cmds` and apply them to the state machine. Returns once they
    /// are applied, so a reply sent afterwards never depends on uncommitted state.
    /// Concurrent calls are grouped into one log entry (group commit). The
    /// result holds one outcome per command of `cmds`.
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_>;

    /// `commit`, for commands nobody waits on before answering a client
    /// (a DRC reply record whose call already sent its reply): they may wait
    /// up to `crate::DEFER_US_MAX` µs for the next entry written for another
    /// caller, so a call at one request in flight pays one durable write
    /// (its intent, carrying the previous call's record), not two.
    fn commit_deferred(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        self.commit(cmds)
    }

    /// The applied state, for reads (handle resolution, rmtab, epoch, DRC lookup).
    /// Hold the read lock briefly and never across an `.await`.
    fn state(&self) -> Arc<RwLock<State>>;
}
