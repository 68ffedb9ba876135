//! NLM v4 and NSM v1 at the RPC level (issue 9): LOCK/TEST/UNLOCK over TCP
//! and UDP, conflicts reported with their holder, a blocked LOCK granted by a
//! GRANTED_MSG callback to a fake client lock manager (found through a fake
//! client portmapper: `Ports::callback_portmap` is the test knob) and ended
//! by GRANTED_RES, SM_NOTIFY freeing a rebooted host's locks and granting the
//! waiter behind them, PROG_MISMATCH(4, 4) for NLM v1/v3, and malformed NLM
//! and NSM calls answered GARBAGE_ARGS while the server keeps serving.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hanfs_server::config::ServerConfig;
use hanfs_server::nlm::xdr::{
    from_bytes, to_bytes, CallerName, NetObj, Nlm4Fh, Nlm4Lock, Nlm4LockArgs, Nlm4Res, Nlm4Stats, Nlm4TestArgs,
    Nlm4TestRes, Nlm4UnlockArgs,
};
use hanfs_server::nsm::xdr::{SmStatRes, SmString, StatChge};

use crate::nfs3_ops::*;
use crate::util::*;

pub const NLM_PROG: u32 = 100_021;
pub const NSM_PROG: u32 = 100_024;
pub const NLM_TEST: u32 = 1;
pub const NLM_LOCK: u32 = 2;
pub const NLM_UNLOCK: u32 = 4;
const NLM_GRANTED_MSG: u32 = 10;
const NLM_GRANTED_RES: u32 = 15;
const SM_STAT: u32 = 1;
const SM_MON: u32 = 2;
pub const SM_NOTIFY: u32 = 6;
/// How long a test waits for a callback to arrive.
pub const CALLBACK_WAIT_MS: u64 = 20_000;

/// One lock request of `host`/`svid` on `fh`.
pub fn lock(fh: &[u8], host: &str, svid: i32, offset: u64, len: u64) -> Nlm4Lock {
    Nlm4Lock {
        caller_name: CallerName::new(host.as_bytes().to_vec()).unwrap(),
        fh: Nlm4Fh::new(fh.to_vec()).unwrap(),
        oh: NetObj::new(format!("{host}-{svid}").into_bytes()).unwrap(),
        svid,
        l_offset: offset,
        l_len: len,
    }
}

fn cookie(n: u32) -> NetObj {
    NetObj::new(n.to_be_bytes().to_vec()).unwrap()
}

pub fn lock_args(alock: Nlm4Lock, exclusive: bool, block: bool) -> Vec<u8> {
    to_bytes(&Nlm4LockArgs { cookie: cookie(1), block, exclusive, alock, reclaim: false, state: 1 })
}

pub fn test_args(alock: Nlm4Lock, exclusive: bool) -> Vec<u8> {
    to_bytes(&Nlm4TestArgs { cookie: cookie(2), exclusive, alock })
}

pub fn unlock_args(alock: Nlm4Lock) -> Vec<u8> {
    to_bytes(&Nlm4UnlockArgs { cookie: cookie(3), alock })
}

static XID: AtomicU32 = AtomicU32::new(0x4e4c_0000);

