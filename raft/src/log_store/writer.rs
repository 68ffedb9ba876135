//! The log's write-behind: `append` puts entries in `Pending` (readable at
//! once, as openraft requires) and queues them for the writer thread, which
//! appends them to the entries file (`file`) in order (consecutive appends
//! in one write and one fdatasync), records how far the log is on disk
//! (`LogDurable`), and only then signals `LogFlushed` (unless the leader
//! signalled already: `durable`'s module doc). With that, a leader sends the
//! entries to its followers while its own fsync runs, so a commit costs
//! about one fsync plus a round trip, not two fsyncs in a row.
//!
//! A vote and a truncate first wait for the queue to drain (`Writer::drain`),
//! so they are ordered after the appends before them and never see entries
//! that are still only in memory. The committed-id hint and a purge go
//! through the queue without waiting. A purge saves its last purged id in
//! redb (one durable transaction) before the file forgets the entries. The
//! hint (openraft saves one after every commit) is carried, not written each
//! time: it goes into redb with the next purge, at most every
//! `HINT_WRITE_EVERY_MS` on its own, and when the writer ends; losing it
//! loses nothing (`save_committed`).
//! A hint is written only once the log on disk reaches it (a leader's entry
//! may be committed before its own fsync, `durable`'s module doc): a hint
//! beyond the log's end would stop the node from starting again.
//! So a purge
//! never holds openraft's core (and with it heartbeats and the lease) on a
//! drain and an fsync. A purge lost in a crash leaves its entries and the
//! older last-purged id, which is consistent: it is done again later.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::file::LogFile;
use super::{note_write_time, META};
use crate::durable::LogDurable;
use crate::types::{typ, TypeConfig};

/// Most queued appends folded into one write.
pub const APPENDS_PER_TXN_MAX: usize = 256;
/// The committed-id hint is written on its own at most this often.
pub const HINT_WRITE_EVERY_MS: u64 = 1_000;

const _: () = assert!(APPENDS_PER_TXN_MAX > 0);

/// Entries appended but not yet durable in the file, by index. Readers merge
/// them over what the file holds.
#[derive(Default)]
pub(super) struct Pending {
    entries: Mutex<BTreeMap<u64, typ::Entry>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, typ::Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, entries: &[(u64, typ::Entry)]) {
        let mut map = self.lock();
        for (index, entry) in entries {
            map.insert(*index, entry.clone());
        }
    }

    /// The pending entries with an index in `bounds`, in order.
    pub(super) fn range(&self, bounds: (Bound<u64>, Bound<u64>)) -> Vec<(u64, typ::Entry)> {
        self.lock().range(bounds).map(|(i, e)| (*i, e.clone())).collect()
    }

    /// The newest pending entry's log id.
    pub(super) fn last_log_id(&self) -> Option<typ::LogId> {
        self.lock().last_key_value().map(|(_, e)| e.log_id)
    }

    /// Forget `indexes` once they are durable, unless an entry was put there
    /// again meanwhile (it cannot be: a truncate drains first; checked anyway).
    fn remove_written(&self, written: &[(u64, typ::LogId)]) {
        let mut map = self.lock();
        for (index, log_id) in written {
            if map.get(index).is_some_and(|e| e.log_id == *log_id) {
                map.remove(index);
            }
        }
    }
}

/// Whether `pending` (sorted by index) holds every index of `bounds`, which
/// must have a start and an end: then the file has nothing else there to read.
pub(super) fn covers(pending: &[(u64, typ::Entry)], bounds: (Bound<u64>, Bound<u64>)) -> bool {
    let start = match bounds.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => return false,
    };
    let end = match bounds.1 {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => e,
        Bound::Unbounded => return false,
    };
    end > start
        && pending.len() as u64 == end - start
        && pending.iter().zip(start..).all(|((index, _), expected)| *index == expected)
}

