//! The lock table mirrored onto the exported filesystem as OFD locks (issue 9
//! item 8), so local processes, and other servers of the same filesystem,
//! see the locks NFS clients hold, and NFS clients see theirs. Linux lockd
//! does the same with `vfs_lock_file` on its `nlm_file`'s open file, and
//! ganesha's VFS FSAL with `F_OFD_SETLK` on an fd per lock owner.
//!
//! One [`OfdMirror`] per active period (`Serving::open` builds it and takes
//! every lock of the replicated table, `Serving::close` drops it: closing its
//! descriptions releases every OFD lock; followers hold nothing).
//!
//! - **One open file description per (file, owner).** OFD locks belong to
//!   the description: two NLM owners need two (so they conflict with each
//!   other exactly as the table says), and one owner's ranges on a file
//!   share one (so the kernel splits and merges them like the table).
//!   Descriptions are opened by the server (its own credentials, as lockd
//!   opens as root) through the handle's resolution, `O_RDWR` (an exclusive
//!   lock needs a writable fd), else `O_RDONLY` (then only shared locks can
//!   be mirrored). Only regular files are mirrored. At most
//!   [`OFD_DESCRIPTIONS_MAX`], and never more than 1/[`OFD_RLIMIT_DIVISOR`]
//!   of the process's open-file limit (its soft limit raised to the hard
//!   one first), are open: beyond that a LOCK that
//!   would need a new one is refused with DENIED_NOLOCKS before its commit
//!   (a grant that still finds the bound reached, by a race or as a woken
//!   waiter, is counted and retried like a conflict, below). A deleted
//!   file (STALE) is not mirrored: no process can open it any more.
//! - **Reconcile, never bookkeep.** After every committed NLM command the
//!   files it touched (its file, the files of the waiters it granted, every
//!   file of the host a FREE_ALL or SM_NOTIFY freed) are made equal to the
//!   table: each owner's description gets exactly the table's ranges (gaps
//!   unlocked first, then shared ranges, then exclusive ones, so the
//!   mirror's own descriptions never block each other), and an owner left
//!   with nothing has its description closed. Reconciles are serialised and
//!   each reads the table when it runs, so the mirror only moves forward.
//!   The same function rebuilds the mirror at promotion.
//! - **LOCK and TEST see local locks.** Before a LOCK is committed its file
//!   is reconciled and, if the table itself has no conflict (then the table
//!   decides: BLOCKED or DENIED), the range is tested with `F_OFD_GETLK` on
//!   the owner's description (or a fresh one). After the reconcile the
//!   mirror's descriptions hold exactly the table's locks, which the table
//!   just found compatible, so a conflict reported now is a lock held
//!   outside hanfs: LOCK is LCK_DENIED without a commit, and a blocking LOCK
//!   is LCK_BLOCKED without a commit or a queued waiter (nothing would wake
//!   it: the kernel does not tell us when a local lock goes) — the client
//!   re-sends its blocked LOCK on its own (Linux every 30 s) and gets it
//!   once the local lock is gone. TEST reports such a lock as the holder
//!   (its pid as svid, no owner handle, as lockd does). A range the owner
//!   already holds in the table (a retransmission, a reclaim) is not tested.
//! - **A lost race is kept, counted and retried.** Between the test and the
//!   commit a local process can take the range, and a waiter granted by the
//!   table can find a local lock. The table's grant stands (the client was
//!   or will be told GRANTED, and undoing it with an UNLOCK could also drop
//!   ranges the owner held before); the failure is logged (warn, once per
//!   file until it heals) and counted (`OfdCounts::conflicts`), the file is
//!   marked dirty, and a retry task re-reconciles dirty files every
//!   [`OFD_RETRY_MS`] until the local lock is gone.
//! - **Offsets.** The kernel's offsets are signed: a range starting past
//!   `i64::MAX` is not mirrored (no local lock can reach it either), and
//!   one ending past it runs to the kernel's end of file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hanfs_raft::commit::Commit;
use hanfs_state::locks::{FileId, Grant, LockArgs, LockKind, LockOwner, NlmState, TestOutcome};
use hanfs_state::NlmCommand;
use nfs3_types::nfs3::nfsstat3;
use tokio::task::JoinHandle;

