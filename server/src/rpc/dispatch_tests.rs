//! Tests of `dispatch`: the DRC steps, commits, fencing and the counters.

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use hanfs_raft::commit::{Commit, CommitFuture};
use hanfs_state::State;

use super::*;
use crate::rpc::program::{Args, ProcFuture, Recover};
use crate::rpc::shared::Fence;

/// Waits for a record committed off the reply path: 2 s at most.
const RECORD_POLLS_MAX: u32 = 2000;

/// Applies every commit to an in-memory state and notes it in `events`.
struct Mem {
    state: Arc<RwLock<State>>,
    events: Events,
}

impl Commit for Mem {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        let kinds: Vec<String> =
            cmds.iter().map(|c| format!("{c:?}").split([' ', '(', '{']).next().unwrap_or("").to_owned()).collect();
        self.events.lock().unwrap().push(format!("commit {}", kinds.join("+")));
        let mut outcomes = Vec::new();
        let mut state = self.state.write().unwrap();
        for cmd in &cmds {
            outcomes.push(state.apply(cmd).unwrap());
        }
        Box::pin(async move { Ok(outcomes) })
    }
    fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }
}

/// What happened, in order: handler runs and commits.
type Events = Arc<Mutex<Vec<String>>>;

struct Ctx {
    events: Events,
}

fn note(ctx: &Ctx, what: &str) {
    ctx.events.lock().unwrap().push(what.to_owned());
}

fn ran(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    note(&ctx, "run");
    Box::pin(async { Ok(Reply::new(b"ran!".to_vec())) })
}

fn ran_with_effect(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    note(&ctx, "run");
    Box::pin(async { Ok(Reply::with_effects(b"ran!".to_vec(), vec![Command::BumpEpoch])) })
}

fn recovered(ctx: Arc<Ctx>, _call: Call, _args: Args) -> ProcFuture {
    note(&ctx, "recover");
    Box::pin(async { Ok(Reply::new(b"rcv!".to_vec())) })
}

/// `needs_intent` of ONCE_IF_ARGS: only the arguments `call_record` sends.
fn args_need_intent(args: &[u8]) -> bool {
    args == b"args"
}

/// `needs_intent` of ONCE_UNLESS_ARGS: never for `call_record`'s arguments.
fn args_need_no_intent(args: &[u8]) -> bool {
    args != b"args"
}

const RECOVER: Recover<Ctx> = recovered;
static PROCS: [Proc<Ctx>; 5] = [
    Proc { name: "ONCE", handler: ran, drc: Drc::Record, recover: Some(RECOVER), needs_intent: None },
    Proc {
        name: "ONCE_EFFECT",
        handler: ran_with_effect,
        drc: Drc::Record,
        recover: Some(RECOVER),
        needs_intent: None,
    },
    Proc { name: "REPLY_ONLY", handler: ran_with_effect, drc: Drc::ReplyOnly, recover: None, needs_intent: None },
    Proc {
        name: "ONCE_IF_ARGS",
        handler: ran,
        drc: Drc::Record,
        recover: Some(RECOVER),
        needs_intent: Some(args_need_intent),
    },
    Proc {
        name: "ONCE_UNLESS_ARGS",
        handler: ran,
        drc: Drc::Record,
        recover: Some(RECOVER),
        needs_intent: Some(args_need_no_intent),
    },
];
static PROGRAM: Program<Ctx> = Program { name: "test", prog: 400_000, vers: 1, procs: &PROCS };

fn setup() -> (Dispatcher<Ctx>, Events, Arc<RwLock<State>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(RwLock::new(State::default()));
    let commit = Arc::new(Mem { state: state.clone(), events: events.clone() });
    let shared = Arc::new(RpcShared::new(commit, Fence::always(), 1 << 20));
    let ctx = Arc::new(Ctx { events: events.clone() });
    (Dispatcher::new(shared, ctx, Registry::new(&[&PROGRAM])), events, state)
}

