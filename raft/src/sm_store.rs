//! The state machine (`RaftStateMachine`): applies committed entries to
//! `hanfs_state::State` through `State::apply` only, keeps the last applied log
//! id and the membership, and builds / installs snapshots with
//! `State::to_snapshot()` / `State::from_snapshot()`.
//!
//! The state itself lives in memory (shared with the server for reads through
//! `state()`); the latest snapshot is persisted in redb. After a restart the
//! state is rebuilt from that snapshot and openraft re-applies the committed log
//! after it (the log store persists the committed id).
//! No application logic here: what a command means is `hanfs-state`'s business.
//! An apply waits until the local log is on disk up to its entries
//! (`durable::LogDurable`): a leader signals its own appends flushed before
//! their fsync, and nothing may be applied (answered, read) before it is on
//! a majority of disks.
//!
//! Nothing here waits on a runtime thread: applying runs there only when the
//! state's write lock is free at once (a few µs a command; saves a hand-off
//! to the blocking pool and back on every commit), and on the blocking pool
//! when it would wait for readers or a snapshot's copy; copying and encoding
//! the state for a snapshot, and every redb write, run on the blocking pool,
//! so the runtime's workers stay free for heartbeats and replication (the
//! whole copy of a large state takes a while; so can an fsync).

// openraft fixes `StorageError` (large) as the error type of these traits.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hanfs_state::{Outcome, State};
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use redb::{Database, Durability, TableDefinition};

use crate::durable::LogDurable;
use crate::types::{decode, encode, typ, Applied, NodeId, TypeConfig};

/// Upper bound on the encoded snapshot metadata (log id + membership).
const SNAPSHOT_META_BYTES_MAX: u64 = 64 * 1024;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_snapshot");
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SNAPSHOT)?;
    Ok(())
}

/// What the state machine has applied, kept next to `State` and always updated
/// under the state's write lock, so a snapshot sees a consistent pair.
#[derive(Clone, Debug, Default)]
struct AppliedMeta {
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
}

struct StoredSnapshot {
    meta: typ::SnapshotMeta,
    data: Vec<u8>,
}

struct Inner {
    db: Arc<Database>,
    /// How far the local log is on disk (`open`).
    log: Option<LogDurable>,
    /// Lock order: `state` before `applied`.
    state: Arc<RwLock<State>>,
    applied: Mutex<AppliedMeta>,
    current: Mutex<Option<Arc<StoredSnapshot>>>,
    snapshot_seq: AtomicU64,
}

/// The state-machine store. Cloning is cheap (it is also the snapshot builder).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

fn sm_read_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::<NodeId>::read_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_err(meta: &typ::SnapshotMeta, e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::<NodeId>::write_snapshot(Some(meta.signature()), AnyError::error(e.to_string())).into()
}

impl StateMachineStore {
    /// Open the state machine: the last persisted snapshot if there is one,
    /// otherwise an empty `State`.
    /// With `log`, an apply first waits until the local log is durable up
    /// to its entries (`durable::LogDurable`: a leader signals its own
    /// appends flushed before their fsync); openraft's storage tests, which
    /// apply entries they never appended, pass `None`.
    pub fn open(db: Arc<Database>, log: Option<LogDurable>) -> Result<Self, typ::StorageError> {
        let (state, applied, current) = match load_snapshot(&db)? {
            None => (State::default(), AppliedMeta::default(), None),
            Some(snap) => {
                let state = State::from_snapshot(&snap.data).map_err(sm_read_err)?;
                let applied =
                    AppliedMeta { last_applied: snap.meta.last_log_id, membership: snap.meta.last_membership.clone() };
                (state, applied, Some(Arc::new(snap)))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                log,
                state: Arc::new(RwLock::new(state)),
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                snapshot_seq: AtomicU64::new(0),
            }),
        })
    }

    /// The applied state, for reads. Never hold the lock across an `.await`.
    pub fn state(&self) -> Arc<RwLock<State>> {
        self.inner.state.clone()
    }

    /// The last applied log id (for status and tests).
    pub fn last_applied(&self) -> Option<typ::LogId> {
        lock(&self.inner.applied).last_applied
    }

    async fn persist(&self, snap: Arc<StoredSnapshot>) -> Result<(), typ::StorageError> {
        let meta_bytes = encode(&snap.meta, SNAPSHOT_META_BYTES_MAX).map_err(|e| snap_err(&snap.meta, e))?;
        let db = self.inner.db.clone();
        let to_write = snap.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(SNAPSHOT)?;
                table.insert(KEY_META, meta_bytes.as_slice())?;
                table.insert(KEY_DATA, to_write.data.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(snap_err(&snap.meta, e)),
            Err(e) => return Err(snap_err(&snap.meta, e)),
        }
        *lock(&self.inner.current) = Some(snap);
        Ok(())
    }
}

