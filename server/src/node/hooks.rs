//! The `[hooks]` commands: `on_promote` before the VIP is claimed (e.g. mount
//! the shared disk), `on_demote` after it is released (e.g. unmount it). Each
//! runs as `sh -c COMMAND` with the environment `HANFS_EVENT`
//! (`promote`/`demote`) and `HANFS_NODE_ID`, bounded by `hooks.timeout_ms`
//! (its whole process group killed on timeout), and its outcome and stderr tail are logged.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Bytes of a hook's stderr kept for the log.
pub const HOOK_STDERR_BYTES_MAX: u64 = 4096;

/// Run `command` for `event`. `Ok` when there is none or it exited 0.
pub async fn run(event: &'static str, command: Option<&str>, node_id: u64, timeout_ms: u64) -> Result<(), String> {
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
        .map_err(|e| format!("on_{event} `{command}`: cannot start sh: {e}"))?;
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
            Err(format!("on_{event} `{command}` failed ({status}): {err}"))
        }
        Ok((Err(e), _)) => Err(format!("on_{event} `{command}`: {e}")),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            tracing::warn!(hook = event, command, timeout_ms, "hook timed out; killed");
            Err(format!("on_{event} `{command}` did not finish within {timeout_ms} ms"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_hook_success_failure_and_timeout() {
        assert_eq!(run("promote", None, 1, 1_000).await, Ok(()));
        assert_eq!(
            run("promote", Some("test \"$HANFS_EVENT\" = promote && test \"$HANFS_NODE_ID\" = 7"), 7, 10_000).await,
            Ok(())
        );
        let failed = run("demote", Some("echo disk busy >&2; exit 3"), 1, 10_000).await.err().unwrap_or_default();
        assert!(failed.contains("on_demote") && failed.contains("disk busy"), "{failed}");
        let slow = run("promote", Some("sleep 30; true"), 1, 100).await.err().unwrap_or_default();
        assert!(slow.contains("did not finish within 100 ms"), "{slow}");
    }
}