/// One call to `prog` v`vers` on 127.0.0.1:`port`; the decoded reply.
pub fn rpc(port: u16, udp: bool, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> RpcReply {
    let xid = XID.fetch_add(1, Ordering::Relaxed);
    let msg = call_msg(xid, prog, vers, proc_, (1, &auth_sys_body(0, 0, &[])), args);
    let reply = if udp { udp_call(port, &msg) } else { tcp_call(port, &msg) };
    parse_reply(&reply.expect("an answer"))
}

/// One call over UDP from `src` (another loopback address: another client host).
pub fn rpc_from(src: Ipv4Addr, port: u16, prog: u32, proc_: u32, args: &[u8]) -> RpcReply {
    let xid = XID.fetch_add(1, Ordering::Relaxed);
    let msg = call_msg(xid, prog, 4, proc_, (1, &auth_sys_body(0, 0, &[])), args);
    parse_reply(&udp_exchange(src, Ipv4Addr::LOCALHOST, port, &msg, IO_TIMEOUT_MS).expect("an answer"))
}

/// Send the call message `msg` over UDP from `src` to `dst`:`port`; the reply
/// message, or None after `wait_ms`.
pub fn udp_exchange(src: Ipv4Addr, dst: Ipv4Addr, port: u16, msg: &[u8], wait_ms: u64) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((src, 0)).expect("bind a loopback source");
    sock.set_read_timeout(Some(Duration::from_millis(wait_ms))).unwrap();
    sock.send_to(msg, (dst, port)).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// An NLM v4 call message with AUTH_SYS.
pub fn nlm_msg(xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    call_msg(xid, NLM_PROG, 4, proc_, (1, &auth_sys_body(0, 0, &[])), args)
}

/// The `nlm4_res` status of a reply message.
pub fn res_stat(reply: &[u8]) -> Nlm4Stats {
    from_bytes::<Nlm4Res>(&body(parse_reply(reply))).expect("nlm4_res").stat
}

pub fn body(r: RpcReply) -> Vec<u8> {
    match r {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => body,
        other => panic!("not a success: {other:?}"),
    }
}

/// An NLM call whose result is `nlm4_res`; its status.
pub fn nlm_stat(port: u16, udp: bool, proc_: u32, args: &[u8]) -> Nlm4Stats {
    from_bytes::<Nlm4Res>(&body(rpc(port, udp, NLM_PROG, 4, proc_, args))).expect("nlm4_res").stat
}

pub fn nlm_test(port: u16, udp: bool, args: &[u8]) -> Nlm4TestRes {
    from_bytes::<Nlm4TestRes>(&body(rpc(port, udp, NLM_PROG, 4, NLM_TEST, args))).expect("nlm4_testres")
}

/// A node started with `config`, and the handle of the `/file` it creates
/// over NFS in the export.
pub fn start_with_file(config: ServerConfig) -> (TestServer, Vec<u8>) {
    let s = TestServer::start_config(config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let fh = rt.block_on(async {
        let mut c = s.connect().await;
        let root = c.root_nfs_fh3();
        create(&mut c, &root, "file").await.expect("CREATE").data.as_ref().to_vec()
    });
    (s, fh)
}

/// A server exporting a fresh directory, and the handle of `/file` in it.
/// Callbacks go to `callback_portmap` (a port nothing answers on unless a test
/// runs a fake portmapper there).
fn server_with_file(label: &str, callback_portmap: u16) -> (TempDir, TempDir, TestServer, Vec<u8>) {
    let export = tempdir(label);
    let state = tempdir(&format!("{label}-state"));
    let mut config = test_config(export.path(), RW_NO_SQUASH, state.path());
    config.ports.callback_portmap = callback_portmap;
    let (s, fh) = start_with_file(config);
    (export, state, s, fh)
}

/// A UDP port on loopback where nothing listens (callbacks there fail fast).
fn dead_port() -> u16 {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap().port()
}

#[test]
fn lock_test_unlock_round_trip_over_tcp_and_udp() {
    let (_e, _st, s, fh) = server_with_file("nlm-roundtrip", dead_port());
    for udp in [false, true] {
        let a = lock(&fh, "hosta", 11, 0, 100);
        let b = lock(&fh, "hostb", 22, 50, 10);
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
        // A retransmission (new xid) of a lock already held is GRANTED.
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
        let t = nlm_test(s.nlm_port, udp, &test_args(b.clone(), true));
        assert_eq!(t.stat.stat(), Nlm4Stats::Denied);
        let h = t.stat.holder().expect("holder");
        assert_eq!((h.svid, h.l_offset, h.l_len, h.exclusive), (11, 0, 100, true));
        assert_eq!(h.oh.as_bytes(), b"hosta-11");
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(b.clone(), true, false)), Nlm4Stats::Denied);
        // Shared locks of two owners coexist only where neither is exclusive.
        assert_eq!(
            nlm_test(s.nlm_port, udp, &test_args(lock(&fh, "hostb", 22, 100, 5), true)).stat.stat(),
            Nlm4Stats::Granted
        );
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_UNLOCK, &unlock_args(a)), Nlm4Stats::Granted);
        assert_eq!(nlm_test(s.nlm_port, udp, &test_args(b.clone(), true)).stat.stat(), Nlm4Stats::Granted);
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(b.clone(), true, false)), Nlm4Stats::Granted);
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_UNLOCK, &unlock_args(b)), Nlm4Stats::Granted);
    }
    // A handle that names nothing is STALE_FH.
    let mut stale = fh.clone();
    if let Some(last) = stale.last_mut() {
        *last ^= 0xff;
    }
    assert_eq!(
        nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(lock(&stale, "hosta", 1, 0, 0), true, false)),
        Nlm4Stats::StaleFh
    );
    assert_eq!(
        nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(lock(&[1, 2, 3], "hosta", 1, 0, 0), true, false)),
        Nlm4Stats::StaleFh
    );
}

