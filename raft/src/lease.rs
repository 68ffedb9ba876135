//! The leader lease used for fencing (DESIGN.md invariant 7). Its figures
//! (`Timing::lease_ms`, `lease_drift_ms`, `promote_wait_ms`, ...) are derived
//! in `timing` from the one `failure_detection_ms` setting, next to the Raft
//! timeouts they are checked against.
//!
//! The leader may serve only while a quorum has acknowledged it recently: the
//! lease runs until `t + lease_ms`, where `t` is the *send* time of the newest
//! AppendEntries (heartbeats included) that a quorum of voters, counting the
//! leader itself, acknowledged in the leader's current term. The transport
//! records those acknowledgements (`LeaseClock::record_ack`); measuring from
//! the send time keeps the lease conservative however slow the reply was.
//!
//! Why this is safe: say the old leader A's lease is valid at time `t`, i.e.
//! a quorum of voters, A counted, processed AppendEntries of A's term sent at
//! `s >= t - lease_ms` or later. A new leader C needs a quorum of votes, its
//! own included, and the two quorums share a member. If that is only A, A
//! granted C its vote and so left its term, which its fence sees at once.
//! Otherwise it is a voter `v` that processed A's request at `u_v >= s`
//! (perhaps C itself, whose vote for itself counts). If `v` has
//! run since `u_v`, openraft 0.9's follower-side leader lease makes it refuse
//! every other candidate, and campaign itself, only after
//! `u_v + election_timeout_max_ms`; if `v` restarted since, it grants no vote
//! and does not campaign for `restart_guard_ms` after its restart
//! (`network::server` and `cluster`). Either way C is elected after
//! `s + lease_ms + lease_drift_ms` (the timing relations in `timing`), when
//! A's lease has ended. A new leader therefore waits only `promote_wait_ms`
//! (the drift allowance: a reply A checked against its lease just before the
//! end) after its election, plus the apply barrier, before it serves.
//!
//! `spawn_leadership_watch` turns Raft metrics plus the lease into the one
//! signal the server's lifecycle needs: `Leadership::Leader` once promotion
//! steps 1-3 are done (elected, everything committed applied, old lease waited
//! out) and for as long as the lease holds; `Follower` otherwise. The witness
//! is always `Follower`. Every change from `Leader` to `Follower` is logged
//! with its reason (the lease expired, and when, with each peer's newest
//! acknowledgement; another leader; a new term; ...) and kept in
//! `LastDemotion` for the lifecycle's `demoted` line. While it leads, the
//! watch also warns when the remaining lease gets low (`LEASE_LOW_FRACTION`):
//! how close the node came to a false failover.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::timing::{Timing, LEASE_CHECK_MS, LEASE_LOW_FRACTION, LEASE_LOW_LOG_EVERY_MS, PROMOTE_APPLY_TIMEOUT_MS};
use crate::types::{typ, NodeId, PeerNode, Role};

/// Per-peer newest acknowledged send time, by the leader's vote (term).
#[derive(Clone, Debug)]
pub struct LeaseClock {
    acks: Arc<Mutex<BTreeMap<NodeId, (typ::Vote, Instant)>>>,
    lease: Duration,
}

impl LeaseClock {
    /// A clock granting `lease` per quorum acknowledgement.
    pub fn new(lease: Duration) -> Self {
        LeaseClock { acks: Arc::default(), lease }
    }

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
        let lease = self.lease;
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
    /// vote, and a quorum acknowledged it less than `lease_ms` ago?
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

    /// Until when the lease of the leader described by `metrics` runs (it may
    /// be past). `None`: no quorum acknowledged this term.
    fn until(&self, metrics: &RaftMetrics<NodeId, PeerNode>) -> Option<Instant> {
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        self.valid_until(metrics.id, &metrics.vote, &voters)
    }

    /// Each other voter's newest acknowledgement, for a log line:
    /// `node 2 acked term 3 (sent 212 ms ago), node 3 none in term 3`.
    fn acks_text(&self, metrics: &RaftMetrics<NodeId, PeerNode>, now: Instant) -> String {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let term = metrics.vote.leader_id().term;
        let parts: Vec<String> = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != metrics.id)
            .map(|id| match acks.get(&id) {
                Some((v, sent)) if *v == metrics.vote => {
                    format!("node {id} acked (sent {} ms ago)", ms_between(*sent, now))
                }
                Some((v, sent)) => format!(
                    "node {id} none in term {term} (last acked term {}, sent {} ms ago)",
                    v.leader_id().term,
                    ms_between(*sent, now)
                ),
                None => format!("node {id} never acked"),
            })
            .collect();
        parts.join(", ")
    }
}

fn ms_between(earlier: Instant, later: Instant) -> u128 {
    later.saturating_duration_since(earlier).as_millis()
}

/// Why this node last stopped being `Leader` (shared with the lifecycle,
/// which prints it on its `demoted` line). Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct LastDemotion {
    reason: Arc<Mutex<Option<String>>>,
}

