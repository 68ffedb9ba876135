//! Calls from this server to clients' lock managers: NLM4_GRANTED_MSG for a
//! blocked LOCK that the table granted, and the `*_RES` answers to `_MSG`
//! calls. One task per active period (`CallbackTask`), fed through a bounded
//! queue (`Callbacks`, held by the handlers).
//!
//! A GRANTED_MSG goes only to the address the host's LOCK came from (the
//! table's `hosts().addr(caller_name)`, never an address a client names), at
//! the port its portmapper gives for NLM v4 over UDP, else TCP. Its cookie is
//! the grant id (8 bytes, big-endian), which the client's GRANTED_RES echoes
//! (`NLMPROC4_GRANTED_RES` commits `GrantAcknowledged`). Until the table no
//! longer lists the grant as pending (acknowledged, cancelled, unlocked, or
//! the client re-sent its LOCK and got GRANTED), the task re-sends it with
//! exponential backoff, at most `CALLBACK_ATTEMPTS_MAX` times: after that the
//! client still learns of its lock, since Linux re-polls a blocked LOCK
//! every 30 s.
//!
//! On start (promotion) the task re-checks the queued waiters (one
//! `NlmCommand::Wake` commit, when there are any) and adopts every pending
//! grant of the replicated table, so waiters granted before a failover get
//! their GRANTED_MSG from the new active. It stops with the listeners
//! (demotion).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hanfs_raft::commit::Commit;
use hanfs_state::locks::{FileId, Grant, LockKind, LockOwner, LockRange, PendingGrant};
use hanfs_state::{Command, NlmCommand, Outcome};
use nfs3_types::portmap::{IPPROTO_TCP, IPPROTO_UDP};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::ofd::{OfdMirror, Touched};
use super::xdr::{to_bytes, CallerName, NetObj, Nlm4Fh, Nlm4Lock, Nlm4TestArgs};
use super::{NLM4_VERSION, NLMPROC4_GRANTED_MSG, NLM_PROGRAM};
use crate::portmap::client::getport;
use crate::rpc::auth::MACHINE_NAME_BYTES_MAX;
use crate::rpc::client::{self, ClientError, Request};
use crate::rpc::program::{Cred, Transport};
use crate::rpc::shared::Fence;

/// Jobs waiting for the task; beyond this a job is dropped with a warning.
pub const CALLBACK_QUEUE_MAX: usize = 1024;
/// Grants the task tracks at once (the table's own bound is larger; the
/// rest are picked up when tracked ones finish, see `rescan`).
pub const CALLBACK_TRACKED_MAX: usize = 4096;
/// Calls in flight at once (each a GETPORT plus one NLM call).
pub const CALLBACK_SENDS_IN_FLIGHT_MAX: usize = 16;
/// Sends of one GRANTED_MSG before the task gives up on it.
pub const CALLBACK_ATTEMPTS_MAX: u32 = 8;
/// Wait before the second send; doubled after each, up to the maximum.
pub const CALLBACK_RETRY_FIRST_MS: u64 = 1_000;
pub const CALLBACK_RETRY_MAX_MS: u64 = 30_000;
/// How long one NLM callback waits for the client's RPC reply.
pub const CALLBACK_CALL_TIMEOUT_MS: u64 = 2_000;
/// How often the task compares what it tracks with the table.
pub const CALLBACK_TICK_MS: u64 = 250;

const _: () = assert!(CALLBACK_RETRY_FIRST_MS <= CALLBACK_RETRY_MAX_MS);
const _: () = assert!(CALLBACK_SENDS_IN_FLIGHT_MAX <= CALLBACK_TRACKED_MAX);

/// What the callback task needs besides the state.
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// Port of the clients' portmappers (111; a test knob, `Ports::callback_portmap`).
    pub portmap_port: u16,
    /// AUTH_SYS machine name of our calls (this host's name).
    pub machine: String,
    /// The address callbacks are sent from: the one clients call (the VIP,
    /// else a specific listen address). The Linux client takes a GRANTED
    /// only from the server address its blocked lock went to, and sends
    /// GRANTED_RES back there. `None`: the kernel picks (listen 0.0.0.0, no VIP).
    pub source: Option<IpAddr>,
    /// Checked before each send (and before each portmap lookup's datagram):
    /// a node that lost its lease, e.g. resumed from a pause, calls no client.
    pub fence: Fence,
}

