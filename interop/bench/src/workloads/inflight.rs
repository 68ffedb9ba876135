//! Throughput mode: `inflight` calls in flight at once, spread over
//! `connections` pipelined connections (`pipe::Pipe`; one connection by
//! default, as the kernel client keeps its slots on one). Each slot is a task
//! that claims the next call number, makes the call, and claims again, so
//! exactly `inflight` calls are outstanding until the count runs out. Every
//! workload reports `<op>_ops_per_s` (value = calls/s over the wall time of
//! the loop) with the per-call p50/p99 latency.
//!
//! `metadata`: in a fresh directory, CREATE `count` files, SETATTR (mode)
//! each, RENAME each to a new name, REMOVE each, RMDIR. `lookup`, `getattr`
//! and `readdirplus` use the shared populated directory (`meta::Fixture`).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{cookieverf3, nfs_fh3};

use super::complete_flag;
use super::meta::{file_name, renamed_name, Fixture, ListingSize, SETATTR_MODE};
use crate::client::{Mounted, Session, Target};
use crate::pipe::Pipe;
use crate::stats::{per_second, MetricLine, Samples};
use crate::{BenchError, Budget};

/// Most calls in flight one run keeps.
pub const INFLIGHT_MAX: u32 = 1024;
/// Most connections the throughput mode opens.
pub const CONNECTIONS_MAX: u32 = 256;

/// The connections and the number of slots.
pub struct Lanes {
    pipes: Vec<Arc<Pipe>>,
    inflight: u32,
}

impl Lanes {
    /// Opens `connections` pipes (clamped to `inflight`), not timed.
    pub async fn open(
        target: &Target,
        mounted: &Mounted,
        inflight: u32,
        connections: u32,
    ) -> Result<Lanes, BenchError> {
        if inflight == 0 || inflight > INFLIGHT_MAX {
            return Err(BenchError::Verify(format!("inflight must be 1..={INFLIGHT_MAX}")));
        }
        if connections == 0 || connections > CONNECTIONS_MAX {
            return Err(BenchError::Verify(format!("connections must be 1..={CONNECTIONS_MAX}")));
        }
        let mut pipes = Vec::new();
        for _ in 0..connections.min(inflight) {
            pipes.push(Arc::new(Pipe::connect(target, mounted).await?));
        }
        Ok(Lanes { pipes, inflight })
    }

    pub fn connections(&self) -> usize {
        self.pipes.len()
    }

    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// The first connection, for a call made alone (a COMMIT after the WRITEs).
    pub fn first(&self) -> Result<&Arc<Pipe>, BenchError> {
        self.pipes.first().ok_or_else(|| BenchError::Verify("no connection open".into()))
    }
}

/// What one driven loop did: per-call latencies, the value each call
/// returned (by call number), and the wall time.
pub struct Driven<T> {
    pub samples: Samples,
    pub outputs: Vec<(u32, T)>,
    pub elapsed: Duration,
}

impl<T> Driven<T> {
    pub fn done(&self) -> u32 {
        u32::try_from(self.samples.len()).unwrap_or(u32::MAX)
    }
}

/// Calls `op(pipe, i)` for i in 0..`budget.count`, `lanes.inflight` at a
/// time. No call starts after the deadline; a claimed call number is always
/// called, so the calls done are exactly 0..done. The first error ends the
/// loop (the other slots stop claiming) and is returned.
pub async fn drive<T, F, Fut>(lanes: &Lanes, budget: &Budget, op: F) -> Result<Driven<T>, BenchError>
where
    T: Send + 'static,
    F: Fn(Arc<Pipe>, u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, BenchError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outputs = Arc::new(Mutex::new(Vec::with_capacity(budget.count as usize)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for slot in 0..lanes.inflight {
        let Some(pipe) = lanes.pipes.get(slot as usize % lanes.pipes.len().max(1)).cloned() else {
            return Err(BenchError::Verify("no connection open".into()));
        };
        let (op, next, stop, outputs, budget) =
            (Arc::clone(&op), Arc::clone(&next), Arc::clone(&stop), Arc::clone(&outputs), *budget);
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            while !budget.expired() && !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= budget.count {
                    break;
                }
                let t = Instant::now();
                let out = match op(Arc::clone(&pipe), i).await {
                    Ok(out) => out,
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                };
                samples.push(t.elapsed());
                outputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, out));
            }
            Ok(samples)
        }));
    }
    let mut all = Samples::with_capacity(budget.count as usize);
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => all.extend(&s),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(join) => first_error = first_error.or(Some(BenchError::Verify(format!("slot task failed: {join}")))),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut outputs = std::mem::take(&mut *outputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    outputs.sort_unstable_by_key(|(i, _)| *i);
    Ok(Driven { samples: all, outputs, elapsed })
}

