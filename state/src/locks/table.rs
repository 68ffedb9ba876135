//! The lock table: per file, each owner's granted locks and the FIFO queue of
//! blocked waiters; globally, the grants whose GRANTED callback is not yet
//! acknowledged. Counts per host and in total are derived (rebuilt on
//! deserialize) and kept in step by `take_file` / `put_file`: every change to
//! a file takes it out of the table (uncounting it), changes it, and puts it
//! back (counting it again), saving the old file in the undo list.
//! Waking waiters and the callback bookkeeping are in `waiters.rs`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::span::{canonical_error, covers, set_span, touches, Held, Span};
use super::{
    CancelOutcome, Effect, FileId, FreeAllOutcome, Holder, LockArgs, LockBound, LockKind, LockOutcome, LockOwner,
    LockRange, NlmUndo, TestOutcome, UndoStep, UnlockOutcome,
};
use crate::limits::{
    GRANTS_PENDING_MAX, LOCKS_MAX, LOCKS_PER_FILE_MAX, LOCKS_PER_HOST_MAX, WAITERS_MAX, WAITERS_TOTAL_MAX,
};

/// A blocked LOCK, as the client asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub owner: LockOwner,
    pub range: LockRange,
    pub kind: LockKind,
    /// `now_ms` of the LOCK that queued it.
    pub since_ms: u64,
}

/// A granted waiter whose GRANTED callback the client has not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGrant {
    pub file: FileId,
    pub owner: LockOwner,
    pub range: LockRange,
    pub kind: LockKind,
    /// `now_ms` of the command that granted it.
    pub granted_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileLocks {
    /// Each owner's locks, canonical (see `span.rs`); no empty lists.
    pub(super) held: BTreeMap<LockOwner, Vec<Held>>,
    /// Blocked requests, oldest first.
    pub(super) waiters: VecDeque<Waiter>,
}