use super::ofd_sys::{getlk, kernel_span, nofile_soft_limit, open_for_locks, setlk, unlock, Span, SysError};
use super::xdr::{NetObj, Nlm4Holder, Nlm4Stats};
use crate::live::Live;

/// Open file descriptions the mirror holds at most (one per file and owner
/// holding a lock; the table allows `LOCKS_MAX`).
pub const OFD_DESCRIPTIONS_MAX: usize = 16_384;
/// The mirror takes at most 1/this of the process's open-file limit
/// (`RLIMIT_NOFILE`, soft, which `start` first raises to the hard limit),
/// leaving the rest to NFS connections and I/O.
pub const OFD_RLIMIT_DIVISOR: u64 = 2;
/// How often dirty files (a mirrored lock refused by a local lock) are retried.
pub const OFD_RETRY_MS: u64 = 1_000;
/// Dirty files retried per round.
pub const OFD_RETRY_FILES_MAX: usize = 64;

/// What a committed NLM command changed, besides the waiters it granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    Nothing,
    File(FileId),
    /// Every lock of this caller_name (FREE_ALL, SM_NOTIFY).
    Host(String),
}

impl Touched {
    pub fn of(cmd: &NlmCommand) -> Touched {
        match cmd {
            NlmCommand::Lock { args, .. } | NlmCommand::Cancel { args } => Touched::File(args.file.clone()),
            NlmCommand::Unlock { file, .. } => Touched::File(file.clone()),
            NlmCommand::FreeAll { caller_name, .. } => Touched::Host(caller_name.clone()),
            NlmCommand::Notify { mon_name, .. } => Touched::Host(mon_name.clone()),
            _ => Touched::Nothing,
        }
    }
}

/// Counters since the mirror started (also in its close log line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfdCounts {
    /// Lock ranges a lock outside hanfs kept the mirror from taking.
    pub conflicts: u64,
    /// Descriptions that could not be opened, or lock calls that failed otherwise.
    pub errors: u64,
    /// Descriptions not opened because the bound was reached.
    pub full: u64,
    /// LOCKs answered DENIED or BLOCKED because of a lock outside hanfs.
    pub local_refusals: u64,
}

#[derive(Default)]
struct Counters {
    conflicts: AtomicU64,
    errors: AtomicU64,
    full: AtomicU64,
    local_refusals: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One owner's description on one file and the ranges last set on it
/// (None: unknown after a failure; everything is set again).
struct Desc {
    fd: OwnedFd,
    applied: Option<Vec<Span>>,
}

#[derive(Default)]
struct Inner {
    /// False once closed: every call is then a no-op.
    open: bool,
    files: BTreeMap<FileId, BTreeMap<LockOwner, Desc>>,
    descriptions: usize,
    /// Files whose last reconcile did not fully succeed.
    dirty: BTreeSet<FileId>,
}

pub struct OfdMirror {
    /// The exports served now: a file of a removed export is not mirrored.
    live: Arc<Live>,
    commit: Arc<dyn Commit>,
    max: usize,
    inner: Mutex<Inner>,
    counters: Counters,
    retry: Mutex<Option<JoinHandle<()>>>,
}

/// The table's locks on one file, per owner, in kernel form.
type Wanted = BTreeMap<LockOwner, Vec<Span>>;

fn wanted(nlm: &NlmState, file: &FileId) -> Wanted {
    let mut out: Wanted = BTreeMap::new();
    for (owner, range, kind) in nlm.locks().file_locks(file) {
        if let Some(span) = kernel_span(range, kind) {
            out.entry(owner.clone()).or_default().push(span);
        }
    }
    out
}

/// `list` (sorted, disjoint) covers all of `want` with a kind at least as strong.
fn covers(list: &[Span], want: Span) -> bool {
    let mut next = want.start;
    for s in list.iter().filter(|s| s.end >= want.start && s.start <= want.end) {
        if s.start > next || (want.kind == LockKind::Exclusive && s.kind != LockKind::Exclusive) {
            return false;
        }
        if s.end >= want.end {
            return true;
        }
        next = s.end + 1;
    }
    false
}

impl OfdMirror {
    /// A mirror for one active period, holding nothing yet (see `rebuild`),
    /// with its retry task running.
    pub fn start(live: Arc<Live>, commit: Arc<dyn Commit>) -> Arc<OfdMirror> {
        let by_rlimit = nofile_soft_limit().map_or(u64::MAX, |n| n / OFD_RLIMIT_DIVISOR);
        let max = usize::try_from(by_rlimit).unwrap_or(usize::MAX).min(OFD_DESCRIPTIONS_MAX);
        Self::with_max(live, commit, max)
    }