#[test]
fn only_version_4_is_served() {
    let (_e, _st, s, _fh) = server_with_file("nlm-versions", dead_port());
    for vers in [1, 3] {
        match rpc(s.nlm_port, false, NLM_PROG, vers, 0, &[]) {
            RpcReply::Accepted { stat: PROG_MISMATCH, body, .. } => assert_eq!(words(&body), vec![4, 4], "v{vers}"),
            other => panic!("v{vers}: {other:?}"),
        }
    }
    assert_serves_null(s.nlm_port, NLM_PROG, 4);
    assert_serves_null(s.nsm_port, NSM_PROG, 1);
    // The portmapper knows both programs.
    let mut args = Vec::new();
    for w in [NLM_PROG, 4, 17, 0] {
        put_u32(&mut args, w);
    }
    assert_eq!(words(&body(rpc(s.portmap_port, true, 100_000, 2, 3, &args))), vec![u32::from(s.nlm_port)]);
    let mut args = Vec::new();
    for w in [NSM_PROG, 1, 6, 0] {
        put_u32(&mut args, w);
    }
    assert_eq!(words(&body(rpc(s.portmap_port, false, 100_000, 2, 3, &args))), vec![u32::from(s.nsm_port)]);
}

#[test]
fn malformed_nlm_and_nsm_calls_get_garbage_args() {
    let (_e, _st, s, fh) = server_with_file("nlm-malformed", dead_port());
    let garbage = |port: u16, prog: u32, vers: u32, proc_: u32, args: &[u8]| {
        for udp in [false, true] {
            match rpc(port, udp, prog, vers, proc_, args) {
                RpcReply::Accepted { stat, .. } => assert_eq!(stat, GARBAGE_ARGS, "prog {prog} proc {proc_} udp {udp}"),
                other => panic!("{other:?}"),
            }
        }
    };
    // A cookie claiming 4 GiB.
    let mut huge = Vec::new();
    put_u32(&mut huge, 0xFFFF_FFF0);
    huge.extend_from_slice(&[0; 64]);
    garbage(s.nlm_port, NLM_PROG, 4, NLM_LOCK, &huge);
    // A caller_name over LM_MAXSTRLEN (1024).
    let mut long = Vec::new();
    put_opaque(&mut long, b"c");
    put_u32(&mut long, 0);
    put_u32(&mut long, 1);
    put_opaque(&mut long, &[b'h'; 1025]);
    put_opaque(&mut long, &fh);
    garbage(s.nlm_port, NLM_PROG, 4, NLM_LOCK, &long);
    // Trailing garbage after valid arguments, and plain garbage.
    let mut trailing = lock_args(lock(&fh, "h", 1, 0, 0), true, false);
    trailing.extend_from_slice(&[7; 8]);
    garbage(s.nlm_port, NLM_PROG, 4, NLM_LOCK, &trailing);
    garbage(s.nlm_port, NLM_PROG, 4, NLM_TEST, &[0xde, 0xad]);
    garbage(s.nlm_port, NLM_PROG, 4, NLM_UNLOCK, &[]);
    garbage(s.nlm_port, NLM_PROG, 4, 23, &huge);
    garbage(s.nsm_port, NSM_PROG, 1, SM_MON, &huge);
    garbage(s.nsm_port, NSM_PROG, 1, SM_NOTIFY, &[1, 2, 3]);
    garbage(s.nsm_port, NSM_PROG, 1, SM_STAT, &huge);
    // Unknown procedures.
    assert!(matches!(rpc(s.nlm_port, false, NLM_PROG, 4, 24, &[]), RpcReply::Accepted { stat: PROC_UNAVAIL, .. }));
    assert!(matches!(rpc(s.nsm_port, true, NSM_PROG, 1, 7, &[]), RpcReply::Accepted { stat: PROC_UNAVAIL, .. }));
    assert_serves_null(s.nlm_port, NLM_PROG, 4);
    assert_serves_null(s.nsm_port, NSM_PROG, 1);
    assert_eq!(
        nlm_stat(s.nlm_port, true, NLM_LOCK, &lock_args(lock(&fh, "h", 1, 0, 0), true, false)),
        Nlm4Stats::Granted
    );
}

