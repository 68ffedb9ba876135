use super::*;

/// Where a record's entry bytes start: after `len`, `crc` and the index.
const ENTRY_AT: u64 = 16;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The live records' indexes and bytes, read back through `places`.
fn contents(log: &LogFile) -> Vec<(u64, Vec<u8>)> {
    let Some((first, last)) = log.bounds() else { return Vec::new() };
    let places = log.places(first, last + 1);
    (first..=last).zip(places).map(|(i, p)| (i, p.read().expect("read").expect("there"))).collect()
}

fn append(log: &mut LogFile, entries: &[(u64, &str)]) {
    let entries: Vec<(u64, &[u8])> = entries.iter().map(|(i, s)| (*i, s.as_bytes())).collect();
    log.append(&entries).expect("append");
}

fn owned(entries: &[(u64, &str)]) -> Vec<(u64, Vec<u8>)> {
    entries.iter().map(|(i, s)| (*i, s.as_bytes().to_vec())).collect()
}

#[test]
fn appended_records_read_back_after_reopening() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, stray) = LogFile::open(&path).expect("create");
    assert_eq!((log.bounds(), stray), (None, 0));
    append(&mut log, &[(5, "five"), (6, "six")]);
    append(&mut log, &[(7, "seven")]);
    assert_eq!(contents(&log), owned(&[(5, "five"), (6, "six"), (7, "seven")]));
    assert_eq!(log.places(6, 7).len(), 1);
    assert!(log.append(&[(9, b"gap".as_slice())]).is_err(), "an append must follow the last index");
    drop(log);
    let (log, stray) = LogFile::open(&path).expect("reopen");
    assert_eq!(stray, 0);
    assert_eq!(contents(&log), owned(&[(5, "five"), (6, "six"), (7, "seven")]));
}

/// A batch torn in its middle (the second record damaged, the third whole)
/// loses its rest; after a new append where it was, the torn batch's later
/// record never reads as that append's successor.
#[test]
fn a_torn_batch_never_comes_back_behind_a_new_append() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    append(&mut log, &[(1, "one")]);
    append(&mut log, &[(2, "two"), (3, "three")]);
    let second = log.slots[1].offset;
    drop(log);
    // A flipped byte in record 2's entry: as if its page never reached the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(b"T", second + ENTRY_AT).expect("damage");
    drop(f);
    let (mut log, stray) = LogFile::open(&path).expect("reopen");
    assert!(stray > 0, "the torn batch's bytes were cleared");
    assert_eq!(contents(&log), owned(&[(1, "one")]));
    // The same size as the torn record 2: record 3 would sit right behind it.
    append(&mut log, &[(2, "TWO")]);
    drop(log);
    let (log, stray) = LogFile::open(&path).expect("reopen again");
    assert_eq!(stray, 0);
    assert_eq!(contents(&log), owned(&[(1, "one"), (2, "TWO")]));
}

#[test]
fn a_record_cut_short_is_cleared() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    append(&mut log, &[(1, "one")]);
    let end = log.end;
    drop(log);
    let mut partial = Vec::new();
    encode(2, b"two", &mut partial).expect("encode");
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    f.write_all_at(partial.get(..partial.len() - 2).expect("cut"), end).expect("write");
    drop(f);
    let (log, stray) = LogFile::open(&path).expect("reopen");
    assert_eq!(stray, partial.len() as u64 - 2);
    assert_eq!(contents(&log), owned(&[(1, "one")]));
    let mut rest = vec![0u8; 64];
    log.file.read_exact_at(&mut rest, end).expect("read");
    assert!(rest.iter().all(|b| *b == 0), "zeros after the last record");
}