    pub(crate) fn with_max(live: Arc<Live>, commit: Arc<dyn Commit>, max: usize) -> Arc<OfdMirror> {
        let inner = Inner { open: true, ..Inner::default() };
        let mirror = Arc::new(OfdMirror {
            live,
            commit,
            max,
            inner: Mutex::new(inner),
            counters: Counters::default(),
            retry: Mutex::new(None),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let task = tokio::spawn(retry_loop(Arc::downgrade(&mirror)));
            *mirror.retry.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        mirror
    }

    pub fn counts(&self) -> OfdCounts {
        let c = &self.counters;
        OfdCounts {
            conflicts: c.conflicts.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            full: c.full.load(Ordering::Relaxed),
            local_refusals: c.local_refusals.load(Ordering::Relaxed),
        }
    }

    /// Descriptions open now.
    pub fn descriptions(&self) -> usize {
        self.lock_inner().descriptions
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take every lock of the table (promotion).
    pub async fn rebuild(self: &Arc<Self>) {
        let me = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let files: BTreeSet<FileId> = {
                let state = me.commit.state();
                let guard = state.read().unwrap_or_else(|p| p.into_inner());
                guard.nlm().locks().iter_locks().map(|(file, ..)| file.clone()).collect()
            };
            let mut inner = me.lock_inner();
            for file in &files {
                me.reconcile_file(&mut inner, file);
            }
            (files.len(), inner.descriptions, inner.dirty.len())
        })
        .await;
        match done {
            Ok((files, descriptions, dirty)) => {
                tracing::info!(files, descriptions, dirty, "nlm locks taken as OFD locks on the exported files")
            }
            Err(e) => tracing::warn!(error = %e, "nlm: rebuilding the OFD lock mirror failed"),
        }
    }

    /// Release every OFD lock (demotion): every description is closed, and
    /// later calls change nothing.
    pub fn close(&self) {
        if let Some(task) = self.retry.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        let mut inner = self.lock_inner();
        let descriptions = inner.descriptions;
        *inner = Inner::default();
        drop(inner);
        tracing::info!(descriptions, counts = ?self.counts(), "nlm OFD lock mirror closed; its locks are released");
    }

    /// After a commit: make the files `touched` and the granted waiters' files equal to the table.
    pub async fn reconcile(self: &Arc<Self>, touched: Touched, granted: Vec<&Grant>) {
        let mut files: BTreeSet<FileId> = granted.into_iter().map(|g| g.file.clone()).collect();
        let host = match touched {
            Touched::Nothing => None,
            Touched::File(file) => {
                files.insert(file);
                None
            }
            Touched::Host(host) => Some(host),
        };
        if files.is_empty() && host.is_none() {
            return;
        }
        let me = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut inner = me.lock_inner();
            if let Some(host) = host {
                for (file, owners) in &inner.files {
                    if owners.keys().any(|o| o.caller_name == host) {
                        files.insert(file.clone());
                    }
                }
            }
            for file in &files {
                me.reconcile_file(&mut inner, file);
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "nlm: OFD lock reconcile failed");
        }
    }

    /// The refusal a LOCK gets from a lock outside hanfs (see the module
    /// doc), or DENIED_NOLOCKS when its owner would need a description over
    /// the bound; None: commit it.
    pub async fn lock_refusal(self: &Arc<Self>, args: &LockArgs, block: bool) -> Option<Nlm4Stats> {
        let stat = match self.local_check(args, true).await {
            Check::Proceed => return None,
            Check::Full => Nlm4Stats::DeniedNolocks,
            Check::Local(_) if block => Nlm4Stats::Blocked,
            Check::Local(_) => Nlm4Stats::Denied,
        };
        if stat != Nlm4Stats::DeniedNolocks {
            bump(&self.counters.local_refusals);
        }
        Some(stat)
    }

