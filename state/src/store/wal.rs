//! The single node's log: an append-only file of records beside the redb
//! file that holds the snapshot. One append is one `pwrite` and one
//! `fdatasync` of a file whose blocks were written (with zeros) before, so
//! the sync flushes the record's page alone: no B-tree pages, no allocator
//! state, no journal commit for a new size (measured here: 141 µs against
//! 210 µs for redb's six scattered pages per transaction).
//!
//! A record is `len: u32, crc: u32, index: u64, command bytes`, little
//! endian; `len` counts index and bytes, `crc` (CRC-32C) covers them. The
//! file starts zeroed and grows by `GROW_BYTES` of zeros when full.
//!
//! After a compaction that covers every record, the next append starts again
//! at offset 0, over the old ones, which are then all at or below the
//! snapshot's index. So the file always reads as: records at or below the
//! snapshot (already in it), then the records after it in order, then stale
//! records (again at or below the snapshot), a torn record, or zeros.
//! `scan` replays exactly the middle part; a record above the next expected
//! index is corruption.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::StoreError;

/// Bytes of zeros the file is created with and grows by.
pub const GROW_BYTES: u64 = 4 * 1024 * 1024;
/// `len` and `crc`.
const HEAD_BYTES: usize = 8;
/// The index inside `len`.
const INDEX_BYTES: usize = 8;

/// The log file and where the next record goes.
pub struct Wal {
    file: File,
    path: String,
    /// Offset of the next record.
    end: u64,
    /// Bytes the file holds (written, zeros included).
    size: u64,
    /// Tests only: the next sync fails (as an fdatasync's EIO would).
    #[cfg(test)]
    pub fail_next_sync: bool,
}

/// A record found by `scan`: its index, command bytes, and the offset after it.
pub struct Record<'a> {
    pub index: u64,
    pub bytes: &'a [u8],
    pub end: u64,
}

impl Wal {
    /// Opens `path`, creating it zeroed (and syncing it and its directory)
    /// if missing. The next record goes at offset 0 until `set_end`.
    pub fn open(path: &Path) -> Result<Wal, StoreError> {
        let name = path.display().to_string();
        let io = |error| StoreError::Io { path: name.clone(), error };
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut wal = Wal {
            size,
            file,
            path: name.clone(),
            end: 0,
            #[cfg(test)]
            fail_next_sync: false,
        };
        // New (or left empty by a crash right after its creation).
        if wal.size == 0 {
            wal.grow(GROW_BYTES)?;
            wal.file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                super::sync_dir(dir)?;
            }
        }
        Ok(wal)
    }

    fn io(&self, error: std::io::Error) -> StoreError {
        StoreError::Io { path: self.path.clone(), error }
    }

    /// Appends `bytes` zeros at the end of the file.
    fn grow(&mut self, bytes: u64) -> Result<(), StoreError> {
        let zeros = vec![0u8; usize::try_from(bytes).map_err(|_| StoreError::Corrupt("log growth too large".into()))?];
        self.file.write_all_at(&zeros, self.size).map_err(|e| self.io(e))?;
        self.size += bytes;
        Ok(())
    }

    /// The whole file, for `scan`.
    pub fn read_all(&self) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; usize::try_from(self.size).map_err(|_| StoreError::Corrupt("log too large".into()))?];
        self.file.read_exact_at(&mut buf, 0).map_err(|e| self.io(e))?;
        Ok(buf)
    }

    /// Where the next record goes.
    pub fn set_end(&mut self, end: u64) {
        self.end = end;
    }

    /// Writes the record for `index` at the end and syncs it; on return it
    /// is durable. On an error nothing after the previous record counts.
    pub fn append(&mut self, index: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let record = encode(index, bytes)?;
        let len = record.len() as u64;
        if self.end + len > self.size {
            // The new size is flushed with the record by the fdatasync below.
            self.grow(GROW_BYTES.max(len))?;
        }
        self.file.write_all_at(&record, self.end).map_err(|e| self.io(e))?;
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(self.io(std::io::Error::other("injected: the sync failed")));
        }
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.end += len;
        Ok(())
    }
}

/// The record of `index` and `bytes` (module doc).
fn encode(index: u64, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut record = Vec::with_capacity(HEAD_BYTES + INDEX_BYTES + bytes.len());
    encode_into(index, bytes, &mut record)?;
    Ok(record)
}

