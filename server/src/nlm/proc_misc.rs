//! The rest of NLM v4: NULL; GRANTED and GRANTED_MSG (we are a server, not a
//! client: there is never a blocked request of ours to grant, so LCK_DENIED,
//! as Linux lockd answers a GRANTED it has no request for); the `_RES`
//! procedures (only GRANTED_RES matters: it ends a GRANTED_MSG callback); SHARE,
//! UNSHARE and FREE_ALL.

use std::sync::Arc;

use hanfs_state::locks::{Share, ShareAccess, ShareMode, ShareOutcome, ShareOwner};
use hanfs_state::{NlmCommand, Outcome};

use super::callback::grant_id;
use super::file::{check_file, client_ip, log_reply, Need};
use super::proc_lock::{commit_one, decode, reply, reply_by_call};
use super::xdr::{Nlm4Notify, Nlm4Res, Nlm4Share, Nlm4ShareArgs, Nlm4ShareRes, Nlm4Stats, Nlm4TestArgs, Nlm4TestRes};
use super::{NlmCtx, NLMPROC4_GRANTED_RES};
use crate::rpc::program::{Args, Call, ProcError, ProcFuture, Reply};
use crate::rpc::xdr::Reader;

pub(super) fn null(_ctx: Arc<NlmCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        Reader::new(&args).finish().map_err(|_| ProcError::GarbageArgs)?;
        Ok(Reply::new(Vec::new()))
    })
}

fn granted_res(call: &Call, a: Nlm4TestArgs, name: &'static str) -> Nlm4Res {
    log_reply(name, call, Nlm4Stats::Denied);
    Nlm4Res { cookie: a.cookie, stat: Nlm4Stats::Denied }
}

pub(super) fn granted(_ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        reply(&granted_res(&call, a, "GRANTED"))
    })
}

pub(super) fn granted_msg(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        let res = granted_res(&call, a, "GRANTED_MSG");
        reply_by_call(&ctx, &call, NLMPROC4_GRANTED_RES, &res)
    })
}

/// TEST_RES: a client's answer to a TEST_MSG we never send; checked, ignored.
pub(super) fn test_res(_ctx: Arc<NlmCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let _: Nlm4TestRes = decode(&args)?;
        Ok(Reply::new(Vec::new()))
    })
}

/// LOCK_RES, CANCEL_RES, UNLOCK_RES: answers to calls we never make; checked, ignored.
pub(super) fn other_res(_ctx: Arc<NlmCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let _: Nlm4Res = decode(&args)?;
        Ok(Reply::new(Vec::new()))
    })
}

/// GRANTED_RES: the client has its GRANTED_MSG; stop re-sending. Any status
/// but DENIED_GRACE_PERIOD ends the callback (the lock stays either way, as
/// in Linux `nlmsvc_grant_reply`). Only the host the grant was sent to may
/// end it. Answered with a void reply, as Linux lockd does (its `_RES` calls
/// wait for one).
pub(super) fn granted_res_proc(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let res: Nlm4Res = decode(&args)?;
        let Some(id) = grant_id(res.cookie.as_bytes()) else {
            tracing::debug!(peer = %call.peer, "nlm GRANTED_RES with a cookie we never sent; ignored");
            return Ok(Reply::new(Vec::new()));
        };
        if res.stat == Nlm4Stats::DeniedGracePeriod {
            return Ok(Reply::new(Vec::new()));
        }
        let from_grantee = {
            let state = ctx.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            let nlm = guard.nlm();
            let caller = client_ip(call.peer).to_string();
            let grantee = nlm.locks().pending_grants().find(|(pid, _)| *pid == id).map(|(_, g)| &g.owner.caller_name);
            let ok = grantee.is_some_and(|host| nlm.hosts().addr(host) == Some(caller.as_str()));
            ok
        };
        if from_grantee {
            commit_one(&ctx, &call, NlmCommand::GrantAcknowledged { id }).await?;
            tracing::debug!(peer = %call.peer, id, "nlm GRANTED_RES: callback acknowledged");
        }
        Ok(Reply::new(Vec::new()))
    })
}

