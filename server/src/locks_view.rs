//! `hanfs-server locks`: the replicated NLM/NSM state as text, from the
//! applied state of the node asked (every node holds the same table; a
//! follower may be a few entries behind its leader).
//!
//! Layout (stable; one row per line, first column says what the row is, so
//! `grep ^held` or `grep ^waiting` picks one kind):
//!
//! ```text
//! nsm_state: 3
//! counts: held 1, waiting 1, granting 0, hosts 2, monitors 1
//! LOCKS     HOST      SVID  TYPE       OFFSET  LEN     FILE
//! held      client-a  4242  exclusive  0       to EOF  /export/dir/f
//! waiting   client-b  17    shared     100     50      /export/dir/f
//! HOSTS     HOST      CALLBACK
//! host      client-a  10.0.0.2
//! MONITORS  HOST      HOST_STATE  WATCHER   PROG    VERS  PROC
//! monitor   client-a  3           server-1  100021  4     16
//! ```
//!
//! - `held`: granted locks, by file, owner, offset. `waiting`: blocked LOCKs,
//!   by file, oldest first (the FIFO they are granted in). `granting`: granted
//!   waiters whose GRANTED callback is not yet acknowledged, oldest first
//!   (the lock is also listed as `held`).
//! - `LEN` 0 in NLM means "to end of file" and is shown as `to EOF`.
//! - `FILE` is `export_name/path/from/root` where the node asked serves the
//!   export (the handle is opened with `open_by_handle_at` and its current
//!   path read back, so a file renamed since shows its new name); elsewhere,
//!   or for a file deleted meanwhile, `export_name#<fs handle in hex>`; a
//!   handle that does not authenticate is shown as its bytes in hex. `FILE`
//!   is the last column, so a path with spaces stays one field for
//!   `cut`/`awk` users who take the rest of the line.
//! - `HOST_STATE` is the NSM state the monitored host last announced
//!   (SM_NOTIFY), `-` if none yet; `nsm_state` is this server's own.
//! - Client-supplied names (hosts, path components) are escaped: `\` as
//!   `\\`, control characters, whitespace other than the space in `FILE`,
//!   and bytes that are not UTF-8, as `\xNN`; so a row is always one line
//!   and its columns split on whitespace.
//! - The text is bounded by `LOCKS_VIEW_BYTES_MAX`: rows past it are left
//!   out and counted in a final `truncated:` line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hanfs_state::locks::{FileId, LockKind, LockOwner, LockRange};
use hanfs_state::State;

use crate::vfs::handle::{FileHandle, HandleKey};

/// Finds the current path (inside its export) of the object behind a handle.
pub type PathOf<'a> = &'a dyn Fn(&FileHandle) -> Option<Vec<u8>>;

/// Largest answer built (below `admin::ADMIN_ANSWER_BYTES_MAX`, which the
/// client reads at most).
pub const LOCKS_VIEW_BYTES_MAX: usize = 32 * 1024 * 1024;
const _: () = assert!(LOCKS_VIEW_BYTES_MAX as u64 <= crate::admin::ADMIN_ANSWER_BYTES_MAX);

/// Width of the first column (the longest section name, `MONITORS`).
const KIND_WIDTH: usize = 8;

/// The whole `locks` answer, naming files through `vfs`, the exports this
/// node serves, if any.
pub fn locks_lines(state: &State, vfs: Option<&crate::vfs::Vfs>) -> String {
    match vfs {
        Some(vfs) => locks_lines_with(state, &|fh| vfs.path_of(fh)),
        None => locks_lines_with(state, &|_| None),
    }
}

