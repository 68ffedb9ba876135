//! The OFD lock mirror against a real file: the table's locks appear as OFD
//! locks other descriptions see, go with UNLOCK, follow owners' downgrades
//! without blocking themselves, are refused by locks outside hanfs, stay
//! within the description bound, heal once a local lock goes, and are all
//! released by `close`.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use hanfs_raft::local::LocalCommit;
use hanfs_state::locks::{FileId, LockArgs, LockKind, LockOwner, LockRange};
use hanfs_state::{Command, NlmCommand};

use super::super::ofd_sys::{getlk, kernel_span, setlk};
use super::*;
use crate::config::ExportConfig;
use crate::vfs::Vfs;

const EXPORT: u32 = 7;

struct Fixture {
    dir: PathBuf,
    vfs: Arc<Vfs>,
    commit: Arc<dyn Commit>,
    file: FileId,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(label: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hanfs-ofd-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("export")).unwrap();
    std::fs::write(dir.join("export/f"), b"data").unwrap();
    let cfg = ExportConfig { name: "/e".into(), dir: dir.join("export"), export_id: EXPORT, clients: Vec::new() };
    let commit: Arc<dyn Commit> = LocalCommit::open(&dir.join("state")).unwrap();
    let roots = crate::vfs::open_roots(&[cfg]).unwrap();
    let register = crate::vfs::register_commands(&roots, &commit.state().read().unwrap()).unwrap();
    commit.commit(register).await.unwrap();
    let vfs = Arc::new(Vfs::new(roots, &commit.state().read().unwrap()).unwrap());
    let root = vfs.resolve(&vfs.root_fh(EXPORT).unwrap()).unwrap();
    let f = vfs.child(&root, b"f").unwrap();
    let file = FileId(vfs.fh(&f).unwrap());
    Fixture { dir, vfs, commit, file }
}

impl Fixture {
    fn live(&self) -> Arc<crate::live::Live> {
        crate::live::Live::fixed(self.vfs.clone(), Arc::new(crate::exports::ExportTable::new(&[])))
    }
}

fn owner(host: &str) -> LockOwner {
    LockOwner { caller_name: host.into(), svid: 1, oh: host.as_bytes().to_vec() }
}

fn args(fx: &Fixture, host: &str, offset: u64, len: u64, kind: LockKind) -> LockArgs {
    LockArgs { file: fx.file.clone(), owner: owner(host), range: LockRange { offset, len }, kind }
}

/// Commit a LOCK (non-blocking) and reconcile as `commit_one` does.
async fn lock(fx: &Fixture, m: &Arc<OfdMirror>, a: LockArgs) {
    let cmd = NlmCommand::Lock { args: a, block: false, client_addr: "127.0.0.1".into(), now_ms: 1 };
    let touched = Touched::of(&cmd);
    let out = fx.commit.commit(vec![Command::Nlm(cmd)]).await.unwrap();
    m.reconcile(touched, out.iter().flat_map(|o| o.granted()).collect()).await;
}

async fn unlock_all(fx: &Fixture, m: &Arc<OfdMirror>, host: &str) {
    let cmd = NlmCommand::Unlock {
        file: fx.file.clone(),
        owner: owner(host),
        range: LockRange { offset: 0, len: 0 },
        now_ms: 2,
    };
    let touched = Touched::of(&cmd);
    fx.commit.commit(vec![Command::Nlm(cmd)]).await.unwrap();
    m.reconcile(touched, Vec::new()).await;
}

/// Polls for at most this long for a released lock to be gone: a process
/// forked meanwhile (another test spawning a command) holds a copy of every
/// descriptor until it execs, and with it the description's OFD locks.
const RELEASE_WAIT_MS: u64 = 2_000;

