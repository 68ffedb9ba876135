//! Read-only counters of the commit path, for the server's `/metrics`:
//! `Histogram` (fixed buckets, atomics only: `observe` takes no lock and
//! allocates nothing), and `CommitStats`, which the group-commit batcher
//! (`crate::batch`) fills for `LocalCommit` and `RaftCommit` alike — each
//! caller's commit latency (queue wait and durable write), the callers and
//! commands folded into each entry, and failed commits. On a cluster member,
//! `RaftNode::replication_lag` reads how far each follower is behind (the
//! leader only knows).
//!
//! Nothing here changes what is committed or when.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::ServerState;

use crate::cluster::RaftNode;
use crate::types::NodeId;

/// Upper bounds, in microseconds, of the latency buckets (commit latency
/// here, per-procedure latency in the server): 50 µs to 10 s.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
/// Upper bounds of the callers-per-entry buckets of group commit.
pub const BATCH_CALLERS_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed bucket bounds: one atomic per bucket and the sum.
pub struct Histogram {
    bounds: &'static [u64],
    /// Non-cumulative counts; the last one is above every bound (+Inf).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A copy of a `Histogram`: cumulative counts per bound, then the total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// `cumulative[i]`: observations `<= bounds[i]`; one entry per bound.
    pub cumulative: Vec<u64>,
    /// Every observation (the +Inf bucket).
    pub count: u64,
    pub sum: u64,
}

impl Histogram {
    /// `bounds` must be ascending.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum: AtomicU64::new(0) }
    }

    /// Count one observation of `value` (in the unit of the bounds).
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now. Each bucket is read once, so the cumulative counts
    /// never decrease and `count` is the last of them plus +Inf.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut total = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            total = total.saturating_add(bucket.load(Ordering::Relaxed));
            if i < self.bounds.len() {
                cumulative.push(total);
            }
        }
        HistogramSnapshot { bounds: self.bounds, cumulative, count: total, sum: self.sum.load(Ordering::Relaxed) }
    }
}

/// What the group-commit path counts (see the module doc).
pub struct CommitStats {
    /// Per caller of `commit`: from submitting to the answer, in µs.
    pub latency_us: Histogram,
    /// Callers whose commands went into one entry.
    pub batch_callers: Histogram,
    /// Commands committed (over all entries).
    pub commands: AtomicU64,
    /// Commits answered with an error (refused, rejected, failed write).
    pub failed: AtomicU64,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            latency_us: Histogram::new(&LATENCY_BOUNDS_US),
            batch_callers: Histogram::new(&BATCH_CALLERS_BOUNDS),
            commands: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl RaftNode {
    /// On the Raft leader: how many entries each other member is behind the
    /// leader's last log index. `None` on any other node.
    pub fn replication_lag(&self) -> Option<BTreeMap<NodeId, u64>> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader || m.current_leader != Some(m.id) {
            return None;
        }
        let last = m.last_log_index.unwrap_or(0);
        let mut lag: BTreeMap<NodeId, u64> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, _)| (*id, last))
            .collect();
        if let Some(repl) = &m.replication {
            for (id, log) in repl.iter().filter(|(id, _)| **id != m.id) {
                lag.insert(*id, last.saturating_sub(log.map_or(0, |l| l.index)));
            }
        }
        Some(lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds_and_cumulative() {
        static BOUNDS: [u64; 3] = [1, 10, 100];
        let h = Histogram::new(&BOUNDS);
        for v in [0, 1, 2, 10, 11, 100, 101, 5_000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, [2, 4, 6]);
        assert_eq!(s.count, 8);
        assert_eq!(s.sum, 5_225);
    }
}
