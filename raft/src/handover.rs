//! Handing leadership to another storage node. The Raft library (openraft
//! 0.9) has no leadership transfer, so the leader steps aside instead:
//!
//! 1. `RaftNode::switchover_target`: this node leads, and the target is the
//!    one other storage node (the one named, checked);
//! 2. `RaftNode::wait_caught_up`: the target has stored this leader's whole
//!    log (waiting at most `SWITCHOVER_CATCHUP_MS`), so it can win an election;
//! 3. `RaftNode::step_aside`: switch this node's heartbeats and elections off:
//!    the followers' leader lease runs out, the witness never campaigns, so
//!    the target is the only candidate; it wins (its log is complete). Once
//!    another leader is seen (bounded by the caller), or on timeout, switch
//!    them back on (elections only on a storage node).
//!
//! The server stops serving before step 3 (it stands down: listeners closed,
//! fence shut) and resumes after it. Every wait polls every
//! `SWITCHOVER_POLL_MS` (`poll_until`). All figures live in `timing`.
//!
//! The witness relay's hand-over (`relay`) is a separate path with its own
//! checks and bounds.

use std::time::{Duration, Instant};

use crate::cluster::RaftNode;
use crate::timing::{SWITCHOVER_CATCHUP_MS, SWITCHOVER_POLL_MS};
use crate::types::{NodeId, Role};

/// Why a switchover is refused before anything changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverError {
    #[error("node {me} is not the leader (leader: {}); run switchover on the leader", none_or(.leader))]
    NotLeader { me: NodeId, leader: Option<NodeId> },
    #[error("node {target} is not another storage node (candidates: {candidates:?})")]
    NotStorage { target: NodeId, candidates: Vec<NodeId> },
    #[error("no other storage node to switch over to")]
    NoCandidate,
    #[error("several candidates {0:?}; name one with --to")]
    SeveralCandidates(Vec<NodeId>),
    #[error("switchover needs exactly one other storage node, found {0:?}")]
    NotExactlyOne(Vec<NodeId>),
    #[error("node {target} has not caught up within {waited_ms} ms; not switching")]
    NotCaughtUp { target: NodeId, waited_ms: u64 },
}

fn none_or(v: &Option<NodeId>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// Poll `cond` every `SWITCHOVER_POLL_MS` until it holds (true) or `bound_ms`
/// has passed (false). `cond` is checked first, and once more at the bound.
pub async fn poll_until(bound_ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(bound_ms);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(SWITCHOVER_POLL_MS)).await;
    }
}

impl RaftNode {
    /// The node a switchover from this one goes to: this node must lead,
    /// `to` (if given) must be another storage node, and there must be
    /// exactly one other storage node.
    pub fn switchover_target(&self, to: Option<NodeId>) -> Result<NodeId, SwitchoverError> {
        let me = self.id;
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(me) {
            return Err(SwitchoverError::NotLeader { me, leader: m.current_leader });
        }
        let storage: Vec<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, n)| **id != me && n.role == Role::Storage)
            .map(|(id, _)| *id)
            .collect();
        let target = match (to, storage.as_slice()) {
            (Some(t), _) if storage.contains(&t) => t,
            (Some(t), _) => return Err(SwitchoverError::NotStorage { target: t, candidates: storage }),
            (None, [t]) => *t,
            (None, []) => return Err(SwitchoverError::NoCandidate),
            (None, _) => return Err(SwitchoverError::SeveralCandidates(storage)),
        };
        if storage.len() > 1 {
            return Err(SwitchoverError::NotExactlyOne(storage));
        }
        Ok(target)
    }

    /// Wait (at most `SWITCHOVER_CATCHUP_MS`) until `target` has stored this
    /// leader's whole log, as this leader's replication reports it.
    pub async fn wait_caught_up(&self, target: NodeId) -> Result<(), SwitchoverError> {
        let metrics = self.raft.metrics();
        let caught_up = poll_until(SWITCHOVER_CATCHUP_MS, || {
            let m = metrics.borrow();
            let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten()).map(|l| l.index);
            matched.is_some() && matched == m.last_log_index
        })
        .await;
        if caught_up {
            Ok(())
        } else {
            Err(SwitchoverError::NotCaughtUp { target, waited_ms: SWITCHOVER_CATCHUP_MS })
        }
    }

    /// Switch heartbeats and elections off so another storage node gets
    /// elected, wait up to `wait_ms` for a leader other than this node
    /// (`target`, if given), then switch them back on. Returns the new
    /// leader, if one was seen.
    pub async fn step_aside(&self, target: Option<NodeId>, wait_ms: u64) -> Option<NodeId> {
        let me = self.id;
        let rc = self.raft.runtime_config();
        rc.heartbeat(false);
        self.gate.set_aside(true);
        let metrics = self.raft.metrics();
        let seen = poll_until(wait_ms, || {
            let leader = metrics.borrow().current_leader;
            leader.is_some() && leader != Some(me) && (target.is_none() || leader == target)
        })
        .await;
        let leader = metrics.borrow().current_leader;
        rc.heartbeat(true);
        self.gate.set_aside(false);
        if seen {
            leader
        } else {
            None
        }
    }
}
