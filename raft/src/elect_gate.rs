//! When a storage node may campaign: the one owner of openraft's
//! `enable_elect` switch on a storage node.
//!
//! openraft 0.9 has no pre-vote. A follower whose election timer runs out
//! campaigns with a higher term; the leader refuses it the vote when its log
//! is behind, but the follower's higher term, in its answer to the leader's
//! next AppendEntries, makes the leader step down all the same: the active is
//! deposed and wins again a moment later (a false failover). openraft resets
//! a follower's timer when an AppendEntries reaches its core. The peer
//! server answers one request per connection at a time, after the follower's
//! log is on disk, and the leader sends the next request on that connection
//! only after the answer; so a follower whose log disk is slow (a node
//! restarted on a loaded machine, catching up) hears from a live leader less
//! often than its timer allows, and campaigns. The soak of 2026-11-27 saw it:
//! AppendEntries to the rejoining node took over 1.3 s, and it stood.
//!
//! The gate keeps the switch off while any of these holds:
//! - the node started less than `Timing::restart_guard_ms` ago (`lease`);
//! - `RaftNode::step_aside` is handing leadership on (`handover`);
//! - the peer server is handling an AppendEntries, begun less than
//!   `Timing::campaign_busy_cap_ms` ago, or answered one less than
//!   `Timing::campaign_hold_ms` ago: the leader that sent it was alive then,
//!   and its next request is queued behind that answer.
//!
//! Otherwise the switch is on, and openraft's timer alone decides when the
//! follower campaigns. After an ordinary AppendEntries (answered in
//! milliseconds) the gate reopens `campaign_hold_ms` later, before that timer
//! could run out (`Timing::check`), so a dead leader is detected as quickly as
//! without the gate; only a follower still busy with an append when the
//! leader dies waits for that append to end (at most `campaign_busy_cap_ms`).
//! The witness never campaigns (its switch stays off; the relay uses
//! `trigger().elect()`, which the switch does not govern).
//!
//! The gate also takes the witness relay's last step (`relay`). When the
//! witness leads only to hand this node the log and has stopped sending
//! (the gate open again), openraft would still wait out the witness's lease,
//! an election timeout, and its `smaller_log_timeout` (2 ×
//! `election_timeout_max`, added because this node was refused a vote for a
//! shorter log a moment before): some 2.5 s of a failover with nobody
//! serving. So once the witness has led for `election_timeout_max_ms +
//! lease_drift_ms` (its lease has ended: it would refuse the vote before)
//! and the gate is open, this node campaigns at once (`follow_relay`), at
//! most once per `election_timeout_max_ms`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::network::{PeerSignals, SignalTimes};
use crate::timing::{Timing, ELECT_GATE_POLL_MS};
use crate::types::{typ, Role};

/// Why the gate is closed, if it is (pure: the module doc's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Witness,
    Restarted,
    SteppingAside,
    AppendInProgress,
    AppendJustAnswered,
}

/// What the gate decides from.
#[derive(Clone, Copy, Debug)]
pub struct GateInputs {
    pub role: Role,
    pub restart_until: Instant,
    pub aside: bool,
    pub seen: SignalTimes,
}

/// The module doc's rules: `None` when the node may campaign.
pub fn closed_by(inputs: &GateInputs, timing: &Timing, now: Instant) -> Option<Closed> {
    let since = |t: Instant| now.saturating_duration_since(t);
    if inputs.role != Role::Storage {
        return Some(Closed::Witness);
    }
    if now < inputs.restart_until {
        return Some(Closed::Restarted);
    }
    if inputs.aside {
        return Some(Closed::SteppingAside);
    }
    if inputs.seen.append_open_since.is_some_and(|t| since(t) < ms(timing.campaign_busy_cap_ms)) {
        return Some(Closed::AppendInProgress);
    }
    if inputs.seen.last_answer.is_some_and(|t| since(t) < ms(timing.campaign_hold_ms)) {
        return Some(Closed::AppendJustAnswered);
    }
    None
}

