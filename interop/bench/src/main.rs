//! `hanfs-bench`: mounts an export on any NFSv3 server and runs the bounded
//! workloads in `hanfs_bench::workloads`, printing one `metric=...` line per
//! measurement on stdout (progress on stderr). Exit status 0 when every
//! selected workload finished, 1 when one failed (its line carries `error=`),
//! 2 on bad arguments or when the export cannot be mounted.
//! `hanfs-bench probe --dir D [--peer IP]` measures the local physical budget
//! instead (`hanfs_bench::probe`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hanfs_bench::client::{Mounted, Session, Target};
use hanfs_bench::probe::{self, ProbeConfig};
use hanfs_bench::stats::MetricLine;
use hanfs_bench::workloads::data::{self, DataSize};
use hanfs_bench::workloads::data_inflight;
use hanfs_bench::workloads::inflight::{self, Lanes};
use hanfs_bench::workloads::locks::{self, LockSize};
use hanfs_bench::workloads::meta;
use hanfs_bench::{BenchError, Budget};
use nfs3_client::nfs3_types::nfs3::nfs_fh3;

/// Every workload name `--only` accepts, in the order they run.
const WORKLOADS: [&str; 6] = ["create", "lookup", "readdirplus", "getattr", "io", "locks"];
/// The workloads that share one populated directory (`meta::Fixture`), run as one step.
const FIXTURE_WORKLOADS: [&str; 3] = ["lookup", "readdirplus", "getattr"];
/// Runs of one step: the first, and one retry after its connection broke.
const STEP_ATTEMPTS_MAX: u32 = 2;
/// Pause between reconnection attempts after a workload broke its connection.
const RECONNECT_POLL_MS: u64 = 500;
/// Bytes in a KiB / MiB.
const KIB_BYTES: u32 = 1024;
const MIB_BYTES: u64 = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    about = "Bounded NFSv3 benchmark: CREATE/SETATTR/RENAME/REMOVE, LOOKUP, GETATTR, READDIRPLUS at 1 and N in flight, WRITE/READ, NLM LOCK/UNLOCK",
    args_override_self = true
)]
struct Args {
    /// Server address (IPv4 or IPv6)
    #[arg(long)]
    server: IpAddr,
    /// Portmapper port (used unless both --mount-port and --nfs-port are given)
    #[arg(long, default_value_t = 111)]
    portmap_port: u16,
    /// MOUNT port (default: ask the portmapper)
    #[arg(long)]
    mount_port: Option<u16>,
    /// NFS port (default: ask the portmapper)
    #[arg(long)]
    nfs_port: Option<u16>,
    /// Export path to mount
    #[arg(long, default_value = "/export")]
    export: String,
    /// AUTH_SYS uid and gid
    #[arg(long, default_value_t = 0)]
    uid: u32,
    #[arg(long, default_value_t = 0)]
    gid: u32,
    /// Connect from a port below 1024 (root only; for `secure` exports)
    #[arg(long)]
    privileged_port: bool,
    /// Comma-separated subset of: create,lookup,readdirplus,getattr,io,locks
    #[arg(long, default_value = "create,lookup,readdirplus,getattr,io,locks")]
    only: String,
    /// Files created, then SETATTR, RENAMEd and removed (per mode: 1 and N in flight)
    #[arg(long, default_value_t = 1000)]
    creates: u32,
    /// Entries in the directory used for LOOKUP, GETATTR and READDIRPLUS
    #[arg(long, default_value_t = 1000)]
    dir_entries: u32,
    /// LOOKUP calls (per mode)
    #[arg(long, default_value_t = 10000)]
    lookups: u32,
    /// Full READDIRPLUS listings, one call in flight
    #[arg(long, default_value_t = 50)]
    listings: u32,
    /// READDIRPLUS calls with --inflight in flight (each asks for one page of a listing)
    #[arg(long, default_value_t = 5000)]
    readdirplus_calls: u32,
    /// READDIRPLUS maxcount (dircount is the same), bytes
    #[arg(long, default_value_t = 32768)]
    listing_maxcount: u32,
    /// GETATTR calls (per mode)
    #[arg(long, default_value_t = 20000)]
    getattrs: u32,
    /// Throughput mode: calls in flight at once (0: only the one-in-flight latency mode)
    #[arg(long, default_value_t = 16)]
    inflight: u32,
    /// Throughput mode: connections the calls in flight are spread over
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Size of the WRITE/READ file, MiB
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
    /// WRITE/READ chunk, KiB (clamped to the server's wtmax/rtmax)
    #[arg(long, default_value_t = 1024)]
    chunk_kib: u32,
    /// WRITE+READ passes (new file each); the median pass is reported
    #[arg(long, default_value_t = 3)]
    io_passes: u32,
    /// The export's directory on this machine (bench and server on one host):
    /// enables the cold READ (the file's page cache is dropped first)
    #[arg(long)]
    server_dir: Option<PathBuf>,
    /// NLM LOCK+UNLOCK pairs by one owner on one file, in sequence
    #[arg(long, default_value_t = 2000)]
    lock_pairs: u32,
    /// NLM LOCK+UNLOCK pairs in total by the concurrent owners
    #[arg(long, default_value_t = 16000)]
    lock_concurrent_pairs: u32,
    /// Concurrent NLM owners, each on its own file and connection
    #[arg(long, default_value_t = 16)]
    lock_tasks: u32,
    /// NLM port (default: ask the portmapper for 100021 v4 TCP)
    #[arg(long)]
    nlm_port: Option<u16>,
    /// Deadline of each workload's timed loop, seconds
    #[arg(long, default_value_t = 120)]
    workload_seconds: u64,
    /// Timeout of each single call, milliseconds
    #[arg(long, default_value_t = 10_000)]
    rpc_timeout_ms: u64,
    /// After a workload broke its connection: how long to try a fresh one before stopping, seconds
    #[arg(long, default_value_t = 30)]
    reconnect_seconds: u64,
}