    /// For a TEST the table finds free: the lock outside hanfs in the way, if any.
    pub async fn local_holder(self: &Arc<Self>, args: &LockArgs) -> Option<Nlm4Holder> {
        match self.local_check(args, false).await {
            Check::Local(holder) => Some(holder),
            Check::Proceed | Check::Full => None,
        }
    }

    async fn local_check(self: &Arc<Self>, args: &LockArgs, for_lock: bool) -> Check {
        let (me, args) = (self.clone(), args.clone());
        tokio::task::spawn_blocking(move || me.check_blocking(&args, for_lock)).await.unwrap_or(Check::Proceed)
    }

    fn check_blocking(&self, args: &LockArgs, for_lock: bool) -> Check {
        let mut inner = self.lock_inner();
        if !inner.open {
            return Check::Proceed;
        }
        let (wanted, table) = {
            let state = self.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            (wanted(guard.nlm(), &args.file), guard.nlm().test(args))
        };
        let own = wanted.get(&args.owner).cloned().unwrap_or_default();
        self.apply_file(&mut inner, &args.file, wanted);
        let Some(span) = kernel_span(args.range, args.kind) else {
            return Check::Proceed;
        };
        if table != TestOutcome::Free || covers(&own, span) {
            return Check::Proceed;
        }
        let fresh;
        let fd = match inner.files.get(&args.file).and_then(|owners| owners.get(&args.owner)) {
            Some(desc) => desc.fd.as_raw_fd(),
            None if for_lock && inner.descriptions >= self.max => {
                bump(&self.counters.full);
                tracing::warn!(max = self.max, "nlm lock refused: OFD descriptions at their bound");
                return Check::Full;
            }
            // A fresh description only to test: read-only is enough for F_OFD_GETLK.
            None => match self.open(&args.file, false) {
                Ok(Some(fd)) => {
                    fresh = fd;
                    fresh.as_raw_fd()
                }
                Ok(None) | Err(_) => return Check::Proceed,
            },
        };
        match getlk(fd, span) {
            Ok(None) => Check::Proceed,
            Ok(Some(found)) => {
                tracing::debug!(?found, "nlm lock conflicts with a lock outside hanfs");
                Check::Local(Nlm4Holder {
                    exclusive: found.span.kind == LockKind::Exclusive,
                    svid: found.pid,
                    oh: NetObj::default(),
                    l_offset: found.span.start as u64,
                    l_len: found.span.nlm_len(),
                })
            }
            Err(e) => {
                bump(&self.counters.errors);
                tracing::debug!(error = ?e, "nlm: F_OFD_GETLK failed");
                Check::Proceed
            }
        }
    }

    /// A description on `file` for locking (`writable`: read-write if the
    /// server may), or None if there is nothing to mirror: not a regular
    /// file, or deleted (STALE: no process can open it any more).
    fn open(&self, file: &FileId, writable: bool) -> Result<Option<OwnedFd>, SysError> {
        let obj = match self.live.load().vfs.resolve(&file.0) {
            Ok(obj) => obj,
            Err(nfsstat3::NFS3ERR_STALE) => return Ok(None),
            Err(e) => return Err(SysError::Resolve(e)),
        };
        if !obj.st.is_reg() {
            return Ok(None);
        }
        open_for_locks(&obj.fd, writable).map(Some)
    }

    fn reconcile_file(&self, inner: &mut Inner, file: &FileId) {
        if !inner.open {
            return;
        }
        let wanted = {
            let state = self.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            wanted(guard.nlm(), file)
        };
        self.apply_file(inner, file, wanted);
    }

