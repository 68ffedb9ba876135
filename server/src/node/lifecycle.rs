//! Promote and demote a storage node, driven by `RaftNode::leadership()`.
//!
//! Promote, once the watch says `Leader` (elected, everything committed
//! applied, the old leader's lease over — all inside `Leadership`) and
//! the node is not standing down:
//! 1. run `on_promote` (bounded by `hooks.timeout_ms`);
//! 2. claim the VIP, if configured: first destroy every leftover TCP socket
//!    on it (`conns::destroy_stale`, as `ss -K`), then add the address;
//! 3. seed the replicated export table from this node's config if it was
//!    never seeded, open every export the table serves (refused if one is
//!    not on the filesystem recorded for it), and commit their identities
//!    (idempotent) with `BumpEpoch` through Raft, in one entry: a new write
//!    verifier for the new active period (`single::open_and_commit`);
//! 4. open the portmap, MOUNT and NFS listeners on `server.listen`;
//! 5. announce the VIP (gratuitous ARP), only now: a client it redirects, or
//!    whose retransmission reaches the address, must not find it without a
//!    listener (a refused connect costs the kernel client ~3 s of backoff);
//! 6. tickle every client connection an earlier active recorded, so those
//!    clients reset and reconnect at once, and forget them
//!    (`conns::tickle_and_forget`). From step 4 on, this period's own
//!    connections on the VIP are recorded (`conns::start_recording`).
//!
//! While it serves, the node also serves each change of the replicated
//! export table: the admin command that made it refreshes the served view at
//! once, and `hold` refreshes it whenever it sees the table's revision move
//! (`crate::live`).
//!
//! `status` shows this node serving from the moment its listeners are open
//! (step 4), before the announcement. Then log `serving` with how long the
//! promotion took (from this node seeing itself elected in its current term,
//! or, when it regains the lease in the same term, from the end of its
//! demotion, to listeners open), and commit it (`RecordPromotion`) so
//! `status` shows the last failover on every node.
//!
//! Demote, when the watch leaves `Leader` (leadership or lease lost), when the
//! node starts standing down (switchover), or on stop: release the VIP, close
//! the listeners and drop every connection at once (no FIN reaches a client
//! then: `demote`), run `on_demote`; log
//! `demoted` with its reason (for a lost leadership, the leadership watch's:
//! when the lease expired and each peer's newest acknowledgement, another
//! leader, a new term). Replies are fenced before that too:
//! `RpcShared::serving_now`.
//!
//! A failed promotion step undoes the earlier ones (VIP released, `on_demote`
//! run) and then the node steps aside (`stand_down`: heartbeats and elections
//! off for at most `STAND_DOWN_WAIT_MS`) so the other storage node can take
//! over; if nobody does (it is down), this node is leader again afterwards and
//! retries the promotion after `PROMOTE_RETRY_MS`.
//!
//! `stand_down` is also the switchover's (`control`): stop serving first (the
//! standing-down flag makes this task demote), then let Raft step aside
//! (`RaftNode::step_aside`), then resume.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hanfs_raft::commit::Commit;
use hanfs_raft::handover::poll_until;
use hanfs_raft::lease::Leadership;
use hanfs_raft::types::NodeId;
use hanfs_state::{Command, Promotion};
use tokio::sync::watch;

use super::hooks::{self, HookError};
use super::listen::{Services, Serving};
use super::shared::Shared;
use super::single::{open_and_commit, services};
use super::NodeError;
use crate::vip::{Vip, VipError, VIP_RENEW_MS};

/// Backstop period of the lifecycle's wait (changes normally wake it at once).
pub const LIFECYCLE_POLL_MS: u64 = 50;
/// Pause before promoting again after a failed promotion.
pub const PROMOTE_RETRY_MS: u64 = 1_000;
/// How long a node whose promotion failed steps aside for the other one.
pub const STAND_DOWN_WAIT_MS: u64 = 3_000;

/// Why a promotion failed (what it had done is undone by then).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PromoteError {
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("claiming the VIP {addr}: {error}")]
    ClaimVip { addr: IpAddr, error: VipError },
    /// Building the services or opening the listeners.
    #[error("{0}")]
    Start(NodeError),
    #[error("announcing the VIP {addr}: {error}")]
    AnnounceVip { addr: IpAddr, error: VipError },
}

/// An open active period.
struct Active {
    services: Arc<Services>,
    serving: Serving,
    vip: Option<Vip>,
    /// Commits this period's connection events (`conns`); aborted at demotion.
    recording: Option<tokio::task::JoinHandle<()>>,
}

fn may_serve(shared: &Shared, leadership: &watch::Receiver<Leadership>) -> bool {
    !shared.is_standing_down() && matches!(*leadership.borrow(), Leadership::Leader { .. })
}