/// `<op>_ops_per_s`: calls/s over the loop's wall time, per-call p50/p99.
pub fn ops_line<T>(name: &str, lanes: &Lanes, d: &Driven<T>, wanted: u32) -> Result<MetricLine, BenchError> {
    let sum = d.samples.summary().ok_or_else(|| BenchError::Verify(format!("{name}: no call finished")))?;
    Ok(MetricLine::new(name)
        .field("value", per_second(f64::from(d.done()), d.elapsed))
        .field("n", sum.n)
        .field("inflight", lanes.inflight)
        .field("connections", lanes.connections())
        .field("elapsed_ms", d.elapsed.as_millis())
        .field("p50_us", sum.p50)
        .field("p99_us", sum.p99)
        .field("complete", complete_flag(d.done().into(), wanted.into())))
}

/// CREATE, SETATTR, RENAME and REMOVE of `budget.count` files in a fresh
/// directory `dir_name` under `parent` (MKDIR/RMDIR on `s`, not timed).
/// Adds `create_ops_per_s`, `setattr_ops_per_s`, `rename_ops_per_s`,
/// `remove_ops_per_s` to `lines`, each when its stage is done. Each stage gets `time` and works on the files CREATE
/// made; RENAME and REMOVE must finish all of them (they are the cleanup).
pub async fn metadata(
    lanes: &Lanes,
    s: &mut Session,
    parent: &nfs_fh3,
    dir_name: &str,
    count: u32,
    time: Duration,
    lines: &mut Vec<MetricLine>,
) -> Result<(), BenchError> {
    let budget = &Budget::new(count, time);
    let dir = Arc::new(s.mkdir(parent, dir_name).await?);
    let d = Arc::clone(&dir);
    let created = drive(lanes, budget, move |p, i| {
        let d = Arc::clone(&d);
        async move { p.create(&d, &file_name(i)).await }
    })
    .await?;
    lines.push(ops_line("create_ops_per_s", lanes, &created, budget.count)?);
    let n = created.done();
    let handles: Arc<Vec<nfs_fh3>> = Arc::new(created.outputs.into_iter().map(|(_, fh)| fh).collect());
    let stage = Budget::new(n, time);
    let h = Arc::clone(&handles);
    let set = drive(lanes, &stage, move |p, i| {
        let fh = h.get(i as usize).cloned();
        async move {
            let fh = fh.ok_or_else(|| BenchError::Verify(format!("no handle for file {i}")))?;
            p.set_mode(&fh, SETATTR_MODE).await
        }
    })
    .await?;
    lines.push(ops_line("setattr_ops_per_s", lanes, &set, n)?);
    let d = Arc::clone(&dir);
    let renamed = drive(lanes, &Budget::new(n, time), move |p, i| {
        let d = Arc::clone(&d);
        async move { p.rename(&d, &file_name(i), &renamed_name(i)).await }
    })
    .await?;
    lines.push(ops_line("rename_ops_per_s", lanes, &renamed, n)?);
    if renamed.done() < n {
        return Err(BenchError::Verify(format!(
            "{dir_name}: RENAME cleanup deadline passed ({} of {n})",
            renamed.done()
        )));
    }
    let d = Arc::clone(&dir);
    let removed = drive(lanes, &Budget::new(n, time), move |p, i| {
        let d = Arc::clone(&d);
        async move { p.remove(&d, &renamed_name(i)).await }
    })
    .await?;
    lines.push(ops_line("remove_ops_per_s", lanes, &removed, n)?);
    if removed.done() < n {
        return Err(BenchError::Verify(format!(
            "{dir_name}: REMOVE cleanup deadline passed ({} of {n})",
            removed.done()
        )));
    }
    s.rmdir(parent, dir_name).await
}

