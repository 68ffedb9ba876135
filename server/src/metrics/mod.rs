//! Observability: one `Metrics` registry per node, for its whole life (every
//! active period of a cluster member adds to the same counters).
//!
//! - The RPC layer counts into it on the hot path with atomics only, no lock
//!   and no allocation per call: each `Dispatcher` gets its programs'
//!   `ProgramStats` once when it is built (`Metrics::program`, get-or-create
//!   by program and version), then per call bumps the procedure's call count,
//!   its error count by `ErrorKind` and its latency histogram. Calls refused
//!   before a procedure is known are counted by `Refusal`. For NFSv3 a reply
//!   whose `nfsstat3` (the first word of every result body) is not `NFS3_OK`
//!   counts as an error of kind `Status`.
//! - The duplicate-request cache's hits, recoveries and dropped
//!   retransmissions, this node's promotions, and the transport's limits
//!   being hit (`ConnStats`) are counted here too.
//! - What only exists at scrape time — the commit path's counters, Raft
//!   role, term and each follower's lag, the lock table's size, the open
//!   connections, the transport's memory held and its limits — is read then: the node sets a `Sampler` (`set_sampler`)
//!   and attaches each active period's `RpcShared` (`attach`).
//!
//! `text` renders the Prometheus text format 0.0.4, `http` serves it on
//! `GET /metrics`, `nfsstat` renders `hanfs-server stats`.

pub mod http;
pub mod nfsstat;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use hanfs_raft::cluster::RaftNode;
use hanfs_raft::local::LocalCommit;
use hanfs_raft::stats::{CommitStats, Histogram, LATENCY_BOUNDS_US};
use hanfs_raft::status::RaftState;
use hanfs_raft::types::{NodeId, Role};
use hanfs_state::{Promotion, State};

use crate::rpc::shared::RpcShared;

/// Clients with their own `client` label in the connections gauge; the
/// rest are summed under `client="other"`.
pub const CONN_CLIENTS_MAX: usize = 16;
/// The NFS program and version whose results start with an `nfsstat3`.
pub(crate) const NFS_PROGRAM: u32 = 100_003;
const NFS_VERSION: u32 = 3;

/// Why a call failed, as counted per procedure.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// GARBAGE_ARGS: the arguments did not decode.
    GarbageArgs,
    /// SYSTEM_ERR.
    SystemErr,
    /// An NFSv3 reply whose status is not NFS3_OK.
    Status,
    /// Left unanswered (fenced, or a commit failed): the connection closed.
    Unanswered,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] =
        [ErrorKind::GarbageArgs, ErrorKind::SystemErr, ErrorKind::Status, ErrorKind::Unanswered];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::GarbageArgs => "garbage_args",
            ErrorKind::SystemErr => "system_err",
            ErrorKind::Status => "status",
            ErrorKind::Unanswered => "unanswered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A call refused before a procedure was found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a call, or a header that does not decode (dropped or GARBAGE_ARGS).
    BadHeader,
    /// RPC version other than 2.
    RpcMismatch,
    /// The credential was refused (AUTH_ERROR).
    Auth,
    /// No such program here.
    ProgUnavail,
    /// The program, but not that version.
    ProgMismatch,
    /// The program and version, but no such procedure.
    ProcUnavail,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::BadHeader,
        Refusal::RpcMismatch,
        Refusal::Auth,
        Refusal::ProgUnavail,
        Refusal::ProgMismatch,
        Refusal::ProcUnavail,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadHeader => "bad_header",
            Refusal::RpcMismatch => "rpc_mismatch",
            Refusal::Auth => "auth",
            Refusal::ProgUnavail => "prog_unavail",
            Refusal::ProgMismatch => "prog_mismatch",
            Refusal::ProcUnavail => "proc_unavail",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One procedure's counters.
pub struct ProcStats {
    pub name: &'static str,
    calls: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    latency_us: Histogram,
}

