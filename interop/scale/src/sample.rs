//! GETATTR of a random sample of the saved handles (typically on the node
//! that took over after a failover). The sample is drawn in one pass over
//! the handle file (reservoir sampling, a seeded xorshift generator so a run
//! can be repeated), then each handle is asked once: OK (and whether the
//! returned fileid is the saved one), STALE, or any other status or error.

use std::path::Path;
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{nfs_fh3, nfsstat3};
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use crate::client::Target;
use crate::handles::{HandleReader, Saved};
use crate::ScaleError;

/// Largest sample.
pub const SAMPLE_MAX: usize = 1_000_000;

/// Counts of one sample run.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// Records in the handle file.
    pub saved: u64,
    pub asked: u64,
    pub ok: u64,
    /// OK but a different fileid than READDIRPLUS returned.
    pub wrong_fileid: u64,
    pub stale: u64,
    pub other: u64,
    /// The first few other outcomes, for the report.
    pub other_examples: Vec<String>,
    pub seconds: f64,
    /// False when the deadline stopped it.
    pub complete: bool,
}

/// Most `other_examples` kept.
const EXAMPLES_MAX: usize = 5;

/// xorshift64*: enough to draw a sample, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (n > 0; the modulo bias is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Up to `size` records drawn uniformly from the file (Algorithm R), and
/// the file's record count.
pub fn draw(path: &Path, size: usize, seed: u64) -> Result<(Vec<Saved>, u64), ScaleError> {
    let size = size.min(SAMPLE_MAX);
    let mut rng = Rng::new(seed);
    let mut reader = HandleReader::open(path)?;
    let mut sample: Vec<Saved> = Vec::with_capacity(size);
    let mut seen = 0u64;
    while let Some(rec) = reader.next_record()? {
        seen += 1;
        if sample.len() < size {
            sample.push(rec);
        } else if size > 0 {
            let j = rng.below(seen);
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| sample.get_mut(j)) {
                *slot = rec;
            }
        }
    }
    Ok((sample, seen))
}

/// GETATTR every drawn handle on `target`, within `limit`.
pub async fn check(
    target: &Target,
    path: &Path,
    size: usize,
    seed: u64,
    limit: Duration,
) -> Result<Sampled, ScaleError> {
    let start = Instant::now();
    let (sample, saved) = draw(path, size, seed)?;
    let (_, mut session) = target.mount().await?;
    let mut out = Sampled { saved, complete: true, ..Sampled::default() };
    for rec in &sample {
        if start.elapsed() >= limit {
            out.complete = false;
            break;
        }
        out.asked += 1;
        let fh = nfs_fh3 { data: Opaque::owned(rec.fh.clone()) };
        let other = match session.getattr(&fh).await {
            Ok(Ok(a)) => {
                out.ok += 1;
                if a.fileid != rec.fileid {
                    out.wrong_fileid += 1;
                }
                continue;
            }
            Ok(Err(nfsstat3::NFS3ERR_STALE)) => {
                out.stale += 1;
                continue;
            }
            Ok(Err(status)) => format!("{status:?}"),
            Err(e) => {
                // The session is unusable after a transport error: open another.
                let text = e.to_string();
                session = target.session().await?;
                text
            }
        };
        out.other += 1;
        if out.other_examples.len() < EXAMPLES_MAX {
            out.other_examples.push(other);
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handles::HandleWriter;

    #[test]
    fn draws_a_sample_of_the_asked_size_from_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("hanfs-scale-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.bin");
        let mut w = HandleWriter::create(&path).unwrap();
        for i in 0..10_000u64 {
            w.push(i, &i.to_le_bytes()).unwrap();
        }
        w.finish().unwrap();
        let (s, seen) = draw(&path, 100, 42).unwrap();
        assert_eq!(seen, 10_000);
        assert_eq!(s.len(), 100);
        // Reservoir sampling reaches past the first records.
        assert!(s.iter().any(|r| r.fileid >= 5_000), "sample stuck at the file's start");
        let (all, _) = draw(&path, 20_000, 1).unwrap();
        assert_eq!(all.len(), 10_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