/// Nothing conflicts with `offset`/`len` for `kind` (now, or within `RELEASE_WAIT_MS`).
fn gone(file: &std::fs::File, offset: u64, len: u64, kind: LockKind) -> bool {
    for _ in 0..RELEASE_WAIT_MS {
        if seen(file, offset, len, kind).is_none() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// A description of "a local process" on the file.
fn local(fx: &Fixture) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(fx.dir.join("export/f")).unwrap()
}

/// What a local process sees when it tests `offset`/`len` for `kind`.
fn seen(file: &std::fs::File, offset: u64, len: u64, kind: LockKind) -> Option<LockKind> {
    let span = kernel_span(LockRange { offset, len }, kind).unwrap();
    getlk(file.as_raw_fd(), span).unwrap().map(|f| f.span.kind)
}

#[tokio::test]
async fn table_locks_are_held_on_the_file_and_released_by_unlock_and_close() {
    let fx = fixture("hold").await;
    let m = OfdMirror::start(fx.live(), fx.commit.clone());
    let l = local(&fx);
    lock(&fx, &m, args(&fx, "a", 0, 10, LockKind::Exclusive)).await;
    assert_eq!(seen(&l, 5, 1, LockKind::Shared), Some(LockKind::Exclusive));
    assert!(gone(&l, 10, 1, LockKind::Exclusive), "still locked: 10, 1, LockKind::Exclusive");
    assert_eq!(m.descriptions(), 1);
    // Two more ranges of the same owner share its description.
    lock(&fx, &m, args(&fx, "a", 20, 5, LockKind::Shared)).await;
    lock(&fx, &m, args(&fx, "b", 20, 5, LockKind::Shared)).await;
    assert_eq!(m.descriptions(), 2);
    assert!(gone(&l, 20, 5, LockKind::Shared), "still locked: 20, 5, LockKind::Shared");
    assert_eq!(seen(&l, 20, 5, LockKind::Exclusive), Some(LockKind::Shared));
    unlock_all(&fx, &m, "a").await;
    assert!(gone(&l, 0, 10, LockKind::Exclusive), "still locked: 0, 10, LockKind::Exclusive");
    assert_eq!(seen(&l, 20, 5, LockKind::Exclusive), Some(LockKind::Shared));
    assert_eq!(m.descriptions(), 1);
    m.close();
    assert!(gone(&l, 0, 0, LockKind::Exclusive), "still locked: 0, 0, LockKind::Exclusive");
    // Closed: nothing is taken again.
    lock(&fx, &m, args(&fx, "c", 40, 1, LockKind::Exclusive)).await;
    assert!(gone(&l, 40, 1, LockKind::Exclusive), "still locked: 40, 1, LockKind::Exclusive");
    assert_eq!(m.counts(), OfdCounts::default());
}

#[tokio::test]
async fn a_downgrade_and_a_new_shared_lock_in_one_reconcile_do_not_block_each_other() {
    let fx = fixture("downgrade").await;
    let m = OfdMirror::start(fx.live(), fx.commit.clone());
    // Owner "b" holds it exclusively; the mirror has it.
    lock(&fx, &m, args(&fx, "b", 0, 100, LockKind::Exclusive)).await;
    // Two commits the mirror sees only afterwards: "b" downgrades, and "a"
    // (reconciled first, by owner order) takes a shared lock on the same bytes.
    for a in [args(&fx, "b", 0, 100, LockKind::Shared), args(&fx, "a", 0, 100, LockKind::Shared)] {
        let cmd = NlmCommand::Lock { args: a, block: false, client_addr: "127.0.0.1".into(), now_ms: 1 };
        fx.commit.commit(vec![Command::Nlm(cmd)]).await.unwrap();
    }
    m.reconcile(Touched::File(fx.file.clone()), Vec::new()).await;
    assert_eq!(m.counts(), OfdCounts::default());
    let l = local(&fx);
    assert!(gone(&l, 0, 100, LockKind::Shared), "still locked: 0, 100, LockKind::Shared");
    assert_eq!(seen(&l, 0, 100, LockKind::Exclusive), Some(LockKind::Shared));
    assert_eq!(m.descriptions(), 2);
}

#[tokio::test]
async fn a_local_lock_refuses_a_lock_the_table_would_grant() {
    let fx = fixture("local").await;
    let m = OfdMirror::start(fx.live(), fx.commit.clone());
    let l = local(&fx);
    setlk(l.as_raw_fd(), kernel_span(LockRange { offset: 0, len: 10 }, LockKind::Exclusive).unwrap()).unwrap();
    let want = args(&fx, "a", 5, 10, LockKind::Shared);
    assert_eq!(m.lock_refusal(&want, false).await, Some(Nlm4Stats::Denied));
    assert_eq!(m.lock_refusal(&want, true).await, Some(Nlm4Stats::Blocked));
    let h = m.local_holder(&want).await.expect("the local holder");
    assert_eq!((h.exclusive, h.l_offset, h.l_len, h.oh.as_bytes().len()), (true, 0, 10, 0));
    assert_eq!(m.lock_refusal(&args(&fx, "a", 10, 10, LockKind::Shared), false).await, None);
    // A table conflict is the table's to answer (BLOCKED or DENIED with its holder).
    lock(&fx, &m, args(&fx, "b", 100, 10, LockKind::Exclusive)).await;
    assert_eq!(m.lock_refusal(&args(&fx, "a", 100, 1, LockKind::Shared), false).await, None);
    // The owner's own locks never conflict with its request.
    assert_eq!(m.lock_refusal(&args(&fx, "b", 100, 10, LockKind::Exclusive), false).await, None);
    assert_eq!(m.counts().local_refusals, 2);
    drop(l);
    assert_eq!(m.lock_refusal(&want, false).await, None);
    assert!(m.local_holder(&want).await.is_none());
}

#[tokio::test]
async fn a_grant_a_local_lock_beat_is_counted_and_taken_once_it_goes() {
    let fx = fixture("race").await;
    let m = OfdMirror::start(fx.live(), fx.commit.clone());
    let l = local(&fx);
    setlk(l.as_raw_fd(), kernel_span(LockRange { offset: 0, len: 1 }, LockKind::Shared).unwrap()).unwrap();
    lock(&fx, &m, args(&fx, "a", 0, 10, LockKind::Exclusive)).await;
    assert_eq!(m.counts().conflicts, 1);
    drop(l);
    m.retry_dirty();
    assert_eq!(seen(&local(&fx), 0, 10, LockKind::Shared), Some(LockKind::Exclusive));
    assert!(m.lock_inner().dirty.is_empty());
}

#[tokio::test]
async fn descriptions_are_bounded_and_rebuilt_from_the_table() {
    let fx = fixture("bound").await;
    let m = OfdMirror::with_max(fx.live(), fx.commit.clone(), 1);
    lock(&fx, &m, args(&fx, "a", 0, 10, LockKind::Exclusive)).await;
    // "a" has its description; "b" would need a second one.
    assert_eq!(m.lock_refusal(&args(&fx, "a", 10, 10, LockKind::Exclusive), false).await, None);
    assert_eq!(
        m.lock_refusal(&args(&fx, "b", 10, 10, LockKind::Exclusive), false).await,
        Some(Nlm4Stats::DeniedNolocks)
    );
    assert_eq!(m.counts().full, 1);
    m.close();
    // A new active period takes the table's locks again.
    let m2 = OfdMirror::start(fx.live(), fx.commit.clone());
    let l = local(&fx);
    assert!(gone(&l, 0, 10, LockKind::Shared), "still locked: 0, 10, LockKind::Shared");
    m2.rebuild().await;
    assert_eq!(seen(&l, 0, 10, LockKind::Shared), Some(LockKind::Exclusive));
    m2.close();
    assert!(gone(&l, 0, 10, LockKind::Shared), "still locked: 0, 10, LockKind::Shared");
}

#[test]
fn gaps_cover_the_rest_of_the_file() {
    let s = |start, end| Span { start, end, kind: LockKind::Shared };
    let g = |l: &[Span]| gaps(l).iter().map(|s| (s.start, s.end)).collect::<Vec<_>>();
    assert_eq!(g(&[]), vec![(0, i64::MAX)]);
    assert_eq!(g(&[s(0, 9), s(20, 29)]), vec![(10, 19), (30, i64::MAX)]);
    assert_eq!(g(&[s(5, i64::MAX)]), vec![(0, 4)]);
    assert!(covers(&[s(0, 9), s(10, 19)], s(5, 15)));
    assert!(!covers(&[s(0, 9), s(11, 19)], s(5, 15)));
    let x = Span { start: 0, end: 9, kind: LockKind::Exclusive };
    assert!(covers(&[x], s(0, 9)));
    assert!(!covers(&[s(0, 9)], Span { kind: LockKind::Exclusive, ..x }));
}

#[tokio::test]
async fn a_deleted_file_is_released_and_not_mirrored_again() {
    let fx = fixture("deleted").await;
    let m = OfdMirror::start(fx.live(), fx.commit.clone());
    let l = local(&fx);
    lock(&fx, &m, args(&fx, "a", 0, 10, LockKind::Exclusive)).await;
    std::fs::remove_file(fx.dir.join("export/f")).unwrap();
    // The open description still holds the unlinked file's lock, and UNLOCK releases it.
    assert_eq!(seen(&l, 0, 1, LockKind::Shared), Some(LockKind::Exclusive));
    unlock_all(&fx, &m, "a").await;
    assert!(gone(&l, 0, 1, LockKind::Shared), "still locked: 0, 1, LockKind::Shared");
    // A new owner on the deleted file: nothing to open (STALE), not an error.
    lock(&fx, &m, args(&fx, "b", 0, 10, LockKind::Exclusive)).await;
    assert_eq!((m.counts(), m.descriptions()), (OfdCounts::default(), 0));
    assert!(m.lock_inner().dirty.is_empty());
}