/// Truncated records are gone for good: not read after reopening, not
/// even behind a new record of the same size where they were.
#[test]
fn truncated_records_never_come_back() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    append(&mut log, &[(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
    log.truncate(3).expect("truncate");
    assert_eq!(log.bounds(), Some((1, 2)));
    log.truncate(9).expect("truncate past the end: nothing");
    assert_eq!(log.bounds(), Some((1, 2)));
    drop(log);
    let (mut log, stray) = LogFile::open(&path).expect("reopen");
    assert_eq!((log.bounds(), stray), (Some((1, 2)), 0));
    append(&mut log, &[(3, "C")]);
    drop(log);
    let (mut log, _) = LogFile::open(&path).expect("reopen again");
    assert_eq!(contents(&log), owned(&[(1, "a"), (2, "b"), (3, "C")]));
    log.truncate(1).expect("truncate everything");
    assert_eq!(log.bounds(), None);
    append(&mut log, &[(1, "A")]);
    assert_eq!(contents(&log), owned(&[(1, "A")]));
}

/// A purge forgets records; past `compact_bytes` of them the file is
/// rewritten with the live ones, which read the same before and after (a
/// place taken before the rewrite too), and again after reopening.
#[test]
fn purge_forgets_and_compacts() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    log.compact_bytes = 200;
    let big = "x".repeat(40);
    for i in 1..=10u64 {
        append(&mut log, &[(i, big.as_str())]);
    }
    log.purge(2).expect("purge");
    assert_eq!(log.bounds(), Some((3, 10)));
    assert!(log.slots[0].offset > 0, "two records are not enough to compact");
    let before = log.places(9, 10);
    log.purge(6).expect("purge and compact");
    assert_eq!(log.bounds(), Some((7, 10)));
    assert_eq!(log.slots[0].offset, 0, "compacted: the live records lead the file");
    assert_eq!(before[0].read().expect("old place"), Some(big.as_bytes().to_vec()));
    append(&mut log, &[(11, "eleven")]);
    let expect: Vec<(u64, Vec<u8>)> =
        (7..=10).map(|i| (i, big.as_bytes().to_vec())).chain([(11, b"eleven".to_vec())]).collect();
    assert_eq!(contents(&log), expect);
    assert!(!path.with_extension("compacting").exists());
    drop(log);
    let (log, stray) = LogFile::open(&path).expect("reopen");
    assert_eq!(stray, 0);
    assert_eq!(contents(&log), expect);
    // Everything purged: nothing live, the next append goes on.
    let (mut log, _) = LogFile::open(&path).expect("reopen");
    log.purge(11).expect("purge all");
    assert_eq!(log.bounds(), None);
    append(&mut log, &[(12, "twelve")]);
    assert_eq!(contents(&log), owned(&[(12, "twelve")]));
    drop(log);
    let (log, _) = LogFile::open(&path).expect("reopen");
    assert_eq!(contents(&log), owned(&[(12, "twelve")]));
}

/// A follower that installs a snapshot past its log's end purges every
/// record and goes on from the snapshot's next index: after a restart those
/// entries are all there (they once read as a torn tail and were cleared).
#[test]
fn entries_after_a_purge_past_the_end_survive_a_restart() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    append(&mut log, &[(1, "one"), (2, "two"), (3, "three")]);
    let stale = log.places(1, 4);
    log.purge(999).expect("purge past the end");
    assert_eq!(log.bounds(), None);
    append(&mut log, &[(1000, "a thousand")]);
    // A reader's place of a purged record, now written over: gone, not the new entry.
    assert_eq!(stale[0].read().expect("read"), None);
    append(&mut log, &[(1001, "and one")]);
    drop(log);
    let (log, _) = LogFile::open(&path).expect("reopen");
    assert_eq!(contents(&log), owned(&[(1000, "a thousand"), (1001, "and one")]));
    // Shorter than the records they went over: what is left of those after
    // them is not read (and cleared).
    let (mut log, _) = LogFile::open(&path).expect("reopen");
    log.purge(1001).expect("purge all again");
    append(&mut log, &[(1002, "x")]);
    drop(log);
    let (log, _) = LogFile::open(&path).expect("reopen");
    assert_eq!(contents(&log), owned(&[(1002, "x")]));
}

#[test]
fn an_append_past_the_zeroed_size_grows_the_file() {
    let d = dir();
    let path = d.path().join("log");
    let (mut log, _) = LogFile::open(&path).expect("create");
    let big = vec![7u8; GROW_BYTES as usize + 10];
    log.append(&[(1, big.as_slice())]).expect("append");
    assert!(log.size >= log.end, "the file holds the record");
    drop(log);
    let (log, _) = LogFile::open(&path).expect("reopen");
    assert_eq!(contents(&log), vec![(1, big)]);
}
