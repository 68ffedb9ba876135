//! What the server reads of this node's Raft, in hanfs-raft's own types, so
//! it never touches the Raft library itself:
//!
//! - `RaftStatus`: one copy of the metrics (`RaftNode::status`): id, state,
//!   term, leader, log/applied/snapshot/purged indexes, members; for `status`
//!   and for "does this node lead?" before a switchover;
//! - `RaftWatch`: woken when this node's role, term or leader changes, or Raft
//!   fails (`RaftNode::raft_watch`, on `role::RoleView`, not on every metrics
//!   update); the lifecycle times a promotion from the moment it sees itself
//!   elected;
//! - `ServingCheck`: the reply-time fence (`RaftNode::serving_check`), the
//!   leadership watch says `Leader` and the lease holds now;
//! - `RaftNode::snapshot_now`: `debug snapshot`'s build-then-purge;
//! - `RaftNode::shutdown_raft`: stop Raft while the node is still shared;
//! - `RaftNode::fatal_error`: Raft stopped by itself (a log or vote write
//!   failed, e.g. the state directory's disk is full), for the server to exit
//!   on rather than linger as a member that can neither lead nor follow.
//!
//! The leadership watch itself (`lease::Leadership`) and the switchover
//! (`handover`) have their own modules.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::metrics::WaitError;
use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::cluster::{RaftNode, RaftNodeError};
use crate::lease::{Leadership, LeaseClock};
use crate::role::RoleView;
use crate::types::{NodeId, PeerNode};

/// The Raft state of this node. `Debug` prints the variant name (`status`
/// shows it as `state: Leader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftState {
    /// Replicates entries but neither votes nor campaigns (not yet a member).
    Learner,
    Follower,
    Candidate,
    /// Raft leader. Not the same as may-serve: see `lease::Leadership`.
    Leader,
    /// Raft is stopping.
    Shutdown,
}

impl From<ServerState> for RaftState {
    fn from(s: ServerState) -> Self {
        match s {
            ServerState::Learner => RaftState::Learner,
            ServerState::Follower => RaftState::Follower,
            ServerState::Candidate => RaftState::Candidate,
            ServerState::Leader => RaftState::Leader,
            ServerState::Shutdown => RaftState::Shutdown,
        }
    }
}

/// One copy of this node's Raft metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: NodeId,
    pub state: RaftState,
    pub current_term: u64,
    /// The leader this node knows of (itself included).
    pub current_leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    /// The Raft library reports no commit index; on the leader, which applies
    /// an entry as soon as it is committed, this is the commit index.
    pub last_applied_index: Option<u64>,
    /// Where this node's log starts: a snapshot and a purged prefix.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// The membership (empty before `init`).
    pub members: BTreeMap<NodeId, PeerNode>,
}

impl RaftStatus {
    pub(crate) fn from_metrics(m: &RaftMetrics<NodeId, PeerNode>) -> RaftStatus {
        RaftStatus {
            id: m.id,
            state: m.state.into(),
            current_term: m.current_term,
            current_leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members: m.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    /// Does this node name itself as the leader?
    pub fn leads(&self) -> bool {
        self.current_leader == Some(self.id)
    }
}

/// Raft has stopped; nothing will change any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("raft stopped")]
pub struct RaftStopped;

/// Changes of this node's `RoleView`, each one a wake-up.
pub struct RaftWatch {
    role: watch::Receiver<RoleView>,
}

impl RaftWatch {
    /// Is this node Raft leader now (state `Leader`, naming itself)? That is
    /// election only, before the promotion steps `Leadership` waits for. Marks
    /// the current view as seen.
    pub fn elected(&mut self) -> bool {
        self.elected_term().is_some()
    }

    /// The term this node leads now, if it is Raft leader (see `elected`).
    /// Marks the current view as seen.
    pub fn elected_term(&mut self) -> Option<u64> {
        self.role.borrow_and_update().elected_term()
    }

    /// Wait for the next change of the view.
    pub async fn changed(&mut self) -> Result<(), RaftStopped> {
        self.role.changed().await.map_err(|_| RaftStopped)
    }
}

/// The reply-time check: the leadership watch says `Leader`, and the lease,
/// checked at this instant rather than at the watch's last tick, holds.
/// Cloning shares the watches.
#[derive(Clone)]
pub struct ServingCheck {
    leadership: watch::Receiver<Leadership>,
    lease: LeaseClock,
    metrics: watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
}

impl ServingCheck {
    pub fn holds(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. }) && self.lease.holds(&self.metrics.borrow())
    }
}

/// Why `debug snapshot` did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("nothing applied yet")]
    NothingApplied,
    #[error("snapshot: {0}")]
    Trigger(String),
    #[error("snapshot not built: {0}")]
    NotBuilt(WaitError),
    #[error("purge: {0}")]
    Purge(String),
}

impl RaftNode {
    /// A copy of this node's Raft metrics now.
    pub fn status(&self) -> RaftStatus {
        RaftStatus::from_metrics(&self.raft.metrics().borrow())
    }

    /// Subscribe to changes of this node's Raft metrics.
    pub fn raft_watch(&self) -> RaftWatch {
        RaftWatch { role: self.role_view.clone() }
    }

    /// Completes once Raft has stopped by itself on a fatal error, with that
    /// error: a log, vote or state machine write failed (the state
    /// directory's disk is full or failing) or the core panicked. openraft
    /// does not restart its core, so such a node can neither lead nor follow
    /// until the process starts again. Never completes while Raft runs, nor
    /// after a requested shutdown.
    pub async fn fatal_error(&self) -> String {
        let mut role = self.role_view.clone();
        loop {
            if let Some(error) = role.borrow_and_update().fatal.clone() {
                return error;
            }
            if role.changed().await.is_err() {
                // The core is gone: its last metrics say why, if it failed.
                if let Some(error) = role.borrow().fatal.clone() {
                    return error;
                }
                return std::future::pending().await;
            }
        }
    }

    /// The check a reply makes just before it is sent (see `ServingCheck`).
    pub fn serving_check(&self) -> ServingCheck {
        ServingCheck { leadership: self.leadership(), lease: self.lease.clone(), metrics: self.raft.metrics() }
    }

    /// Build a snapshot of everything applied now, wait for it (at most
    /// `wait_ms`), then purge the log up to it. Returns the snapshot's index.
    pub async fn snapshot_now(&self, wait_ms: u64) -> Result<u64, SnapshotError> {
        let raft = &self.raft;
        let Some(target) = raft.metrics().borrow().last_applied.map(|l| l.index) else {
            return Err(SnapshotError::NothingApplied);
        };
        raft.trigger().snapshot().await.map_err(|e| SnapshotError::Trigger(e.to_string()))?;
        let built = raft
            .wait(Some(Duration::from_millis(wait_ms)))
            .metrics(|m| m.snapshot.is_some_and(|l| l.index >= target), "debug snapshot built")
            .await;
        let index = match built {
            Ok(m) => m.snapshot.map_or(target, |l| l.index),
            Err(e) => return Err(SnapshotError::NotBuilt(e)),
        };
        raft.trigger().purge_log(index).await.map_err(|e| SnapshotError::Purge(e.to_string()))?;
        Ok(index)
    }

    /// Stop Raft only, while others still hold this node (`shutdown` needs it
    /// owned); the rest stops when the last holder drops it.
    pub async fn shutdown_raft(&self) -> Result<(), RaftNodeError> {
        self.raft.shutdown().await.map_err(|e| RaftNodeError::Raft(e.to_string()))
    }
}