fn sm_notify(port: u16, host: &str, state: i32) {
    let args = to_bytes(&StatChge { mon_name: SmString::new(host.as_bytes().to_vec()).unwrap(), state });
    assert!(body(rpc(port, true, NSM_PROG, 1, SM_NOTIFY, &args)).is_empty());
}

#[test]
fn sm_notify_frees_a_rebooted_hosts_locks_and_grants_the_waiter() {
    let (_e, _st, s, fh) = server_with_file("nlm-notify", dead_port());
    let a = lock(&fh, "rebooter", 5, 0, 0);
    let b = lock(&fh, "waiter", 6, 0, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    // The waiter is another client host (another address: an SM_NOTIFY frees
    // every name recorded at the notifier's address).
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let blocked = body(rpc_from(other, s.nlm_port, NLM_PROG, NLM_LOCK, &lock_args(b.clone(), true, true)));
    assert_eq!(from_bytes::<Nlm4Res>(&blocked).unwrap().stat, Nlm4Stats::Blocked);
    let stat = from_bytes::<SmStatRes>(&body(rpc(s.nsm_port, false, NSM_PROG, 1, SM_STAT, &{
        to_bytes(&hanfs_server::nsm::xdr::SmName { mon_name: SmString::new(b"x".to_vec()).unwrap() })
    })))
    .unwrap();
    assert_eq!(stat.state % 2, 1, "our NSM state is odd");
    // "rebooter" comes back with a new state: its lock goes, the waiter holds.
    sm_notify(s.nsm_port, "rebooter", 3);
    let t = nlm_test(s.nlm_port, false, &test_args(lock(&fh, "third", 7, 0, 1), false));
    assert_eq!(t.stat.stat(), Nlm4Stats::Denied);
    assert_eq!(t.stat.holder().map(|h| h.svid), Some(6), "the waiter was granted");
    let again = body(rpc_from(other, s.nlm_port, NLM_PROG, NLM_LOCK, &lock_args(b, true, true)));
    assert_eq!(from_bytes::<Nlm4Res>(&again).unwrap().stat, Nlm4Stats::Granted, "a re-sent LOCK of a granted waiter");
    // "rebooter" locks again; the same NOTIFY retransmitted changes nothing.
    let a2 = lock(&fh, "rebooter", 5, 20, 5);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a2.clone(), true, false)), Nlm4Stats::Granted);
    sm_notify(s.nsm_port, "rebooter", 3);
    assert_eq!(
        nlm_test(s.nlm_port, false, &test_args(lock(&fh, "third", 7, 20, 1), false)).stat.stat(),
        Nlm4Stats::Denied
    );
    // A new state frees it.
    sm_notify(s.nsm_port, "rebooter", 5);
    assert_eq!(
        nlm_test(s.nlm_port, false, &test_args(lock(&fh, "third", 7, 20, 1), false)).stat.stat(),
        Nlm4Stats::Granted
    );
}

/// Calls a fake lock manager got: (procedure, arguments).
type CallLog = Arc<std::sync::Mutex<Vec<(u32, Vec<u8>)>>>;

