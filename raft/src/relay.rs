//! The witness relay: the one time the witness takes Raft leadership, and why.
//!
//! A leader commits an entry once one other voter has it. If that voter was
//! the witness and the leader then dies, the surviving storage node lacks the
//! entry: the witness rightly refuses it its vote (Raft's up-to-date rule),
//! and a witness that never campaigns would leave the cluster without a
//! leader until the dead node came back. Only a leader can ship log entries,
//! so the witness stands in exactly this case, and only to hand the log on:
//!
//! 1. it has refused a candidate because that candidate's log is behind
//!    (`PeerSignals::refused_behind`, within `RELAY_REFUSAL_RECENT_MS`), and
//! 2. no leader has sent it anything for `Timing::relay_silence_ms` (a live
//!    leader heartbeats every `Timing::heartbeat_period_ms`; while one talks
//!    to the witness, the witness never stands);
//!
//! then it triggers an election (`trigger().elect()`, which ignores the
//! witness's switched-off election timer). A refused candidacy teaches it the
//! candidate's term, so the next trigger, `RELAY_RETRY_MS` later, outbids it.
//! As leader it commits its term's blank entry, which brings the storage node
//! up to date (`RELAY_CATCHUP_MS` bound), then stops heartbeating: once the
//! witness's lease has ended the storage node campaigns at once with a
//! complete log (`elect_gate::follow_relay`; openraft's own timers would add
//! a penalty of 2 × `election_timeout_max` for its refused candidacy), the
//! witness grants, and the storage node promotes itself through the normal
//! lifecycle (apply, wait out the lease bound, VIP, epoch, listeners).
//!
//! The witness never serves: its leadership watch never reports `Leader`
//! (`lease::spawn_leadership_watch` checks the role), so it never opens
//! listeners or claims the VIP. It leads for the few milliseconds the
//! catch-up takes plus one leader lease. Its figures (`RELAY_*_MS`,
//! `Timing::relay_silence_ms`) live in `timing`.

use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::task::JoinHandle;

use crate::network::{PeerSignals, SignalTimes};
use crate::timing::{RELAY_CATCHUP_MS, RELAY_HANDOVER_MS, RELAY_POLL_MS, RELAY_REFUSAL_RECENT_MS, RELAY_RETRY_MS};
use crate::types::{typ, NodeId, Role};

/// Should a witness that is not leader stand now, after `relay_silence_ms`
/// without a leader?
pub fn should_stand(seen: SignalTimes, now: Instant, relay_silence_ms: u64) -> bool {
    let within =
        |t: Option<Instant>, ms: u64| t.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(ms));
    within(seen.refused_behind, RELAY_REFUSAL_RECENT_MS) && !within(seen.last_append, relay_silence_ms)
}

/// Run the relay on a witness until Raft shuts down.
/// Like any restarted node, the witness does not stand before `stand_from`
/// (`Timing::restart_guard_ms` after its start; see `lease`).
pub fn spawn_witness_relay(
    raft: typ::Raft,
    signals: PeerSignals,
    relay_silence_ms: u64,
    stand_from: Instant,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let metrics = raft.metrics();
        loop {
            tokio::time::sleep(Duration::from_millis(RELAY_POLL_MS)).await;
            if metrics.has_changed().is_err() {
                return; // Raft stopped.
            }
            let m = metrics.borrow().clone();
            if m.state == ServerState::Leader && m.current_leader == Some(m.id) {
                hand_over(&raft).await;
                continue;
            }
            let now = Instant::now();
            if now >= stand_from && should_stand(signals.times(), now, relay_silence_ms) {
                tracing::warn!(
                    term = m.current_term,
                    last_log = ?m.last_log_index,
                    "witness relay: a storage node is behind our log and no leader is alive; standing to hand it the log"
                );
                if raft.trigger().elect().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(RELAY_RETRY_MS)).await;
            }
        }
    })
}

/// As leader: wait (bounded) until a storage node matches our log, then stop
/// heartbeating until another node leads (bounded), then switch heartbeats
/// back on (in case nobody took over, the loop comes back here).
async fn hand_over(raft: &typ::Raft) {
    let me = raft.metrics().borrow().id;
    let wait = |ms: u64| raft.wait(Some(Duration::from_millis(ms)));
    let caught_up = wait(RELAY_CATCHUP_MS).metrics(|m| caught_up_storage(m).is_some(), "relay catch-up").await;
    let target = caught_up.as_ref().ok().and_then(caught_up_storage);
    tracing::warn!(?target, caught_up = target.is_some(), "witness relay: leading; stepping aside for a storage node");
    let rc = raft.runtime_config();
    rc.heartbeat(false);
    let handed = wait(RELAY_HANDOVER_MS).metrics(|m| m.current_leader != Some(me), "relay hand-over").await.is_ok();
    rc.heartbeat(true);
    let leader = raft.metrics().borrow().current_leader;
    if handed {
        tracing::warn!(?leader, "witness relay: handed over");
    } else {
        tracing::warn!("witness relay: no storage node took over in time; still leading");
    }
}

/// A storage voter whose replicated log matches the leader's last index.
fn caught_up_storage(m: &openraft::RaftMetrics<NodeId, crate::types::PeerNode>) -> Option<NodeId> {
    let repl = m.replication.as_ref()?;
    let last = m.last_log_index?;
    m.membership_config
        .membership()
        .nodes()
        .filter(|(id, n)| **id != m.id && n.role == Role::Storage)
        .map(|(id, _)| *id)
        .find(|id| repl.get(id).cloned().flatten().map(|l| l.index) == Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::Timing;

    fn ago(now: Instant, ms: u64) -> Option<Instant> {
        now.checked_sub(Duration::from_millis(ms))
    }

    #[test]
    fn stands_only_after_a_recent_refusal_and_leader_silence() {
        let now = Instant::now() + Duration::from_secs(10);
        let t = Timing::default();
        let should_stand = |seen, now| should_stand(seen, now, t.relay_silence_ms);
        let quiet_and_refused = SignalTimes {
            last_append: ago(now, t.relay_silence_ms + 1),
            refused_behind: ago(now, 10),
            ..SignalTimes::default()
        };
        assert!(should_stand(quiet_and_refused, now));
        let never_heard = SignalTimes { last_append: None, refused_behind: ago(now, 10), ..SignalTimes::default() };
        assert!(should_stand(never_heard, now));
        let leader_alive = SignalTimes {
            last_append: ago(now, t.heartbeat_ms),
            refused_behind: ago(now, 10),
            ..SignalTimes::default()
        };
        assert!(!should_stand(leader_alive, now), "a live leader talks to us: never stand");
        let no_refusal = SignalTimes { last_append: ago(now, 5_000), refused_behind: None, ..SignalTimes::default() };
        assert!(!should_stand(no_refusal, now), "nobody is stuck behind us");
        let old_refusal = SignalTimes {
            last_append: ago(now, 5_000),
            refused_behind: ago(now, RELAY_REFUSAL_RECENT_MS + 1),
            ..SignalTimes::default()
        };
        assert!(!should_stand(old_refusal, now));
    }
}
