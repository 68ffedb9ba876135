//! Durable single-node storage in one redb file: a log of encoded commands
//! plus the latest snapshot. `append` returns only after an fsync'd commit;
//! `compact` replaces the snapshot and drops the log rows it covers in one
//! atomic transaction, so a crash at any point reopens to a committed state.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::codec::{decode_command, encode_command, CodecError};
use crate::command::Command;
use crate::State;

/// Log entries between snapshots, for callers that compact periodically.
pub const COMPACT_ENTRIES: u64 = 10_000;
/// A snapshot is stored as chunks of at most this size (redb values are bounded).
const SNAPSHOT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Log index → encoded `Command`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Chunk number → bytes of the latest snapshot.
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");
/// Small counters, see the `META_*` keys.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Last log index the stored snapshot includes (0: none).
const META_SNAPSHOT_INDEX: &str = "snapshot_index";

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
}

impl Store {
    /// Opens (or creates) the store file. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        // A new file's directory entry is durable only once its directory is
        // synced; without this a crash could lose acknowledged appends.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir)?;
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            txn.open_table(LOG)?;
            txn.open_table(SNAPSHOT)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        Ok(Store { db })
    }

    /// The committed state and the last log index it includes.
    /// A logged command that `apply` rejects was rejected (and changed nothing)
    /// when first applied too, so replay skips it the same way.
    pub fn load(&self) -> Result<(State, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let snapshot_index = meta.get(META_SNAPSHOT_INDEX)?.map(|v| v.value()).unwrap_or(0);
        let mut state = read_snapshot(&txn.open_table(SNAPSHOT)?)?;
        let log = txn.open_table(LOG)?;
        let mut last = snapshot_index;
        for row in log.range(snapshot_index.saturating_add(1)..)? {
            let (index, bytes) = row?;
            let index = index.value();
            if Some(index) != last.checked_add(1) {
                return Err(StoreError::Corrupt(format!("log gap: {last} then {index}")));
            }
            let cmd = decode_command(bytes.value())?;
            let _ = state.apply(&cmd);
            last = index;
        }
        Ok((state, last))
    }

    /// Durably appends `cmd` at `index`, which must follow the last index.
    pub fn append(&self, index: u64, cmd: &Command) -> Result<(), StoreError> {
        let bytes = encode_command(cmd)?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let snapshot_index = txn.open_table(META)?.get(META_SNAPSHOT_INDEX)?.map(|v| v.value()).unwrap_or(0);
            let mut log = txn.open_table(LOG)?;
            let last = log.last()?.map(|(k, _)| k.value()).unwrap_or(0).max(snapshot_index);
            let expected = last.saturating_add(1);
            if index != expected {
                return Err(StoreError::OutOfOrder { expected, got: index });
            }
            log.insert(index, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores `state` (the result of applying every entry up to `index`) as
    /// the snapshot and drops log rows up to `index`, atomically and durably.
    pub fn compact(&self, state: &State, index: u64) -> Result<(), StoreError> {
        let bytes = state.to_snapshot();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META)?;
            let snapshot_index = meta.get(META_SNAPSHOT_INDEX)?.map(|v| v.value()).unwrap_or(0);
            let mut log = txn.open_table(LOG)?;
            let last_index = log.last()?.map(|(k, _)| k.value()).unwrap_or(0).max(snapshot_index);
            if index < snapshot_index || index > last_index {
                return Err(StoreError::CompactRange { index, snapshot_index, last_index });
            }
            let mut chunks = txn.open_table(SNAPSHOT)?;
            chunks.retain(|_, _| false)?;
            for (n, chunk) in (0u64..).zip(bytes.chunks(SNAPSHOT_CHUNK_BYTES)) {
                chunks.insert(n, chunk)?;
            }
            meta.insert(META_SNAPSHOT_INDEX, index)?;
            log.retain_in(..=index, |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Last index the stored snapshot includes (0: none).
    pub fn snapshot_index(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(META_SNAPSHOT_INDEX)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Number of log rows not yet folded into the snapshot.
    pub fn log_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }
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
