//! The one dispatch path for every program (nfsd's `nfsd_dispatch`): decode the
//! header, find the program and procedure in the registry, consult the
//! duplicate-request cache, run the handler, commit its effects (with the DRC
//! record) and build the reply message. Transports call `Dispatcher::call` and
//! act on its `Outcome`: send the reply, send nothing (a legitimate silence),
//! or close the connection (`Outcome::Close`: this node may not answer, or a
//! commit failed). A TCP client waits out its whole timeout (60 s for Linux'
//! `timeo=600`) for a call that is neither answered nor refused while the
//! connection stays open; a closed connection makes it reconnect and resend
//! at once, through the VIP to whichever node serves now. Each close is
//! counted in `RpcShared::unanswered`.
//!
//! Exactly once across failover (DESIGN.md invariant 6), all of it in `run`:
//! a `Drc::Record` call first commits its intent (`Command::DrcIntent`), so it
//! is durable on a majority before the handler touches the disk; then the
//! handler runs; then its effects and reply (`Command::DrcInsert`) are
//! committed. A retransmission finds the reply (sent from the cache) or, when
//! the active died between the two, only the intent: then the procedure's
//! `recover` function works out from the disk what the original did and
//! answers as it would have. A call with no effects sends its reply while its
//! record is still being committed (holding its in-progress claim until it is
//! durable), so it waits for one commit. A `Drc::ReplyOnly` call records no
//! intent: its reply is committed with its effects.
//!
//! Fault injection, for tests: with `HANFS_TEST_FAULTS=1` at start,
//! `HANFS_TEST_CRASH_AFTER_EXECUTE=<procedure name>` aborts the process right
//! after that procedure's handler ran and before its reply is recorded.
//!
//! A `Dispatcher<C>` serves the programs of one context type `C`, and hands
//! that context to every handler; a program with a new context type gets its
//! own dispatcher (and listener) without any change here.

use std::net::SocketAddr;
use std::sync::Arc;

use hanfs_state::{Command, DrcCred, DrcKey, DrcValue};

use super::msg::{self, AcceptStat, CallHeader};
use super::program::{Call, Cred, Drc, Proc, ProcError, Program, Reply, Transport};
use super::shared::{Busy, Claim, CloseReason, RpcShared};

/// With `HANFS_TEST_FAULTS=1`: the procedure name after whose execution the
/// process aborts, before the reply is recorded.
pub const CRASH_AFTER_EXECUTE_ENV: &str = "HANFS_TEST_CRASH_AFTER_EXECUTE";

/// What a transport does with one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply message.
    Reply(Vec<u8>),
    /// Send nothing and keep serving: not a call, a retransmission of a call
    /// still running (the original answers), or a procedure that answers with
    /// silence (`ProcError::NoReply`).
    Silent,
    /// The call of `xid` cannot be answered here: close a TCP connection (both
    /// directions, dropping replies still queued) so the client resends at
    /// once; drop a UDP datagram (the client retransmits on its own).
    Close { reason: CloseReason, xid: u32 },
}

/// The programs one listener serves.
pub struct Registry<C: 'static> {
    programs: Vec<&'static Program<C>>,
}

enum Lookup<C: 'static> {
    Found(&'static Program<C>),
    Mismatch { low: u32, high: u32 },
    Unavailable,
}

