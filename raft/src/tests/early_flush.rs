//! A leader's own appends are signalled flushed before their fsync, and
//! nothing is applied or announced as committed beyond the local disk
//! (`durable`): most tests stall the log's writer (`stall_writes`, a stuck
//! disk), so it cannot write until released. Also: the committed hint, the
//! entries file across a restart (purged, truncated, an earlier format),
//! and where an apply waits for the state's lock.

use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

use crate::log_store::{open_db, LogStore};
use crate::sm_store::StateMachineStore;
use crate::types::{typ, NodeId};

/// This node, and the other one in these tests.
const ME: NodeId = 1;
const OTHER: NodeId = 2;
/// Long enough for a write that is not held to finish many times over.
const SETTLE: Duration = Duration::from_millis(300);
/// Bound on what must finish once the write transaction is released.
const DONE: Duration = Duration::from_secs(20);

fn blank(term: u64, leader: NodeId, index: u64) -> typ::Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(term, leader), index), payload: EntryPayload::Blank }
}

async fn store(vote: Vote<NodeId>) -> (tempfile::TempDir, std::sync::Arc<redb::Database>, LogStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("raft.redb")).expect("open");
    let mut log = LogStore::new(db.clone(), &dir.path().join("raft.entries"), ME).expect("log store");
    log.save_vote(&vote).await.expect("vote");
    (dir, db, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_own_entries_are_flushed_early_but_applied_only_once_on_disk() {
    let (dir, _db, mut log) = store(Vote::new_committed(1, ME)).await;
    let sm_db = open_db(&dir.path().join("sm.redb")).expect("open");
    let mut sm = StateMachineStore::open(sm_db, Some(log.durable())).expect("state machine");

    // A stuck disk: the writer waits before it writes.
    log.stall_writes(true);
    tokio::time::timeout(SETTLE, log.blocking_append([blank(1, ME, 1)]))
        .await
        .expect("the leader's own entry is signalled flushed while the disk write waits")
        .expect("append");
    assert_eq!(log.durable().upto(), None, "nothing is on disk yet");
    // The commit index a follower is told goes no further than the disk.
    assert_eq!(log.durable().clamp(Some(blank(1, ME, 1).log_id)), None);

    let apply = tokio::spawn(async move { sm.apply([blank(1, ME, 1)]).await.map(|r| r.len()) });
    tokio::time::sleep(SETTLE).await;
    assert!(!apply.is_finished(), "an entry was applied before it was on the local disk");

    log.stall_writes(false);
    let applied = tokio::time::timeout(DONE, apply).await.expect("applied once on disk").expect("task");
    assert_eq!(applied.expect("apply"), 1);
    assert_eq!(log.durable().upto(), Some(blank(1, ME, 1).log_id));
    assert_eq!(log.durable().clamp(Some(blank(1, ME, 1).log_id)), Some(blank(1, ME, 1).log_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_acknowledges_only_what_is_on_its_disk() {
    // This node follows the other's term: the entries are the other's, and
    // also entries of its own older term sent back by the new leader.
    let (_dir, _db, mut log) = store(Vote::new_committed(2, OTHER)).await;
    let disk = log.clone();
    disk.stall_writes(true);
    let entries = [blank(1, ME, 1), blank(2, OTHER, 2)];
    let append = tokio::spawn(async move { log.blocking_append(entries).await.map(|_| log) });
    tokio::time::sleep(SETTLE).await;
    assert!(!append.is_finished(), "a follower signalled an append flushed before its fsync");
    disk.stall_writes(false);
    let log = tokio::time::timeout(DONE, append).await.expect("flushed once written").expect("task").expect("append");
    assert_eq!(log.durable().upto(), Some(blank(2, OTHER, 2).log_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_is_stuck_waits_for_its_fsync_again() {
    let (_dir, _db, mut log) = store(Vote::new_committed(1, ME)).await;
    log.stall_writes(true);
    tokio::time::timeout(SETTLE, log.blocking_append([blank(1, ME, 1)]))
        .await
        .expect("the first entry is signalled early")
        .expect("append");
    // The writer has now been stuck on its write for longer than a
    // slow write: the next append waits for the disk, as openraft's core
    // (and with it heartbeats and the lease) then does.
    tokio::time::sleep(Duration::from_millis(crate::durable::LOG_WRITE_SLOW_MS) + SETTLE).await;
    let mut second = log.clone();
    let append = tokio::spawn(async move { second.blocking_append([blank(1, ME, 2)]).await });
    tokio::time::sleep(SETTLE).await;
    assert!(!append.is_finished(), "an append was signalled early while the disk was stuck");
    log.stall_writes(false);
    tokio::time::timeout(DONE, append).await.expect("flushed once written").expect("task").expect("append");
    assert_eq!(log.durable().upto(), Some(blank(1, ME, 2).log_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_waiting_for_a_failed_log_write_fails() {
    let (dir, _db, mut log) = store(Vote::new_committed(1, ME)).await;
    let sm_db = open_db(&dir.path().join("sm.redb")).expect("open");
    let mut sm = StateMachineStore::open(sm_db, Some(log.durable())).expect("state machine");
    log.fail_writes(true);
    // Signalled early, then the write fails: the apply reports it.
    log.blocking_append([blank(1, ME, 1)]).await.expect("signalled early");
    let applied = tokio::time::timeout(DONE, sm.apply([blank(1, ME, 1)])).await.expect("the apply ends");
    let error = applied.expect_err("an entry that never reached the disk was applied").to_string();
    assert!(error.contains("No space left on device"), "{error}");
}

/// Drops `log` and waits until its writer thread has ended (the test holds
/// the only other reference to `db`), then opens the log again.
async fn reopen(log: LogStore, db: &std::sync::Arc<redb::Database>, dir: &tempfile::TempDir) -> LogStore {
    drop(log);
    let deadline = std::time::Instant::now() + DONE;
    while std::sync::Arc::strong_count(db) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(std::sync::Arc::strong_count(db), 1, "the writer thread still holds the log");
    LogStore::new(db.clone(), &dir.path().join("raft.entries"), ME).expect("log store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_hint_never_goes_beyond_the_log_on_disk() {
    // Written (when the writer ends) once its entry is on disk.
    let (dir, db, mut log) = store(Vote::new_committed(1, ME)).await;
    log.blocking_append([blank(1, ME, 1)]).await.expect("append");
    tokio::time::timeout(DONE, log.durable().wait_for(1)).await.expect("written").expect("on disk");
    log.save_committed(Some(blank(1, ME, 1).log_id)).await.expect("hint");
    let mut log = reopen(log, &db, &dir).await;
    assert_eq!(log.read_committed().await.expect("read"), Some(blank(1, ME, 1).log_id));

    // A leader's entry committed before its own write, which then fails: the
    // hint must not name it, or the node could not start again.
    log.fail_writes(true);
    log.blocking_append([blank(1, ME, 2)]).await.expect("signalled early");
    let error = tokio::time::timeout(DONE, log.durable().wait_for(2)).await.expect("the write ends");
    assert!(error.is_err(), "the failed write counted as on disk");
    log.fail_writes(false);
    log.save_committed(Some(blank(1, ME, 2).log_id)).await.expect("hint");
    let mut log = reopen(log, &db, &dir).await;
    assert_eq!(log.read_committed().await.expect("read"), Some(blank(1, ME, 1).log_id));
    assert_eq!(log.get_log_state().await.expect("state").last_log_id, Some(blank(1, ME, 1).log_id));
}

/// The entries file across restarts: the log state, the live entries, none
/// of those purged (the file still holds some of them), none truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_truncated_and_live_entries_across_a_restart() {
    use openraft::RaftLogReader;
    let (dir, db, mut log) = store(Vote::new_committed(1, ME)).await;
    log.blocking_append((1..=10).map(|i| blank(1, ME, i))).await.expect("append");
    tokio::time::timeout(DONE, log.durable().wait_for(10)).await.expect("written").expect("on disk");
    log.purge(blank(1, ME, 4).log_id).await.expect("purge");
    assert_eq!(log.get_log_state().await.expect("state").last_purged_log_id, Some(blank(1, ME, 4).log_id));
    let mut log = reopen(log, &db, &dir).await;
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(blank(1, ME, 4).log_id));
    assert_eq!(state.last_log_id, Some(blank(1, ME, 10).log_id));
    let indexes = |entries: Vec<typ::Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(indexes(log.try_get_log_entries(1..11).await.expect("read")), (5..=10).collect::<Vec<_>>());
    assert_eq!(indexes(log.try_get_log_entries(2..4).await.expect("read")), Vec::<u64>::new());

    log.truncate(blank(1, ME, 8).log_id).await.expect("truncate");
    let mut log = reopen(log, &db, &dir).await;
    assert_eq!(log.get_log_state().await.expect("state").last_log_id, Some(blank(1, ME, 7).log_id));
    // A new term's entry where the truncated one was, then a restart: only it.
    log.save_vote(&Vote::new_committed(2, OTHER)).await.expect("vote");
    log.blocking_append([blank(2, OTHER, 8)]).await.expect("append");
    let mut log = reopen(log, &db, &dir).await;
    let entries = log.try_get_log_entries(7..20).await.expect("read");
    assert_eq!(
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>(),
        vec![blank(1, ME, 7).log_id, blank(2, OTHER, 8).log_id]
    );
}

/// A purge past the log's end (a follower installing a snapshot) and the
/// appends after it, taken by the writer in one batch: written in their
/// order, so the appends go on after the purge instead of failing as not
/// following the entries the purge dropped (CI saw that once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_past_the_end_and_the_appends_after_it_in_one_batch() {
    use openraft::RaftLogReader;
    let (dir, db, mut log) = store(Vote::new_committed(2, OTHER)).await;
    log.blocking_append([blank(1, ME, 1), blank(1, ME, 2)]).await.expect("append");
    // The writer stalls inside the batch of entry 3, so the purge and the
    // append after it wait in the queue and are taken together.
    log.stall_writes(true);
    let mut first = log.clone();
    let third = tokio::spawn(async move { first.blocking_append([blank(1, ME, 3)]).await });
    tokio::time::sleep(SETTLE).await;
    log.purge(blank(2, OTHER, 5).log_id).await.expect("purge");
    let mut appender = log.clone();
    let append = tokio::spawn(async move { appender.blocking_append([blank(2, OTHER, 6)]).await });
    tokio::time::sleep(SETTLE).await;
    log.stall_writes(false);
    tokio::time::timeout(DONE, third).await.expect("written").expect("task").expect("entry 3");
    tokio::time::timeout(DONE, append).await.expect("written").expect("task").expect("the append after the purge");
    let mut log = reopen(log, &db, &dir).await;
    let entries = log.try_get_log_entries(1..10).await.expect("read");
    assert_eq!(entries.iter().map(|e| e.log_id).collect::<Vec<_>>(), vec![blank(2, OTHER, 6).log_id]);
}

/// A database that still keeps entries in its `raft_log` table (the format
/// before the entries file) is refused with what to do, not half read.
#[test]
fn a_database_with_the_entries_in_it_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(&dir.path().join("raft.redb")).expect("open");
    let txn = db.begin_write().expect("txn");
    {
        let mut table = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("raft_log")).expect("table");
        table.insert(1, b"an entry".as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
    let refused = LogStore::new(db, &dir.path().join("raft.entries"), ME).map(drop).expect_err("refused");
    assert!(refused.to_string().contains("wipe the node's state directory"), "{refused}");
}

/// An apply while a reader holds the state waits on the blocking pool, not
/// on the runtime's thread: on a one-thread runtime the reader below could
/// never let go otherwise. Run on a thread of its own, so that a blocked
/// runtime fails the test instead of hanging it.
#[test]
// The reader holds the state's lock across its sleep on purpose.
#[allow(clippy::await_holding_lock)]
fn an_apply_waits_for_readers_off_the_runtime_thread() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let sm_db = open_db(&dir.path().join("sm.redb")).expect("open");
            let mut sm = StateMachineStore::open(sm_db, None).expect("state machine");
            let state = sm.state();
            let (held, release) = tokio::sync::oneshot::channel::<()>();
            let reader = tokio::task::spawn_local(async move {
                let guard = state.read().unwrap_or_else(|p| p.into_inner());
                let _ = held.send(());
                tokio::time::sleep(SETTLE).await;
                drop(guard);
            });
            release.await.expect("the reader holds the state");
            let applied = sm.apply([blank(1, ME, 1)]).await.map(|r| r.len());
            reader.await.expect("reader");
            let _ = done.send(applied.map_err(|e| e.to_string()));
        });
    });
    let applied = finished.recv_timeout(DONE).expect("the apply blocked the runtime's thread");
    assert_eq!(applied, Ok(1));
}
