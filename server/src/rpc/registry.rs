//! The registry of every open TCP connection of a node, over all listeners:
//! fencing drops them all at once (`close_all`), and admission enforces the
//! connection limits of `limits::Limits` at accept, before any call is read.
//!
//! - A new connection from an address that already has
//!   `connections_per_address_max` open is refused (closed at once).
//! - At `connections_max` open, the least recently active connection with no
//!   call running is asked to close (`Closing::Evicted`) and gives up its
//!   place at once; if every connection has a call running, the new one is
//!   refused. An attacker's never-used connections are thus the first to go,
//!   and a client that was closed reconnects.
//! - A sweep task (started with the first connection, ended with the
//!   registry) closes connections idle for `idle_timeout`
//!   (`Closing::Idle`): no call running, nothing received and no reply byte
//!   written (so a peer that stopped reading its replies is idle too).
//!
//! Each connection shares a `ConnState` with its handler: its activity
//! clock, its running calls, its reply bytes and the soft-close request. A
//! soft close lets running calls finish but starts no other and sends nothing
//! more; `close_all` drops everything at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};

use super::limits::{Limits, REPLY_ESTIMATE_BYTES_INITIAL};

/// Why a connection is asked to close while the node keeps serving.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Idle for the idle timeout.
    Idle,
    /// The least recently active idle connection when the total limit was
    /// reached by a new one.
    Evicted,
}

/// Why a new connection was refused at accept.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address has `connections_per_address_max` open.
    PerAddress,
    /// `connections_max` open, none of them idle.
    Total,
}

/// A new connection admitted; `evicted`: the peer whose idle connection
/// made room for it.
pub struct Admitted {
    pub guard: ConnGuard,
    pub evicted: Option<SocketAddr>,
}

/// What one connection's handler and the registry share.
pub struct ConnState {
    pub peer: SocketAddr,
    start: Instant,
    /// Microseconds after `start` of the last byte received or written, or
    /// the last call finished.
    last_active_us: AtomicU64,
    /// Calls executing (started and not finished).
    running: AtomicUsize,
    /// Reply bytes reserved for running calls or not yet written.
    reply_bytes: AtomicUsize,
    /// The per-call reply reservation (`limits::reply_estimate`).
    reply_estimate: AtomicUsize,
    /// Signalled when `reply_bytes` goes down or a call finishes.
    room: Notify,
    closing: watch::Sender<Option<Closing>>,
}

impl ConnState {
    fn new(peer: SocketAddr, start: Instant) -> ConnState {
        let state = ConnState {
            peer,
            start,
            last_active_us: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            reply_bytes: AtomicUsize::new(0),
            reply_estimate: AtomicUsize::new(REPLY_ESTIMATE_BYTES_INITIAL),
            room: Notify::new(),
            closing: watch::channel(None).0,
        };
        state.touch();
        state
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Something was received or written, or a call finished.
    pub fn touch(&self) {
        self.last_active_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// How long since the last activity, if no call is running.
    fn idle_for(&self) -> Option<Duration> {
        if self.running.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.last_active_us.load(Ordering::Relaxed);
        Some(Duration::from_micros(self.now_us().saturating_sub(last)))
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    pub fn call_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    pub fn call_finished(&self) {
        self.touch();
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes.load(Ordering::Acquire)
    }

    pub fn reply_estimate(&self) -> usize {
        self.reply_estimate.load(Ordering::Relaxed)
    }

    /// A reply of `size` bytes was produced: move the estimate.
    pub fn replied(&self, size: usize) {
        let _ = self
            .reply_estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| Some(super::limits::reply_estimate(e, size)));
    }

    pub fn add_reply_bytes(&self, n: usize) {
        self.reply_bytes.fetch_add(n, Ordering::AcqRel);
    }

    pub fn sub_reply_bytes(&self, n: usize) {
        let _ = self.reply_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b.saturating_sub(n)));
        self.room.notify_waiters();
    }

    /// Wait until `ready` holds, re-checked whenever reply room frees or a
    /// call finishes.
    pub async fn wait_room(&self, ready: impl Fn(&ConnState) -> bool) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(self) {
                return;
            }
            notified.await;
        }
    }

    /// Ask the handler to close softly (the first reason wins).
    pub fn close(&self, why: Closing) {
        self.closing.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once a soft close was asked for, with its reason.
    pub fn closing(&self) -> watch::Receiver<Option<Closing>> {
        self.closing.subscribe()
    }
}

