//! hanfs-cli: the `hanfs-server` binary. Parses the command line (clap, `args`),
//! validates it into a `ServerConfig` (`config`), sets up logging, and runs
//! the node or answers admin queries. The only crate that uses clap, TOML and
//! anyhow; errors end as one line on stderr and an exit code.

mod args;
mod cluster_config;
mod config;
mod exports_cli;
mod generate;
mod journal;
mod quickstart;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;

use args::{Cli, Command, DebugCommand, FaultAction, GenerateWhat, LogFormat, RunArgs, StateArgs, QUICK_STATE_DIR};

/// Exit code for a bad config or bad flags (clap's usage errors use 2 too).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Generate { what, dir } => {
            let written = match what {
                GenerateWhat::Man => generate::man(&dir),
                GenerateWhat::Completions => generate::completions(&dir),
            };
            written.with_context(|| format!("writing into {}", dir.display())).map_err(Failure::Runtime)
        }
        Command::Exports(args) => match args.action {
            None => query(args.state, "exports"),
            Some(action) => exports_change(action),
        },
        Command::Clients(args) => query(args, "clients"),
        Command::Locks(args) => query(args, "locks"),
        Command::Stats(args) => ask(args, "stats".into()),
        Command::Init(args) => ask(args, "init".into()),
        Command::Status(args) if args.json => ask_then(args.state, "status".into(), status_json),
        Command::Status(args) => ask(args.state, "status".into()),
        Command::Switchover(a) => {
            let line = match a.to {
                Some(n) => format!("switchover --to {n}"),
                None => "switchover".into(),
            };
            ask(a.state, line)
        }
        Command::Debug { command: DebugCommand::Faults { state, action } } => {
            let line = match action {
                FaultAction::Block { peer } => format!("debug faults block {peer}"),
                FaultAction::Unblock { peer } => format!("debug faults unblock {peer}"),
                FaultAction::SlowAppends { ms } => format!("debug faults slow-appends {ms}"),
                FaultAction::Heal => "debug faults heal".into(),
            };
            ask(state, line)
        }
        Command::Debug { command: DebugCommand::Snapshot { state } } => ask(state, "debug snapshot".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("hanfs-server: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("hanfs-server: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

enum Failure {
    Config(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Set by systemd when stderr is connected to the journal.
const JOURNAL_STREAM_ENV: &str = "JOURNAL_STREAM";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        // Under systemd, each line starts with its syslog priority (`<4>`):
        // journald strips it and records the level (`journalctl -p warning`),
        // and adds its own timestamp.
        LogFormat::Text if std::env::var_os(JOURNAL_STREAM_ENV).is_some() => builder
            .with_ansi(false)
            .event_format(journal::Priority(tracing_subscriber::fmt::format().without_time()))
            .init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let cfg = match &args.config {
        Some(file) => {
            let mut cfg = config::load_file(file).map_err(Failure::Config)?;
            config::apply_overrides(&mut cfg, &args);
            cfg
        }
        None => config::from_flags(&args).map_err(Failure::Config)?,
    };
    init_logging(cfg.log_format);
    for export in &cfg.server.exports {
        for warning in quickstart::squash_warnings(export) {
            tracing::warn!("{warning}");
        }
        if args.config.is_none() {
            for line in quickstart::mount_lines(cfg.server.listen, &export.name) {
                tracing::info!("on a client: {line}");
            }
        }
    }
    tune_allocator();
    let rt = runtime()?;
    // Each `NodeError` names what failed (the state directory only when it
    // is the state directory), so it is shown as it is.
    rt.block_on(hanfs_server::node::run(cfg.server, shutdown_signal())).map_err(anyhow::Error::from)?;
    Ok(())
}

/// glibc malloc thresholds for a server that receives and sends records of
/// up to about 1 MiB (a WRITE's or READ's payload), many at once. By default
/// glibc maps each such buffer on its own or trims the freed heap top past
/// 2 MiB, so every call page-faults (and the kernel zeroes) a fresh 1 MiB;
/// with buffers up to 4 MiB taken from the heap and up to 16 MiB (sixteen
/// calls in flight) of free heap kept, they are reused. Measured with
/// hanfs-bench io, 16 WRITEs of 1 MiB in flight: 1,151-1,188 -> 1,305-1,366
/// MiB/s; resident memory after the run 18 -> 30 MiB.
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 4 * 1024 * 1024;
    const TRIM_THRESHOLD_BYTES: libc::c_int = 16 * 1024 * 1024;
    // SAFETY: mallopt only sets allocator parameters; called before the
    // runtime's threads start. A refused value (0) leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C still works through tokio's own.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

fn check_config(file: &Path) -> Result<(), Failure> {
    let cfg = config::load_file(file).map_err(Failure::Config)?;
    let s = &cfg.server;
    println!(
        "{}: OK: listen {}, ports portmap {} nfs {} mount {} nlm {} nsm {} (0: ephemeral), state {}",
        file.display(),
        s.listen,
        s.ports.portmap,
        s.ports.nfs,
        s.ports.mount,
        s.ports.nlm,
        s.ports.nsm,
        s.state_dir.display()
    );
    for e in &s.exports {
        let clients: Vec<String> =
            e.clients.iter().map(|r| hanfs_server::exports::pattern_string(&r.pattern)).collect();
        println!("  export {} id {} dir {} clients {}", e.name, e.export_id, e.dir.display(), clients.join(" "));
    }
    let table = runtime()?.block_on(hanfs_server::admin::query(&s.state_dir, "exports table")).ok();
    let table = table.filter(|t| !t.starts_with("error: "));
    for line in exports_cli::table_report(file, &cfg, table.as_deref()) {
        println!("{line}");
    }
    let n = &s.nlm;
    let recovery = match n.lock_recovery {
        hanfs_server::config::LockRecovery::Transparent => "transparent",
        hanfs_server::config::LockRecovery::Notify => "notify",
    };
    println!("  nlm lock_recovery {recovery} grace {} s mon_name {}", n.grace_seconds, s.nsm_mon_name());
    match s.metrics_listen {
        Some(addr) => println!("  metrics http://{addr}/metrics"),
        None => println!("  metrics off"),
    }
    if let Some(c) = &s.cluster {
        let k = &c.cluster;
        println!("  cluster {} node {} secret {}", k.name, k.node_id, k.secret_file.display());
        for p in &k.peers {
            let me = if p.id == k.node_id { " (this node)" } else { "" };
            println!("  peer {} {} {:?}{me}", p.id, p.addr, p.role);
        }
        match &c.vip {
            Some(v) => println!("  vip {v}"),
            None => println!("  vip none"),
        }
        let h = &c.hooks;
        println!(
            "  hooks on_promote {:?} on_demote {:?} timeout {} ms",
            h.on_promote.as_deref().unwrap_or("-"),
            h.on_demote.as_deref().unwrap_or("-"),
            h.timeout_ms
        );
    }
    Ok(())
}

/// `exports add|update|remove|reload`: checked here, run by the node (on
/// the leader, in a cluster).
fn exports_change(action: args::ExportsAction) -> Result<(), Failure> {
    let (req, state) = exports_cli::request(action).map_err(|e| Failure::Config(format!("{e:#}")))?;
    let line = exports_cli::line(&req).map_err(|e| Failure::Config(format!("{e:#}")))?;
    ask(state, line)
}

fn state_dir_of(args: &StateArgs) -> Result<PathBuf, Failure> {
    if let Some(d) = &args.state_dir {
        return Ok(d.clone());
    }
    if let Some(file) = &args.config {
        return Ok(config::load_file(file).map_err(Failure::Config)?.server.state_dir);
    }
    Ok(PathBuf::from(QUICK_STATE_DIR))
}

/// Ask the running server through its admin socket; with no server running,
/// read the state directory directly.
fn query(args: StateArgs, command: &str) -> Result<(), Failure> {
    let dir = state_dir_of(&args)?;
    let rt = runtime()?;
    let text = rt.block_on(async {
        match hanfs_server::admin::query(&dir, command).await {
            Ok(text) => Ok(text),
            Err(_) => read_state(&dir, command).await,
        }
    })?;
    if let Some(err) = text.strip_prefix("error: ") {
        return Err(Failure::Runtime(anyhow!("{}", err.trim_end())));
    }
    print!("{text}");
    Ok(())
}

/// Send one command line to the running node (cluster commands: no fallback).
fn ask(args: StateArgs, line: String) -> Result<(), Failure> {
    ask_then(args, line, str::to_owned)
}

/// `status --json`: the `key: value` lines as one JSON object, in order; a
/// repeated key collects its values in an array. Lines without `: ` are
/// kept under `"lines"`.
fn status_json(text: &str) -> String {
    let mut object = serde_json::Map::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = match line.split_once(": ") {
            Some((k, v)) => (k.trim().to_owned(), serde_json::Value::String(v.trim().to_owned())),
            None => ("lines".to_owned(), serde_json::Value::String(line.trim().to_owned())),
        };
        match object.get_mut(&key) {
            None => {
                object.insert(key, value);
            }
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                object.insert(key, serde_json::Value::Array(vec![first, value]));
            }
        }
    }
    let mut out = serde_json::Value::Object(object).to_string();
    out.push('\n');
    out
}

/// `ask`, printing `format(answer)`.
fn ask_then(args: StateArgs, line: String, format: fn(&str) -> String) -> Result<(), Failure> {
    let dir = state_dir_of(&args)?;
    let rt = runtime()?;
    let text = rt.block_on(hanfs_server::admin::query(&dir, &line)).map_err(|e| {
        let sock = hanfs_server::admin::socket_path(&dir);
        anyhow!("no running hanfs-server answers on {} ({e})", sock.display())
    })?;
    if let Some(err) = text.strip_prefix("error: ") {
        return Err(Failure::Runtime(anyhow!("{}", err.trim_end())));
    }
    print!("{}", format(&text));
    Ok(())
}

async fn read_state(dir: &Path, command: &str) -> anyhow::Result<String> {
    let store = dir.join(hanfs_raft::local::STORE_FILE);
    if !store.exists() {
        return Err(anyhow!("no hanfs state in {} (no server has run there; use --state-dir)", dir.display()));
    }
    let local =
        hanfs_raft::local::LocalCommit::open(dir).with_context(|| format!("reading the state in {}", dir.display()))?;
    let text = {
        let state = hanfs_raft::commit::Commit::state(local.as_ref());
        let guard = state.read().map_err(|_| anyhow!("state lock poisoned"))?;
        hanfs_server::admin::answer(&guard, command, None)
    };
    local.shutdown().await;
    Ok(text)
}