/// SM_NOTIFY (16, Linux-private): a local statd relaying a host's reboot.
/// hanfs's NSM is in-process and handles SM_NOTIFY itself, so this is
/// checked and answered, and changes nothing.
pub(super) fn sm_notify(_ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let _: crate::nsm::xdr::SmStatus = decode(&args)?;
        tracing::debug!(peer = %call.peer, "nlm SM_NOTIFY (private procedure) ignored");
        Ok(Reply::new(Vec::new()))
    })
}

// ----------------------------------------------------------------- SHARE

fn share_owner(share: &Nlm4Share) -> Result<ShareOwner, Nlm4Stats> {
    let caller_name = std::str::from_utf8(share.caller_name.as_bytes()).map_err(|_| Nlm4Stats::Failed)?;
    Ok(ShareOwner { caller_name: caller_name.to_string(), oh: share.oh.as_bytes().to_vec() })
}

async fn share_stat(ctx: &Arc<NlmCtx>, call: &Call, a: &Nlm4ShareArgs, unshare: bool) -> Result<Nlm4Stats, ProcError> {
    let need = if unshare { Need::Export } else { Need::Object };
    let file = match check_file(ctx, call, a.share.fh.as_bytes(), need).await {
        Ok(file) => file,
        Err(stat) => return Ok(stat),
    };
    let owner = match share_owner(&a.share) {
        Ok(owner) => owner,
        Err(stat) => return Ok(stat),
    };
    if unshare {
        commit_one(ctx, call, NlmCommand::Unshare { file, owner }).await?;
        return Ok(Nlm4Stats::Granted);
    }
    let (Some(mode), Some(access)) =
        (ShareMode::from_bits(a.share.mode as u32), ShareAccess::from_bits(a.share.access as u32))
    else {
        return Ok(Nlm4Stats::Failed);
    };
    let share = Share { owner, mode, access };
    Ok(match commit_one(ctx, call, NlmCommand::Share { file, share }).await? {
        Outcome::Share(ShareOutcome::Granted) => Nlm4Stats::Granted,
        Outcome::Share(ShareOutcome::Denied) => Nlm4Stats::Denied,
        Outcome::Share(ShareOutcome::Full(_)) => Nlm4Stats::DeniedNolocks,
        _ => Nlm4Stats::Failed,
    })
}

fn share_proc<const UNSHARE: bool>(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a: Nlm4ShareArgs = decode(&args)?;
        let stat = share_stat(&ctx, &call, &a, UNSHARE).await?;
        log_reply(if UNSHARE { "UNSHARE" } else { "SHARE" }, &call, stat);
        reply(&Nlm4ShareRes { cookie: a.cookie, stat, sequence: 0 })
    })
}

pub(super) fn share(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    share_proc::<false>(ctx, call, args)
}

pub(super) fn unshare(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    share_proc::<true>(ctx, call, args)
}

// -------------------------------------------------------------- FREE_ALL

/// FREE_ALL: every lock, waiter and share of the named host goes (waiters
/// behind them are granted). Like Linux, which looks the host up by name
/// and address, only the host itself may: a name recorded at another
/// address is left alone.
pub(super) fn free_all(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a: Nlm4Notify = decode(&args)?;
        let Ok(name) = std::str::from_utf8(a.name.as_bytes()) else {
            return Ok(Reply::new(Vec::new()));
        };
        let elsewhere = {
            let state = ctx.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            let caller = client_ip(call.peer).to_string();
            guard.nlm().hosts().addr(name).is_some_and(|addr| addr != caller)
        };
        if elsewhere {
            tracing::info!(peer = %call.peer, host = name, "nlm FREE_ALL for a host at another address; ignored");
            return Ok(Reply::new(Vec::new()));
        }
        let cmd = NlmCommand::FreeAll { caller_name: name.to_string(), now_ms: crate::clock::unix_ms() };
        if let Outcome::FreeAll(effect) = commit_one(&ctx, &call, cmd).await? {
            tracing::info!(peer = %call.peer, host = name, freed = ?effect.outcome, "nlm FREE_ALL");
        }
        Ok(Reply::new(Vec::new()))
    })
}
