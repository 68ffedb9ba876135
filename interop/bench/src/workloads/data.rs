//! Sequential data workloads: WRITE a file in fixed chunks (UNSTABLE, then
//! one COMMIT, both timed), then READ it back in the same chunks and check
//! every byte (warm: the server's page cache still holds what was written).
//! When the file is also reachable locally (`DataSize::local_dir`: the bench
//! runs on the server's machine), its page cache is then dropped with
//! `dd if=FILE iflag=nocache count=0` (posix_fadvise DONTNEED of the whole
//! file; the pages are clean after the COMMIT) and it is READ again (cold).
//! The content is a repeated 4 KiB block with each block's index stamped
//! into its first 8 bytes, so misplaced data is caught.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{nfs_fh3, stable_how};

use super::complete_flag;
use crate::client::Session;
use crate::stats::MetricLine;
use crate::{BenchError, Budget};

/// Period of the content pattern, in bytes.
pub const PATTERN_BLOCK_BYTES: usize = 4096;
/// Bytes of each block that carry its index.
const STAMP_BYTES: usize = 8;
/// Largest chunk the workload sends in one WRITE or asks in one READ.
pub const CHUNK_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Largest file the workload writes.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Bytes in a MiB, for the rates.
const MIB_BYTES: f64 = 1024.0 * 1024.0;

const _: () = assert!(STAMP_BYTES <= PATTERN_BLOCK_BYTES);

/// Sizes for `write_read`.
#[derive(Debug, Clone)]
pub struct DataSize {
    pub file_bytes: u64,
    pub chunk_bytes: u32,
    /// Write+read passes, each on a new file; the lines report the median pass.
    pub passes: u32,
    /// The parent directory as a local path (same machine as the server), to
    /// drop the file's page cache before a cold READ; `None`: no cold READ.
    pub local_dir: Option<PathBuf>,
}

/// Most passes one run makes.
pub const PASSES_MAX: u32 = 100;

/// One write+read pass.
#[derive(Debug, Clone, Copy)]
struct Pass {
    written: u64,
    write_time: Duration,
    commit_time: Duration,
    read: u64,
    read_time: Duration,
    /// Bytes and time of the READ after the page cache was dropped.
    cold: Option<(u64, Duration)>,
}

/// The base block: fixed pseudo-random bytes (xorshift, constant seed).
pub(super) fn base_block() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = Vec::with_capacity(PATTERN_BLOCK_BYTES);
    while block.len() < PATTERN_BLOCK_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block.truncate(PATTERN_BLOCK_BYTES);
    block
}

/// Fill `buf` with the file content that starts at `offset`.
pub fn fill(buf: &mut [u8], offset: u64, base: &[u8]) {
    let block = PATTERN_BLOCK_BYTES as u64;
    let mut i = 0usize;
    while i < buf.len() {
        let o = offset + i as u64;
        let in_block = (o % block) as usize;
        let n = (PATTERN_BLOCK_BYTES - in_block).min(buf.len() - i);
        let (Some(dst), Some(src)) = (buf.get_mut(i..i + n), base.get(in_block..in_block + n)) else {
            return;
        };
        dst.copy_from_slice(src);
        let stamp = (o / block).to_le_bytes();
        for k in in_block..STAMP_BYTES.min(in_block + n) {
            if let (Some(d), Some(s)) = (dst.get_mut(k - in_block), stamp.get(k)) {
                *d = *s;
            }
        }
        i += n;
    }
}

/// `size.passes` times: WRITE then READ `size.file_bytes` of a new file
/// `name` under `parent`, removed afterwards. Returns `write_mib_per_s` and
/// `read_mib_per_s`, each the median pass (with min and max). The chunk is
/// clamped to the server's FSINFO wtmax/rtmax. `budget.count` bounds the
/// calls of each pass; its deadline bounds all passes.
pub async fn write_read(
    s: &mut Session,
    root: &nfs_fh3,
    parent: &nfs_fh3,
    name: &str,
    size: DataSize,
    budget: &Budget,
) -> Result<Vec<MetricLine>, BenchError> {
    let chunks = chunk_sizes(s, root, &size).await?;
    let base = base_block();
    let mut passes = Vec::with_capacity(size.passes as usize);
    while passes.len() < size.passes as usize && !budget.expired() {
        let fh = s.create_handle(parent, name).await?;
        let local = size.local_dir.as_ref().map(|d| d.join(name));
        let pass = write_then_read(s, &fh, size.file_bytes, chunks, &base, local, budget).await;
        s.remove(parent, name).await?;
        passes.push(pass?);
    }
    Ok(rate_lines(&passes, &size, chunks))
}

