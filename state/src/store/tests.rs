//! Store: ordering of appends, compaction bounds, reopen, and refusal of a
//! damaged file's contents.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
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
        // A log row that is not an encoded command.
        let txn = store.db.begin_write().expect("txn");
        txn.open_table(LOG).expect("log").insert(2, &[0xde, 0xad][..]).expect("insert");
        txn.commit().expect("commit");
    }
    let store = Store::open(&t.path()).expect("reopen");
    assert!(matches!(store.load(), Err(StoreError::Codec(_))));
    {
        // A gap in the log.
        let txn = store.db.begin_write().expect("txn");
        let bytes = encode_command(&Command::BumpEpoch).expect("encode");
        txn.open_table(LOG).expect("log").insert(2, bytes.as_slice()).expect("insert");
        txn.open_table(LOG).expect("log").insert(4, bytes.as_slice()).expect("insert");
        txn.commit().expect("commit");
    }
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    {
        // A snapshot that is not a snapshot.
        let txn = store.db.begin_write().expect("txn");
        txn.open_table(SNAPSHOT).expect("snap").insert(0, &[1u8, 0xff, 0xff][..]).expect("insert");
        txn.commit().expect("commit");
    }
    assert!(matches!(store.load(), Err(StoreError::Codec(_))));
}
