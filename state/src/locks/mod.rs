//! The replicated NLM and NSM state: byte-range locks, their blocked waiters,
//! granted-but-unacknowledged callbacks, DOS share reservations and the
//! monitor list with the NSM state numbers.
//!
//! Everything here is deterministic: `apply` calls the `&mut self` methods of
//! [`NlmState`] with plain values (time stamped in by the leader as `now_ms`)
//! and gets back an outcome enum, which is what the NLM or NSM reply is
//! encoded from. Conflict rules live here, never in the handler. Every
//! mutating method also fills an [`NlmUndo`], so a batch that fails later can
//! be rolled back exactly (`NlmState::undo`).
//!
//! Ranges: an NLM range is `offset` plus `len`, `len == 0` meaning "to end of
//! file". Internally a range is a `span::Span` of first and last byte,
//! inclusive; `offset + len - 1` beyond `u64::MAX` saturates, so such a range
//! also runs to end of file (the same coverage, since no byte lies past
//! `u64::MAX`). Conflicting holders are reported in that canonical form, so a
//! range ending on byte `u64::MAX` comes back with `len == 0`.
//!
//! Protocol decisions (sources: X/Open XNFS 3W, Linux `fs/lockd/svclock.c`,
//! `svcshare.c`):
//! - CANCEL of a waiter removes it ([`CancelOutcome::Cancelled`], reply
//!   LCK_GRANTED). CANCEL that finds no waiter but a granted one whose
//!   GRANTED callback is still unacknowledged stops the callback and keeps
//!   the lock ([`CancelOutcome::AlreadyGranted`], reply LCK_DENIED: XNFS
//!   allows it, and Linux answers so the client can see the race). CANCEL
//!   never unlocks: the request may have merged with, or downgraded, locks
//!   the owner already held. CANCEL that finds nothing
//!   ([`CancelOutcome::NotFound`]) is LCK_GRANTED, as XNFS permits and Linux
//!   does.
//! - A GRANTED_RES (any status but DENIED_GRACE_PERIOD) ends the callback;
//!   the lock stays held either way, as in Linux `nlmsvc_grant_reply`.
//! - UNLOCK of what is not held succeeds; UNLOCK also drops the owner's
//!   waiter for exactly that range (Linux `nlmsvc_unlock` cancels first).
//! - No deadlock detection (NLM4_DEADLCK is never produced).

mod hosts;
mod monitors;
mod shares;
pub(crate) mod span;
mod table;
mod waiters;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::limits::{CALLER_NAME_BYTES_MAX, FILE_ID_BYTES_MAX, NETOBJ_BYTES_MAX};

pub use hosts::Hosts;
pub use monitors::{MonOutcome, MonitorCallback, MonitorId, Monitors, NotifyOutcome};
pub use shares::{Share, ShareAccess, ShareMode, ShareOutcome, ShareOwner, Shares, UnshareOutcome};
pub use table::{LockTable, PendingGrant, Waiter};

/// Who holds a lock: the client host's `caller_name`, the process id `svid`
/// and the NLM owner handle `oh`. Two requests are the same owner only if
/// all three are equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    pub caller_name: String,
    pub svid: u32,
    pub oh: Vec<u8>,
}

/// The file a lock is on: the NFS file handle bytes, opaque.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub Vec<u8>);

/// An NLM byte range: `len == 0` runs to end of file. See the module doc
/// for `offset + len` beyond `u64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockRange {
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    /// Two locks of different owners that overlap conflict unless both are shared.
    pub fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Exclusive || other == LockKind::Exclusive
    }
}

/// The arguments TEST, LOCK and CANCEL share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockArgs {
    pub file: FileId,
    pub owner: LockOwner,
    pub range: LockRange,
    pub kind: LockKind,
}

/// A lock that stands in the way (NLM4_DENIED's and TEST's `holder`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub owner: LockOwner,
    pub range: LockRange,
    pub kind: LockKind,
}

/// A waiter granted by this command: the leader sends it a GRANTED_MSG
/// (with the waiter's own range, as it asked) and retries until
/// `grant_acknowledged(id)`. `id` is unique for the table's lifetime and
/// fits in the callback's cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: u64,
    pub file: FileId,
    pub owner: LockOwner,
    pub range: LockRange,
    pub kind: LockKind,
}

/// Which bound refused an operation (reply NLM4_DENIED_NOLOCKS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockBound {
    LocksPerFile,
    LocksPerHost,
    Locks,
    WaitersPerFile,
    WaitersTotal,
    SharesPerFile,
    Shares,
    Monitors,
}