impl<C> Registry<C> {
    pub fn new(programs: &[&'static Program<C>]) -> Self {
        Registry { programs: programs.to_vec() }
    }

    pub fn programs(&self) -> &[&'static Program<C>] {
        &self.programs
    }

    fn find(&self, prog: u32, vers: u32) -> Lookup<C> {
        let mut range: Option<(u32, u32)> = None;
        for p in self.programs.iter().filter(|p| p.prog == prog) {
            if p.vers == vers {
                return Lookup::Found(p);
            }
            range = Some(match range {
                None => (p.vers, p.vers),
                Some((low, high)) => (low.min(p.vers), high.max(p.vers)),
            });
        }
        match range {
            Some((low, high)) => Lookup::Mismatch { low, high },
            None => Lookup::Unavailable,
        }
    }
}

/// FNV-1a 64 of the argument bytes: the DRC's argument checksum.
pub fn args_checksum(args: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    args.iter().fold(OFFSET_BASIS, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Answers calls for one registry of programs sharing the context `C`.
pub struct Dispatcher<C: 'static> {
    shared: Arc<RpcShared>,
    ctx: Arc<C>,
    registry: Registry<C>,
    /// Test fault: abort after executing this procedure (see the module doc).
    crash_after_execute: Option<String>,
}

/// What the DRC step decided for a call.
enum Step {
    /// Run the handler: a new call, or one that is not cached.
    Execute,
    /// Only the intent of this call is recorded: run `recover`.
    Recover,
}

impl<C: Send + Sync + 'static> Dispatcher<C> {
    pub fn new(shared: Arc<RpcShared>, ctx: Arc<C>, registry: Registry<C>) -> Self {
        Dispatcher { shared, ctx, registry, crash_after_execute: crash_after_execute() }
    }

    pub fn shared(&self) -> &Arc<RpcShared> {
        &self.shared
    }

    pub fn registry(&self) -> &Registry<C> {
        &self.registry
    }

    /// Handle one call record. A reply is checked against the fence
    /// (`RpcShared::serving_now`) just before it is returned: a node that may
    /// no longer serve returns `Outcome::Close` instead, as for a failed
    /// commit. Every close is counted in `RpcShared::unanswered`.
    pub async fn call(&self, record: Vec<u8>, peer: SocketAddr, transport: Transport) -> Outcome {
        let outcome = match self.call_unfenced(record, peer, transport).await {
            Outcome::Reply(reply) if !self.shared.serving_now() => {
                let xid = reply.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
                Outcome::Close { reason: CloseReason::Fenced, xid }
            }
            other => other,
        };
        if let Outcome::Close { reason, xid } = &outcome {
            let count = self.shared.unanswered.count(*reason);
            tracing::debug!(%peer, xid, ?transport, ?reason, count, "call left unanswered");
        }
        outcome
    }

    async fn call_unfenced(&self, mut record: Vec<u8>, peer: SocketAddr, transport: Transport) -> Outcome {
        let header = match msg::decode_call(&record) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%peer, error = ?e, "refused call header");
                return e.reply().map_or(Outcome::Silent, Outcome::Reply);
            }
        };
        let program = match self.registry.find(header.prog, header.vers) {
            Lookup::Found(p) => p,
            Lookup::Mismatch { low, high } => return Outcome::Reply(msg::prog_mismatch(header.xid, low, high)),
            Lookup::Unavailable => return Outcome::Reply(msg::accepted(header.xid, AcceptStat::ProgUnavail)),
        };
        let Some(proc_) = usize::try_from(header.proc_).ok().and_then(|i| program.procs.get(i)) else {
            return Outcome::Reply(msg::accepted(header.xid, AcceptStat::ProcUnavail));
        };
        // The arguments keep the record's buffer: the header is removed in
        // place (a move within the buffer, no second allocation of a 1 MiB WRITE).
        record.drain(..header.args_offset.min(record.len()));
        let args = record;
        tracing::trace!(%peer, xid = header.xid, program = program.name, proc_ = proc_.name, "call");
        self.run(&header, proc_, args, peer, transport).await
    }

    /// Runs the call. For `Drc::Record` and `Drc::ReplyOnly` procedures the
    /// duplicate-request cache comes first: a retransmission of a running call
    /// is dropped, one of a finished call answered from the cache, one found
    /// as an intent only is answered by `recover`; a new `Record` call commits
    /// its intent. Then the handler, then the commit of its effects and reply
    /// record (off the reply path when there are no effects).
    async fn run(
        &self,
        header: &CallHeader,
        proc_: &Proc<C>,
        args: Vec<u8>,
        peer: SocketAddr,
        transport: Transport,
    ) -> Outcome {
        let xid = header.xid;
        // Held until the reply is recorded; released however the call ends.
        let mut claim = None;
        let mut step = Step::Execute;
        if proc_.drc != Drc::Skip {
            let key = drc_key(header, peer, &args);
            let held = match Claim::take(&self.shared.in_progress, key) {
                Ok(held) => held,
                Err(Busy::Running) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "retransmission while in progress; dropped");
                    return Outcome::Silent;
                }
                Err(Busy::Replied(body)) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "answered from the reply being recorded");
                    return Outcome::Reply(msg::success(xid, &body));
                }
            };
            match drc_lookup(&self.shared, &held.key) {
                Some(DrcValue::Reply(body)) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "answered from the DRC");
                    return Outcome::Reply(msg::success(xid, &body));
                }
                Some(DrcValue::Intent) => {
                    tracing::info!(%peer, xid, proc_ = proc_.name, "intent without a reply; recovering from the disk");
                    step = Step::Recover;
                }
                None if proc_.drc == Drc::Record => {
                    let intent = Command::DrcIntent { key: held.key.clone(), now_ms: crate::clock::unix_ms() };
                    if let Err(e) = self.shared.commit.commit(vec![intent]).await {
                        tracing::warn!(%peer, xid, proc_ = proc_.name, error = %e, "intent commit failed; call not run");
                        return Outcome::Close { reason: CloseReason::CommitFailed, xid };
                    }
                }
                None => {}
            }
            claim = Some(held);
        }
        let run = match step {
            Step::Execute => proc_.handler,
            Step::Recover => proc_.recover.unwrap_or(proc_.handler),
        };
        let call = Call { peer, xid, cred: header.cred.clone(), transport };
        let reply = match run(self.ctx.clone(), call, args).await {
            Ok(reply) => reply,
            Err(e) => return error_reply(xid, e, proc_.name).map_or(Outcome::Silent, Outcome::Reply),
        };
        if matches!(step, Step::Execute) && self.crash_after_execute.as_deref() == Some(proc_.name) {
            tracing::error!(xid, proc_ = proc_.name, "test fault: aborting after execution, before the record");
            std::process::abort();
        }
        let Reply { body, effects } = reply;
        let record = claim.as_ref().and_then(|held| drc_record(held, &body, peer, proc_.name));
        match (claim, record) {
            (Some(held), Some(record)) if effects.is_empty() => {
                // Only the record is left to commit: a retransmission that finds
                // nothing durable finds the intent (Record) or may run again
                // (ReplyOnly), so the reply need not wait for it.
                held.replied(&body);
                let shared = self.shared.clone();
                let name = proc_.name;
                tokio::spawn(async move {
                    if let Err(e) = shared.commit.commit(vec![record]).await {
                        tracing::warn!(peer = %peer, xid, proc_ = name, error = %e, "DRC record commit failed");
                    }
                    drop(held);
                });
            }
            (_claim, record) => {
                let mut cmds = effects;
                cmds.extend(record);
                if !cmds.is_empty() {
                    if let Err(e) = self.shared.commit.commit(cmds).await {
                        tracing::warn!(%peer, xid, proc_ = proc_.name, error = %e, "commit failed; no reply");
                        return Outcome::Close { reason: CloseReason::CommitFailed, xid };
                    }
                }
            }
        }
        Outcome::Reply(msg::success(xid, &body))
    }
}

