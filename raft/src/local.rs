//! `LocalCommit`: the single-node commit path. Callers queue their commands on
//! a bounded channel; one group-commit task drains whatever is queued, writes
//! it as ONE durable log entry (`Store::append`, fsync'd), applies it to the
//! shared state, and answers every caller. One caller's rejected commands
//! never fail the others: the task first runs `State::trial` to find which
//! callers' groups apply, then logs and applies only those.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hanfs_state::{encoded_len, Command, State, Store, COMMAND_BYTES_MAX, COMPACT_ENTRIES};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::commit::{Commit, CommitError, CommitFuture};

/// Requests waiting for the group-commit task; senders wait when it is full.
pub const COMMIT_QUEUE_MAX: usize = 1024;
/// Most commands folded into one log entry (a single larger caller still goes alone).
pub const BATCH_COMMANDS_MAX: usize = 4096;
/// Encoded bytes one caller's commands add to an entry beyond their own size
/// (the `Batch` tag and length prefix wrapping them, generously rounded).
const REQUEST_OVERHEAD_BYTES: u64 = 16;
/// The entry's outer `Batch` tag and length prefix, generously rounded.
const ENTRY_OVERHEAD_BYTES: u64 = 16;
/// Most encoded bytes of one log entry: what the codec accepts, less the
/// outer `Batch`'s own overhead.
pub const ENTRY_BYTES_MAX: u64 = COMMAND_BYTES_MAX - ENTRY_OVERHEAD_BYTES;
/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "hanfs.redb";

const _: () = assert!(COMMIT_QUEUE_MAX > 0);
const _: () = assert!(BATCH_COMMANDS_MAX > 0);
const _: () = assert!(ENTRY_BYTES_MAX > REQUEST_OVERHEAD_BYTES);

type Reply = oneshot::Sender<Result<(), CommitError>>;

struct Request {
    cmds: Vec<Command>,
    /// Encoded size of `cmds` as one member of an entry, computed by the caller.
    bytes: u64,
    reply: Reply,
}

/// Thresholds, fixed at open.
#[derive(Clone, Copy)]
struct Tuning {
    compact_entries: u64,
    entry_bytes_max: u64,
}

pub struct LocalCommit {
    /// ENTRY_BYTES_MAX (smaller in tests).
    entry_bytes_max: u64,
    state: Arc<RwLock<State>>,
    /// Taken (dropped) by `shutdown`, which ends the task.
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    entries_written: AtomicU64,
    last_index: AtomicU64,
}

impl LocalCommit {
    /// Opens (creating if needed) `state_dir/hanfs.redb`, loads the committed
    /// state, and spawns the group-commit task. Call inside a tokio runtime.
    pub fn open(state_dir: &Path) -> Result<Arc<LocalCommit>, CommitError> {
        Self::open_with(state_dir, Tuning { compact_entries: COMPACT_ENTRIES, entry_bytes_max: ENTRY_BYTES_MAX })
    }

    /// `open` with other thresholds (tests use small values).
    fn open_with(state_dir: &Path, tuning: Tuning) -> Result<Arc<LocalCommit>, CommitError> {
        if !state_dir.is_dir() {
            std::fs::create_dir_all(state_dir).map_err(|e| storage(format!("{}: {e}", state_dir.display())))?;
            // Make the new directory's own name durable too.
            if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                hanfs_state::sync_dir(parent).map_err(storage)?;
            }
        }
        let store = Store::open(&state_dir.join(STORE_FILE)).map_err(storage)?;
        let (state, last_index) = store.load().map_err(storage)?;
        let snapshot_index = store.snapshot_index().map_err(storage)?;
        let state = Arc::new(RwLock::new(state));
        let counters = Arc::new(Counters::default());
        counters.last_index.store(last_index, Ordering::Relaxed);
        let entry_bytes_max = tuning.entry_bytes_max.min(ENTRY_BYTES_MAX);
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE_MAX);
        let committer = Committer {
            store: Arc::new(store),
            state: state.clone(),
            counters: counters.clone(),
            next_index: last_index.saturating_add(1),
            snapshot_index,
            compact_entries: tuning.compact_entries.max(1),
            entry_bytes_max,
        };
        let task = tokio::spawn(committer.run(rx));
        Ok(Arc::new(LocalCommit {
            entry_bytes_max,
            state,
            queue: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            counters,
        }))
    }

    /// Log entries written since `open` (each holds one or more callers' commands).
    pub fn entries_written(&self) -> u64 {
        self.counters.entries_written.load(Ordering::Relaxed)
    }

    /// Index of the last durable, applied log entry.
    pub fn last_index(&self) -> u64 {
        self.counters.last_index.load(Ordering::Relaxed)
    }

    /// Stops taking commits, lets queued ones finish, and waits for the task
    /// to close the store (so the directory can be reopened). Later commits
    /// get `NotLeader`.
    pub async fn shutdown(&self) {
        drop(lock(&self.queue).take());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Commit for LocalCommit {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(async move {
            if cmds.is_empty() {
                return Ok(());
            }
            let bytes = cmds.iter().map(encoded_len).fold(REQUEST_OVERHEAD_BYTES, u64::saturating_add);
            if bytes > self.entry_bytes_max {
                let max = self.entry_bytes_max;
                return Err(storage(format!("{bytes} bytes of commands exceed one log entry ({max})")));
            }
            let queue = lock(&self.queue).clone().ok_or(CommitError::NotLeader)?;
            let (reply, answer) = oneshot::channel();
            queue.send(Request { cmds, bytes, reply }).await.map_err(|_| CommitError::NotLeader)?;
            answer.await.map_err(|_| storage("commit task ended before answering"))?
        })
    }

    fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }
}