/// `budget.count` LOOKUPs of the fixture's names (the `meta` stride order).
pub async fn lookup(lanes: &Lanes, fixture: &Fixture, budget: &Budget) -> Result<MetricLine, BenchError> {
    let (dir, count) = (Arc::new(fixture.dir.clone()), fixture.count);
    let d = drive(lanes, budget, move |p, i| {
        let dir = Arc::clone(&dir);
        async move { p.lookup(&dir, &file_name(super::meta::stride_index(i, count))).await.map(|_| ()) }
    })
    .await?;
    ops_line("lookup_ops_per_s", lanes, &d, budget.count)
}

/// `budget.count` GETATTRs over the fixture's file handles (stride order).
pub async fn getattr(lanes: &Lanes, fixture: &Fixture, budget: &Budget) -> Result<MetricLine, BenchError> {
    let handles = Arc::new(fixture.handles.clone());
    let count = u32::try_from(handles.len()).unwrap_or(u32::MAX);
    let d = drive(lanes, budget, move |p, i| {
        let fh = handles.get(super::meta::stride_index(i, count) as usize).cloned();
        async move { p.getattr(&fh.ok_or_else(|| BenchError::Verify("fixture has no handles".into()))?).await }
    })
    .await?;
    ops_line("getattr_ops_per_s", lanes, &d, budget.count)
}

/// The pages of one full listing: (cookie, cookieverf) each page starts at.
async fn page_starts(
    lanes: &Lanes,
    fixture: &Fixture,
    size: ListingSize,
) -> Result<Vec<(u64, cookieverf3)>, BenchError> {
    let pipe = lanes.first()?;
    let mut starts = Vec::new();
    let (mut cookie, mut verf) = (0u64, cookieverf3::default());
    for _ in 0..super::meta::LISTING_PAGES_MAX {
        starts.push((cookie, verf));
        let page = pipe.readdirplus(&fixture.dir, cookie, verf, size.maxcount).await?;
        if page.eof {
            return Ok(starts);
        }
        if page.names.is_empty() {
            return Err(BenchError::Verify("READDIRPLUS page without entries and without eof".into()));
        }
        (cookie, verf) = (page.last_cookie, page.cookieverf);
    }
    Err(BenchError::Verify("READDIRPLUS never reached eof".into()))
}

