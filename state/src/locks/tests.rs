//! Unit tests: the NLM cases one by one (conflicts, same-owner merges and
//! upgrades, waiters, cancel, callbacks, FREE_ALL/NOTIFY), the MAXEOF edge
//! cases the Connectathon lock tests use, every bound, undo and serde.

use super::span::{Held, Span};
use super::table::FileLocks;
use super::*;
use crate::limits::{
    LOCKS_MAX, LOCKS_PER_FILE_MAX, LOCKS_PER_HOST_MAX, MONITORS_MAX, SHARES_PER_FILE_MAX, WAITERS_MAX,
    WAITERS_TOTAL_MAX,
};
use LockKind::{Exclusive as X, Shared as S};

pub(super) fn owner(host: &str, svid: u32) -> LockOwner {
    LockOwner { caller_name: host.into(), svid, oh: format!("{svid}@{host}").into_bytes() }
}

pub(super) fn file(n: u32) -> FileId {
    FileId(n.to_be_bytes().to_vec())
}

fn r(offset: u64, len: u64) -> LockRange {
    LockRange { offset, len }
}

fn args(f: u32, o: &LockOwner, range: LockRange, kind: LockKind) -> LockArgs {
    LockArgs { file: file(f), owner: o.clone(), range, kind }
}

/// Applies one LOCK at time 0, discarding the undo.
fn lock(n: &mut NlmState, a: &LockArgs, block: bool) -> Effect<LockOutcome> {
    n.lock(a, block, 0, &mut NlmUndo::default())
}

fn unlock(n: &mut NlmState, f: u32, o: &LockOwner, range: LockRange) -> Effect<UnlockOutcome> {
    n.unlock(&file(f), o, range, 0, &mut NlmUndo::default())
}

fn held(n: &NlmState, o: &LockOwner) -> Vec<(LockRange, LockKind)> {
    n.locks().iter_locks().filter(|(_, ow, _, _)| *ow == o).map(|(_, _, rg, k)| (rg, k)).collect()
}

fn granted(e: &Effect<LockOutcome>) -> bool {
    e.outcome == LockOutcome::Granted
}

#[test]
fn conflicts_need_two_owners_an_overlap_and_an_exclusive() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 10), S), false)));
    assert!(granted(&lock(&mut n, &args(1, &b, r(5, 10), S), false)));
    assert!(granted(&lock(&mut n, &args(2, &b, r(0, 10), X), false)), "another file");
    assert!(granted(&lock(&mut n, &args(1, &b, r(10, 5), X), false)), "adjacent is not overlapping");
    // b's [5,10) shared and [10,15) exclusive: the first conflicting lock is reported.
    let expect = Holder { owner: b.clone(), range: r(10, 5), kind: X };
    assert_eq!(n.test(&args(1, &a, r(0, 20), S)), TestOutcome::Conflict(expect.clone()));
    assert_eq!(lock(&mut n, &args(1, &a, r(12, 1), S), false).outcome, LockOutcome::Denied(expect));
    assert_ne!(n.test(&args(1, &a, r(0, 20), X)), TestOutcome::Free);
    assert_eq!(
        n.test(&args(1, &b, r(0, 20), X)),
        TestOutcome::Conflict(Holder { range: r(0, 10), kind: S, owner: a.clone() })
    );
    assert_eq!(n.test(&args(1, &a, r(0, 10), S)), TestOutcome::Free);
    // Same host, other svid: a different owner.
    assert_ne!(n.test(&args(1, &owner("ha", 2), r(0, 1), X)), TestOutcome::Free);
}