/// `locks_lines` with the path finder given.
pub fn locks_lines_with(state: &State, path_of: PathOf<'_>) -> String {
    let nlm = state.nlm();
    let table = nlm.locks();
    let mut files = FileNames::new(state, path_of);
    let mut lock_rows = Vec::new();
    for (file, owner, range, kind) in table.iter_locks() {
        lock_rows.push(lock_row("held", owner, range, kind, files.name(file)));
    }
    for (file, w) in table.iter_waiters() {
        lock_rows.push(lock_row("waiting", &w.owner, w.range, w.kind, files.name(file)));
    }
    let mut granting = 0u64;
    for (_, g) in table.pending_grants() {
        granting += 1;
        lock_rows.push(lock_row("granting", &g.owner, g.range, g.kind, files.name(&g.file)));
    }
    let host_rows: Vec<Vec<String>> = nlm
        .hosts()
        .iter()
        .map(|(name, addr)| vec!["host".into(), escape(name.as_bytes(), false), escape(addr.as_bytes(), false)])
        .collect();
    let monitor_rows: Vec<Vec<String>> = nlm
        .monitors()
        .iter()
        .map(|(mon_name, id, _priv)| {
            vec![
                "monitor".into(),
                escape(mon_name.as_bytes(), false),
                nlm.monitors().host_state(mon_name).map_or_else(|| "-".to_string(), |s| s.to_string()),
                escape(id.my_name.as_bytes(), false),
                id.my_prog.to_string(),
                id.my_vers.to_string(),
                id.my_proc.to_string(),
            ]
        })
        .collect();

    let mut out = Bounded::new(LOCKS_VIEW_BYTES_MAX);
    out.line(format!("nsm_state: {}", nlm.nsm_state()));
    out.line(format!(
        "counts: held {}, waiting {}, granting {granting}, hosts {}, monitors {}",
        table.lock_count(),
        table.waiter_count(),
        nlm.hosts().len(),
        nlm.monitors().len()
    ));
    out.table(&["LOCKS", "HOST", "SVID", "TYPE", "OFFSET", "LEN", "FILE"], &lock_rows);
    out.table(&["HOSTS", "HOST", "CALLBACK"], &host_rows);
    out.table(&["MONITORS", "HOST", "HOST_STATE", "WATCHER", "PROG", "VERS", "PROC"], &monitor_rows);
    out.finish()
}

fn lock_row(what: &str, owner: &LockOwner, range: LockRange, kind: LockKind, file: String) -> Vec<String> {
    vec![
        what.to_string(),
        escape(owner.caller_name.as_bytes(), false),
        owner.svid.to_string(),
        kind_name(kind).to_string(),
        range.offset.to_string(),
        len_text(range.len),
        file,
    ]
}

pub fn kind_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Shared => "shared",
        LockKind::Exclusive => "exclusive",
    }
}

/// NLM `l_len`: 0 runs to end of file.
pub fn len_text(len: u64) -> String {
    if len == 0 {
        "to EOF".to_string()
    } else {
        len.to_string()
    }
}

/// File names by handle, each resolved once.
struct FileNames<'a> {
    state: &'a State,
    key: Option<HandleKey>,
    path_of: PathOf<'a>,
    known: BTreeMap<&'a FileId, String>,
}

impl<'a> FileNames<'a> {
    fn new(state: &'a State, path_of: PathOf<'a>) -> Self {
        let key = state.handle_key().map(HandleKey::new);
        FileNames { state, key, path_of, known: BTreeMap::new() }
    }

    fn name(&mut self, file: &'a FileId) -> String {
        let (state, key, path_of) = (self.state, self.key.as_ref(), self.path_of);
        self.known.entry(file).or_insert_with(|| file_name(state, key, path_of, file)).clone()
    }
}

/// The FILE column for one handle (see the module doc).
pub fn file_name(state: &State, key: Option<&HandleKey>, path_of: PathOf<'_>, file: &FileId) -> String {
    let Some(fh) = key.and_then(|k| FileHandle::decode(&file.0, k).ok()) else { return hex(&file.0) };
    let Some(export) = state.export_path(fh.export_id) else { return hex(&file.0) };
    let mut name = escape(export.as_bytes(), true);
    match path_of(&fh) {
        Some(rel) => {
            for c in rel.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
                if !name.ends_with('/') {
                    name.push('/');
                }
                name.push_str(&escape(c, true));
            }
        }
        None => {
            name.push('#');
            name.push_str(&hex(&fh.fs.bytes));
        }
    }
    name
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Escapes a client-supplied name for one column (see the module doc);
/// `keep_space` keeps ' ' as is (only in `FILE`, the last column).
pub fn escape(bytes: &[u8], keep_space: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                ' ' if keep_space => out.push(' '),
                c if c.is_control() || c.is_whitespace() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Text built up to a byte bound; rows past it are counted instead.
struct Bounded {
    text: String,
    max: usize,
    dropped: u64,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Bounded { text: String::new(), max, dropped: 0 }
    }

    fn line(&mut self, line: String) {
        if self.dropped > 0 || self.text.len() + line.len() + 1 > self.max {
            self.dropped += 1;
            return;
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }

    /// A header and its rows, each column as wide as its widest cell (the
    /// first column at least `KIND_WIDTH`, the last never padded).
    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        if let Some(w) = widths.first_mut() {
            *w = (*w).max(KIND_WIDTH);
        }
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        self.line(aligned(&header, &widths));
        for row in rows {
            self.line(aligned(row, &widths));
        }
    }

    fn finish(mut self) -> String {
        if self.dropped > 0 {
            let _ = writeln!(self.text, "truncated: {} more lines not shown", self.dropped);
        }
        self.text
    }
}

/// Cells separated by two spaces, padded to `widths`, the last cell as is.
fn aligned(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<w$}  ");
        }
    }
    line
}

#[cfg(test)]
mod tests;
