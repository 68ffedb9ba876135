//! Classic lock recovery (issue 9 item 7: `[nlm] lock_recovery = "notify"`)
//! on a single node, where every start is a new active period: the NSM state
//! goes up by 2 (odd) across a restart, a fake client statd (registered in a
//! fake client portmapper at `Ports::callback_portmap`) gets SM_NOTIFY with
//! our mon_name and the new state, and in the grace period TEST and
//! non-reclaim LOCKs get DENIED_GRACE_PERIOD while reclaims are GRANTED,
//! until every host that held a lock reclaimed or released everything, or
//! the grace timer ran out. Transparent mode (the default) keeps the state,
//! sends no SM_NOTIFY and has no grace period.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hanfs_server::config::{LockRecovery, NlmConfig};
use hanfs_server::nlm::xdr::{from_bytes, to_bytes, NetObj, Nlm4Lock, Nlm4LockArgs, Nlm4Stats};
use hanfs_server::nsm::xdr::{SmName, SmStatRes, SmString, StatChge};

use crate::nfs3_ops::*;
use crate::nlm::*;
use crate::util::*;

const NSM_VERSION: u32 = 1;
const SM_STAT: u32 = 1;
const NLM_NM_LOCK: u32 = 22;
/// How long a test waits for an SM_NOTIFY, or for the grace period to end.
pub const RECOVERY_WAIT_MS: u64 = 30_000;
const POLL_MS: u64 = 50;

/// One SM_NOTIFY a fake statd got: the source address and its arguments.
pub type Notices = Arc<Mutex<Vec<(IpAddr, StatChge)>>>;

/// A fake client host's statd: a UDP socket, and a portmapper (UDP) that
/// maps NSM v1 to it; every SM_NOTIFY is recorded with its source address.
pub struct FakeStatd {
    host: FakeHost,
    notices: Notices,
}

impl FakeStatd {
    /// A fake statd on `ip`, its portmapper on `portmap_port` (0: any).
    pub fn start_at(ip: Ipv4Addr, portmap_port: u16) -> FakeStatd {
        let notices: Notices = Arc::new(Mutex::new(Vec::new()));
        let seen = notices.clone();
        let host = FakeHost::start(ip, portmap_port, NSM_PROG, move |from, proc_, args| {
            if proc_ == SM_NOTIFY {
                if let Ok(c) = from_bytes::<StatChge>(args) {
                    seen.lock().unwrap().push((from, c));
                }
            }
            Vec::new()
        });
        FakeStatd { host, notices }
    }

    pub fn portmap_port(&self) -> u16 {
        self.host.portmap_port
    }

    pub fn notices(&self) -> Vec<(IpAddr, StatChge)> {
        self.notices.lock().unwrap().clone()
    }

    /// Wait (bounded) until more than `n` notices arrived; all of them.
    pub fn wait_notices(&self, n: usize) -> Vec<(IpAddr, StatChge)> {
        let started = Instant::now();
        while self.notices().len() <= n && started.elapsed() < Duration::from_millis(RECOVERY_WAIT_MS) {
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let got = self.notices();
        assert!(got.len() > n, "no new SM_NOTIFY within {RECOVERY_WAIT_MS} ms (had {n})");
        got
    }
}

/// LOCK arguments with the reclaim flag set (a client re-taking its lock
/// after its statd heard the server restarted).
pub fn reclaim_args(alock: Nlm4Lock, exclusive: bool) -> Vec<u8> {
    let cookie = NetObj::new(vec![7; 4]).unwrap();
    to_bytes(&Nlm4LockArgs { cookie, block: false, exclusive, alock, reclaim: true, state: 3 })
}

/// The server's NSM state (SM_STAT) at `nsm_port` on 127.0.0.1.
pub fn nsm_state(nsm_port: u16) -> i32 {
    let args = to_bytes(&SmName { mon_name: SmString::new(b"client".to_vec()).unwrap() });
    from_bytes::<SmStatRes>(&body(rpc(nsm_port, true, NSM_PROG, NSM_VERSION, SM_STAT, &args)))
        .expect("sm_stat_res")
        .state
}

/// A single node with the NLM recovery `nlm`, its callbacks going to the
/// fake portmapper `callback_portmap`, and the handle of `/file`.
fn classic_server(label: &str, nlm: NlmConfig, callback_portmap: u16) -> (TempDir, TempDir, TestServer, Vec<u8>) {
    let export = tempdir(label);
    let state = tempdir(&format!("{label}-state"));
    let mut config = test_config(export.path(), RW_NO_SQUASH, state.path());
    config.ports.callback_portmap = callback_portmap;
    config.nlm = nlm;
    let (s, fh) = start_with_file(config);
    (export, state, s, fh)
}

fn notify_mode(grace_seconds: u64) -> NlmConfig {
    NlmConfig { lock_recovery: LockRecovery::Notify, grace_seconds, mon_name: None }
}

/// LOCK (non-blocking) until it is no longer refused for the grace period
/// (bounded); the final status. Every earlier answer must be the grace refusal.
fn lock_after_grace(port: u16, args: &[u8]) -> Nlm4Stats {
    let started = Instant::now();
    loop {
        let stat = nlm_stat(port, true, NLM_LOCK, args);
        if stat != Nlm4Stats::DeniedGracePeriod {
            return stat;
        }
        assert!(started.elapsed() < Duration::from_millis(RECOVERY_WAIT_MS), "the grace period did not end");
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

#[test]
fn classic_restart_notifies_and_grants_only_reclaims_until_every_holder_settled() {
    let statd = FakeStatd::start_at(Ipv4Addr::LOCALHOST, 0);
    // A long grace period: only the early lift can end it within the test.
    let (_e, _st, mut s, fh) = classic_server("classic-grace", notify_mode(3600), statd.portmap_port());
    let before = nsm_state(s.nsm_port);
    assert_eq!(before % 2, 1, "our NSM state is odd");
    // No lock was held when this node started: no grace period now.
    let a = lock(&fh, "hosta", 1, 0, 10);
    let c = lock(&fh, "hostc", 3, 100, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(c.clone(), true, false)), Nlm4Stats::Granted);
    assert!(statd.notices().is_empty(), "nobody held a lock at the first start");

    s.restart();
    let after = nsm_state(s.nsm_port);
    assert_eq!(after, before + 2, "a restart in notify mode bumps the NSM state by 2");
    let got = statd.wait_notices(0);
    let (from, notice) = &got[0];
    assert_eq!(notice.mon_name.as_bytes(), b"127.0.0.1", "mon_name: the listen address clients mounted");
    assert_eq!((notice.state, *from), (after, IpAddr::V4(Ipv4Addr::LOCALHOST)));

    // In grace: TEST and new locks (LOCK, NM_LOCK) are refused; UNLOCK is served.
    let b = lock(&fh, "hostb", 2, 50, 1);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b.clone(), true, false)), Nlm4Stats::DeniedGracePeriod);
    assert_eq!(
        nlm_stat(s.nlm_port, true, NLM_NM_LOCK, &lock_args(b.clone(), true, false)),
        Nlm4Stats::DeniedGracePeriod
    );
    assert_eq!(nlm_test(s.nlm_port, false, &test_args(b.clone(), true)).stat.stat(), Nlm4Stats::DeniedGracePeriod);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(b.clone())), Nlm4Stats::Granted);
    // hosta reclaims what the table kept: GRANTED. hostc has not: still in grace.
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &reclaim_args(a.clone(), true)), Nlm4Stats::Granted);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b.clone(), true, false)), Nlm4Stats::DeniedGracePeriod);
    // A reclaim that conflicts is decided by the table like any LOCK.
    let grab = lock(&fh, "hostb", 2, 0, 1);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &reclaim_args(grab, true)), Nlm4Stats::Denied);
    // hostc releases everything instead of reclaiming: the grace period ends early.
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(c)), Nlm4Stats::Granted);
    assert_eq!(lock_after_grace(s.nlm_port, &lock_args(b, true, false)), Nlm4Stats::Granted);
    let t = nlm_test(s.nlm_port, false, &test_args(lock(&fh, "hostd", 4, 0, 1), true));
    assert_eq!(t.stat.holder().map(|h| h.svid), Some(1), "hosta's lock survived the restart");
}

