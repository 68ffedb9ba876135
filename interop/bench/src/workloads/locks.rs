//! NLM lock/unlock pairs: NLM (100021 v4, TCP) is found through the
//! portmapper (or `--nlm-port`); then each pair is one NLM4_LOCK (exclusive,
//! whole file, block=false) and one NLM4_UNLOCK of the same range, timed
//! together, each reply checked to be NLM4_GRANTED.
//! - `nlm_pairs_per_s`: one owner, one file, one connection, pairs in sequence;
//! - `nlm_pairs_concurrent_per_s`: `tasks` owners on `tasks` files, one
//!   connection each, pairs in sequence per connection, all at once.
//!
//! The files are created over NFS in a directory `locks` under the work
//! directory and removed afterwards. Before timing, one pair waits out a
//! grace period (NLM4_DENIED_GRACE_PERIOD) for at most `GRACE_WAIT_SECONDS`.
//! A pair with a reply other than NLM4_GRANTED counts in `errors` (and not
//! in `value`, the good pairs per second) and marks the line with
//! `error=<first such status>`; a timeout or transport error ends the workload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::nfs_fh3;

use super::complete_flag;
use crate::client::{Session, Target};
use crate::nlm::{self, NlmLock, RpcConn, NLM4_DENIED_GRACE_PERIOD, NLM4_GRANTED};
use crate::stats::{per_second, MetricLine, Samples};
use crate::{BenchError, Budget};

/// Most concurrent owners (connections) one run opens.
pub const LOCK_TASKS_MAX: u32 = 256;
/// Longest wait for the server's grace period to end before timing.
pub const GRACE_WAIT_SECONDS: u64 = 120;
/// Pause between LOCK attempts while the server is in its grace period.
const GRACE_POLL_MS: u64 = 1000;
/// The NSM state the bench claims in `nlm4_lockargs` (odd: up).
const CLIENT_NSM_STATE: u32 = 1;
/// svid of the sequential owner; the concurrent owners follow it.
const SVID_FIRST: u32 = 1;

/// How many pairs each part runs and with how many owners.
#[derive(Debug, Clone, Copy)]
pub struct LockSize {
    pub pairs: u32,
    pub concurrent_pairs: u32,
    pub tasks: u32,
}

/// One owner on one file over its own connection.
struct Owner {
    conn: RpcConn,
    lock: NlmLock,
    cookie: u64,
}

/// What a run of pairs saw: the latency of every pair, and the pairs with a
/// reply other than NLM4_GRANTED.
#[derive(Default)]
struct Tally {
    samples: Samples,
    errors: u64,
    first_error: Option<u32>,
}

impl Tally {
    fn note(&mut self, lock: u32, unlock: u32) {
        if let Some(bad) = [lock, unlock].into_iter().find(|s| *s != NLM4_GRANTED) {
            self.errors += 1;
            self.first_error = self.first_error.or(Some(bad));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.samples.extend(&other.samples);
        self.errors += other.errors;
        self.first_error = self.first_error.or(other.first_error);
    }
}

impl Owner {
    async fn open(addr: SocketAddr, target: &Target, fh: &nfs_fh3, svid: u32) -> Result<Owner, BenchError> {
        let conn = RpcConn::connect(addr, target.rpc_timeout, Some((target.uid, target.gid))).await?;
        // caller_name: this end's address, which the server's statd can resolve.
        let caller_name = conn.local_ip().map_or_else(|| "hanfs-bench".to_string(), |ip| ip.to_string());
        let lock = NlmLock {
            caller_name,
            fh: fh.data.as_ref().to_vec(),
            oh: format!("hanfs-bench-{}-{svid}", std::process::id()).into_bytes(),
            svid,
            offset: 0,
            len: 0,
        };
        Ok(Owner { conn, lock, cookie: 0 })
    }

    fn next_cookie(&mut self) -> [u8; 8] {
        self.cookie += 1;
        self.cookie.to_be_bytes()
    }

    async fn call(&mut self, op: &'static str, proc_: u32, args: &[u8]) -> Result<u32, BenchError> {
        let body = self.conn.call(op, nlm::NLM_PROG, nlm::NLM_VERS4, proc_, args).await?;
        nlm::res_stat(&body).ok_or_else(|| BenchError::Rpc { op, detail: "short nlm4_res".into() })
    }

    /// LOCK then UNLOCK; their two statuses.
    async fn pair(&mut self) -> Result<(u32, u32), BenchError> {
        let cookie = self.next_cookie();
        let lock = self
            .call("NLM4_LOCK", nlm::NLM4_LOCK, &nlm::lock_args(&cookie, false, true, &self.lock, CLIENT_NSM_STATE))
            .await?;
        let cookie = self.next_cookie();
        let unlock = self.call("NLM4_UNLOCK", nlm::NLM4_UNLOCK, &nlm::unlock_args(&cookie, &self.lock)).await?;
        Ok((lock, unlock))
    }

