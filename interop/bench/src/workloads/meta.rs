//! Metadata workloads: sequential CREATE then REMOVE latency in a fresh
//! directory; a populated directory (`Fixture`) for LOOKUP latency and
//! full READDIRPLUS listings.

use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{cookieverf3, nfs_fh3};

use super::complete_flag;
use crate::client::Session;
use crate::stats::{MetricLine, Samples};
use crate::{BenchError, Budget};

/// Bound on READDIRPLUS calls in one listing (a server that never says eof).
pub const LISTING_PAGES_MAX: u32 = 100_000;
/// Bound on names one listing may return (2x the largest fixture plus slack).
pub const LISTING_NAMES_MAX: usize = 2_000_000;
/// Time allowed for cleanup (REMOVE/RMDIR) after a workload, in seconds.
pub const CLEANUP_SECONDS: u64 = 120;

/// File name `i` of a workload directory.
pub fn file_name(i: u32) -> String {
    format!("f{i:06}")
}

/// Sequential GUARDED CREATE of up to `budget.count` files in a fresh
/// directory `dir_name` under `parent`, then REMOVE of each, then RMDIR.
/// Returns `create_latency_us` and `remove_latency_us`.
pub async fn create_remove(
    s: &mut Session,
    parent: &nfs_fh3,
    dir_name: &str,
    budget: &Budget,
) -> Result<Vec<MetricLine>, BenchError> {
    let dir = s.mkdir(parent, dir_name).await?;
    let mut creates = Samples::with_capacity(budget.count as usize);
    let mut created = 0u32;
    while created < budget.count && !budget.expired() {
        let name = file_name(created);
        let t = Instant::now();
        s.create(&dir, &name).await?;
        creates.push(t.elapsed());
        created += 1;
    }
    let cleanup = Budget::new(created, Duration::from_secs(CLEANUP_SECONDS));
    let mut removes = Samples::with_capacity(created as usize);
    let mut removed = 0u32;
    while removed < created && !cleanup.expired() {
        let name = file_name(removed);
        let t = Instant::now();
        s.remove(&dir, &name).await?;
        removes.push(t.elapsed());
        removed += 1;
    }
    if removed == created {
        s.rmdir(parent, dir_name).await?;
    }
    let mut lines = Vec::new();
    if let Some(sum) = creates.summary() {
        lines.push(
            MetricLine::new("create_latency_us")
                .summary(&sum)
                .field("complete", complete_flag(created.into(), budget.count.into())),
        );
    }
    if let Some(sum) = removes.summary() {
        lines.push(
            MetricLine::new("remove_latency_us")
                .summary(&sum)
                .field("complete", complete_flag(removed.into(), created.into())),
        );
    }
    Ok(lines)
}

/// A directory holding `count` empty files named by `file_name`.
pub struct Fixture {
    pub dir: nfs_fh3,
    pub dir_name: String,
    pub count: u32,
}

impl Fixture {
    /// MKDIR `dir_name` and CREATE `count` files in it (not timed). Fails if
    /// the budget's deadline passes first (the partial directory is removed).
    pub async fn populate(
        s: &mut Session,
        parent: &nfs_fh3,
        dir_name: &str,
        budget: &Budget,
    ) -> Result<Fixture, BenchError> {
        let dir = s.mkdir(parent, dir_name).await?;
        let mut fixture = Fixture { dir, dir_name: dir_name.to_string(), count: 0 };
        while fixture.count < budget.count {
            if budget.expired() {
                fixture.remove(s, parent).await?;
                return Err(BenchError::Verify(format!("populating {dir_name}: deadline passed")));
            }
            s.create(&fixture.dir, &file_name(fixture.count)).await?;
            fixture.count += 1;
        }
        Ok(fixture)
    }

    /// REMOVE every file, then RMDIR (bounded by `CLEANUP_SECONDS`).
    pub async fn remove(&self, s: &mut Session, parent: &nfs_fh3) -> Result<(), BenchError> {
        let cleanup = Budget::new(self.count, Duration::from_secs(CLEANUP_SECONDS));
        for i in 0..self.count {
            if cleanup.expired() {
                return Err(BenchError::Verify(format!("cleanup of {}: deadline passed", self.dir_name)));
            }
            s.remove(&self.dir, &file_name(i)).await?;
        }
        s.rmdir(parent, &self.dir_name).await
    }
}