struct Table {
    conns: HashMap<u64, Arc<ConnState>>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Arc<ConnState>> {
        let state = self.conns.remove(&id)?;
        let ip = address(state.peer);
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
        Some(state)
    }
}

struct Inner {
    limits: Limits,
    start: Instant,
    next_id: AtomicU64,
    table: Mutex<Table>,
    close_tx: broadcast::Sender<()>,
    sweeping: std::sync::Once,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every open TCP connection of this node.
pub struct ConnRegistry {
    inner: Arc<Inner>,
}

impl Default for ConnRegistry {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// The address a per-address limit counts (an IPv4-mapped IPv6 address as IPv4).
fn address(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

impl ConnRegistry {
    pub fn new(limits: Limits) -> Self {
        let (close_tx, _) = broadcast::channel(1);
        ConnRegistry {
            inner: Arc::new(Inner {
                limits,
                start: Instant::now(),
                next_id: AtomicU64::new(1),
                table: Mutex::new(Table { conns: HashMap::new(), per_address: HashMap::new() }),
                close_tx,
                sweeping: std::sync::Once::new(),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Number of open connections (not counting those closing softly).
    pub fn count(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Peers of the open connections.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.inner.lock().conns.values().map(|c| c.peer).collect()
    }

    /// Drop every open connection now (fencing). Calls still running are
    /// aborted and their replies are never sent.
    pub fn close_all(&self) {
        // No receiver means no open connection: nothing to do.
        let _ = self.inner.close_tx.send(());
    }

    /// Admit a new connection from `peer` under the limits (see the module
    /// doc), tracked until the returned guard drops. `on_idle` is called for
    /// each connection the sweep closes (started here with the first one).
    pub fn admit(
        &self,
        peer: SocketAddr,
        on_idle: impl Fn(SocketAddr) + Send + Sync + 'static,
    ) -> Result<Admitted, Refused> {
        self.inner.sweeping.call_once(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.inner), self.inner.limits.sweep_interval(), on_idle));
        });
        let limits = &self.inner.limits;
        let ip = address(peer);
        let mut table = self.inner.lock();
        if table.per_address.get(&ip).copied().unwrap_or(0) >= limits.connections_per_address_max {
            return Err(Refused::PerAddress);
        }
        let mut evicted = None;
        if table.conns.len() >= limits.connections_max {
            let oldest = table
                .conns
                .iter()
                .filter_map(|(id, c)| c.idle_for().map(|idle| (idle, *id)))
                .max_by_key(|(idle, _)| *idle)
                .map(|(_, id)| id);
            let Some(state) = oldest.and_then(|id| table.remove(id)) else { return Err(Refused::Total) };
            state.close(Closing::Evicted);
            evicted = Some(state.peer);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(peer, self.inner.start));
        table.conns.insert(id, state.clone());
        *table.per_address.entry(ip).or_insert(0) += 1;
        drop(table);
        let closed = self.inner.close_tx.subscribe();
        Ok(Admitted { guard: ConnGuard { inner: self.inner.clone(), id, state, closed }, evicted })
    }
}

/// Close the connections idle for the idle timeout, every `interval`, until
/// the registry is gone.
async fn sweep(inner: Weak<Inner>, interval: Duration, on_idle: impl Fn(SocketAddr)) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let timeout = inner.limits.idle_timeout;
        let closed: Vec<Arc<ConnState>> = {
            let mut table = inner.lock();
            let idle: Vec<u64> = table
                .conns
                .iter()
                .filter(|(_, c)| c.idle_for().is_some_and(|d| d >= timeout))
                .map(|(id, _)| *id)
                .collect();
            idle.into_iter().filter_map(|id| table.remove(id)).collect()
        };
        for state in closed {
            state.close(Closing::Idle);
            on_idle(state.peer);
        }
    }
}

/// One registered connection; unregisters on drop.
pub struct ConnGuard {
    inner: Arc<Inner>,
    id: u64,
    pub state: Arc<ConnState>,
    /// Receives once `close_all` is called.
    pub(super) closed: broadcast::Receiver<()>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.lock().remove(self.id);
    }
}
