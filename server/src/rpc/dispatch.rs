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
//! durable), so it waits for one commit; the record is deferred
//! (`Commit::commit_deferred`) and rides in the next call's intent entry. A `Drc::ReplyOnly` call records no
//! intent: its reply is committed with its effects.
//!
//! Fault injection, for tests: with `HANFS_TEST_FAULTS=1` at start,
//! `HANFS_TEST_CRASH_AFTER_EXECUTE=<procedure name>` aborts the process right
//! after that procedure's handler ran and before its reply is recorded.
//!
//! A `Dispatcher<C>` serves the programs of one context type `C`, and hands
//! that context to every handler; a program with a new context type gets its
//! own dispatcher (and listener) without any change here.
//!
//! Every call is counted in the node's `metrics::Metrics` (atomics only, no
//! lock or allocation): refusals before a procedure is found by
//! `metrics::Refusal`; a procedure's calls, its errors by `ErrorKind`
//! (GARBAGE_ARGS, SYSTEM_ERR, a non-OK NFSv3 status, left unanswered) and
//! its latency from arrival to outcome; the DRC's hits, recoveries and
//! dropped retransmissions.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use hanfs_state::{Command, DrcCred, DrcKey, DrcValue};

use super::msg::{self, AcceptStat, CallHeader};
use super::program::{Args, Call, Cred, Drc, Proc, ProcError, Program, Reply, Transport};
use super::shared::{Busy, Claim, CloseReason, RpcShared};
use crate::metrics::{ErrorKind, ProcStats, ProgramStats, Refusal};

/// With `HANFS_TEST_FAULTS=1`: the procedure name after whose execution the
/// process aborts, before the reply is recorded.
pub const CRASH_AFTER_EXECUTE_ENV: &str = "HANFS_TEST_CRASH_AFTER_EXECUTE";

