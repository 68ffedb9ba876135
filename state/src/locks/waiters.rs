//! Granting waiters and the GRANTED-callback bookkeeping.
//!
//! After anything that releases or weakens a lock, `wake` walks the file's
//! queue oldest first and grants each waiter that now conflicts with nobody
//! (earlier grants of the same walk included) and fits the bounds. Granting
//! a shared waiter over its owner's exclusive bytes downgrades them and can
//! free a waiter the pass already skipped, so after such a pass the walk
//! repeats; each pass is in FIFO order. Every grant gets the next grant id and a pending-callback
//! record; beyond `GRANTS_PENDING_MAX` the oldest record is dropped (that
//! client still learns of its lock: the Linux client re-sends its blocked
//! LOCK every 30 s, and a LOCK for a held range is GRANTED).

use std::collections::VecDeque;

use super::span::{set_span, Span};
use super::table::{FileLocks, LockTable, PendingGrant, Waiter};
use super::{FileId, Grant, LockKind, NlmUndo, UndoStep};
use crate::limits::GRANTS_PENDING_MAX;

impl LockTable {
    /// Grants what can be granted on `f` (taken out of the table as `file`).
    pub(super) fn wake(&mut self, file: &FileId, f: &mut FileLocks, now_ms: u64, undo: &mut NlmUndo) -> Vec<Grant> {
        let mut granted = Vec::new();
        loop {
            let mut weakened = false;
            let mut kept = VecDeque::with_capacity(f.waiters.len());
            while let Some(waiter) = f.waiters.pop_front() {
                match self.try_grant(f, &waiter) {
                    Some(downgraded) => {
                        weakened |= downgraded;
                        granted.push(self.record_grant(file, waiter, now_ms, undo));
                    }
                    None => kept.push_back(waiter),
                }
            }
            f.waiters = kept;
            // Only a downgrade can free a waiter this pass already passed over.
            if !weakened {
                return granted;
            }
        }
    }

    /// Re-checks every file's waiters (a promotion's wake-up): grants those
    /// that now fit. Every release already wakes its own file, so only a
    /// waiter whose grant a bound refused (room freed on another file since)
    /// can be found here.
    pub(super) fn wake_all(&mut self, now_ms: u64, undo: &mut NlmUndo) -> Vec<Grant> {
        let files: Vec<FileId> = self.files_with_waiters().cloned().collect();
        let mut granted = Vec::new();
        for file in files {
            let mut f = self.take_file(&file, undo);
            granted.extend(self.wake(&file, &mut f, now_ms, undo));
            self.put_file(file, f);
        }
        self.assert_cheap_invariants();
        granted
    }

    /// Makes `waiter` a lock if nothing conflicts and the bounds allow;
    /// Some(true) if that turned some of its owner's exclusive bytes shared.
    fn try_grant(&self, f: &mut FileLocks, waiter: &Waiter) -> Option<bool> {
        let span = Span::of(waiter.range);
        if f.conflict(&waiter.owner, span, waiter.kind).is_some() {
            return None;
        }
        let mine = f.held.get(&waiter.owner).map_or(&[][..], Vec::as_slice);
        let list = set_span(mine, span, Some(waiter.kind));
        if self.over_bound(f, &waiter.owner, list.len() as u64).is_some() {
            return None;
        }
        let downgraded = waiter.kind == LockKind::Shared
            && mine.iter().any(|h| h.kind == LockKind::Exclusive && h.span.overlaps(span));
        f.held.insert(waiter.owner.clone(), list);
        Some(downgraded)
    }

    fn record_grant(&mut self, file: &FileId, waiter: Waiter, now_ms: u64, undo: &mut NlmUndo) -> Grant {
        let id = self.next_grant_id;
        undo.push(UndoStep::NextGrantId(id));
        self.next_grant_id = id.wrapping_add(1);
        if self.pending.len() as u64 >= GRANTS_PENDING_MAX {
            if let Some((old_id, old)) = self.pending.pop_first() {
                undo.push(UndoStep::Pending(old_id, Some(old)));
            }
        }
        let Waiter { owner, range, kind, .. } = waiter;
        let pending = PendingGrant { file: file.clone(), owner: owner.clone(), range, kind, granted_ms: now_ms };
        self.pending.insert(id, pending);
        undo.push(UndoStep::Pending(id, None));
        Grant { id, file: file.clone(), owner, range, kind }
    }

    /// Drops every pending callback matching `pred`; returns how many.
    pub(super) fn forget_grants(&mut self, undo: &mut NlmUndo, pred: impl Fn(&PendingGrant) -> bool) -> u64 {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, g)| pred(g)).map(|(id, _)| *id).collect();
        for id in &ids {
            if let Some(prev) = self.pending.remove(id) {
                undo.push(UndoStep::Pending(*id, Some(prev)));
            }
        }
        ids.len() as u64
    }

    pub(super) fn restore_pending(&mut self, id: u64, prev: Option<PendingGrant>) {
        match prev {
            Some(grant) => self.pending.insert(id, grant),
            None => self.pending.remove(&id),
        };
    }

    pub(super) fn restore_next_grant_id(&mut self, next: u64) {
        self.next_grant_id = next;
    }
}
