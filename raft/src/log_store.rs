//! The Raft log (`RaftLogStorage`): the entries in an append-only file
//! (`file`), the vote, the committed log id and the last purged log id on
//! redb.
//!
//! Durability: `append` returns as soon as the entries are readable and
//! queued for the writer thread (`writer`), which signals `LogFlushed` once
//! they are on disk (fdatasync): a follower acknowledges only then. A leader's
//! own entries are signalled at once, so it sends them to its followers
//! while its own fsync runs (openraft 0.9 waits for the signal before it
//! replicates); what keeps every applied entry on a majority of disks then
//! is `durable`'s (module doc): the state machine applies, and followers
//! are told a commit, only up to what is on this disk (`LogDurable`), and a
//! stuck disk turns the early signal off. A vote and a truncate wait for the
//! queued appends and are durable before the call returns (the vote a redb
//! commit with `Durability::Immediate`, the truncate zeros over the entries
//! and an fdatasync), so a vote is on disk before the vote reply is sent. A
//! purge is queued behind the appends and returns at once (`writer`'s module
//! doc). Blocking calls run on the writer thread or tokio's blocking pool,
//! never on a core thread: every write, and reading entries (replication
//! reads them all the time; an uncached page is a disk read). The small
//! metadata reads at start and on a vote stay inline.

// openraft fixes `StorageError` (large) as the error type of these traits.
#![allow(clippy::result_large_err)]

mod file;
mod writer;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::durable::{LogDurable, LOG_WRITE_SLOW_MS};
use crate::types::{decode, encode, typ, NodeId, TypeConfig};

/// What a log entry adds around its command (log id, payload tag).
pub const ENTRY_OVERHEAD_BYTES: u64 = 64 * 1024;
/// Upper bound on one encoded log entry: the largest command `hanfs_state`
/// accepts, plus the entry's own fields. Group commit keeps batches below it.
pub const ENTRY_BYTES_MAX: u64 = hanfs_state::COMMAND_BYTES_MAX + ENTRY_OVERHEAD_BYTES;
/// Upper bound on one encoded metadata value (vote, log ids).
const META_BYTES_MAX: u64 = 64 * 1024;

/// Where the entries were kept before they moved to their own file
/// (`file`); a database that still has some there is refused.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_IDENTITY: &str = "identity";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this data directory belongs to node {found_node} of cluster {found_cluster:?}, \
         not node {node_id} of cluster {cluster:?}; refusing to start"
    )]
    Mismatch { found_cluster: String, found_node: NodeId, cluster: String, node_id: NodeId },
    #[error("raft storage: {0}")]
    Storage(String),
}

/// Tie the database to one cluster name and node id on first start; refuse
/// to start later with another, so a node is never started into the wrong
/// cluster (or as the wrong member) with its old log and vote.
pub fn bind_identity(db: &Database, cluster: &str, node_id: NodeId) -> Result<(), IdentityError> {
    let storage = |e: &dyn std::fmt::Display| IdentityError::Storage(e.to_string());
    let mut txn = db.begin_write().map_err(|e| storage(&e))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut table = txn.open_table(META).map_err(|e| storage(&e))?;
        let found = table.get(KEY_IDENTITY).map_err(|e| storage(&e))?.map(|v| v.value().to_vec());
        match found {
            Some(bytes) => {
                let (found_cluster, found_node): (String, NodeId) =
                    decode(&bytes, META_BYTES_MAX).map_err(|e| storage(&e))?;
                if found_cluster != cluster || found_node != node_id {
                    return Err(IdentityError::Mismatch {
                        found_cluster,
                        found_node,
                        cluster: cluster.to_string(),
                        node_id,
                    });
                }
            }
            None => {
                let bytes = encode(&(cluster, node_id), META_BYTES_MAX).map_err(|e| storage(&e))?;
                table.insert(KEY_IDENTITY, bytes.as_slice()).map_err(|e| storage(&e))?;
            }
        }
    }
    txn.commit().map_err(|e| storage(&e))
}

