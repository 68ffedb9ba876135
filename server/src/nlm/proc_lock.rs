//! TEST, LOCK, CANCEL and UNLOCK (and NM_LOCK): one core per operation that
//! returns the NLM result; the synchronous procedure replies with it, the
//! `_MSG` form sends it back as a `_RES` call (`fs/lockd/svc4proc.c`).
//! Every decision is the committed table's (`Outcome`), never the handler's;
//! TEST is a read of the applied table. In classic recovery's grace period
//! (`grace.rs`) TEST and non-reclaim LOCKs answer DENIED_GRACE_PERIOD. Locks
//! held outside hanfs on the exported file count too: `ofd.rs` tests them
//! before a LOCK is committed and for a TEST the table finds free, and takes
//! the table's locks as OFD locks after every commit (`commit_one`).

use std::sync::Arc;

use hanfs_state::locks::{CancelOutcome, LockOutcome, TestOutcome, UnlockOutcome};
use hanfs_state::{Command, NlmCommand, Outcome};

use super::file::{self, check_file, client_ip, holder, lock_args, log_reply, Need};
use super::ofd::Touched;
use super::xdr::{
    from_bytes, Nlm4CancArgs, Nlm4LockArgs, Nlm4Res, Nlm4Stats, Nlm4TestArgs, Nlm4TestRes, Nlm4TestRply,
    Nlm4UnlockArgs, Xdr,
};
use super::{NlmCtx, NLMPROC4_CANCEL_RES, NLMPROC4_LOCK_RES, NLMPROC4_TEST_RES, NLMPROC4_UNLOCK_RES};
use crate::rpc::program::{Args, Call, ProcError, ProcFuture, Reply};

pub(super) fn decode<T: Xdr>(args: &[u8]) -> Result<T, ProcError> {
    from_bytes(args).map_err(|_| ProcError::GarbageArgs)
}

/// Answer synchronously.
pub(super) fn reply<T: Xdr>(res: &T) -> Result<Reply, ProcError> {
    Ok(Reply::new(super::xdr::to_bytes(res)))
}

/// Answer a `_MSG` call: its result goes back as a `res_proc` call to the
/// caller's NLM; the call itself gets no RPC reply.
pub(super) fn reply_by_call<T: Xdr>(ctx: &NlmCtx, call: &Call, res_proc: u32, res: &T) -> Result<Reply, ProcError> {
    ctx.callbacks.res(client_ip(call.peer), res_proc, super::xdr::to_bytes(res));
    Err(ProcError::NoReply)
}

/// Commit one NLM command and return its outcome. A failed commit (this node
/// lost leadership) sends no reply: the client retransmits to the new active.
/// The files it changed are then reconciled with the OFD lock mirror.
pub(super) async fn commit_one(ctx: &NlmCtx, call: &Call, cmd: NlmCommand) -> Result<Outcome, ProcError> {
    let touched = Touched::of(&cmd);
    match ctx.commit.commit(vec![Command::Nlm(cmd)]).await {
        Ok(mut outcomes) if outcomes.len() == 1 => {
            let outcome = outcomes.pop().ok_or(ProcError::SystemErr)?;
            ctx.ofd.reconcile(touched, outcome.granted()).await;
            ctx.callbacks.granted(outcome.granted());
            Ok(outcome)
        }
        Ok(_) => {
            tracing::warn!(peer = %call.peer, xid = call.xid, "nlm: commit returned no outcome");
            Err(ProcError::SystemErr)
        }
        Err(e) => {
            tracing::warn!(peer = %call.peer, xid = call.xid, error = %e, "nlm: commit failed; no reply");
            Err(ProcError::NoReply)
        }
    }
}

// ------------------------------------------------------------------ TEST

async fn test_core(ctx: &Arc<NlmCtx>, call: &Call, a: Nlm4TestArgs, name: &'static str) -> Nlm4TestRes {
    let stat = match test_stat(ctx, call, &a).await {
        Ok(rply) => rply,
        Err(stat) => Nlm4TestRply::not_denied(stat)
            .unwrap_or_else(|| Nlm4TestRply::not_denied(Nlm4Stats::Failed).expect("FAILED is not DENIED")),
    };
    log_reply(name, call, stat.stat());
    Nlm4TestRes { cookie: a.cookie, stat }
}

