//! The Raft log's entries in one append-only file (`raft-log.entries`), as
//! the single node's WAL keeps its commands (`hanfs_state`'s `store/wal.rs`):
//! an append is one `pwrite` of its records and one `fdatasync` of a file
//! whose blocks were written (with zeros) before, so the sync flushes the
//! records' pages and no size change, B-tree page or allocator state (redb
//! cost some 90 us of CPU and a slower fsync per append on every node).
//!
//! A record is the WAL's: `len: u32, crc: u32, index: u64, entry bytes`,
//! little endian; `len` counts index and bytes, `crc` (CRC-32C) covers them.
//! Records follow each other with consecutive indexes; the first may have
//! any index (the entries before it were purged).
//!
//! What keeps the file readable after a crash:
//! - Opening reads every record from offset 0 while each is whole, matches
//!   its CRC and has the next index. Whatever follows (a torn append, never
//!   acknowledged) is overwritten with zeros before anything is appended,
//!   so a record of a torn batch can never later read as the successor of a
//!   new one.
//! - A truncate overwrites the truncated records with zeros (and syncs)
//!   before it returns, for the same reason.
//! - A purge only forgets the purged records (the last purged id is saved in
//!   redb first, `writer`); once `COMPACT_BYTES` of purged records lead the
//!   file, it is rewritten with the live records alone into a new file,
//!   synced and renamed over the old one. A purge of every record (a
//!   follower installing a snapshot past its log's end) makes the next
//!   append start again at offset 0, over the purged records, as the single
//!   node's WAL does after a compaction: appended behind them, the new
//!   records would not follow on and would be read as a torn tail.
//!
//! Readers (replication) take the file and the records' places under the
//! lock and read without it: a compaction swaps in a new file, and a reader
//! still holding the old one reads the same bytes there; a record purged or
//! truncated meanwhile, and written over, fails its CRC or index check and
//! reads as gone, never as another entry.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of zeros the file is created with and grows by.
pub const GROW_BYTES: u64 = 4 * 1024 * 1024;
/// Purged records at the head of the file that make a purge rewrite it.
pub const COMPACT_BYTES: u64 = 64 * 1024 * 1024;
/// Zeros written at a time when a region is cleared.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(GROW_BYTES as usize >= ZERO_CHUNK_BYTES);

/// One live record: its index and where its entry bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    index: u64,
    /// Offset of the record (its head).
    offset: u64,
    /// Bytes of the whole record, head included.
    len: u64,
}

/// Where one entry's record is, for a read without the lock.
pub(super) struct Place {
    file: Arc<File>,
    index: u64,
    /// Offset and length of the whole record, head included.
    offset: u64,
    len: usize,
}

impl Place {
    /// The entry's encoded bytes; `None` if the record is no longer there
    /// (purged and written over, or truncated, since the place was taken):
    /// the record read back must be whole and carry the same index.
    pub(super) fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.offset)?;
        Ok(hanfs_state::record_at(&buf, 0)
            .filter(|r| r.index == self.index && r.end == self.len as u64)
            .map(|r| r.bytes.to_vec()))
    }
}

/// An append prepared under the lock, written without it.
struct Staged {
    file: Arc<File>,
    path: PathBuf,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    /// Where the records go.
    at: u64,
    /// The file's zeroed size before, and after the growth this append needs.
    old_size: u64,
    size: u64,
}

