//! The sequential data workload with `--inflight` calls in flight, as the
//! kernel client's writeback and readahead keep many WRITEs and READs
//! outstanding on one connection: WRITE a new file in fixed chunks
//! (UNSTABLE; call i writes chunk i), then one COMMIT, both timed; READ it
//! back with as many in flight and check every byte (warm); when the file is
//! reachable locally, drop its page cache and READ it again (cold). Same
//! content, chunks and passes as `data::write_read` (one call in flight).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{nfs_fh3, stable_how};

use super::complete_flag;
use super::data::{base_block, chunk_sizes, drop_page_cache, fill, median_min_max, mib_per_s, DataSize};
use super::inflight::{drive, Lanes};
use crate::client::Session;
use crate::stats::MetricLine;
use crate::{BenchError, Budget};

/// Files up to this size are generated once, before any timing, and sent
/// and checked from memory, so the client spends its CPU on the calls (two
/// cores here are shared with the server); larger ones per call.
const CONTENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// The file's content: the pattern block, and the whole file when it is
/// small enough to hold.
struct Content {
    block: Vec<u8>,
    whole: Option<Vec<u8>>,
}

impl Content {
    fn new(file_bytes: u64) -> Content {
        let block = base_block();
        let whole = (file_bytes <= CONTENT_BYTES_MAX).then(|| {
            let mut w = vec![0u8; usize::try_from(file_bytes).unwrap_or(0)];
            fill(&mut w, 0, &block);
            w
        });
        Content { block, whole }
    }

    /// The `len` bytes at `offset`: from memory, or generated.
    fn chunk(&self, offset: u64, len: usize) -> Cow<'_, [u8]> {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.whole.as_ref().and_then(|w| w.get(at..at.saturating_add(len))) {
            Some(data) => Cow::Borrowed(data),
            None => {
                let mut data = vec![0u8; len];
                fill(&mut data, offset, &self.block);
                Cow::Owned(data)
            }
        }
    }
}

/// What one pass measured: bytes and time of each stage.
struct Pass {
    written: u64,
    write_time: Duration,
    commit_time: Duration,
    read: (u64, Duration),
    cold: Option<(u64, Duration)>,
}

/// The file's geometry: its size and the chunk of each call.
#[derive(Clone, Copy)]
struct Layout {
    file_bytes: u64,
    chunk: u32,
}

impl Layout {
    fn calls(self) -> Result<u32, BenchError> {
        u32::try_from(self.file_bytes.div_ceil(u64::from(self.chunk)))
            .map_err(|_| BenchError::Verify("too many chunks".into()))
    }

    /// Offset and length of chunk `i`.
    fn chunk(self, i: u32) -> (u64, usize) {
        let offset = u64::from(i) * u64::from(self.chunk);
        let len = self.file_bytes.saturating_sub(offset).min(u64::from(self.chunk));
        (offset, usize::try_from(len).unwrap_or(0))
    }
}

/// `size.passes` times on a new file `name` under `parent` (removed after
/// each pass): returns `write_inflight_mib_per_s`, `read_inflight_mib_per_s`
/// and (with `size.local_dir`) `read_cold_inflight_mib_per_s`, each the
/// median pass with min and max. Every stage gets `time`.
pub async fn write_read(
    lanes: &Lanes,
    s: &mut Session,
    root: &nfs_fh3,
    parent: &nfs_fh3,
    name: &str,
    size: DataSize,
    time: Duration,
) -> Result<Vec<MetricLine>, BenchError> {
    let (wchunk, rchunk) = chunk_sizes(s, root, &size).await?;
    let base = Arc::new(Content::new(size.file_bytes));
    let deadline = Instant::now() + time;
    let mut passes = Vec::new();
    while passes.len() < size.passes as usize && Instant::now() < deadline {
        let fh = Arc::new(s.create_handle(parent, name).await?);
        let local = size.local_dir.as_ref().map(|d| d.join(name));
        let pass = one_pass(lanes, &fh, size.file_bytes, (wchunk, rchunk), &base, local, time).await;
        s.remove(parent, name).await?;
        passes.push(pass?);
    }
    Ok(lines(lanes, &passes, &size, (wchunk, rchunk)))
}

async fn one_pass(
    lanes: &Lanes,
    fh: &Arc<nfs_fh3>,
    file_bytes: u64,
    (wchunk, rchunk): (u32, u32),
    base: &Arc<Content>,
    local: Option<PathBuf>,
    time: Duration,
) -> Result<Pass, BenchError> {
    let (written, write_time, commit_time) =
        write_file(lanes, fh, Layout { file_bytes, chunk: wchunk }, base, time).await?;
    let read_layout = Layout { file_bytes: written, chunk: rchunk };
    let read = read_file(lanes, fh, read_layout, base, time).await?;
    let cold = match local {
        Some(path) => {
            drop_page_cache(&path)?;
            Some(read_file(lanes, fh, read_layout, base, time).await?)
        }
        None => None,
    };
    Ok(Pass { written, write_time, commit_time, read, cold })
}