/// Open (or create) a redb database file with the tables this crate uses.
pub fn open_db(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let db = Database::create(path)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    txn.open_table(META)?;
    crate::sm_store::create_tables(&txn)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

/// The log store. Cloning is cheap; clones share the database (the clone is
/// also the `LogReader` handed to replication tasks).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The entries (`file`), shared with the writer thread.
    log: Arc<Mutex<file::LogFile>>,
    /// This node: only its own entries as leader are signalled early.
    node_id: NodeId,
    /// The vote last saved (this node leads when it is its own, committed).
    vote: Arc<Mutex<Option<typ::Vote>>>,
    durable: LogDurable,
    /// The committed-id hint last saved (the writer carries it: `writer`).
    committed: Arc<Mutex<Option<Option<typ::LogId>>>>,
    writer: writer::Writer,
}

/// At most one slow-write warning this often (with the count and the slowest
/// since the last one).
pub const LOG_WRITE_WARN_EVERY_MS: u64 = 10_000;

/// Slow writes since the last warning: (count, slowest ms, last warned).
static SLOW_WRITES: std::sync::Mutex<(u64, u64, Option<std::time::Instant>)> = std::sync::Mutex::new((0, 0, None));

/// Count a write that took `took`; warn (rate-limited) about slow ones.
fn note_write_time(took: std::time::Duration) {
    let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    if ms < LOG_WRITE_SLOW_MS {
        return;
    }
    let mut slow = SLOW_WRITES.lock().unwrap_or_else(|p| p.into_inner());
    slow.0 += 1;
    slow.1 = slow.1.max(ms);
    let due = slow.2.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(LOG_WRITE_WARN_EVERY_MS));
    if due {
        tracing::warn!(
            count = slow.0,
            slowest_ms = slow.1,
            "slow raft log writes (fsync) since the last report: the disk or the machine is overloaded"
        );
        *slow = (0, 0, Some(std::time::Instant::now()));
    }
}

impl LogStore {
    /// The log store: the vote and log ids in `db`, the entries in the file
    /// `entries` (`file`), with its writer thread. Fails on a damaged file,
    /// entries that do not follow the last purged id, a database from before
    /// the entries file, or if the thread cannot be started.
    pub fn new(db: Arc<Database>, entries: &Path, node_id: NodeId) -> std::io::Result<Self> {
        refuse_old_format(&db)?;
        let (mut file, stray) = file::LogFile::open(entries)?;
        if stray > 0 {
            tracing::warn!(path = %entries.display(), bytes = stray, "raft log: cleared what followed the last whole entry (a torn append, or entries purged before)");
        }
        let last_purged: Option<typ::LogId> = get_meta(&db, KEY_LAST_PURGED).map_err(std::io::Error::other)?;
        if let Some(purged) = last_purged {
            file.purge(purged.index)?;
            if let Some((first, _)) = file.bounds().filter(|(first, _)| *first > purged.index + 1) {
                return Err(std::io::Error::other(format!(
                    "{}: the first entry is {first}, the last purged {}: entries are missing",
                    entries.display(),
                    purged.index
                )));
            }
        }
        let log = Arc::new(Mutex::new(file));
        let vote = get_meta(&db, KEY_VOTE).map_err(std::io::Error::other)?;
        let last = durable_end(&db, &log).map_err(std::io::Error::other)?;
        let durable = LogDurable::new(last);
        let writer = writer::Writer::start(db.clone(), log.clone(), durable.clone())?;
        Ok(Self { db, log, node_id, vote: Arc::new(Mutex::new(vote)), durable, committed: Arc::default(), writer })
    }

    /// How far the log is on disk (shared with the state machine and the
    /// peer network: `durable`'s module doc).
    pub fn durable(&self) -> LogDurable {
        self.durable.clone()
    }

