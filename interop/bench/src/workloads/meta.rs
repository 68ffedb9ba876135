//! Per-call latency mode (one call in flight, one connection): sequential
//! CREATE, SETATTR, RENAME and REMOVE in a fresh directory; a populated
//! directory (`Fixture`) for LOOKUP and GETATTR latency and full READDIRPLUS
//! listings. Every line has the per-call percentiles and `ops_per_s`, the
//! calls per second of the sequential loop.

use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{cookieverf3, nfs_fh3};

use super::complete_flag;
use crate::client::Session;
use crate::stats::{per_second, MetricLine, Samples};
use crate::{BenchError, Budget};

/// Bound on READDIRPLUS calls in one listing (a server that never says eof).
pub const LISTING_PAGES_MAX: u32 = 100_000;
/// Bound on names one listing may return (2x the largest fixture plus slack).
pub const LISTING_NAMES_MAX: usize = 2_000_000;
/// Time allowed for cleanup (REMOVE/RMDIR) after a workload, in seconds.
pub const CLEANUP_SECONDS: u64 = 120;

/// The mode SETATTR sets (the files are created 0644, so it is a change).
pub const SETATTR_MODE: u32 = 0o600;

/// File name `i` of a workload directory.
pub fn file_name(i: u32) -> String {
    format!("f{i:06}")
}

/// The name RENAME gives file `i`.
pub fn renamed_name(i: u32) -> String {
    format!("r{i:06}")
}

/// One sequential loop's samples and wall time (from `new` to the last `push`).
struct Timed {
    samples: Samples,
    start: Instant,
    end: Instant,
    done: u32,
}

impl Timed {
    fn new(count: u32) -> Timed {
        let now = Instant::now();
        Timed { samples: Samples::with_capacity(count as usize), start: now, end: now, done: 0 }
    }

    fn push(&mut self, since: Instant) {
        self.end = Instant::now();
        self.samples.push(self.end.duration_since(since));
        self.done += 1;
    }

    /// `name` with the summary, `ops_per_s` and `complete`; `None` when empty.
    fn line(&self, name: &str, wanted: u32) -> Option<MetricLine> {
        let sum = self.samples.summary()?;
        Some(
            MetricLine::new(name)
                .summary(&sum)
                .field("ops_per_s", per_second(f64::from(self.done), self.end.duration_since(self.start)))
                .field("complete", complete_flag(self.done.into(), wanted.into())),
        )
    }
}

/// In a fresh directory `dir_name` under `parent`, one call at a time:
/// GUARDED CREATE of up to `budget.count` files, SETATTR (mode) of each,
/// RENAME of each to `renamed_name`, REMOVE of each, then RMDIR. Adds
/// `create_latency_us`, `setattr_latency_us`, `rename_latency_us` and
/// `remove_latency_us` to `lines`, each as soon as its stage is done, so a
/// later failure keeps them. RENAME and REMOVE are also the cleanup: they
/// get `CLEANUP_SECONDS` each and must finish every file.
pub async fn create_cycle(
    s: &mut Session,
    parent: &nfs_fh3,
    dir_name: &str,
    budget: &Budget,
    lines: &mut Vec<MetricLine>,
) -> Result<(), BenchError> {
    let dir = s.mkdir(parent, dir_name).await?;
    let mut creates = Timed::new(budget.count);
    let mut handles = Vec::with_capacity(budget.count as usize);
    while creates.done < budget.count && !budget.expired() {
        let name = file_name(creates.done);
        let t = Instant::now();
        let fh = s.create(&dir, &name).await?;
        creates.push(t);
        handles.push(match fh {
            Some(fh) => fh,
            None => s.lookup(&dir, &name).await?,
        });
    }
    lines.extend(creates.line("create_latency_us", budget.count));
    let n = creates.done;
    let mut sets = Timed::new(n);
    for fh in &handles {
        if budget.expired() {
            break;
        }
        let t = Instant::now();
        s.set_mode(fh, SETATTR_MODE).await?;
        sets.push(t);
    }
    lines.extend(sets.line("setattr_latency_us", n));
    let cleanup = Budget::new(n, Duration::from_secs(CLEANUP_SECONDS));
    let mut renames = Timed::new(n);
    while renames.done < n && !cleanup.expired() {
        let i = renames.done;
        let t = Instant::now();
        s.rename(&dir, &file_name(i), &renamed_name(i)).await?;
        renames.push(t);
    }
    lines.extend(renames.line("rename_latency_us", n));
    let cleanup = Budget::new(n, Duration::from_secs(CLEANUP_SECONDS));
    let mut removes = Timed::new(n);
    while removes.done < renames.done && !cleanup.expired() {
        let t = Instant::now();
        s.remove(&dir, &renamed_name(removes.done)).await?;
        removes.push(t);
    }
    lines.extend(removes.line("remove_latency_us", n));
    if removes.done < n {
        return Err(BenchError::Verify(format!("{dir_name}: cleanup deadline passed")));
    }
    s.rmdir(parent, dir_name).await
}