/// Merges `pending` (newer) over `stored` (from the file), both sorted by index.
pub(super) fn merge(stored: Vec<typ::Entry>, pending: Vec<(u64, typ::Entry)>) -> Vec<typ::Entry> {
    if pending.is_empty() {
        return stored;
    }
    let mut by_index: BTreeMap<u64, typ::Entry> = stored.into_iter().map(|e| (e.log_id.index, e)).collect();
    by_index.extend(pending);
    by_index.into_values().collect()
}

/// Tests only: a full disk and a stuck one (`Writer::fail_writes`,
/// `Writer::stall_writes`); never set outside tests.
#[derive(Default)]
struct Faults {
    fail: AtomicBool,
    stall: AtomicBool,
}

/// Longest a write waits while `Faults::stall` is set.
const STALL_MAX_MS: u64 = 60_000;

impl Faults {
    fn wait_stall(&self, since: std::time::Instant) {
        while self.stall.load(Ordering::SeqCst) && since.elapsed() < std::time::Duration::from_millis(STALL_MAX_MS) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A committed-id hint: the id, and its encoding as stored.
#[derive(Default)]
struct Hint {
    id: Option<typ::LogId>,
    bytes: Vec<u8>,
}

/// What the writer thread is asked to do. `Purge` records `bytes` (the last
/// purged log id), then forgets the entries up to `upto`.
enum Job {
    Append { entries: Vec<(u64, typ::LogId, Vec<u8>)>, callback: Option<LogFlushed<TypeConfig>> },
    Committed { hint: Hint },
    Purge { upto: u64, bytes: Vec<u8> },
    Drain { done: oneshot::Sender<()> },
}

/// The caller side of the writer thread. The thread ends when the last
/// `Writer` clone is dropped, after writing what was queued.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    pub(super) pending: Arc<Pending>,
    /// The highest index a purge was queued for: readers hide entries up to
    /// it even while the purge is still in the queue.
    purged_upto: Arc<Mutex<Option<u64>>>,
    /// Tests only: every write fails as on a full disk (`fail_writes`), or
    /// waits as on a stuck one (`stall_writes`).
    #[cfg_attr(not(test), allow(dead_code))]
    faults: Arc<Faults>,
}

impl Writer {
    /// Starts the writer thread for `log` (and `db`, for the log ids).
    pub(super) fn start(db: Arc<Database>, log: Arc<Mutex<LogFile>>, durable: LogDurable) -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::channel();
        let pending = Arc::new(Pending::default());
        let thread_pending = pending.clone();
        let faults = Arc::new(Faults::default());
        let thread_faults = faults.clone();
        std::thread::Builder::new()
            .name("hanfs-raft-log".into())
            .spawn(move || run(&db, &log, &thread_pending, &thread_faults, &durable, &rx))?;
        Ok(Writer { jobs, pending, purged_upto: Arc::default(), faults })
    }

    /// Tests only: from now on every write fails with ENOSPC, as when the
    /// state directory's disk is full (`false`: writes work again).
    #[cfg(test)]
    pub(super) fn fail_writes(&self, on: bool) {
        self.faults.fail.store(on, Ordering::SeqCst);
    }

    /// Tests only: from now on every write waits (at most `STALL_MAX_MS`)
    /// before it starts, as on a stuck disk (`false`: it goes on).
    #[cfg(test)]
    pub(super) fn stall_writes(&self, on: bool) {
        self.faults.stall.store(on, Ordering::SeqCst);
    }

    /// Makes `entries` readable now and durable soon; `callback` (if any: a
    /// leader may have signalled already, `durable`'s module doc) is
    /// signalled once they are on disk (or the write failed).
    pub(super) fn append(
        &self,
        entries: Vec<(u64, typ::Entry, Vec<u8>)>,
        callback: Option<LogFlushed<TypeConfig>>,
    ) -> Result<(), String> {
        let readable: Vec<(u64, typ::Entry)> = entries.iter().map(|(i, e, _)| (*i, e.clone())).collect();
        self.pending.insert(&readable);
        let entries = entries.into_iter().map(|(i, e, bytes)| (i, e.log_id, bytes)).collect();
        self.jobs.send(Job::Append { entries, callback }).map_err(|_| "the raft log writer has stopped".to_owned())
    }