#[test]
fn same_owner_merges_upgrades_and_retransmits() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 100), S), false)));
    assert!(granted(&lock(&mut n, &args(1, &a, r(100, 50), S), false)));
    assert!(granted(&lock(&mut n, &args(1, &a, r(20, 10), S), false)), "retransmission inside");
    assert_eq!(held(&n, &a), vec![(r(0, 150), S)]);
    assert!(granted(&lock(&mut n, &args(1, &a, r(40, 10), X), false)), "upgrade is not a conflict");
    assert_eq!(held(&n, &a), vec![(r(0, 40), S), (r(40, 10), X), (r(50, 100), S)]);
    assert!(matches!(lock(&mut n, &args(1, &b, r(45, 1), S), false).outcome, LockOutcome::Denied(_)));
    assert!(granted(&lock(&mut n, &args(1, &b, r(60, 1), S), false)));
    assert!(granted(&lock(&mut n, &args(1, &a, r(40, 10), S), false)), "downgrade");
    assert_eq!(held(&n, &a), vec![(r(0, 150), S)]);
    // a cannot upgrade over b's shared byte.
    assert!(matches!(lock(&mut n, &args(1, &a, r(0, 0), X), false).outcome, LockOutcome::Denied(_)));
    assert_eq!(n.locks().lock_count(), 2);
}

#[test]
fn unlock_splits_and_unlocking_nothing_succeeds() {
    let a = owner("ha", 1);
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
    assert_eq!(unlock(&mut n, 1, &a, r(10, 10)).outcome, UnlockOutcome::Released);
    assert_eq!(held(&n, &a), vec![(r(0, 10), X), (r(20, 0), X)]);
    assert_eq!(unlock(&mut n, 1, &a, r(10, 10)).outcome, UnlockOutcome::NothingHeld);
    assert_eq!(unlock(&mut n, 9, &a, r(0, 0)).outcome, UnlockOutcome::NothingHeld);
    assert_eq!(unlock(&mut n, 1, &owner("hb", 1), r(0, 0)).outcome, UnlockOutcome::NothingHeld);
    assert_eq!(unlock(&mut n, 1, &a, r(0, 0)).outcome, UnlockOutcome::Released);
    assert_eq!(n.locks().lock_count(), 0);
    assert_eq!(n, NlmState::default(), "nothing left behind");
}

#[test]
fn waiters_are_granted_fifo_on_release() {
    let (a, b, c, d) = (owner("ha", 1), owner("hb", 1), owner("hc", 1), owner("hd", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 100), X), true)));
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 10), X), true).outcome, LockOutcome::Blocked);
    assert_eq!(lock(&mut n, &args(1, &c, r(5, 10), S), true).outcome, LockOutcome::Blocked);
    assert_eq!(lock(&mut n, &args(1, &c, r(5, 10), S), true).outcome, LockOutcome::Blocked, "no second queue entry");
    assert_eq!(lock(&mut n, &args(1, &d, r(50, 10), S), true).outcome, LockOutcome::Blocked);
    assert_eq!(n.locks().waiter_count(), 3);
    assert!(matches!(lock(&mut n, &args(1, &d, r(0, 1), S), false).outcome, LockOutcome::Denied(_)), "no wait");
    let e = unlock(&mut n, 1, &a, r(0, 0));
    assert_eq!(e.outcome, UnlockOutcome::Released);
    // b first; c conflicts with b's fresh grant and keeps waiting; d is free.
    let who: Vec<(&LockOwner, LockRange)> = e.granted.iter().map(|g| (&g.owner, g.range)).collect();
    assert_eq!(who, vec![(&b, r(0, 10)), (&d, r(50, 10))]);
    assert_eq!(e.granted.iter().map(|g| g.id).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(n.locks().pending_grants().count(), 2);
    let e = unlock(&mut n, 1, &b, r(0, 10));
    assert_eq!(e.granted.len(), 1);
    assert_eq!(e.granted[0].owner, c);
    assert_eq!(n.locks().waiter_count(), 0);
    assert_eq!(n.locks().pending_grants().count(), 2, "b's moot callback gone, c's added");
}

#[test]
fn a_downgrade_wakes_shared_waiters() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 10), S), true).outcome, LockOutcome::Blocked);
    let e = lock(&mut n, &args(1, &a, r(0, 0), S), true);
    assert!(granted(&e));
    assert_eq!(e.granted.len(), 1);
    assert_eq!(held(&n, &b), vec![(r(0, 10), S)]);
}