/// The DRC key of a call: client address (no port), credential, xid, program,
/// version, procedure and argument checksum.
fn drc_key(header: &CallHeader, peer: SocketAddr, args: &[u8]) -> DrcKey {
    let cred = match &header.cred {
        Cred::None => DrcCred::None,
        Cred::Sys { uid, gid, .. } => DrcCred::Sys { uid: *uid, gid: *gid },
    };
    DrcKey {
        client: peer.ip().to_string(),
        xid: header.xid,
        prog: header.prog,
        vers: header.vers,
        proc_: header.proc_,
        args_sum: args_checksum(args),
        cred,
    }
}

/// The command recording `body` as the reply of the claimed call. The state
/// refuses oversize DRC entries, and that refusal would fail the effects too;
/// such a reply is sent unrecorded instead (its intent, if any, stays).
fn drc_record(held: &Claim, body: &[u8], peer: SocketAddr, name: &str) -> Option<Command> {
    if body.len() as u64 > hanfs_state::DRC_REPLY_BYTES_MAX {
        tracing::warn!(%peer, xid = held.key.xid, proc_ = name, bytes = body.len(), "reply too large for the DRC; not cached");
        return None;
    }
    Some(Command::DrcInsert { key: held.key.clone(), reply: body.to_vec(), now_ms: crate::clock::unix_ms() })
}