/// Checks `size`; returns the (WRITE, READ) chunks, clamped to the
/// server's FSINFO wtmax and rtmax.
pub(super) async fn chunk_sizes(s: &mut Session, root: &nfs_fh3, size: &DataSize) -> Result<(u32, u32), BenchError> {
    if size.file_bytes > FILE_BYTES_MAX || size.chunk_bytes == 0 || size.chunk_bytes > CHUNK_BYTES_MAX {
        return Err(BenchError::Verify("file or chunk size out of range".into()));
    }
    if size.passes == 0 || size.passes > PASSES_MAX {
        return Err(BenchError::Verify(format!("passes must be 1..={PASSES_MAX}")));
    }
    let (rtmax, wtmax) = s.fsinfo_max(root).await?;
    Ok((size.chunk_bytes.min(wtmax).max(1), size.chunk_bytes.min(rtmax).max(1)))
}

/// Median (lower middle), min and max of `rates`, formatted; `None` if empty.
pub(super) fn median_min_max(rates: &mut [f64]) -> Option<(String, String, String)> {
    rates.sort_by(f64::total_cmp);
    let median = *rates.get(rates.len().checked_sub(1)? / 2)?;
    Some((format!("{median:.2}"), format!("{:.2}", rates.first()?), format!("{:.2}", rates.last()?)))
}

pub(super) fn mib_per_s(bytes: u64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / MIB_BYTES / secs
    }
}

fn rate_lines(passes: &[Pass], size: &DataSize, (wchunk, rchunk): (u32, u32)) -> Vec<MetricLine> {
    let mut w: Vec<f64> = passes.iter().map(|p| mib_per_s(p.written, p.write_time)).collect();
    let mut r: Vec<f64> = passes.iter().map(|p| mib_per_s(p.read, p.read_time)).collect();
    let (Some(wm), Some(rm), Some(last)) = (median_min_max(&mut w), median_min_max(&mut r), passes.last()) else {
        return Vec::new();
    };
    let n = u32::try_from(passes.len()).unwrap_or(u32::MAX);
    let all_written = passes.iter().all(|p| p.written == size.file_bytes);
    let all_read = passes.iter().all(|p| p.read == p.written);
    let mut cold: Vec<f64> = passes.iter().filter_map(|p| p.cold.map(|(b, t)| mib_per_s(b, t))).collect();
    let all_cold = passes.iter().all(|p| p.cold.is_some_and(|(b, _)| b == p.written));
    let cold_line = median_min_max(&mut cold).map(|c| {
        MetricLine::new("read_cold_mib_per_s")
            .field("value", c.0)
            .field("min", c.1)
            .field("max", c.2)
            .field("passes", n)
            .field("chunk", rchunk)
            .field("complete", complete_flag(u64::from(n), u64::from(size.passes)) & u8::from(all_cold))
    });
    let mut lines = vec![
        MetricLine::new("write_mib_per_s")
            .field("value", wm.0)
            .field("min", wm.1)
            .field("max", wm.2)
            .field("passes", n)
            .field("bytes", last.written)
            .field("chunk", wchunk)
            .field("commit_us", last.commit_time.as_micros())
            .field("complete", complete_flag(u64::from(n), u64::from(size.passes)) & u8::from(all_written)),
        MetricLine::new("read_mib_per_s")
            .field("value", rm.0)
            .field("min", rm.1)
            .field("max", rm.2)
            .field("passes", n)
            .field("bytes", last.read)
            .field("chunk", rchunk)
            .field("complete", complete_flag(u64::from(n), u64::from(size.passes)) & u8::from(all_read)),
    ];
    lines.extend(cold_line);
    lines
}

/// Drops the page cache of `path` (all of it; DONTNEED through dd).
pub(super) fn drop_page_cache(path: &std::path::Path) -> Result<(), BenchError> {
    let mut arg = std::ffi::OsString::from("if=");
    arg.push(path);
    let status = Command::new("dd")
        .arg(arg)
        .args(["iflag=nocache", "count=0", "status=none"])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| BenchError::Verify(format!("dd to drop the page cache of {}: {e}", path.display())))?;
    if !status.success() {
        return Err(BenchError::Verify(format!("dd to drop the page cache of {}: {status}", path.display())));
    }
    Ok(())
}

async fn write_then_read(
    s: &mut Session,
    fh: &nfs_fh3,
    file_bytes: u64,
    (wchunk, rchunk): (u32, u32),
    base: &[u8],
    local: Option<PathBuf>,
    budget: &Budget,
) -> Result<Pass, BenchError> {
    let (written, write_time, commit_time) = write_file(s, fh, file_bytes, wchunk, base, budget).await?;
    let (read, read_time) = read_file(s, fh, written, rchunk, base, budget).await?;
    let cold = match local {
        Some(path) => {
            drop_page_cache(&path)?;
            Some(read_file(s, fh, written, rchunk, base, budget).await?)
        }
        None => None,
    };
    Ok(Pass { written, write_time, commit_time, read, read_time, cold })
}

