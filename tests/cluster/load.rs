//! No false failover under load (issue 11 item 1): a three-node cluster on
//! this machine, with every core busy (a CPU hog of `HOG_THREADS` spinning
//! threads, more than the cores), NFS load from the test (`LOAD_CLIENTS`
//! connections creating files and reading their attributes back) and Raft
//! snapshot builds forced during it (a low snapshot threshold through
//! `HANFS_TEST_SNAPSHOT_EVERY`, plus `debug snapshot` on the active every
//! `SNAPSHOT_EVERY_S`), for `LOAD_SECONDS_DEFAULT` seconds (or
//! `HANFS_LOADFLAP_SECS`: `interop/loadflap.sh` runs it for 30 minutes).
//! Every node stays alive, so every demotion is a false failover: the test
//! reads them from the nodes' logs (`demoted` lines, with their reasons) and
//! requires none, the same active from start to end and the same term.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_types::nfs3::*;

use super::harness::*;
use crate::nfs3_ops::*;
use crate::util::*;

/// How long the load runs in CI; `HANFS_LOADFLAP_SECS` overrides it.
const LOAD_SECONDS_DEFAULT: u64 = 60;
/// Longest run `HANFS_LOADFLAP_SECS` may ask for (2 hours).
const LOAD_SECONDS_MAX: u64 = 7_200;
/// Spinning threads: more than this machine's 2 cores, like `stress-ng --cpu 4`.
const HOG_THREADS: usize = 4;
/// Concurrent NFS clients of the load.
const LOAD_CLIENTS: usize = 4;
/// Applied entries between two snapshots on the nodes (the default is 10,000).
pub(super) const SNAPSHOT_EVERY_ENTRIES: &str = "500";
/// A `debug snapshot` on the active this often as well.
const SNAPSHOT_EVERY_S: u64 = 10;
/// Bound on one NFS call or mount of the load; a call that takes longer
/// counts as an error and the client reconnects.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// Files each client creates in its directory before it starts over in a new one.
const FILES_PER_DIR: u64 = 2_000;

/// What the load clients did.
#[derive(Default)]
struct LoadCounts {
    ops: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

/// The run's length: `HANFS_LOADFLAP_SECS` or the CI default.
fn load_seconds() -> u64 {
    env_count("HANFS_LOADFLAP_SECS", LOAD_SECONDS_DEFAULT, LOAD_SECONDS_MAX)
}

/// The number in environment variable `name` (1..=`max`), or `default`
/// when it is not set.
pub(super) fn env_count(name: &str, default: u64, max: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => panic!("{name}={v}: want 1..={max}"),
        },
    }
}

/// A test's CPU hog (`cpu_hog`) and NFS load (`spawn_load`), running until
/// `until` or `finish`.
pub(super) struct LoadRun {
    stop: Arc<AtomicBool>,
    hog: Vec<std::thread::JoinHandle<u64>>,
    load: std::thread::JoinHandle<()>,
    counts: Arc<LoadCounts>,
}

/// What a `LoadRun` did.
pub(super) struct LoadDone {
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) mounts: u64,
    /// Hog loops of 100,000 spins.
    pub(super) spins: u64,
}

impl LoadRun {
    pub(super) fn start(cl: &Cluster, until: Instant) -> LoadRun {
        let stop = Arc::new(AtomicBool::new(false));
        let hog = cpu_hog(stop.clone(), until);
        let counts = Arc::new(LoadCounts::default());
        let load = spawn_load(cl.service, cl.ports, until, stop.clone(), counts.clone());
        LoadRun { stop, hog, load, counts }
    }

    /// Stop both and wait for them.
    pub(super) fn finish(self) -> LoadDone {
        self.stop.store(true, Ordering::Relaxed);
        let spins = self.hog.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        self.load.join().expect("load thread");
        let c = &self.counts;
        LoadDone {
            ops: c.ops.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            mounts: c.reconnects.load(Ordering::Relaxed),
            spins,
        }
    }
}

/// The NFS load: `LOAD_CLIENTS` clients on a runtime of their own, until
/// `until` or until `stop` turns true.
fn spawn_load(
    service: std::net::Ipv4Addr,
    ports: ServicePorts,
    until: Instant,
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let tasks: Vec<_> =
                (0..LOAD_CLIENTS).map(|n| tokio::spawn(client(n, service, ports, until, counts.clone()))).collect();
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
            for t in tasks {
                t.abort();
            }
        });
    })
}

/// Spin on every core until `stop` or `until` (no threads when
/// `HANFS_LOADFLAP_OWN_HOG=0`: `interop/loadflap.sh` runs `stress-ng` instead).
fn cpu_hog(stop: Arc<AtomicBool>, until: Instant) -> Vec<std::thread::JoinHandle<u64>> {
    let threads = if std::env::var("HANFS_LOADFLAP_OWN_HOG").is_ok_and(|v| v == "0") { 0 } else { HOG_THREADS };
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spins = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    for _ in 0..100_000 {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                }
                spins
            })
        })
        .collect()
}

/// Mount `/export` through the service address, bounded; None on failure.
async fn mount(service: std::net::Ipv4Addr, ports: ServicePorts) -> Option<Conn> {
    let b = Nfs3ConnectionBuilder::new(TokioConnector, service.to_string(), EXPORT_NAME)
        .portmapper_port(ports.portmap)
        .mount_port(ports.mount)
        .nfs3_port(ports.nfs)
        .credential(auth_sys(0, 0, &[]));
    match tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), b.mount()).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

