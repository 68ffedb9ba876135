//! The local admin endpoint: a unix socket `admin.sock` in the state directory,
//! owner-only (0600), line-oriented text. While the server runs, its state
//! store is locked, so `hanfs-server exports` / `clients` / `locks` / `status` /
//! `init` / `switchover` / `stats` ask the running server here; with no server
//! running, `exports`, `clients` and `locks` of a single node read the state
//! directly (`stats` counts only exist in the running process). `exports add
//! | update | remove | reload` change the replicated export table
//! (`crate::exports_admin`): a single node runs them itself, a cluster member
//! on the leader.
//!
//! Protocol: the client sends one command line; the server answers with zero
//! or more lines and closes. A refused or unknown command gets a line starting
//! with `error:`. What a line means is up to the `Handler`: the single node's
//! is `StateHandler` (below), a cluster member's is in `node::control`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use hanfs_raft::commit::Commit;
use hanfs_state::State;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

/// File name of the socket inside the state directory.
pub const ADMIN_SOCKET_NAME: &str = "admin.sock";
/// Longest command line read (an `exports reload` carries a whole export
/// list); a longer one is refused, never cut.
pub const ADMIN_LINE_BYTES_MAX: u64 = hanfs_raft::view::ADMIN_LINE_BYTES_MAX as u64;
/// Longest answer a client reads.
pub const ADMIN_ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Time one admin exchange may take (a switchover waits for an election).
pub const ADMIN_TIMEOUT_MS: u64 = 15_000;

/// Answers one admin command line.
pub trait Handler: Send + Sync + 'static {
    fn answer(&self, line: String) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}

/// The single node's handler: `exports`, `clients` and `locks` from the
/// applied state (`locks` names files through the exports it serves),
/// `stats` from its counters, and the `exports` changes, run here.
pub struct StateHandler {
    pub commit: Arc<dyn Commit>,
    pub serving: crate::vfs::ServingVfs,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Serialises `exports` changes.
    pub admin_op: tokio::sync::Mutex<()>,
}

impl Handler for StateHandler {
    fn answer(&self, line: String) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        if line.trim() == "stats" {
            let text = stats_answer(&self.metrics, "this node (single node)");
            return Box::pin(async move { text });
        }
        if let Some(parsed) = exports_change(&line) {
            return Box::pin(async move {
                match parsed {
                    Ok(req) => {
                        let _one = self.admin_op.lock().await;
                        crate::exports_admin::run(&self.commit, self.serving.live(), &req).await
                    }
                    Err(e) => format!("error: {e}\n"),
                }
            });
        }
        let state = self.commit.state();
        let vfs = self.serving.get();
        let text = {
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            answer(&guard, &line, vfs.as_deref())
        };
        Box::pin(async move { text })
    }
}

/// `stats`: which node answered (`who`), then the counts in nfsstat's layout
/// (`metrics::nfsstat`).
pub fn stats_answer(metrics: &crate::metrics::Metrics, who: &str) -> String {
    format!("Answered by {who}\n\n{}", crate::metrics::nfsstat::render(metrics))
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(ADMIN_SOCKET_NAME)
}

/// `exports`: one line per export the cluster knows, by id: `<id> <name>
/// <dir> <clients>` when served, `<id> <name> (removed)` when not.
pub fn exports_lines(state: &State) -> String {
    state
        .exports()
        .map(|(id, name)| match state.export_spec(id) {
            Some(spec) => format!("{id} {name} {} {}\n", spec.dir, spec.clients),
            None => format!("{id} {name} (removed)\n"),
        })
        .collect()
}

/// An `exports add|update|remove|reload ...` line, parsed; `None` for any
/// other line.
pub fn exports_change(
    line: &str,
) -> Option<Result<crate::exports_admin::Request, crate::exports_admin::ExportsAdminError>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["exports", verb, rest @ ..] if ["add", "update", "remove", "reload"].contains(verb) => {
            let mut all = vec![*verb];
            all.extend_from_slice(rest);
            Some(crate::exports_admin::Request::parse(&all))
        }
        _ => None,
    }
}