#[test]
fn a_grant_that_downgrades_frees_an_earlier_waiter() {
    let (a, b, c) = (owner("ha", 1), owner("hb", 1), owner("hc", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &b, r(0, 10), X), false)));
    assert!(granted(&lock(&mut n, &args(1, &c, r(20, 10), X), false)));
    assert_eq!(lock(&mut n, &args(1, &a, r(0, 5), S), true).outcome, LockOutcome::Blocked);
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 30), S), true).outcome, LockOutcome::Blocked);
    let e = unlock(&mut n, 1, &c, r(0, 0));
    // Pass 1: a still blocked by b's exclusive; b's shared request granted
    // (downgrading [0,10)). Pass 2: a is free.
    assert_eq!(e.granted.iter().map(|g| g.owner.clone()).collect::<Vec<_>>(), vec![b.clone(), a.clone()]);
}

#[test]
fn cancel_removes_a_waiter_never_a_lock() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
    let wait = args(1, &b, r(0, 10), X);
    assert_eq!(lock(&mut n, &wait, true).outcome, LockOutcome::Blocked);
    assert_eq!(n.cancel(&args(1, &b, r(0, 10), S), &mut u), CancelOutcome::NotFound, "kind must match");
    assert_eq!(n.cancel(&wait, &mut u), CancelOutcome::Cancelled);
    assert_eq!(n.locks().waiter_count(), 0);
    // Granted before the CANCEL arrived: the callback stops, the lock stays.
    assert_eq!(lock(&mut n, &wait, true).outcome, LockOutcome::Blocked);
    let e = unlock(&mut n, 1, &a, r(0, 0));
    assert_eq!(e.granted.len(), 1);
    assert_eq!(n.cancel(&wait, &mut u), CancelOutcome::AlreadyGranted);
    assert_eq!(n.locks().pending_grants().count(), 0);
    assert_eq!(held(&n, &b), vec![(r(0, 10), X)]);
    assert_eq!(n.cancel(&wait, &mut u), CancelOutcome::NotFound);
}

#[test]
fn callbacks_end_on_ack_on_a_polling_lock_and_on_unlock() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    let wait = args(1, &b, r(0, 10), X);
    for _ in 0..3 {
        assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
        assert_eq!(lock(&mut n, &wait, true).outcome, LockOutcome::Blocked);
        assert_eq!(unlock(&mut n, 1, &a, r(0, 0)).granted.len(), 1);
        assert_eq!(n.locks().pending_grants().count(), 1);
        let unlock_b = unlock(&mut n, 1, &b, r(0, 0));
        assert_eq!(unlock_b.outcome, UnlockOutcome::Released);
        assert_eq!(n.locks().pending_grants().count(), 0);
    }
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
    assert_eq!(lock(&mut n, &wait, true).outcome, LockOutcome::Blocked);
    let id = unlock(&mut n, 1, &a, r(0, 0)).granted[0].id;
    assert_eq!(id, 3, "ids are never reused");
    // The client's 30 s re-poll: GRANTED, and no callback needed any more.
    assert!(granted(&lock(&mut n, &wait, true)));
    assert_eq!(n.locks().pending_grants().count(), 0);
    assert!(!n.grant_acknowledged(id, &mut u));
    assert!(granted(&lock(&mut n, &args(1, &a, r(100, 1), X), false)));
    assert_eq!(lock(&mut n, &args(1, &b, r(100, 1), X), true).outcome, LockOutcome::Blocked);
    let id = unlock(&mut n, 1, &a, r(100, 1)).granted[0].id;
    assert!(n.grant_acknowledged(id, &mut u));
    assert_eq!(n.locks().pending_grants().count(), 0);
}

