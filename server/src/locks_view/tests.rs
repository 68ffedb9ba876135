use hanfs_state::locks::{FileId, LockArgs, LockKind, LockOwner, LockRange, MonitorId};
use hanfs_state::{Command, FsIdentity, NlmCommand, State};

use super::*;
use crate::vfs::fhandle::FsHandle;

const EXPORT: u32 = 1;
const KEY: [u8; 32] = [5; 32];
/// Stands for the identity check of a real handle: fs handles below it are "gone".
const IDENT: u8 = 77;

/// A handle for fs "inode" `ino`.
fn fh(ino: u8, ident: u8) -> FileId {
    let fs = FsHandle { kind: 1, bytes: vec![ino, ident] };
    FileId(FileHandle { export_id: EXPORT, fs }.encode(&HandleKey::new(&KEY)).unwrap())
}

/// What the kernel would say: ino 2 is the root, 10 `dir`, 11 `dir/f`, 12 `my file`.
fn paths(fh: &FileHandle) -> Option<Vec<u8>> {
    let [ino, ident] = fh.fs.bytes[..] else { return None };
    if ident != IDENT {
        return None;
    }
    let p: &[u8] = match ino {
        2 => b"",
        10 => b"/dir",
        11 => b"/dir/f",
        12 => b"/my file",
        _ => return None,
    };
    Some(p.to_vec())
}

fn locks_lines(s: &State) -> String {
    locks_lines_with(s, &paths)
}

fn file_name(s: &State, file: &FileId) -> String {
    super::file_name(s, Some(&HandleKey::new(&KEY)), &paths, file)
}

fn apply(state: &mut State, cmd: Command) {
    if let Err(e) = state.apply(&cmd) {
        panic!("{cmd:?}: {e}");
    }
}

fn lock(state: &mut State, host: &str, svid: u32, file: FileId, range: (u64, u64), kind: LockKind, block: bool) {
    let owner = LockOwner { caller_name: host.into(), svid, oh: svid.to_be_bytes().to_vec() };
    let args = LockArgs { file, owner, range: LockRange { offset: range.0, len: range.1 }, kind };
    let client_addr = format!("10.0.0.{}", svid % 250);
    apply(state, Command::Nlm(NlmCommand::Lock { args, block, client_addr, now_ms: 5 }));
}

/// An export `/export` (root ino 2) holding `dir/f` (ino 11) and `my file` (ino 12).
fn state_with_files() -> State {
    let mut s = State::default();
    let fs = FsIdentity { uuid: None, root_type: 1, root_handle: vec![2, IDENT] };
    apply(&mut s, Command::RegisterExport { export_id: EXPORT, path: "/export".into(), fs });
    apply(&mut s, Command::SetHandleKey { key: KEY });
    s
}

#[test]
fn empty_table_prints_the_headers() {
    let text = locks_lines(&State::default());
    assert_eq!(
        text,
        "nsm_state: 1\n\
         counts: held 0, waiting 0, granting 0, hosts 0, monitors 0\n\
         LOCKS     HOST  SVID  TYPE  OFFSET  LEN  FILE\n\
         HOSTS     HOST  CALLBACK\n\
         MONITORS  HOST  HOST_STATE  WATCHER  PROG  VERS  PROC\n"
    );
}

