//! hanfs-scale: the steps of interop/scale.sh that need code. Each prints one
//! line of `key=value` fields on stdout (the script parses them); errors go
//! to stderr. Exit status: 0 done, 1 the step failed, 2 bad arguments.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use hanfs_scale::client::Target;
use hanfs_scale::handles::HandleWriter;
use hanfs_scale::{populate, rss, sample, walk, ScaleError};

#[derive(Parser, Debug)]
#[command(name = "hanfs-scale", about = "Steps of hanfs's scale run (interop/scale.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create N empty files directly on the disk under an empty directory.
    Populate {
        /// The export tree's root (must exist and be empty).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        files: u64,
        #[arg(long, default_value_t = 1000)]
        per_dir: u64,
        /// Creating threads (default: the CPUs).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// One full READDIRPLUS walk over NFS; saves every handle and fileid.
    Walk {
        #[command(flatten)]
        target: TargetArgs,
        /// The handle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Concurrent NFS sessions.
        #[arg(long, default_value_t = 4)]
        tasks: usize,
        /// Stop after this long (reported as complete=0).
        #[arg(long, default_value_t = 3600)]
        time_limit_s: u64,
        /// Sample this process's VmRSS/VmHWM during the walk (the server).
        #[arg(long)]
        watch_pid: Option<u32>,
    },
    /// GETATTR a random sample of a handle file's handles.
    Sample {
        #[command(flatten)]
        target: TargetArgs,
        /// The handle file `walk` wrote.
        #[arg(long)]
        handles: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        size: usize,
        /// Seed of the draw (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 600)]
        time_limit_s: u64,
    },
}

#[derive(Args, Debug)]
struct TargetArgs {
    #[arg(long)]
    server: IpAddr,
    #[arg(long)]
    portmap_port: u16,
    #[arg(long)]
    mount_port: u16,
    #[arg(long)]
    nfs_port: u16,
    #[arg(long, default_value = "/export")]
    export: String,
    /// Bound on each call.
    #[arg(long, default_value_t = 30)]
    rpc_timeout_s: u64,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target {
            host: self.server,
            portmap_port: self.portmap_port,
            mount_port: self.mount_port,
            nfs_port: self.nfs_port,
            export: self.export.clone(),
            rpc_timeout: Duration::from_secs(self.rpc_timeout_s),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ScaleError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ScaleError::Internal(format!("tokio runtime: {e}")))
}

fn run(cmd: Command) -> Result<String, ScaleError> {
    match cmd {
        Command::Populate { dir, files, per_dir, threads } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let p = populate::populate(&dir, files, per_dir, threads)?;
            Ok(format!(
                "files={} dirs={} seconds={:.1} files_per_s={:.0}",
                p.files,
                p.dirs,
                p.seconds,
                p.files as f64 / p.seconds.max(1e-9)
            ))
        }
        Command::Walk { target, out, tasks, time_limit_s, watch_pid } => {
            let writer = HandleWriter::create(&out)?;
            let watcher = watch_pid.map(rss::Watcher::start);
            let res =
                runtime()?.block_on(walk::walk(&target.target(), tasks, Duration::from_secs(time_limit_s), writer));
            let mem = watcher.map(|w| w.stop());
            let w = res?;
            let (m, samples) = mem.unwrap_or_default();
            Ok(format!(
                "entries={} dirs={} pages={} no_handle={} fh_bytes_max={} seconds={:.1} entries_per_s={:.0} \
                 complete={} rss_max_kib={} hwm_kib={} rss_samples={}",
                w.entries,
                w.dirs,
                w.pages,
                w.no_handle,
                w.fh_bytes_max,
                w.seconds,
                w.entries as f64 / w.seconds.max(1e-9),
                u8::from(w.complete),
                m.rss_kib,
                m.hwm_kib,
                samples
            ))
        }
        Command::Sample { target, handles, size, seed, time_limit_s } => {
            let seed =
                seed.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
            let limit = Duration::from_secs(time_limit_s);
            let s = runtime()?.block_on(sample::check(&target.target(), &handles, size, seed, limit))?;
            let examples = if s.other_examples.is_empty() { "-".to_string() } else { s.other_examples.join(",") };
            Ok(format!(
                "saved={} asked={} ok={} wrong_fileid={} stale={} other={} other_examples={} seed={} seconds={:.1} \
                 complete={}",
                s.saved,
                s.asked,
                s.ok,
                s.wrong_fileid,
                s.stale,
                s.other,
                examples.replace(' ', "_"),
                seed,
                s.seconds,
                u8::from(s.complete)
            ))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hanfs-scale: {e}");
            ExitCode::from(1)
        }
    }
}