/// Should this storage node campaign now to end a witness relay (module
/// doc)? `witness_since`: since when the witness has been seen leading;
/// `last`: this node's last such campaign.
pub fn follow_relay(
    witness_since: Option<Instant>,
    last: Option<Instant>,
    gate_open: bool,
    timing: &Timing,
    now: Instant,
) -> bool {
    let since = |t: Instant| now.saturating_duration_since(t);
    gate_open
        && witness_since.is_some_and(|t| since(t) >= ms(timing.election_timeout_max_ms + timing.lease_drift_ms))
        && last.is_none_or(|t| since(t) >= ms(timing.election_timeout_max_ms))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The switch's owner. Cloning shares it.
#[derive(Clone)]
pub struct ElectGate {
    raft: typ::Raft,
    role: Role,
    restart_until: Instant,
    timing: Timing,
    signals: PeerSignals,
    state: Arc<Mutex<GateState>>,
}

struct GateState {
    aside: bool,
    /// What was last handed to openraft.
    open: Option<bool>,
    /// Since when the witness has been seen leading (a relay), if it leads.
    witness_since: Option<Instant>,
    /// This node's last campaign to end a relay.
    relay_campaign: Option<Instant>,
}

impl ElectGate {
    /// A gate for `raft`, closed until `restart_until`; applied at once.
    pub fn new(raft: typ::Raft, role: Role, timing: Timing, signals: PeerSignals, restart_until: Instant) -> Self {
        let state = GateState { aside: false, open: None, witness_since: None, relay_campaign: None };
        let gate = ElectGate { raft, role, restart_until, timing, signals, state: Arc::new(Mutex::new(state)) };
        gate.apply();
        gate
    }

    /// Close the gate for a switchover (`true`) or reopen it to the other
    /// rules (`false`); applied at once.
    pub fn set_aside(&self, aside: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).aside = aside;
        self.apply();
    }

    /// Decide now and hand openraft the answer if it changed. Deciding and
    /// handing over happen under one lock, so `set_aside` and the poll task
    /// never hand over each other's stale answers.
    fn apply(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let inputs = GateInputs {
            role: self.role,
            restart_until: self.restart_until,
            aside: state.aside,
            seen: self.signals.times(),
        };
        let now = Instant::now();
        let closed = closed_by(&inputs, &self.timing, now);
        let open = closed.is_none();
        if state.open != Some(open) {
            self.raft.runtime_config().elect(open);
            state.open = Some(open);
            tracing::debug!(open, ?closed, "election gate");
        }
        if self.role != Role::Storage {
            return;
        }
        state.witness_since = if self.witness_leads() { state.witness_since.or(Some(now)) } else { None };
        if follow_relay(state.witness_since, state.relay_campaign, open, &self.timing, now) {
            state.relay_campaign = Some(now);
            tracing::info!(
                "the witness handed this node the log and stopped: campaigning now (witness relay's last step)"
            );
            let raft = self.raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().elect().await;
            });
        }
    }

    /// Is the leader this node knows of a witness?
    fn witness_leads(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader
            .filter(|leader| *leader != m.id)
            .and_then(|leader| m.membership_config.membership().get_node(&leader).map(|n| n.role))
            == Some(Role::Witness)
    }

    /// Re-apply every `ELECT_GATE_POLL_MS` until aborted (storage nodes).
    pub fn spawn(&self) -> JoinHandle<()> {
        let gate = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ms(ELECT_GATE_POLL_MS)).await;
                gate.apply();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(now: Instant) -> GateInputs {
        GateInputs { role: Role::Storage, restart_until: now, aside: false, seen: SignalTimes::default() }
    }

    #[test]
    fn an_idle_storage_node_past_its_restart_guard_may_campaign() {
        let now = Instant::now();
        assert_eq!(closed_by(&inputs(now), &Timing::default(), now), None);
    }

    #[test]
    fn the_witness_a_restarted_node_and_one_stepping_aside_may_not() {
        let t = Timing::default();
        let now = Instant::now();
        let witness = GateInputs { role: Role::Witness, ..inputs(now) };
        assert_eq!(closed_by(&witness, &t, now), Some(Closed::Witness));
        let restarted = GateInputs { restart_until: now + ms(1), ..inputs(now) };
        assert_eq!(closed_by(&restarted, &t, now), Some(Closed::Restarted));
        let aside = GateInputs { aside: true, ..inputs(now) };
        assert_eq!(closed_by(&aside, &t, now), Some(Closed::SteppingAside));
    }

    #[test]
    fn an_append_in_progress_closes_the_gate_up_to_the_cap() {
        let t = Timing::default();
        let begun = Instant::now();
        let mut i = inputs(begun);
        i.seen.append_open_since = Some(begun);
        let at = |d: u64| closed_by(&i, &t, begun + ms(d));
        assert_eq!(at(0), Some(Closed::AppendInProgress));
        assert_eq!(at(t.campaign_busy_cap_ms - 1), Some(Closed::AppendInProgress));
        assert_eq!(at(t.campaign_busy_cap_ms), None, "a follower stuck in one append may campaign after the cap");
    }

    #[test]
    fn after_a_relay_a_storage_node_campaigns_once_the_witness_lease_ended_and_the_gate_opened() {
        let t = Timing::default();
        let seen = Instant::now();
        let lease_end = seen + ms(t.election_timeout_max_ms + t.lease_drift_ms);
        assert!(!follow_relay(None, None, true, &t, lease_end), "no witness leads");
        assert!(!follow_relay(Some(seen), None, true, &t, lease_end - ms(1)), "inside the witness's lease");
        assert!(!follow_relay(Some(seen), None, false, &t, lease_end), "the witness still sends");
        assert!(follow_relay(Some(seen), None, true, &t, lease_end));
        let again = lease_end + ms(t.election_timeout_max_ms);
        assert!(!follow_relay(Some(seen), Some(lease_end), true, &t, again - ms(1)), "once per election_timeout_max");
        assert!(follow_relay(Some(seen), Some(lease_end), true, &t, again));
    }

    #[test]
    fn a_just_answered_append_holds_the_gate_for_the_hold_only() {
        let t = Timing::default();
        let answered = Instant::now();
        let mut i = inputs(answered);
        i.seen.last_answer = Some(answered);
        assert_eq!(closed_by(&i, &t, answered + ms(t.campaign_hold_ms - 1)), Some(Closed::AppendJustAnswered));
        assert_eq!(closed_by(&i, &t, answered + ms(t.campaign_hold_ms)), None);
    }
}