/// The lifecycle task of a storage node; ends (demoted) when `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut leadership = shared.raft.leadership();
    let mut raft = shared.raft.raft_watch();
    // The term this node last saw itself elected in, and when (promotion
    // timing); reset by a demotion, so a re-promotion counts from then.
    let mut elected_at: Option<(u64, Instant)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        match (raft.elected_term(), elected_at) {
            (Some(term), Some((seen, _))) if term == seen => {}
            (Some(term), _) => elected_at = Some((term, Instant::now())),
            (None, _) => elected_at = None,
        }
        if may_serve(&shared, &leadership) {
            let started = elected_at.map_or_else(Instant::now, |(_, at)| at);
            match promote(&shared).await {
                Ok(active) => {
                    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let ports = active.serving.ports();
                    shared.update_active(|a| {
                        a.vip_held = active.vip.is_some();
                        a.last_promotion_unix_ms = Some(crate::clock::unix_ms());
                        a.last_promotion_took_ms = Some(took_ms);
                        a.last_error = None;
                    });
                    shared.metrics.promoted(took_ms);
                    let listen = shared.config.listen;
                    let exports = active.services.nfs.live.load().exports.all().count();
                    tracing::info!(%listen, ?ports, took_ms, exports, "serving");
                    // For `status` on every node; service does not depend on it.
                    let record = Promotion { node_id: shared.raft.id, at_unix_ms: crate::clock::unix_ms(), took_ms };
                    if let Err(e) = active.services.commit.commit(vec![Command::RecordPromotion(record)]).await {
                        tracing::warn!(error = %e, "recording the promotion for status failed");
                    }
                    let reason = hold(&shared, &active, &mut leadership, &mut stop).await;
                    demote(&shared, active, &reason).await;
                    // A re-promotion in the same term is timed from here.
                    elected_at = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "promotion failed; stepping aside for the other storage node");
                    shared.update_active(|a| a.last_error = Some(format!("promotion failed: {e}")));
                    let _ = stand_down(&shared, None, STAND_DOWN_WAIT_MS).await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(PROMOTE_RETRY_MS)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            continue;
        }
        tokio::select! {
            _ = leadership.changed() => {}
            _ = raft.changed() => {}
            _ = shared.wake.notified() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(LIFECYCLE_POLL_MS)) => {}
        }
    }
}

/// Step aside: stop serving (the lifecycle demotes), then let Raft switch
/// heartbeats and elections off so another storage node gets elected, wait up
/// to `wait_ms` for a leader other than this node (`target`, if given), and
/// switch them back on (`RaftNode::step_aside`). Returns the new leader, if
/// one was seen.
pub(crate) async fn stand_down(shared: &Shared, target: Option<NodeId>, wait_ms: u64) -> Option<NodeId> {
    shared.set_standing_down(true);
    // Wait (bounded) until the lifecycle has closed the listeners.
    let _ = poll_until(wait_ms, || !shared.active().serving).await;
    let leader = shared.raft.step_aside(target, wait_ms).await;
    shared.set_standing_down(false);
    leader
}

/// Wait while this node may serve; returns why it may not any more. Meanwhile
/// renew the VIP, and serve the replicated export table as it changes (a
/// change whose admin command did not refresh the served view, e.g. one
/// committed while this node was promoting).
async fn hold(
    shared: &Shared,
    active: &Active,
    leadership: &mut watch::Receiver<Leadership>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    let vip = active.vip.as_ref();
    let live = &active.services.nfs.live;
    // First renewal at once: the promotion steps since the claim took time.
    let mut renewed: Option<Instant> = None;
    let mut renew_failing = false;
    while may_serve(shared, leadership) && !*stop.borrow() {
        // Renew the VIP's lifetime while, and only while, this node may serve:
        // a process that stops getting here (stopped, stuck) loses the VIP.
        if let Some(vip) = vip {
            if renewed.is_none_or(|t| t.elapsed() >= Duration::from_millis(VIP_RENEW_MS)) {
                renewed = Some(Instant::now());
                match vip.add_address().await {
                    Ok(()) if renew_failing => {
                        tracing::info!("VIP renewal works again");
                        renew_failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !renew_failing => {
                        tracing::warn!(error = %e, "renewing the VIP's lifetime failed; retrying every second");
                        renew_failing = true;
                    }
                    Err(_) => {}
                }
            }
        }
        let state = active.services.commit.state();
        let moved = state.read().unwrap_or_else(|p| p.into_inner()).exports_revision() != live.load().revision;
        if moved {
            let live = live.clone();
            let _ = tokio::task::spawn_blocking(move || live.refresh(&state)).await;
        }
        tokio::select! {
            _ = leadership.changed() => {}
            _ = shared.wake.notified() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(LIFECYCLE_POLL_MS)) => {}
        }
    }
    if *stop.borrow() {
        "stopping".to_string()
    } else if shared.is_standing_down() {
        "standing down (switchover or failed promotion)".to_string()
    } else {
        match shared.raft.last_demotion() {
            Some(reason) => format!("leadership lost: {reason}"),
            None => "leadership lost".to_string(),
        }
    }
}