/// `hanfs-bench probe`: the physical budget (see `hanfs_bench::probe`).
#[derive(Parser, Debug)]
#[command(
    name = "hanfs-bench probe",
    bin_name = "hanfs-bench probe",
    about = "fs syscalls, 4 KiB append + fdatasync and TCP round trip, p50; budget_us"
)]
struct ProbeArgs {
    /// A directory on the export's filesystem (a scratch directory is made and removed in it)
    #[arg(long)]
    dir: PathBuf,
    /// Round trip: the listening side's address (e.g. one cluster node's)
    #[arg(long)]
    peer: Option<IpAddr>,
    /// Round trip: the calling side's address (e.g. the other node's)
    #[arg(long)]
    peer_from: Option<IpAddr>,
    /// Samples of each measurement
    #[arg(long, default_value_t = 500)]
    samples: u32,
    /// Deadline of each measurement loop, seconds
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

fn probe_main(args: ProbeArgs) -> ExitCode {
    let cfg = ProbeConfig {
        dir: args.dir,
        peer: args.peer,
        peer_from: args.peer_from,
        samples: args.samples,
        time: Duration::from_secs(args.seconds),
    };
    match probe::run(&cfg) {
        Ok(lines) => {
            for l in &lines {
                println!("{}", l.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hanfs-bench probe: {e}");
            println!("{}", MetricLine::new("probe").field("error", "probe_failed").render());
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("probe") {
        return probe_main(ProbeArgs::parse_from(std::env::args().skip(1)));
    }
    let args = Args::parse();
    let selected: Vec<String> =
        args.only.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if let Some(bad) = selected.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        eprintln!("hanfs-bench: unknown workload {bad:?}; known: {}", WORKLOADS.join(","));
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hanfs-bench: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(args, selected))
}

fn target_of(args: &Args) -> Target {
    Target {
        host: args.server,
        portmap_port: args.portmap_port,
        mount_port: args.mount_port,
        nfs_port: args.nfs_port,
        export: args.export.clone(),
        uid: args.uid,
        gid: args.gid,
        privileged_port: args.privileged_port,
        rpc_timeout: Duration::from_millis(args.rpc_timeout_ms),
    }
}

async fn run(args: Args, selected: Vec<String>) -> ExitCode {
    let target = target_of(&args);
    let (mounted, mut s) = match target.mount().await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hanfs-bench: mount {}:{}: {e}", args.server, args.export);
            return ExitCode::from(2);
        }
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let work_name = format!("hanfs-bench-{}-{stamp}", std::process::id());
    let local_work = args.server_dir.as_ref().map(|d| d.join(&work_name));
    let work = match s.mkdir(&mounted.root, &work_name).await {
        Ok(fh) => fh,
        Err(e) => {
            eprintln!("hanfs-bench: MKDIR {work_name}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let wants = |w: &str| selected.iter().any(|x| x == w);
    let mut fixture_done = false;
    for name in WORKLOADS.iter().filter(|w| wants(w)) {
        // lookup, getattr and readdirplus share one populated directory.
        let step = if FIXTURE_WORKLOADS.contains(name) {
            if fixture_done {
                continue;
            }
            fixture_done = true;
            FIXTURE_WORKLOADS.iter().filter(|w| wants(w)).copied().collect::<Vec<_>>().join("+")
        } else {
            name.to_string()
        };
        // A step whose connection broke (the server closed it, or a call timed out) runs once
        // more on a fresh connection, in fresh directories: its error line stays (and the run
        // exits 1), and the retry's lines carry `attempt=2`. The NLM step is not retried.
        for attempt in 1..=STEP_ATTEMPTS_MAX {
            eprintln!("hanfs-bench: running {step} (attempt {attempt})");
            let ctx = Ctx {
                args: &args,
                target: &target,
                mounted: &mounted,
                work: &work,
                local_work: local_work.clone(),
                attempt,
            };
            let ok = run_one(&step, &ctx, &mut s).await;
            failed |= !ok;
            let broken = s_is_broken(&mut s, &mounted).await;
            if broken {
                // No fresh connection that can GETATTR the root within --reconnect-seconds means
                // the server is gone or hung: stop here rather than spend a timeout on every
                // remaining workload. (A cluster that fails over serves again within that time.)
                let window = Duration::from_secs(args.reconnect_seconds);
                match reconnect(&target, &mounted, window).await {
                    Ok(fresh) => s = fresh,
                    Err(e) => {
                        eprintln!("hanfs-bench: server not answering on a fresh connection ({e}); stopping");
                        return ExitCode::from(1);
                    }
                }
            }
            if ok || !broken || step == "locks" {
                break;
            }
        }
    }
    if let Err(e) = s.rmdir(&mounted.root, &work_name).await {
        eprintln!("hanfs-bench: RMDIR {work_name}: {e} (left behind)");
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A new session whose GETATTR of the root succeeds, trying every
/// `RECONNECT_POLL_MS` until `window` has passed (at least once).
async fn reconnect(target: &Target, mounted: &Mounted, window: Duration) -> Result<Session, BenchError> {
    let deadline = std::time::Instant::now() + window;
    loop {
        let attempt = async {
            let mut fresh = target.session(mounted).await?;
            fresh.getattr(&mounted.root).await?;
            Ok::<_, BenchError>(fresh)
        };
        match attempt.await {
            Ok(fresh) => return Ok(fresh),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                eprintln!("hanfs-bench: reconnect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(RECONNECT_POLL_MS)).await;
            }
        }
    }
}

/// True when the main session can no longer be used (a GETATTR of the root fails).
async fn s_is_broken(s: &mut Session, mounted: &Mounted) -> bool {
    s.getattr(&mounted.root).await.is_err()
}

/// What every workload step needs.
struct Ctx<'a> {
    args: &'a Args,
    target: &'a Target,
    mounted: &'a Mounted,
    work: &'a nfs_fh3,
    /// The work directory as a local path, when `--server-dir` is given.
    local_work: Option<PathBuf>,
    /// 1, or 2 for the retry of a step whose connection broke.
    attempt: u32,
}

impl Ctx<'_> {
    /// `base`, suffixed on a retry so it never meets what the failed attempt left behind.
    fn dir_name(&self, base: &str) -> String {
        if self.attempt <= 1 {
            base.to_string()
        } else {
            format!("{base}-attempt{}", self.attempt)
        }
    }

    fn time(&self) -> Duration {
        Duration::from_secs(self.args.workload_seconds)
    }

    /// The throughput mode's connections, or `None` when `--inflight 0`.
    async fn lanes(&self) -> Result<Option<Lanes>, BenchError> {
        if self.args.inflight == 0 {
            return Ok(None);
        }
        Lanes::open(self.target, self.mounted, self.args.inflight, self.args.connections).await.map(Some)
    }
}

/// Runs one workload step and prints its lines; false when it failed.
async fn run_one(step: &str, ctx: &Ctx<'_>, s: &mut Session) -> bool {
    let args = ctx.args;
    let time = ctx.time();
    let result: Result<Vec<MetricLine>, BenchError> = match step {
        "create" => create_workload(ctx, s).await,
        "io" => {
            let size = DataSize {
                file_bytes: args.file_mib.saturating_mul(MIB_BYTES),
                chunk_bytes: args.chunk_kib.saturating_mul(KIB_BYTES),
                passes: args.io_passes,
                local_dir: ctx.local_work.clone(),
            };
            // Every call makes progress, so the file size bounds a pass's calls; this is a backstop.
            let calls = u32::try_from(size.file_bytes / 512 + 1).unwrap_or(u32::MAX);
            let (root, name) = (&ctx.mounted.root, ctx.dir_name("data"));
            let one = data::write_read(s, root, ctx.work, &name, size.clone(), &Budget::new(calls, time)).await;
            match (one, ctx.lanes().await) {
                (Ok(mut lines), Ok(Some(lanes))) => {
                    data_inflight::write_read(&lanes, s, root, ctx.work, &name, size, time).await.map(|more| {
                        lines.extend(more);
                        lines
                    })
                }
                (Ok(lines), Ok(None)) => Ok(lines),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        "locks" => {
            let size = LockSize {
                pairs: args.lock_pairs,
                concurrent_pairs: args.lock_concurrent_pairs,
                tasks: args.lock_tasks,
            };
            locks::lock_pairs(ctx.target, s, ctx.work, args.nlm_port, size, time).await
        }
        _ if step.split('+').all(|w| FIXTURE_WORKLOADS.contains(&w)) => dir_workload(step, ctx, s).await,
        _ => Err(BenchError::Verify(format!("unknown workload {step}"))),
    };
    match result {
        Ok(lines) => {
            for l in &lines {
                let l = if ctx.attempt > 1 { l.clone().field("attempt", ctx.attempt) } else { l.clone() };
                println!("{}", l.render());
            }
            !lines.iter().any(MetricLine::failed)
        }
        Err(e) => {
            eprintln!("hanfs-bench: {step} (attempt {}): {e}", ctx.attempt);
            println!("{}", MetricLine::new(step).field("error", e.token()).field("attempt", ctx.attempt).render());
            false
        }
    }
}

/// CREATE/SETATTR/RENAME/REMOVE one call at a time, then with `--inflight`
/// calls in flight, each in its own fresh directory. A failure after some
/// stages finished keeps their lines and adds an `error` line.
async fn create_workload(ctx: &Ctx<'_>, s: &mut Session) -> Result<Vec<MetricLine>, BenchError> {
    let (args, time) = (ctx.args, ctx.time());
    let mut lines = Vec::new();
    let mut result =
        meta::create_cycle(s, ctx.work, &ctx.dir_name("create"), &Budget::new(args.creates, time), &mut lines).await;
    if result.is_ok() {
        result = match ctx.lanes().await {
            Ok(Some(lanes)) => {
                let dir = ctx.dir_name("create-inflight");
                inflight::metadata(&lanes, s, ctx.work, &dir, args.creates, time, &mut lines).await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
    }
    match result {
        Ok(()) => Ok(lines),
        Err(e) if lines.is_empty() => Err(e),
        Err(e) => {
            eprintln!("hanfs-bench: create: {e}");
            lines.push(MetricLine::new("create").field("error", e.token()));
            Ok(lines)
        }
    }
}

/// LOOKUP, GETATTR and/or READDIRPLUS (`step` names which, joined by `+`)
/// over one freshly populated directory, removed afterwards.
async fn dir_workload(step: &str, ctx: &Ctx<'_>, s: &mut Session) -> Result<Vec<MetricLine>, BenchError> {
    let (args, time) = (ctx.args, ctx.time());
    let fixture =
        meta::Fixture::populate(s, ctx.work, &ctx.dir_name("dir"), &Budget::new(args.dir_entries, time)).await?;
    let lines = dir_measure(step, ctx, s, &fixture).await;
    let cleanup = fixture.remove(s, ctx.work).await;
    let mut lines = lines?;
    if let Err(e) = cleanup {
        // The measurements stand; the step still fails.
        eprintln!("hanfs-bench: {step}: cleanup: {e}");
        lines.push(MetricLine::new(step).field("error", format!("cleanup_{}", e.token())));
    }
    Ok(lines)
}

async fn dir_measure(
    step: &str,
    ctx: &Ctx<'_>,
    s: &mut Session,
    fixture: &meta::Fixture,
) -> Result<Vec<MetricLine>, BenchError> {
    let (args, time) = (ctx.args, ctx.time());
    let wants = |w: &str| step.split('+').any(|x| x == w);
    let size = meta::ListingSize { dircount: args.listing_maxcount, maxcount: args.listing_maxcount };
    let mut lines = Vec::new();
    if wants("lookup") {
        lines.push(meta::lookup_latency(s, fixture, &Budget::new(args.lookups, time)).await?);
    }
    if wants("getattr") {
        lines.push(meta::getattr_latency(s, fixture, &Budget::new(args.getattrs, time)).await?);
    }
    if wants("readdirplus") {
        lines.extend(meta::readdirplus_listing(s, fixture, size, &Budget::new(args.listings, time)).await?);
    }
    if let Some(lanes) = ctx.lanes().await? {
        if wants("lookup") {
            lines.push(inflight::lookup(&lanes, fixture, &Budget::new(args.lookups, time)).await?);
        }
        if wants("getattr") {
            lines.push(inflight::getattr(&lanes, fixture, &Budget::new(args.getattrs, time)).await?);
        }
        if wants("readdirplus") {
            lines.push(inflight::readdirplus(&lanes, fixture, size, &Budget::new(args.readdirplus_calls, time)).await?);
        }
    }
    Ok(lines)
}