    /// Queues the committed-id hint behind the appends before it.
    pub(super) fn save_committed(&self, id: Option<typ::LogId>, bytes: Vec<u8>) -> Result<(), String> {
        self.jobs
            .send(Job::Committed { hint: Hint { id, bytes } })
            .map_err(|_| "the raft log writer has stopped".to_owned())
    }

    /// Queues the purge of the entries up to `upto` behind the appends before
    /// it, with the last-purged id `bytes` (module doc: no wait, no fsync).
    pub(super) fn purge(&self, upto: u64, bytes: Vec<u8>) -> Result<(), String> {
        {
            let mut purged = self.purged_upto.lock().unwrap_or_else(|p| p.into_inner());
            *purged = (*purged).max(Some(upto));
        }
        self.jobs.send(Job::Purge { upto, bytes }).map_err(|_| "the raft log writer has stopped".to_owned())
    }

    /// `entries` without those a purge was queued for.
    pub(super) fn hide_purged(&self, mut entries: Vec<typ::Entry>) -> Vec<typ::Entry> {
        if let Some(upto) = *self.purged_upto.lock().unwrap_or_else(|p| p.into_inner()) {
            entries.retain(|e| e.log_id.index > upto);
        }
        entries
    }

    /// Waits until everything queued before this call is written (or failed).
    pub(super) async fn drain(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.jobs.send(Job::Drain { done }).map_err(|_| "the raft log writer has stopped".to_owned())?;
        wait.await.map_err(|_| "the raft log writer stopped while draining".to_owned())
    }
}

/// The writer thread: takes what is queued (up to APPENDS_PER_TXN_MAX
/// appends), writes it (`write`), then answers the callbacks and drains.
fn run(
    db: &Database,
    log: &Mutex<LogFile>,
    pending: &Pending,
    faults: &Faults,
    durable: &LogDurable,
    rx: &mpsc::Receiver<Job>,
) {
    // The newest committed-id hint not written yet, and when one last was (module doc).
    let mut carried: Option<Hint> = None;
    let mut hint_written = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < APPENDS_PER_TXN_MAX {
            let Ok(job) = rx.try_recv() else { break };
            jobs.push(job);
        }
        for job in &mut jobs {
            if let Job::Committed { hint } = job {
                carried = Some(std::mem::take(hint));
            }
        }
        if !jobs.iter().any(|j| matches!(j, Job::Append { .. } | Job::Purge { .. })) {
            // Hints (and drains) alone: no transaction of their own.
            answer_drains(jobs);
            continue;
        }
        // A hint goes no further than the log on disk after this write.
        let end = last_appended(&jobs).or_else(|| durable.upto()).map(|id| id.index);
        let due = jobs.iter().any(|j| matches!(j, Job::Purge { .. }))
            || hint_written.elapsed() >= std::time::Duration::from_millis(HINT_WRITE_EVERY_MS);
        let hint = if due { carried.take_if(|h| h.id.map(|id| id.index) <= end) } else { None };
        if hint.is_some() {
            hint_written = std::time::Instant::now();
        }
        let started = std::time::Instant::now();
        durable.busy();
        faults.wait_stall(started);
        let result = if faults.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            write(db, log, &jobs, hint.as_ref())
        };
        note_write_time(started.elapsed());
        // Before any callback: what openraft does next may wait on it.
        durable.done(last_appended(&jobs), result.as_ref().err().map(|e| e.to_string()));
        for job in jobs {
            match job {
                Job::Append { entries, callback } => {
                    let outcome = match &result {
                        Ok(()) => {
                            // Forgotten before the signal: a reader now finds them in the file.
                            let written: Vec<(u64, typ::LogId)> = entries.iter().map(|(i, id, _)| (*i, *id)).collect();
                            pending.remove_written(&written);
                            Ok(())
                        }
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    if let Some(callback) = callback {
                        callback.log_io_completed(outcome);
                    }
                }
                Job::Committed { .. } | Job::Purge { .. } => {}
                Job::Drain { done } => {
                    let _ = done.send(());
                }
            }
        }
    }
    // Closing: the last hint, if the log on disk covers it.
    let end = durable.upto().map(|id| id.index);
    if let Some(hint) = carried.take_if(|h| h.id.map(|id| id.index) <= end) {
        if !faults.fail.load(Ordering::SeqCst) {
            let _ = write(db, log, &[], Some(&hint));
        }
    }
}

