//! The resource limits of the RPC transport, each named once with its unit:
//! how many TCP connections a node keeps (in total and per client address),
//! how long an idle one lives, and how many bytes of requests being read and
//! of replies not yet written the whole node holds. `Limits` carries them
//! (defaults from the constants here; `[server] idle_timeout_seconds` and
//! `connections_per_address_max` come from the config file, the rest only
//! change in tests). Hitting a limit is counted in `metrics::ConnStats` and
//! logged through a `LogLimiter`: at most once per `LIMIT_LOG_INTERVAL_MS`
//! per limit, with the number of hits since the last line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::record::RECORD_BYTES_MAX;

/// Open TCP connections per node, over all listeners. At the limit a new
/// connection closes the least recently active idle one (as knfsd's
/// `svc_check_conn_limits` closes its oldest temporary socket); if every
/// connection is busy the new one is refused.
pub const CONNECTIONS_MAX: usize = 1024;
/// Default open TCP connections from one client address (all listeners): a
/// Linux client uses one per mount (16 with `nconnect=16`) plus a few for
/// MOUNT, NLM and NSM; 64 leaves room for a few hosts behind one NAT
/// address while 16 addresses are needed to fill `CONNECTIONS_MAX`.
pub const CONNECTIONS_PER_ADDRESS_DEFAULT: usize = 64;
/// Default idle timeout: a connection with no call running, nothing received
/// and no reply byte written for this long is closed. knfsd closes temporary
/// sockets after 6 to 12 minutes of disuse; the Linux client closes its own
/// idle connection after 5 minutes, so with 6 minutes here an ordinary client
/// always closes first and this only catches peers that never do.
pub const IDLE_TIMEOUT_SECONDS_DEFAULT: u64 = 360;
/// Accepted `idle_timeout_seconds` range (one day at most).
pub const IDLE_TIMEOUT_SECONDS_MIN: u64 = 1;
pub const IDLE_TIMEOUT_SECONDS_MAX: u64 = 86_400;
/// Idle connections are looked for this many times per idle timeout, so one
/// is closed between 1 and 1 + 1/`IDLE_SWEEPS_PER_TIMEOUT` timeouts after its
/// last activity.
pub const IDLE_SWEEPS_PER_TIMEOUT: u32 = 6;
/// Bytes of replies one connection may hold in the server, reserved for its
/// running calls or produced and not yet written to the socket: two 1 MiB
/// READ replies. A connection over it starts no new call and is not read
/// from until its replies drain; the kernel's socket buffer holds more.
pub const CONN_REPLY_BYTES_MAX: usize = 2 * 1024 * 1024 + 128 * 1024;
/// What a connection reserves per call before it has seen a reply: the
/// largest reply (a 1 MiB READ), so a new connection that never reads its
/// replies cannot start many large ones at once. Each reply then moves the
/// estimate (`reply_estimate`).
pub const REPLY_ESTIMATE_BYTES_INITIAL: usize = 1024 * 1024 + 4096;
/// Smallest per-call reply reservation.
pub const REPLY_ESTIMATE_BYTES_MIN: usize = 512;
/// Bytes of replies the whole node holds (reserved or not yet written), over
/// every connection. A call waits for room before it starts.
pub const REPLY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Bytes of requests the whole node holds: records being read past a
/// connection's base buffer, and the arguments of calls not yet finished. A
/// connection waits for room before it reads a large record.
pub const REQUEST_BYTES_MAX: usize = 128 * 1024 * 1024;
/// One line per limit at most this often.
pub const LIMIT_LOG_INTERVAL_MS: u64 = 60_000;

const _: () = assert!(CONNECTIONS_MAX > 0 && CONNECTIONS_PER_ADDRESS_DEFAULT > 0);
const _: () = assert!(CONNECTIONS_PER_ADDRESS_DEFAULT <= CONNECTIONS_MAX);
const _: () = assert!(IDLE_TIMEOUT_SECONDS_MIN <= IDLE_TIMEOUT_SECONDS_DEFAULT);
const _: () = assert!(IDLE_TIMEOUT_SECONDS_DEFAULT <= IDLE_TIMEOUT_SECONDS_MAX);
const _: () = assert!(IDLE_SWEEPS_PER_TIMEOUT > 0);
const _: () = assert!(REPLY_ESTIMATE_BYTES_MIN <= REPLY_ESTIMATE_BYTES_INITIAL);
const _: () = assert!(CONN_REPLY_BYTES_MAX <= REPLY_BYTES_MAX);
// A whole largest record always fits the request budget.
const _: () = assert!(RECORD_BYTES_MAX as usize <= REQUEST_BYTES_MAX);

