//! `RaftCommit`: the `Commit` interface over Raft, with group commit.
//!
//! Callers queue their commands on a bounded channel. One task takes whatever
//! is queued (bounded in commands and bytes), dry-runs each caller's group on
//! the applied state (`State::trial`, so one caller's rejected commands never
//! fail the others), and proposes the accepted groups as ONE log entry
//! (`Command::Batch` of `Batch`es). `client_write` returns once the entry is
//! committed by a quorum and applied here, so a reply sent afterwards never
//! depends on uncommitted state. Entries go one at a time: the trial always
//! runs on exactly the state the next entry applies to.
//!
//! Only a node whose leadership watch says `Leader` (promoted, lease held)
//! accepts commits; everything else gets `CommitError::NotLeader`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hanfs_state::{encoded_len, Command, State, COMMAND_BYTES_MAX};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::commit::{Commit, CommitError, CommitFuture};
use crate::lease::Leadership;
use crate::sm_store::StateMachineStore;
use crate::types::{typ, Applied};

/// Requests waiting for the group-commit task; senders wait when it is full.
pub const RAFT_COMMIT_QUEUE_MAX: usize = 1024;
/// Most commands folded into one log entry (a single larger caller goes alone).
pub const RAFT_BATCH_COMMANDS_MAX: usize = 4096;
/// Encoded bytes one caller's commands add beyond their own size (the `Batch`
/// tag and length prefix wrapping them, generously rounded).
const REQUEST_OVERHEAD_BYTES: u64 = 16;
/// Most encoded command bytes in one entry: what the state codec accepts, less
/// the outer `Batch`'s tag and length prefix. Fits `log_store::ENTRY_BYTES_MAX`.
pub const RAFT_ENTRY_COMMAND_BYTES_MAX: u64 = COMMAND_BYTES_MAX - 16;
/// Bound on one proposal (quorum ack plus apply). A leader cut off from its
/// quorum never commits; its callers get `NotLeader` after this long.
pub const RAFT_WRITE_TIMEOUT_MS: u64 = 5_000;

const _: () = assert!(RAFT_ENTRY_COMMAND_BYTES_MAX + 16 <= crate::log_store::ENTRY_BYTES_MAX);
const _: () = assert!(RAFT_ENTRY_COMMAND_BYTES_MAX > REQUEST_OVERHEAD_BYTES);

type Reply = oneshot::Sender<Result<(), CommitError>>;

struct Request {
    cmds: Vec<Command>,
    bytes: u64,
    reply: Reply,
}

/// Group commit through Raft. See the module doc.
pub struct RaftCommit {
    state: Arc<RwLock<State>>,
    leadership: watch::Receiver<Leadership>,
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    entries_written: Arc<AtomicU64>,
}

impl RaftCommit {
    /// Start the group-commit task for `raft`, whose state machine is `sm`.
    pub fn start(raft: typ::Raft, sm: &StateMachineStore, leadership: watch::Receiver<Leadership>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(RAFT_COMMIT_QUEUE_MAX);
        let entries_written = Arc::new(AtomicU64::new(0));
        let committer = Committer {
            raft,
            state: sm.state(),
            leadership: leadership.clone(),
            entries_written: entries_written.clone(),
        };
        let task = tokio::spawn(committer.run(rx));
        Arc::new(RaftCommit {
            state: sm.state(),
            leadership,
            queue: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            entries_written,
        })
    }

    /// Log entries proposed and committed since `start`.
    pub fn entries_written(&self) -> u64 {
        self.entries_written.load(Ordering::Relaxed)
    }

    /// Stop taking commits, let queued ones finish, wait for the task.
    pub async fn shutdown(&self) {
        drop(lock(&self.queue).take());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn serving(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Leader { .. })
    }
}

impl Commit for RaftCommit {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        Box::pin(async move {
            if cmds.is_empty() {
                return Ok(());
            }
            if !self.serving() {
                return Err(CommitError::NotLeader);
            }
            let bytes = cmds.iter().map(encoded_len).fold(REQUEST_OVERHEAD_BYTES, u64::saturating_add);
            if bytes > RAFT_ENTRY_COMMAND_BYTES_MAX {
                return Err(storage(format!(
                    "{bytes} bytes of commands exceed one log entry ({RAFT_ENTRY_COMMAND_BYTES_MAX})"
                )));
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

struct Committer {
    raft: typ::Raft,
    state: Arc<RwLock<State>>,
    leadership: watch::Receiver<Leadership>,
    entries_written: Arc<AtomicU64>,
}

impl Committer {
    async fn run(self, mut rx: mpsc::Receiver<Request>) {
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
            while count < RAFT_BATCH_COMMANDS_MAX {
                let Ok(request) = rx.try_recv() else { break };
                if bytes.saturating_add(request.bytes) > RAFT_ENTRY_COMMAND_BYTES_MAX {
                    carried = Some(request);
                    break;
                }
                count = count.saturating_add(request.cmds.len());
                bytes = bytes.saturating_add(request.bytes);
                requests.push(request);
            }
            self.commit_group(requests).await;
        }
    }

    async fn commit_group(&self, requests: Vec<Request>) {
        if !matches!(*self.leadership.borrow(), Leadership::Leader { .. }) {
            for request in requests {
                let _ = request.reply.send(Err(CommitError::NotLeader));
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
        let outcome = self.propose(Command::Batch(members)).await;
        for reply in accepted {
            let _ = reply.send(outcome.clone());
        }
    }

    async fn propose(&self, entry: Command) -> Result<(), CommitError> {
        let write = self.raft.client_write(entry);
        let resp = match tokio::time::timeout(Duration::from_millis(RAFT_WRITE_TIMEOUT_MS), write).await {
            Ok(resp) => resp,
            Err(_) => {
                tracing::warn!("raft write not committed in time; answering NotLeader");
                return Err(CommitError::NotLeader);
            }
        };
        match resp {
            Ok(resp) => {
                self.entries_written.fetch_add(1, Ordering::Relaxed);
                match resp.data {
                    Applied::Ok => Ok(()),
                    // The trial ran on this very state, so this is a bug; the
                    // entry is still applied identically everywhere.
                    Applied::Rejected { reason } => {
                        tracing::error!(%reason, index = resp.log_id.index, "entry passed trial but failed apply");
                        Err(storage(format!("entry passed trial but failed apply: {reason}")))
                    }
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(CommitError::NotLeader),
            Err(e) => Err(storage(e)),
        }
    }
}

fn storage(e: impl std::fmt::Display) -> CommitError {
    CommitError::Storage(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
