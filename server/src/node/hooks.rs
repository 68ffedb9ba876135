//! The `[hooks]` commands: `on_promote` before the VIP is claimed (e.g. mount
//! the shared disk), `on_demote` after it is released (e.g. unmount it). Each
//! runs as `sh -c COMMAND` with the environment `HANFS_EVENT`
//! (`promote`/`demote`) and `HANFS_NODE_ID`, bounded by `hooks.timeout_ms`
//! (killed on timeout), and its outcome and stderr tail are logged.

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
            let _ = child.kill().await;
            tracing::warn!(hook = event, command, timeout_ms, "hook timed out; killed");
            Err(format!("on_{event} `{command}` did not finish within {timeout_ms} ms"))
        }
    }
}
