//! The cluster view: what the leader knows about the whole cluster (term,
//! commit index, each member's replicated index, whether it holds its lease),
//! plus `key: value` lines the server adds (the VIP and who holds it). A
//! follower fetches it from the leader over the peer transport, so `status`
//! prints the same cluster section on every node; only the leader knows how
//! far each member lags.
//!
//! `ServerHooks` is what the server lends the peer transport: those extra
//! lines, and the handler for an admin command another node forwards to the
//! leader (`switchover` asked on a follower).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use openraft::{RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, PeerNode};

/// Extra lines a view may carry (the server adds two or three).
pub const VIEW_EXTRA_LINES_MAX: usize = 16;
/// Longest admin command line a peer may forward (and the server's admin
/// socket reads): an `exports reload` carries a whole export list.
pub const ADMIN_LINE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The leader's picture of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub leader: NodeId,
    pub term: u64,
    /// The leader's applied index: every entry up to it is committed.
    pub commit_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// Per member (the leader included): the last log index it has stored.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// The leader holds its quorum lease (it may serve).
    pub lease_held: bool,
    /// Lines from the server on the leader, in order.
    pub extra: Vec<(String, String)>,
}

impl ClusterView {
    /// How many entries each member other than the leader is behind.
    pub fn lag(&self) -> BTreeMap<NodeId, u64> {
        let last = self.last_log_index.unwrap_or(0);
        self.matched
            .iter()
            .filter(|(id, _)| **id != self.leader)
            .map(|(id, m)| (*id, last.saturating_sub(m.unwrap_or(0))))
            .collect()
    }
}

/// What the server adds to the view this node serves when it leads.
pub type ViewExtra = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// Runs an admin command line forwarded by another node; returns the answer.
pub type AdminForward = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// What the server lends the peer transport; cloning shares it.
#[derive(Clone, Default)]
pub struct ServerHooks {
    extra: Arc<OnceLock<ViewExtra>>,
    admin: Arc<OnceLock<AdminForward>>,
}

impl std::fmt::Debug for ServerHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHooks")
            .field("extra_set", &self.extra.get().is_some())
            .field("admin_set", &self.admin.get().is_some())
            .finish()
    }
}

impl ServerHooks {
    /// Set once, by the server after it starts; later calls are ignored.
    pub fn set_extra(&self, extra: ViewExtra) {
        let _ = self.extra.set(extra);
    }

    /// Set once, by the server after it starts; later calls are ignored.
    pub fn set_admin(&self, admin: AdminForward) {
        let _ = self.admin.set(admin);
    }

    /// Run a forwarded admin line; `None` if the server set no handler.
    pub async fn admin(&self, line: String) -> Option<String> {
        let handler = self.admin.get()?.clone();
        Some(handler(line).await)
    }

    /// This node's view if it is the leader, else `None`.
    pub fn local(&self, m: &RaftMetrics<NodeId, PeerNode>, lease_held: bool) -> Option<ClusterView> {
        if m.state != ServerState::Leader || m.current_leader != Some(m.id) {
            return None;
        }
        let mut matched: BTreeMap<NodeId, Option<u64>> =
            m.membership_config.membership().nodes().map(|(id, _)| (*id, None)).collect();
        if let Some(repl) = &m.replication {
            for (id, log) in repl.iter() {
                matched.insert(*id, log.map(|l| l.index));
            }
        }
        matched.insert(m.id, m.last_log_index);
        let mut extra = self.extra.get().map(|f| f()).unwrap_or_default();
        extra.truncate(VIEW_EXTRA_LINES_MAX);
        Some(ClusterView {
            leader: m.id,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            matched,
            lease_held,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_leaders_last_index() {
        let view = ClusterView {
            leader: 1,
            term: 3,
            commit_index: Some(10),
            last_log_index: Some(12),
            matched: BTreeMap::from([(1, Some(12)), (2, Some(12)), (3, Some(7)), (4, None)]),
            lease_held: true,
            extra: Vec::new(),
        };
        assert_eq!(view.lag(), BTreeMap::from([(2, 0), (3, 5), (4, 12)]));
    }
}
