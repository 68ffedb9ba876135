//! Every timing figure of the Raft side, in one place, with the relations
//! between them checked at compile time (`const _: () = assert!(...)`).
//!
//! The failover path is made of these: how often a leader heartbeats, how long
//! a follower waits before campaigning (`membership::raft_config` hands both to
//! openraft), how long a quorum acknowledgement lets the leader serve and how
//! long a new leader waits before serving (`lease`), how quickly the peer
//! transport gives up on and retries a peer (`network`), when the witness
//! stands in to hand the log over (`relay`), and the bounds of a switchover
//! (`handover`). Changing one of them changes the stall a client sees on
//! failover; the asserts below say which others must move with it.

// ------------------------------------------------------------ Raft (openraft Config)

/// Leader heartbeat period. Also the granularity of lease renewal.
pub const HEARTBEAT_MS: u64 = 40;
/// Election timeout range (randomised per node). openraft 0.9 makes a follower
/// that has a leader wait `ELECTION_TIMEOUT_MAX_MS` (its leader lease) plus a
/// random timeout in this range before campaigning, so failure detection takes
/// 400..480 ms; with the promotion's lease wait (200 ms, overlapping the apply
/// barrier) kill → serving is ≈ 0.7 s. A follower campaigns only after
/// 400 ms without a heartbeat, i.e. 10 lost or late heartbeats: long enough
/// that scheduling noise on a loaded 2-core machine does not flap elections.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 160;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 240;
/// Timeout of one InstallSnapshot chunk RPC (a chunk is
/// `membership::SNAPSHOT_CHUNK_BYTES`).
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 2_000;

const _: () =
    assert!(ELECTION_TIMEOUT_MIN_MS >= 4 * HEARTBEAT_MS, "a few lost heartbeats must not trigger an election");
const _: () = assert!(ELECTION_TIMEOUT_MIN_MS < ELECTION_TIMEOUT_MAX_MS);

// ------------------------------------------------------------ lease and promotion

/// How long a quorum acknowledgement lets the leader serve.
pub const LEASE_MS: u64 = 160;
/// Allowance for clock-rate differences between nodes and scheduling delay.
pub const LEASE_DRIFT_MS: u64 = 40;
/// How long a newly elected leader waits before serving: the old leader's
/// lease bound, from the moment of election. That is exactly what safety
/// needs and no more: every voter of our quorum granted us its vote before we
/// saw ourselves elected, and after granting it refuses the old term, so the
/// newest old-leader heartbeat any of them acknowledged was sent before our
/// election; the old lease therefore ends before `elected + LEASE_MS` (plus
/// drift). It cannot be counted from the start of our campaign: a voter
/// restarted in between may have acknowledged the old leader after that.
pub const PROMOTE_WAIT_MS: u64 = LEASE_MS + LEASE_DRIFT_MS;
/// How often the leadership watch re-checks the lease when no metrics change
/// arrives.
pub const LEASE_CHECK_MS: u64 = 10;
/// Bound on the "apply everything committed" step of a promotion; on timeout
/// the promotion is retried from the start.
pub const PROMOTE_APPLY_TIMEOUT_MS: u64 = 5_000;

const _: () = assert!(LEASE_CHECK_MS * 5 <= LEASE_MS, "the lease is checked many times per period");
const _: () = assert!(LEASE_MS >= 4 * HEARTBEAT_MS, "a couple of late heartbeats must not drop the lease");
const _: () = assert!(
    LEASE_MS + LEASE_DRIFT_MS <= ELECTION_TIMEOUT_MAX_MS,
    "the lease must end before openraft's voters may elect another leader"
);

// ------------------------------------------------------------ peer transport

/// TCP connect timeout.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// Time allowed for the whole handshake, on both sides.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;
/// A server connection with no request for this long is closed (the leader
/// sends heartbeats every `HEARTBEAT_MS`, so only dead connections idle).
pub const PEER_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Wait before retrying an unreachable peer (openraft's default is 500 ms;
/// shorter so a restarted peer is picked up quickly).
pub const PEER_BACKOFF_MS: u64 = 100;

const _: () = assert!(PEER_IDLE_TIMEOUT_MS > HEARTBEAT_MS, "a live leader's connection never idles out");
const _: () = assert!(
    PEER_BACKOFF_MS < ELECTION_TIMEOUT_MIN_MS,
    "a leader retries a restarted peer before that peer's election timer can fire"
);

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
/// Silence from every leader before the witness may stand: two full election
/// timeouts plus a heartbeat, longer than any storage node needs to notice a
/// dead leader and campaign.
pub const RELAY_SILENCE_MS: u64 = 2 * ELECTION_TIMEOUT_MAX_MS + HEARTBEAT_MS;
/// A refusal of a lagging candidate counts as current for this long.
pub const RELAY_REFUSAL_RECENT_MS: u64 = 1_000;
/// Between two election triggers while standing.
pub const RELAY_RETRY_MS: u64 = 100;
/// Bound on waiting, as leader, for a storage node to match our log.
pub const RELAY_CATCHUP_MS: u64 = 2_000;
/// Bound on waiting for a storage node to take over once heartbeats stop.
pub const RELAY_HANDOVER_MS: u64 = 5_000;

const _: () = assert!(RELAY_SILENCE_MS > ELECTION_TIMEOUT_MAX_MS + HEARTBEAT_MS);
const _: () = assert!(RELAY_RETRY_MS >= 2 * RELAY_POLL_MS);