/// The test fault of the module doc, read when a dispatcher is built.
fn crash_after_execute() -> Option<String> {
    let faults = std::env::var(crate::node::FAULTS_ENV).is_ok_and(|v| v == "1");
    let name = std::env::var(CRASH_AFTER_EXECUTE_ENV).ok().filter(|n| !n.is_empty())?;
    if !faults {
        tracing::warn!("{CRASH_AFTER_EXECUTE_ENV} is ignored without {}=1", crate::node::FAULTS_ENV);
        return None;
    }
    tracing::warn!(proc_ = %name, "test fault armed: abort after executing this procedure");
    Some(name)
}

fn error_reply(xid: u32, e: ProcError, name: &str) -> Option<Vec<u8>> {
    match e {
        ProcError::GarbageArgs => Some(msg::accepted(xid, AcceptStat::GarbageArgs)),
        ProcError::SystemErr => {
            tracing::warn!(xid, proc_ = name, "SYSTEM_ERR");
            Some(msg::accepted(xid, AcceptStat::SystemErr))
        }
        ProcError::NoReply => None,
    }
}

/// What the replicated DRC holds for `key`: its reply, its intent, or nothing.
fn drc_lookup(shared: &RpcShared, key: &DrcKey) -> Option<DrcValue> {
    let state = shared.commit.state();
    let guard = match state.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.drc_entry(key).map(|e| e.value.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, RwLock};
    use std::time::Duration;

    use hanfs_raft::commit::{Commit, CommitFuture};
    use hanfs_state::State;

    use super::*;
    use crate::rpc::program::{ProcFuture, Recover};
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

    fn ran(ctx: Arc<Ctx>, _call: Call, _args: Vec<u8>) -> ProcFuture {
        note(&ctx, "run");
        Box::pin(async { Ok(Reply::new(b"ran!".to_vec())) })
    }

    fn ran_with_effect(ctx: Arc<Ctx>, _call: Call, _args: Vec<u8>) -> ProcFuture {
        note(&ctx, "run");
        Box::pin(async { Ok(Reply::with_effects(b"ran!".to_vec(), vec![Command::BumpEpoch])) })
    }

    fn recovered(ctx: Arc<Ctx>, _call: Call, _args: Vec<u8>) -> ProcFuture {
        note(&ctx, "recover");
        Box::pin(async { Ok(Reply::new(b"rcv!".to_vec())) })
    }

    const RECOVER: Recover<Ctx> = recovered;
    static PROCS: [Proc<Ctx>; 3] = [
        Proc { name: "ONCE", handler: ran, drc: Drc::Record, recover: Some(RECOVER) },
        Proc { name: "ONCE_EFFECT", handler: ran_with_effect, drc: Drc::Record, recover: Some(RECOVER) },
        Proc { name: "REPLY_ONLY", handler: ran_with_effect, drc: Drc::ReplyOnly, recover: None },
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
        state
            .write()
            .unwrap()
            .apply(&Command::DrcIntent { key: key.clone(), now_ms: crate::clock::unix_ms() })
            .unwrap();
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
    async fn a_reply_past_the_fence_is_a_close() {
        let (events, state) = (Events::default(), Arc::new(RwLock::new(State::default())));
        let commit = Arc::new(Mem { state, events: events.clone() });
        let d = dispatcher(commit, Fence::new(|| false), &events);
        let closed = Outcome::Close { reason: CloseReason::Fenced, xid: 12 };
        assert_eq!(d.call(call_record(12, 1, 5), peer(), Transport::Udp).await, closed);
        assert_eq!(d.shared().unanswered.get(CloseReason::Fenced), 1);
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(args_checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(args_checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