    /// Whether `entries` may be signalled flushed before their fsync: this
    /// node leads the current term, they are its own, and the writer keeps
    /// up (`durable`'s module doc).
    fn early_flush(&self, entries: &[(u64, typ::Entry, Vec<u8>)]) -> bool {
        let vote = *self.vote.lock().unwrap_or_else(|p| p.into_inner());
        vote.is_some_and(|v| {
            v.committed
                && v.leader_id.node_id == self.node_id
                && entries.iter().all(|(_, e, _)| e.log_id.leader_id == v.leader_id)
        }) && self.durable.keeps_up()
    }

    /// Tests only: make every log write fail with ENOSPC (a full disk), or
    /// work again.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, on: bool) {
        self.writer.fail_writes(on);
    }

    /// Tests only: make every log write wait before it starts (a stuck
    /// disk), or go on again.
    #[cfg(test)]
    pub(crate) fn stall_writes(&self, on: bool) {
        self.writer.stall_writes(on);
    }

    /// Waits for the queued appends (module doc: before any other write).
    async fn drain(&self) -> Result<(), typ::StorageError> {
        self.writer.drain().await.map_err(|e| write_err(std::io::Error::other(e)))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, typ::StorageError> {
        get_meta(&self.db, key)
    }

    /// Run `f` in one durable (fsynced) write transaction on the blocking pool.
    async fn write<F>(&self, f: F) -> Result<(), typ::StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let started = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            f(&txn)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        note_write_time(started.elapsed());
        match joined {
            Ok(result) => result.map_err(write_err),
            Err(join) => Err(write_err(join)),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<typ::LogId>, typ::StorageError> {
        last_entry_log_id(&self.log)
    }
}

/// Refuses a database whose entries are still in its `raft_log` table: the
/// format before the entries file (there are no deployments of it).
fn refuse_old_format(db: &Database) -> std::io::Result<()> {
    let txn = db.begin_read().map_err(std::io::Error::other)?;
    let old = match txn.open_table(LOGS) {
        Ok(table) => table.first().map_err(std::io::Error::other)?.is_some(),
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(std::io::Error::other(e)),
    };
    if old {
        return Err(std::io::Error::other(
            "this Raft state keeps its log entries in the database (an earlier hanfs); \
             wipe the node's state directory and let it catch up from the others",
        ));
    }
    Ok(())
}

fn lock_log(log: &Mutex<file::LogFile>) -> std::sync::MutexGuard<'_, file::LogFile> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_entry_log_id(log: &Mutex<file::LogFile>) -> Result<Option<typ::LogId>, typ::StorageError> {
    let Some((_, last)) = lock_log(log).bounds() else { return Ok(None) };
    Ok(read_entries(log, (Bound::Included(last), Bound::Included(last)))?.pop().map(|e| *e.get_log_id()))
}

/// The end of the log on disk: its last entry, or the last purged id when
/// every entry was purged.
fn durable_end(db: &Database, log: &Mutex<file::LogFile>) -> Result<Option<typ::LogId>, typ::StorageError> {
    if let Some(last) = last_entry_log_id(log)? {
        return Ok(Some(last));
    }
    get_meta(db, KEY_LAST_PURGED)
}

fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, typ::StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(META).map_err(read_err)?;
    let Some(value) = table.get(key).map_err(read_err)? else {
        return Ok(None);
    };
    let decoded = decode(value.value(), META_BYTES_MAX).map_err(read_err)?;
    Ok(Some(decoded))
}

fn read_err(e: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::<NodeId>::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::<NodeId>::write_logs(AnyError::new(&e)).into()
}

