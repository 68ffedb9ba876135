//! `hanfs-bench probe`: the physical budget of a non-idempotent call at one
//! request in flight, measured on this machine in the same run as the
//! servers. On the export's filesystem (`--dir`, a scratch directory there):
//! the p50 of the filesystem's own syscalls (`open(O_CREAT|O_EXCL)`+`close`,
//! `rename`, `unlink`, each of `samples` names) and of a durable 4 KiB
//! append (`pwrite` at the end of a file + `fdatasync`). Between two
//! addresses (`--peer` listens, `--peer-from` connects): the p50 of a TCP
//! round trip of a 64-byte request and reply (the echo side is another
//! thread, as a server's reader is). Then `budget_us` per call:
//! syscall + fdatasync + round trip + `BUDGET_SLACK_US`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::stats::{MetricLine, Samples, Summary};

/// The fixed allowance the issue's target adds to the budget, µs.
pub const BUDGET_SLACK_US: u64 = 100;
/// Bytes of the durable append.
pub const APPEND_BYTES: usize = 4096;
/// Bytes of one round-trip message (request and reply).
pub const RTT_MESSAGE_BYTES: usize = 64;
/// Most samples of each kind.
pub const SAMPLES_MAX: u32 = 100_000;

/// Why the probe could not measure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{what} {}: {source}", path.display())]
    Fs { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("round trip {what}: {source}")]
    Net { what: &'static str, source: std::io::Error },
    #[error("samples must be 1..={SAMPLES_MAX}")]
    Samples,
    #[error("the deadline passed before any sample of {0}")]
    NoSample(&'static str),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// A directory on the export's filesystem; the probe makes and removes
    /// `hanfs-bench-probe-<pid>` in it.
    pub dir: PathBuf,
    /// Round trip: the echo side listens on this address (port chosen).
    pub peer: Option<IpAddr>,
    /// Round trip: the calling side binds this address (default: any).
    pub peer_from: Option<IpAddr>,
    pub samples: u32,
    /// Bound on each loop.
    pub time: Duration,
}

fn fs_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ProbeError + 'a {
    move |source| ProbeError::Fs { what, path: path.to_path_buf(), source }
}

fn summary(what: &'static str, s: &Samples) -> Result<Summary, ProbeError> {
    s.summary().ok_or(ProbeError::NoSample(what))
}

/// Runs the probe and returns its lines: `fs_syscall_us`, `fdatasync_4k_us`,
/// `peer_rtt_us` (when `peer` is set) and `budget_us`.
pub fn run(cfg: &ProbeConfig) -> Result<Vec<MetricLine>, ProbeError> {
    if cfg.samples == 0 || cfg.samples > SAMPLES_MAX {
        return Err(ProbeError::Samples);
    }
    let scratch = cfg.dir.join(format!("hanfs-bench-probe-{}", std::process::id()));
    fs::create_dir(&scratch).map_err(fs_err("mkdir", &scratch))?;
    let fs = syscalls(&scratch, cfg);
    let sync = if fs.is_ok() { appends(&scratch, cfg) } else { Err(ProbeError::NoSample("fdatasync")) };
    let removed = fs::remove_dir_all(&scratch).map_err(fs_err("rm -r", &scratch));
    let ((create, rename, unlink), sync) = (fs?, sync?);
    removed?;
    let rtt = match cfg.peer {
        Some(peer) => Some(summary("round trip", &round_trips(peer, cfg.peer_from, cfg)?)?),
        None => None,
    };
    let rtt_p50 = rtt.map_or(0, |r| r.p50);
    let budget = |syscall: u64| syscall + sync.p50 + rtt_p50 + BUDGET_SLACK_US;
    let mut lines = vec![
        MetricLine::new("fs_syscall_us")
            .field("create", create.p50)
            .field("rename", rename.p50)
            .field("remove", unlink.p50)
            .field("n", create.n),
        MetricLine::new("fdatasync_4k_us").summary(&sync),
    ];
    if let Some(r) = rtt {
        lines.push(MetricLine::new("peer_rtt_us").summary(&r));
    }
    lines.push(
        MetricLine::new("budget_us")
            .field("create", budget(create.p50))
            .field("rename", budget(rename.p50))
            .field("remove", budget(unlink.p50))
            .field("rtt_included", u8::from(rtt.is_some())),
    );
    Ok(lines)
}

/// (create, rename, unlink) latencies of `samples` names in `dir`.
fn syscalls(dir: &Path, cfg: &ProbeConfig) -> Result<(Summary, Summary, Summary), ProbeError> {
    let (mut create, mut rename, mut unlink) = (Samples::default(), Samples::default(), Samples::default());
    let deadline = Instant::now() + cfg.time;
    let mut made = 0u32;
    while made < cfg.samples && Instant::now() < deadline {
        let path = dir.join(format!("p{made:06}"));
        let t = Instant::now();
        let f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path);
        drop(f.map_err(fs_err("create", &path))?);
        create.push(t.elapsed());
        made += 1;
    }
    for i in 0..made {
        let (from, to) = (dir.join(format!("p{i:06}")), dir.join(format!("q{i:06}")));
        let t = Instant::now();
        fs::rename(&from, &to).map_err(fs_err("rename", &from))?;
        rename.push(t.elapsed());
    }
    for i in 0..made {
        let path = dir.join(format!("q{i:06}"));
        let t = Instant::now();
        fs::remove_file(&path).map_err(fs_err("unlink", &path))?;
        unlink.push(t.elapsed());
    }
    Ok((summary("create", &create)?, summary("rename", &rename)?, summary("unlink", &unlink)?))
}