impl Staged {
    /// Grows the file if needed, writes the records, syncs them.
    fn write(&self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // The new size is flushed with the records by the fdatasync below.
        zero(&self.file, &self.path, self.old_size, self.size)?;
        self.file.write_all_at(&self.buf, self.at).map_err(|e| io_err(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_err(&self.path, e))
    }
}

/// The open log file.
pub(super) struct LogFile {
    file: Arc<File>,
    path: PathBuf,
    /// The live records, in index order.
    slots: VecDeque<Slot>,
    /// Offset after the last record (of the purged ones too, if none is live).
    end: u64,
    /// Bytes the file holds (written, zeros included).
    size: u64,
    /// Purged bytes at the head that make a purge compact (`COMPACT_BYTES`;
    /// smaller in tests).
    compact_bytes: u64,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl LogFile {
    /// Opens `path` (creating it zeroed if missing), reads its records and
    /// clears what follows them (module doc). Returns the file and how many
    /// bytes of a torn or stray tail were cleared.
    pub(super) fn open(path: &Path) -> std::io::Result<(LogFile, u64)> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let size = file.metadata().map_err(|e| io_err(path, e))?.len();
        let mut log = LogFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            slots: VecDeque::new(),
            end: 0,
            size,
            compact_bytes: COMPACT_BYTES,
        };
        if size == 0 {
            log.grow(GROW_BYTES)?;
            log.file.sync_all().map_err(|e| io_err(path, e))?;
            sync_parent(path)?;
            return Ok((log, 0));
        }
        let mut buf = vec![0u8; usize::try_from(size).map_err(std::io::Error::other)?];
        log.file.read_exact_at(&mut buf, 0).map_err(|e| io_err(path, e))?;
        let mut at = 0u64;
        while let Some((index, len)) = record_at(&buf, at) {
            if log.slots.back().is_some_and(|last| index != last.index + 1) {
                break;
            }
            log.slots.push_back(Slot { index, offset: at, len });
            at += len;
        }
        log.end = at;
        // The last byte that is not zero after the records: a torn append.
        let stray = buf.iter().rposition(|b| *b != 0).map_or(0, |last| (last as u64 + 1).saturating_sub(at));
        if stray > 0 {
            zero(&log.file, path, at, at + stray)?;
            log.file.sync_data().map_err(|e| io_err(path, e))?;
        }
        Ok((log, stray))
    }

    /// Appends `bytes` zeros at the end of the file.
    fn grow(&mut self, bytes: u64) -> std::io::Result<()> {
        zero(&self.file, &self.path, self.size, self.size + bytes)?;
        self.size += bytes;
        Ok(())
    }