/// Promotion steps 4-7 (see the module doc). On failure, what was done is undone.
async fn promote(shared: &Shared) -> Result<Active, PromoteError> {
    let hooks_cfg = &shared.setup.hooks;
    let id = shared.raft.id;
    hooks::run("promote", hooks_cfg.on_promote.as_deref(), id, hooks_cfg.timeout_ms).await?;
    let vip = match &shared.vip {
        None => None,
        Some(vip) => match claim_address(vip).await {
            Ok(()) => Some(vip.clone()),
            Err(e) => {
                undo(shared, None).await;
                return Err(PromoteError::ClaimVip { addr: vip.config().addr, error: e });
            }
        },
    };
    let commit: Arc<dyn Commit> = shared.raft.commit.clone();
    let view = match open_and_commit(&shared.config, &commit).await {
        Ok(view) => view,
        Err(e) => {
            undo(shared, vip).await;
            return Err(PromoteError::Start(e));
        }
    };
    let services = match services(shared.config.clone(), commit, shared.fence(), view, &shared.metrics) {
        Ok(s) => {
            let s = Arc::new(s);
            shared.serving.set(&s.nfs.live);
            s
        }
        Err(e) => {
            undo(shared, vip).await;
            return Err(PromoteError::Start(e));
        }
    };
    let recording = vip.as_ref().map(|v| {
        let (recorder, task) = super::conns::start_recording(services.commit.clone(), v.config().addr);
        let _ = services.rpc.conn_observer.set(recorder);
        task
    });
    let serving = match Serving::open(&services).await {
        Ok(serving) => serving,
        Err(e) => {
            recording.inspect(|t| t.abort());
            undo(shared, vip).await;
            return Err(PromoteError::Start(e));
        }
    };
    // Clients may be answered from now on: `status` says so at once.
    let ports = serving.ports();
    shared.update_active(|a| {
        a.serving = true;
        a.ports = Some(ports);
    });
    // The gratuitous ARP last: clients it redirects find the listeners open.
    let announced = match &vip {
        Some(v) => v.announce_claim().await.map_err(|error| PromoteError::AnnounceVip { addr: v.config().addr, error }),
        None => Ok(()),
    };
    if let Err(e) = announced {
        recording.inspect(|t| t.abort());
        serving.close(&services).await;
        shared.update_active(|a| {
            a.serving = false;
            a.ports = None;
        });
        undo(shared, vip).await;
        return Err(e);
    }
    if vip.is_some() {
        super::conns::tickle_and_forget(&services.commit);
    }
    Ok(Active { services, serving, vip, recording })
}

/// Step 2: destroy leftover sockets on the VIP, then add the address.
async fn claim_address(vip: &Vip) -> Result<(), VipError> {
    super::conns::destroy_stale(vip.config().addr);
    vip.add_address().await
}

/// Release the VIP (if claimed) and run `on_demote`.
async fn undo(shared: &Shared, vip: Option<Vip>) {
    release(vip).await;
    on_demote(shared).await;
}

/// Release the VIP, if claimed.
async fn release(vip: Option<Vip>) {
    if let Some(vip) = vip {
        if let Err(e) = vip.release().await {
            tracing::warn!(error = %e, "releasing the VIP failed");
        }
    }
}

async fn on_demote(shared: &Shared) {
    let hooks_cfg = &shared.setup.hooks;
    if let Err(e) = hooks::run("demote", hooks_cfg.on_demote.as_deref(), shared.raft.id, hooks_cfg.timeout_ms).await {
        tracing::warn!(error = %e, "on_demote failed");
    }
}

/// Demotion: the VIP first, then listeners and connections, then
/// `on_demote`. With the VIP gone, the connections closed after it send
/// the client nothing (their FIN or reset has no source address to leave
/// from): the client keeps its connection until the new active's tickle
/// resets it and reconnects then, not at once into an address nobody holds
/// yet, where its SYN would wait out the backoff (1 s, then 2 s).
async fn demote(shared: &Shared, active: Active, reason: &str) {
    let started = Instant::now();
    release(active.vip).await;
    shared.update_active(|a| a.vip_held = false);
    active.serving.close(&active.services).await;
    active.recording.inspect(|t| t.abort());
    shared.update_active(|a| {
        a.serving = false;
        a.ports = None;
    });
    on_demote(shared).await;
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(took_ms, %reason, "demoted");
}