/// The limits one node's transport enforces (see the constants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections_max: usize,
    pub connections_per_address_max: usize,
    pub idle_timeout: Duration,
    pub conn_reply_bytes_max: usize,
    pub reply_bytes_max: usize,
    pub request_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: CONNECTIONS_MAX,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_DEFAULT,
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_SECONDS_DEFAULT),
            conn_reply_bytes_max: CONN_REPLY_BYTES_MAX,
            reply_bytes_max: REPLY_BYTES_MAX,
            request_bytes_max: REQUEST_BYTES_MAX,
        }
    }
}

impl Limits {
    /// How often idle connections are looked for.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / IDLE_SWEEPS_PER_TIMEOUT).max(Duration::from_millis(10))
    }

    /// Every limit with its name and unit, as `/metrics` and the README show them.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        [
            ("connections_max", n(self.connections_max)),
            ("connections_per_address_max", n(self.connections_per_address_max)),
            ("idle_timeout_seconds", self.idle_timeout.as_secs()),
            ("conn_reply_bytes_max", n(self.conn_reply_bytes_max)),
            ("reply_bytes_max", n(self.reply_bytes_max)),
            ("request_bytes_max", n(self.request_bytes_max)),
        ]
    }
}

/// The reply reservation after a reply of `size` bytes, from `estimate`: up
/// at once to a larger reply, down by half the difference for a smaller one.
pub fn reply_estimate(estimate: usize, size: usize) -> usize {
    let next = if size >= estimate { size } else { estimate - (estimate - size) / 2 };
    next.max(REPLY_ESTIMATE_BYTES_MIN)
}

/// Rate-limits the log line of one limit: `hit` says whether to log now
/// (the first hit, then at most once per `LIMIT_LOG_INTERVAL_MS`) and how
/// many hits the line stands for.
pub struct LogLimiter {
    start: Instant,
    /// Milliseconds after `start` of the last line, plus one (0: never).
    last_ms: AtomicU64,
    /// Hits since the last line.
    pending: AtomicU64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter { start: Instant::now(), last_ms: AtomicU64::new(0), pending: AtomicU64::new(0) }
    }
}

impl LogLimiter {
    /// Count a hit; `Some(hits)` if a line is due now.
    pub fn hit(&self) -> Option<u64> {
        let hits = self.pending.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LIMIT_LOG_INTERVAL_MS;
        if due && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.pending.fetch_sub(hits.min(self.pending.load(Ordering::Relaxed)), Ordering::Relaxed);
            return Some(hits);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_jumps_up_and_halves_down() {
        assert_eq!(reply_estimate(1000, 5000), 5000);
        assert_eq!(reply_estimate(5000, 1000), 3000);
        assert_eq!(reply_estimate(600, 0), REPLY_ESTIMATE_BYTES_MIN);
        let mut e = REPLY_ESTIMATE_BYTES_INITIAL;
        for _ in 0..16 {
            e = reply_estimate(e, 100);
        }
        assert!(e < 2 * REPLY_ESTIMATE_BYTES_MIN, "16 small replies bring it down: {e}");
    }

    #[test]
    fn a_limit_is_logged_once_then_rate_limited() {
        let l = LogLimiter::default();
        assert_eq!(l.hit(), Some(1));
        assert_eq!(l.hit(), None);
        assert_eq!(l.hit(), None);
    }

    #[test]
    fn the_sweep_runs_several_times_per_timeout() {
        let l = Limits { idle_timeout: Duration::from_secs(360), ..Limits::default() };
        assert_eq!(l.sweep_interval(), Duration::from_secs(60));
    }
}
