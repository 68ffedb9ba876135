//! The leader lease used for fencing (DESIGN.md invariant 7). Its figures
//! (`LEASE_MS`, `LEASE_DRIFT_MS`, `PROMOTE_WAIT_MS`, ...) live in `timing`,
//! next to the Raft timeouts they are checked against.
//!
//! The leader may serve only while a quorum has acknowledged it recently: the
//! lease runs until `t + LEASE_MS`, where `t` is the *send* time of the newest
//! AppendEntries (heartbeats included) that a quorum of voters, counting the
//! leader itself, acknowledged in the leader's current term. The transport
//! records those acknowledgements (`LeaseClock::record_ack`); measuring from
//! the send time keeps the lease conservative however slow the reply was.
//!
//! Why this is safe: a voter that acknowledged the leader at `r >= t` refuses
//! every other candidate until `r + ELECTION_TIMEOUT_MAX_MS` (openraft 0.9's
//! follower-side leader lease), and any new leader needs one such voter, so no
//! leader is elected before `t + ELECTION_TIMEOUT_MAX_MS > t + LEASE_MS`.
//! That argument leans on openraft's in-memory lease, which a restarted voter
//! forgets; so a new leader additionally waits `PROMOTE_WAIT_MS` after winning
//! before it serves, which alone covers the old leader's whole lease.
//!
//! `spawn_leadership_watch` turns Raft metrics plus the lease into the one
//! signal the server's lifecycle needs: `Leadership::Leader` once promotion
//! steps 1-3 are done (elected, everything committed applied, old lease waited
//! out) and for as long as the lease holds; `Follower` otherwise. The witness
//! is always `Follower`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::timing::{LEASE_CHECK_MS, LEASE_MS, PROMOTE_APPLY_TIMEOUT_MS, PROMOTE_WAIT_MS};
use crate::types::{typ, NodeId, PeerNode, Role};

/// Per-peer newest acknowledged send time, by the leader's vote (term).
#[derive(Clone, Debug, Default)]
pub struct LeaseClock {
    acks: Arc<Mutex<BTreeMap<NodeId, (typ::Vote, Instant)>>>,
}

impl LeaseClock {
    /// `peer` accepted `vote` as leader for a request sent at `sent_at`.
    pub(crate) fn record_ack(&self, peer: NodeId, vote: typ::Vote, sent_at: Instant) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let newer = match acks.get(&peer) {
            None => true,
            Some((old_vote, old_sent)) => vote > *old_vote || (vote == *old_vote && sent_at > *old_sent),
        };
        if newer {
            acks.insert(peer, (vote, sent_at));
        }
    }

    /// Until when the leader holding `vote` may serve, given the voter set.
    /// `None` if no quorum has acknowledged it in this term.
    pub fn valid_until(&self, self_id: NodeId, vote: &typ::Vote, voters: &BTreeSet<NodeId>) -> Option<Instant> {
        if !voters.contains(&self_id) {
            return None;
        }
        let lease = Duration::from_millis(LEASE_MS);
        // Acks needed from others: a majority of voters, minus the leader itself.
        let needed = voters.len() / 2;
        if needed == 0 {
            // A single-voter cluster: nobody else can be elected.
            return Some(Instant::now() + lease);
        }
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent: Vec<Instant> = voters
            .iter()
            .filter(|id| **id != self_id)
            .filter_map(|id| acks.get(id))
            .filter(|(v, _)| v == vote)
            .map(|(_, t)| *t)
            .collect();
        sent.sort_unstable_by(|a, b| b.cmp(a));
        sent.get(needed - 1).map(|t| *t + lease)
    }

    /// Does this node currently hold the lease: it is leader with a committed
    /// vote, and a quorum acknowledged it less than `LEASE_MS` ago?
    pub fn holds(&self, metrics: &RaftMetrics<NodeId, PeerNode>) -> bool {
        if metrics.state != ServerState::Leader || !metrics.vote.is_committed() {
            return false;
        }
        if metrics.current_leader != Some(metrics.id) {
            return false;
        }
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        match self.valid_until(metrics.id, &metrics.vote, &voters) {
            Some(until) => Instant::now() < until,
            None => false,
        }
    }
}

/// What this node may do, for the server's promote/demote lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Not leader, still promoting, or leader without a lease: must not serve.
    Follower,
    /// Leader of `term`, promoted, holding the lease: may serve. It can go back
    /// to `Follower` and return in the same term if the lease lapses briefly
    /// (safe: a quorum acknowledged this term again, so nobody else leads).
    Leader { term: u64 },
}

fn is_leading(role: Role, m: &RaftMetrics<NodeId, PeerNode>) -> bool {
    role == Role::Storage && m.state == ServerState::Leader && m.current_leader == Some(m.id) && m.vote.is_committed()
}

/// Watch Raft and the lease; publish `Leadership`. The task ends when Raft
/// shuts down (its metrics channel closes).
pub fn spawn_leadership_watch(
    raft: typ::Raft,
    role: Role,
    lease: LeaseClock,
) -> (watch::Receiver<Leadership>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership::Follower);
    let task = tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The vote (term) for which promotion steps 1-3 completed.
        let mut promoted: Option<typ::Vote> = None;
        loop {
            let m = metrics.borrow().clone();
            let next = if !is_leading(role, &m) {
                promoted = None;
                Leadership::Follower
            } else if promoted != Some(m.vote) {
                tx.send_replace(Leadership::Follower);
                if promote(&raft, &mut metrics, m.vote).await {
                    promoted = Some(m.vote);
                }
                continue;
            } else if lease.holds(&m) {
                Leadership::Leader { term: m.vote.leader_id().term }
            } else {
                Leadership::Follower
            };
            tx.send_if_modified(|cur| std::mem::replace(cur, next) != next);
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(Duration::from_millis(LEASE_CHECK_MS)) => {}
            }
        }
        tx.send_replace(Leadership::Follower);
    });
    (rx, task)
}

/// Promotion steps 1-3 for `vote`: we are leader (checked by the caller);
/// apply everything committed (openraft's read barrier commits our term's
/// first entry and waits until it is applied); wait out the old leader's
/// lease bound, counted from when we saw ourselves elected. Returns false if
/// leadership changed or the barrier failed, so the caller starts over.
async fn promote(
    raft: &typ::Raft,
    metrics: &mut watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
    vote: typ::Vote,
) -> bool {
    let elected = Instant::now();
    let barrier = tokio::time::timeout(Duration::from_millis(PROMOTE_APPLY_TIMEOUT_MS), raft.ensure_linearizable());
    match barrier.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::info!(error = %e, "promotion: read barrier failed");
            tokio::time::sleep(Duration::from_millis(LEASE_CHECK_MS)).await;
            return false;
        }
        Err(_) => {
            tracing::warn!("promotion: committed log not applied in time; retrying");
            return false;
        }
    }
    tokio::time::sleep_until((elected + Duration::from_millis(PROMOTE_WAIT_MS)).into()).await;
    let still = metrics.borrow_and_update().vote == vote;
    if still {
        tracing::info!(term = vote.leader_id().term, "promoted: committed log applied, old lease waited out");
    }
    still
}