/// `budget.count` READDIRPLUS calls: call i asks for page i mod pages of
/// the fixture (cookie and verifier from one listing made first, not
/// timed); every reply must have entries or eof. The value is READDIRPLUS
/// calls/s; `listings_per_s` = value / pages.
pub async fn readdirplus(
    lanes: &Lanes,
    fixture: &Fixture,
    size: ListingSize,
    budget: &Budget,
) -> Result<MetricLine, BenchError> {
    let starts = Arc::new(page_starts(lanes, fixture, size).await?);
    let pages = u32::try_from(starts.len()).unwrap_or(u32::MAX).max(1);
    let dir = Arc::new(fixture.dir.clone());
    let st = Arc::clone(&starts);
    let d = drive(lanes, budget, move |p, i| {
        let (dir, start) = (Arc::clone(&dir), st.get((i % pages) as usize).copied());
        async move {
            let (cookie, verf) = start.ok_or_else(|| BenchError::Verify("page index".into()))?;
            let page = p.readdirplus(&dir, cookie, verf, size.maxcount).await?;
            if page.names.is_empty() && !page.eof {
                return Err(BenchError::Verify("READDIRPLUS page without entries and without eof".into()));
            }
            Ok(())
        }
    })
    .await?;
    let calls_per_s = f64::from(d.done()) / d.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(ops_line("readdirplus_ops_per_s", lanes, &d, budget.count)?
        .field("pages", pages)
        .field("listings_per_s", format!("{:.2}", calls_per_s / f64::from(pages))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A failed GETATTR reply (accepted, SUCCESS, NFS3ERR_STALE).
    fn stale_reply(xid: u32) -> Vec<u8> {
        let words = [xid, 1, 0, 0, 0, 0, 70];
        let mut out = (0x8000_0000u32 | (words.len() as u32 * 4)).to_be_bytes().to_vec();
        for w in words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// The xid of the next call, or `None` if none arrives within `wait`.
    async fn next_call(conn: &mut TcpStream, wait: Duration) -> Option<u32> {
        let mut head = [0u8; 4];
        tokio::time::timeout(wait, conn.read_exact(&mut head)).await.ok()?.ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(head) & 0x7FFF_FFFF) as usize];
        conn.read_exact(&mut body).await.ok()?;
        Some(u32::from_be_bytes(body.get(..4)?.try_into().ok()?))
    }

    /// Collects calls until `batch` are outstanding (or none comes for a
    /// while), answers them all, and records each batch's size.
    async fn batching_server(listener: TcpListener, batch: usize, total: usize) -> Vec<usize> {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut sizes = Vec::new();
        let mut seen = 0;
        while seen < total {
            let mut xids = Vec::new();
            while xids.len() < batch {
                match next_call(&mut conn, Duration::from_secs(2)).await {
                    Some(xid) => xids.push(xid),
                    None => break,
                }
            }
            if xids.is_empty() {
                break;
            }
            seen += xids.len();
            sizes.push(xids.len());
            for xid in xids {
                conn.write_all(&stale_reply(xid)).await.expect("reply");
            }
        }
        sizes
    }

    #[tokio::test]
    async fn keeps_exactly_inflight_calls_outstanding_on_one_connection() {
        const INFLIGHT: u32 = 4;
        const CALLS: u32 = 12;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(batching_server(listener, INFLIGHT as usize, CALLS as usize));
        let target = Target {
            host: "127.0.0.1".parse().expect("address"),
            portmap_port: 111,
            mount_port: None,
            nfs_port: Some(port),
            export: "/export".into(),
            uid: 0,
            gid: 0,
            privileged_port: false,
            rpc_timeout: Duration::from_secs(10),
        };
        let mounted = Mounted { root: nfs_fh3::default(), nfs_port: port };
        let lanes = Lanes::open(&target, &mounted, INFLIGHT, 1).await.expect("lanes");
        assert_eq!(lanes.connections(), 1);
        let d = drive(&lanes, &Budget::new(CALLS, Duration::from_secs(30)), |p, i| async move {
            match p.getattr(&nfs_fh3::default()).await {
                Err(BenchError::Nfs { .. }) => Ok(i),
                other => Err(BenchError::Verify(format!("expected NFS3ERR_STALE, got {other:?}"))),
            }
        })
        .await
        .expect("drive");
        assert_eq!(d.done(), CALLS);
        let order: Vec<u32> = d
            .outputs
            .iter()
            .map(|(i, out)| {
                assert_eq!(i, out);
                *i
            })
            .collect();
        assert_eq!(order, (0..CALLS).collect::<Vec<_>>());
        assert_eq!(server.await.expect("server"), vec![INFLIGHT as usize; (CALLS / INFLIGHT) as usize]);
        let line = ops_line("getattr_ops_per_s", &lanes, &d, CALLS).expect("line").render();
        assert!(line.contains(" n=12 inflight=4 connections=1 "), "{line}");
        assert!(line.ends_with(" complete=1"), "{line}");
    }
}