impl LastDemotion {
    fn set(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// The newest reason, if any.
    pub fn get(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

/// Why a leader that served (metrics `was`) no longer may, for the log:
/// another leader, a new term, a re-election, or the lease expired (when,
/// and each peer's newest acknowledgement).
fn lost_reason(
    role: Role,
    lease: &LeaseClock,
    was: &RaftMetrics<NodeId, PeerNode>,
    m: &RaftMetrics<NodeId, PeerNode>,
    now: Instant,
) -> String {
    let term = m.vote.leader_id().term;
    let old_term = was.vote.leader_id().term;
    if !is_leading(role, m) {
        return match (m.state, m.current_leader) {
            (ServerState::Leader, _) => format!("vote of term {term} not committed"),
            (state, Some(leader)) if leader != m.id => {
                format!("node {leader} leads term {term} (was leader of term {old_term}; raft state {state:?})")
            }
            (state, _) if term != old_term => {
                format!("term changed {old_term} -> {term}, no leader known (raft state {state:?})")
            }
            (state, _) => format!("raft state {state:?} in term {term}, no leader known"),
        };
    }
    if m.vote != was.vote {
        return format!("re-elected in term {term} (was term {old_term}): promoting again");
    }
    let acks = lease.acks_text(m, now);
    match lease.until(m) {
        Some(until) => format!(
            "lease expired {} ms ago (lease {} ms from the newest quorum-acknowledged AppendEntries); {acks}",
            ms_between(until, now),
            lease.lease.as_millis()
        ),
        None => format!("no quorum acknowledgement in term {term}; {acks}"),
    }
}

/// Watch Raft and the lease; publish `Leadership`. The task ends when Raft
/// shuts down (its metrics channel closes).
pub fn spawn_leadership_watch(
    raft: typ::Raft,
    role: Role,
    lease: LeaseClock,
    timing: Timing,
) -> (watch::Receiver<Leadership>, JoinHandle<()>, LastDemotion) {
    let (tx, rx) = watch::channel(Leadership::Follower);
    let last = LastDemotion::default();
    let demotions = last.clone();
    let task = tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The vote (term) for which promotion steps 1-3 completed.
        let mut promoted: Option<typ::Vote> = None;
        // The metrics while this node last served, to say why it stopped.
        let mut serving: Option<RaftMetrics<NodeId, PeerNode>> = None;
        let mut margin = MarginLog::default();
        loop {
            let m = metrics.borrow().clone();
            let now = Instant::now();
            let next = if !is_leading(role, &m) {
                promoted = None;
                Leadership::Follower
            } else if promoted != Some(m.vote) {
                if let Some(was) = serving.take() {
                    let reason = lost_reason(role, &lease, &was, &m, now);
                    tracing::warn!(%reason, "leadership lost");
                    demotions.set(reason);
                }
                tx.send_replace(Leadership::Follower);
                if promote(&raft, &mut metrics, m.vote, &timing).await {
                    promoted = Some(m.vote);
                }
                continue;
            } else if lease.holds(&m) {
                margin.observe(&lease, &m, now, &timing);
                Leadership::Leader { term: m.vote.leader_id().term }
            } else {
                Leadership::Follower
            };
            match (next, serving.is_some()) {
                (Leadership::Leader { .. }, _) => serving = Some(m),
                (Leadership::Follower, true) => {
                    if let Some(was) = serving.take() {
                        let reason = lost_reason(role, &lease, &was, &m, now);
                        tracing::warn!(%reason, "leadership lost");
                        demotions.set(reason);
                    }
                }
                (Leadership::Follower, false) => {}
            }
            tx.send_if_modified(|cur| std::mem::replace(cur, next) != next);
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(Duration::from_millis(LEASE_CHECK_MS)) => {}
            }
        }
        tx.send_replace(Leadership::Follower);
    });
    (rx, task, last)
}

/// The leader's lowest remaining lease, warned about when it gets low.
#[derive(Default)]
struct MarginLog {
    last_warned: Option<Instant>,
}

impl MarginLog {
    fn observe(&mut self, lease: &LeaseClock, m: &RaftMetrics<NodeId, PeerNode>, now: Instant, timing: &Timing) {
        let Some(until) = lease.until(m) else { return };
        let left = until.saturating_duration_since(now);
        if left.as_millis() * u128::from(LEASE_LOW_FRACTION) >= u128::from(timing.lease_ms) {
            return;
        }
        if self.last_warned.is_some_and(|t| now.duration_since(t) < Duration::from_millis(LEASE_LOW_LOG_EVERY_MS)) {
            return;
        }
        self.last_warned = Some(now);
        tracing::warn!(
            left_ms = left.as_millis() as u64,
            lease_ms = timing.lease_ms,
            acks = %lease.acks_text(m, now),
            "lease nearly expired (peers acknowledge late; a longer failure_detection_ms rides out longer stalls)"
        );
    }
}

/// Promotion steps 1-3 for `vote`: we are leader (checked by the caller);
/// apply everything committed (openraft's read barrier commits our term's
/// first entry and waits until it is applied); wait out `promote_wait_ms`
/// (the drift allowance; see the module doc), counted from when we saw
/// ourselves elected. Returns false if
/// leadership changed or the barrier failed, so the caller starts over.
async fn promote(
    raft: &typ::Raft,
    metrics: &mut watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
    vote: typ::Vote,
    timing: &Timing,
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
    tokio::time::sleep_until((elected + timing.promote_wait()).into()).await;
    let still = metrics.borrow_and_update().vote == vote;
    if still {
        tracing::info!(term = vote.leader_id().term, "promoted: committed log applied, drift allowance waited out");
    }
    still
}
