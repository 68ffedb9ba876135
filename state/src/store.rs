//! Durable single-node storage: the log of encoded commands in an
//! append-only file (`wal.rs`: one pwrite and one fdatasync per append) and
//! the latest snapshot in a redb file beside it. `append` returns only after
//! its record is synced; `compact` stores a new snapshot in one atomic redb
//! transaction and only then lets the log start over, so a crash at any
//! point reopens to a committed state.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::codec::{decode_command, encode_command, CodecError};
use crate::command::Command;
use crate::State;

mod wal;

/// The log record format, shared with the Raft log's entries file.
pub use wal::{encode_into as encode_record_into, record_at, Record};

/// Log entries between snapshots, for callers that compact periodically.
pub const COMPACT_ENTRIES: u64 = 10_000;
/// A snapshot is stored as chunks of at most this size (redb values are bounded).
const SNAPSHOT_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// The log file's extension, beside the redb file (`hanfs.redb` → `hanfs.wal`).
pub const LOG_EXTENSION: &str = "wal";

/// Chunk number → bytes of the latest snapshot.
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");
/// Small counters, see the `META_*` keys.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Last log index the stored snapshot includes (0: none).
const META_SNAPSHOT_INDEX: &str = "snapshot_index";
/// Present once the log file was made: from then on a missing log file is an error.
const META_LOG_MADE: &str = "log_made";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large and this is the cold path.
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("append out of order: expected index {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("compaction at {index} outside the stored range {snapshot_index}..={last_index}")]
    CompactRange { index: u64, snapshot_index: u64, last_index: u64 },
    #[error("store corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub struct Store {
    db: Database,
    log: Mutex<Log>,
}

/// The log file and the indexes around it.
struct Log {
    wal: wal::Wal,
    snapshot_index: u64,
    /// Last index appended (the snapshot's when the log holds none after it).
    last: u64,
}

impl Store {
    /// Opens (or creates) the store file `path` and its log beside it. Fails
    /// if another process holds it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        // A new file's directory entry is durable only once its directory is
        // synced; without this a crash could lose acknowledged appends.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir)?;
        }
        let log_file = log_path(path);
        let log_existed = log_file.exists();
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let (snapshot_index, log_made) = {
            txn.open_table(SNAPSHOT)?;
            let meta = txn.open_table(META)?;
            let index = meta.get(META_SNAPSHOT_INDEX)?.map(|v| v.value()).unwrap_or(0);
            let made = meta.get(META_LOG_MADE)?.is_some();
            (index, made)
        };
        txn.commit()?;
        if log_made && !log_existed {
            // Starting over with an empty log would silently drop every
            // commit since the last snapshot (e.g. a copy of *.redb alone).
            return Err(StoreError::Corrupt(format!(
                "{} is missing: the commits since the last snapshot are in it; restore it beside {}",
                log_file.display(),
                path.display()
            )));
        }
        // The redb file's lock keeps a second process out of the log too.
        let mut wal = wal::Wal::open(&log_file)?;
        if !log_made {
            // Only once the new log file and its name are durable (Wal::open).
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(META)?.insert(META_LOG_MADE, 1)?;
            txn.commit()?;
        }
        let buf = wal.read_all()?;
        let (records, end) = wal::scan(&buf, snapshot_index)?;
        let last = records.last().map_or(snapshot_index, |r| r.index);
        wal.set_end(end);
        Ok(Store { db, log: Mutex::new(Log { wal, snapshot_index, last }) })
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The committed state and the last log index it includes.
    /// A logged command that `apply` rejects was rejected (and changed nothing)
    /// when first applied too, so replay skips it the same way.
    pub fn load(&self) -> Result<(State, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let mut state = read_snapshot(&txn.open_table(SNAPSHOT)?)?;
        let log = self.log();
        let buf = log.wal.read_all()?;
        let (records, _) = wal::scan(&buf, log.snapshot_index)?;
        let mut last = log.snapshot_index;
        for r in records {
            let cmd = decode_command(r.bytes)?;
            let _ = state.apply(&cmd);
            last = r.index;
        }
        Ok((state, last))
    }

    /// Durably appends `cmd` at `index`, which must follow the last index.
    pub fn append(&self, index: u64, cmd: &Command) -> Result<(), StoreError> {
        let bytes = encode_command(cmd)?;
        let mut log = self.log();
        let expected = log.last.saturating_add(1);
        if index != expected {
            return Err(StoreError::OutOfOrder { expected, got: index });
        }
        log.wal.append(index, &bytes)?;
        log.last = index;
        Ok(())
    }

    /// Stores `state` (the result of applying every entry up to `index`) as
    /// the snapshot, atomically and durably; a compaction of everything
    /// appended lets the log start over.
    pub fn compact(&self, state: &State, index: u64) -> Result<(), StoreError> {
        let mut log = self.log();
        if index < log.snapshot_index || index > log.last {
            return Err(StoreError::CompactRange { index, snapshot_index: log.snapshot_index, last_index: log.last });
        }
        let bytes = state.to_snapshot();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META)?;
            let mut chunks = txn.open_table(SNAPSHOT)?;
            chunks.retain(|_, _| false)?;
            for (n, chunk) in (0u64..).zip(bytes.chunks(SNAPSHOT_CHUNK_BYTES)) {
                chunks.insert(n, chunk)?;
            }
            meta.insert(META_SNAPSHOT_INDEX, index)?;
        }
        txn.commit()?;
        log.snapshot_index = index;
        if index == log.last {
            // Every record is in the snapshot now, durably: overwrite them.
            log.wal.set_end(0);
        }
        Ok(())
    }

    /// Last index the stored snapshot includes (0: none).
    pub fn snapshot_index(&self) -> Result<u64, StoreError> {
        Ok(self.log().snapshot_index)
    }

    /// Number of log entries not yet folded into the snapshot.
    pub fn log_len(&self) -> Result<u64, StoreError> {
        let log = self.log();
        Ok(log.last - log.snapshot_index)
    }
}

/// The log file of the store file `path`.
pub fn log_path(path: &Path) -> PathBuf {
    path.with_extension(LOG_EXTENSION)
}

/// fsync a directory, making the names in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |error| StoreError::Io { path: dir.display().to_string(), error };
    std::fs::File::open(dir).map_err(io)?.sync_all().map_err(io)
}

/// Reassembles the snapshot chunks; no chunks means the empty state.
fn read_snapshot(chunks: &redb::ReadOnlyTable<u64, &[u8]>) -> Result<State, StoreError> {
    let mut bytes = Vec::new();
    for (expected, row) in (0u64..).zip(chunks.iter()?) {
        let (n, chunk) = row?;
        if n.value() != expected {
            return Err(StoreError::Corrupt(format!("snapshot chunk {expected} missing")));
        }
        bytes.extend_from_slice(chunk.value());
    }
    if bytes.is_empty() {
        return Ok(State::default());
    }
    Ok(State::from_snapshot(&bytes)?)
}

#[cfg(test)]
mod tests;
