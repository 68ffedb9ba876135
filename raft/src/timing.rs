//! Every timing figure of the Raft side, in one place.
//!
//! The failover path is made of these: how often a leader heartbeats, how long
//! a follower waits before campaigning (`membership::raft_config` hands both to
//! openraft), how long a quorum acknowledgement lets the leader serve and how
//! long a new leader waits before serving (`lease`), how quickly the peer
//! transport gives up on and retries a peer (`network`), when the witness
//! stands in to hand the log over (`relay`), and the bounds of a switchover
//! (`handover`).
//!
//! The figures that decide between "a failover" and "no failover" are all
//! derived from ONE setting, `[cluster] failure_detection_ms` (like corosync's
//! `token`): `Timing::derive` computes the heartbeat, election and lease
//! timings from it and `Timing::check` verifies the relations between them
//! (and with the fixed bounds below) when the config is loaded and when the
//! node starts; a value that breaks one is a config error naming it.
//!
//! With `F = failure_detection_ms`:
//! - openraft's `election_timeout_max` = F/2. openraft 0.9 makes a follower
//!   that has a leader wait `election_timeout_max` (its leader lease) plus a
//!   random timeout in `[election_timeout_min, election_timeout_max)` before
//!   campaigning, so a dead active is detected after 3F/4 .. F;
//! - `election_timeout_min` = F/4 (only the other storage node ever campaigns
//!   after a failure, so the spread is not needed against split votes; it is
//!   also openraft's vote RPC timeout);
//! - the lease lasts `lease_ms` = F/2 - F/32 from the send time of the newest
//!   quorum-acknowledged AppendEntries, with `lease_drift_ms` = F/32 of
//!   allowance for clock rates and for a reply checked just before the lease
//!   ended: `lease_ms + lease_drift_ms` = `election_timeout_max`, so the lease
//!   ends before any voter that acknowledged it may elect another leader;
//! - `restart_guard_ms` = `lease_ms + lease_drift_ms`: for that long after
//!   its Raft starts a node neither grants a vote nor campaigns (a restarted
//!   node has forgotten the in-memory follower lease that made its recent
//!   acknowledgements binding; see `lease`);
//! - `campaign_hold_ms` = F/4 and `campaign_busy_cap_ms` = 2F: a storage
//!   node does not campaign while it handles an AppendEntries (up to the
//!   cap) or for the hold after answering one (`elect_gate`);
//! - a new leader waits only `promote_wait_ms` = `lease_drift_ms` after its
//!   election before serving (the old lease has ended by its election: see
//!   `lease`);
//! - heartbeats: openraft ticks every 3/2 of `heartbeat_ms` and sends one
//!   heartbeat per tick when no entries are in flight; `heartbeat_ms` is
//!   also its AppendEntries RPC timeout (the transport still takes a later
//!   answer as an acknowledgement). `heartbeat_ms` = `lease_ms`/5.
//!
//! Replication sends one request per follower at a time and a follower
//! answers after its fsync, so the lease survives as long as two consecutive
//! round trips (fsync included) of the faster follower take less than
//! `lease_ms` (≈ 0.47 F).
//!
//! A client of an idle cluster then stalls, on a failover, for the detection
//! (3F/4 .. F) plus the promotion steps (apply barrier, VIP, epoch commit,
//! listeners: about 0.1 s): with the default F = 1200 ms about 1.0-1.3 s. A
//! larger F rides out longer stalls of a loaded machine and makes each real
//! failover slower by 7/8 of the increase, on average.
//!
//! Measured (tests/cluster/load.rs: three nodes on one 2-core machine, 4
//! spinning threads, 4 NFS clients creating files, snapshots every 500
//! entries, other builds sharing the disk): Raft log fsyncs of 100-300 ms
//! (once 680 ms), leader acknowledgement gaps up to ≈ 340 ms in a minute, so
//! F = 640 (lease 300 ms) and F = 720 (lease 338 ms) each still demoted the
//! active about once a minute. F = 1000 (lease 469 ms): no demotion in a
//! 10-minute run at a load average of 11-14 (fsyncs up to 515 ms, snapshots
//! of 4 MB built meanwhile), the two closest calls 36 and 59 ms short of the
//! lease's end; but a minute with more test processes sharing the disk
//! demoted it (a 421 ms fsync, gap 476 ms). Hence the default F = 1200
//! (lease 563 ms, heartbeats every 168 ms). At 1200, 10-minute runs: one
//! demotion when the whole process stalled 1.2 s under memory pressure (the
//! node now locks its code in memory), then a run with two storms of
//! whole-second stalls (fsyncs to 943 ms, load average 13) that no lease
//! near 1 s rides out, then, with log reads moved off the runtime, 0
//! demotions and 0 near misses (fsyncs to 241 ms, load average 9).