    /// Make `file`'s descriptions hold exactly `wanted` (see the module doc).
    fn apply_file(&self, inner: &mut Inner, file: &FileId, wanted: Wanted) {
        let Inner { files, descriptions, dirty, .. } = inner;
        let mut ok = true;
        let owners = files.entry(file.clone()).or_default();
        let before = owners.len();
        owners.retain(|owner, _| wanted.contains_key(owner));
        *descriptions -= before - owners.len();
        for owner in wanted.keys() {
            if owners.contains_key(owner) {
                continue;
            }
            if *descriptions >= self.max {
                bump(&self.counters.full);
                ok = false;
                continue;
            }
            match self.open(file, true) {
                Ok(Some(fd)) => {
                    owners.insert(owner.clone(), Desc { fd, applied: None });
                    *descriptions += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    bump(&self.counters.errors);
                    tracing::debug!(error = ?e, "nlm: no description to mirror a lock on");
                    ok = false;
                }
            }
        }
        let mut todo: Vec<(&mut Desc, &Vec<Span>, bool)> = owners
            .iter_mut()
            .filter_map(|(owner, desc)| {
                let want = wanted.get(owner)?;
                (desc.applied.as_ref() != Some(want)).then_some((desc, want, true))
            })
            .collect();
        // Gaps first, then shared ranges (a pass may wait for another
        // owner's downgrade), then exclusive ones (see the module doc).
        for (desc, want, good) in &mut todo {
            for gap in gaps(want) {
                *good &= self.call(unlock(desc.fd.as_raw_fd(), gap));
            }
        }
        let mut shared: Vec<(usize, Span)> = Vec::new();
        for (i, (_, want, _)) in todo.iter().enumerate() {
            shared.extend(want.iter().filter(|s| s.kind == LockKind::Shared).map(|s| (i, *s)));
        }
        for _pass in 0..=todo.len() {
            let before = shared.len();
            shared.retain(|(i, span)| todo.get(*i).is_some_and(|(d, ..)| setlk(d.fd.as_raw_fd(), *span).is_err()));
            if shared.is_empty() || shared.len() == before {
                break;
            }
        }
        for (i, span) in shared {
            if let Some((desc, _, good)) = todo.get_mut(i) {
                *good &= self.call(setlk(desc.fd.as_raw_fd(), span));
            }
        }
        for (desc, want, good) in &mut todo {
            for span in want.iter().filter(|s| s.kind == LockKind::Exclusive) {
                *good &= self.call(setlk(desc.fd.as_raw_fd(), *span));
            }
        }
        for (desc, want, good) in todo {
            desc.applied = good.then(|| want.clone());
            ok &= good;
        }
        if owners.is_empty() {
            files.remove(file);
        }
        if ok {
            dirty.remove(file);
        } else if dirty.insert(file.clone()) {
            tracing::warn!(fh = %hex(&file.0), counts = ?self.counts(), "nlm lock not fully mirrored on the filesystem (a lock outside hanfs, or no description); retrying");
        }
    }

    /// Count a failed lock call; true if it succeeded.
    fn call(&self, r: Result<(), SysError>) -> bool {
        match r {
            Ok(()) => true,
            Err(SysError::Conflict) => {
                bump(&self.counters.conflicts);
                false
            }
            Err(e) => {
                bump(&self.counters.errors);
                tracing::debug!(error = ?e, "nlm: OFD lock call failed");
                false
            }
        }
    }

    /// Reconcile up to `OFD_RETRY_FILES_MAX` dirty files.
    fn retry_dirty(&self) {
        let mut inner = self.lock_inner();
        let files: Vec<FileId> = inner.dirty.iter().take(OFD_RETRY_FILES_MAX).cloned().collect();
        for file in &files {
            self.reconcile_file(&mut inner, file);
        }
    }
}

enum Check {
    Proceed,
    Local(Nlm4Holder),
    Full,
}

/// The bytes of the kernel's file (0..=`i64::MAX`) outside `list` (sorted, disjoint).
fn gaps(list: &[Span]) -> Vec<Span> {
    let mut out = Vec::with_capacity(list.len() + 1);
    let mut next: Option<i64> = Some(0);
    for s in list {
        let Some(from) = next else { break };
        if s.start > from {
            out.push(Span { start: from, end: s.start - 1, kind: LockKind::Shared });
        }
        next = s.end.checked_add(1);
    }
    if let Some(from) = next {
        out.push(Span { start: from, end: i64::MAX, kind: LockKind::Shared });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn retry_loop(mirror: Weak<OfdMirror>) {
    let mut tick = tokio::time::interval(Duration::from_millis(OFD_RETRY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(m) = mirror.upgrade() else { return };
        // Never wait on the runtime for a reconcile in progress: next round.
        let skip = match m.inner.try_lock() {
            Ok(inner) => inner.dirty.is_empty(),
            Err(_) => true,
        };
        if skip {
            continue;
        }
        if tokio::task::spawn_blocking(move || m.retry_dirty()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "ofd_tests.rs"]
mod tests;