/// Returns (bytes written, time incl. COMMIT, COMMIT time).
async fn write_file(
    s: &mut Session,
    fh: &nfs_fh3,
    file_bytes: u64,
    chunk: u32,
    base: &[u8],
    budget: &Budget,
) -> Result<(u64, Duration, Duration), BenchError> {
    let mut buf = vec![0u8; chunk as usize];
    let mut offset = 0u64;
    let mut verf = None;
    let mut calls = 0u32;
    let start = Instant::now();
    while offset < file_bytes && calls < budget.count && !budget.expired() {
        let len = usize::try_from((file_bytes - offset).min(u64::from(chunk))).unwrap_or(buf.len()).min(buf.len());
        let data = buf.get_mut(..len).ok_or_else(|| BenchError::Verify("chunk slice".into()))?;
        fill(data, offset, base);
        let w = s.write(fh, offset, data, stable_how::UNSTABLE).await?;
        if w.count == 0 || w.count as usize > len {
            return Err(BenchError::Verify(format!("WRITE at {offset} wrote {} of {len} bytes", w.count)));
        }
        if *verf.get_or_insert(w.verf) != w.verf {
            return Err(BenchError::Verify("write verifier changed during the run (server restarted?)".into()));
        }
        offset += u64::from(w.count);
        calls += 1;
    }
    let commit_start = Instant::now();
    let cverf = s.commit(fh).await?;
    let commit = commit_start.elapsed();
    let elapsed = start.elapsed();
    if verf.is_some_and(|v| v != cverf) {
        return Err(BenchError::Verify("COMMIT verifier differs from WRITE verifier".into()));
    }
    Ok((offset, elapsed, commit))
}

/// Returns (bytes read and verified, time).
async fn read_file(
    s: &mut Session,
    fh: &nfs_fh3,
    file_bytes: u64,
    chunk: u32,
    base: &[u8],
    budget: &Budget,
) -> Result<(u64, Duration), BenchError> {
    let mut expected = vec![0u8; chunk as usize];
    let mut offset = 0u64;
    let mut calls = 0u32;
    let start = Instant::now();
    while offset < file_bytes && calls < budget.count && !budget.expired() {
        let want = (file_bytes - offset).min(u64::from(chunk));
        let want32 = u32::try_from(want).unwrap_or(chunk);
        let (data, eof) = s.read(fh, offset, want32).await?;
        let exp = expected
            .get_mut(..data.len())
            .ok_or_else(|| BenchError::Verify(format!("READ at {offset} returned more than asked")))?;
        fill(exp, offset, base);
        if data.as_slice() != &exp[..] {
            return Err(BenchError::Verify(format!("READ at {offset}: content differs from what was written")));
        }
        offset += data.len() as u64;
        calls += 1;
        if data.is_empty() || (eof && offset < file_bytes) {
            return Err(BenchError::Verify(format!("READ at {offset}: short file (eof={eof})")));
        }
    }
    Ok((offset, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_rates() {
        let mut v = vec![3.0, 1.0, 2.0, 10.0];
        assert_eq!(median_min_max(&mut v), Some(("2.00".into(), "1.00".into(), "10.00".into())));
        assert_eq!(median_min_max(&mut []), None);
        assert_eq!(mib_per_s(1024 * 1024, Duration::from_millis(500)), 2.0);
        assert_eq!(mib_per_s(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn pattern_is_position_dependent_and_chunking_invariant() {
        let base = base_block();
        let mut whole = vec![0u8; 3 * PATTERN_BLOCK_BYTES + 100];
        fill(&mut whole, 0, &base);
        // Same bytes when produced in odd-sized pieces.
        let mut pieces = vec![0u8; whole.len()];
        let mut at = 0usize;
        for n in [5usize, 4091, 1, 8000, 4000] {
            let end = (at + n).min(pieces.len());
            fill(&mut pieces[at..end], at as u64, &base);
            at = end;
        }
        assert_eq!(at, whole.len());
        assert_eq!(whole, pieces);
        // Block k starts with k; blocks differ from each other.
        assert_eq!(&whole[PATTERN_BLOCK_BYTES..PATTERN_BLOCK_BYTES + 8], &1u64.to_le_bytes());
        assert_ne!(&whole[..PATTERN_BLOCK_BYTES], &whole[PATTERN_BLOCK_BYTES..2 * PATTERN_BLOCK_BYTES]);
    }
}
