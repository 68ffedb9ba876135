//! Directory listings remembered between READDIRPLUS calls, as nfs-ganesha's
//! dirent cache: each entry's name, inode number, cookie and wire handle, so a
//! listing served again costs one statx per entry (for fresh attributes)
//! instead of a getdents pass, a name_to_handle_at and a MAC.
//!
//! Why a remembered listing is exact: the kernel sets a directory's ctime on
//! every change of its entries (create, unlink, rename in or out, link), and
//! nothing can set a ctime back. A listing is filled only from a directory
//! whose ctime, read before the listing, is at least `SETTLED_NS` old, so any
//! later change stamps a ctime newer than the one recorded, even with coarse
//! timestamps; it is served only while the directory's ctime and birth time
//! (statx at the call's start) are exactly those recorded. While an entry
//! stays in the directory its inode cannot be freed, so its handle (inode and
//! generation) stays right. A directory deleted and its inode number reused
//! has another birth time and a later ctime. Each entry's statx at serve time
//! must also report the recorded inode, or the entry gets a handle made
//! afresh. Permissions are checked per call as without the cache (the
//! directory opened for reading, each statx under the caller's ids).
//!
//! Bounded: at most `DIRS_MAX` directories and `ENTRIES_MAX` entries in all,
//! least recently used first out; a directory with more than
//! `DIR_ENTRIES_MAX` entries is remembered only as too big (so it is not
//! read whole again until it changes). Local to the serving node
//! (never replicated): a node that takes over starts empty.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::dir::{self, Take};
use super::resolve::Obj;
use super::{fhandle, Vfs};

/// A directory's ctime must be at least this old (by the wall clock) for
/// its listing to be remembered: any later change then stamps a different
/// ctime. Timestamps come from the kernel's coarse clock, which lags the
/// wall clock by at most one tick (10 ms at HZ=100, the slowest Linux
/// configuration); five ticks of margin. (With multigrain timestamps, Linux
/// 6.13 on ext4, XFS, btrfs and tmpfs, a change after a statx always gets a
/// newer ctime and no margin is needed.)
pub const SETTLED_NS: i128 = 50_000_000;
/// Directories remembered at most.
pub const DIRS_MAX: usize = 64;
/// Entries remembered at most, in all directories together (about 100
/// bytes each).
pub const ENTRIES_MAX: usize = 256 * 1024;
/// Largest directory remembered.
pub const DIR_ENTRIES_MAX: usize = 16 * 1024;

const _: () = assert!(DIR_ENTRIES_MAX <= ENTRIES_MAX && DIRS_MAX > 0);

/// One remembered entry.
pub struct Entry {
    pub ino: u64,
    pub name: Box<[u8]>,
    pub cookie: u64,
    /// The wire handle (none for `.` and `..`, or if none could be made).
    pub fh: Option<Box<[u8]>>,
}

/// A directory's whole listing, in getdents order.
pub struct Listing {
    key: Key,
    ctime: (i64, u32),
    btime: Option<(i64, u32)>,
    /// More than `DIR_ENTRIES_MAX` entries: none kept, list the directory.
    pub too_big: bool,
    pub entries: Vec<Entry>,
}

