//! Memory of another process (the active server) from /proc/PID/status:
//! `read` once, or `Watcher`, a thread that samples every `SAMPLE_MS` until
//! stopped and keeps the largest VmRSS it saw and the last VmHWM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Interval between two samples.
pub const SAMPLE_MS: u64 = 200;

/// VmRSS and VmHWM in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// The value of a `Key:   1234 kB` line.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// One sample; `None` when the process is gone (or has no such lines).
pub fn read(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Mem { rss_kib: field(&text, "VmRSS")?, hwm_kib: field(&text, "VmHWM")? })
}

/// Samples in a thread until `stop`.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Mem, u64)>,
}

impl Watcher {
    pub fn start(pid: u32) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut max, mut samples) = (Mem::default(), 0u64);
            while !flag.load(Ordering::Relaxed) {
                if let Some(m) = read(pid) {
                    max.rss_kib = max.rss_kib.max(m.rss_kib);
                    max.hwm_kib = max.hwm_kib.max(m.hwm_kib);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(SAMPLE_MS));
            }
            (max, samples)
        });
        Watcher { stop, thread }
    }

    /// Stop; the largest VmRSS and VmHWM seen, and how many samples.
    pub fn stop(self) -> (Mem, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let text = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(field(text, "VmRSS"), Some(1024));
        assert_eq!(field(text, "VmHWM"), Some(2048));
        assert_eq!(field(text, "VmPeak"), None);
    }

    #[test]
    fn reads_own_process() {
        let m = read(std::process::id()).expect("own /proc status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