/// `clients`: one line per rmtab row, `<client> <path>`.
pub fn clients_lines(state: &State) -> String {
    state.rmtab().map(|(client, path)| format!("{client} {path}\n")).collect()
}

/// The answer to one command line; `vfs`: the exports this node serves, if any.
pub fn answer(state: &State, line: &str, vfs: Option<&crate::vfs::Vfs>) -> String {
    match line.trim() {
        "exports" => exports_lines(state),
        "exports table" => crate::exports_admin::table_lines(state),
        "clients" => clients_lines(state),
        "locks" => crate::locks_view::locks_lines(state, vfs),
        other => format!("error: unknown command `{other}` (try `exports`, `clients`, `locks` or `stats`)\n"),
    }
}

/// Bind the admin socket in `state_dir` (replacing a stale one) and serve it
/// with `handler` until `shutdown`.
pub fn serve(
    state_dir: &Path,
    handler: Arc<dyn Handler>,
    mut shutdown: broadcast::Receiver<()>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(state_dir);
    // A socket file left by a crashed server: nobody listens on it any more.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
                _ = shutdown.recv() => break,
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let wait = Duration::from_millis(ADMIN_TIMEOUT_MS);
                if tokio::time::timeout(wait, exchange(stream, handler.as_ref())).await.is_err() {
                    tracing::debug!("admin client timed out");
                }
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn exchange(stream: UnixStream, handler: &dyn Handler) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd.take(ADMIN_LINE_BYTES_MAX)).read_line(&mut line).await?;
    let text = if line.len() as u64 >= ADMIN_LINE_BYTES_MAX && !line.ends_with('\n') {
        format!("error: command longer than {ADMIN_LINE_BYTES_MAX} bytes\n")
    } else {
        handler.answer(line).await
    };
    wr.write_all(text.as_bytes()).await?;
    wr.shutdown().await
}

/// Ask a running server. Fails (e.g. `NotFound`, `ConnectionRefused`) when none
/// runs on `state_dir`.
pub async fn query(state_dir: &Path, command: &str) -> io::Result<String> {
    let wait = Duration::from_millis(ADMIN_TIMEOUT_MS);
    let exchange = async {
        let mut stream = UnixStream::connect(socket_path(state_dir)).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        stream.shutdown().await?;
        let mut out = String::new();
        stream.take(ADMIN_ANSWER_BYTES_MAX).read_to_string(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(wait, exchange)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "admin socket timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanfs_state::Command;

    #[test]
    fn answers_exports_clients_and_unknown() {
        let mut state = State::default();
        let fs = hanfs_state::FsIdentity { uuid: None, root_type: 1, root_handle: vec![1; 8] };
        state.apply(&Command::RegisterExport { export_id: 7, path: "/export".into(), fs }).unwrap();
        state.apply(&Command::Mount { client: "10.0.0.2".into(), path: "/export".into() }).unwrap();
        assert_eq!(answer(&state, "exports\n", None), "7 /export (removed)\n");
        let spec = hanfs_state::ExportSpec { dir: "/srv/e".into(), clients: "*(ro)".into() };
        state.apply(&Command::ExportSet { export_id: 7, path: "/export".into(), spec }).unwrap();
        assert_eq!(answer(&state, "exports\n", None), "7 /export /srv/e *(ro)\n");
        assert_eq!(answer(&state, "exports table", None), "seeded yes\nexport 7 /export /srv/e *(ro)\n");
        assert_eq!(answer(&state, "clients", None), "10.0.0.2 /export\n");
        assert!(answer(&state, "locks", None).starts_with("nsm_state: 1\n"));
        assert!(answer(&state, "lock", None).starts_with("error: unknown command `lock`"));
    }
}