impl Listing {
    /// The index of the first entry after `cookie` (0: the start); None if
    /// no entry has that cookie.
    pub fn resume_at(&self, cookie: u64) -> Option<usize> {
        if cookie == 0 {
            return Some(0);
        }
        self.entries.iter().position(|e| e.cookie == cookie).map(|i| i + 1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    export_id: u32,
    ino: u64,
}

#[derive(Default)]
pub struct DirCache {
    /// Most recently used last.
    dirs: Mutex<VecDeque<Arc<Listing>>>,
}

impl DirCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Listing>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remembered listing of `dir` if it is still exact (see the module
    /// doc); `dir.st` must come from a statx at the call's start.
    pub fn get(&self, dir: &Obj) -> Option<Arc<Listing>> {
        let key = Key { export_id: dir.export_id, ino: dir.st.ino };
        let mut dirs = self.lock();
        let at = dirs.iter().position(|l| l.key == key)?;
        let l = dirs.remove(at)?;
        if l.ctime != dir.st.ctime || l.btime != dir.st.btime {
            return None;
        }
        dirs.push_back(l.clone());
        Some(l)
    }

    /// Read all of `dir` (open for reading as `fd`) and remember it, if its
    /// ctime is settled (`now_ns`: the wall clock, in ns since the epoch) and
    /// it is not too large. Run with the server's own ids: each entry's
    /// handle is made here, but handed out only after the caller's statx.
    pub fn fill(&self, vfs: &Vfs, dir: &Obj, fd: &OwnedFd, now_ns: i128) -> Option<Arc<Listing>> {
        if !settled(dir.st.ctime, now_ns) {
            return None;
        }
        let mut entries = Vec::new();
        let mut too_big = false;
        let eof = dir::list(fd, 0, |e| {
            if entries.len() >= DIR_ENTRIES_MAX {
                too_big = true;
                return Take::Full;
            }
            let fh = if e.name == b"." || e.name == b".." {
                None
            } else {
                fhandle::raw_handle_at(dir.raw(), e.name).ok().and_then(|fs| {
                    let mut out = Vec::new();
                    vfs.encode_into(dir.export_id, &fs, &mut out).ok().map(|()| out.into_boxed_slice())
                })
            };
            entries.push(Entry { ino: e.ino, name: e.name.into(), cookie: e.cookie, fh });
            Take::More
        })
        .ok()?;
        if !eof && !too_big {
            return None;
        }
        if too_big {
            entries = Vec::new();
        }
        let listing = Arc::new(Listing {
            key: Key { export_id: dir.export_id, ino: dir.st.ino },
            ctime: dir.st.ctime,
            btime: dir.st.btime,
            too_big,
            entries,
        });
        remember(&mut self.lock(), listing.clone());
        Some(listing)
    }
}

/// Whether a directory last changed at `ctime` has settled by `now_ns`.
fn settled(ctime: (i64, u32), now_ns: i128) -> bool {
    let ctime_ns = i128::from(ctime.0) * 1_000_000_000 + i128::from(ctime.1);
    now_ns.saturating_sub(ctime_ns) >= SETTLED_NS
}

/// Put `listing` in as the most recently used (replacing its directory's
/// older one), then drop the least recently used beyond the bounds.
fn remember(dirs: &mut VecDeque<Arc<Listing>>, listing: Arc<Listing>) {
    dirs.retain(|l| l.key != listing.key);
    dirs.push_back(listing);
    let mut total: usize = dirs.iter().map(|l| l.entries.len()).sum();
    while dirs.len() > DIRS_MAX || total > ENTRIES_MAX {
        let Some(old) = dirs.pop_front() else { break };
        total = total.saturating_sub(old.entries.len());
    }
}

/// The wall clock in ns since the epoch (0 if it is before it).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(ino: u64, n: usize) -> Arc<Listing> {
        let entries = (0..n)
            .map(|i| Entry { ino: i as u64, name: format!("e{i}").into_bytes().into(), cookie: i as u64 + 1, fh: None })
            .collect();
        Arc::new(Listing { key: Key { export_id: 1, ino }, ctime: (5, 0), btime: None, too_big: false, entries })
    }

    #[test]
    fn only_a_settled_directory_is_remembered() {
        let at = (1_000, 500);
        let ns = 1_000 * 1_000_000_000 + 500;
        assert!(!settled(at, ns));
        assert!(!settled(at, ns + SETTLED_NS - 1));
        assert!(settled(at, ns + SETTLED_NS));
        // A clock behind the ctime: not settled.
        assert!(!settled(at, ns - 5));
    }

    #[test]
    fn bounds_drop_the_least_recently_used() {
        let mut dirs = VecDeque::new();
        for ino in 0..(DIRS_MAX as u64 + 5) {
            remember(&mut dirs, listing(ino, 1));
        }
        assert_eq!(dirs.len(), DIRS_MAX);
        assert_eq!(dirs.front().map(|l| l.key.ino), Some(5));
        // Refilled: one listing per directory, now the most recent.
        remember(&mut dirs, listing(7, 2));
        assert_eq!(dirs.iter().filter(|l| l.key.ino == 7).count(), 1);
        assert_eq!(dirs.back().map(|l| l.entries.len()), Some(2));
        // The entry bound: a big listing pushes out older ones.
        remember(&mut dirs, listing(1_000, ENTRIES_MAX - 10));
        let total: usize = dirs.iter().map(|l| l.entries.len()).sum();
        assert!(total <= ENTRIES_MAX, "{total}");
        assert_eq!(dirs.back().map(|l| l.key.ino), Some(1_000));
    }

    #[test]
    fn resuming_needs_a_known_cookie() {
        let l = listing(1, 4);
        assert_eq!(l.resume_at(0), Some(0));
        assert_eq!(l.resume_at(2), Some(2));
        assert_eq!(l.resume_at(4), Some(4));
        assert_eq!(l.resume_at(99), None);
    }
}