#[test]
fn free_all_and_notify_release_a_host() {
    let (a1, a2, b) = (owner("ha", 1), owner("ha", 2), owner("hb", 1));
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    assert!(granted(&lock(&mut n, &args(1, &a1, r(0, 10), X), false)));
    assert!(granted(&lock(&mut n, &args(2, &a2, r(0, 10), S), false)));
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 1), X), true).outcome, LockOutcome::Blocked);
    assert_eq!(lock(&mut n, &args(2, &a1, r(0, 1), X), true).outcome, LockOutcome::Blocked);
    let share = Share {
        owner: ShareOwner { caller_name: "ha".into(), oh: vec![1] },
        mode: ShareMode::DenyNone,
        access: ShareAccess::Read,
    };
    assert_eq!(n.share(&file(3), &share, &mut u), ShareOutcome::Granted);
    let id = MonitorId { my_name: "srv".into(), my_prog: 100021, my_vers: 4, my_proc: 16 };
    assert_eq!(n.mon("ha", &id, [7; 16], &mut u), MonOutcome::Monitored { state: 1 });
    let e = n.notify("ha", 3, 5, &mut u);
    assert!(e.outcome.restarted);
    assert_eq!(e.outcome.freed, FreeAllOutcome { locks: 2, waiters: 1, grants: 0, shares: 1 });
    assert_eq!(e.outcome.callbacks, vec![MonitorCallback { mon_name: "ha".into(), id, state: 3, priv_: [7; 16] }]);
    assert_eq!(e.granted.len(), 1);
    assert_eq!(e.granted[0].owner, b);
    assert_eq!(n.locks().host_count("ha"), 0);
    assert!(n.shares().is_empty());
    // A retransmitted NOTIFY changes nothing, even after the host locks again.
    assert!(granted(&lock(&mut n, &args(4, &a1, r(0, 1), X), false)));
    assert_eq!(n.notify("ha", 3, 6, &mut u).outcome, NotifyOutcome::default());
    assert_eq!(n.locks().host_count("ha"), 1);
    let e = n.free_all("ha", 7, &mut u);
    assert_eq!(e.outcome.locks, 1);
    assert_eq!(n.locks().lock_count(), 1, "only b's lock is left");
}

#[test]
fn maxeof_edges() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let top = u64::MAX;
    let half = 1u64 << 63;
    let mut n = NlmState::default();
    // The Linux client sends "to OFFSET_MAX" as len 0; a lock at 2^63-1 of
    // length 1 ends exactly where a 64-bit signed offset would.
    assert!(granted(&lock(&mut n, &args(1, &a, r(half - 1, 1), X), false)));
    assert!(granted(&lock(&mut n, &args(1, &b, r(half, 0), X), false)));
    assert!(matches!(lock(&mut n, &args(1, &b, r(half - 2, 2), S), false).outcome, LockOutcome::Denied(_)));
    assert_eq!(
        n.test(&args(1, &a, r(top, 1), S)),
        TestOutcome::Conflict(Holder { owner: b.clone(), range: r(half, 0), kind: X })
    );
    // offset + len past 2^64 saturates: the same as len 0.
    assert_eq!(unlock(&mut n, 1, &b, r(half, top)).outcome, UnlockOutcome::Released);
    assert!(granted(&lock(&mut n, &args(1, &b, r(top, 1), X), false)), "the very last byte");
    assert_eq!(held(&n, &b), vec![(r(top, 0), X)], "reported as to end of file");
    assert!(granted(&lock(&mut n, &args(1, &a, r(top - 1, 1), X), false)));
    assert!(matches!(lock(&mut n, &args(1, &a, r(top - 1, 0), X), false).outcome, LockOutcome::Denied(_)));
    assert_eq!(unlock(&mut n, 1, &b, r(top, top)).outcome, UnlockOutcome::Released);
    assert!(granted(&lock(&mut n, &args(1, &a, r(top - 1, 0), X), false)));
    assert_eq!(held(&n, &a), vec![(r(half - 1, 1), X), (r(top - 1, 0), X)]);
    // Whole file, then free the middle: two locks out to both ends.
    assert!(granted(&lock(&mut n, &args(2, &a, r(0, 0), X), false)));
    assert_eq!(unlock(&mut n, 2, &a, r(1, top - 1)).outcome, UnlockOutcome::Released);
    let f2: Vec<_> = n.locks().iter_locks().filter(|(f, ..)| **f == file(2)).map(|(_, _, rg, _)| rg).collect();
    assert_eq!(f2, vec![r(0, 1), r(top, 0)]);
    assert_eq!(Span::of(r(0, top)), Span { start: 0, last: top - 1 });
}

