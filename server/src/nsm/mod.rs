//! NSM, the Network Status Monitor, version 1 (program 100024; X/Open XNFS
//! chapter 11, nfs-utils `sm_inter.x`): hosts tell each other they restarted
//! (SM_NOTIFY with a new, odd state number), so locks held by or for a
//! restarted host can be dropped or reclaimed. hanfs's NSM runs in-process,
//! next to NLM, on the replicated monitor list and state number
//! (`hanfs_state::locks`).
//!
//! - STAT answers STAT_SUCC with this server's NSM state (odd, replicated).
//! - MON, UNMON and UNMON_ALL are for the local lock manager, as statd
//!   accepts them only from loopback: from anywhere else MON is STAT_FAIL and
//!   UNMON/UNMON_ALL change nothing (both still carry our state). The hosts
//!   that hold locks are monitored by the lock table itself.
//! - SIMU_CRASH changes nothing, from anywhere: a simulated crash would bump
//!   the state and start classic recovery, which transparent failover never
//!   does (the state goes up only when classic recovery runs).
//! - NOTIFY from a rebooted client (a state number not yet recorded for that
//!   name) commits `NlmCommand::Notify`: the host's locks, waiters and shares
//!   go, and waiters blocked behind them are granted (GRANTED_MSG callbacks).
//!   Hosts whose recorded lock address is the notifier's address are that
//!   client under another name (caller_name and mon_name can differ) and are
//!   freed too (`FreeAll`). A retransmitted NOTIFY changes nothing.
//!
//! [`notify`] sends this server's own SM_NOTIFY to its lock clients when
//! classic recovery runs (`nlm::grace`).
//!
//! [`xdr`] holds every NSM argument and result type, the SM_NOTIFY argument
//! and the `status` callback, with checked decoders and encoders.

pub mod notify;
pub mod xdr;

pub const SM_PROGRAM: u32 = 100_024;
pub const SM_VERSION: u32 = 1;

pub const SM_NULL: u32 = 0;
/// `sm_name` -> `sm_stat_res`.
pub const SM_STAT: u32 = 1;
/// `mon` -> `sm_stat_res`.
pub const SM_MON: u32 = 2;
/// `mon_id` -> `sm_stat`.
pub const SM_UNMON: u32 = 3;
/// `my_id` -> `sm_stat`.
pub const SM_UNMON_ALL: u32 = 4;
/// void -> void.
pub const SM_SIMU_CRASH: u32 = 5;
/// `stat_chge` -> void.
pub const SM_NOTIFY: u32 = 6;
/// Length of a procedure table indexed by procedure number.
pub const SM_PROCS_COUNT: usize = SM_NOTIFY as usize + 1;

use std::net::IpAddr;
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use hanfs_state::locks::{MonOutcome, MonitorId};
use hanfs_state::{Command, NlmCommand, Outcome};

use crate::nlm::callback::Callbacks;
use crate::nlm::ofd::{OfdMirror, Touched};
use crate::nlm::xdr::{from_bytes, to_bytes, Xdr};
use crate::rpc::program::{Args, Call, Drc, Handler, Proc, ProcError, ProcFuture, Program, Reply};
use crate::rpc::xdr::Reader;
use xdr::{Mon, MonId, MyId, SmName, SmRes, SmStat, SmStatRes, StatChge};

/// What the NSM handlers reach.
pub struct NsmCtx {
    /// The replicated monitor list, host states and lock table.
    pub commit: Arc<dyn Commit>,
    /// GRANTED_MSG for waiters a reboot notice frees.
    pub callbacks: Callbacks,
    /// The OFD lock mirror: a freed host's locks are released on the files too.
    pub ofd: Arc<OfdMirror>,
}

const fn p(name: &'static str, handler: Handler<NsmCtx>) -> Proc<NsmCtx> {
    Proc { name, handler, drc: Drc::Skip, recover: None, needs_intent: None }
}

static PROCS: [Proc<NsmCtx>; SM_PROCS_COUNT] = [
    p("NULL", null),
    p("STAT", stat),
    p("MON", mon),
    p("UNMON", unmon),
    p("UNMON_ALL", unmon_all),
    p("SIMU_CRASH", simu_crash),
    p("NOTIFY", notify),
];

pub static PROGRAM: Program<NsmCtx> = Program { name: "nsm", prog: SM_PROGRAM, vers: SM_VERSION, procs: &PROCS };

fn decode<T: Xdr>(args: &[u8]) -> Result<T, ProcError> {
    from_bytes(args).map_err(|_| ProcError::GarbageArgs)
}

fn reply<T: Xdr>(res: &T) -> Result<Reply, ProcError> {
    Ok(Reply::new(to_bytes(res)))
}

fn no_args(args: &[u8]) -> Result<(), ProcError> {
    Reader::new(args).finish().map_err(|_| ProcError::GarbageArgs)
}

/// This server's NSM state number (odd).
fn own_state(ctx: &NsmCtx) -> i32 {
    let state = ctx.commit.state();
    let guard = state.read().unwrap_or_else(|p| p.into_inner());
    guard.nlm().nsm_state() as i32
}