    /// The index of the first and of the last live record.
    pub(super) fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.slots.front()?.index, self.slots.back()?.index))
    }

    /// Writes the records of `entries` (index, encoded entry; consecutive,
    /// following the last live record) after the last one and syncs them;
    /// on return they are durable. On an error nothing of them counts.
    #[cfg(test)]
    pub(super) fn append(&mut self, entries: &[(u64, &[u8])]) -> std::io::Result<()> {
        let staged = self.stage(entries)?;
        staged.write()?;
        self.commit(staged);
        Ok(())
    }

    /// As `append`, with the lock held only around the bookkeeping, not the
    /// write and its sync: replication reads on meanwhile. Only the writer
    /// thread appends, and a truncate or compaction never runs beside it.
    pub(super) fn append_shared(log: &std::sync::Mutex<LogFile>, entries: &[(u64, &[u8])]) -> std::io::Result<()> {
        let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
        let staged = lock().stage(entries)?;
        staged.write()?;
        lock().commit(staged);
        Ok(())
    }

    /// The records of `entries`, where they go, and the growth they need.
    fn stage(&self, entries: &[(u64, &[u8])]) -> std::io::Result<Staged> {
        let mut next = self.slots.back().map(|s| s.index + 1);
        let mut buf = Vec::new();
        let mut slots = Vec::with_capacity(entries.len());
        for (index, bytes) in entries {
            if next.is_some_and(|n| n != *index) {
                return Err(std::io::Error::other(format!(
                    "raft log append of index {index} after {}",
                    next.unwrap_or_default().saturating_sub(1)
                )));
            }
            next = Some(index + 1);
            let offset = self.end + buf.len() as u64;
            encode(*index, bytes, &mut buf)?;
            slots.push(Slot { index: *index, offset, len: self.end + buf.len() as u64 - offset });
        }
        let len = buf.len() as u64;
        let size = if self.end + len > self.size { self.size + GROW_BYTES.max(len) } else { self.size };
        Ok(Staged {
            file: self.file.clone(),
            path: self.path.clone(),
            buf,
            slots,
            at: self.end,
            old_size: self.size,
            size,
        })
    }

    /// Takes in what `stage` prepared and `Staged::write` made durable.
    fn commit(&mut self, staged: Staged) {
        self.end = staged.at + staged.buf.len() as u64;
        self.size = staged.size;
        self.slots.extend(staged.slots);
    }

    /// Where the live entries with an index in `[from, to)` are.
    pub(super) fn places(&self, from: u64, to: u64) -> Vec<Place> {
        let Some(first) = self.slots.front().map(|s| s.index) else { return Vec::new() };
        let start = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
        self.slots
            .iter()
            .skip(start)
            .take_while(|s| s.index < to)
            .map(|s| Place { file: self.file.clone(), index: s.index, offset: s.offset, len: s.len as usize })
            .collect()
    }

    /// Removes the records from `since` on: zeroed and synced (module doc).
    pub(super) fn truncate(&mut self, since: u64) -> std::io::Result<()> {
        let Some(pos) = self.slots.iter().position(|s| s.index >= since) else { return Ok(()) };
        let from = self.slots.get(pos).map_or(self.end, |s| s.offset);
        zero(&self.file, &self.path, from, self.end)?;
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        self.slots.truncate(pos);
        self.end = from;
        Ok(())
    }

    /// Forgets the records up to `upto`; rewrites the file once
    /// `COMPACT_BYTES` of forgotten ones lead it (module doc).
    pub(super) fn purge(&mut self, upto: u64) -> std::io::Result<()> {
        while self.slots.front().is_some_and(|s| s.index <= upto) {
            self.slots.pop_front();
        }
        if self.slots.is_empty() {
            // Every record is purged (a snapshot past the log's end, as a
            // follower installs): the next append goes at offset 0, over
            // them. Appended after them, it would not follow the last one
            // and would read as a torn tail after a restart. Over them, a
            // record left behind the new ones has an index at or below
            // `upto`, never the next one.
            self.end = 0;
            return Ok(());
        }
        let dead = self.slots.front().map_or(self.end, |s| s.offset);
        if dead >= self.compact_bytes {
            self.compact(dead)?;
        }
        Ok(())
    }

    /// Rewrites the live records (from `dead` on) to the start of a new
    /// file, synced, renamed over this one, the directory synced.
    fn compact(&mut self, dead: u64) -> std::io::Result<()> {
        let live = self.end - dead;
        let mut buf = vec![0u8; usize::try_from(live).map_err(std::io::Error::other)?];
        self.file.read_exact_at(&mut buf, dead).map_err(|e| io_err(&self.path, e))?;
        let size = live.div_ceil(GROW_BYTES).max(1) * GROW_BYTES;
        let tmp = self.path.with_extension("compacting");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let mut next = LogFile {
            file: Arc::new(file),
            path: self.path.clone(),
            slots: VecDeque::new(),
            end: 0,
            size: 0,
            compact_bytes: self.compact_bytes,
        };
        next.grow(size)?;
        next.file.write_all_at(&buf, 0).map_err(|e| io_err(&tmp, e))?;
        next.file.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        sync_parent(&self.path)?;
        next.slots = self.slots.iter().map(|s| Slot { offset: s.offset - dead, ..*s }).collect();
        next.end = live;
        *self = next;
        Ok(())
    }
}

/// Writes zeros over `[from, to)` of `file` (not synced). Nothing to write
/// (every append but a growing one) allocates nothing: a zeroed chunk from
/// the heap is a 1 MiB memset, which cost the log writer more CPU than the
/// rest of an append.
fn zero(file: &File, path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    if from >= to {
        return Ok(());
    }
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).unwrap_or(usize::MAX).min(ZERO_CHUNK_BYTES);
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at).map_err(|e| io_err(path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// fsyncs the directory that holds `path` (`hanfs_state::sync_dir`).
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => hanfs_state::sync_dir(dir).map_err(|e| std::io::Error::other(e.to_string())),
        None => Ok(()),
    }
}

/// Appends the record of `index` and `bytes` to `out` (the single node's
/// WAL record: `hanfs_state::encode_record_into`).
fn encode(index: u64, bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    hanfs_state::encode_record_into(index, bytes, out).map_err(|e| std::io::Error::other(e.to_string()))
}

/// The index and whole length of the record at `at` in `buf`, if a whole
/// one with a matching CRC is there.
fn record_at(buf: &[u8], at: u64) -> Option<(u64, u64)> {
    hanfs_state::record_at(buf, at).map(|r| (r.index, r.end - at))
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