#[test]
fn bad_arguments_are_refused_not_stored() {
    let mut n = NlmState::default();
    let long = "h".repeat(1025);
    let cases = [
        (args(1, &owner("", 1), r(0, 1), X), ArgError::CallerName),
        (args(1, &owner(&long, 1), r(0, 1), X), ArgError::CallerName),
        (args(1, &owner("a\0b", 1), r(0, 1), X), ArgError::CallerName),
        (LockArgs { file: FileId(vec![]), ..args(1, &owner("h", 1), r(0, 1), X) }, ArgError::FileId),
        (LockArgs { file: FileId(vec![0; 65]), ..args(1, &owner("h", 1), r(0, 1), X) }, ArgError::FileId),
        (args(1, &LockOwner { oh: vec![0; 1025], ..owner("h", 1) }, r(0, 1), X), ArgError::OwnerHandle),
    ];
    for (a, e) in cases {
        assert_eq!(lock(&mut n, &a, true).outcome, LockOutcome::Invalid(e));
        assert_eq!(n.test(&a), TestOutcome::Invalid(e));
    }
    assert_eq!(n, NlmState::default());
}

#[test]
fn locks_per_file_bound_refuses_whole_operations() {
    let a = owner("ha", 1);
    let mut n = NlmState::default();
    // Every other byte: no merging.
    for i in 0..LOCKS_PER_FILE_MAX {
        assert!(granted(&lock(&mut n, &args(1, &a, r(i * 2, 1), X), false)));
    }
    let before = n.clone();
    let over = lock(&mut n, &args(1, &owner("hb", 1), r(top_free(), 1), X), false);
    assert_eq!(over.outcome, LockOutcome::Full(LockBound::LocksPerFile));
    // A new lock of the same owner needs room too.
    assert_eq!(
        lock(&mut n, &args(1, &a, r(4_000_000, 4), X), false).outcome,
        LockOutcome::Full(LockBound::LocksPerFile)
    );
    assert_eq!(n, before);
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 3), X), false)), "a merge shrinks the count");
    assert_eq!(n.locks().lock_count(), LOCKS_PER_FILE_MAX - 1);
    assert!(granted(&lock(&mut n, &args(1, &a, r(top_free() + 10, 5), X), false)));
    let before = n.clone();
    assert_eq!(unlock(&mut n, 1, &a, r(1, 1)).outcome, UnlockOutcome::Full(LockBound::LocksPerFile));
    assert_eq!(n, before);
    assert_eq!(n.check_invariants(), Ok(()));
}

#[test]
fn a_refused_unlock_keeps_the_owners_waiter() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    for i in 0..LOCKS_PER_FILE_MAX - 2 {
        assert!(granted(&lock(&mut n, &args(1, &a, r(i * 2, 1), S), false)));
    }
    assert!(granted(&lock(&mut n, &args(1, &a, r(10_000, 3), S), false)));
    assert!(granted(&lock(&mut n, &args(1, &b, r(10_001, 1), S), false)));
    assert_eq!(lock(&mut n, &args(1, &a, r(10_001, 1), X), true).outcome, LockOutcome::Blocked);
    let before = n.clone();
    // Unlocking the middle byte needs a split, and the file is full: nothing
    // changes, not even the waiter UNLOCK would otherwise cancel.
    assert_eq!(unlock(&mut n, 1, &a, r(10_001, 1)).outcome, UnlockOutcome::Full(LockBound::LocksPerFile));
    assert_eq!(n, before);
    assert_eq!(unlock(&mut n, 1, &a, r(10_000, 3)).outcome, UnlockOutcome::Released);
    assert_eq!(n.locks().waiter_count(), 1, "only a waiter for exactly the unlocked range goes");
    assert_eq!(unlock(&mut n, 1, &a, r(10_001, 1)).outcome, UnlockOutcome::NothingHeld);
    assert_eq!(n.locks().waiter_count(), 0);
}