impl CallbackConfig {
    pub fn new(portmap_port: u16, source: Option<IpAddr>, fence: Fence) -> Self {
        CallbackConfig { portmap_port, machine: hostname(), source, fence }
    }
}

/// This host's name, for AUTH_SYS (bounded; "hanfs" if unreadable).
pub(crate) fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > MACHINE_NAME_BYTES_MAX {
        "hanfs".to_string()
    } else {
        name.to_string()
    }
}

enum Job {
    /// A waiter granted by a commit: send GRANTED_MSG until acknowledged.
    Grant(Callback),
    /// A `_MSG` call's result: one `*_RES` call to the caller's NLM.
    Res { to: IpAddr, proc_: u32, body: Vec<u8> },
}

/// One GRANTED_MSG to deliver.
#[derive(Clone, Debug)]
struct Callback {
    id: u64,
    file: FileId,
    owner: LockOwner,
    range: LockRange,
    kind: LockKind,
}

impl Callback {
    fn of_grant(g: &Grant) -> Self {
        Callback { id: g.id, file: g.file.clone(), owner: g.owner.clone(), range: g.range, kind: g.kind }
    }
    fn of_pending(id: u64, g: &PendingGrant) -> Self {
        Callback { id, file: g.file.clone(), owner: g.owner.clone(), range: g.range, kind: g.kind }
    }

    /// The GRANTED_MSG arguments: the waiter's own lock (file, svid, oh,
    /// range, which the client matches against its blocked request), cookie =
    /// grant id, and as caller_name the caller's, i.e. ours (`machine`), as
    /// Linux `nlmsvc_setgrantargs` does.
    fn args(&self, machine: &str) -> Option<Vec<u8>> {
        let alock = Nlm4Lock {
            caller_name: CallerName::new(machine.as_bytes().to_vec()).ok()?,
            fh: Nlm4Fh::new(self.file.0.clone()).ok()?,
            oh: NetObj::new(self.owner.oh.clone()).ok()?,
            svid: self.owner.svid as i32,
            l_offset: self.range.offset,
            l_len: self.range.len,
        };
        let cookie = NetObj::new(self.id.to_be_bytes().to_vec()).ok()?;
        Some(to_bytes(&Nlm4TestArgs { cookie, exclusive: self.kind == LockKind::Exclusive, alock }))
    }
}

/// The grant id in a GRANTED_RES cookie (see the module doc).
pub fn grant_id(cookie: &[u8]) -> Option<u64> {
    cookie.try_into().ok().map(u64::from_be_bytes)
}

/// The handlers' end: queue callbacks (never blocks; a full queue drops).
#[derive(Clone)]
pub struct Callbacks {
    tx: mpsc::Sender<Job>,
}

impl Callbacks {
    /// GRANTED_MSG for each grant (from `Outcome::granted()`).
    pub fn granted<'a>(&self, grants: impl IntoIterator<Item = &'a Grant>) {
        for g in grants {
            self.push(Job::Grant(Callback::of_grant(g)));
        }
    }

    /// A `*_RES` call with `body` to the NLM of `to` (a `_MSG` call's source).
    pub fn res(&self, to: IpAddr, proc_: u32, body: Vec<u8>) {
        self.push(Job::Res { to, proc_, body });
    }

    fn push(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!("nlm callback queue full; callback dropped"),
            // Demoted: the next active re-sends every pending grant.
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::debug!("nlm callback task stopped; callback dropped"),
        }
    }
}