    /// Timed pairs while tickets from `next` last and time remains.
    async fn run(mut self, next: Arc<AtomicU32>, budget: Budget) -> Result<Tally, BenchError> {
        let mut tally = Tally::default();
        while !budget.expired() {
            if next.fetch_add(1, Ordering::Relaxed) >= budget.count {
                break;
            }
            let t = Instant::now();
            let (lock, unlock) = self.pair().await?;
            tally.samples.push(t.elapsed());
            tally.note(lock, unlock);
        }
        Ok(tally)
    }
}

/// Where NLM v4 over TCP listens: `nlm_port`, or the portmapper's answer.
pub async fn nlm_addr(target: &Target, nlm_port: Option<u16>) -> Result<SocketAddr, BenchError> {
    let port = match nlm_port {
        Some(p) => p,
        None => {
            let portmap = SocketAddr::new(target.host, target.portmap_port);
            nlm::getport(portmap, nlm::NLM_PROG, nlm::NLM_VERS4, target.rpc_timeout).await?
        }
    };
    if port == 0 {
        return Err(BenchError::NoNlm);
    }
    Ok(SocketAddr::new(target.host, port))
}

/// Both parts (see the module doc); the files are removed afterwards.
pub async fn lock_pairs(
    target: &Target,
    s: &mut Session,
    work: &nfs_fh3,
    nlm_port: Option<u16>,
    size: LockSize,
    time: Duration,
) -> Result<Vec<MetricLine>, BenchError> {
    if size.tasks == 0 || size.tasks > LOCK_TASKS_MAX {
        return Err(BenchError::Verify(format!("lock tasks must be 1..={LOCK_TASKS_MAX}")));
    }
    let addr = nlm_addr(target, nlm_port).await?;
    let dir = s.mkdir(work, "locks").await?;
    let mut files = Vec::with_capacity(size.tasks as usize);
    let mut result = Ok(Vec::new());
    for i in 0..size.tasks {
        match s.create_handle(&dir, &file_name(i)).await {
            Ok(fh) => files.push(fh),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = measure(addr, target, &files, size, time).await;
    }
    for i in 0..u32::try_from(files.len()).unwrap_or(0) {
        s.remove(&dir, &file_name(i)).await?;
    }
    s.rmdir(work, "locks").await?;
    result
}

fn file_name(i: u32) -> String {
    format!("lock-{i:03}")
}

async fn measure(
    addr: SocketAddr,
    target: &Target,
    files: &[nfs_fh3],
    size: LockSize,
    time: Duration,
) -> Result<Vec<MetricLine>, BenchError> {
    let first = files.first().ok_or_else(|| BenchError::Verify("no lock file".into()))?;
    let mut owner = Owner::open(addr, target, first, SVID_FIRST).await?;
    wait_out_grace(&mut owner).await?;

    let budget = Budget::new(size.pairs, time);
    let start = Instant::now();
    // On a runtime worker, as the concurrent owners and the GETATTR tasks
    // run (not on the thread blocked in `block_on`).
    let tally = tokio::spawn(owner.run(Arc::new(AtomicU32::new(0)), budget))
        .await
        .map_err(|join| BenchError::Verify(format!("task failed: {join}")))??;
    let mut lines = vec![line("nlm_pairs_per_s", tally, 1, start.elapsed(), size.pairs)];

    let mut owners = Vec::with_capacity(files.len());
    for (svid, fh) in (SVID_FIRST + 1..).zip(files) {
        owners.push(Owner::open(addr, target, fh, svid).await?);
    }
    let budget = Budget::new(size.concurrent_pairs, time);
    let next = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let handles: Vec<_> = owners.into_iter().map(|o| tokio::spawn(o.run(Arc::clone(&next), budget))).collect();
    let mut all = Tally::default();
    let mut first_failure = None;
    for h in handles {
        match h.await {
            Ok(Ok(t)) => all.merge(t),
            Ok(Err(e)) => first_failure = first_failure.or(Some(e)),
            Err(join) => first_failure = first_failure.or(Some(BenchError::Verify(format!("task failed: {join}")))),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_failure {
        return Err(e);
    }
    lines.push(line("nlm_pairs_concurrent_per_s", all, size.tasks, elapsed, size.concurrent_pairs));
    Ok(lines)
}

/// One untimed pair, repeated while the server answers DENIED_GRACE_PERIOD.
async fn wait_out_grace(owner: &mut Owner) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(GRACE_WAIT_SECONDS);
    loop {
        let (lock, _) = owner.pair().await?;
        if lock != NLM4_DENIED_GRACE_PERIOD {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Nfs { op: "NLM4_LOCK", status: nlm::stat_name(lock) });
        }
        tokio::time::sleep(Duration::from_millis(GRACE_POLL_MS)).await;
    }
}

fn line(name: &str, tally: Tally, owners: u32, elapsed: Duration, wanted: u32) -> MetricLine {
    let done = u64::try_from(tally.samples.len()).unwrap_or(u64::MAX);
    let good = done.saturating_sub(tally.errors);
    let mut l = MetricLine::new(name)
        .field("value", per_second(good as f64, elapsed))
        .field("n", done)
        .field("owners", owners)
        .field("errors", tally.errors)
        .field("elapsed_ms", elapsed.as_millis());
    if let Some(sum) = tally.samples.summary() {
        l = l.field("p50_us", sum.p50).field("p99_us", sum.p99);
    }
    l = l.field("complete", complete_flag(done, wanted.into()));
    if let Some(stat) = tally.first_error {
        l = l.field("error", nlm::stat_name(stat));
    }
    l
}
