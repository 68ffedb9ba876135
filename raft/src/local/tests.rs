//! LocalCommit: group commit, durability across reopen, per-caller error isolation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hanfs_state::{ApplyError, Command, HandleEntry, NameError, State, Store};

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

fn entry(ino: u64, name: &[u8]) -> HandleEntry {
    HandleEntry { export_id: EXPORT_ID, ino, ident: ino ^ 0x5555, parent_ino: 1, name: name.to_vec() }
}

fn root() -> HandleEntry {
    HandleEntry { export_id: EXPORT_ID, ino: 1, ident: 1, parent_ino: 1, name: vec![] }
}

async fn open_registered(dir: &TempDir) -> Arc<LocalCommit> {
    let commit = LocalCommit::open(&dir.0).expect("open");
    let setup = vec![
        Command::RegisterExport { export_id: EXPORT_ID, path: "/srv/e".into() },
        Command::PutHandles(vec![root()]),
    ];
    commit.commit(setup).await.expect("setup commit");
    commit
}

fn snapshot(commit: &LocalCommit) -> State {
    commit.state().read().expect("state lock").clone()
}

/// Commits from `CALLERS` tasks at once; caller `i` puts inode 100+i.
async fn concurrent_puts(commit: &Arc<LocalCommit>, bad: Option<u64>) -> Vec<Result<(), CommitError>> {
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let commit = commit.clone();
        let name = if Some(i) == bad { b"a/b".to_vec() } else { format!("f{i}").into_bytes() };
        tasks.push(tokio::spawn(async move {
            let cmds = vec![Command::PutHandles(vec![entry(100 + i, &name)]), Command::BumpEpoch];
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
    assert_eq!(state.handle_count(), CALLERS + 1);
    assert_eq!(state.epoch(), CALLERS);
    for i in 0..CALLERS {
        assert_eq!(state.path_of(EXPORT_ID, 100 + i), Some(vec![format!("f{i}").into_bytes()]));
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
    let remove = vec![Command::RemoveHandle { export_id: EXPORT_ID, ino: 105, ident: 105 ^ 0x5555 }];
    commit.commit(remove).await.expect("remove");
    let before = snapshot(&commit);
    let last = commit.last_index();
    commit.shutdown().await;
    drop(commit);

    let reopened = LocalCommit::open(&dir.0).expect("reopen");
    assert_eq!(snapshot(&reopened), before);
    assert_eq!(reopened.last_index(), last);
    assert!(reopened.state().read().expect("lock").handle(EXPORT_ID, 105).is_none());
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
            let expected = ApplyError::HandleName { export_id: EXPORT_ID, ino: 100 + bad, reason: NameError::Slash };
            assert!(matches!(result, Err(CommitError::Rejected(e)) if *e == expected), "{result:?}");
        } else {
            assert!(result.is_ok(), "caller {i}: {result:?}");
        }
    }
    let state = snapshot(&commit);
    assert!(state.handle(EXPORT_ID, 100 + bad).is_none());
    // The bad caller's BumpEpoch was rolled back with its PutHandles.
    assert_eq!(state.epoch(), CALLERS - 1);
    assert_eq!(state.handle_count(), CALLERS);
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
    commit.commit(vec![Command::RegisterExport { export_id: EXPORT_ID, path: "/srv/e".into() }]).await.expect("reg");
    commit.commit(vec![Command::PutHandles(vec![root()])]).await.expect("root");
    for i in 0..12u64 {
        commit.commit(vec![Command::PutHandles(vec![entry(200 + i, b"x")])]).await.expect("put");
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
    let setup = vec![
        Command::RegisterExport { export_id: EXPORT_ID, path: "/srv/e".into() },
        Command::PutHandles(vec![root()]),
    ];
    commit.commit(setup).await.expect("setup");
    let before = commit.entries_written();
    // Each caller's commands take well over a quarter of an entry.
    let name = vec![b'n'; 60];
    let one = [Command::PutHandles(vec![entry(100, &name)])];
    let per_caller: u64 = one.iter().map(hanfs_state::encoded_len).sum::<u64>() + REQUEST_OVERHEAD_BYTES;
    assert!(per_caller * 4 > ENTRY_BYTES && per_caller <= ENTRY_BYTES, "{per_caller}");
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let commit = commit.clone();
        let cmds = vec![Command::PutHandles(vec![entry(100 + i, &name)])];
        tasks.push(tokio::spawn(async move { commit.commit(cmds).await }));
    }
    // One caller alone is larger than an entry: refused, and nobody else suffers.
    let huge = vec![Command::PutHandles((0..10).map(|i| entry(5_000 + i, &name)).collect())];
    assert!(matches!(commit.commit(huge).await, Err(CommitError::Storage(_))));
    for task in tasks {
        assert!(task.await.expect("task").is_ok());
    }
    let entries = commit.entries_written() - before;
    let per_entry_max = ENTRY_BYTES / per_caller;
    assert!(entries * per_entry_max >= CALLERS, "{CALLERS} callers in only {entries} entries of <= {per_entry_max}");
    let state = snapshot(&commit);
    assert_eq!(state.handle_count(), CALLERS + 1);
    assert!(state.handle(EXPORT_ID, 5_000).is_none());
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

/// The child: commits one (BumpEpoch, PutHandles) pair at a time and prints
/// `ACK n` only after commit n returned.
fn crash_writer(dir: &str) {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let commit = LocalCommit::open(std::path::Path::new(dir)).expect("open");
        let reg = vec![
            Command::RegisterExport { export_id: EXPORT_ID, path: "/srv/e".into() },
            Command::PutHandles(vec![root()]),
        ];
        commit.commit(reg).await.expect("setup");
        for n in 1..=CRASH_WRITES_MAX {
            let cmds = vec![Command::BumpEpoch, Command::PutHandles(vec![entry(1000 + n, b"f")])];
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
    // A clean prefix: exactly the handles of commits 1..=epoch, plus the root.
    assert_eq!(state.handle_count(), epoch + 1);
    assert!(state.handle(EXPORT_ID, 1000 + epoch).is_some());
    assert!(state.handle(EXPORT_ID, 1000 + epoch + 1).is_none());
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