/// The running task; `stop` ends it (demotion).
pub struct CallbackTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl CallbackTask {
    /// Start the task for one active period; it adopts the table's pending grants.
    /// Waiters its wake-up grants are taken on the files through `ofd`.
    /// Nothing is sent while `config.fence` does not pass (as replies: a node
    /// that lost its lease, e.g. resumed from a pause, calls no client).
    pub fn start(commit: Arc<dyn Commit>, config: CallbackConfig, ofd: Arc<OfdMirror>) -> (Callbacks, CallbackTask) {
        let (tx, rx) = mpsc::channel(CALLBACK_QUEUE_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let runner = Runner {
            commit,
            fence: config.fence.clone(),
            config: Arc::new(config),
            ofd,
            tracked: BTreeMap::new(),
            given_up: BTreeSet::new(),
        };
        let handle = tokio::spawn(runner.run(rx, stop_rx));
        (Callbacks { tx }, CallbackTask { stop, handle })
    }

    /// Stop sending and wait for the task (calls in flight are abandoned).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

struct Tracked {
    callback: Callback,
    /// Sends so far.
    sent: u32,
    next_at: Instant,
    in_flight: bool,
}

struct Runner {
    commit: Arc<dyn Commit>,
    config: Arc<CallbackConfig>,
    ofd: Arc<OfdMirror>,
    fence: Fence,
    tracked: BTreeMap<u64, Tracked>,
    /// Grants sent `CALLBACK_ATTEMPTS_MAX` times and still pending: not
    /// adopted again by `rescan` (pruned to what the table still holds).
    given_up: BTreeSet<u64>,
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
        let mut sends: JoinSet<Option<u64>> = JoinSet::new();
        self.wake().await;
        self.rescan();
        // An interval, not a sleep per turn: a busy queue must not starve the rescan.
        let mut tick = tokio::time::interval(Duration::from_millis(CALLBACK_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            self.send_due(&mut sends);
            tokio::select! {
                _ = stop.changed() => break,
                job = rx.recv() => match job {
                    Some(Job::Grant(cb)) => self.track(cb),
                    Some(Job::Res { to, proc_, body }) => self.send_res(&mut sends, to, proc_, body),
                    None => break,
                },
                Some(done) = sends.join_next(), if !sends.is_empty() => {
                    if let Ok(Some(id)) = done {
                        if let Some(t) = self.tracked.get_mut(&id) {
                            t.in_flight = false;
                        }
                    }
                }
                _ = tick.tick() => self.rescan(),
            }
        }
        sends.abort_all();
    }

    /// A new active re-checks the queued waiters once (`NlmCommand::Wake`):
    /// those that fit now are granted and get their GRANTED_MSG.
    async fn wake(&mut self) {
        let waiting = {
            let state = self.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            guard.nlm().locks().waiter_count()
        };
        if waiting == 0 {
            return;
        }
        let cmd = Command::Nlm(NlmCommand::Wake { now_ms: crate::clock::unix_ms() });
        match self.commit.commit(vec![cmd]).await {
            Ok(outcomes) => {
                self.ofd.reconcile(Touched::Nothing, outcomes.iter().flat_map(Outcome::granted).collect()).await;
                for g in outcomes.iter().flat_map(Outcome::granted) {
                    self.track(Callback::of_grant(g));
                }
                tracing::info!(waiting, "nlm waiters re-checked on promotion");
            }
            Err(e) => tracing::warn!(error = %e, "nlm: re-checking the waiters failed"),
        }
    }

    fn track(&mut self, callback: Callback) {
        if self.tracked.contains_key(&callback.id) {
            return;
        }
        if self.tracked.len() >= CALLBACK_TRACKED_MAX {
            // Picked up by a later rescan, once there is room.
            return;
        }
        let id = callback.id;
        self.tracked.insert(id, Tracked { callback, sent: 0, next_at: Instant::now(), in_flight: false });
    }

    /// Compare with the table: forget grants no longer pending, adopt
    /// pending ones not tracked (after a promotion, or a full queue).
    fn rescan(&mut self) {
        let state = self.commit.state();
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        let pending: BTreeMap<u64, &PendingGrant> = guard.nlm().locks().pending_grants().collect();
        self.tracked.retain(|id, t| t.in_flight || pending.contains_key(id));
        self.given_up.retain(|id| pending.contains_key(id));
        for (id, g) in &pending {
            if self.tracked.len() >= CALLBACK_TRACKED_MAX {
                break;
            }
            if !self.given_up.contains(id) && !self.tracked.contains_key(id) {
                let callback = Callback::of_pending(*id, g);
                self.tracked.insert(*id, Tracked { callback, sent: 0, next_at: Instant::now(), in_flight: false });
            }
        }
    }

    /// Start the sends that are due, up to the in-flight bound.
    fn send_due(&mut self, sends: &mut JoinSet<Option<u64>>) {
        if !self.fence.serving_now() {
            return;
        }
        let now = Instant::now();
        let due: Vec<u64> =
            self.tracked.iter().filter(|(_, t)| !t.in_flight && t.next_at <= now).map(|(id, _)| *id).collect();
        if due.is_empty() {
            return;
        }
        let (hosts, pending): (BTreeMap<String, String>, BTreeSet<u64>) = {
            let state = self.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            let nlm = guard.nlm();
            let hosts = nlm.hosts().iter().map(|(n, a)| (n.to_string(), a.to_string())).collect();
            (hosts, nlm.locks().pending_grants().map(|(id, _)| id).collect())
        };
        for id in due {
            if sends.len() >= CALLBACK_SENDS_IN_FLIGHT_MAX {
                return;
            }
            if !pending.contains(&id) {
                self.tracked.remove(&id);
                continue;
            }
            let Some(t) = self.tracked.get_mut(&id) else { continue };
            if t.sent >= CALLBACK_ATTEMPTS_MAX {
                tracing::info!(id, host = %t.callback.owner.caller_name, "nlm GRANTED_MSG unacknowledged; giving up (the client re-polls)");
                self.tracked.remove(&id);
                self.given_up.insert(id);
                continue;
            }
            let addr = hosts.get(&t.callback.owner.caller_name).and_then(|a| a.parse::<IpAddr>().ok());
            let (Some(addr), Some(args)) = (addr, t.callback.args(&self.config.machine)) else {
                tracing::info!(id, host = %t.callback.owner.caller_name, "nlm grant has no callback address; the client re-polls");
                self.tracked.remove(&id);
                self.given_up.insert(id);
                continue;
            };
            t.sent += 1;
            t.in_flight = true;
            t.next_at = now + Duration::from_millis(backoff_ms(t.sent, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS));
            let config = self.config.clone();
            let host = t.callback.owner.caller_name.clone();
            let fence = self.fence.clone();
            sends.spawn(async move {
                if !fence.serving_now() {
                    return Some(id);
                }
                match call_lockd(&config, addr, NLMPROC4_GRANTED_MSG, &args).await {
                    Ok(()) => tracing::debug!(id, %host, %addr, "nlm GRANTED_MSG sent"),
                    Err(e) => tracing::debug!(id, %host, %addr, error = %e, "nlm GRANTED_MSG not delivered"),
                }
                Some(id)
            });
        }
    }

    fn send_res(&mut self, sends: &mut JoinSet<Option<u64>>, to: IpAddr, proc_: u32, body: Vec<u8>) {
        if sends.len() >= CALLBACK_SENDS_IN_FLIGHT_MAX {
            tracing::warn!(%to, proc_, "nlm callbacks busy; _RES dropped (the client retries its _MSG)");
            return;
        }
        let config = self.config.clone();
        let fence = self.fence.clone();
        sends.spawn(async move {
            if !fence.serving_now() {
                return None;
            }
            if let Err(e) = call_lockd(&config, to, proc_, &body).await {
                tracing::debug!(%to, proc_, error = %e, "nlm _RES not delivered");
            }
            None
        });
    }
}

/// Wait after the `sent`-th send: `first_ms`, doubled after each send, up
/// to `max_ms` (GRANTED_MSG here, SM_NOTIFY in `nsm::notify`).
pub(crate) fn backoff_ms(sent: u32, first_ms: u64, max_ms: u64) -> u64 {
    let doublings = sent.saturating_sub(1).min(16);
    first_ms.saturating_mul(1 << doublings).min(max_ms)
}

/// Why a callback did not reach the client's lock manager.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("asking the client's portmapper: {0}")]
    Portmap(ClientError),
    #[error("the client's portmapper has no NLM v4")]
    NotRegistered,
    #[error("calling the client's NLM: {0}")]
    Call(ClientError),
}

/// One NLM v4 call (a `_MSG` or `_RES` procedure) to the lock manager of
/// `host`, found through its portmapper: UDP if registered, else TCP. A
/// timeout counts as sent: these procedures answer with a separate call, and
/// some lock managers send no RPC reply at all.
pub async fn call_lockd(config: &CallbackConfig, host: IpAddr, proc_: u32, args: &[u8]) -> Result<(), CallbackError> {
    let portmapper = SocketAddr::new(host, config.portmap_port);
    let fence = &config.fence;
    let udp =
        getport(portmapper, NLM_PROGRAM, NLM4_VERSION, IPPROTO_UDP, fence).await.map_err(CallbackError::Portmap)?;
    let (port, transport) = match udp {
        Some(port) => (port, Transport::Udp),
        None => {
            match getport(portmapper, NLM_PROGRAM, NLM4_VERSION, IPPROTO_TCP, fence)
                .await
                .map_err(CallbackError::Portmap)?
            {
                Some(port) => (port, Transport::Tcp),
                None => return Err(CallbackError::NotRegistered),
            }
        }
    };
    let cred = Cred::Sys { uid: 0, gid: 0, gids: Vec::new(), machine: config.machine.clone() };
    let req = Request {
        addr: SocketAddr::new(host, port),
        prog: NLM_PROGRAM,
        vers: NLM4_VERSION,
        proc_,
        cred: &cred,
        args,
        transport,
        timeout: Duration::from_millis(CALLBACK_CALL_TIMEOUT_MS),
        attempts: 1,
        fence,
    };
    match client::call_from(&req, config.source).await {
        Ok(_) | Err(ClientError::Timeout { .. }) => Ok(()),
        Err(e) => Err(CallbackError::Call(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        assert_eq!(backoff_ms(1, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS), 1_000);
        assert_eq!(backoff_ms(2, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS), 2_000);
        assert_eq!(backoff_ms(3, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS), 4_000);
        assert_eq!(backoff_ms(6, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS), 30_000);
        assert_eq!(backoff_ms(u32::MAX, CALLBACK_RETRY_FIRST_MS, CALLBACK_RETRY_MAX_MS), 30_000);
    }

    #[test]
    fn cookie_round_trips_the_grant_id() {
        let cb = Callback {
            id: 0x0102_0304_0506_0708,
            file: FileId(vec![1; 21]),
            owner: LockOwner { caller_name: "client".into(), svid: 7, oh: vec![9; 8] },
            range: LockRange { offset: 0, len: 0 },
            kind: LockKind::Exclusive,
        };
        let args: Nlm4TestArgs = super::super::xdr::from_bytes(&cb.args("server").unwrap()).unwrap();
        assert_eq!(args.alock.caller_name.as_bytes(), b"server");
        assert_eq!(grant_id(args.cookie.as_bytes()), Some(cb.id));
        assert!(args.exclusive);
        assert_eq!(args.alock.svid, 7);
        assert_eq!(grant_id(&[1, 2, 3]), None);
    }

    /// A fenced node asks no portmapper: not one datagram leaves.
    #[tokio::test]
    async fn a_fenced_callback_sends_nothing() {
        let portmapper = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = portmapper.local_addr().unwrap().port();
        let config = CallbackConfig::new(port, None, Fence::new(|| false));
        let host = IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
        let err = call_lockd(&config, host, NLMPROC4_GRANTED_MSG, &[]).await.unwrap_err();
        assert!(matches!(err, CallbackError::Portmap(ClientError::Fenced)), "{err:?}");
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_millis(200), portmapper.recv_from(&mut buf)).await;
        assert!(got.is_err(), "a GETPORT left a fenced node: {got:?}");
    }
}
