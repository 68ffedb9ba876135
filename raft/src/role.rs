//! What the server's waits on Raft need of the metrics, published only when
//! it changes: this node's role, term and leader, and why Raft stopped by
//! itself, if it did (`RoleView`). openraft updates its metrics several times
//! per log entry; waking the server's runtime for each (a thread wake-up and
//! a context switch on another runtime) cost a follower about seven per
//! entry. `spawn_role_watch` runs on Raft's runtime and passes on only the
//! changes of the view; `status::RaftWatch` and `RaftNode::fatal_error` wait
//! on it.

use openraft::error::Fatal;
use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::types::{NodeId, PeerNode};

/// The part of the metrics the server waits on: this node's role, term and
/// leader, and why Raft stopped by itself, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleView {
    id: NodeId,
    state: ServerState,
    term: u64,
    leader: Option<NodeId>,
    pub(crate) fatal: Option<String>,
}

impl RoleView {
    fn of(m: &RaftMetrics<NodeId, PeerNode>) -> RoleView {
        RoleView { id: m.id, state: m.state, term: m.current_term, leader: m.current_leader, fatal: fatal_of(m) }
    }

    pub(crate) fn elected_term(&self) -> Option<u64> {
        (self.state == ServerState::Leader && self.leader == Some(self.id)).then_some(self.term)
    }
}

/// Publish `RoleView` from `metrics`, on the caller's runtime (Raft's), only
/// when it changes; ends (closing the watch) once the metrics close, after
/// publishing their last state (a fatal error's reason).
pub(crate) fn spawn_role_watch(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, PeerNode>>,
) -> (watch::Receiver<RoleView>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(RoleView::of(&metrics.borrow_and_update()));
    let task = tokio::spawn(async move {
        loop {
            let open = metrics.changed().await.is_ok();
            let view = RoleView::of(&metrics.borrow_and_update());
            tx.send_if_modified(|old| {
                let changed = *old != view;
                *old = view;
                changed
            });
            if !open {
                return;
            }
        }
    });
    (rx, task)
}

/// The fatal error in `m`, if Raft stopped on one (not a requested stop).
fn fatal_of(m: &RaftMetrics<NodeId, PeerNode>) -> Option<String> {
    match &m.running_state {
        Ok(()) | Err(Fatal::Stopped) => None,
        Err(error) => Some(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Metrics = RaftMetrics<NodeId, PeerNode>;

    async fn changes_within(rx: &mut watch::Receiver<RoleView>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), rx.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn only_role_term_leader_and_fatal_changes_are_passed_on() {
        let (tx, metrics) = watch::channel(Metrics::new_initial(1));
        let (mut rx, task) = spawn_role_watch(metrics);
        tx.send_modify(|m| m.last_log_index = Some(7));
        assert!(!changes_within(&mut rx).await, "a log append is not a role change");
        tx.send_modify(|m| {
            m.state = ServerState::Leader;
            m.current_term = 3;
            m.current_leader = Some(1);
        });
        assert!(changes_within(&mut rx).await);
        assert_eq!(rx.borrow_and_update().elected_term(), Some(3));
        tx.send_modify(|m| m.running_state = Err(Fatal::Panicked));
        drop(tx);
        task.await.expect("the watch task ends with the metrics");
        assert!(
            rx.borrow_and_update().fatal.is_some(),
            "the last metrics' fatal error is published before the watch closes"
        );
        assert!(rx.changed().await.is_err(), "then the watch closes");
    }
}