async fn test_stat(ctx: &Arc<NlmCtx>, call: &Call, a: &Nlm4TestArgs) -> Result<Nlm4TestRply, Nlm4Stats> {
    // Classic recovery refuses every TEST in grace, as Linux (`grace.rs`).
    if ctx.grace.in_grace() {
        return Err(Nlm4Stats::DeniedGracePeriod);
    }
    let fid = check_file(ctx, call, a.alock.fh.as_bytes(), Need::Object).await?;
    let args = lock_args(fid, &a.alock, a.exclusive)?;
    let outcome = {
        let state = ctx.commit.state();
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        guard.nlm().test(&args)
    };
    match outcome {
        TestOutcome::Free => match ctx.ofd.local_holder(&args).await {
            Some(h) => Ok(Nlm4TestRply::denied(h)),
            None => Nlm4TestRply::not_denied(Nlm4Stats::Granted).ok_or(Nlm4Stats::Failed),
        },
        TestOutcome::Conflict(h) => Ok(Nlm4TestRply::denied(holder(&h))),
        TestOutcome::Invalid(_) => Err(Nlm4Stats::Failed),
    }
}

pub(super) fn test(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        reply(&test_core(&ctx, &call, a, "TEST").await)
    })
}

pub(super) fn test_msg(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        let res = test_core(&ctx, &call, a, "TEST_MSG").await;
        reply_by_call(&ctx, &call, NLMPROC4_TEST_RES, &res)
    })
}

// ------------------------------------------------------------------ LOCK

/// The one LOCK core: LOCK, LOCK_MSG and NM_LOCK (which never blocks).
async fn lock_core(ctx: &Arc<NlmCtx>, call: &Call, a: Nlm4LockArgs, name: &'static str) -> Result<Nlm4Res, ProcError> {
    let stat = match lock_stat(ctx, call, &a).await? {
        Ok(stat) | Err(stat) => stat,
    };
    log_reply(name, call, stat);
    Ok(Nlm4Res { cookie: a.cookie, stat })
}

async fn lock_stat(
    ctx: &Arc<NlmCtx>,
    call: &Call,
    a: &Nlm4LockArgs,
) -> Result<Result<Nlm4Stats, Nlm4Stats>, ProcError> {
    // Classic recovery grants only reclaims in grace (`grace.rs`).
    if !a.reclaim && ctx.grace.in_grace() {
        return Ok(Err(Nlm4Stats::DeniedGracePeriod));
    }
    let fid = match check_file(ctx, call, a.alock.fh.as_bytes(), Need::Object).await {
        Ok(fid) => fid,
        Err(stat) => return Ok(Err(stat)),
    };
    let args = match lock_args(fid, &a.alock, a.exclusive) {
        Ok(args) => args,
        Err(stat) => return Ok(Err(stat)),
    };
    if let Some(stat) = ctx.ofd.lock_refusal(&args, a.block).await {
        return Ok(Err(stat));
    }
    let reclaimer = a.reclaim.then(|| args.owner.caller_name.clone());
    let cmd = NlmCommand::Lock {
        args,
        block: a.block,
        client_addr: client_ip(call.peer).to_string(),
        now_ms: crate::clock::unix_ms(),
    };
    let outcome = commit_one(ctx, call, cmd).await?;
    if let Some(host) = reclaimer {
        ctx.grace.note_reclaim(&host);
    }
    let stat = match outcome {
        Outcome::Lock(effect) => match effect.outcome {
            LockOutcome::Granted => Nlm4Stats::Granted,
            LockOutcome::Denied(_) => Nlm4Stats::Denied,
            LockOutcome::Blocked => Nlm4Stats::Blocked,
            LockOutcome::Full(bound) => {
                tracing::warn!(peer = %call.peer, ?bound, "nlm lock refused: table full");
                Nlm4Stats::DeniedNolocks
            }
            LockOutcome::Invalid(_) => Nlm4Stats::Failed,
        },
        other => {
            tracing::warn!(?other, "nlm: LOCK committed with a foreign outcome");
            Nlm4Stats::Failed
        }
    };
    Ok(Ok(stat))
}