/// Lock a mutex, recovering from poisoning: every critical section here leaves
/// the data consistent, so a panic elsewhere must not wedge the state machine.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, typ::StorageError> {
    let txn = db.begin_read().map_err(sm_read_err)?;
    let table = txn.open_table(SNAPSHOT).map_err(sm_read_err)?;
    let Some(meta) = table.get(KEY_META).map_err(sm_read_err)? else {
        return Ok(None);
    };
    let meta: typ::SnapshotMeta = decode(meta.value(), SNAPSHOT_META_BYTES_MAX).map_err(sm_read_err)?;
    let Some(data) = table.get(KEY_DATA).map_err(sm_read_err)? else {
        return Err(sm_read_err("snapshot meta without data"));
    };
    Ok(Some(StoredSnapshot { meta, data: data.value().to_vec() }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        // Copy the state (a consistent pair with the applied id) under its
        // read lock, then encode the copy, both on the blocking pool: waiting
        // for the lock and copying a large state must not hold a runtime
        // worker (heartbeats), and applying goes on once the copy is made.
        let inner = self.inner.clone();
        let started = std::time::Instant::now();
        let (data, applied, copied) = tokio::task::spawn_blocking(move || {
            let (state, applied) = {
                let state = inner.state.read().unwrap_or_else(|p| p.into_inner());
                let applied = lock(&inner.applied).clone();
                (state.clone(), applied)
            };
            let copied = started.elapsed();
            (state.to_snapshot(), applied, copied)
        })
        .await
        .map_err(sm_read_err)?;
        let encoded = started.elapsed();
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, seq),
            None => format!("none-{seq}"),
        };
        let meta =
            typ::SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership, snapshot_id };
        let snap = Arc::new(StoredSnapshot { meta: meta.clone(), data: data.clone() });
        self.persist(snap).await?;
        tracing::info!(
            index = ?meta.last_log_id.map(|l| l.index),
            bytes = data.len(),
            copy_ms = copied.as_millis() as u64,
            encode_ms = (encoded - copied).as_millis() as u64,
            persist_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built"
        );
        Ok(typ::Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Apply `entries` to the state, under its write lock.
fn apply_entries(inner: &Inner, entries: Vec<typ::Entry>) -> Vec<Applied> {
    let state = inner.state.write().unwrap_or_else(|p| p.into_inner());
    apply_locked(inner, state, entries)
}

/// `apply_entries` if the write lock is free now; the entries back if not.
fn try_apply_entries(inner: &Inner, entries: Vec<typ::Entry>) -> Result<Vec<Applied>, Vec<typ::Entry>> {
    match inner.state.try_write() {
        Ok(state) => Ok(apply_locked(inner, state, entries)),
        Err(std::sync::TryLockError::Poisoned(p)) => Ok(apply_locked(inner, p.into_inner(), entries)),
        Err(std::sync::TryLockError::WouldBlock) => Err(entries),
    }
}

fn apply_locked(
    inner: &Inner,
    mut state: std::sync::RwLockWriteGuard<'_, State>,
    entries: Vec<typ::Entry>,
) -> Vec<Applied> {
    let mut replies = Vec::with_capacity(entries.len());
    let mut applied = lock(&inner.applied);
    for entry in entries {
        applied.last_applied = Some(entry.log_id);
        let reply = match entry.payload {
            EntryPayload::Blank => Applied::Ok(Outcome::Done),
            EntryPayload::Normal(ref cmd) => match state.apply(cmd) {
                Ok(outcome) => Applied::Ok(outcome),
                Err(e) => Applied::Rejected { reason: e.to_string() },
            },
            EntryPayload::Membership(ref m) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Applied::Ok(Outcome::Done)
            }
        };
        replies.push(reply);
    }
    replies
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<typ::LogId>, typ::StoredMembership), typ::StorageError> {
        let applied = lock(&self.inner.applied);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<typ::Entry> = entries.into_iter().collect();
        if let (Some(log), Some(last)) = (&self.inner.log, entries.last()) {
            log.wait_for(last.log_id.index)
                .await
                .map_err(|e| StorageIOError::<NodeId>::write_logs(AnyError::error(e)))?;
        }
        // Here when the write lock is free (applying is a few µs a command);
        // on the blocking pool when it would wait for readers or for a
        // snapshot's copy of the state.
        let entries = match try_apply_entries(&self.inner, entries) {
            Ok(replies) => return Ok(replies),
            Err(entries) => entries,
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || apply_entries(&inner, entries)).await.map_err(sm_read_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, typ::StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &typ::SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), typ::StorageError> {
        let data = snapshot.into_inner();
        // Decoding (with its invariant walk) on the blocking pool.
        let (decoded, data) = tokio::task::spawn_blocking(move || (State::from_snapshot(&data), data))
            .await
            .map_err(|e| snap_err(meta, e))?;
        let new_state = decoded.map_err(|e| snap_err(meta, e))?;
        // Persist first: if we crash after this, restart loads this snapshot.
        self.persist(Arc::new(StoredSnapshot { meta: meta.clone(), data })).await?;
        let inner = self.inner.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let old = {
                let mut state = inner.state.write().unwrap_or_else(|p| p.into_inner());
                let mut applied = lock(&inner.applied);
                applied.last_applied = meta.last_log_id;
                applied.membership = meta.last_membership.clone();
                std::mem::replace(&mut *state, new_state)
            };
            // Freed outside the locks.
            drop(old);
        })
        .await
        .map_err(sm_read_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        let current = lock(&self.inner.current).clone();
        Ok(current
            .map(|snap| typ::Snapshot { meta: snap.meta.clone(), snapshot: Box::new(Cursor::new(snap.data.clone())) }))
    }
}