/// The last entry `jobs` append.
fn last_appended(jobs: &[Job]) -> Option<typ::LogId> {
    jobs.iter().rev().find_map(|j| match j {
        Job::Append { entries, .. } => entries.last().map(|(_, id, _)| *id),
        _ => None,
    })
}

/// Answers the drains among `jobs` (the rest needs nothing).
fn answer_drains(jobs: Vec<Job>) {
    for job in jobs {
        if let Job::Drain { done } = job {
            let _ = done.send(());
        }
    }
}

/// The appends and purges of `jobs` in their order: each run of appends in
/// one write to the file, synced; each purge's last purged id in one durable
/// redb transaction before the file forgets the entries. A purge past the
/// log's end restarts the file (`file`'s module doc), so the appends queued
/// after it must be written after it, never before. Then the hint
/// `committed` (if given, covered by what is now on disk) in a transaction
/// of its own.
fn write(db: &Database, log: &Mutex<LogFile>, jobs: &[Job], committed: Option<&Hint>) -> std::io::Result<()> {
    let meta = |key: &str, bytes: &[u8]| -> std::io::Result<()> {
        let txn = || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(META)?.insert(key, bytes)?;
            txn.commit()?;
            Ok(())
        };
        txn().map_err(std::io::Error::other)
    };
    let mut run: Vec<(u64, &[u8])> = Vec::new();
    for job in jobs {
        match job {
            Job::Append { entries, .. } => {
                run.extend(entries.iter().map(|(index, _, bytes)| (*index, bytes.as_slice())))
            }
            Job::Purge { upto, bytes } => {
                if !run.is_empty() {
                    LogFile::append_shared(log, &run)?;
                    run.clear();
                }
                meta(super::KEY_LAST_PURGED, bytes)?;
                log.lock().unwrap_or_else(|p| p.into_inner()).purge(*upto)?;
            }
            Job::Committed { .. } | Job::Drain { .. } => {}
        }
    }
    if !run.is_empty() {
        LogFile::append_shared(log, &run)?;
    }
    match committed {
        Some(hint) => meta(super::KEY_COMMITTED, &hint.bytes),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::covers;
    use crate::types::typ;

    fn pending(indexes: &[u64]) -> Vec<(u64, typ::Entry)> {
        let entry = |i| Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), i), payload: EntryPayload::Blank };
        indexes.iter().map(|&i| (i, entry(i))).collect()
    }

    /// The file is skipped only when every index of the range is pending.
    #[test]
    fn a_range_is_covered_only_when_every_index_is_pending() {
        assert!(covers(&pending(&[5, 6, 7]), (Included(5), Excluded(8))));
        assert!(covers(&pending(&[5, 6, 7]), (Excluded(4), Included(7))));
        assert!(!covers(&pending(&[6, 7]), (Included(5), Excluded(8))), "the first is in the file");
        assert!(!covers(&pending(&[5, 7]), (Included(5), Excluded(8))), "a gap");
        assert!(!covers(&pending(&[5, 6]), (Included(5), Excluded(8))), "the last is missing");
        assert!(!covers(&pending(&[5, 6, 7]), (Included(5), Unbounded)), "no end");
        assert!(!covers(&pending(&[5, 6, 7]), (Unbounded, Excluded(8))), "no start");
        assert!(!covers(&pending(&[]), (Included(5), Excluded(5))), "an empty range reads nothing anyway");
    }
}
