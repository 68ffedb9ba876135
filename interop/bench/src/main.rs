//! `hanfs-bench`: mounts an export on any NFSv3 server and runs the bounded
//! workloads in `hanfs_bench::workloads`, printing one `metric=...` line per
//! measurement on stdout (progress on stderr). Exit status 0 when every
//! selected workload finished, 1 when one failed (its line carries `error=`),
//! 2 on bad arguments or when the export cannot be mounted.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hanfs_bench::client::{Mounted, Session, Target};
use hanfs_bench::stats::MetricLine;
use hanfs_bench::workloads::data::{self, DataSize};
use hanfs_bench::workloads::locks::{self, LockSize};
use hanfs_bench::workloads::{getattr, meta};
use hanfs_bench::{BenchError, Budget};
use nfs3_client::nfs3_types::nfs3::nfs_fh3;

/// Every workload name `--only` accepts, in the order they run.
const WORKLOADS: [&str; 6] = ["create", "lookup", "readdirplus", "getattr", "io", "locks"];
/// Bytes in a KiB / MiB.
const KIB_BYTES: u32 = 1024;
const MIB_BYTES: u64 = 1024 * 1024;

#[derive(Parser, Debug)]
#[command(about = "Bounded NFSv3 benchmark: CREATE/REMOVE, LOOKUP, READDIRPLUS, GETATTR, WRITE/READ, NLM LOCK/UNLOCK")]
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
    /// Files created (then removed) for CREATE/REMOVE latency
    #[arg(long, default_value_t = 2000)]
    creates: u32,
    /// Entries in the directory used for LOOKUP and READDIRPLUS
    #[arg(long, default_value_t = 2000)]
    dir_entries: u32,
    /// LOOKUP calls
    #[arg(long, default_value_t = 5000)]
    lookups: u32,
    /// Full READDIRPLUS listings
    #[arg(long, default_value_t = 50)]
    listings: u32,
    /// READDIRPLUS maxcount (dircount is the same), bytes
    #[arg(long, default_value_t = 32768)]
    listing_maxcount: u32,
    /// GETATTR calls in total
    #[arg(long, default_value_t = 40000)]
    getattrs: u32,
    /// Concurrent GETATTR connections
    #[arg(long, default_value_t = 8)]
    tasks: u32,
    /// Size of the WRITE/READ file, MiB
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
    /// WRITE/READ chunk, KiB (clamped to the server's wtmax/rtmax)
    #[arg(long, default_value_t = 1024)]
    chunk_kib: u32,
    /// WRITE+READ passes (new file each); the median pass is reported
    #[arg(long, default_value_t = 3)]
    io_passes: u32,
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
}

fn main() -> ExitCode {
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
    let work = match s.mkdir(&mounted.root, &work_name).await {
        Ok(fh) => fh,
        Err(e) => {
            eprintln!("hanfs-bench: MKDIR {work_name}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let wants = |w: &str| selected.iter().any(|x| x == w);
    for name in WORKLOADS.iter().filter(|w| wants(w)) {
        // lookup and readdirplus share one populated directory.
        if *name == "readdirplus" && wants("lookup") {
            continue;
        }
        let step = if *name == "lookup" && wants("readdirplus") { "lookup+readdirplus" } else { name };
        eprintln!("hanfs-bench: running {step}");
        if !run_one(step, &args, &target, &mounted, &mut s, &work).await {
            failed = true;
        }
        if s_is_broken(&mut s, &mounted).await {
            // A fresh connection that cannot GETATTR the root means the server is gone or
            // hung: stop here rather than spend a timeout on every remaining workload.
            match reconnect(&target, &mounted).await {
                Ok(fresh) => s = fresh,
                Err(e) => {
                    eprintln!("hanfs-bench: server not answering on a fresh connection ({e}); stopping");
                    return ExitCode::from(1);
                }
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

/// A new session whose GETATTR of the root succeeds.
async fn reconnect(target: &Target, mounted: &Mounted) -> Result<Session, BenchError> {
    let mut fresh = target.session(mounted).await?;
    fresh.getattr(&mounted.root).await?;
    Ok(fresh)
}

/// True when the main session can no longer be used (a GETATTR of the root fails).
async fn s_is_broken(s: &mut Session, mounted: &Mounted) -> bool {
    s.getattr(&mounted.root).await.is_err()
}

/// Runs one workload and prints its lines; false when it failed.
async fn run_one(name: &str, args: &Args, target: &Target, mounted: &Mounted, s: &mut Session, work: &nfs_fh3) -> bool {
    let time = Duration::from_secs(args.workload_seconds);
    let result: Result<Vec<MetricLine>, BenchError> = match name {
        "create" => meta::create_remove(s, work, "create", &Budget::new(args.creates, time)).await,
        "lookup" | "readdirplus" | "lookup+readdirplus" => dir_workload(name, args, s, work, time).await,
        "getattr" => getattr::getattr_throughput(target, mounted, work, args.tasks, &Budget::new(args.getattrs, time))
            .await
            .map(|l| vec![l]),
        "io" => {
            let size = DataSize {
                file_bytes: args.file_mib.saturating_mul(MIB_BYTES),
                chunk_bytes: args.chunk_kib.saturating_mul(KIB_BYTES),
                passes: args.io_passes,
            };
            // Every call makes progress, so the file size bounds a pass's calls; this is a backstop.
            let calls = u32::try_from(size.file_bytes / 512 + 1).unwrap_or(u32::MAX);
            data::write_read(s, &mounted.root, work, "data", size, &Budget::new(calls, time)).await
        }
        "locks" => {
            let size = LockSize {
                pairs: args.lock_pairs,
                concurrent_pairs: args.lock_concurrent_pairs,
                tasks: args.lock_tasks,
            };
            locks::lock_pairs(target, s, work, args.nlm_port, size, time).await
        }
        _ => Err(BenchError::Verify(format!("unknown workload {name}"))),
    };
    match result {
        Ok(lines) => {
            for l in &lines {
                println!("{}", l.render());
            }
            !lines.iter().any(MetricLine::failed)
        }
        Err(e) => {
            eprintln!("hanfs-bench: {name}: {e}");
            println!("{}", MetricLine::new(name).field("error", e.token()).render());
            false
        }
    }
}

/// LOOKUP and/or READDIRPLUS (`step` names which) over one freshly
/// populated directory, removed afterwards.
async fn dir_workload(
    step: &str,
    args: &Args,
    s: &mut Session,
    work: &nfs_fh3,
    time: Duration,
) -> Result<Vec<MetricLine>, BenchError> {
    let fixture = meta::Fixture::populate(s, work, "dir", &Budget::new(args.dir_entries, time)).await?;
    let lines = dir_measure(step, args, s, &fixture, time).await;
    let cleanup = fixture.remove(s, work).await;
    let lines = lines?;
    cleanup?;
    Ok(lines)
}

async fn dir_measure(
    step: &str,
    args: &Args,
    s: &mut Session,
    fixture: &meta::Fixture,
    time: Duration,
) -> Result<Vec<MetricLine>, BenchError> {
    let mut lines = Vec::new();
    if step.contains("lookup") {
        lines.push(meta::lookup_latency(s, fixture, &Budget::new(args.lookups, time)).await?);
    }
    if step.contains("readdirplus") {
        let size = meta::ListingSize { dircount: args.listing_maxcount, maxcount: args.listing_maxcount };
        lines.push(meta::readdirplus_listing(s, fixture, size, &Budget::new(args.listings, time)).await?);
    }
    Ok(lines)
}