/// One client: MKDIR a directory of its own, then CREATE files in it and
/// GETATTR each, until `until`; reconnect (bounded by the deadline) on any
/// error.
async fn client(n: usize, service: std::net::Ipv4Addr, ports: ServicePorts, until: Instant, counts: Arc<LoadCounts>) {
    let call = Duration::from_millis(CALL_TIMEOUT_MS);
    let mut round = 0u64;
    while Instant::now() < until {
        let Some(mut c) = mount(service, ports).await else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            continue;
        };
        counts.reconnects.fetch_add(1, Ordering::Relaxed);
        'dirs: while Instant::now() < until {
            round += 1;
            let root = c.root_nfs_fh3();
            let args = MKDIR3args { where_: diropargs(&root, &format!("c{n}-r{round}")), attributes: mode_attr(0o755) };
            let dir = match tokio::time::timeout(call, c.mkdir(&args)).await {
                Ok(Ok(Nfs3Result::Ok(MKDIR3resok { obj: Nfs3Option::Some(fh), .. }))) => fh,
                _ => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break 'dirs;
                }
            };
            for i in 0..FILES_PER_DIR {
                if Instant::now() >= until {
                    return;
                }
                let args = CREATE3args {
                    where_: diropargs(&dir, &format!("f{i}")),
                    how: createhow3::GUARDED(mode_attr(0o644)),
                };
                let fh = match tokio::time::timeout(call, c.create(&args)).await {
                    Ok(Ok(Nfs3Result::Ok(CREATE3resok { obj: Nfs3Option::Some(fh), .. }))) => Some(fh),
                    _ => None,
                };
                let Some(fh) = fh else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break 'dirs;
                };
                match tokio::time::timeout(call, c.getattr(&GETATTR3args { object: fh })).await {
                    Ok(Ok(Nfs3Result::Ok(_))) => {
                        counts.ops.fetch_add(2, Ordering::Relaxed);
                    }
                    _ => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        break 'dirs;
                    }
                }
            }
        }
    }
}

/// The lines of node `id`'s log that record a demotion (and the
/// leadership watch's reasons, where the binary logs them).
pub(super) fn demotion_lines(cl: &mut Cluster, id: u32) -> Vec<String> {
    let text = std::fs::read_to_string(&cl.node(id).log).unwrap_or_default();
    text.lines().filter(|l| l.contains(" demoted") || l.contains("leadership lost")).map(str::to_string).collect()
}

/// Lines that measure how close the run came to a false failover: a
/// leader's lease nearly expired, a slow Raft log write, a snapshot built.
fn measurement_lines(cl: &mut Cluster, id: u32) -> Vec<String> {
    let text = std::fs::read_to_string(&cl.node(id).log).unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.contains("lease nearly expired") || l.contains("slow raft log writes") || l.contains("snapshot built")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn cluster_keeps_its_active_under_cpu_hog_nfs_load_and_snapshot_builds() {
    let seconds = load_seconds();
    let mut cl = Cluster::start_with_env("load", &[("HANFS_TEST_SNAPSHOT_EVERY", SNAPSHOT_EVERY_ENTRIES)]);
    let leader = cl.wait_serving(&[]);
    let term_before = cl.term(leader);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let run = LoadRun::start(&cl, until);
    let mut snapshots = Vec::new();
    let mut next_snapshot = started + Duration::from_secs(SNAPSHOT_EVERY_S);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(POLL_MS * 10));
        if Instant::now() >= next_snapshot {
            next_snapshot += Duration::from_secs(SNAPSHOT_EVERY_S);
            let out = cl.cli_with(leader, &["debug", "snapshot"], &[]);
            snapshots.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }
    let LoadDone { ops, errors, mounts, spins } = run.finish();
    let term_after = cl.term(leader);
    let mut demotions = Vec::new();
    let mut low = 0;
    for id in NODE_IDS {
        for line in demotion_lines(&mut cl, id) {
            demotions.push(format!("node {id}: {line}"));
        }
        for line in measurement_lines(&mut cl, id) {
            low += usize::from(line.contains("lease nearly expired"));
            println!("node {id}: {line}");
        }
    }
    let built: Vec<&String> = snapshots.iter().filter(|s| s.starts_with("ok")).collect();
    println!(
        "load for {seconds} s: {ops} NFS ops, {errors} errors, {mounts} mounts, {} of {} forced snapshots built, \
         {spins} hog spins (x100k), {low} low-lease warnings, {} demotion lines, term {term_before:?} -> {term_after:?}",
        built.len(),
        snapshots.len(),
        demotions.len(),
    );
    for d in &demotions {
        println!("{d}");
    }
    assert!(ops > 0, "the load made no progress ({errors} errors)");
    assert!(!built.is_empty(), "no snapshot was built during the load: {snapshots:?}");
    assert!(demotions.is_empty(), "{} demotions with every node alive:\n{}", demotions.len(), demotions.join("\n"));
    assert_eq!(term_before, term_after, "the term changed: an election happened with every node alive");
    assert_eq!(cl.wait_serving(&[]), leader, "the same active serves after the load");
}
