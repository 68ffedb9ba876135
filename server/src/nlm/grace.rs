//! Classic lock recovery (`[nlm] lock_recovery = "notify"`): what knfsd does
//! after a restart, for clients and admins that expect it. Transparent
//! failover (the default) uses none of this: `Recovery::begin` returns a
//! `Grace` that is never in grace, the NSM state is not touched and no
//! SM_NOTIFY is sent.
//!
//! In notify mode, each active period (`Serving::open`, so every promotion
//! and every start of a single node):
//! 1. commits `NlmCommand::BumpNsmState` (the replicated NSM state goes up by
//!    2 and stays odd) before the listeners open, so STAT and the SM_NOTIFY
//!    carry the new number;
//! 2. starts a grace period of `grace_seconds`, local to this active period
//!    (not replicated: the next active starts its own). While it lasts, a
//!    LOCK (LOCK_MSG, NM_LOCK) with reclaim=false and every TEST answer
//!    NLM4_DENIED_GRACE_PERIOD, as Linux `fs/lockd/svc4proc.c`; a reclaim is
//!    decided by the table as usual (the table survived, so the owner's own
//!    lock is GRANTED again). UNLOCK and CANCEL are served (Linux refuses
//!    them in grace too; here they only release what the intact table
//!    holds, so the client need not wait). SHARE is not checked;
//! 3. once the listeners are open, sends SM_NOTIFY (`nsm::notify`) to every
//!    lock host's address (`NlmState::hosts`), from the address clients call,
//!    naming us `ServerConfig::nsm_mon_name`.
//!
//! The grace period ends at its deadline (reason `timer`), or early once
//! every host that held a lock at promotion has sent a reclaim LOCK
//! (`Grace::note_reclaim`) or holds no lock any more (UNLOCK, FREE_ALL,
//! its own reboot notice; `Grace::note_free`, checked by the grace task every
//! `GRACE_TICK_MS`). One reclaim per host is enough: its other locks are
//! still in the table, so nothing can be granted over them. With no lock
//! held at promotion the grace period ends at once. Start and end are
//! logged at info level with the reason.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hanfs_raft::commit::{Commit, CommitError};
use hanfs_state::{Command, NlmCommand, Outcome};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::callback::CallbackConfig;
use crate::config::{LockRecovery, ServerConfig};
use crate::nsm::notify::{self, Notice};

/// How often the grace task checks whether the hosts still in question hold
/// anything, and whether the deadline passed.
pub const GRACE_TICK_MS: u64 = 250;

/// The grace period of one active period; cheap to clone (handlers hold one).
#[derive(Clone, Default)]
pub struct Grace {
    /// `None`: transparent mode, never in grace.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    deadline: Instant,
    over: AtomicBool,
    /// Hosts that held locks at promotion and have neither reclaimed nor
    /// released everything yet.
    outstanding: Mutex<BTreeSet<String>>,
}

impl Grace {
    /// No grace period (transparent mode).
    pub fn none() -> Grace {
        Grace { inner: None }
    }

    /// A grace period of `length`, waiting for `outstanding` to reclaim.
    pub fn start(length: Duration, outstanding: BTreeSet<String>) -> Grace {
        let hosts = outstanding.len();
        let inner = Inner {
            deadline: Instant::now() + length,
            over: AtomicBool::new(false),
            outstanding: Mutex::new(outstanding),
        };
        let grace = Grace { inner: Some(Arc::new(inner)) };
        tracing::info!(grace_seconds = length.as_secs(), hosts, "nlm grace period started: only reclaims are granted");
        if hosts == 0 {
            grace.end("no host holds a lock");
        }
        grace
    }

    /// Are non-reclaim LOCKs and TESTs refused (NLM4_DENIED_GRACE_PERIOD)?
    pub fn in_grace(&self) -> bool {
        let Some(inner) = &self.inner else { return false };
        if inner.over.load(Ordering::Acquire) {
            return false;
        }
        if Instant::now() >= inner.deadline {
            self.end("timer");
            return false;
        }
        true
    }

    /// `host` sent a reclaim LOCK.
    pub fn note_reclaim(&self, host: &str) {
        self.settled(host, "every host reclaimed or holds nothing");
    }

    /// `host` holds no lock any more (nothing left to reclaim).
    pub fn note_free(&self, host: &str) {
        self.settled(host, "every host reclaimed or holds nothing");
    }

    /// The hosts still waited for.
    pub fn outstanding(&self) -> Vec<String> {
        match &self.inner {
            Some(inner) => lock(&inner.outstanding).iter().cloned().collect(),
            None => Vec::new(),
        }
    }

    fn settled(&self, host: &str, reason: &'static str) {
        let Some(inner) = &self.inner else { return };
        if inner.over.load(Ordering::Acquire) {
            return;
        }
        let now_empty = {
            let mut outstanding = lock(&inner.outstanding);
            outstanding.remove(host) && outstanding.is_empty()
        };
        if now_empty {
            self.end(reason);
        }
    }