/// A call of `proc_` as AUTH_SYS `uid`, with 4 argument bytes.
fn call_record(xid: u32, proc_: u32, uid: u32) -> Vec<u8> {
    let mut cred = Vec::new();
    for w in [0u32, 0, uid, uid, 0] {
        cred.extend_from_slice(&w.to_be_bytes());
    }
    let mut m = Vec::new();
    for w in [xid, 0, 2, 400_000, 1, proc_, 1, cred.len() as u32] {
        m.extend_from_slice(&w.to_be_bytes());
    }
    m.extend_from_slice(&cred);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(b"args");
    m
}

fn peer() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], 800))
}

fn body(outcome: Outcome) -> Vec<u8> {
    let Outcome::Reply(reply) = outcome else { panic!("a reply expected, got {outcome:?}") };
    let reply = reply.to_vec();
    reply[reply.len() - 4..].to_vec()
}

async fn wait_recorded(state: &RwLock<State>, n: u64) {
    for _ in 0..RECORD_POLLS_MAX {
        let replies = {
            let s = state.read().unwrap();
            s.drc_keys_by_age().filter(|k| s.drc_get(k).is_some()).count() as u64
        };
        if replies >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the reply record was not committed");
}

#[tokio::test]
async fn record_commits_the_intent_first_and_replays_the_reply() {
    let (d, events, state) = setup();
    assert_eq!(body(d.call(call_record(1, 0, 5), peer(), Transport::Tcp).await), b"ran!");
    wait_recorded(&state, 1).await;
    assert_eq!(*events.lock().unwrap(), ["commit DrcIntent", "run", "commit DrcInsert"]);
    // The retransmission is answered from the cache, nothing runs or commits.
    assert_eq!(body(d.call(call_record(1, 0, 5), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(events.lock().unwrap().len(), 3);
    // Another uid with the same xid and arguments is another call.
    assert_eq!(body(d.call(call_record(1, 0, 6), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(events.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn effects_and_record_commit_together_before_the_reply() {
    let (d, events, state) = setup();
    assert_eq!(body(d.call(call_record(2, 1, 5), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(*events.lock().unwrap(), ["commit DrcIntent", "run", "commit BumpEpoch+DrcInsert"]);
    assert_eq!(state.read().unwrap().epoch(), 1);
}

#[tokio::test]
async fn an_intent_without_a_reply_is_recovered_not_run() {
    let (d, events, state) = setup();
    let record = call_record(3, 0, 5);
    let header = msg::decode_call(&record).unwrap();
    let key = drc_key(&header, peer(), &record[header.args_offset..]);
    state.write().unwrap().apply(&Command::DrcIntent { key: key.clone(), now_ms: crate::clock::unix_ms() }).unwrap();
    assert_eq!(body(d.call(record.clone(), peer(), Transport::Tcp).await), b"rcv!");
    wait_recorded(&state, 1).await;
    assert_eq!(*events.lock().unwrap(), ["recover", "commit DrcInsert"]);
    assert_eq!(state.read().unwrap().drc_get(&key), Some(&b"rcv!"[..]));
}

#[tokio::test]
async fn reply_only_records_no_intent() {
    let (d, events, _state) = setup();
    assert_eq!(body(d.call(call_record(4, 2, 5), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(*events.lock().unwrap(), ["run", "commit BumpEpoch+DrcInsert"]);
    assert_eq!(body(d.call(call_record(4, 2, 5), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(events.lock().unwrap().len(), 2, "answered from the cache");
}

/// A `Record` procedure's `needs_intent` sees the call's arguments and
/// decides whether the intent is committed (an unguarded SETATTR needs none);
/// the reply is recorded either way.
#[tokio::test]
async fn needs_intent_decides_per_call() {
    let (d, events, state) = setup();
    assert_eq!(body(d.call(call_record(5, 3, 5), peer(), Transport::Tcp).await), b"ran!");
    wait_recorded(&state, 1).await;
    assert_eq!(*events.lock().unwrap(), ["commit DrcIntent", "run", "commit DrcInsert"]);
    events.lock().unwrap().clear();
    assert_eq!(body(d.call(call_record(6, 4, 5), peer(), Transport::Tcp).await), b"ran!");
    wait_recorded(&state, 2).await;
    assert_eq!(*events.lock().unwrap(), ["run", "commit DrcInsert"]);
    assert_eq!(body(d.call(call_record(6, 4, 5), peer(), Transport::Tcp).await), b"ran!");
    assert_eq!(events.lock().unwrap().len(), 2, "answered from the cache");
}

/// Refuses every commit.
struct Refuse(Arc<RwLock<State>>);

impl Commit for Refuse {
    fn commit(&self, _cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(async { Err(hanfs_raft::commit::CommitError::NotLeader) })
    }
    fn state(&self) -> Arc<RwLock<State>> {
        self.0.clone()
    }
}

fn dispatcher(commit: Arc<dyn Commit>, fence: Fence, events: &Events) -> Dispatcher<Ctx> {
    let shared = Arc::new(RpcShared::new(commit, fence, 1 << 20));
    Dispatcher::new(shared, Arc::new(Ctx { events: events.clone() }), Registry::new(&[&PROGRAM]))
}

#[tokio::test]
async fn a_failed_intent_commit_closes_without_running() {
    let events = Events::default();
    let d = dispatcher(Arc::new(Refuse(Default::default())), Fence::always(), &events);
    let closed = Outcome::Close { reason: CloseReason::CommitFailed, xid: 11 };
    assert_eq!(d.call(call_record(11, 0, 5), peer(), Transport::Tcp).await, closed);
    // The in-progress claim is released: the retransmission is tried again.
    assert_eq!(d.call(call_record(11, 0, 5), peer(), Transport::Udp).await, closed);
    assert!(events.lock().unwrap().is_empty(), "the handler never ran");
    assert_eq!(d.shared().unanswered.get(CloseReason::CommitFailed), 2);
}

#[tokio::test]
async fn a_call_past_the_fence_is_not_run_and_closes() {
    let (events, state) = (Events::default(), Arc::new(RwLock::new(State::default())));
    let commit = Arc::new(Mem { state, events: events.clone() });
    let d = dispatcher(commit, Fence::new(|| false), &events);
    let closed = Outcome::Close { reason: CloseReason::Fenced, xid: 12 };
    assert_eq!(d.call(call_record(12, 1, 5), peer(), Transport::Udp).await, closed);
    assert_eq!(d.shared().unanswered.get(CloseReason::Fenced), 1);
    // Nor is the call run: a node past its lease touches nothing.
    assert!(events.lock().unwrap().is_empty(), "the handler ran on a fenced node");
}

#[test]
fn fnv1a_known_values() {
    assert_eq!(args_checksum(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(args_checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[tokio::test]
async fn calls_refusals_drc_hits_and_unanswered_calls_are_counted() {
    let (d, _events, state) = setup();
    assert_eq!(body(d.call(call_record(21, 0, 5), peer(), Transport::Tcp).await), b"ran!");
    wait_recorded(&state, 1).await;
    assert_eq!(body(d.call(call_record(21, 0, 5), peer(), Transport::Tcp).await), b"ran!");
    // Procedure 9 does not exist: refused before a procedure is found.
    let Outcome::Reply(_) = d.call(call_record(22, 9, 5), peer(), Transport::Tcp).await else { panic!("a reply") };
    let m = &d.shared().metrics;
    let programs = m.programs();
    let once = programs[0].proc_(0).unwrap();
    assert_eq!((once.calls(), once.latency().snapshot().count), (2, 2));
    assert_eq!(m.drc.hits.load(Ordering::Relaxed), 1);
    assert_eq!(m.refused(Refusal::ProcUnavail), 1);

    let events = Events::default();
    let refusing = dispatcher(Arc::new(Refuse(Default::default())), Fence::always(), &events);
    let _ = refusing.call(call_record(23, 0, 5), peer(), Transport::Tcp).await;
    let programs = refusing.shared().metrics.programs();
    assert_eq!(programs[0].proc_(0).unwrap().errors(ErrorKind::Unanswered), 1);
}