impl FileLocks {
    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.waiters.is_empty()
    }

    pub(super) fn lock_count(&self) -> u64 {
        self.held.values().map(|l| l.len() as u64).sum()
    }

    fn host_count(&self, host: &str) -> u64 {
        self.held.iter().filter(|(o, _)| o.caller_name == host).map(|(_, l)| l.len() as u64).sum()
    }

    /// The first lock (lowest start, then owner order) of another owner that
    /// overlaps `span` with a conflicting kind.
    pub(super) fn conflict(&self, owner: &LockOwner, span: Span, kind: LockKind) -> Option<Holder> {
        let mut best: Option<(&LockOwner, Held)> = None;
        for (other, list) in &self.held {
            if other == owner {
                continue;
            }
            let hit = list.iter().find(|h| h.span.overlaps(span) && h.kind.conflicts_with(kind));
            if let Some(held) = hit {
                if best.is_none_or(|(_, b)| held.span.start < b.span.start) {
                    best = Some((other, *held));
                }
            }
        }
        best.map(|(owner, held)| Holder { owner: owner.clone(), range: held.span.range(), kind: held.kind })
    }

    fn waiter_position(&self, owner: &LockOwner, span: Span, kind: LockKind) -> Option<usize> {
        self.waiters.iter().position(|w| w.owner == *owner && w.kind == kind && Span::of(w.range) == span)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    locks: u64,
    waiters: u64,
    per_host: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TableWire")]
pub struct LockTable {
    files: BTreeMap<FileId, FileLocks>,
    /// By grant id; the lowest id is the oldest.
    pub(super) pending: BTreeMap<u64, PendingGrant>,
    pub(super) next_grant_id: u64,
    #[serde(skip)]
    counts: Counts,
}

#[derive(Deserialize)]
struct TableWire {
    files: BTreeMap<FileId, FileLocks>,
    pending: BTreeMap<u64, PendingGrant>,
    next_grant_id: u64,
}

impl TryFrom<TableWire> for LockTable {
    type Error = String;
    fn try_from(wire: TableWire) -> Result<Self, String> {
        let mut table = LockTable {
            files: BTreeMap::new(),
            pending: wire.pending,
            next_grant_id: wire.next_grant_id,
            ..Default::default()
        };
        for (file, locks) in wire.files {
            table.put_file(file, locks);
        }
        table.check_invariants()?;
        Ok(table)
    }
}

impl LockTable {
    pub(super) fn test(&self, args: &LockArgs) -> TestOutcome {
        if let Err(e) = args.validate() {
            return TestOutcome::Invalid(e);
        }
        let span = Span::of(args.range);
        match self.files.get(&args.file).and_then(|f| f.conflict(&args.owner, span, args.kind)) {
            Some(holder) => TestOutcome::Conflict(holder),
            None => TestOutcome::Free,
        }
    }

    pub(super) fn lock(
        &mut self,
        args: &LockArgs,
        block: bool,
        now_ms: u64,
        undo: &mut NlmUndo,
    ) -> Effect<LockOutcome> {
        if let Err(e) = args.validate() {
            return Effect::only(LockOutcome::Invalid(e));
        }
        let mut f = self.take_file(&args.file, undo);
        let span = Span::of(args.range);
        let outcome = self.lock_in(&mut f, args, span, block, now_ms, undo);
        // Taking a range of one's own to Shared can free waiters.
        let granted = match outcome {
            LockOutcome::Granted => self.wake(&args.file, &mut f, now_ms, undo),
            _ => Vec::new(),
        };
        self.put_file(args.file.clone(), f);
        self.assert_cheap_invariants();
        Effect { outcome, granted }
    }

    fn lock_in(
        &mut self,
        f: &mut FileLocks,
        args: &LockArgs,
        span: Span,
        block: bool,
        now_ms: u64,
        undo: &mut NlmUndo,
    ) -> LockOutcome {
        let (owner, kind) = (&args.owner, args.kind);
        let mine: &[Held] = f.held.get(owner).map_or(&[], Vec::as_slice);
        if covers(mine, span, kind) {
            // A retransmission, a reclaim, or a poll for a waiter already
            // granted: the client now has its answer, so stop the callback.
            self.forget_grants(undo, |g| g.file == args.file && g.owner == *owner && Span::of(g.range) == span);
            return LockOutcome::Granted;
        }
        if let Some(holder) = f.conflict(owner, span, kind) {
            if !block {
                return LockOutcome::Denied(holder);
            }
            if f.waiter_position(owner, span, kind).is_some() {
                return LockOutcome::Blocked;
            }
            if f.waiters.len() as u64 >= WAITERS_MAX {
                return LockOutcome::Full(LockBound::WaitersPerFile);
            }
            if self.counts.waiters + f.waiters.len() as u64 >= WAITERS_TOTAL_MAX {
                return LockOutcome::Full(LockBound::WaitersTotal);
            }
            f.waiters.push_back(Waiter { owner: owner.clone(), range: args.range, kind, since_ms: now_ms });
            return LockOutcome::Blocked;
        }
        let list = set_span(mine, span, Some(kind));
        if let Some(bound) = self.over_bound(f, owner, list.len() as u64) {
            return LockOutcome::Full(bound);
        }
        f.held.insert(owner.clone(), list);
        debug_assert!(f.conflict(owner, span, kind).is_none(), "granted over a conflict");
        if let Some(i) = f.waiter_position(owner, span, kind) {
            f.waiters.remove(i);
        }
        LockOutcome::Granted
    }

    /// The bound that giving `owner` `new_len` locks on `f` (taken out of
    /// the table) would break. Never refuses a change that does not grow.
    pub(super) fn over_bound(&self, f: &FileLocks, owner: &LockOwner, new_len: u64) -> Option<LockBound> {
        let old_len = f.held.get(owner).map_or(0, |l| l.len() as u64);
        if new_len <= old_len {
            return None;
        }
        let grow = new_len - old_len;
        if f.lock_count() + grow > LOCKS_PER_FILE_MAX {
            return Some(LockBound::LocksPerFile);
        }
        let host = &owner.caller_name;
        if self.host_count(host) + f.host_count(host) + grow > LOCKS_PER_HOST_MAX {
            return Some(LockBound::LocksPerHost);
        }
        if self.counts.locks + f.lock_count() + grow > LOCKS_MAX {
            return Some(LockBound::Locks);
        }
        None
    }

    pub(super) fn unlock(
        &mut self,
        file: &FileId,
        owner: &LockOwner,
        range: LockRange,
        now_ms: u64,
        undo: &mut NlmUndo,
    ) -> Effect<UnlockOutcome> {
        if !self.files.contains_key(file) {
            return Effect::only(UnlockOutcome::NothingHeld);
        }
        let span = Span::of(range);
        let mut f = self.take_file(file, undo);
        let mine: &[Held] = f.held.get(owner).map_or(&[], Vec::as_slice);
        let outcome = if !touches(mine, span) {
            UnlockOutcome::NothingHeld
        } else {
            let list = set_span(mine, span, None);
            match self.over_bound(&f, owner, list.len() as u64) {
                Some(bound) => UnlockOutcome::Full(bound),
                None => {
                    if list.is_empty() {
                        f.held.remove(owner);
                    } else {
                        f.held.insert(owner.clone(), list);
                    }
                    UnlockOutcome::Released
                }
            }
        };
        if !matches!(outcome, UnlockOutcome::Full(_)) {
            // NLM UNLOCK also cancels the owner's waiter for exactly this range.
            f.waiters.retain(|w| !(w.owner == *owner && Span::of(w.range) == span));
        }
        let granted = if outcome == UnlockOutcome::Released {
            // Callbacks for what was just released are moot.
            self.forget_grants(undo, |g| g.file == *file && g.owner == *owner && Span::of(g.range).overlaps(span));
            self.wake(file, &mut f, now_ms, undo)
        } else {
            Vec::new()
        };
        self.put_file(file.clone(), f);
        self.assert_cheap_invariants();
        Effect { outcome, granted }
    }

    /// Removes the exact waiter, else stops the exact pending callback (the
    /// lock stays), else nothing. See the module doc for the replies.
    pub(super) fn cancel(&mut self, args: &LockArgs, undo: &mut NlmUndo) -> CancelOutcome {
        let span = Span::of(args.range);
        let waiting =
            self.files.get(&args.file).and_then(|f| f.waiter_position(&args.owner, span, args.kind)).is_some();
        if waiting {
            let mut f = self.take_file(&args.file, undo);
            if let Some(i) = f.waiter_position(&args.owner, span, args.kind) {
                f.waiters.remove(i);
            }
            self.put_file(args.file.clone(), f);
            self.assert_cheap_invariants();
            return CancelOutcome::Cancelled;
        }
        let forgotten = self.forget_grants(undo, |g| {
            g.file == args.file && g.owner == args.owner && g.kind == args.kind && Span::of(g.range) == span
        });
        if forgotten > 0 {
            CancelOutcome::AlreadyGranted
        } else {
            CancelOutcome::NotFound
        }
    }

    /// Drops every lock, waiter and pending callback of `host`, then wakes
    /// the waiters of every file it touched, file by file in key order.
    pub(super) fn free_host(&mut self, host: &str, now_ms: u64, undo: &mut NlmUndo) -> Effect<FreeAllOutcome> {
        let mut outcome = FreeAllOutcome {
            grants: self.forget_grants(undo, |g| g.owner.caller_name == host),
            ..FreeAllOutcome::default()
        };
        let touched: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.held.keys().any(|o| o.caller_name == host) || f.waiters.iter().any(|w| w.owner.caller_name == host)
            })
            .map(|(file, _)| file.clone())
            .collect();
        let mut granted = Vec::new();
        for file in touched {
            let mut f = self.take_file(&file, undo);
            let waiters_before = f.waiters.len() as u64;
            f.waiters.retain(|w| w.owner.caller_name != host);
            outcome.waiters += waiters_before - f.waiters.len() as u64;
            outcome.locks += f.host_count(host);
            f.held.retain(|o, _| o.caller_name != host);
            granted.extend(self.wake(&file, &mut f, now_ms, undo));
            self.put_file(file, f);
        }
        self.assert_cheap_invariants();
        Effect { outcome, granted }
    }

    pub(super) fn grant_acknowledged(&mut self, id: u64, undo: &mut NlmUndo) -> bool {
        match self.pending.remove(&id) {
            Some(prev) => {
                undo.push(UndoStep::Pending(id, Some(prev)));
                true
            }
            None => false,
        }
    }

    /// Takes `file` out of the table (empty if absent), uncounting it and
    /// saving it for undo. Pair with `put_file`.
    pub(super) fn take_file(&mut self, file: &FileId, undo: &mut NlmUndo) -> FileLocks {
        let f = self.files.remove(file).unwrap_or_default();
        self.uncount(&f);
        let saved = if f.is_empty() { None } else { Some(f.clone()) };
        undo.push(UndoStep::File(file.clone(), saved));
        f
    }

    /// Puts `f` back (an empty file is dropped), counting it.
    pub(super) fn put_file(&mut self, file: FileId, f: FileLocks) {
        if f.is_empty() {
            return;
        }
        self.counts.locks += f.lock_count();
        self.counts.waiters += f.waiters.len() as u64;
        for (owner, list) in &f.held {
            *self.counts.per_host.entry(owner.caller_name.clone()).or_default() += list.len() as u64;
        }
        self.files.insert(file, f);
    }

    fn uncount(&mut self, f: &FileLocks) {
        self.counts.locks -= f.lock_count();
        self.counts.waiters -= f.waiters.len() as u64;
        for (owner, list) in &f.held {
            if let Some(n) = self.counts.per_host.get_mut(&owner.caller_name) {
                *n -= list.len() as u64;
                if *n == 0 {
                    self.counts.per_host.remove(&owner.caller_name);
                }
            }
        }
    }

    pub(super) fn restore_file(&mut self, file: FileId, prev: Option<FileLocks>) {
        let current = self.files.remove(&file).unwrap_or_default();
        self.uncount(&current);
        if let Some(prev) = prev {
            self.put_file(file, prev);
        }
    }

    pub fn lock_count(&self) -> u64 {
        self.counts.locks
    }

    pub fn waiter_count(&self) -> u64 {
        self.counts.waiters
    }

    /// Locks held by `host` (all owners with that caller_name).
    pub fn host_count(&self, host: &str) -> u64 {
        self.counts.per_host.get(host).copied().unwrap_or(0)
    }

    /// Every granted lock: (file, owner, range, kind), by file, owner, start.
    pub fn iter_locks(&self) -> impl Iterator<Item = (&FileId, &LockOwner, LockRange, LockKind)> + '_ {
        self.files.iter().flat_map(|(file, f)| {
            f.held.iter().flat_map(move |(owner, list)| list.iter().map(move |h| (file, owner, h.span.range(), h.kind)))
        })
    }

    /// The granted locks on one file: (owner, range, kind), by owner, start.
    pub fn file_locks<'a>(&'a self, file: &FileId) -> impl Iterator<Item = (&'a LockOwner, LockRange, LockKind)> + 'a {
        self.files.get(file).into_iter().flat_map(|f| {
            f.held.iter().flat_map(|(owner, list)| list.iter().map(move |h| (owner, h.span.range(), h.kind)))
        })
    }

    pub(super) fn files_with_waiters(&self) -> impl Iterator<Item = &FileId> + '_ {
        self.files.iter().filter(|(_, f)| !f.waiters.is_empty()).map(|(file, _)| file)
    }

    /// Every waiter: (file, waiter), by file, oldest first.
    pub fn iter_waiters(&self) -> impl Iterator<Item = (&FileId, &Waiter)> + '_ {
        self.files.iter().flat_map(|(file, f)| f.waiters.iter().map(move |w| (file, w)))
    }

    /// Granted waiters whose callback is unacknowledged, oldest first: what
    /// the leader (re)sends GRANTED_MSG for, also after a failover.
    pub fn pending_grants(&self) -> impl Iterator<Item = (u64, &PendingGrant)> + '_ {
        self.pending.iter().map(|(id, g)| (*id, g))
    }

    /// O(1) checks after every operation; the full walk runs in tests and
    /// on snapshot load (`check_invariants`).
    pub(super) fn assert_cheap_invariants(&self) {
        assert!(self.counts.locks <= LOCKS_MAX, "locks over LOCKS_MAX");
        assert!(self.counts.waiters <= WAITERS_TOTAL_MAX, "waiters over WAITERS_TOTAL_MAX");
        assert!(self.pending.len() as u64 <= GRANTS_PENDING_MAX, "pending grants over GRANTS_PENDING_MAX");
        let newest = self.pending.last_key_value().map(|(id, _)| *id);
        assert!(newest.is_none_or(|id| id < self.next_grant_id), "grant id from the future");
        #[cfg(test)]
        if let Err(e) = self.check_invariants() {
            panic!("lock table invariant broken: {e}");
        }
    }

    /// O(size). Each rule is a separate check with its own message.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counts = Counts::default();
        for (file, f) in &self.files {
            if f.is_empty() {
                return Err("an empty file is kept".into());
            }
            if file.validate().is_err() {
                return Err("a file id is invalid".into());
            }
            if f.lock_count() > LOCKS_PER_FILE_MAX {
                return Err("a file is over LOCKS_PER_FILE_MAX".into());
            }
            if f.waiters.len() as u64 > WAITERS_MAX {
                return Err("a file is over WAITERS_MAX".into());
            }
            check_file(f)?;
            counts.locks += f.lock_count();
            counts.waiters += f.waiters.len() as u64;
            for (owner, list) in &f.held {
                *counts.per_host.entry(owner.caller_name.clone()).or_default() += list.len() as u64;
            }
        }
        if counts != self.counts {
            return Err("derived counts disagree with the files".into());
        }
        if counts.locks > LOCKS_MAX {
            return Err("over LOCKS_MAX".into());
        }
        if counts.waiters > WAITERS_TOTAL_MAX {
            return Err("over WAITERS_TOTAL_MAX".into());
        }
        if counts.per_host.values().any(|n| *n > LOCKS_PER_HOST_MAX) {
            return Err("a host is over LOCKS_PER_HOST_MAX".into());
        }
        self.check_pending()
    }

    fn check_pending(&self) -> Result<(), String> {
        if self.pending.len() as u64 > GRANTS_PENDING_MAX {
            return Err("over GRANTS_PENDING_MAX".into());
        }
        for (id, grant) in &self.pending {
            if *id >= self.next_grant_id {
                return Err("a pending grant's id is from the future".into());
            }
            let held = self.files.get(&grant.file).and_then(|f| f.held.get(&grant.owner));
            let span = Span::of(grant.range);
            if !covered_by_run(held, span) {
                return Err("a pending grant's range is not held by its owner".into());
            }
        }
        Ok(())
    }
}

