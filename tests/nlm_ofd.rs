//! NLM locks on the shared filesystem (issue 9 item 8): a lock granted over
//! NLM is an OFD lock on the exported file that a local process sees (with
//! `F_OFD_GETLK` and classic `F_GETLK`), a local lock makes a conflicting
//! NLM LOCK DENIED (BLOCKED when it would wait) and shows in TEST, UNLOCK
//! and SM_NOTIFY release the file's lock, stopping the node releases every
//! lock, and a node started again on the same state takes them back.
//!
//! The node runs in this process, so "a local process" is another open file
//! description of this process. Only OFD locks are taken here: a classic
//! POSIX lock of the test would belong to the server's process too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use hanfs_server::nlm::xdr::{to_bytes, Nlm4Stats};
use hanfs_server::nsm::xdr::{SmString, StatChge};

use crate::nfs3_ops::*;
use crate::nlm::{
    body, lock, lock_args, nlm_stat, nlm_test, rpc, start_with_file, test_args, unlock_args, NLM_LOCK, NLM_UNLOCK,
    NSM_PROG, SM_NOTIFY,
};
use crate::util::*;

/// What a local description sees for `offset`/`len` (`exclusive`: a write
/// lock is asked for) through `cmd` (F_OFD_GETLK or F_GETLK): the
/// conflicting lock's (exclusive, start, len), or None.
fn seen(file: &File, cmd: i32, offset: i64, len: i64, exclusive: bool) -> Option<(bool, i64, i64)> {
    // SAFETY: flock is plain old data; all-zero is valid (l_pid 0 as OFD calls need).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = (if exclusive { libc::F_WRLCK } else { libc::F_RDLCK }) as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset;
    fl.l_len = len;
    // SAFETY: a valid fd and an initialised flock the kernel reads and writes.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
    (i32::from(fl.l_type) != libc::F_UNLCK).then_some((i32::from(fl.l_type) == libc::F_WRLCK, fl.l_start, fl.l_len))
}

/// Take an exclusive OFD lock on `file` without waiting; false if refused.
fn take(file: &File, offset: i64, len: i64) -> bool {
    // SAFETY: as in `seen`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset;
    fl.l_len = len;
    // SAFETY: as in `seen`.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl as *mut libc::flock) == 0 }
}

fn open_rw(path: &Path) -> File {
    std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open the exported file")
}

/// A node exporting a fresh directory with `/file`; its handle.
fn server_with_file(export: &TempDir, state: &TempDir) -> (TestServer, Vec<u8>) {
    start_with_file(test_config(export.path(), RW_NO_SQUASH, state.path()))
}

#[test]
fn nlm_locks_and_local_locks_see_each_other() {
    let (export, state) = (tempdir("ofd-see"), tempdir("ofd-see-state"));
    let (s, fh) = server_with_file(&export, &state);
    let local = open_rw(&export.path().join("file"));
    let a = lock(&fh, "hosta", 11, 0, 100);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), true, false)), Nlm4Stats::Granted);
    // A local process sees the NFS client's lock, with OFD and classic calls.
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 10, 1, false), Some((true, 0, 100)));
    assert_eq!(seen(&local, libc::F_GETLK, 99, 5, false), Some((true, 0, 100)));
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 100, 0, true), None);
    assert!(!take(&local, 50, 1));
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(a.clone())), Nlm4Stats::Granted);
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), None);
    // Now the local process holds bytes 0..100: a conflicting NLM LOCK is
    // DENIED, or BLOCKED if it would wait (no waiter is queued: the client
    // re-sends it), and TEST names the local lock.
    assert!(take(&local, 0, 100));
    let b = lock(&fh, "hostb", 22, 50, 10);
    for udp in [false, true] {
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(b.clone(), false, false)), Nlm4Stats::Denied);
        assert_eq!(nlm_stat(s.nlm_port, udp, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Blocked);
        let t = nlm_test(s.nlm_port, udp, &test_args(b.clone(), false));
        assert_eq!(t.stat.stat(), Nlm4Stats::Denied);
        let h = t.stat.holder().expect("the local holder");
        assert_eq!((h.exclusive, h.l_offset, h.l_len, h.oh.as_bytes().len()), (true, 0, 100, 0));
    }
    // Outside the local lock NLM goes on as before.
    let c = lock(&fh, "hostb", 22, 100, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(c.clone(), true, false)), Nlm4Stats::Granted);
    // The local lock goes: the re-sent blocking LOCK is granted and held on the file.
    drop(local);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(b.clone(), true, true)), Nlm4Stats::Granted);
    let local = open_rw(&export.path().join("file"));
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, false), Some((true, 50, 10)));
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 60, 0, false), Some((true, 100, 10)));
    // SM_NOTIFY from the rebooted host releases its locks on the file too.
    let notify = to_bytes(&StatChge { mon_name: SmString::new(b"hostb".to_vec()).unwrap(), state: 3 });
    assert!(body(rpc(s.nsm_port, true, NSM_PROG, 1, SM_NOTIFY, &notify)).is_empty());
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), None);
    assert!(take(&local, 0, 0));
}

#[test]
fn stopping_releases_the_locks_and_starting_again_retakes_them() {
    let (export, state) = (tempdir("ofd-restart"), tempdir("ofd-restart-state"));
    let (mut s, fh) = server_with_file(&export, &state);
    let local = open_rw(&export.path().join("file"));
    let a = lock(&fh, "hosta", 1, 10, 20);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(a.clone(), false, false)), Nlm4Stats::Granted);
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), Some((false, 10, 20)));
    // Stopping (the end of the active period) releases every OFD lock.
    s.stop();
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), None);
    // The node comes back on the same state: the table's lock is held on
    // the file again before any client calls.
    s.restart();
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), Some((false, 10, 20)));
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, false), None);
    // And still released by UNLOCK.
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(a)), Nlm4Stats::Granted);
    assert_eq!(seen(&local, libc::F_OFD_GETLK, 0, 0, true), None);
}