/// An argument `apply` refuses (the decoder should have already).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgError {
    /// Empty, longer than `CALLER_NAME_BYTES_MAX`, or contains NUL.
    CallerName,
    /// Longer than `NETOBJ_BYTES_MAX`.
    OwnerHandle,
    /// Empty or longer than `FILE_ID_BYTES_MAX`.
    FileId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestOutcome {
    Free,
    Conflict(Holder),
    Invalid(ArgError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutcome {
    /// Held now (also: already held, a retransmission or a reclaim).
    Granted,
    /// Conflicts and the caller would not wait.
    Denied(Holder),
    /// Conflicts; queued as a waiter (or already queued).
    Blocked,
    Full(LockBound),
    Invalid(ArgError),
}

/// UNLOCK always replies LCK_GRANTED except `Full` (DENIED_NOLOCKS): only
/// splitting a range in two can need room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnlockOutcome {
    Released,
    NothingHeld,
    Full(LockBound),
}

/// See the module doc for the reply each gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyGranted,
    NotFound,
}

/// What FREE_ALL (or a host's reboot) released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeAllOutcome {
    pub locks: u64,
    pub waiters: u64,
    pub grants: u64,
    pub shares: u64,
}

/// An outcome plus the waiters the same step granted (FIFO order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect<O> {
    pub outcome: O,
    pub granted: Vec<Grant>,
}

impl<O> Effect<O> {
    fn only(outcome: O) -> Self {
        Effect { outcome, granted: Vec::new() }
    }
}

/// Changes made by one or more operations, newest last, so a failed batch
/// can put everything back with `NlmState::undo`.
#[derive(Debug, Default)]
pub struct NlmUndo(Vec<UndoStep>);

#[derive(Debug)]
enum UndoStep {
    File(FileId, Option<table::FileLocks>),
    Pending(u64, Option<PendingGrant>),
    NextGrantId(u64),
    Shares(FileId, Option<Vec<Share>>),
    Monitor(monitors::MonitorKey, Option<[u8; 16]>),
    HostState(String, Option<u32>),
    OwnState(u32),
    Host(String, Option<String>),
}

impl NlmUndo {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, step: UndoStep) {
        self.0.push(step);
    }

    /// Appends `later` (applied after everything in `self`).
    pub fn extend(&mut self, later: NlmUndo) {
        self.0.extend(later.0);
    }
}

pub(crate) fn caller_name_valid(name: &str) -> bool {
    !name.is_empty() && name.len() as u64 <= CALLER_NAME_BYTES_MAX && !name.as_bytes().contains(&0)
}

impl LockOwner {
    fn validate(&self) -> Result<(), ArgError> {
        if !caller_name_valid(&self.caller_name) {
            return Err(ArgError::CallerName);
        }
        if self.oh.len() as u64 > NETOBJ_BYTES_MAX {
            return Err(ArgError::OwnerHandle);
        }
        Ok(())
    }
}

impl FileId {
    fn validate(&self) -> Result<(), ArgError> {
        if self.0.is_empty() || self.0.len() as u64 > FILE_ID_BYTES_MAX {
            return Err(ArgError::FileId);
        }
        Ok(())
    }
}

impl LockArgs {
    fn validate(&self) -> Result<(), ArgError> {
        self.file.validate()?;
        self.owner.validate()
    }
}

/// The whole NLM/NSM state: what `State` holds and `apply` calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NlmState {
    locks: LockTable,
    shares: Shares,
    monitors: Monitors,
    hosts: Hosts,
}

impl NlmState {
    pub fn locks(&self) -> &LockTable {
        &self.locks
    }

    pub fn shares(&self) -> &Shares {
        &self.shares
    }

    pub fn monitors(&self) -> &Monitors {
        &self.monitors
    }

    /// The hosts holding or waiting for locks, with their callback address.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// Records that `caller_name` locks from `addr` (where its GRANTED_MSG
    /// callbacks go). False when the host list is full or `addr` is invalid.
    pub fn record_host(&mut self, caller_name: &str, addr: &str, undo: &mut NlmUndo) -> bool {
        self.hosts.record(caller_name, addr, undo)
    }

    /// NLM TEST: read only.
    pub fn test(&self, args: &LockArgs) -> TestOutcome {
        self.locks.test(args)
    }

    /// NLM LOCK (and LOCK_MSG, and reclaims).
    pub fn lock(&mut self, args: &LockArgs, block: bool, now_ms: u64, undo: &mut NlmUndo) -> Effect<LockOutcome> {
        self.locks.lock(args, block, now_ms, undo)
    }

    /// NLM UNLOCK.
    pub fn unlock(
        &mut self,
        file: &FileId,
        owner: &LockOwner,
        range: LockRange,
        now_ms: u64,
        undo: &mut NlmUndo,
    ) -> Effect<UnlockOutcome> {
        self.locks.unlock(file, owner, range, now_ms, undo)
    }

    /// NLM CANCEL.
    pub fn cancel(&mut self, args: &LockArgs, undo: &mut NlmUndo) -> CancelOutcome {
        self.locks.cancel(args, undo)
    }