pub(super) fn lock(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        reply(&lock_core(&ctx, &call, a, "LOCK").await?)
    })
}

pub(super) fn lock_msg(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        let res = lock_core(&ctx, &call, a, "LOCK_MSG").await?;
        reply_by_call(&ctx, &call, NLMPROC4_LOCK_RES, &res)
    })
}

/// NM_LOCK: a LOCK from a host that is not monitored; it never blocks.
pub(super) fn nm_lock(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a: Nlm4LockArgs = decode(&args)?;
        let a = Nlm4LockArgs { block: false, ..a };
        reply(&lock_core(&ctx, &call, a, "NM_LOCK").await?)
    })
}

// ---------------------------------------------------------------- CANCEL

async fn cancel_core(
    ctx: &Arc<NlmCtx>,
    call: &Call,
    a: Nlm4CancArgs,
    name: &'static str,
) -> Result<Nlm4Res, ProcError> {
    let checked = match check_file(ctx, call, a.alock.fh.as_bytes(), Need::Export).await {
        Ok(fid) => lock_args(fid, &a.alock, a.exclusive),
        Err(stat) => Err(stat),
    };
    let stat = match checked {
        Err(stat) => stat,
        Ok(args) => match commit_one(ctx, call, NlmCommand::Cancel { args }).await? {
            // The module doc of `hanfs_state::locks` gives the reasons.
            Outcome::Cancel(CancelOutcome::Cancelled | CancelOutcome::NotFound) => Nlm4Stats::Granted,
            Outcome::Cancel(CancelOutcome::AlreadyGranted) => Nlm4Stats::Denied,
            _ => Nlm4Stats::Failed,
        },
    };
    log_reply(name, call, stat);
    Ok(Nlm4Res { cookie: a.cookie, stat })
}

pub(super) fn cancel(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        reply(&cancel_core(&ctx, &call, a, "CANCEL").await?)
    })
}

pub(super) fn cancel_msg(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        let res = cancel_core(&ctx, &call, a, "CANCEL_MSG").await?;
        reply_by_call(&ctx, &call, NLMPROC4_CANCEL_RES, &res)
    })
}

// ---------------------------------------------------------------- UNLOCK

async fn unlock_core(
    ctx: &Arc<NlmCtx>,
    call: &Call,
    a: Nlm4UnlockArgs,
    name: &'static str,
) -> Result<Nlm4Res, ProcError> {
    let checked = match check_file(ctx, call, a.alock.fh.as_bytes(), Need::Export).await {
        Ok(fid) => file::owner(&a.alock).map(|owner| (fid, owner)),
        Err(stat) => Err(stat),
    };
    let stat = match checked {
        Err(stat) => stat,
        Ok((file, owner)) => {
            let cmd = NlmCommand::Unlock { file, owner, range: file::range(&a.alock), now_ms: crate::clock::unix_ms() };
            match commit_one(ctx, call, cmd).await? {
                Outcome::Unlock(effect) => match effect.outcome {
                    UnlockOutcome::Released | UnlockOutcome::NothingHeld => Nlm4Stats::Granted,
                    UnlockOutcome::Full(_) => Nlm4Stats::DeniedNolocks,
                },
                _ => Nlm4Stats::Failed,
            }
        }
    };
    log_reply(name, call, stat);
    Ok(Nlm4Res { cookie: a.cookie, stat })
}

pub(super) fn unlock(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        reply(&unlock_core(&ctx, &call, a, "UNLOCK").await?)
    })
}

pub(super) fn unlock_msg(ctx: Arc<NlmCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let a = decode(&args)?;
        let res = unlock_core(&ctx, &call, a, "UNLOCK_MSG").await?;
        reply_by_call(&ctx, &call, NLMPROC4_UNLOCK_RES, &res)
    })
}