/// `span` lies within a run of the owner's locks with no gap (of any kinds).
fn covered_by_run(held: Option<&Vec<Held>>, span: Span) -> bool {
    let Some(list) = held else { return false };
    let mut next = span.start;
    for h in list {
        if h.span.start <= next && h.span.last >= next {
            if h.span.last >= span.last {
                return true;
            }
            next = h.span.last + 1;
        }
    }
    false
}

/// One file: owners valid and canonical, no conflicting overlap between
/// owners, waiters valid.
fn check_file(f: &FileLocks) -> Result<(), String> {
    for (owner, list) in &f.held {
        if owner.validate().is_err() {
            return Err("a lock owner is invalid".into());
        }
        if let Some(e) = canonical_error(list) {
            return Err(e.into());
        }
    }
    let owners: Vec<(&LockOwner, &Vec<Held>)> = f.held.iter().collect();
    for (i, (_, a)) in owners.iter().enumerate() {
        for (_, b) in owners.iter().skip(i + 1) {
            for x in a.iter() {
                if b.iter().any(|y| x.span.overlaps(y.span) && x.kind.conflicts_with(y.kind)) {
                    return Err("two owners hold conflicting overlapping locks".into());
                }
            }
        }
    }
    for w in &f.waiters {
        if w.owner.validate().is_err() {
            return Err("a waiter's owner is invalid".into());
        }
    }
    Ok(())
}
