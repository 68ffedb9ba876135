//! LocalCommit: group commit, durability across reopen, per-caller error isolation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hanfs_state::{ApplyError, Command, FsIdentity, State, Store};

use super::{LocalCommit, Tuning, ENTRY_BYTES_MAX, REQUEST_OVERHEAD_BYTES, STORE_FILE};
use crate::commit::{Commit, CommitError};

const EXPORT_ID: u32 = 9;
const CALLERS: u64 = 200;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hanfs-local-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An rmtab row: client `c<n>` mounted `path` (an empty path is refused).
fn row(n: u64, path: &str) -> Command {
    Command::Mount { client: format!("c{n}"), path: path.to_owned() }
}

fn has_row(state: &State, n: u64) -> bool {
    let client = format!("c{n}");
    state.rmtab().any(|(c, _)| c == client)
}

fn register() -> Command {
    let fs = FsIdentity { uuid: None, root_type: 1, root_handle: vec![1; 8] };
    Command::RegisterExport { export_id: EXPORT_ID, path: "/srv/e".into(), fs }
}

async fn open_registered(dir: &TempDir) -> Arc<LocalCommit> {
    let commit = LocalCommit::open(&dir.0).expect("open");
    let setup = vec![register(), Command::SetHandleKey { key: [1; 32] }];
    commit.commit(setup).await.expect("setup commit");
    commit
}

fn snapshot(commit: &LocalCommit) -> State {
    commit.state().read().expect("state lock").clone()
}