impl ProcStats {
    fn new(name: &'static str) -> ProcStats {
        ProcStats {
            name,
            calls: AtomicU64::new(0),
            errors: Default::default(),
            latency_us: Histogram::new(&LATENCY_BOUNDS_US),
        }
    }

    pub fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: ErrorKind) {
        if let Some(c) = self.errors.get(kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count the time since `started` in the latency histogram.
    pub fn took(&self, started: Instant) {
        self.latency_us.observe(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors.get(kind.index()).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency_us
    }
}

/// One program version's counters, one `ProcStats` per procedure number.
pub struct ProgramStats {
    pub name: &'static str,
    pub prog: u32,
    pub vers: u32,
    pub procs: Box<[ProcStats]>,
    /// Reply bodies start with a status word whose non-zero value is an error.
    status_first: bool,
}

impl ProgramStats {
    pub fn proc_(&self, index: usize) -> Option<&ProcStats> {
        self.procs.get(index)
    }

    /// Count `body` (a successful RPC reply's result) as an error of kind
    /// `Status` if this program's results start with a status that is not OK.
    pub fn check_status(&self, proc_: &ProcStats, body: &[u8]) {
        if self.status_first && body.first_chunk::<4>().is_some_and(|w| *w != [0; 4]) {
            proc_.failed(ErrorKind::Status);
        }
    }

    pub fn calls(&self) -> u64 {
        self.procs.iter().map(ProcStats::calls).fold(0, u64::saturating_add)
    }
}

/// The duplicate-request cache's counters.
#[derive(Default)]
pub struct DrcStats {
    /// Retransmissions answered from the cached reply.
    pub hits: AtomicU64,
    /// Retransmissions found as an intent only, answered by `recover`.
    pub recovered: AtomicU64,
    /// Retransmissions dropped while the original still runs.
    pub in_progress: AtomicU64,
}

/// The connection limits' counters (`rpc::limits`), over the node's life.
#[derive(Default)]
pub struct ConnStats {
    /// Connections refused at accept: their address had its limit open.
    pub refused_per_address: AtomicU64,
    /// Connections refused at accept: the node had its limit open, all busy.
    pub refused_total: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// Calls read but not started when their connection closed: dropped.
    pub calls_dropped: AtomicU64,
    /// Times a connection stopped starting calls (and reading) until its
    /// replies drained.
    pub reply_waits: AtomicU64,
    /// Times a connection waited for the node-wide request budget.
    pub request_waits: AtomicU64,
}

impl ConnStats {
    pub fn count(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }
}

/// The transport's gauges and limits at scrape time.
#[derive(Clone, Debug, Default)]
pub struct TransportSample {
    pub connections: u64,
    pub reply_bytes: u64,
    pub request_bytes: u64,
    /// Each limit by name (`rpc::limits::Limits::named`).
    pub limits: Vec<(&'static str, u64)>,
}

/// The node's whole registry (see the module doc).
pub struct Metrics {
    programs: Mutex<Vec<Arc<ProgramStats>>>,
    refused: [AtomicU64; Refusal::ALL.len()],
    pub drc: DrcStats,
    pub conn: ConnStats,
    promotions: AtomicU64,
    last_promotion_ms: AtomicU64,
    /// The RpcShared of the current (or last) active period.
    serving: Mutex<Weak<RpcShared>>,
    sampler: OnceLock<Sampler>,
}

/// Reads what exists only at scrape time (see `NodeSample`).
pub type Sampler = Arc<dyn Fn() -> NodeSample + Send + Sync>;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            programs: Mutex::new(Vec::new()),
            refused: Default::default(),
            drc: DrcStats::default(),
            conn: ConnStats::default(),
            promotions: AtomicU64::new(0),
            last_promotion_ms: AtomicU64::new(0),
            serving: Mutex::new(Weak::new()),
            sampler: OnceLock::new(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of program `prog` version `vers` (created on first use
    /// with one slot per name in `procs`). Not for the hot path: called when
    /// a dispatcher is built.
    pub fn program(&self, name: &'static str, prog: u32, vers: u32, procs: &[&'static str]) -> Arc<ProgramStats> {
        let mut programs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = programs.iter().find(|p| p.prog == prog && p.vers == vers && p.procs.len() == procs.len()) {
            return p.clone();
        }
        let stats = Arc::new(ProgramStats {
            name,
            prog,
            vers,
            procs: procs.iter().map(|n| ProcStats::new(n)).collect(),
            status_first: prog == NFS_PROGRAM && vers == NFS_VERSION,
        });
        programs.push(stats.clone());
        programs.sort_by_key(|p| (p.prog, p.vers));
        stats
    }

    /// Every program counted so far, by program number and version.
    pub fn programs(&self) -> Vec<Arc<ProgramStats>> {
        self.programs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn refuse(&self, why: Refusal) {
        if let Some(c) = self.refused.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused.get(why.index()).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// This node started serving; the promotion took `took_ms`.
    pub fn promoted(&self, took_ms: u64) {
        self.promotions.fetch_add(1, Ordering::Relaxed);
        self.last_promotion_ms.store(took_ms, Ordering::Relaxed);
    }

    /// Promotions of this node so far, and how long the last one took (ms).
    pub fn promotions(&self) -> (u64, Option<u64>) {
        let n = self.promotions.load(Ordering::Relaxed);
        (n, (n > 0).then(|| self.last_promotion_ms.load(Ordering::Relaxed)))
    }

    /// The active period's RPC state: its open connections are counted at
    /// scrape time (until the next period attaches its own).
    pub fn attach(&self, rpc: &Arc<RpcShared>) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(rpc);
    }

    /// Set once by the node; later calls are ignored.
    pub fn set_sampler(&self, sampler: Sampler) {
        let _ = self.sampler.set(sampler);
    }

    /// What the node reports now (empty if it set no sampler).
    pub fn sample(&self) -> NodeSample {
        self.sampler.get().map(|s| s()).unwrap_or_default()
    }

    /// The active period's open connections, memory held and limits (`None`
    /// before the first period).
    pub fn transport(&self) -> Option<TransportSample> {
        let rpc = self.serving.lock().unwrap_or_else(|p| p.into_inner()).upgrade()?;
        let as_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        Some(TransportSample {
            connections: as_u64(rpc.conns.count()),
            reply_bytes: as_u64(rpc.budgets.reply_bytes()),
            request_bytes: as_u64(rpc.budgets.request_bytes()),
            limits: rpc.conns.limits().named().to_vec(),
        })
    }

    /// Open connections per client address, the `CONN_CLIENTS_MAX` clients
    /// with the most first, then the rest summed as `"other"`.
    pub fn connections(&self) -> Vec<(String, u64)> {
        let rpc = self.serving.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
        let Some(rpc) = rpc else { return Vec::new() };
        top_clients(rpc.conns.peers().iter().map(|p| p.ip()), CONN_CLIENTS_MAX)
    }
}

/// Count `ips` per address: the `max` most frequent (ties by address), then
/// everyone else as `"other"` (only if there is anyone else).
fn top_clients(ips: impl Iterator<Item = std::net::IpAddr>, max: usize) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<std::net::IpAddr, u64> = BTreeMap::new();
    for ip in ips {
        *counts.entry(ip).or_default() += 1;
    }
    let mut ranked: Vec<(std::net::IpAddr, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest: u64 = ranked.iter().skip(max).map(|(_, n)| n).sum();
    let mut out: Vec<(String, u64)> = ranked.into_iter().take(max).map(|(ip, n)| (ip.to_string(), n)).collect();
    if rest > 0 {
        out.push(("other".to_string(), rest));
    }
    out
}

/// This node's Raft, as `/metrics` shows it.
#[derive(Clone, Debug)]
pub struct RaftSample {
    pub node_id: NodeId,
    pub role: Role,
    pub state: RaftState,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub applied_index: Option<u64>,
    /// On the leader: entries each other member is behind.
    pub lag: Option<BTreeMap<NodeId, u64>>,
}

/// The replicated lock table's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockCounts {
    pub held: u64,
    pub waiting: u64,
    /// Granted waiters whose GRANTED callback is not yet acknowledged.
    pub granting: u64,
}

/// What exists only at scrape time.
#[derive(Clone, Default)]
pub struct NodeSample {
    /// This node serves NFS now.
    pub serving: bool,
    pub commit: Option<Arc<CommitStats>>,
    /// `None` for a single node.
    pub raft: Option<RaftSample>,
    pub locks: LockCounts,
    /// The last promotion recorded in the replicated state (any node's).
    pub last_failover: Option<Promotion>,
}

/// The lock counts and last failover from the applied state.
fn from_state(state: &State, sample: &mut NodeSample) {
    let table = state.nlm().locks();
    sample.locks = LockCounts {
        held: table.lock_count(),
        waiting: table.waiter_count(),
        granting: table.pending_grants().count() as u64,
    };
    sample.last_failover = state.last_promotion();
}

/// A single node's sample: it always serves.
pub fn single_sample(local: &LocalCommit) -> NodeSample {
    let mut sample = NodeSample { serving: true, commit: Some(local.commit_stats()), ..NodeSample::default() };
    let state = hanfs_raft::commit::Commit::state(local);
    from_state(&state.read().unwrap_or_else(|p| p.into_inner()), &mut sample);
    sample
}

/// A cluster member's sample; `serving`: its listeners are open.
pub fn cluster_sample(raft: &RaftNode, serving: bool) -> NodeSample {
    let status = raft.status();
    let mut sample = NodeSample {
        serving,
        commit: Some(raft.commit.commit_stats()),
        raft: Some(RaftSample {
            node_id: raft.id,
            role: raft.role,
            state: status.state,
            term: status.current_term,
            leader: status.current_leader,
            applied_index: status.last_applied_index,
            lag: raft.replication_lag(),
        }),
        ..NodeSample::default()
    };
    let state = hanfs_raft::commit::Commit::state(raft.commit.as_ref());
    from_state(&state.read().unwrap_or_else(|p| p.into_inner()), &mut sample);
    sample
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn programs_are_shared_by_program_and_version() {
        let m = Metrics::default();
        let a = m.program("nfs", 100_003, 3, &["NULL", "GETATTR"]);
        let b = m.program("nfs", 100_003, 3, &["NULL", "GETATTR"]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = m.program("mount", 100_005, 3, &["NULL"]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(m.programs().len(), 2);
    }

    #[test]
    fn nfs3_status_counts_as_an_error_only_for_nfs3() {
        let m = Metrics::default();
        let nfs = m.program("nfs", 100_003, 3, &["NULL", "GETATTR"]);
        let getattr = nfs.proc_(1).unwrap();
        nfs.check_status(getattr, &[0, 0, 0, 0, 1]);
        nfs.check_status(getattr, &[0, 0, 0, 2]);
        nfs.check_status(nfs.proc_(0).unwrap(), &[]);
        assert_eq!(getattr.errors(ErrorKind::Status), 1);
        let mount = m.program("mount", 100_005, 3, &["NULL", "MNT"]);
        let mnt = mount.proc_(1).unwrap();
        mount.check_status(mnt, &[0, 0, 0, 13]);
        assert_eq!(mnt.errors(ErrorKind::Status), 0);
    }

    #[test]
    fn connections_keep_the_top_clients_and_sum_the_rest() {
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let ips = [ip(1), ip(2), ip(2), ip(3), ip(3), ip(3), ip(4)];
        assert_eq!(
            top_clients(ips.into_iter(), 2),
            [("10.0.0.3".to_string(), 3), ("10.0.0.2".to_string(), 2), ("other".to_string(), 2)]
        );
        assert_eq!(top_clients([ip(1)].into_iter(), 2), [("10.0.0.1".to_string(), 1)]);
    }
}