fn top_free() -> u64 {
    LOCKS_PER_FILE_MAX * 2 + 100
}

#[test]
fn host_and_total_lock_bounds() {
    // Built directly (one lock per file) so the test stays fast.
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    let hosts = LOCKS_MAX / LOCKS_PER_HOST_MAX;
    for i in 0..LOCKS_MAX - 1 {
        let host = format!("h{}", i % hosts);
        let mut f = FileLocks::default();
        f.held.insert(owner(&host, 1), vec![Held { span: Span { start: 0, last: 0 }, kind: X }]);
        n.locks.put_file(FileId(i.to_be_bytes().to_vec()), f);
    }
    assert_eq!(n.locks().check_invariants(), Ok(()));
    assert_eq!(n.locks().host_count("h0"), LOCKS_PER_HOST_MAX);
    let e = n.lock(&args(1, &owner("h0", 9), r(0, 1), X), false, 0, &mut u);
    assert_eq!(e.outcome, LockOutcome::Full(LockBound::LocksPerHost));
    let e = n.lock(&args(1, &owner("h3", 1), r(0, 1), X), false, 0, &mut u);
    assert!(granted(&e), "h3 has one lock less");
    let e = n.lock(&args(2, &owner("other", 1), r(0, 1), X), false, 0, &mut u);
    assert_eq!(e.outcome, LockOutcome::Full(LockBound::Locks));
    assert_eq!(n.locks().lock_count(), LOCKS_MAX);
}

#[test]
fn wake_grants_a_waiter_a_bound_held_back() {
    let mut n = NlmState::default();
    let h0 = owner("h0", 1);
    // h0 one lock short of LOCKS_PER_HOST_MAX, one lock per file.
    for i in 0..LOCKS_PER_HOST_MAX - 1 {
        let mut f = FileLocks::default();
        f.held.insert(h0.clone(), vec![Held { span: Span { start: 0, last: 0 }, kind: X }]);
        n.locks.put_file(FileId((1_000_000 + i).to_be_bytes().to_vec()), f);
    }
    let blocker = owner("blocker", 1);
    assert!(granted(&lock(&mut n, &args(1, &blocker, r(0, 10), X), false)));
    assert_eq!(lock(&mut n, &args(1, &h0, r(0, 10), X), true).outcome, LockOutcome::Blocked);
    assert!(granted(&lock(&mut n, &args(2, &h0, r(0, 1), X), false)), "h0 now at its bound");
    // The release cannot grant h0's waiter: the bound refuses it.
    assert!(unlock(&mut n, 1, &blocker, r(0, 10)).granted.is_empty());
    // Room frees on another file, whose release wakes only that file.
    assert!(unlock(&mut n, 2, &h0, r(0, 1)).granted.is_empty());
    assert_eq!(n.locks().waiter_count(), 1);
    let mut u = NlmUndo::default();
    let woken = n.wake(5, &mut u);
    assert_eq!(woken.len(), 1);
    assert_eq!((woken[0].file.clone(), woken[0].owner.clone(), woken[0].range), (file(1), h0.clone(), r(0, 10)));
    assert_eq!(n.locks().waiter_count(), 0);
    assert_eq!(n.locks().pending_grants().count(), 1);
    assert!(n.wake(6, &mut NlmUndo::default()).is_empty(), "nothing more to wake");
    let before = n.clone();
    n.undo(u);
    assert_eq!(n.locks().waiter_count(), 1, "undo puts the waiter back");
    assert_ne!(n, before);
}