/// Index of the `i`th LOOKUP: a fixed stride through the names so that
/// consecutive lookups hit different entries (`STRIDE` is prime).
fn lookup_index(i: u32, count: u32) -> u32 {
    const STRIDE: u64 = 7919;
    if count == 0 {
        return 0;
    }
    u32::try_from((u64::from(i) * STRIDE) % u64::from(count)).unwrap_or(0)
}

/// `budget.count` LOOKUPs of existing names in the fixture.
pub async fn lookup_latency(s: &mut Session, fixture: &Fixture, budget: &Budget) -> Result<MetricLine, BenchError> {
    if fixture.count == 0 {
        return Err(BenchError::Verify("lookup fixture is empty".into()));
    }
    let mut samples = Samples::with_capacity(budget.count as usize);
    let mut done = 0u32;
    while done < budget.count && !budget.expired() {
        let name = file_name(lookup_index(done, fixture.count));
        let t = Instant::now();
        s.lookup(&fixture.dir, &name).await?;
        samples.push(t.elapsed());
        done += 1;
    }
    let sum = samples.summary().ok_or_else(|| BenchError::Verify("no LOOKUP finished".into()))?;
    Ok(MetricLine::new("lookup_latency_us")
        .summary(&sum)
        .field("complete", complete_flag(done.into(), budget.count.into())))
}

/// READDIRPLUS request sizes, as a client would send them.
#[derive(Debug, Clone, Copy)]
pub struct ListingSize {
    pub dircount: u32,
    pub maxcount: u32,
}

/// One full listing; returns the number of names other than `.` and `..`.
async fn list_once(s: &mut Session, dir: &nfs_fh3, size: ListingSize) -> Result<(usize, u32), BenchError> {
    let mut cookie = 0u64;
    let mut verf = cookieverf3::default();
    let mut names = 0usize;
    for page in 1..=LISTING_PAGES_MAX {
        let p = s.readdirplus(dir, cookie, verf, size.dircount, size.maxcount).await?;
        names += p.names.iter().filter(|n| n.as_slice() != b"." && n.as_slice() != b"..").count();
        if names > LISTING_NAMES_MAX {
            return Err(BenchError::Verify("READDIRPLUS returned too many names".into()));
        }
        if p.eof {
            return Ok((names, page));
        }
        if p.names.is_empty() {
            return Err(BenchError::Verify("READDIRPLUS page without entries and without eof".into()));
        }
        cookie = p.last_cookie;
        verf = p.cookieverf;
    }
    Err(BenchError::Verify("READDIRPLUS never reached eof".into()))
}

/// Up to `budget.count` full READDIRPLUS listings of the fixture, each
/// checked to return exactly the fixture's names. Metric in microseconds
/// per listing (`readdirplus_listing_us`), with the page count.
pub async fn readdirplus_listing(
    s: &mut Session,
    fixture: &Fixture,
    size: ListingSize,
    budget: &Budget,
) -> Result<MetricLine, BenchError> {
    let mut samples = Samples::with_capacity(budget.count as usize);
    let mut pages = 0u32;
    let mut done = 0u32;
    while done < budget.count && !budget.expired() {
        let t = Instant::now();
        let (names, n_pages) = list_once(s, &fixture.dir, size).await?;
        samples.push(t.elapsed());
        if names != fixture.count as usize {
            return Err(BenchError::Verify(format!("listing returned {names} names, expected {}", fixture.count)));
        }
        pages = n_pages;
        done += 1;
    }
    let sum = samples.summary().ok_or_else(|| BenchError::Verify("no listing finished".into()))?;
    Ok(MetricLine::new("readdirplus_listing_us")
        .summary(&sum)
        .field("entries", fixture.count)
        .field("pages", pages)
        .field("maxcount", size.maxcount)
        .field("complete", complete_flag(done.into(), budget.count.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_stride_visits_every_name_once() {
        let count = 2000u32;
        let mut seen = vec![false; count as usize];
        for i in 0..count {
            let idx = lookup_index(i, count) as usize;
            assert!(!seen[idx], "index {idx} visited twice");
            seen[idx] = true;
        }
        assert_eq!(lookup_index(5, 0), 0);
    }
}