/// Returns (bytes written, time incl. COMMIT, COMMIT time). Every WRITE must
/// be whole, and every verifier the same as COMMIT's.
async fn write_file(
    lanes: &Lanes,
    fh: &Arc<nfs_fh3>,
    layout: Layout,
    base: &Arc<Content>,
    time: Duration,
) -> Result<(u64, Duration, Duration), BenchError> {
    let budget = Budget::new(layout.calls()?, time);
    let start = Instant::now();
    let (f, b) = (Arc::clone(fh), Arc::clone(base));
    let d = drive(lanes, &budget, move |p, i| {
        let (f, b) = (Arc::clone(&f), Arc::clone(&b));
        async move {
            let (offset, len) = layout.chunk(i);
            let w = p.write(&f, offset, &b.chunk(offset, len), stable_how::UNSTABLE).await?;
            if w.count as usize != len {
                return Err(BenchError::Verify(format!("WRITE at {offset} wrote {} of {len} bytes", w.count)));
            }
            Ok((u64::from(w.count), w.verf))
        }
    })
    .await?;
    let commit_start = Instant::now();
    let pipe = lanes.first()?;
    let cverf = pipe.commit(fh).await?;
    let commit = commit_start.elapsed();
    let elapsed = start.elapsed();
    if d.outputs.iter().any(|(_, (_, v))| *v != cverf) {
        return Err(BenchError::Verify("a WRITE verifier differs from COMMIT's (server restarted?)".into()));
    }
    Ok((d.outputs.iter().map(|(_, (n, _))| n).sum(), elapsed, commit))
}

/// Returns (bytes read and verified, time). Every READ must be whole.
async fn read_file(
    lanes: &Lanes,
    fh: &Arc<nfs_fh3>,
    layout: Layout,
    base: &Arc<Content>,
    time: Duration,
) -> Result<(u64, Duration), BenchError> {
    let budget = Budget::new(layout.calls()?, time);
    let (f, b) = (Arc::clone(fh), Arc::clone(base));
    let d = drive(lanes, &budget, move |p, i| {
        let (f, b) = (Arc::clone(&f), Arc::clone(&b));
        async move {
            let (offset, len) = layout.chunk(i);
            let want = u32::try_from(len).map_err(|_| BenchError::Verify("chunk over 4 GiB".into()))?;
            let (data, _eof) = p.read(&f, offset, want).await?;
            if data.len() != len {
                return Err(BenchError::Verify(format!("READ at {offset}: {} of {len} bytes", data.len())));
            }
            if data != *b.chunk(offset, len) {
                return Err(BenchError::Verify(format!("READ at {offset}: content differs from what was written")));
            }
            Ok(len as u64)
        }
    })
    .await?;
    Ok((d.outputs.iter().map(|(_, n)| n).sum(), d.elapsed))
}

fn lines(lanes: &Lanes, passes: &[Pass], size: &DataSize, (wchunk, rchunk): (u32, u32)) -> Vec<MetricLine> {
    let n = u32::try_from(passes.len()).unwrap_or(u32::MAX);
    let complete = |all: bool| complete_flag(u64::from(n), u64::from(size.passes)) & u8::from(all);
    let line = |name: &str, rates: &mut Vec<f64>, chunk: u32, all: bool| {
        median_min_max(rates).map(|(median, min, max)| {
            MetricLine::new(name)
                .field("value", median)
                .field("min", min)
                .field("max", max)
                .field("passes", n)
                .field("chunk", chunk)
                .field("inflight", lanes.inflight())
                .field("connections", lanes.connections())
                .field("complete", complete(all))
        })
    };
    let mut w: Vec<f64> = passes.iter().map(|p| mib_per_s(p.written, p.write_time)).collect();
    let mut r: Vec<f64> = passes.iter().map(|p| mib_per_s(p.read.0, p.read.1)).collect();
    let mut c: Vec<f64> = passes.iter().filter_map(|p| p.cold.map(|(b, t)| mib_per_s(b, t))).collect();
    let commit_us = passes.last().map_or(0, |p| p.commit_time.as_micros());
    let all_written = passes.iter().all(|p| p.written == size.file_bytes);
    let all_read = passes.iter().all(|p| p.read.0 == p.written);
    let all_cold = passes.iter().all(|p| p.cold.is_some_and(|(b, _)| b == p.written));
    let mut out = Vec::new();
    out.extend(line("write_inflight_mib_per_s", &mut w, wchunk, all_written).map(|l| l.field("commit_us", commit_us)));
    out.extend(line("read_inflight_mib_per_s", &mut r, rchunk, all_read));
    out.extend(line("read_cold_inflight_mib_per_s", &mut c, rchunk, all_cold));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_exactly() {
        let l = Layout { file_bytes: 10, chunk: 4 };
        assert_eq!(l.calls().unwrap(), 3);
        assert_eq!((0..3).map(|i| l.chunk(i)).collect::<Vec<_>>(), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(l.chunk(3), (12, 0));
        assert_eq!(Layout { file_bytes: 0, chunk: 4 }.calls().unwrap(), 0);
    }
}