/// What a transport does with one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply message.
    Reply(msg::Message),
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
    /// The program and its index in the registry.
    Found(usize, &'static Program<C>),
    Mismatch {
        low: u32,
        high: u32,
    },
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
        for (i, p) in self.programs.iter().enumerate().filter(|(_, p)| p.prog == prog) {
            if p.vers == vers {
                return Lookup::Found(i, p);
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
    /// The counters of each program of `registry`, in the same order.
    stats: Vec<Arc<ProgramStats>>,
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
        let stats = registry
            .programs()
            .iter()
            .map(|p| {
                let names: Vec<&'static str> = p.procs.iter().map(|x| x.name).collect();
                shared.metrics.program(p.name, p.prog, p.vers, &names)
            })
            .collect();
        Dispatcher { shared, ctx, registry, stats, crash_after_execute: crash_after_execute() }
    }

    pub fn shared(&self) -> &Arc<RpcShared> {
        &self.shared
    }

    pub fn registry(&self) -> &Registry<C> {
        &self.registry
    }

    /// Handle one call record. The fence (`RpcShared::serving_now`) is
    /// checked before the call runs and again just before its reply is
    /// returned: a node that may no longer serve returns `Outcome::Close`
    /// instead, as for a failed commit. Every close is counted in
    /// `RpcShared::unanswered`.
    pub async fn call(&self, record: Vec<u8>, peer: SocketAddr, transport: Transport) -> Outcome {
        let started = Instant::now();
        let (outcome, counted) = self.call_unfenced(record, peer, transport).await;
        let outcome = match outcome {
            Outcome::Reply(reply) if !self.shared.serving_now() => {
                Outcome::Close { reason: CloseReason::Fenced, xid: reply.xid() }
            }
            other => other,
        };
        if let Outcome::Close { reason, xid } = &outcome {
            let count = self.shared.unanswered.count(*reason);
            tracing::debug!(%peer, xid, ?transport, ?reason, count, "call left unanswered");
            if let Some(counted) = counted {
                counted.failed(ErrorKind::Unanswered);
            }
        }
        if let Some(counted) = counted {
            counted.took(started);
        }
        outcome
    }

    /// The outcome, and the counters of the procedure called (`None`: the
    /// call was refused before one was found; counted as a `Refusal`).
    async fn call_unfenced(
        &self,
        record: Vec<u8>,
        peer: SocketAddr,
        transport: Transport,
    ) -> (Outcome, Option<&ProcStats>) {
        let metrics = &self.shared.metrics;
        let header = match msg::decode_call(&record) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%peer, error = ?e, "refused call header");
                metrics.refuse(match e {
                    msg::HeaderError::RpcMismatch { .. } => Refusal::RpcMismatch,
                    msg::HeaderError::Auth { .. } => Refusal::Auth,
                    msg::HeaderError::Drop | msg::HeaderError::Garbage { .. } => Refusal::BadHeader,
                });
                return (e.reply().map_or(Outcome::Silent, |m| Outcome::Reply(m.into())), None);
            }
        };
        let (index, program) = match self.registry.find(header.prog, header.vers) {
            Lookup::Found(i, p) => (i, p),
            Lookup::Mismatch { low, high } => {
                metrics.refuse(Refusal::ProgMismatch);
                return (Outcome::Reply(msg::prog_mismatch(header.xid, low, high).into()), None);
            }
            Lookup::Unavailable => {
                metrics.refuse(Refusal::ProgUnavail);
                return (Outcome::Reply(msg::accepted(header.xid, AcceptStat::ProgUnavail).into()), None);
            }
        };
        let number = usize::try_from(header.proc_).ok();
        let (Some(proc_), Some(program_stats), Some(counted)) = (
            number.and_then(|i| program.procs.get(i)),
            self.stats.get(index),
            number.and_then(|i| self.stats.get(index).and_then(|s| s.proc_(i))),
        ) else {
            metrics.refuse(Refusal::ProcUnavail);
            return (Outcome::Reply(msg::accepted(header.xid, AcceptStat::ProcUnavail).into()), None);
        };
        counted.called();
        // The arguments keep the record's buffer, the header skipped (no copy
        // of a 1 MiB WRITE's payload).
        let args = Args::new(record, header.args_offset);
        tracing::trace!(%peer, xid = header.xid, program = program.name, proc_ = proc_.name, "call");
        let counters = Counters { program: program_stats, proc_: counted };
        (self.run(&header, proc_, args, peer, transport, counters).await, Some(counted))
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
        args: Args,
        peer: SocketAddr,
        transport: Transport,
        counters: Counters<'_>,
    ) -> Outcome {
        let xid = header.xid;
        // A node that may no longer serve does not run calls either (checked
        // again after the intent commit, just before the handler): a call read
        // before a pause (SIGSTOP, a stall) and run after the lease ended
        // would write over what the new active wrote since (the soak saw it).
        // This narrows the window to a pause inside the handler itself.
        if !self.shared.serving_now() {
            return Outcome::Close { reason: CloseReason::Fenced, xid };
        }
        let drc_stats = &self.shared.metrics.drc;
        // Held until the reply is recorded; released however the call ends.
        let mut claim = None;
        let mut step = Step::Execute;
        let mut intent_ms = None;
        if proc_.drc != Drc::Skip {
            let key = drc_key(header, peer, &args);
            let held = match Claim::take(&self.shared.in_progress, key) {
                Ok(held) => held,
                Err(Busy::Running) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "retransmission while in progress; dropped");
                    drc_stats.in_progress.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Silent;
                }
                Err(Busy::Replied(body)) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "answered from the reply being recorded");
                    drc_stats.hits.fetch_add(1, Ordering::Relaxed);
                    counters.replied(&body);
                    return Outcome::Reply(msg::success(xid, body));
                }
            };
            match drc_lookup(&self.shared, &held.key) {
                Some((DrcValue::Reply(body), _)) => {
                    tracing::debug!(%peer, xid, proc_ = proc_.name, "answered from the DRC");
                    drc_stats.hits.fetch_add(1, Ordering::Relaxed);
                    counters.replied(&body);
                    return Outcome::Reply(msg::success(xid, body));
                }
                Some((DrcValue::Intent, time_ms)) => {
                    tracing::info!(%peer, xid, proc_ = proc_.name, "intent without a reply; recovering from the disk");
                    drc_stats.recovered.fetch_add(1, Ordering::Relaxed);
                    step = Step::Recover;
                    intent_ms = Some(time_ms);
                }
                None if proc_.drc == Drc::Record && proc_.needs_intent.is_none_or(|needs| needs(&args)) => {
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
        if !self.shared.serving_now() {
            return Outcome::Close { reason: CloseReason::Fenced, xid };
        }
        let run = match step {
            Step::Execute => proc_.handler,
            Step::Recover => proc_.recover.unwrap_or(proc_.handler),
        };
        let call = Call { peer, xid, cred: header.cred.clone(), transport, intent_ms };
        let reply = match run(self.ctx.clone(), call, args).await {
            Ok(reply) => reply,
            Err(e) => {
                match e {
                    ProcError::GarbageArgs => counters.proc_.failed(ErrorKind::GarbageArgs),
                    ProcError::SystemErr => counters.proc_.failed(ErrorKind::SystemErr),
                    ProcError::NoReply => {}
                }
                return error_reply(xid, e, proc_.name).map_or(Outcome::Silent, |m| Outcome::Reply(m.into()));
            }
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
                    if let Err(e) = shared.commit.commit_deferred(vec![record]).await {
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
        counters.replied(&body);
        Outcome::Reply(msg::success(xid, body))
    }
}

/// The counters one call adds to.
#[derive(Clone, Copy)]
struct Counters<'a> {
    program: &'a ProgramStats,
    proc_: &'a ProcStats,
}

impl Counters<'_> {
    /// A successful reply with result `body`: an error if its status is not OK.
    fn replied(&self, body: &[u8]) {
        self.program.check_status(self.proc_, body);
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

/// What the replicated DRC holds for `key` (its reply or its intent, with
/// the time it was recorded), or nothing.
fn drc_lookup(shared: &RpcShared, key: &DrcKey) -> Option<(DrcValue, u64)> {
    let state = shared.commit.state();
    let guard = match state.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.drc_entry(key).map(|e| (e.value.clone(), e.time_ms))
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