/// The group-commit task's own data.
struct Committer {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    counters: Arc<Counters>,
    next_index: u64,
    snapshot_index: u64,
    compact_entries: u64,
    entry_bytes_max: u64,
}

impl Committer {
    /// Takes whatever is queued, up to BATCH_COMMANDS_MAX commands and
    /// `entry_bytes_max` (ENTRY_BYTES_MAX) bytes. A request that would
    /// overflow the bytes waits for the next entry; `commit` has already
    /// refused any request that cannot fit an entry on its own.
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match rx.recv().await {
                    Some(request) => request,
                    None => break,
                },
            };
            let mut count = first.cmds.len();
            let mut bytes = first.bytes;
            let mut requests = vec![first];
            while count < BATCH_COMMANDS_MAX {
                let Ok(request) = rx.try_recv() else { break };
                if bytes.saturating_add(request.bytes) > self.entry_bytes_max {
                    carried = Some(request);
                    break;
                }
                count = count.saturating_add(request.cmds.len());
                bytes = bytes.saturating_add(request.bytes);
                requests.push(request);
            }
            self.commit_group(requests).await;
            self.maybe_compact().await;
        }
    }

    /// Trial, then one durable entry for the callers whose groups apply, then
    /// apply it and answer everyone.
    async fn commit_group(&mut self, requests: Vec<Request>) {
        let results = {
            let groups: Vec<&[Command]> = requests.iter().map(|r| r.cmds.as_slice()).collect();
            write(&self.state).trial(&groups)
        };
        let mut accepted = Vec::new();
        let mut members = Vec::new();
        for (request, result) in requests.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    members.push(Command::Batch(request.cmds));
                    accepted.push(request.reply);
                }
                Err(e) => {
                    let _ = request.reply.send(Err(CommitError::Rejected(e)));
                }
            }
        }
        if members.is_empty() {
            return;
        }
        let outcome = self.append_and_apply(Command::Batch(members)).await;
        for reply in accepted {
            let _ = reply.send(outcome.clone());
        }
    }

    async fn append_and_apply(&mut self, entry: Command) -> Result<(), CommitError> {
        let index = self.next_index;
        let store = self.store.clone();
        let entry = tokio::task::spawn_blocking(move || store.append(index, &entry).map(|()| entry))
            .await
            .map_err(|e| storage(format!("append task: {e}")))?
            .map_err(storage)?;
        self.next_index = index.saturating_add(1);
        self.counters.entries_written.fetch_add(1, Ordering::Relaxed);
        // The trial just showed every member applies to this same state (only
        // this task writes it), so an error here is a bug; it is still
        // deterministic, so replaying the log reproduces the same state.
        let applied = write(&self.state).apply(&entry);
        debug_assert!(applied.is_ok(), "entry {index} passed trial but failed apply: {applied:?}");
        self.counters.last_index.store(index, Ordering::Relaxed);
        applied.map_err(CommitError::Rejected)
    }

    /// Every `compact_entries` (COMPACT_ENTRIES) entries, snapshot the state
    /// and drop the log rows it covers. The read lock is held only inside the
    /// blocking task, never across an `.await`.
    async fn maybe_compact(&mut self) {
        let last = self.next_index.saturating_sub(1);
        if last.saturating_sub(self.snapshot_index) < self.compact_entries {
            return;
        }
        let store = self.store.clone();
        let state = self.state.clone();
        let done = tokio::task::spawn_blocking(move || {
            let state = state.read().unwrap_or_else(|p| p.into_inner());
            store.compact(&state, last)
        })
        .await;
        match done {
            Ok(Ok(())) => self.snapshot_index = last,
            // Not fatal: the log still holds everything; retry after the next entry.
            Ok(Err(e)) => tracing::warn!(error = %e, index = last, "state compaction failed"),
            Err(e) => tracing::warn!(error = %e, index = last, "state compaction task failed"),
        }
    }
}

fn storage(e: impl std::fmt::Display) -> CommitError {
    CommitError::Storage(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
