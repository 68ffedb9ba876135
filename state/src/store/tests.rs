//! Store: ordering of appends, compaction bounds, reopen, and refusal of a
//! damaged file's contents.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::codec::encode_command;
use crate::command::test_fs;

struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hanfs-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempFile(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("s.redb")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup_cmds() -> Vec<Command> {
    vec![
        Command::RegisterExport { export_id: 1, path: "/srv".into(), fs: test_fs() },
        Command::SetHandleKey { key: [3; 32] },
        Command::BumpEpoch,
        Command::Mount { client: "h".into(), path: "/srv".into() },
    ]
}

#[test]
fn empty_store_loads_the_empty_state() {
    let t = TempFile::new("empty");
    let store = Store::open(&t.path()).expect("open");
    let (state, last) = store.load().expect("load");
    assert_eq!(state, State::default());
    assert_eq!(last, 0);
}

#[test]
fn appends_must_be_consecutive() {
    let t = TempFile::new("order");
    let store = Store::open(&t.path()).expect("open");
    assert!(matches!(store.append(2, &Command::BumpEpoch), Err(StoreError::OutOfOrder { expected: 1, got: 2 })));
    store.append(1, &Command::BumpEpoch).expect("append 1");
    assert!(matches!(store.append(1, &Command::BumpEpoch), Err(StoreError::OutOfOrder { expected: 2, got: 1 })));
    store.append(2, &Command::BumpEpoch).expect("append 2");
    let (state, last) = store.load().expect("load");
    assert_eq!((state.epoch(), last), (2, 2));
}

#[test]
fn reopen_and_compaction_keep_the_state() {
    let t = TempFile::new("compact");
    let mut expected = State::default();
    {
        let store = Store::open(&t.path()).expect("open");
        for (i, cmd) in (1u64..).zip(setup_cmds()) {
            store.append(i, &cmd).expect("append");
            expected.apply(&cmd).expect("apply");
            if i == 2 {
                store.compact(&expected, 2).expect("compact");
            }
        }
        assert!(matches!(store.compact(&expected, 1), Err(StoreError::CompactRange { .. })));
        assert!(matches!(store.compact(&expected, 9), Err(StoreError::CompactRange { .. })));
        assert_eq!(store.snapshot_index().expect("index"), 2);
        assert_eq!(store.log_len().expect("len"), 2);
        // Appending continues after the snapshot's index.
        store.append(5, &Command::BumpEpoch).expect("append 5");
        expected.apply(&Command::BumpEpoch).expect("apply");
    }
    let store = Store::open(&t.path()).expect("reopen");
    let (state, last) = store.load().expect("load");
    assert_eq!(state, expected);
    assert_eq!(last, 5);
    // Compacting everything leaves an empty log that still loads to the same state.
    store.compact(&state, 5).expect("compact all");
    assert_eq!(store.log_len().expect("len"), 0);
    assert!(matches!(store.append(5, &Command::BumpEpoch), Err(StoreError::OutOfOrder { expected: 6, .. })));
    let (again, last) = store.load().expect("load");
    assert_eq!((again, last), (expected, 5));
}

#[test]
fn a_second_open_is_refused() {
    let t = TempFile::new("double");
    let _store = Store::open(&t.path()).expect("open");
    assert!(Store::open(&t.path()).is_err());
}

#[test]
fn damaged_contents_are_errors_not_panics() {
    let t = TempFile::new("damaged");
    {
        let store = Store::open(&t.path()).expect("open");
        store.append(1, &Command::BumpEpoch).expect("append");
        // A log record that is not an encoded command.
        store.log().wal.append(2, &[0xde, 0xad]).expect("raw append");
    }
    let store = Store::open(&t.path()).expect("reopen");
    assert!(matches!(store.load(), Err(StoreError::Codec(_))));
    {
        // A gap in the log (3 is missing).
        let bytes = encode_command(&Command::BumpEpoch).expect("encode");
        store.log().wal.append(4, &bytes).expect("raw append");
        // A snapshot that is not a snapshot.
        let txn = store.db.begin_write().expect("txn");
        txn.open_table(SNAPSHOT).expect("snap").insert(0, &[1u8, 0xff, 0xff][..]).expect("insert");
        txn.commit().expect("commit");
    }
    assert!(matches!(store.load(), Err(StoreError::Codec(_))));
    drop(store);
    assert!(matches!(Store::open(&t.path()), Err(StoreError::Corrupt(_))));
}

/// A record cut short by a crash during its write (never acknowledged)
/// ends the log: the store reopens to the state before it, and the next
/// append goes where it was.
#[test]
fn a_torn_last_record_is_dropped_and_overwritten() {
    let t = TempFile::new("torn");
    {
        let store = Store::open(&t.path()).expect("open");
        for i in 1..=3 {
            store.append(i, &Command::BumpEpoch).expect("append");
        }
    }
    // Cut record 3 in half: zero its second half.
    let log = log_path(&t.path());
    let bytes = std::fs::read(&log).expect("read log");
    let one = bytes.iter().rposition(|b| *b != 0).expect("records") + 1;
    let record = one / 3;
    let f = std::fs::OpenOptions::new().write(true).open(&log).expect("open log");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; record / 2], (one - record / 2) as u64).expect("tear");
    drop(f);
    let store = Store::open(&t.path()).expect("reopen");
    let (state, last) = store.load().expect("load");
    assert_eq!((state.epoch(), last), (2, 2));
    store.append(3, &Command::SetHandleKey { key: [5; 32] }).expect("append 3 again");
    drop(store);
    let store = Store::open(&t.path()).expect("reopen");
    let (_, last) = store.load().expect("load");
    assert_eq!(last, 3);
}