use std::time::Duration;

/// `failure_detection_ms` when the config sets none, chosen from the
/// measurements in the module doc.
pub const FAILURE_DETECTION_MS_DEFAULT: u64 = 1_200;
/// Smallest accepted `failure_detection_ms`.
pub const FAILURE_DETECTION_MS_MIN: u64 = 480;
/// Largest accepted `failure_detection_ms`: a switchover waits
/// `SWITCHOVER_WAIT_MS` for the other node's election and promotion.
pub const FAILURE_DETECTION_MS_MAX: u64 = 3_000;

/// The derived timings of one node. `Default` is `derive` of
/// `FAILURE_DETECTION_MS_DEFAULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The setting everything else is derived from.
    pub failure_detection_ms: u64,
    /// openraft `heartbeat_interval`: heartbeats go every 3/2 of it, and it
    /// bounds one AppendEntries RPC.
    pub heartbeat_ms: u64,
    /// openraft `election_timeout_min` (also its vote RPC timeout).
    pub election_timeout_min_ms: u64,
    /// openraft `election_timeout_max` (also a follower's leader lease).
    pub election_timeout_max_ms: u64,
    /// How long a quorum acknowledgement lets the leader serve.
    pub lease_ms: u64,
    /// Allowance for clock-rate differences between nodes and scheduling delay.
    pub lease_drift_ms: u64,
    /// How long a newly elected leader waits before serving, from the moment
    /// of its election: the drift allowance. The old leader's lease has ended
    /// by then (see `lease`).
    pub promote_wait_ms: u64,
    /// For how long after its Raft starts a node grants no vote and does not
    /// campaign: `lease_ms + lease_drift_ms`, so that an acknowledgement it
    /// gave before a restart, which the restart made it forget, binds no more.
    pub restart_guard_ms: u64,
    /// How long after answering an AppendEntries a storage node still does
    /// not campaign (`elect_gate`): `election_timeout_min_ms`, longer than
    /// a heartbeat period, shorter than openraft's shortest election timer.
    pub campaign_hold_ms: u64,
    /// How long one AppendEntries still in hand keeps a storage node from
    /// campaigning (`elect_gate`): 2 × `failure_detection_ms`.
    pub campaign_busy_cap_ms: u64,
    /// Silence from every leader before the witness may stand (`relay`): two
    /// full election timeouts plus a heartbeat, longer than any storage node
    /// needs to notice a dead leader and campaign.
    pub relay_silence_ms: u64,
}

/// A `failure_detection_ms` that cannot be used, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "failure_detection_ms = {0} is outside {FAILURE_DETECTION_MS_MIN}..={FAILURE_DETECTION_MS_MAX} (the default is {FAILURE_DETECTION_MS_DEFAULT})"
    )]
    OutOfRange(u64),
    /// A derived relation does not hold (names the figures involved).
    #[error("failure_detection_ms = {failure_detection_ms}: {relation}")]
    Relation { failure_detection_ms: u64, relation: String },
}

impl Default for Timing {
    fn default() -> Self {
        Timing::derive_unchecked(FAILURE_DETECTION_MS_DEFAULT)
    }
}

