//! Group commit shared by `LocalCommit` and `RaftCommit`: the bounded request
//! queue, the task that drains a batch (bounded in commands and bytes), the
//! per-caller `State::trial` (one caller's rejected commands answer only that
//! caller with `CommitError::Rejected`), one `Command::Batch` entry of the
//! accepted groups, and answering every waiter. How an entry is made durable
//! (redb append and apply, or a Raft proposal) is the `Durable` implementor's.
//! Each caller's latency and each entry's size are counted in
//! `crate::stats::CommitStats` (read-only counters for `/metrics`).
//!
//! Deferred requests (`submit_deferred`: DRC reply records, whose call has
//! already answered its client) do not start an entry of their own at once:
//! they ride in the next entry written for anyone else, or go alone after
//! `DEFER_US_MAX`. At one request in flight the next call's intent arrives
//! within a round trip, so each call pays one durable write instead of two
//! (the previous record's, then its own intent's). Requests are never
//! reordered: an entry always takes the oldest queued ones first.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hanfs_state::{encoded_len, Command, Outcome, State};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::commit::CommitError;
use crate::stats::CommitStats;

/// Requests waiting for the group-commit task; senders wait when it is full.
pub const COMMIT_QUEUE_MAX: usize = 1024;
/// Most commands folded into one log entry (a single larger caller still goes alone).
pub const BATCH_COMMANDS_MAX: usize = 4096;
/// Encoded bytes one caller's commands add to an entry beyond their own size
/// (the `Batch` tag and length prefix wrapping them, generously rounded).
pub const REQUEST_OVERHEAD_BYTES: u64 = 16;

/// Longest a deferred request waits for another caller's entry before it
/// is written alone, in µs. A retransmission meanwhile is answered from the
/// in-progress reply, and a crash meanwhile leaves the call's durable
/// intent, so the wait costs nothing but the time a record is held.
pub const DEFER_US_MAX: u64 = 2_000;
/// Deferred requests held at most; one more writes them at once.
pub const DEFERRED_MAX: usize = 256;

const _: () = assert!(COMMIT_QUEUE_MAX > 0);
const _: () = assert!(DEFERRED_MAX > 0 && DEFERRED_MAX <= COMMIT_QUEUE_MAX);
const _: () = assert!(BATCH_COMMANDS_MAX > 0);

/// How one batch entry becomes durable and applied.
pub(crate) trait Durable: Send + 'static {
    /// Checked before each batch's trial: `Some(e)` answers every caller of
    /// the batch with `e` and writes nothing.
    fn refuse(&self) -> Option<CommitError>;
    /// Make `entry` durable and applied to the shared state; count it in
    /// `entries_written` once it is written.
    fn write(
        &mut self,
        entry: Command,
        entries_written: &AtomicU64,
    ) -> impl Future<Output = Result<Outcome, CommitError>> + Send;
    /// Runs after every batch, whether or not it wrote an entry.
    fn after_batch(&mut self) -> impl Future<Output = ()> + Send;
}

type Reply = oneshot::Sender<Result<Vec<Outcome>, CommitError>>;

struct Request {
    cmds: Vec<Command>,
    /// May wait for another caller's entry (`submit_deferred`).
    deferred: bool,
    /// Encoded size of `cmds` as one member of an entry, computed by the caller.
    bytes: u64,
    reply: Reply,
}

/// The caller side of the group-commit task.
pub(crate) struct Batcher {
    entry_bytes_max: u64,
    /// Taken (dropped) by `shutdown`, which ends the task.
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    entries_written: Arc<AtomicU64>,
    stats: Arc<CommitStats>,
}