#[test]
fn waiter_bounds() {
    let a = owner("ha", 1);
    let mut n = NlmState::default();
    let files = WAITERS_TOTAL_MAX / WAITERS_MAX;
    for f in 0..files as u32 + 1 {
        assert!(granted(&lock(&mut n, &args(f, &a, r(0, 0), X), false)));
    }
    for f in 0..files as u32 {
        for i in 0..WAITERS_MAX as u32 {
            assert_eq!(lock(&mut n, &args(f, &owner("w", i), r(0, 1), S), true).outcome, LockOutcome::Blocked);
        }
        let e = lock(&mut n, &args(f, &owner("w", 999), r(0, 1), S), true);
        assert_eq!(e.outcome, LockOutcome::Full(LockBound::WaitersPerFile));
    }
    let e = lock(&mut n, &args(files as u32, &owner("w", 1), r(0, 1), S), true);
    assert_eq!(e.outcome, LockOutcome::Full(LockBound::WaitersTotal));
    assert_eq!(n.locks().waiter_count(), WAITERS_TOTAL_MAX);
    // Releasing one file grants its whole queue (shared with each other).
    assert_eq!(unlock(&mut n, 0, &a, r(0, 0)).granted.len() as u64, WAITERS_MAX);
}

#[test]
fn undo_restores_exactly() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 0), X), false)));
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 10), X), true).outcome, LockOutcome::Blocked);
    let id = MonitorId { my_name: "srv".into(), my_prog: 1, my_vers: 1, my_proc: 1 };
    let before = n.clone();
    let mut u = NlmUndo::default();
    let _ = n.unlock(&file(1), &a, r(5, 1), 1, &mut u);
    let _ = n.unlock(&file(1), &a, r(0, 0), 1, &mut u);
    let _ = n.lock(&args(2, &a, r(0, 0), S), false, 1, &mut u);
    let _ = n.mon("hb", &id, [1; 16], &mut u);
    let _ = n.bump_nsm_state(&mut u);
    let _ = n.notify("hb", 5, 2, &mut u);
    assert_ne!(n, before);
    n.undo(u);
    assert_eq!(n, before);
    assert_eq!(n.check_invariants(), Ok(()));
}

#[test]
fn serde_roundtrip_and_broken_tables_are_refused() {
    let (a, b) = (owner("ha", 1), owner("hb", 1));
    let mut n = NlmState::default();
    assert!(granted(&lock(&mut n, &args(1, &a, r(0, 10), X), false)));
    assert_eq!(lock(&mut n, &args(1, &b, r(0, 10), X), true).outcome, LockOutcome::Blocked);
    let bytes = bincode::serialize(&n).unwrap_or_default();
    assert_eq!(bincode::deserialize::<NlmState>(&bytes).ok(), Some(n.clone()));
    let mut f = FileLocks::default();
    f.held.insert(a, vec![Held { span: Span { start: 0, last: 9 }, kind: X }]);
    f.held.insert(b, vec![Held { span: Span { start: 9, last: 9 }, kind: S }]);
    let mut bad = LockTable::default();
    bad.put_file(file(1), f);
    assert!(bad.check_invariants().is_err());
    let bytes = bincode::serialize(&bad).unwrap_or_default();
    assert!(bincode::deserialize::<LockTable>(&bytes).is_err());
}

