//! systemd's service notification protocol (sd_notify(3), `Type=notify`),
//! written out rather than linked: one datagram of `KEY=VALUE` lines to the
//! unix socket named by `$NOTIFY_SOCKET` (a leading `@` is the abstract
//! namespace). `READY=1` once the node serves or follows, `WATCHDOG=1` every
//! half `$WATCHDOG_USEC` while the node's runtime runs, `STOPPING=1` at
//! shutdown, and a `STATUS=` line for `systemctl status`. Without
//! `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The socket variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog period systemd sets from `WatchdogSec=`, in µs.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The pid the watchdog variables are meant for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// Shortest watchdog feeding period honoured (a smaller setting is raised).
pub const WATCHDOG_FEED_MS_MIN: u64 = 50;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd. Returns
/// whether it was sent; a failure is logged once per call site by the caller
/// if it matters (systemd treats a lost READY as a start timeout).
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) else { return false };
    let Ok(sock) = UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = &sent {
        tracing::warn!(error = %e, "cannot notify systemd ({NOTIFY_SOCKET_ENV})");
    }
    sent.is_ok()
}

/// How often to send `WATCHDOG=1`: half the period systemd asked for, if it
/// asked this process.
pub fn watchdog_feed_period() -> Option<Duration> {
    let usec: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var(WATCHDOG_PID_ENV) {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let half_ms = usec / 2 / 1000;
    Some(Duration::from_millis(half_ms.max(WATCHDOG_FEED_MS_MIN)))
}

/// Feeds the watchdog every `watchdog_feed_period()` with the current
/// `status()` line, until dropped (a task on the node's runtime: if that
/// runtime stalls, systemd stops hearing from it and restarts the service).
pub fn spawn_watchdog(status: impl Fn() -> String + Send + 'static) -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_feed_period()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            notify(&format!("WATCHDOG=1\nSTATUS={}", status()));
        }
    }))
}
