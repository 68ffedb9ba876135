//! NLM across a real three-process cluster (issue 9, DESIGN.md invariants 3,
//! 4 and 6): concurrent conflicting LOCKs from two owners, sent to the active
//! at once, are never both granted; a lock survives a kill -9 of the active
//! (the new active denies a conflicting owner, with no grace period); an
//! SM_NOTIFY release and the grant of the waiter behind it are replicated
//! (they hold on the next active too); a LOCK retransmitted after the
//! failover gets its original reply from the replicated DRC; and a waiter
//! queued before a failover gets its GRANTED_MSG from the new active, which
//! re-sends an unacknowledged grant after the next failover (a fake client
//! lock manager on 127.0.0.2, found at the harness's `callback_portmap`).

use std::net::Ipv4Addr;

use hanfs_server::nlm::xdr::{to_bytes, Nlm4Stats};
use hanfs_server::nsm::xdr::{SmString, StatChge};

use super::harness::*;
use crate::nfs3_ops::*;
use crate::nlm::*;
use crate::util::*;

/// Rounds of the concurrent-LOCK race.
const RACE_ROUNDS: u32 = 30;
/// Wait for one UDP answer from the service address.
const ANSWER_WAIT_MS: u64 = 5_000;
/// Client hosts: distinct loopback addresses, so that an SM_NOTIFY from one
/// does not free the other (a notice frees every name at its address).
const HOST_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const HOST_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HOST_C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The handle of a new file `name` created through the service address.
fn file_handle(c: &Cluster, name: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut conn = c.connect().await;
        let root = conn.root_nfs_fh3();
        create(&mut conn, &root, name).await.expect("CREATE").data.as_ref().to_vec()
    })
}

/// One NLM call from `src` to the service address: its `nlm4_res` status.
fn call(c: &Cluster, src: Ipv4Addr, xid: u32, proc_: u32, args: &[u8]) -> Nlm4Stats {
    let reply = udp_exchange(src, c.service, c.ports.nlm, &nlm_msg(xid, proc_, args), ANSWER_WAIT_MS)
        .unwrap_or_else(|| panic!("no answer to NLM proc {proc_} xid {xid:#x}"));
    res_stat(&reply)
}

/// TEST by a third host; the svid of the holder, if denied.
fn holder_svid(c: &Cluster, xid: u32, fh: &[u8]) -> Option<i32> {
    let msg = nlm_msg(xid, NLM_TEST, &test_args(lock(fh, "hostc", 99, 0, 1), false));
    let reply = udp_exchange(HOST_C, c.service, c.ports.nlm, &msg, ANSWER_WAIT_MS).expect("TEST answered");
    let t: hanfs_server::nlm::xdr::Nlm4TestRes =
        hanfs_server::nlm::xdr::from_bytes(&body(parse_reply(&reply))).expect("nlm4_testres");
    t.stat.holder().map(|h| h.svid)
}

#[test]
fn cluster_concurrent_conflicting_locks_are_never_both_granted() {
    let c = Cluster::start("nlm-race");
    let fh = file_handle(&c, "raced");
    for round in 0..RACE_ROUNDS {
        let a = lock(&fh, "hosta", 1, u64::from(round), 10);
        let b = lock(&fh, "hostb", 2, u64::from(round) + 5, 10);
        let (service, port) = (c.service, c.ports.nlm);
        let send = |src: Ipv4Addr, xid: u32, l: hanfs_server::nlm::xdr::Nlm4Lock| {
            std::thread::spawn(move || {
                let msg = nlm_msg(xid, NLM_LOCK, &lock_args(l, true, false));
                udp_exchange(src, service, port, &msg, ANSWER_WAIT_MS).map(|r| res_stat(&r))
            })
        };
        let ta = send(HOST_A, 0x5100_0000 + round, a.clone());
        let tb = send(HOST_B, 0x5200_0000 + round, b.clone());
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        let stats = [ra.expect("A answered"), rb.expect("B answered")];
        let granted = stats.iter().filter(|s| **s == Nlm4Stats::Granted).count();
        assert_eq!(granted, 1, "round {round}: exactly one of two conflicting LOCKs is granted: {stats:?}");
        assert!(stats.contains(&Nlm4Stats::Denied), "round {round}: {stats:?}");
        assert_eq!(call(&c, HOST_A, 0x5300_0000 + round, NLM_UNLOCK, &unlock_args(a)), Nlm4Stats::Granted);
        assert_eq!(call(&c, HOST_B, 0x5400_0000 + round, NLM_UNLOCK, &unlock_args(b)), Nlm4Stats::Granted);
    }
}