impl Timing {
    /// The timings for `failure_detection_ms`, checked (`check`).
    pub fn derive(failure_detection_ms: u64) -> Result<Timing, TimingError> {
        if !(FAILURE_DETECTION_MS_MIN..=FAILURE_DETECTION_MS_MAX).contains(&failure_detection_ms) {
            return Err(TimingError::OutOfRange(failure_detection_ms));
        }
        let timing = Timing::derive_unchecked(failure_detection_ms);
        timing.check()?;
        Ok(timing)
    }

    /// The arithmetic of `derive` (see the module doc), without the checks.
    pub const fn derive_unchecked(failure_detection_ms: u64) -> Timing {
        let f = failure_detection_ms;
        let election_timeout_max_ms = f / 2;
        let lease_drift_ms = f / 32;
        let lease_ms = election_timeout_max_ms - lease_drift_ms;
        let heartbeat_ms = lease_ms / 5;
        Timing {
            failure_detection_ms: f,
            heartbeat_ms,
            election_timeout_min_ms: f / 4,
            election_timeout_max_ms,
            lease_ms,
            lease_drift_ms,
            promote_wait_ms: lease_drift_ms,
            restart_guard_ms: lease_ms + lease_drift_ms,
            campaign_hold_ms: f / 4,
            campaign_busy_cap_ms: 2 * f,
            relay_silence_ms: 2 * election_timeout_max_ms + heartbeat_ms,
        }
    }