/// Convert a generic range to a pair of bounds.
fn to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// The entries on disk with an index in `bounds`, in order.
fn read_entries(
    log: &Mutex<file::LogFile>,
    bounds: (Bound<u64>, Bound<u64>),
) -> Result<Vec<typ::Entry>, typ::StorageError> {
    let from = match bounds.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match bounds.1 {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => e,
        Bound::Unbounded => u64::MAX,
    };
    let places = lock_log(log).places(from, to);
    // A record gone since the places were taken (module doc of `file`) is
    // left out as a deleted row was: those purged at the front, and all
    // from the first truncated one on.
    let mut entries = Vec::with_capacity(places.len());
    for place in &places {
        match place.read().map_err(read_err)? {
            Some(bytes) => entries.push(decode(&bytes, ENTRY_BYTES_MAX).map_err(read_err)?),
            None if entries.is_empty() => {}
            None => break,
        }
    }
    Ok(entries)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::Entry>, typ::StorageError> {
        // On the blocking pool: replication reads entries for every follower,
        // and a page no longer cached is a disk read, which must not hold a
        // runtime worker (heartbeats, the lease watch) on a busy disk.
        // Pending first: an entry that reaches the file in between is then
        // in one of the two (it is forgotten only after it is written).
        let log = self.log.clone();
        let bounds = to_bounds(&range);
        let pending = self.writer.pending.range(bounds);
        if writer::covers(&pending, bounds) {
            // All of it still waits for the writer (a leader replicating what
            // it has just appended): no read of the file, which would wait for
            // the append in progress there, and with it the follower's fsync
            // for the leader's.
            let entries = pending.into_iter().map(|(_, e)| e).collect();
            return Ok(self.writer.hide_purged(entries));
        }
        let stored = tokio::task::spawn_blocking(move || read_entries(&log, bounds)).await.map_err(read_err)??;
        Ok(self.writer.hide_purged(writer::merge(stored, pending)))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        // A queued purge first (openraft asks at start-up, rarely otherwise).
        self.drain().await?;
        let last_purged_log_id: Option<typ::LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let stored = self.last_entry_log_id()?;
        let last_log_id = self.writer.pending.last_log_id().max(stored).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &typ::Vote) -> Result<(), typ::StorageError> {
        let bytes = encode(vote, META_BYTES_MAX).map_err(write_err)?;
        self.drain().await?;
        self.write(move |txn| {
            txn.open_table(META)?.insert(KEY_VOTE, bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::<NodeId>::write_vote(AnyError::new(&e)))?;
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<typ::LogId>) -> Result<(), typ::StorageError> {
        // The committed id is only a hint that lets a restarted node re-apply
        // its log at once; losing the latest one in a crash is harmless (the
        // leader re-establishes it). So no fsync of its own: it is queued
        // behind the appends it covers and is durable with the next fsync.
        let bytes = encode(&committed, META_BYTES_MAX).map_err(write_err)?;
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(committed);
        self.writer.save_committed(committed, bytes).map_err(|e| write_err(std::io::Error::other(e)))
    }

    async fn read_committed(&mut self) -> Result<Option<typ::LogId>, typ::StorageError> {
        // The last one saved, which the writer may not have written yet.
        if let Some(committed) = *self.committed.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(committed);
        }
        Ok(self.get_meta::<Option<typ::LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry, ENTRY_BYTES_MAX).map_err(write_err)?;
            encoded.push((entry.get_log_id().index, entry, bytes));
        }
        let callback = if self.early_flush(&encoded) {
            callback.log_io_completed(Ok(()));
            None
        } else {
            Some(callback)
        };
        self.writer.append(encoded, callback).map_err(|e| write_err(std::io::Error::other(e)))
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        tracing::debug!(%log_id, "truncate log since");
        self.drain().await?;
        let log = self.log.clone();
        let started = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || lock_log(&log).truncate(log_id.index)).await;
        note_write_time(started.elapsed());
        joined.map_err(write_err)?.map_err(write_err)?;
        self.durable.truncated(durable_end(&self.db, &self.log)?);
        Ok(())
    }

    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        tracing::debug!(%log_id, "purge log upto");
        let bytes = encode(&log_id, META_BYTES_MAX).map_err(write_err)?;
        // The last purged id is durable before the entries are forgotten
        // (the writer), so a crash never leaves a gap that `get_log_state`
        // cannot explain. Not awaited: openraft's core (heartbeats, the
        // lease) must not wait on a drain and an fsync for a purge.
        self.writer.purge(log_id.index, bytes).map_err(|e| write_err(std::io::Error::other(e)))
    }
}
