//! Lock recovery across a kill -9 of the active in a real three-process
//! cluster (issue 9 items 5, 6 and 7). Classic mode (`[nlm] lock_recovery =
//! "notify"` in every node's config): the new active's NSM state is the old
//! one + 2 (replicated), a fake client statd on 127.0.0.5 (found through its
//! fake portmapper at the harness's `callback_portmap`) gets SM_NOTIFY from
//! the service address, naming it, with that state; a non-reclaim LOCK and a
//! TEST get DENIED_GRACE_PERIOD until the only holder reclaims, after which
//! its lock is enforced as before. Transparent mode (the default): the state
//! is unchanged, no SM_NOTIFY is sent, and no reply is DENIED_GRACE_PERIOD.

use std::net::{IpAddr, Ipv4Addr};

use hanfs_server::nlm::xdr::{from_bytes, to_bytes, Nlm4Stats, Nlm4TestRes};
use hanfs_server::nsm::xdr::{SmName, SmStatRes, SmString};

use super::harness::*;
use crate::nfs3_ops::*;
use crate::nlm::*;
use crate::nlm_classic::*;
use crate::util::*;

/// Wait for one UDP answer from the service address.
const ANSWER_WAIT_MS: u64 = 5_000;
/// The lock holder (with the fake statd) and another client host.
const HOST_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const HOST_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Classic mode with a grace period only the early lift ends within a test.
const CLASSIC: &str = "\n[nlm]\nlock_recovery = \"notify\"\ngrace_seconds = 600\n";

fn file_handle(c: &Cluster, name: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut conn = c.connect().await;
        let root = conn.root_nfs_fh3();
        create(&mut conn, &root, name).await.expect("CREATE").data.as_ref().to_vec()
    })
}

/// One call from `src` to the service address; the reply's result body.
fn call_body(c: &Cluster, src: Ipv4Addr, port: u16, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let msg = call_msg(rand_xid(), prog, vers, proc_, (1, &auth_sys_body(0, 0, &[])), args);
    let reply = udp_exchange(src, c.service, port, &msg, ANSWER_WAIT_MS)
        .unwrap_or_else(|| panic!("no answer to prog {prog} proc {proc_}"));
    body(parse_reply(&reply))
}

fn rand_xid() -> u32 {
    static XID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x4367_0000);
    XID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn lock_call(c: &Cluster, src: Ipv4Addr, args: &[u8]) -> Nlm4Stats {
    res_stat_of(&call_body(c, src, c.ports.nlm, NLM_PROG, 4, NLM_LOCK, args))
}

fn res_stat_of(body: &[u8]) -> Nlm4Stats {
    from_bytes::<hanfs_server::nlm::xdr::Nlm4Res>(body).expect("nlm4_res").stat
}

fn test_call(c: &Cluster, src: Ipv4Addr, args: &[u8]) -> Nlm4TestRes {
    from_bytes(&call_body(c, src, c.ports.nlm, NLM_PROG, 4, NLM_TEST, args)).expect("nlm4_testres")
}

/// The active's NSM state (SM_STAT through the service address).
fn service_nsm_state(c: &Cluster) -> i32 {
    let args = to_bytes(&SmName { mon_name: SmString::new(b"client".to_vec()).unwrap() });
    from_bytes::<SmStatRes>(&call_body(c, HOST_B, c.ports.nsm, NSM_PROG, 1, 1, &args)).expect("sm_stat_res").state
}

#[test]
fn cluster_classic_failover_notifies_bumps_the_state_and_grants_reclaims() {
    let mut c = Cluster::start_with_config("nlm-classic", CLASSIC);
    let statd = FakeStatd::start_at(HOST_A, c.ports.callback_portmap);
    let fh = file_handle(&c, "classic");
    let before = service_nsm_state(&c);
    assert_eq!(before % 2, 1);
    let a = lock(&fh, "hosta", 1, 0, 100);
    let b = lock(&fh, "hostb", 2, 50, 10);
    // Nobody held a lock at the first promotion: no grace period.
    assert_eq!(lock_call(&c, HOST_A, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);

    let first = c.wait_serving(&[]);
    c.kill9(first);
    let second = c.wait_serving(&[first]);
    assert_ne!(first, second);
    let after = service_nsm_state(&c);
    assert_eq!(after, before + 2, "the new active's NSM state is the old one + 2");
    let notices = statd.wait_notices(0);
    let (from, notice) = notices.last().expect("a notice");
    assert_eq!(*from, IpAddr::V4(c.service), "SM_NOTIFY comes from the service address");
    assert_eq!(notice.mon_name.as_bytes(), c.service.to_string().as_bytes(), "mon_name: the address clients mounted");
    assert_eq!(notice.state, after);

    // Grace: only reclaims.
    assert_eq!(lock_call(&c, HOST_B, &lock_args(b.clone(), true, false)), Nlm4Stats::DeniedGracePeriod);
    assert_eq!(test_call(&c, HOST_B, &test_args(b.clone(), true)).stat.stat(), Nlm4Stats::DeniedGracePeriod);
    assert_eq!(lock_call(&c, HOST_A, &reclaim_args(a, true)), Nlm4Stats::Granted);
    // The only holder reclaimed: the grace period is over, and A's lock holds.
    assert_eq!(lock_call(&c, HOST_B, &lock_args(b.clone(), true, false)), Nlm4Stats::Denied);
    let t = test_call(&c, HOST_B, &test_args(b, true));
    assert_eq!(t.stat.holder().map(|h| h.svid), Some(1));
}

#[test]
fn cluster_transparent_failover_keeps_the_state_and_never_answers_grace() {
    let mut c = Cluster::start("nlm-transparent");
    let statd = FakeStatd::start_at(HOST_A, c.ports.callback_portmap);
    let fh = file_handle(&c, "transparent");
    let before = service_nsm_state(&c);
    let a = lock(&fh, "hosta", 1, 0, 100);
    let b = lock(&fh, "hostb", 2, 50, 10);
    assert_eq!(lock_call(&c, HOST_A, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);

    let first = c.wait_serving(&[]);
    c.kill9(first);
    c.wait_serving(&[first]);
    assert_eq!(service_nsm_state(&c), before, "transparent failover keeps the NSM state");
    let mut replies = vec![
        lock_call(&c, HOST_B, &lock_args(b.clone(), true, false)),
        test_call(&c, HOST_B, &test_args(b.clone(), true)).stat.stat(),
        lock_call(&c, HOST_A, &reclaim_args(a.clone(), true)),
        lock_call(&c, HOST_A, &lock_args(a, true, false)),
        lock_call(&c, HOST_B, &lock_args(lock(&fh, "hostb", 2, 200, 10), true, false)),
    ];
    assert_eq!(
        replies,
        vec![Nlm4Stats::Denied, Nlm4Stats::Denied, Nlm4Stats::Granted, Nlm4Stats::Granted, Nlm4Stats::Granted]
    );
    replies.retain(|s| *s == Nlm4Stats::DeniedGracePeriod);
    assert!(replies.is_empty());
    assert!(statd.notices().is_empty(), "transparent failover sends no SM_NOTIFY");
}