#[test]
fn classic_grace_ends_early_when_the_only_holder_reclaims() {
    let statd = FakeStatd::start_at(Ipv4Addr::LOCALHOST, 0);
    let (_e, _st, mut s, fh) = classic_server("classic-early", notify_mode(3600), statd.portmap_port());
    let a = lock(&fh, "hosta", 1, 0, 0);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), false, false)), Nlm4Stats::Granted);
    s.restart();
    let b = lock(&fh, "hostb", 2, 0, 0);
    assert_eq!(
        nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b.clone(), false, false)),
        Nlm4Stats::DeniedGracePeriod
    );
    assert_eq!(nlm_stat(s.nlm_port, true, NLM_LOCK, &reclaim_args(a, false)), Nlm4Stats::Granted);
    // The grace period is over at once: a shared lock next to hosta's shared one.
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b, false, false)), Nlm4Stats::Granted);
    statd.wait_notices(0);
}

#[test]
fn classic_grace_ends_at_its_timer() {
    let statd = FakeStatd::start_at(Ipv4Addr::LOCALHOST, 0);
    let (_e, _st, mut s, fh) = classic_server("classic-timer", notify_mode(1), statd.portmap_port());
    assert_eq!(
        nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(lock(&fh, "hosta", 1, 0, 10), true, false)),
        Nlm4Stats::Granted
    );
    s.restart();
    // hosta never reclaims; the timer ends the grace period, and its lock still holds.
    assert_eq!(
        lock_after_grace(s.nlm_port, &lock_args(lock(&fh, "hostb", 2, 20, 10), true, false)),
        Nlm4Stats::Granted
    );
    assert_eq!(
        nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(lock(&fh, "hostb", 2, 0, 1), true, false)),
        Nlm4Stats::Denied
    );
}

#[test]
fn transparent_restart_keeps_the_state_and_has_no_grace_period() {
    let statd = FakeStatd::start_at(Ipv4Addr::LOCALHOST, 0);
    let (_e, _st, mut s, fh) = classic_server("transparent", NlmConfig::default(), statd.portmap_port());
    let before = nsm_state(s.nsm_port);
    let a = lock(&fh, "hosta", 1, 0, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    s.restart();
    assert_eq!(nsm_state(s.nsm_port), before, "transparent mode never bumps the NSM state");
    let b = lock(&fh, "hostb", 2, 0, 1);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b.clone(), true, false)), Nlm4Stats::Denied);
    assert_eq!(nlm_test(s.nlm_port, false, &test_args(b, true)).stat.stat(), Nlm4Stats::Denied);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &reclaim_args(a, true)), Nlm4Stats::Granted);
    assert_eq!(
        nlm_test(s.nlm_port, true, &test_args(lock(&fh, "hostb", 2, 20, 1), true)).stat.stat(),
        Nlm4Stats::Granted
    );
    assert!(statd.notices().is_empty(), "transparent mode sends no SM_NOTIFY");
}
