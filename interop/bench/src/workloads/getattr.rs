//! GETATTR throughput: `tasks` concurrent connections, each issuing one
//! GETATTR at a time on the same handle, until `budget.count` calls are done
//! in total or the deadline passes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nfs3_client::nfs3_types::nfs3::nfs_fh3;

use super::complete_flag;
use crate::client::{Mounted, Session, Target};
use crate::stats::{per_second, MetricLine, Samples};
use crate::{BenchError, Budget};

/// Most concurrent connections one run opens.
pub const TASKS_MAX: u32 = 256;

/// Claims call tickets from `next` until `budget.count` are taken or time is up.
async fn worker(mut s: Session, fh: nfs_fh3, next: Arc<AtomicU32>, budget: Budget) -> Result<Samples, BenchError> {
    let mut samples = Samples::default();
    while !budget.expired() {
        let ticket = next.fetch_add(1, Ordering::Relaxed);
        if ticket >= budget.count {
            break;
        }
        let t = Instant::now();
        s.getattr(&fh).await?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Opens `tasks` sessions first (not timed), then runs them together.
/// Returns `getattr_ops_per_s` with the per-call latency percentiles.
pub async fn getattr_throughput(
    target: &Target,
    mounted: &Mounted,
    fh: &nfs_fh3,
    tasks: u32,
    budget: &Budget,
) -> Result<MetricLine, BenchError> {
    if tasks == 0 || tasks > TASKS_MAX {
        return Err(BenchError::Verify(format!("tasks must be 1..={TASKS_MAX}")));
    }
    let mut sessions = Vec::with_capacity(tasks as usize);
    for _ in 0..tasks {
        sessions.push(target.session(mounted).await?);
    }
    let next = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let handles: Vec<_> =
        sessions.into_iter().map(|s| tokio::spawn(worker(s, fh.clone(), Arc::clone(&next), *budget))).collect();
    let mut all = Samples::with_capacity(budget.count as usize);
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(samples)) => all.extend(&samples),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(join) => first_error = first_error.or(Some(BenchError::Verify(format!("task failed: {join}")))),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    let done = u64::try_from(all.len()).unwrap_or(u64::MAX);
    let sum = all.summary().ok_or_else(|| BenchError::Verify("no GETATTR finished".into()))?;
    Ok(MetricLine::new("getattr_ops_per_s")
        .field("value", per_second(done as f64, elapsed))
        .field("n", done)
        .field("tasks", tasks)
        .field("elapsed_ms", elapsed.as_millis())
        .field("p50_us", sum.p50)
        .field("p99_us", sum.p99)
        .field("complete", complete_flag(done, budget.count.into())))
}