/// Commits from `CALLERS` tasks at once; caller `i` mounts as client c<100+i>.
async fn concurrent_puts(commit: &Arc<LocalCommit>, bad: Option<u64>) -> Vec<Result<(), CommitError>> {
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let commit = commit.clone();
        let path = if Some(i) == bad { String::new() } else { format!("/f{i}") };
        tasks.push(tokio::spawn(async move {
            let cmds = vec![row(100 + i, &path), Command::BumpEpoch];
            commit.commit(cmds).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").map(drop));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_log_entries() {
    let dir = TempDir::new("group");
    let commit = open_registered(&dir).await;
    let before = commit.entries_written();
    let results = concurrent_puts(&commit, None).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let entries = commit.entries_written() - before;
    eprintln!("{CALLERS} concurrent commits took {entries} log entries");
    assert!(entries >= 1, "nothing written");
    assert!(entries < CALLERS, "{CALLERS} commits took {entries} entries: no grouping");
    let state = snapshot(&commit);
    assert_eq!(state.rmtab_len(), CALLERS);
    assert_eq!(state.epoch(), CALLERS);
    for i in 0..CALLERS {
        let (client, path) = (format!("c{}", 100 + i), format!("/f{i}"));
        assert!(state.rmtab().any(|(c, p)| (c, p) == (client.as_str(), path.as_str())), "row {i}");
    }
    assert_eq!(state.check_invariants(), Ok(()));
    commit.shutdown().await;
}

#[tokio::test]
async fn reopen_restores_the_committed_state() {
    let dir = TempDir::new("reopen");
    let commit = open_registered(&dir).await;
    let results = concurrent_puts(&commit, None).await;
    assert!(results.iter().all(Result::is_ok));
    let cmds = vec![Command::Mount { client: "10.1.1.1".into(), path: "/srv/e".into() }];
    commit.commit(cmds).await.expect("mount");
    let remove = vec![Command::UnmountAll { client: "c105".into() }];
    commit.commit(remove).await.expect("remove");
    let before = snapshot(&commit);
    let last = commit.last_index();
    commit.shutdown().await;
    drop(commit);

    let reopened = LocalCommit::open(&dir.0).expect("reopen");
    assert_eq!(snapshot(&reopened), before);
    assert_eq!(reopened.last_index(), last);
    assert!(!has_row(&reopened.state().read().expect("lock"), 105));
    // It keeps appending after the old entries.
    reopened.commit(vec![Command::BumpEpoch]).await.expect("commit after reopen");
    assert_eq!(reopened.last_index(), last + 1);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_caller_fails_alone() {
    let dir = TempDir::new("isolation");
    let commit = open_registered(&dir).await;
    let bad = 57;
    let results = concurrent_puts(&commit, Some(bad)).await;
    for (i, result) in (0u64..).zip(&results) {
        if i == bad {
            let expected = ApplyError::MountPathInvalid;
            assert!(matches!(result, Err(CommitError::Rejected(e)) if *e == expected), "{result:?}");
        } else {
            assert!(result.is_ok(), "caller {i}: {result:?}");
        }
    }
    let state = snapshot(&commit);
    assert!(!has_row(&state, 100 + bad));
    // The bad caller's BumpEpoch was rolled back with its Mount.
    assert_eq!(state.epoch(), CALLERS - 1);
    assert_eq!(state.rmtab_len(), CALLERS - 1);
    commit.shutdown().await;
    let reopened = LocalCommit::open(&dir.0).expect("reopen");
    assert_eq!(snapshot(&reopened), state);
    reopened.shutdown().await;
}

#[tokio::test]
async fn compaction_keeps_the_state_and_trims_the_log() {
    let dir = TempDir::new("compact");
    let tuning = Tuning { compact_entries: 5, entry_bytes_max: ENTRY_BYTES_MAX };
    let commit = LocalCommit::open_with(&dir.0, tuning).expect("open");
    commit.commit(vec![register()]).await.expect("reg");
    commit.commit(vec![Command::SetHandleKey { key: [1; 32] }]).await.expect("key");
    for i in 0..12u64 {
        commit.commit(vec![row(200 + i, "/x")]).await.expect("put");
    }
    let before = snapshot(&commit);
    let last = commit.last_index();
    assert_eq!(last, 14);
    commit.shutdown().await;
    drop(commit);

    let store = Store::open(&dir.0.join(STORE_FILE)).expect("store");
    assert_eq!(store.snapshot_index().expect("snapshot index"), 10);
    assert_eq!(store.log_len().expect("log len"), 4);
    let (state, index) = store.load().expect("load");
    assert_eq!(index, last);
    assert_eq!(state, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_bounded_in_bytes() {
    const ENTRY_BYTES: u64 = 256;
    let dir = TempDir::new("bytes");
    let tuning = Tuning { compact_entries: 1_000, entry_bytes_max: ENTRY_BYTES };
    let commit = LocalCommit::open_with(&dir.0, tuning).expect("open");
    commit.commit(vec![register()]).await.expect("setup");
    let before = commit.entries_written();
    // Each caller's commands take well over a quarter of an entry.
    let path = format!("/{}", "n".repeat(60));
    let one = [row(100, &path)];
    let per_caller: u64 = one.iter().map(hanfs_state::encoded_len).sum::<u64>() + REQUEST_OVERHEAD_BYTES;
    assert!(per_caller * 4 > ENTRY_BYTES && per_caller <= ENTRY_BYTES, "{per_caller}");
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let commit = commit.clone();
        let cmds = vec![row(100 + i, &path)];
        tasks.push(tokio::spawn(async move { commit.commit(cmds).await }));
    }
    // One caller alone is larger than an entry: refused, and nobody else suffers.
    let huge: Vec<Command> = (0..10).map(|i| row(5_000 + i, &path)).collect();
    assert!(matches!(commit.commit(huge).await, Err(CommitError::Storage(_))));
    for task in tasks {
        assert!(task.await.expect("task").is_ok());
    }
    let entries = commit.entries_written() - before;
    let per_entry_max = ENTRY_BYTES / per_caller;
    assert!(entries * per_entry_max >= CALLERS, "{CALLERS} callers in only {entries} entries of <= {per_entry_max}");
    let state = snapshot(&commit);
    assert_eq!(state.rmtab_len(), CALLERS);
    assert!(!has_row(&state, 5_000));
    commit.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_commits_are_refused() {
    let dir = TempDir::new("shutdown");
    let commit = LocalCommit::open(&dir.0).expect("open");
    commit.commit(vec![Command::BumpEpoch]).await.expect("bump");
    commit.shutdown().await;
    assert!(matches!(commit.commit(vec![Command::BumpEpoch]).await, Err(CommitError::NotLeader)));
    // Empty commits are a no-op, not an error.
    assert!(commit.commit(Vec::new()).await.is_ok());
    assert_eq!(commit.state().read().expect("lock").epoch(), 1);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails() {
    let dir = TempDir::new("double");
    let commit = LocalCommit::open(&dir.0).expect("open");
    assert!(matches!(LocalCommit::open(&dir.0), Err(CommitError::Storage(_))));
    commit.shutdown().await;
    let again = LocalCommit::open(&dir.0).expect("open after shutdown");
    again.shutdown().await;
}

/// Set in the child process of `killed_writer_loses_nothing_acknowledged`.
const CRASH_WRITER_ENV: &str = "HANFS_TEST_CRASH_WRITER_DIR";
/// Acknowledged commits the parent waits for before the SIGKILL.
const CRASH_ACKS: u64 = 40;
/// Upper bound on the child's commits (it is killed long before).
const CRASH_WRITES_MAX: u64 = 100_000;
/// Bound on waiting for the child's acknowledgements (a hang fails the test).
const CRASH_WAIT_SECS: u64 = 120;

/// The child: commits one (BumpEpoch, Mount) pair at a time and prints
/// `ACK n` only after commit n returned.
fn crash_writer(dir: &str) {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let commit = LocalCommit::open(std::path::Path::new(dir)).expect("open");
        commit.commit(vec![register()]).await.expect("setup");
        for n in 1..=CRASH_WRITES_MAX {
            let cmds = vec![Command::BumpEpoch, row(1000 + n, "/f")];
            commit.commit(cmds).await.expect("commit");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ACK {n}");
            let _ = out.flush();
        }
    });
}

/// A real SIGKILL in the middle of a stream of commits: everything that was
/// acknowledged is there after reopening, and what is there is a clean prefix.
#[test]
fn killed_writer_loses_nothing_acknowledged() {
    use std::io::BufRead;
    if let Ok(dir) = std::env::var(CRASH_WRITER_ENV) {
        crash_writer(&dir);
        return;
    }
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "local::tests::killed_writer_loses_nothing_acknowledged", "--nocapture", "--test-threads=1"])
        .env(CRASH_WRITER_ENV, &dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse::<u64>().ok()) {
                if tx.send(n).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(CRASH_WAIT_SECS);
    let mut acked = 0;
    while acked < CRASH_ACKS {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) => acked = n,
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // Acknowledgements printed before the kill landed count too.
    while let Ok(n) = rx.try_recv() {
        acked = acked.max(n);
    }
    let _ = reader.join();
    assert!(acked >= CRASH_ACKS, "writer acknowledged only {acked} commits");

    let store = Store::open(&dir.0.join(STORE_FILE)).expect("reopen after kill");
    let (state, _) = store.load().expect("load after kill");
    let epoch = state.epoch();
    assert!(epoch >= acked, "acknowledged {acked} commits but only {epoch} survived");
    // A clean prefix: exactly the rows of commits 1..=epoch.
    assert_eq!(state.rmtab_len(), epoch);
    assert!(has_row(&state, 1000 + epoch));
    assert!(!has_row(&state, 1000 + epoch + 1));
    assert_eq!(state.check_invariants(), Ok(()));
}

/// Concurrent conflicting exclusive LOCKs from different owners, grouped
/// into shared log entries: the outcome of each comes from `apply` on the
/// committed table, so exactly one per round is granted and the rest denied.
#[tokio::test]
async fn concurrent_conflicting_locks_are_never_both_granted() {
    use hanfs_state::locks::{FileId, LockArgs, LockKind, LockOutcome, LockOwner, LockRange};
    use hanfs_state::{NlmCommand, Outcome};
    const ROUNDS: u32 = 20;
    const OWNERS: u32 = 16;
    let dir = TempDir::new("locks");
    let commit = open_registered(&dir).await;
    for round in 0..ROUNDS {
        let file = FileId(round.to_be_bytes().to_vec());
        let mut tasks = Vec::new();
        for svid in 0..OWNERS {
            let commit = commit.clone();
            let owner = LockOwner { caller_name: format!("host{svid}"), svid, oh: vec![1] };
            let range = LockRange { offset: u64::from(svid), len: 100 };
            let args = LockArgs { file: file.clone(), owner, range, kind: LockKind::Exclusive };
            let cmd = Command::Nlm(NlmCommand::Lock { args, block: false, client_addr: "127.0.0.1".into(), now_ms: 1 });
            tasks.push(tokio::spawn(async move { commit.commit(vec![cmd]).await }));
        }
        let mut granted = 0;
        for task in tasks {
            let outcomes = task.await.expect("task").expect("commit");
            assert_eq!(outcomes.len(), 1);
            match &outcomes[0] {
                Outcome::Lock(effect) if effect.outcome == LockOutcome::Granted => granted += 1,
                Outcome::Lock(effect) => assert!(matches!(effect.outcome, LockOutcome::Denied(_)), "{effect:?}"),
                other => panic!("not a lock outcome: {other:?}"),
            }
        }
        assert_eq!(granted, 1, "round {round}: exactly one of {OWNERS} conflicting locks is granted");
    }
}

/// A deferred record waits for the next caller's commit and shares its log
/// entry, in the order they were submitted. Paused time: the deferral's
/// timer fires only if the test stalls with nothing else to run.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deferred_commit_rides_in_the_next_entry() {
    let dir = TempDir::new("deferred");
    let commit = open_registered(&dir).await;
    let before = commit.entries_written();
    let deferred = {
        let commit = commit.clone();
        tokio::spawn(async move { commit.commit_deferred(vec![row(1, "/a")]).await })
    };
    // Let the commit task take the deferred record and start waiting.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(commit.entries_written(), before, "the deferred record was written at once");
    let unmount = Command::Unmount { client: "c1".into(), path: "/a".into() };
    commit.commit(vec![unmount]).await.expect("commit");
    deferred.await.expect("task").expect("deferred commit");
    assert_eq!(commit.entries_written() - before, 1, "the deferred record took an entry of its own");
    assert!(!has_row(&snapshot(&commit), 1), "the unmount was applied before the mount it follows");
    commit.shutdown().await;
}

/// A deferred record with nobody after it is still written (after
/// DEFER_US_MAX), and so is one queued when the commit path shuts down.
#[tokio::test(flavor = "current_thread")]
async fn deferred_commit_alone_is_written() {
    let dir = TempDir::new("deferred-alone");
    let commit = open_registered(&dir).await;
    let before = commit.entries_written();
    commit.commit_deferred(vec![row(2, "/b")]).await.expect("deferred commit");
    assert_eq!(commit.entries_written() - before, 1);
    assert!(has_row(&snapshot(&commit), 2));
    let late = {
        let commit = commit.clone();
        tokio::spawn(async move { commit.commit_deferred(vec![row(3, "/c")]).await })
    };
    tokio::task::yield_now().await;
    commit.shutdown().await;
    late.await.expect("task").expect("deferred commit queued before shutdown");
    assert!(has_row(&snapshot(&commit), 3));
}