/// After a compaction of everything the log starts over at its beginning;
/// the old records left behind the new ones are never replayed, and a
/// reopen between the compaction and the next append replays nothing.
#[test]
fn the_log_starts_over_after_a_full_compaction() {
    let t = TempFile::new("restart");
    let mut expected = State::default();
    let store = Store::open(&t.path()).expect("open");
    for (i, cmd) in (1u64..).zip(setup_cmds()) {
        store.append(i, &cmd).expect("append");
        expected.apply(&cmd).expect("apply");
    }
    store.compact(&expected, 4).expect("compact");
    drop(store);
    let store = Store::open(&t.path()).expect("reopen");
    assert_eq!(store.load().expect("load"), (expected.clone(), 4));
    // One short record over the first old one; the old ones after it stay.
    store.append(5, &Command::BumpEpoch).expect("append 5");
    expected.apply(&Command::BumpEpoch).expect("apply");
    drop(store);
    let store = Store::open(&t.path()).expect("reopen");
    assert_eq!(store.load().expect("load"), (expected, 5));
    assert_eq!(store.log_len().expect("len"), 1);
}

/// A store whose log file is gone (a careless copy of the redb file alone)
/// refuses to open instead of starting over without the commits in it.
#[test]
fn a_missing_log_file_is_refused() {
    let t = TempFile::new("nolog");
    {
        let store = Store::open(&t.path()).expect("open");
        store.append(1, &Command::BumpEpoch).expect("append");
    }
    std::fs::remove_file(log_path(&t.path())).expect("remove the log");
    match Store::open(&t.path()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("is missing"), "{msg}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("opened without its log file"),
    }
}

/// An append whose sync fails was never acknowledged: the log stays as it
/// was, its record is written over by the next append of the same index
/// (with other contents), and a reopen replays that one.
#[test]
fn a_failed_append_is_written_over_by_the_next() {
    let t = TempFile::new("failsync");
    let mut expected = State::default();
    {
        let store = Store::open(&t.path()).expect("open");
        for (i, cmd) in (1u64..).zip(setup_cmds()) {
            store.append(i, &cmd).expect("append");
            expected.apply(&cmd).expect("apply");
        }
        store.log().wal.fail_next_sync = true;
        let lost = Command::Mount { client: "lost".into(), path: "/srv".into() };
        assert!(matches!(store.append(5, &lost), Err(StoreError::Io { .. })));
        assert_eq!(store.log_len().expect("len"), 4);
        store.append(5, &Command::BumpEpoch).expect("append 5 again");
        expected.apply(&Command::BumpEpoch).expect("apply");
    }
    let store = Store::open(&t.path()).expect("reopen");
    assert_eq!(store.load().expect("load"), (expected, 5));
}