    /// Re-check every waiter and grant those that now fit (a new active's
    /// wake-up; see `LockTable::wake_all`).
    pub fn wake(&mut self, now_ms: u64, undo: &mut NlmUndo) -> Vec<Grant> {
        self.locks.wake_all(now_ms, undo)
    }

    /// GRANTED_RES (or the synchronous GRANTED's reply) for `Grant::id`:
    /// stop retrying that callback. False if it was not pending.
    pub fn grant_acknowledged(&mut self, id: u64, undo: &mut NlmUndo) -> bool {
        self.locks.grant_acknowledged(id, undo)
    }

    /// NLM FREE_ALL: every lock, waiter, pending callback and share of
    /// `caller_name` goes; waiters this frees are granted.
    pub fn free_all(&mut self, caller_name: &str, now_ms: u64, undo: &mut NlmUndo) -> Effect<FreeAllOutcome> {
        let mut effect = self.locks.free_host(caller_name, now_ms, undo);
        effect.outcome.shares = self.shares.free_host(caller_name, undo);
        self.hosts.forget(caller_name, undo);
        effect
    }

    /// NLM SHARE.
    pub fn share(&mut self, file: &FileId, share: &Share, undo: &mut NlmUndo) -> ShareOutcome {
        self.shares.share(file, share, undo)
    }

    /// NLM UNSHARE.
    pub fn unshare(&mut self, file: &FileId, owner: &ShareOwner, undo: &mut NlmUndo) -> UnshareOutcome {
        self.shares.unshare(file, owner, undo)
    }

    /// SM_MON.
    pub fn mon(&mut self, mon_name: &str, id: &MonitorId, priv_: [u8; 16], undo: &mut NlmUndo) -> MonOutcome {
        self.monitors.mon(mon_name, id, priv_, undo)
    }

    /// SM_UNMON; returns this server's NSM state (the reply's `state`).
    pub fn unmon(&mut self, mon_name: &str, id: &MonitorId, undo: &mut NlmUndo) -> u32 {
        self.monitors.unmon(mon_name, id, undo)
    }

    /// SM_UNMON_ALL; returns this server's NSM state.
    pub fn unmon_all(&mut self, id: &MonitorId, undo: &mut NlmUndo) -> u32 {
        self.monitors.unmon_all(id, undo)
    }

    /// SM_NOTIFY from `mon_name`, now at NSM state `state`. A state we have
    /// not recorded for that host means it restarted: its locks, waiters and
    /// shares are freed (as FREE_ALL), and the registered watchers are
    /// returned for their SM_NOTIFY callbacks. The same state again is a
    /// retransmission and changes nothing.
    pub fn notify(&mut self, mon_name: &str, state: u32, now_ms: u64, undo: &mut NlmUndo) -> Effect<NotifyOutcome> {
        if !caller_name_valid(mon_name) || self.monitors.host_state(mon_name) == Some(state) {
            return Effect::only(NotifyOutcome::default());
        }
        self.monitors.record_host_state(mon_name, state, undo);
        let freed = self.free_all(mon_name, now_ms, undo);
        let callbacks = self.monitors.watchers(mon_name, state);
        Effect { outcome: NotifyOutcome { restarted: true, freed: freed.outcome, callbacks }, granted: freed.granted }
    }

    /// This server's NSM state number (odd).
    pub fn nsm_state(&self) -> u32 {
        self.monitors.own_state()
    }

    /// A restart as NSM sees it (classic mode's promotion): the state goes
    /// up by 2 and stays odd. Returns the new state.
    pub fn bump_nsm_state(&mut self, undo: &mut NlmUndo) -> u32 {
        self.monitors.bump_own_state(undo)
    }

    /// Puts back everything recorded in `undo`, newest first.
    pub fn undo(&mut self, undo: NlmUndo) {
        for step in undo.0.into_iter().rev() {
            match step {
                UndoStep::File(file, prev) => self.locks.restore_file(file, prev),
                UndoStep::Pending(id, prev) => self.locks.restore_pending(id, prev),
                UndoStep::NextGrantId(next) => self.locks.restore_next_grant_id(next),
                UndoStep::Shares(file, prev) => self.shares.restore(file, prev),
                UndoStep::Monitor(key, prev) => self.monitors.restore(key, prev),
                UndoStep::HostState(host, prev) => self.monitors.restore_host_state(host, prev),
                UndoStep::OwnState(state) => self.monitors.restore_own_state(state),
                UndoStep::Host(host, prev) => self.hosts.restore(host, prev),
            }
        }
    }

    /// Full consistency check, O(size); each broken rule has its own message.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.locks.check_invariants()?;
        self.shares.check_invariants()?;
        self.monitors.check_invariants()?;
        self.hosts.check_invariants()
    }
}