/// Latency of a 4 KiB `pwrite` at the end of a growing file + `fdatasync`.
fn appends(dir: &Path, cfg: &ProbeConfig) -> Result<Summary, ProbeError> {
    let path = dir.join("append");
    let file: File = OpenOptions::new().write(true).create_new(true).open(&path).map_err(fs_err("create", &path))?;
    let block = [0x5Au8; APPEND_BYTES];
    let deadline = Instant::now() + cfg.time;
    let mut samples = Samples::default();
    let mut offset = 0u64;
    while samples.len() < cfg.samples as usize && Instant::now() < deadline {
        let t = Instant::now();
        file.write_all_at(&block, offset).map_err(fs_err("pwrite", &path))?;
        file.sync_data().map_err(fs_err("fdatasync", &path))?;
        samples.push(t.elapsed());
        offset += APPEND_BYTES as u64;
    }
    summary("fdatasync", &samples)
}

/// `samples` request/reply round trips to an echo thread on `peer`.
fn round_trips(peer: IpAddr, from: Option<IpAddr>, cfg: &ProbeConfig) -> Result<Samples, ProbeError> {
    let net = |what: &'static str| move |source| ProbeError::Net { what, source };
    let listener = TcpListener::bind(SocketAddr::new(peer, 0)).map_err(net("listen"))?;
    let addr = listener.local_addr().map_err(net("listen"))?;
    let rounds = cfg.samples;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut buf = [0u8; RTT_MESSAGE_BYTES];
        for _ in 0..rounds {
            if conn.read_exact(&mut buf).is_err() {
                break;
            }
            conn.write_all(&buf)?;
        }
        Ok(())
    });
    let result = call_echo(addr, from, cfg);
    let joined = echo.join();
    let samples = result?;
    match joined {
        Ok(r) => r.map_err(net("echo"))?,
        Err(_) => return Err(ProbeError::Net { what: "echo", source: std::io::Error::other("echo thread panicked") }),
    }
    Ok(samples)
}

fn call_echo(addr: SocketAddr, from: Option<IpAddr>, cfg: &ProbeConfig) -> Result<Samples, ProbeError> {
    let net = |what: &'static str| move |source| ProbeError::Net { what, source };
    let mut conn = match from {
        None => TcpStream::connect_timeout(&addr, cfg.time).map_err(net("connect"))?,
        Some(ip) => connect_from(ip, addr).map_err(net("connect"))?,
    };
    conn.set_nodelay(true).map_err(net("nodelay"))?;
    conn.set_read_timeout(Some(cfg.time)).map_err(net("timeout"))?;
    let deadline = Instant::now() + cfg.time;
    let mut samples = Samples::default();
    let mut buf = [0u8; RTT_MESSAGE_BYTES];
    while samples.len() < cfg.samples as usize && Instant::now() < deadline {
        let t = Instant::now();
        conn.write_all(&buf).map_err(net("send"))?;
        conn.read_exact(&mut buf).map_err(net("receive"))?;
        samples.push(t.elapsed());
    }
    // Closing the connection ends the echo thread's loop early if the deadline cut ours.
    drop(conn);
    Ok(samples)
}

/// A TCP connection from `ip` (any port) to `to`, via a raw socket bind:
/// std has no bind-before-connect, tokio's `TcpSocket` does.
fn connect_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(ip, 0))?;
        let stream = socket.connect(to).await?;
        let std_stream = stream.into_std()?;
        std_stream.set_nonblocking(false)?;
        Ok(std_stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(line: &MetricLine, key: &str) -> u64 {
        let rendered = line.render();
        let value = rendered
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key} in {rendered}"));
        value.parse().unwrap_or_else(|_| panic!("{key} of {rendered} is not a number"))
    }

    #[test]
    fn budget_is_the_sum_of_the_parts_and_the_scratch_directory_goes() {
        let dir = std::env::temp_dir().join(format!("hanfs-bench-probe-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let cfg = ProbeConfig {
            dir: dir.clone(),
            peer: Some("127.0.0.1".parse().expect("address")),
            peer_from: None,
            samples: 20,
            time: Duration::from_secs(30),
        };
        let lines = run(&cfg).expect("probe");
        let names: Vec<String> =
            lines.iter().map(|l| l.render().split(' ').next().unwrap_or_default().to_string()).collect();
        assert_eq!(names, ["metric=fs_syscall_us", "metric=fdatasync_4k_us", "metric=peer_rtt_us", "metric=budget_us"]);
        let (fs, sync, rtt, budget) = (&lines[0], &lines[1], &lines[2], &lines[3]);
        assert_eq!(field(fs, "n"), 20);
        assert_eq!(field(rtt, "n"), 20);
        for op in ["create", "rename", "remove"] {
            let parts = field(fs, op) + field(sync, "p50") + field(rtt, "p50") + BUDGET_SLACK_US;
            assert_eq!(field(budget, op), parts, "{op}");
        }
        assert_eq!(fs::read_dir(&dir).expect("read dir").count(), 0, "scratch directory left behind");
        fs::remove_dir(&dir).expect("remove temp dir");
        let zero = ProbeConfig { samples: 0, ..cfg };
        assert!(matches!(run(&zero), Err(ProbeError::Samples)));
    }
}