#[test]
fn lists_holders_waiters_grants_hosts_and_monitors() {
    let mut s = state_with_files();
    let watcher = MonitorId { my_name: "server-1".into(), my_prog: 100_021, my_vers: 4, my_proc: 16 };
    apply(&mut s, Command::Nlm(NlmCommand::Mon { mon_name: "client-a".into(), id: watcher, priv_: [0; 16] }));
    apply(&mut s, Command::Nlm(NlmCommand::Notify { mon_name: "client-a".into(), state: 3, now_ms: 1 }));
    lock(&mut s, "client-a", 4242, fh(11, IDENT), (0, 0), LockKind::Exclusive, false);
    lock(&mut s, "client-b", 17, fh(11, IDENT), (100, 50), LockKind::Shared, true);
    lock(&mut s, "client-b", 18, fh(11, IDENT), (0, 1), LockKind::Exclusive, true);
    // A handle that does not authenticate, and one for an object that is gone.
    lock(&mut s, "client-c", 1, FileId(vec![0xab, 0xcd]), (5, 5), LockKind::Shared, false);
    lock(&mut s, "client-c", 2, fh(11, IDENT + 1), (5, 5), LockKind::Shared, false);
    // client-c's exclusive lock on `my file` is released while client-d
    // waits: client-d holds it now, its GRANTED callback still pending.
    lock(&mut s, "client-c", 3, fh(12, IDENT), (0, 10), LockKind::Exclusive, false);
    lock(&mut s, "client-d", 9, fh(12, IDENT), (0, 10), LockKind::Exclusive, true);
    let owner = LockOwner { caller_name: "client-c".into(), svid: 3, oh: 3u32.to_be_bytes().to_vec() };
    let unlock = NlmCommand::Unlock { file: fh(12, IDENT), owner, range: LockRange { offset: 0, len: 10 }, now_ms: 6 };
    apply(&mut s, Command::Nlm(unlock));

    let text = locks_lines(&s);
    let expected = "\
nsm_state: 1
counts: held 4, waiting 2, granting 1, hosts 4, monitors 1
LOCKS     HOST      SVID  TYPE       OFFSET  LEN     FILE
held      client-a  4242  exclusive  0       to EOF  /export/dir/f
held      client-c  2     shared     5       5       /export#0b4e
held      client-d  9     exclusive  0       10      /export/my file
held      client-c  1     shared     5       5       abcd
waiting   client-b  17    shared     100     50      /export/dir/f
waiting   client-b  18    exclusive  0       1       /export/dir/f
granting  client-d  9     exclusive  0       10      /export/my file
HOSTS     HOST      CALLBACK
host      client-a  10.0.0.242
host      client-b  10.0.0.18
host      client-c  10.0.0.3
host      client-d  10.0.0.9
MONITORS  HOST      HOST_STATE  WATCHER   PROG    VERS  PROC
monitor   client-a  3           server-1  100021  4     16
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn the_export_root_and_missing_links() {
    let mut s = state_with_files();
    assert_eq!(file_name(&s, &fh(2, IDENT)), "/export");
    assert_eq!(file_name(&s, &fh(11, IDENT)), "/export/dir/f");
    // An object this node cannot find (deleted, or the export not served here).
    assert_eq!(file_name(&s, &fh(20, IDENT)), "/export#144d");
    // A handle that does not authenticate: its bytes.
    let mut forged = fh(11, IDENT);
    forged.0[6] ^= 1;
    assert_eq!(file_name(&s, &forged), hex(&forged.0));
    s = State::default();
    assert_eq!(file_name(&s, &fh(11, IDENT)), hex(&fh(11, IDENT).0));
}

#[test]
fn client_names_cannot_break_the_columns() {
    assert_eq!(escape(b"a b\tc\nd\\e", false), "a\\x20b\\x09c\\x0ad\\\\e");
    assert_eq!(escape(b"my file", true), "my file");
    assert_eq!(escape("caf\u{e9}".as_bytes(), false), "caf\u{e9}");
    assert_eq!(escape(b"\xff\xfe.", false), "\\xff\\xfe.");
    let mut s = state_with_files();
    lock(&mut s, "evil host\nheld x", 1, fh(11, IDENT), (0, 1), LockKind::Shared, false);
    let text = locks_lines(&s);
    assert!(text.contains("held      evil\\x20host\\x0aheld\\x20x  1"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("held")).count(), 1, "{text}");
}

#[test]
fn the_text_is_bounded() {
    let mut out = Bounded::new(40);
    let rows: Vec<Vec<String>> = (0..10).map(|i| vec!["row".into(), format!("{i}")]).collect();
    out.table(&["ROWS", "N"], &rows);
    let text = out.finish();
    assert!(text.len() <= 40 + "truncated: 99 more lines not shown\n".len(), "{text}");
    assert!(text.starts_with("ROWS      N\nrow       0\nrow       1\n"), "{text}");
    assert!(text.ends_with("truncated: 8 more lines not shown\n"), "{text}");
}

#[test]
fn len_zero_reads_to_eof() {
    assert_eq!(len_text(0), "to EOF");
    assert_eq!(len_text(7), "7");
    assert_eq!(kind_name(LockKind::Shared), "shared");
}
