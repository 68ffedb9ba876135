//! The `[hooks]` commands: `on_promote` before the VIP is claimed (e.g. mount
//! the shared disk), `on_demote` after it is released (e.g. unmount it). Each
//! runs as `sh -c COMMAND` with the environment `HANFS_EVENT`
//! (`promote`/`demote`) and `HANFS_NODE_ID`, bounded by `hooks.timeout_ms`
//! (its whole process group killed on timeout), and its outcome and stderr tail are logged.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Bytes of a hook's stderr kept for the log.
pub const HOOK_STDERR_BYTES_MAX: u64 = 4096;

/// Why a hook did not succeed. Each message names the hook and its command.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("on_{event} `{command}`: cannot start sh: {error}")]
    Spawn { event: &'static str, command: String, error: io::Error },
    /// It ran and exited non-zero (or by a signal); the tail of its stderr.
    #[error("on_{event} `{command}` failed ({status}): {stderr}")]
    Failed { event: &'static str, command: String, status: ExitStatus, stderr: String },
    /// Waiting for it failed.
    #[error("on_{event} `{command}`: {error}")]
    Wait { event: &'static str, command: String, error: io::Error },
    /// It outran `timeout_ms`; its process group was killed.
    #[error("on_{event} `{command}` did not finish within {timeout_ms} ms")]
    TimedOut { event: &'static str, command: String, timeout_ms: u64 },
}

/// Run `command` for `event`. `Ok` when there is none or it exited 0.
pub async fn run(event: &'static str, command: Option<&str>, node_id: u64, timeout_ms: u64) -> Result<(), HookError> {
    let Some(command) = command else {
        return Ok(());
    };
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("HANFS_EVENT", event)
        .env("HANFS_NODE_ID", node_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(|error| HookError::Spawn { event, command: command.to_string(), error })?;
    let stderr = child.stderr.take();
    let read_err = async move {
        let mut text = String::new();
        if let Some(s) = stderr {
            let _ = s.take(HOOK_STDERR_BYTES_MAX).read_to_string(&mut text).await;
        }
        text
    };
    let waited = tokio::time::timeout(Duration::from_millis(timeout_ms), async {
        let (status, err) = tokio::join!(child.wait(), read_err);
        (status, err)
    })
    .await;
    let took_ms = started.elapsed().as_millis();
    match waited {
        Ok((Ok(status), _)) if status.success() => {
            tracing::info!(hook = event, command, took_ms, "hook succeeded");
            Ok(())
        }
        Ok((Ok(status), err)) => {
            let err = err.trim();
            tracing::warn!(hook = event, command, took_ms, %status, stderr = err, "hook failed");
            Err(HookError::Failed { event, command: command.to_string(), status, stderr: err.to_string() })
        }
        Ok((Err(error), _)) => Err(HookError::Wait { event, command: command.to_string(), error }),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            tracing::warn!(hook = event, command, timeout_ms, "hook timed out; killed");
            Err(HookError::TimedOut { event, command: command.to_string(), timeout_ms })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_hook_success_failure_and_timeout() {
        let none = run("promote", None, 1, 1_000).await;
        assert!(none.is_ok(), "{none:?}");
        let ok =
            run("promote", Some("test \"$HANFS_EVENT\" = promote && test \"$HANFS_NODE_ID\" = 7"), 7, 10_000).await;
        assert!(ok.is_ok(), "{ok:?}");
        let failed = run("demote", Some("echo disk busy >&2; exit 3"), 1, 10_000).await;
        assert!(matches!(failed, Err(HookError::Failed { .. })), "{failed:?}");
        let failed = failed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(failed.contains("on_demote") && failed.contains("disk busy"), "{failed}");
        let slow = run("promote", Some("sleep 30; true"), 1, 100).await;
        assert!(matches!(slow, Err(HookError::TimedOut { timeout_ms: 100, .. })), "{slow:?}");
        let slow = slow.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(slow.contains("did not finish within 100 ms"), "{slow}");
    }
}