impl Batcher {
    /// Spawns the group-commit task on `runtime`; entries hold at most
    /// `entry_bytes_max` encoded command bytes.
    pub(crate) fn start_on<D: Durable>(
        runtime: &tokio::runtime::Handle,
        durable: D,
        state: Arc<RwLock<State>>,
        entry_bytes_max: u64,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE_MAX);
        let entries_written = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(CommitStats::default());
        let task =
            Task { durable, state, entry_bytes_max, entries_written: entries_written.clone(), stats: stats.clone() };
        Batcher {
            entry_bytes_max,
            queue: Mutex::new(Some(tx)),
            task: Mutex::new(Some(runtime.spawn(task.run(rx)))),
            entries_written,
            stats,
        }
    }

    /// Queues `cmds` and waits for the entry holding them (or their
    /// rejection); counts the wait in `CommitStats`.
    pub(crate) async fn submit(&self, cmds: Vec<Command>) -> Result<Vec<Outcome>, CommitError> {
        self.submit_as(cmds, false).await
    }

    /// `submit` for commands nobody waits on before answering a client: they
    /// join the next entry written for another caller, or go alone after
    /// `DEFER_US_MAX` (module doc).
    pub(crate) async fn submit_deferred(&self, cmds: Vec<Command>) -> Result<Vec<Outcome>, CommitError> {
        self.submit_as(cmds, true).await
    }

    async fn submit_as(&self, cmds: Vec<Command>, deferred: bool) -> Result<Vec<Outcome>, CommitError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let result = self.submit_counted(cmds, deferred).await;
        let waited_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.latency_us.observe(waited_us);
        if result.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn submit_counted(&self, cmds: Vec<Command>, deferred: bool) -> Result<Vec<Outcome>, CommitError> {
        let bytes = cmds.iter().map(encoded_len).fold(REQUEST_OVERHEAD_BYTES, u64::saturating_add);
        if bytes > self.entry_bytes_max {
            let max = self.entry_bytes_max;
            return Err(storage(format!("{bytes} bytes of commands exceed one log entry ({max})")));
        }
        let queue = lock(&self.queue).clone().ok_or(CommitError::NotLeader)?;
        let (reply, answer) = oneshot::channel();
        queue.send(Request { cmds, deferred, bytes, reply }).await.map_err(|_| CommitError::NotLeader)?;
        answer.await.map_err(|_| storage("commit task ended before answering"))?
    }

    /// Log entries written since `start` (each holds one or more callers' commands).
    pub(crate) fn entries_written(&self) -> u64 {
        self.entries_written.load(Ordering::Relaxed)
    }

    /// The counters of this commit path.
    pub(crate) fn stats(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }

    /// Stops taking commits, lets queued ones finish, and waits for the task.
    /// Later commits get `NotLeader`.
    pub(crate) async fn shutdown(&self) {
        drop(lock(&self.queue).take());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The group-commit task's own data.
struct Task<D> {
    durable: D,
    state: Arc<RwLock<State>>,
    entry_bytes_max: u64,
    entries_written: Arc<AtomicU64>,
    stats: Arc<CommitStats>,
}

impl<D: Durable> Task<D> {
    /// Writes entries one at a time, so the trial always runs on exactly the
    /// state the next entry applies to. Each entry takes the oldest queued
    /// requests, up to BATCH_COMMANDS_MAX commands and `entry_bytes_max`
    /// bytes (a request that would overflow waits for the next entry;
    /// `submit` has already refused any request that cannot fit one alone).
    /// While only deferred requests are queued, the task waits for another
    /// request, `DEFER_US_MAX` after the oldest of them, or `DEFERRED_MAX` of
    /// them, whichever comes first. When the queue closes, what is left is
    /// written before the task ends.
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut pending: VecDeque<Request> = VecDeque::new();
        let mut oldest_deferred: Option<tokio::time::Instant> = None;
        let mut open = true;
        loop {
            if open && !must_write(&pending) {
                let next = match oldest_deferred {
                    None => rx.recv().await,
                    Some(since) => {
                        let deadline = since + Duration::from_micros(DEFER_US_MAX);
                        tokio::select! {
                            next = rx.recv() => next,
                            () = tokio::time::sleep_until(deadline) => {
                                self.write_front(&mut pending).await;
                                oldest_deferred = pending.front().map(|_| tokio::time::Instant::now());
                                continue;
                            }
                        }
                    }
                };
                match next {
                    Some(request) => {
                        if oldest_deferred.is_none() {
                            oldest_deferred = Some(tokio::time::Instant::now());
                        }
                        pending.push_back(request);
                    }
                    None => open = false,
                }
                continue;
            }
            while pending.len() < COMMIT_QUEUE_MAX {
                let Ok(request) = rx.try_recv() else { break };
                pending.push_back(request);
            }
            if pending.is_empty() {
                break;
            }
            self.write_front(&mut pending).await;
            oldest_deferred = pending.front().map(|_| tokio::time::Instant::now());
        }
    }

    /// One entry of the oldest pending requests (run's bounds).
    async fn write_front(&mut self, pending: &mut VecDeque<Request>) {
        let mut count = 0usize;
        let mut bytes = 0u64;
        let mut requests = Vec::new();
        while count < BATCH_COMMANDS_MAX {
            let Some(request) = pending.front() else { break };
            if !requests.is_empty() && bytes.saturating_add(request.bytes) > self.entry_bytes_max {
                break;
            }
            count = count.saturating_add(request.cmds.len());
            bytes = bytes.saturating_add(request.bytes);
            requests.extend(pending.pop_front());
        }
        if requests.is_empty() {
            return;
        }
        self.commit_group(requests).await;
        self.durable.after_batch().await;
    }

    /// Trial, then one durable entry for the callers whose groups apply, then
    /// answer everyone.
    async fn commit_group(&mut self, requests: Vec<Request>) {
        if let Some(e) = self.durable.refuse() {
            for request in requests {
                let _ = request.reply.send(Err(e.clone()));
            }
            return;
        }
        let results = {
            let groups: Vec<&[Command]> = requests.iter().map(|r| r.cmds.as_slice()).collect();
            self.state.write().unwrap_or_else(|p| p.into_inner()).trial(&groups)
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
        let commands: usize = members.iter().map(|m| if let Command::Batch(c) = m { c.len() } else { 1 }).sum();
        self.stats.batch_callers.observe(members.len() as u64);
        self.stats.commands.fetch_add(commands as u64, Ordering::Relaxed);
        let written = self.durable.write(Command::Batch(members), &self.entries_written).await;
        match written {
            // One outcome per accepted group, in order; each group's is a
            // batch of one outcome per command of that caller.
            Ok(Outcome::Batch(groups)) if groups.len() == accepted.len() => {
                for (reply, group) in accepted.into_iter().zip(groups) {
                    let outcomes = match group {
                        Outcome::Batch(outcomes) => outcomes,
                        other => vec![other],
                    };
                    let _ = reply.send(Ok(outcomes));
                }
            }
            Ok(other) => {
                let e = storage(format!("entry applied with an outcome of the wrong shape: {other:?}"));
                for reply in accepted {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in accepted {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether `pending` must be written now: it holds a request someone waits
/// on, or as many deferred ones as may wait.
fn must_write(pending: &VecDeque<Request>) -> bool {
    pending.len() >= DEFERRED_MAX || pending.iter().any(|r| !r.deferred)
}

pub(crate) fn storage(e: impl std::fmt::Display) -> CommitError {
    CommitError::Storage(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