/// Appends the record of `index` and `bytes` to `out`: also the Raft log
/// file's (`hanfs_raft::log_store::file`), which puts a batch's records in
/// one buffer.
pub fn encode_into(index: u64, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    let len =
        u32::try_from(INDEX_BYTES + bytes.len()).map_err(|_| StoreError::Corrupt("log record too large".into()))?;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(bytes);
    let crc = crc32c(out.get(start + HEAD_BYTES..).unwrap_or_default());
    if let Some(room) = out.get_mut(start + 4..start + HEAD_BYTES) {
        room.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// The record at `at` in `buf`, if a whole one with a matching CRC is there.
pub fn record_at(buf: &[u8], at: u64) -> Option<Record<'_>> {
    let start = usize::try_from(at).ok()?;
    let head = buf.get(start..start.checked_add(HEAD_BYTES)?)?;
    let len = u32::from_le_bytes(head.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head.get(4..)?.try_into().ok()?);
    if len < INDEX_BYTES {
        return None;
    }
    let body = buf.get(start + HEAD_BYTES..start.checked_add(HEAD_BYTES)?.checked_add(len)?)?;
    if crc32c(body) != crc {
        return None;
    }
    let index = u64::from_le_bytes(body.get(..INDEX_BYTES)?.try_into().ok()?);
    Some(Record { index, bytes: body.get(INDEX_BYTES..)?, end: (start + HEAD_BYTES + len) as u64 })
}

/// The records after `snapshot_index`, in order (see the module doc), and
/// the offset after the last one (0 when there is none: the next record may
/// go over the old ones). Errors when a record skips an index.
pub fn scan(buf: &[u8], snapshot_index: u64) -> Result<(Vec<Record<'_>>, u64), StoreError> {
    let mut out: Vec<Record<'_>> = Vec::new();
    let mut at = 0u64;
    while let Some(r) = record_at(buf, at) {
        let expected = out.last().map_or(snapshot_index, |l| l.index).saturating_add(1);
        if r.index <= snapshot_index {
            if !out.is_empty() {
                break; // stale: written before the last reset
            }
        } else if r.index == expected {
            at = r.end;
            out.push(r);
            continue;
        } else {
            return Err(StoreError::Corrupt(format!("log gap: {} then {}", expected - 1, r.index)));
        }
        at = r.end;
    }
    let end = out.last().map_or(0, |r| r.end);
    Ok((out, end))
}

/// CRC-32C (Castagnoli), bitwise-reflected, as iSCSI and ext4 use.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    fn file_of(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (i, b) in records {
            buf.extend(encode(*i, b).expect("encode"));
        }
        buf.extend([0u8; 64]);
        buf
    }

    fn indexes(buf: &[u8], snapshot: u64) -> (Vec<u64>, u64) {
        let (recs, end) = scan(buf, snapshot).expect("scan");
        (recs.iter().map(|r| r.index).collect(), end)
    }

    #[test]
    fn scan_skips_what_the_snapshot_holds_and_stops_at_stale_records() {
        let buf = file_of(&[(1, b"a"), (2, b"b"), (3, b"c")]);
        assert_eq!(indexes(&buf, 0).0, vec![1, 2, 3]);
        assert_eq!(indexes(&buf, 2).0, vec![3]);
        assert_eq!(indexes(&buf, 3), (vec![], 0));
        // After a reset at 3: 4 and 5 over 1 and 2; 3 is stale.
        let buf = file_of(&[(4, b"d"), (5, b"e"), (3, b"c")]);
        let (got, end) = indexes(&buf, 3);
        assert_eq!(got, vec![4, 5]);
        assert_eq!(end, 2 * (HEAD_BYTES + INDEX_BYTES + 1) as u64);
        // A skipped index is corruption, not a silent stop.
        assert!(matches!(scan(&file_of(&[(4, b"d"), (6, b"f")]), 3), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn scan_stops_at_a_torn_or_damaged_record() {
        let mut buf = file_of(&[(1, b"one"), (2, b"two")]);
        let second = HEAD_BYTES + INDEX_BYTES + 3;
        // A flipped byte in the second record's command.
        buf[second + HEAD_BYTES + INDEX_BYTES] ^= 1;
        assert_eq!(indexes(&buf, 0).0, vec![1]);
        // A record cut short by the end of the file.
        let whole = file_of(&[(1, b"one"), (2, b"two")]);
        assert_eq!(indexes(&whole[..second + 5], 0).0, vec![1]);
        // Zeros from the start: nothing.
        assert_eq!(indexes(&[0u8; 100], 0), (vec![], 0));
    }
}