/// A directory holding `count` empty files named by `file_name`, and their
/// handles (in name order).
pub struct Fixture {
    pub dir: nfs_fh3,
    pub dir_name: String,
    pub count: u32,
    pub handles: Vec<nfs_fh3>,
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
        let mut fixture = Fixture { dir, dir_name: dir_name.to_string(), count: 0, handles: Vec::new() };
        while fixture.count < budget.count {
            if budget.expired() {
                fixture.remove(s, parent).await?;
                return Err(BenchError::Verify(format!("populating {dir_name}: deadline passed")));
            }
            let fh = s.create_handle(&fixture.dir, &file_name(fixture.count)).await?;
            fixture.handles.push(fh);
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

/// Index of the `i`th LOOKUP or GETATTR: a fixed stride through the names so
/// that consecutive calls hit different entries (`STRIDE` is prime).
pub fn stride_index(i: u32, count: u32) -> u32 {
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
    let mut t = Timed::new(budget.count);
    while t.done < budget.count && !budget.expired() {
        let name = file_name(stride_index(t.done, fixture.count));
        let at = Instant::now();
        s.lookup(&fixture.dir, &name).await?;
        t.push(at);
    }
    t.line("lookup_latency_us", budget.count).ok_or_else(|| BenchError::Verify("no LOOKUP finished".into()))
}

/// `budget.count` GETATTRs of the fixture's file handles.
pub async fn getattr_latency(s: &mut Session, fixture: &Fixture, budget: &Budget) -> Result<MetricLine, BenchError> {
    let count = u32::try_from(fixture.handles.len()).unwrap_or(u32::MAX);
    let mut t = Timed::new(budget.count);
    while t.done < budget.count && !budget.expired() {
        let fh = fixture
            .handles
            .get(stride_index(t.done, count) as usize)
            .ok_or_else(|| BenchError::Verify("getattr fixture is empty".into()))?;
        let at = Instant::now();
        s.getattr(fh).await?;
        t.push(at);
    }
    t.line("getattr_latency_us", budget.count).ok_or_else(|| BenchError::Verify("no GETATTR finished".into()))
}

/// READDIRPLUS request sizes, as a client would send them.
#[derive(Debug, Clone, Copy)]
pub struct ListingSize {
    pub dircount: u32,
    pub maxcount: u32,
}

/// One full listing; returns the number of names other than `.` and `..`
/// and the number of calls, and adds each call's latency to `calls`.
async fn list_once(
    s: &mut Session,
    dir: &nfs_fh3,
    size: ListingSize,
    calls: &mut Samples,
) -> Result<(usize, u32), BenchError> {
    let mut cookie = 0u64;
    let mut verf = cookieverf3::default();
    let mut names = 0usize;
    for page in 1..=LISTING_PAGES_MAX {
        let t = Instant::now();
        let p = s.readdirplus(dir, cookie, verf, size.dircount, size.maxcount).await?;
        calls.push(t.elapsed());
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
/// checked to return exactly the fixture's names. Returns
/// `readdirplus_listing_us` (per listing, with the page count) and
/// `readdirplus_latency_us` (per READDIRPLUS call; `ops_per_s` in calls).
pub async fn readdirplus_listing(
    s: &mut Session,
    fixture: &Fixture,
    size: ListingSize,
    budget: &Budget,
) -> Result<Vec<MetricLine>, BenchError> {
    let mut listings = Timed::new(budget.count);
    let mut calls = Timed::new(budget.count);
    let mut pages = 0u32;
    while listings.done < budget.count && !budget.expired() {
        let t = Instant::now();
        let (names, n_pages) = list_once(s, &fixture.dir, size, &mut calls.samples).await?;
        listings.push(t);
        calls.done = calls.done.saturating_add(n_pages);
        calls.end = listings.end;
        if names != fixture.count as usize {
            return Err(BenchError::Verify(format!("listing returned {names} names, expected {}", fixture.count)));
        }
        pages = n_pages;
    }
    let listing = listings.line("readdirplus_listing_us", budget.count);
    let call = calls.line("readdirplus_latency_us", calls.done);
    let (Some(listing), Some(call)) = (listing, call) else {
        return Err(BenchError::Verify("no listing finished".into()));
    };
    Ok(vec![
        listing.field("entries", fixture.count).field("pages", pages).field("maxcount", size.maxcount),
        call.field("pages", pages),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_stride_visits_every_name_once() {
        let count = 2000u32;
        let mut seen = vec![false; count as usize];
        for i in 0..count {
            let idx = stride_index(i, count) as usize;
            assert!(!seen[idx], "index {idx} visited twice");
            seen[idx] = true;
        }
        assert_eq!(stride_index(5, 0), 0);
    }
}