    /// The relations the failover path relies on; the first that fails is
    /// the error. Run at config load and again at node start.
    pub fn check(&self) -> Result<(), TimingError> {
        let t = self;
        let relations: [(bool, String); 13] = [
            (
                t.election_timeout_min_ms >= 2 * t.heartbeat_ms,
                format!(
                    "election_timeout_min_ms {} < 2 × heartbeat_ms {}: a lost heartbeat would start an election",
                    t.election_timeout_min_ms, t.heartbeat_ms
                ),
            ),
            (
                t.election_timeout_min_ms < t.election_timeout_max_ms,
                format!(
                    "election_timeout_min_ms {} must be below election_timeout_max_ms {}",
                    t.election_timeout_min_ms, t.election_timeout_max_ms
                ),
            ),
            (
                t.lease_ms >= 4 * t.heartbeat_ms,
                format!(
                    "lease_ms {} < 4 × heartbeat_ms {}: a couple of late heartbeats would drop the lease",
                    t.lease_ms, t.heartbeat_ms
                ),
            ),
            (
                t.lease_ms + t.lease_drift_ms <= t.election_timeout_max_ms,
                format!(
                    "lease_ms {} + lease_drift_ms {} > election_timeout_max_ms {}: the lease must end before a voter may elect another leader",
                    t.lease_ms, t.lease_drift_ms, t.election_timeout_max_ms
                ),
            ),
            (
                t.restart_guard_ms >= t.lease_ms + t.lease_drift_ms,
                format!(
                    "restart_guard_ms {} < lease_ms {} + lease_drift_ms {}: a restarted voter could elect a leader inside the old lease",
                    t.restart_guard_ms, t.lease_ms, t.lease_drift_ms
                ),
            ),
            (
                t.promote_wait_ms >= t.lease_drift_ms,
                format!(
                    "promote_wait_ms {} < lease_drift_ms {}: a new leader would serve while the old one may still send a reply",
                    t.promote_wait_ms, t.lease_drift_ms
                ),
            ),
            (
                t.campaign_hold_ms >= t.heartbeat_period_ms() && t.campaign_hold_ms >= 2 * ELECT_GATE_POLL_MS,
                format!(
                    "campaign_hold_ms {} < the heartbeat period {} or 2 × ELECT_GATE_POLL_MS {ELECT_GATE_POLL_MS}: a follower could campaign between two requests of a live leader",
                    t.campaign_hold_ms,
                    t.heartbeat_period_ms()
                ),
            ),
            (
                t.campaign_hold_ms < t.election_timeout_max_ms + t.election_timeout_min_ms
                    && t.campaign_busy_cap_ms > t.election_timeout_max_ms + t.election_timeout_min_ms,
                format!(
                    "campaign_hold_ms {} must end before openraft's shortest election timer ({} + {}), and campaign_busy_cap_ms {} after it",
                    t.campaign_hold_ms, t.election_timeout_max_ms, t.election_timeout_min_ms, t.campaign_busy_cap_ms
                ),
            ),
            (
                LEASE_CHECK_MS * 5 <= t.lease_ms,
                format!("lease_ms {} < 5 × LEASE_CHECK_MS {LEASE_CHECK_MS}", t.lease_ms),
            ),
            (
                PEER_BACKOFF_MS < t.election_timeout_min_ms,
                format!(
                    "election_timeout_min_ms {} <= PEER_BACKOFF_MS {PEER_BACKOFF_MS}: a leader must retry a restarted peer before that peer's election timer fires",
                    t.election_timeout_min_ms
                ),
            ),
            (
                PEER_IDLE_TIMEOUT_MS > 2 * t.heartbeat_ms,
                format!("heartbeat_ms {} too long for PEER_IDLE_TIMEOUT_MS {PEER_IDLE_TIMEOUT_MS}", t.heartbeat_ms),
            ),
            (
                t.relay_silence_ms > t.election_timeout_max_ms + t.heartbeat_ms && RELAY_RETRY_MS >= 2 * RELAY_POLL_MS,
                format!(
                    "relay_silence_ms {} <= election_timeout_max_ms {} + heartbeat_ms {}",
                    t.relay_silence_ms, t.election_timeout_max_ms, t.heartbeat_ms
                ),
            ),
            (
                t.failure_detection_ms + t.promote_wait_ms < SWITCHOVER_WAIT_MS,
                format!(
                    "failure_detection_ms {} + promote_wait_ms {} >= SWITCHOVER_WAIT_MS {SWITCHOVER_WAIT_MS}: a switchover would give up before the other node serves",
                    t.failure_detection_ms, t.promote_wait_ms
                ),
            ),
        ];
        match relations.into_iter().find(|(holds, _)| !holds) {
            None => Ok(()),
            Some((_, relation)) => {
                Err(TimingError::Relation { failure_detection_ms: t.failure_detection_ms, relation })
            }
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn promote_wait(&self) -> Duration {
        Duration::from_millis(self.promote_wait_ms)
    }

    pub fn restart_guard(&self) -> Duration {
        Duration::from_millis(self.restart_guard_ms)
    }

    /// The heartbeat period openraft really uses (it ticks every 3/2 of
    /// `heartbeat_ms` and sends a heartbeat on each tick).
    pub fn heartbeat_period_ms(&self) -> u64 {
        self.heartbeat_ms * 3 / 2
    }
}

// ------------------------------------------------------------ Raft (openraft Config)

/// Timeout of one InstallSnapshot chunk RPC (a chunk is
/// `membership::SNAPSHOT_CHUNK_BYTES`).
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 2_000;

// ------------------------------------------------------------ lease and promotion

/// How often the leadership watch re-checks the lease when no metrics change
/// arrives.
pub const LEASE_CHECK_MS: u64 = 10;
/// Bound on the "apply everything committed" step of a promotion; on timeout
/// the promotion is retried from the start.
pub const PROMOTE_APPLY_TIMEOUT_MS: u64 = 5_000;
/// A leader whose remaining lease drops below this fraction (1/N) of
/// `lease_ms` logs a warning (at most once per `LEASE_LOW_LOG_EVERY_MS`): the
/// machine came close to a false failover.
pub const LEASE_LOW_FRACTION: u64 = 4;
pub const LEASE_LOW_LOG_EVERY_MS: u64 = 10_000;
/// How often the election gate (`elect_gate`) re-decides.
pub const ELECT_GATE_POLL_MS: u64 = 20;

// ------------------------------------------------------------ peer transport

/// TCP connect timeout.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// Time allowed for the whole handshake, on both sides.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;
/// A server connection with no request for this long is closed (the leader
/// heartbeats every `Timing::heartbeat_period_ms`, so only dead connections
/// idle).
pub const PEER_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Wait before retrying an unreachable peer (openraft's default is 500 ms;
/// shorter so a restarted peer is picked up quickly).
pub const PEER_BACKOFF_MS: u64 = 100;

// ------------------------------------------------------------ one-off peer requests

/// Bound on fetching the cluster view from the leader (connect, handshake,
/// answer).
pub const VIEW_TIMEOUT_MS: u64 = 500;
/// Bound on a forwarded admin command (a switchover waits for catch-up and
/// for the new leader, 7 s at most).
pub const ADMIN_FORWARD_TIMEOUT_MS: u64 = 10_000;

// ------------------------------------------------------------ writes

/// Bound on one proposal in `RaftCommit` (quorum ack plus apply). A leader
/// cut off from its quorum never commits; its callers get `NotLeader` after
/// this long.
pub const RAFT_WRITE_TIMEOUT_MS: u64 = 5_000;

// ------------------------------------------------------------ switchover (`handover`)

/// Bound on waiting for the target to catch up before a switchover.
pub const SWITCHOVER_CATCHUP_MS: u64 = 2_000;
/// Bound on waiting for another node to be elected after standing down.
pub const SWITCHOVER_WAIT_MS: u64 = 5_000;
/// Poll period of the switchover's and the stand-down's waits.
pub const SWITCHOVER_POLL_MS: u64 = 20;

const _: () = assert!(
    SWITCHOVER_CATCHUP_MS + SWITCHOVER_WAIT_MS < ADMIN_FORWARD_TIMEOUT_MS,
    "a switchover forwarded from a follower is answered before the follower gives up"
);

// ------------------------------------------------------------ witness relay (`relay`)

/// How often the relay looks at the signals and at Raft.
pub const RELAY_POLL_MS: u64 = 50;
/// A refusal of a lagging candidate counts as current for this long.
pub const RELAY_REFUSAL_RECENT_MS: u64 = 1_000;
/// Between two election triggers while standing.
pub const RELAY_RETRY_MS: u64 = 100;
/// Bound on waiting, as leader, for a storage node to match our log.
pub const RELAY_CATCHUP_MS: u64 = 2_000;
/// Bound on waiting for a storage node to take over once heartbeats stop.
pub const RELAY_HANDOVER_MS: u64 = 5_000;

const _: () = assert!(RELAY_RETRY_MS >= 2 * RELAY_POLL_MS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_and_the_whole_range_derive() {
        assert_eq!(Timing::derive(FAILURE_DETECTION_MS_DEFAULT), Ok(Timing::default()));
        for f in (FAILURE_DETECTION_MS_MIN..=FAILURE_DETECTION_MS_MAX).step_by(10) {
            let t = Timing::derive(f).unwrap_or_else(|e| panic!("{e}"));
            // Detection (at most 2 × election_timeout_max) never exceeds the setting.
            assert!(2 * t.election_timeout_max_ms <= f);
            assert!(t.election_timeout_max_ms + t.election_timeout_min_ms >= f * 3 / 4 - 1);
        }
    }

    #[test]
    fn out_of_range_and_broken_relations_are_errors() {
        assert_eq!(
            Timing::derive(FAILURE_DETECTION_MS_MIN - 1),
            Err(TimingError::OutOfRange(FAILURE_DETECTION_MS_MIN - 1))
        );
        assert!(matches!(Timing::derive(FAILURE_DETECTION_MS_MAX + 1), Err(TimingError::OutOfRange(_))));
        let mut t = Timing::default();
        t.lease_ms = t.election_timeout_max_ms;
        let e = t.check().expect_err("lease outliving the follower lease");
        assert!(e.to_string().contains("the lease must end before a voter may elect another leader"), "{e}");
        let mut t = Timing::default();
        t.restart_guard_ms -= 1;
        assert!(t.check().is_err());
        let mut t = Timing::default();
        t.promote_wait_ms -= 1;
        assert!(t.check().is_err());
    }
}