/// A fake client: a portmapper that maps NLM v4/UDP to a lock manager that
/// records the GRANTED_MSG calls it gets (and answers them with a void reply,
/// as Linux lockd does).
pub struct FakeClient {
    host: FakeHost,
    granted: Arc<std::sync::Mutex<Vec<Nlm4TestArgs>>>,
    /// Every call the lock manager got: (procedure, arguments).
    calls: CallLog,
}

impl FakeClient {
    fn start() -> FakeClient {
        FakeClient::start_at(Ipv4Addr::LOCALHOST, 0)
    }

    /// A fake client on `ip`, its portmapper on `portmap_port` (0: any).
    pub fn start_at(ip: Ipv4Addr, portmap_port: u16) -> FakeClient {
        let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = granted.clone();
        let calls: CallLog = Arc::new(std::sync::Mutex::new(Vec::new()));
        let all = calls.clone();
        let host = FakeHost::start(ip, portmap_port, NLM_PROG, move |_, proc_, args| {
            all.lock().unwrap().push((proc_, args.to_vec()));
            if proc_ == NLM_GRANTED_MSG {
                if let Ok(a) = from_bytes::<Nlm4TestArgs>(args) {
                    seen.lock().unwrap().push(a);
                }
            }
            Vec::new()
        });
        FakeClient { host, granted, calls }
    }

    pub fn portmap_port(&self) -> u16 {
        self.host.portmap_port
    }

    pub fn granted(&self) -> Vec<Nlm4TestArgs> {
        self.granted.lock().unwrap().clone()
    }

    /// The arguments of the first call to `proc_`, waiting (bounded) for one.
    fn wait_call(&self, proc_: u32) -> Option<Vec<u8>> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(CALLBACK_WAIT_MS) {
            if let Some((_, args)) = self.calls.lock().unwrap().iter().find(|(p, _)| *p == proc_) {
                return Some(args.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[test]
fn blocked_lock_is_granted_by_callback_until_granted_res() {
    let client = FakeClient::start();
    let (_e, state, mut s, fh) = server_with_file("nlm-callback", client.portmap_port());
    let holder = lock(&fh, "holder", 1, 0, 0);
    let waiter = lock(&fh, "waiter", 2, 10, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(holder.clone(), true, false)), Nlm4Stats::Granted);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(waiter.clone(), true, true)), Nlm4Stats::Blocked);
    assert!(client.granted().is_empty());
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(holder)), Nlm4Stats::Granted);
    let started = Instant::now();
    while client.granted().is_empty() && started.elapsed() < Duration::from_millis(CALLBACK_WAIT_MS) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = client.granted();
    let first = got.first().expect("a GRANTED_MSG reached the client's lock manager");
    // The waiter's own lock; caller_name is the server's (the caller of GRANTED).
    assert_eq!((&first.alock.fh, &first.alock.oh, first.alock.svid), (&waiter.fh, &waiter.oh, waiter.svid));
    assert_eq!((first.alock.l_offset, first.alock.l_len), (waiter.l_offset, waiter.l_len));
    assert!(first.exclusive);
    assert_eq!(first.cookie.as_bytes().len(), 8, "the cookie is the grant id");
    // The waiter holds the lock now.
    let t = nlm_test(s.nlm_port, false, &test_args(lock(&fh, "other", 3, 0, 0), false));
    assert_eq!(t.stat.holder().map(|h| h.svid), Some(2));
    // GRANTED_RES ends the callback: the pending grant is gone from the table.
    let res = to_bytes(&Nlm4Res { cookie: first.cookie.clone(), stat: Nlm4Stats::Granted });
    assert!(body(rpc(s.nlm_port, true, NLM_PROG, 4, NLM_GRANTED_RES, &res)).is_empty());
    s.stop();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (pending, locks) = rt.block_on(async {
        let local = hanfs_raft::local::LocalCommit::open(state.path()).expect("reopen the state");
        let st = hanfs_raft::commit::Commit::state(&*local);
        let guard = st.read().unwrap();
        (guard.nlm().locks().pending_grants().count(), guard.nlm().locks().lock_count())
    });
    assert_eq!(pending, 0, "GRANTED_RES acknowledged the grant");
    assert_eq!(locks, 1);
}