fn loopback(call: &Call) -> bool {
    match call.peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

fn monitor_id(id: &MyId) -> Option<MonitorId> {
    Some(MonitorId {
        my_name: utf8(id.my_name.as_bytes())?,
        my_prog: id.my_prog,
        my_vers: id.my_vers,
        my_proc: id.my_proc,
    })
}

/// Commit one command; a failed commit (leadership lost) sends no reply.
/// The locks it freed or granted are then reconciled with the OFD lock mirror.
async fn commit_one(ctx: &NsmCtx, call: &Call, cmd: NlmCommand) -> Result<Outcome, ProcError> {
    let touched = Touched::of(&cmd);
    match ctx.commit.commit(vec![Command::Nlm(cmd)]).await {
        Ok(mut outcomes) => {
            let outcome = outcomes.pop().ok_or(ProcError::SystemErr)?;
            ctx.ofd.reconcile(touched, outcome.granted()).await;
            ctx.callbacks.granted(outcome.granted());
            Ok(outcome)
        }
        Err(e) => {
            tracing::warn!(peer = %call.peer, xid = call.xid, error = %e, "nsm: commit failed; no reply");
            Err(ProcError::NoReply)
        }
    }
}

fn null(_ctx: Arc<NsmCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        Ok(Reply::new(Vec::new()))
    })
}

fn stat(ctx: Arc<NsmCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let _: SmName = decode(&args)?;
        reply(&SmStatRes { res_stat: SmRes::StatSucc, state: own_state(&ctx) })
    })
}

fn mon(ctx: Arc<NsmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m: Mon = decode(&args)?;
        let fail = SmStatRes { res_stat: SmRes::StatFail, state: own_state(&ctx) };
        if !loopback(&call) {
            tracing::info!(peer = %call.peer, "nsm MON from a remote host refused");
            return reply(&fail);
        }
        let (Some(mon_name), Some(id)) = (utf8(m.mon_id.mon_name.as_bytes()), monitor_id(&m.mon_id.my_id)) else {
            return reply(&fail);
        };
        match commit_one(&ctx, &call, NlmCommand::Mon { mon_name, id, priv_: m.private }).await? {
            Outcome::Mon(MonOutcome::Monitored { state }) => {
                reply(&SmStatRes { res_stat: SmRes::StatSucc, state: state as i32 })
            }
            _ => reply(&fail),
        }
    })
}

fn unmon(ctx: Arc<NsmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m: MonId = decode(&args)?;
        let parts = (utf8(m.mon_name.as_bytes()), monitor_id(&m.my_id));
        if let (true, (Some(mon_name), Some(id))) = (loopback(&call), parts) {
            if let Outcome::Unmon(state) = commit_one(&ctx, &call, NlmCommand::Unmon { mon_name, id }).await? {
                return reply(&SmStat { state: state as i32 });
            }
        }
        reply(&SmStat { state: own_state(&ctx) })
    })
}

fn unmon_all(ctx: Arc<NsmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m: MyId = decode(&args)?;
        if let (true, Some(id)) = (loopback(&call), monitor_id(&m)) {
            if let Outcome::Unmon(state) = commit_one(&ctx, &call, NlmCommand::UnmonAll { id }).await? {
                return reply(&SmStat { state: state as i32 });
            }
        }
        reply(&SmStat { state: own_state(&ctx) })
    })
}

fn simu_crash(_ctx: Arc<NsmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        tracing::info!(peer = %call.peer, "nsm SIMU_CRASH ignored (transparent failover keeps the NSM state)");
        Ok(Reply::new(Vec::new()))
    })
}

/// SM_NOTIFY: see the module doc.
fn notify(ctx: Arc<NsmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let c: StatChge = decode(&args)?;
        let Some(mon_name) = utf8(c.mon_name.as_bytes()) else {
            return Ok(Reply::new(Vec::new()));
        };
        let now_ms = crate::clock::unix_ms();
        let cmd = NlmCommand::Notify { mon_name: mon_name.clone(), state: c.state as u32, now_ms };
        let Outcome::Notify(effect) = commit_one(&ctx, &call, cmd).await? else {
            return Ok(Reply::new(Vec::new()));
        };
        if !effect.outcome.restarted {
            tracing::debug!(peer = %call.peer, host = %mon_name, state = c.state, "nsm NOTIFY retransmitted; nothing to do");
            return Ok(Reply::new(Vec::new()));
        }
        tracing::info!(peer = %call.peer, host = %mon_name, state = c.state, freed = ?effect.outcome.freed, "nsm NOTIFY: host restarted; its locks are freed");
        let caller = crate::nlm::client_ip(call.peer).to_string();
        let aliases: Vec<String> = {
            let state = ctx.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            guard.nlm().hosts().named_at(&caller).filter(|n| *n != mon_name).map(str::to_string).collect()
        };
        for name in aliases {
            tracing::info!(peer = %call.peer, host = %name, "nsm NOTIFY: freeing the locks of a name at the same address");
            commit_one(&ctx, &call, NlmCommand::FreeAll { caller_name: name, now_ms }).await?;
        }
        Ok(Reply::new(Vec::new()))
    })
}