    /// End the grace period (once; later calls do nothing).
    fn end(&self, reason: &'static str) {
        let Some(inner) = &self.inner else { return };
        if !inner.over.swap(true, Ordering::AcqRel) {
            tracing::info!(reason, "nlm grace period over: every LOCK is served");
        }
    }
}

fn lock(m: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Classic recovery of one active period: its grace period, and the grace
/// and SM_NOTIFY tasks. Empty in transparent mode.
pub struct Recovery {
    grace: Grace,
    /// The SM_NOTIFY to send once the listeners are open.
    notice: Option<(Notice, Vec<IpAddr>)>,
    commit: Arc<dyn Commit>,
    callback: CallbackConfig,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Recovery {
    /// Before the listeners open: in notify mode commit `BumpNsmState` and
    /// start the grace period (steps 1 and 2 of the module doc).
    pub async fn begin(
        commit: Arc<dyn Commit>,
        config: &ServerConfig,
        callback: CallbackConfig,
    ) -> Result<Recovery, CommitError> {
        let (stop, _) = watch::channel(false);
        let mut recovery = Recovery { grace: Grace::none(), notice: None, commit, callback, stop, tasks: Vec::new() };
        if config.nlm.lock_recovery == LockRecovery::Transparent {
            return Ok(recovery);
        }
        let outcomes = recovery.commit.commit(vec![Command::Nlm(NlmCommand::BumpNsmState)]).await?;
        let (state, holders, addrs) = {
            let shared = recovery.commit.state();
            let guard = shared.read().unwrap_or_else(|p| p.into_inner());
            let nlm = guard.nlm();
            let holders: BTreeSet<String> =
                nlm.locks().iter_locks().map(|(_, owner, _, _)| owner.caller_name.clone()).collect();
            let addrs: BTreeSet<IpAddr> = nlm.hosts().iter().filter_map(|(_, a)| a.parse().ok()).collect();
            (nlm.nsm_state(), holders, addrs)
        };
        if let Some(Outcome::NsmState(bumped)) = outcomes.first() {
            tracing::info!(nsm_state = bumped, "nlm classic recovery: NSM state bumped");
        }
        recovery.grace = Grace::start(Duration::from_secs(config.nlm.grace_seconds), holders);
        let notice = Notice { mon_name: config.nsm_mon_name(), state };
        recovery.notice = Some((notice, addrs.into_iter().collect()));
        Ok(recovery)
    }

    /// The grace period the NLM handlers check.
    pub fn grace(&self) -> Grace {
        self.grace.clone()
    }

    /// The listeners are open: send the SM_NOTIFYs and watch the grace period.
    pub fn listening(&mut self) {
        let Some((notice, addrs)) = self.notice.take() else { return };
        let stop = self.stop.subscribe();
        let config = Arc::new(self.callback.clone());
        self.tasks.push(tokio::spawn(notify::notify_all(config, notice, addrs, stop)));
        self.tasks.push(tokio::spawn(watch_grace(self.grace.clone(), self.commit.clone(), self.stop.subscribe())));
    }

    /// Demotion: stop both tasks (unsent notices are abandoned).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Until the grace period is over: every `GRACE_TICK_MS`, settle the hosts
/// that hold no lock any more, and end it at its deadline.
async fn watch_grace(grace: Grace, commit: Arc<dyn Commit>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(GRACE_TICK_MS));
    while grace.in_grace() && !*stop.borrow() {
        let free: Vec<String> = {
            let shared = commit.state();
            let guard = shared.read().unwrap_or_else(|p| p.into_inner());
            grace.outstanding().into_iter().filter(|h| guard.nlm().locks().host_count(h) == 0).collect()
        };
        for host in free {
            grace.note_free(&host);
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn transparent_is_never_in_grace() {
        let g = Grace::none();
        assert!(!g.in_grace());
        g.note_reclaim("a");
        assert!(!g.in_grace());
        assert!(!Grace::default().in_grace());
    }

    #[tokio::test]
    async fn ends_when_every_host_reclaimed_or_freed() {
        let g = Grace::start(Duration::from_secs(3600), hosts(&["a", "b"]));
        assert!(g.in_grace());
        g.note_reclaim("a");
        g.note_reclaim("a");
        g.note_reclaim("stranger");
        assert!(g.in_grace());
        assert_eq!(g.outstanding(), vec!["b".to_string()]);
        g.note_free("b");
        assert!(!g.in_grace());
    }

    #[tokio::test]
    async fn no_holders_means_no_grace() {
        assert!(!Grace::start(Duration::from_secs(3600), BTreeSet::new()).in_grace());
    }

    #[tokio::test]
    async fn ends_at_the_deadline() {
        let g = Grace::start(Duration::ZERO, hosts(&["a"]));
        assert!(!g.in_grace(), "the deadline has passed");
        assert!(!g.clone().in_grace());
        assert!(Grace::start(Duration::from_secs(3600), hosts(&["a"])).in_grace());
    }
}