#[test]
fn msg_forms_answer_with_res_calls_and_granted_is_denied() {
    const LOCK_MSG: u32 = 7;
    const LOCK_RES: u32 = 12;
    const TEST_MSG: u32 = 6;
    const TEST_RES: u32 = 11;
    const GRANTED: u32 = 5;
    let client = FakeClient::start();
    let (_e, _st, s, fh) = server_with_file("nlm-msg", client.portmap_port());
    // LOCK_MSG gets no RPC reply; its result comes back as LOCK_RES.
    let msg = call_msg(
        0x77,
        NLM_PROG,
        4,
        LOCK_MSG,
        (1, &auth_sys_body(0, 0, &[])),
        &lock_args(lock(&fh, "m", 1, 0, 0), true, false),
    );
    assert_eq!(udp_call_wait(s.nlm_port, &msg, 500), None, "a _MSG call is not answered");
    let res = client.wait_call(LOCK_RES).expect("LOCK_RES reached the client");
    let res: Nlm4Res = from_bytes(&res).unwrap();
    assert_eq!((res.cookie.as_bytes(), res.stat), (&1u32.to_be_bytes()[..], Nlm4Stats::Granted));
    let msg = call_msg(
        0x78,
        NLM_PROG,
        4,
        TEST_MSG,
        (1, &auth_sys_body(0, 0, &[])),
        &test_args(lock(&fh, "n", 2, 0, 1), true),
    );
    assert_eq!(udp_call_wait(s.nlm_port, &msg, 500), None);
    let res: Nlm4TestRes = from_bytes(&client.wait_call(TEST_RES).expect("TEST_RES")).unwrap();
    assert_eq!(res.stat.holder().map(|h| h.svid), Some(1));
    // We are a server: a GRANTED call finds no blocked request of ours.
    assert_eq!(nlm_stat(s.nlm_port, false, GRANTED, &test_args(lock(&fh, "n", 2, 0, 1), true)), Nlm4Stats::Denied);
}

#[test]
fn cancel_drops_a_waiter_and_clients_outside_the_export_list_fail() {
    const NLM_CANCEL: u32 = 3;
    let export = tempdir("nlm-cancel");
    let state = tempdir("nlm-cancel-state");
    let mut config = test_config(export.path(), "127.0.0.1(rw,no_root_squash,insecure)", state.path());
    config.ports.callback_portmap = dead_port();
    let s = TestServer::start_config(config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let fh = rt.block_on(async {
        let mut c = s.connect().await;
        let root = c.root_nfs_fh3();
        create(&mut c, &root, "file").await.expect("CREATE").data.as_ref().to_vec()
    });
    let holder = lock(&fh, "holder", 1, 0, 0);
    let waiter = lock(&fh, "waiter", 2, 0, 0);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(holder.clone(), true, false)), Nlm4Stats::Granted);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(waiter.clone(), true, true)), Nlm4Stats::Blocked);
    let cancel = to_bytes(&hanfs_server::nlm::xdr::Nlm4CancArgs {
        cookie: cookie(9),
        block: true,
        exclusive: true,
        alock: waiter.clone(),
    });
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_CANCEL, &cancel), Nlm4Stats::Granted);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(holder)), Nlm4Stats::Granted);
    assert_eq!(
        nlm_test(s.nlm_port, false, &test_args(lock(&fh, "third", 3, 0, 0), true)).stat.stat(),
        Nlm4Stats::Granted,
        "the cancelled waiter was not granted"
    );
    // 127.0.0.2 is not in the export's client list: FAILED, as knfsd's lockd.
    let outsider =
        body(rpc_from(Ipv4Addr::new(127, 0, 0, 2), s.nlm_port, NLM_PROG, NLM_LOCK, &lock_args(waiter, true, false)));
    assert_eq!(from_bytes::<Nlm4Res>(&outsider).unwrap().stat, Nlm4Stats::Failed);
}