#[test]
fn shares_follow_the_deny_rules() {
    use ShareAccess as A;
    use ShareMode as M;
    let sh =
        |host: &str, mode, access| Share { owner: ShareOwner { caller_name: host.into(), oh: vec![] }, mode, access };
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    let f = file(1);
    assert_eq!(n.share(&f, &sh("a", M::DenyWrite, A::Read), &mut u), ShareOutcome::Granted);
    assert_eq!(n.share(&f, &sh("b", M::DenyNone, A::Read), &mut u), ShareOutcome::Granted);
    assert_eq!(n.share(&f, &sh("c", M::DenyNone, A::Write), &mut u), ShareOutcome::Denied, "a denies write");
    assert_eq!(n.share(&f, &sh("c", M::DenyRead, A::None), &mut u), ShareOutcome::Denied, "a and b read");
    assert_eq!(n.share(&f, &sh("c", M::DenyWrite, A::None), &mut u), ShareOutcome::Granted);
    // An owner replaces its own reservation, checked against the others only.
    assert_eq!(n.share(&f, &sh("a", M::DenyReadWrite, A::ReadWrite), &mut u), ShareOutcome::Denied);
    assert_eq!(n.unshare(&f, &sh("b", M::DenyNone, A::None).owner, &mut u), UnshareOutcome::Released);
    assert_eq!(n.share(&f, &sh("a", M::DenyRead, A::ReadWrite), &mut u), ShareOutcome::Denied, "c denies write");
    assert_eq!(n.unshare(&f, &sh("c", M::DenyNone, A::None).owner, &mut u), UnshareOutcome::Released);
    assert_eq!(n.share(&f, &sh("a", M::DenyReadWrite, A::ReadWrite), &mut u), ShareOutcome::Granted);
    assert_eq!(n.shares().len(), 1);
    assert_eq!(n.unshare(&f, &sh("zz", M::DenyNone, A::None).owner, &mut u), UnshareOutcome::NothingHeld);
    assert_eq!(ShareMode::from_bits(2), Some(M::DenyWrite));
    assert_eq!(ShareAccess::from_bits(4), None);
    let g = file(2);
    for i in 0..SHARES_PER_FILE_MAX {
        assert_eq!(n.share(&g, &sh(&format!("h{i}"), M::DenyNone, A::Read), &mut u), ShareOutcome::Granted);
    }
    let full = n.share(&g, &sh("more", M::DenyNone, A::Read), &mut u);
    assert_eq!(full, ShareOutcome::Full(LockBound::SharesPerFile));
    assert_eq!(n.check_invariants(), Ok(()));
}

#[test]
fn monitors_and_the_nsm_state() {
    let mut n = NlmState::default();
    let mut u = NlmUndo::default();
    let id = |p: u32| MonitorId { my_name: "srv".into(), my_prog: p, my_vers: 1, my_proc: 1 };
    assert_eq!(n.nsm_state(), 1);
    assert_eq!(n.bump_nsm_state(&mut u), 3);
    assert_eq!(n.mon("c1", &id(1), [0; 16], &mut u), MonOutcome::Monitored { state: 3 });
    assert_eq!(n.mon("c1", &id(1), [1; 16], &mut u), MonOutcome::Monitored { state: 3 }, "update in place");
    assert_eq!(n.mon("c2", &id(1), [0; 16], &mut u), MonOutcome::Monitored { state: 3 });
    assert_eq!(n.mon("c2", &id(2), [0; 16], &mut u), MonOutcome::Monitored { state: 3 });
    assert_eq!(n.mon("", &id(2), [0; 16], &mut u), MonOutcome::Invalid(ArgError::CallerName));
    assert_eq!(n.monitors().len(), 3);
    assert_eq!(n.unmon("c2", &id(2), &mut u), 3);
    assert_eq!(n.unmon_all(&id(1), &mut u), 3);
    assert!(n.monitors().is_empty());
    for i in 0..MONITORS_MAX {
        assert!(matches!(n.mon(&format!("h{i}"), &id(1), [0; 16], &mut u), MonOutcome::Monitored { .. }));
    }
    assert_eq!(n.mon("more", &id(1), [0; 16], &mut u), MonOutcome::Full(LockBound::Monitors));
    let mut m = Monitors::default();
    m.restore_own_state(u32::MAX);
    assert_eq!(m.bump_own_state(&mut u), 1, "wraps and stays odd");
    assert_eq!(n.check_invariants(), Ok(()));
}