#[test]
fn cluster_locks_and_notify_release_survive_kill9() {
    let mut c = Cluster::start("nlm-failover");
    let fh = file_handle(&c, "locked");
    let a = lock(&fh, "hosta", 10, 0, 0);
    let b = lock(&fh, "hostb", 20, 0, 100);
    assert_eq!(call(&c, HOST_A, 0x6100_0001, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    // B is refused once (this reply is in the DRC), then queues as a waiter.
    let refused = nlm_msg(0x6200_0001, NLM_LOCK, &lock_args(b.clone(), true, false));
    let r = udp_exchange(HOST_B, c.service, c.ports.nlm, &refused, ANSWER_WAIT_MS).expect("answer");
    assert_eq!(res_stat(&r), Nlm4Stats::Denied);
    assert_eq!(call(&c, HOST_B, 0x6200_0002, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Blocked);

    let first = c.wait_serving(&[]);
    c.kill9(first);
    let second = c.wait_serving(&[first]);
    assert_ne!(first, second);
    // The lock is enforced at once by the new active: no grace period.
    assert_eq!(holder_svid(&c, 0x6300_0001, &fh), Some(10), "A's lock survived the failover");
    let other = lock(&fh, "hostc", 30, 50, 1);
    assert_eq!(call(&c, HOST_C, 0x6300_0002, NLM_LOCK, &lock_args(other, true, false)), Nlm4Stats::Denied);
    assert_eq!(call(&c, HOST_B, 0x6200_0003, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Blocked);

    // A reboots: its SM_NOTIFY frees its lock and grants B's waiter.
    let notify = to_bytes(&StatChge { mon_name: SmString::new(b"hosta".to_vec()).unwrap(), state: 3 });
    let msg = call_msg(0x6400_0001, NSM_PROG, 1, SM_NOTIFY, (1, &auth_sys_body(0, 0, &[])), &notify);
    let r = udp_exchange(HOST_A, c.service, c.ports.nsm, &msg, ANSWER_WAIT_MS).expect("NOTIFY answered");
    assert!(matches!(parse_reply(&r), RpcReply::Accepted { stat: SUCCESS, .. }));
    assert_eq!(holder_svid(&c, 0x6300_0003, &fh), Some(20), "B's waiter was granted");

    // B's first LOCK, retransmitted with its xid: the original DENIED, from the DRC.
    let r = udp_exchange(HOST_B, c.service, c.ports.nlm, &refused, ANSWER_WAIT_MS).expect("answer");
    assert_eq!(res_stat(&r), Nlm4Stats::Denied, "a retransmitted LOCK gets its original reply");

    // The release and the grant are replicated: the next active agrees.
    c.restart(first);
    c.wait_caught_up(first, second);
    c.kill9(second);
    let third = c.wait_serving(&[second]);
    assert_eq!(third, first);
    assert_eq!(holder_svid(&c, 0x6300_0004, &fh), Some(20), "after a second failover B still holds");
    assert_eq!(call(&c, HOST_B, 0x6200_0004, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Granted);
    assert_eq!(call(&c, HOST_B, 0x6200_0005, NLM_UNLOCK, &unlock_args(b)), Nlm4Stats::Granted);
    assert_eq!(holder_svid(&c, 0x6300_0005, &fh), None);
}

/// Wait (bounded) until `client` has more than `n` GRANTED_MSG calls.
fn wait_granted(client: &FakeClient, n: usize) -> Vec<hanfs_server::nlm::xdr::Nlm4TestArgs> {
    let started = std::time::Instant::now();
    while client.granted().len() <= n && started.elapsed() < std::time::Duration::from_millis(CALLBACK_WAIT_MS) {
        std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
    }
    let got = client.granted();
    assert!(got.len() > n, "no new GRANTED_MSG after {CALLBACK_WAIT_MS} ms (had {n})");
    got
}

#[test]
fn cluster_waiters_get_granted_msg_from_the_new_active() {
    let mut c = Cluster::start("nlm-callback");
    // Host B's lock manager and portmapper, where the nodes look for them.
    let client = FakeClient::start_at(HOST_B, c.ports.callback_portmap);
    let fh = file_handle(&c, "waited");
    let a = lock(&fh, "hosta", 1, 0, 0);
    let b = lock(&fh, "hostb", 2, 0, 0);
    assert_eq!(call(&c, HOST_A, 0x7100_0001, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    assert_eq!(call(&c, HOST_B, 0x7200_0001, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Blocked);

    // The waiter queued on the old active is granted by the new one.
    let first = c.wait_serving(&[]);
    c.kill9(first);
    let second = c.wait_serving(&[first]);
    assert!(client.granted().is_empty());
    assert_eq!(call(&c, HOST_A, 0x7100_0002, NLM_UNLOCK, &unlock_args(a)), Nlm4Stats::Granted);
    let got = wait_granted(&client, 0);
    let cookie = got[0].cookie.clone();
    assert_eq!((got[0].alock.svid, &got[0].alock.fh), (2, &b.fh));

    // Never acknowledged: after another failover the next active re-sends it
    // (the pending grant is in the replicated table), with the same cookie.
    c.restart(first);
    c.wait_caught_up(first, second);
    c.kill9(second);
    let n = client.granted().len();
    let third = c.wait_serving(&[second]);
    assert_eq!(third, first);
    let got = wait_granted(&client, n);
    assert_eq!(got.last().map(|g| g.cookie.clone()), Some(cookie), "the same grant, re-sent");
    assert_eq!(holder_svid(&c, 0x7300_0001, &fh), Some(2));
}
