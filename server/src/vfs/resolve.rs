//! Handle → object, and name → object, always by walking from the export root
//! fd one component at a time with O_PATH|O_NOFOLLOW (no symlink is followed,
//! `..` is never walked). An object is accepted only if its inode number AND
//! identity (birth time / generation) match the handle: a deleted object, or a
//! reused inode number, gives NFS3ERR_STALE.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::RwLock;

use hanfs_state::{Command, HandleEntry, State};
use nfs3_types::nfs3::{fattr3, nfsstat3};

use super::dir::{self, Take};
use super::handle::{ident_from_btime, ident_of, FileHandle};
use super::sys::{self, Stat};
use super::{attr, ExportRoot, Vfs};

/// Directory entries searched for another name of a hard-linked file.
const LINK_SCAN_ENTRIES_MAX: u32 = 100_000;

/// A resolved object: an O_PATH fd on it and its attributes.
pub struct Obj {
    pub export_id: u32,
    pub fd: OwnedFd,
    pub st: Stat,
    pub ident: u64,
}

impl Obj {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn handle(&self) -> FileHandle {
        FileHandle { export_id: self.export_id, ino: self.st.ino, ident: self.ident }
    }

    pub fn fh(&self) -> Vec<u8> {
        self.handle().encode()
    }

    pub fn fattr(&self) -> fattr3 {
        attr::fattr(&self.st, self.export_id)
    }

    /// Re-read the attributes (after a change).
    pub fn restat(&mut self) -> Result<(), nfsstat3> {
        self.st = sys::stat_fd(&self.fd)?;
        Ok(())
    }

    /// The handle-table entry for this object reached as `name` in `dir`.
    pub fn entry_in(&self, dir: &Obj, name: &[u8]) -> HandleEntry {
        HandleEntry {
            export_id: self.export_id,
            ino: self.st.ino,
            ident: self.ident,
            parent_ino: dir.st.ino,
            name: name.to_vec(),
        }
    }
}

fn read_state(state: &RwLock<State>) -> Result<std::sync::RwLockReadGuard<'_, State>, nfsstat3> {
    state.read().map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
}

/// The recorded path of a handle, from the replicated table; STALE unless the
/// table knows the object with the handle's identity.
fn table_path(state: &RwLock<State>, fh: &FileHandle) -> Result<Vec<Vec<u8>>, nfsstat3> {
    let s = read_state(state)?;
    match s.handle(fh.export_id, fh.ino) {
        Some(entry) if entry.ident == fh.ident => {}
        _ => return Err(nfsstat3::NFS3ERR_STALE),
    }
    s.path_of(fh.export_id, fh.ino).ok_or(nfsstat3::NFS3ERR_STALE)
}

/// Walk `path` from the export root, one O_PATH|O_NOFOLLOW open per name
/// (the root fd itself is used for the first step, not a copy of it). None
/// for an empty path (the root itself). A missing name or a symlink on the
/// way is STALE.
fn walk(e: &ExportRoot, path: &[Vec<u8>]) -> Result<Option<OwnedFd>, nfsstat3> {
    let mut cur: Option<OwnedFd> = None;
    for comp in path {
        let dir = cur.as_ref().map_or(e.root_fd(), |fd| fd.as_raw_fd());
        cur = Some(sys::open_path_at(dir, comp).map_err(|_| nfsstat3::NFS3ERR_STALE)?);
    }
    Ok(cur)
}

impl Vfs {
    fn export_of(&self, export_id: u32) -> Result<&ExportRoot, nfsstat3> {
        // An export this node does not serve: STALE, as knfsd for an unknown fsid.
        self.export(export_id).ok_or(nfsstat3::NFS3ERR_STALE)
    }

    fn root_obj(&self, e: &ExportRoot) -> Result<Obj, nfsstat3> {
        let fd = sys::dup(&e.root)?;
        let st = sys::stat_fd(&fd)?;
        Ok(Obj { export_id: e.export_id, fd, st, ident: e.ident })
    }

    /// Resolve a handle from the wire.
    pub fn resolve(&self, state: &RwLock<State>, fh: &[u8]) -> Result<Obj, nfsstat3> {
        let fh = FileHandle::decode(fh)?;
        self.resolve_fh(state, &fh)
    }

    pub fn resolve_fh(&self, state: &RwLock<State>, fh: &FileHandle) -> Result<Obj, nfsstat3> {
        let e = self.export_of(fh.export_id)?;
        if fh.ino == e.ino {
            if fh.ident != e.ident {
                return Err(nfsstat3::NFS3ERR_STALE);
            }
            return self.root_obj(e);
        }
        match table_path(state, fh).and_then(|path| self.open_checked(e, fh, &path)) {
            Err(nfsstat3::NFS3ERR_STALE) => match self.moved_path(state, fh) {
                Some(path) => self.open_checked(e, fh, &path),
                None => Err(nfsstat3::NFS3ERR_STALE),
            },
            r => r,
        }
    }

    /// Walk `path` and require the handle's inode, device and identity there.
    fn open_checked(&self, e: &ExportRoot, fh: &FileHandle, path: &[Vec<u8>]) -> Result<Obj, nfsstat3> {
        let cur = match walk(e, path)? {
            Some(fd) => fd,
            None => sys::dup(&e.root)?,
        };
        let st = sys::stat_fd(&cur).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
        if st.ino != fh.ino || !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let ident = ident_of(&cur, &st);
        if ident != fh.ident {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        Ok(Obj { export_id: fh.export_id, fd: cur, st, ident })
    }

    /// The attributes of the object behind a handle, with exactly the checks
    /// of `resolve_fh` (same walk, same inode, device and identity checks) but
    /// without opening the object itself: its last name is statx'ed relative to
    /// its parent (GETATTR needs no fd). Falls back to an open only where the
    /// identity is the inode generation (no birth time).
    pub fn resolve_stat(&self, state: &RwLock<State>, fh: &FileHandle) -> Result<Stat, nfsstat3> {
        let e = self.export_of(fh.export_id)?;
        if fh.ino == e.ino {
            return self.resolve_fh(state, fh).map(|o| o.st);
        }
        match table_path(state, fh).and_then(|path| self.stat_checked(state, e, fh, &path)) {
            Err(nfsstat3::NFS3ERR_STALE) => match self.moved_path(state, fh) {
                Some(path) => self.stat_checked(state, e, fh, &path),
                None => Err(nfsstat3::NFS3ERR_STALE),
            },
            r => r,
        }
    }

    /// Where this node has just moved the object (see `vfs::moved`), as a path
    /// from the export root; None if it moved nothing of the kind.
    fn moved_path(&self, state: &RwLock<State>, fh: &FileHandle) -> Option<Vec<Vec<u8>>> {
        let (parent_ino, name) = self.moved.get(fh.export_id, fh.ino)?;
        let mut path = read_state(state).ok()?.path_of(fh.export_id, parent_ino)?;
        path.push(name);
        Some(path)
    }

    /// `resolve_stat` for one candidate path.
    fn stat_checked(
        &self,
        state: &RwLock<State>,
        e: &ExportRoot,
        fh: &FileHandle,
        path: &[Vec<u8>],
    ) -> Result<Stat, nfsstat3> {
        let Some((last, parents)) = path.split_last() else {
            return self.resolve_fh(state, fh).map(|o| o.st);
        };
        let parent = walk(e, parents)?;
        let parent_raw = parent.as_ref().map_or(e.root_fd(), |fd| fd.as_raw_fd());
        let st = sys::stat_at(parent_raw, last).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
        if st.ino != fh.ino || !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let ident = match ident_from_btime(&st) {
            Some(ident) => ident,
            None => {
                let fd = sys::open_path_at(parent_raw, last).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
                let st = sys::stat_fd(&fd).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
                if st.ino != fh.ino {
                    return Err(nfsstat3::NFS3ERR_STALE);
                }
                ident_of(&fd, &st)
            }
        };
        if ident != fh.ident {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        Ok(st)
    }

    /// The parent directory of `dir`; the export root is its own parent, so
    /// `..` never leaves the export.
    pub fn parent(&self, state: &RwLock<State>, dir: &Obj) -> Result<Obj, nfsstat3> {
        let e = self.export_of(dir.export_id)?;
        if dir.st.ino == e.ino {
            return self.root_obj(e);
        }
        let fh = {
            let s = read_state(state)?;
            let entry = s.handle(dir.export_id, dir.st.ino).ok_or(nfsstat3::NFS3ERR_STALE)?;
            if entry.parent_ino == e.ino {
                drop(s);
                return self.root_obj(e);
            }
            let parent = s.handle(dir.export_id, entry.parent_ino).ok_or(nfsstat3::NFS3ERR_STALE)?;
            FileHandle { export_id: dir.export_id, ino: parent.ino, ident: parent.ident }
        };
        self.resolve_fh(state, &fh)
    }

    /// Look `name` up in `dir` under the caller's credentials (the kernel checks
    /// search permission). `.` is `dir`, `..` is `parent`. Objects on another
    /// device (a mount inside the export) are not served.
    pub fn child(&self, state: &RwLock<State>, dir: &Obj, name: &[u8]) -> Result<Obj, nfsstat3> {
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if name == b"." || name == b".." {
            if !sys::access_fd(&dir.fd, libc::X_OK) {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            return if name == b"." {
                Ok(Obj { export_id: dir.export_id, fd: sys::dup(&dir.fd)?, st: dir.st.clone(), ident: dir.ident })
            } else {
                self.parent(state, dir)
            };
        }
        let e = self.export_of(dir.export_id)?;
        let fd = sys::open_path_at(dir.raw(), name)?;
        let st = sys::stat_fd(&fd)?;
        if !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let ident = ident_of(&fd, &st);
        Ok(Obj { export_id: dir.export_id, fd, st, ident })
    }

    /// Attributes and identity of `name` in `dir` for a listing (READDIRPLUS),
    /// with the same checks as `child`: one statx relative to the directory
    /// (search permission checked by the kernel under the caller's ids, no
    /// symlink followed), no open, when the filesystem reports a birth time;
    /// otherwise through `child` (the generation needs an open fd).
    pub fn child_attrs(&self, state: &RwLock<State>, dir: &Obj, name: &[u8]) -> Result<(Stat, u64), nfsstat3> {
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if name == b"." || name == b".." {
            return self.child(state, dir, name).map(|o| (o.st, o.ident));
        }
        let e = self.export_of(dir.export_id)?;
        let st = sys::stat_at(dir.raw(), name)?;
        if !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        match ident_from_btime(&st) {
            Some(ident) => Ok((st, ident)),
            None => self.child(state, dir, name).map(|o| (o.st, o.ident)),
        }
    }

    /// Another name in `dir` for the object `ino`/`ident` (a hard link), found
    /// by scanning at most LINK_SCAN_ENTRIES_MAX entries at the server's ids.
    pub fn find_link(&self, dir: &Obj, ino: u64, ident: u64) -> Option<Vec<u8>> {
        let fd = sys::reopen(&dir.fd, libc::O_RDONLY | libc::O_DIRECTORY).ok()?;
        let mut candidates = Vec::new();
        let mut scanned = 0u32;
        let _ = dir::list(&fd, 0, |e| {
            scanned += 1;
            if e.ino == ino && e.name != b"." && e.name != b".." {
                candidates.push(e.name);
            }
            if scanned >= LINK_SCAN_ENTRIES_MAX {
                Take::Full
            } else {
                Take::More
            }
        });
        candidates.into_iter().find(|name| {
            sys::open_path_at(dir.raw(), name)
                .ok()
                .and_then(|fd| sys::stat_fd(&fd).ok().map(|st| (fd, st)))
                .is_some_and(|(fd, st)| st.ino == ino && ident_of(&fd, &st) == ident)
        })
    }

    /// The `PutHandles` command for `entries` that are new or changed, or None
    /// if the table already has them all (keeps commits cheap). Adds the export
    /// root's entry if the table lacks it, so `path_of` can end there.
    pub fn handle_updates(&self, state: &RwLock<State>, entries: Vec<HandleEntry>) -> Option<Command> {
        let s = state.read().ok()?;
        let mut out: Vec<HandleEntry> = Vec::new();
        for entry in entries {
            if s.handle(entry.export_id, entry.ino) == Some(&entry) {
                continue;
            }
            if let Some(e) = self.export(entry.export_id) {
                let root_known = s.handle(e.export_id, e.ino).is_some()
                    || out.iter().any(|o| o.export_id == e.export_id && o.ino == e.ino);
                if !root_known {
                    out.push(HandleEntry {
                        export_id: e.export_id,
                        ino: e.ino,
                        ident: e.ident,
                        parent_ino: e.ino,
                        name: Vec::new(),
                    });
                }
            }
            if !out.iter().any(|o| o.export_id == entry.export_id && o.ino == entry.ino) {
                out.push(entry);
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(Command::PutHandles(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use hanfs_state::Command;

    use super::*;
    use crate::config::ExportConfig;

    const EXPORT: u32 = 3;

    fn setup(label: &str) -> (std::path::PathBuf, Vfs, RwLock<State>) {
        let dir = std::env::temp_dir().join(format!("hanfs-resolve-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/f"), b"x").unwrap();
        let cfg = ExportConfig { name: "/e".into(), dir: dir.clone(), export_id: EXPORT, clients: Vec::new() };
        let vfs = Vfs::new(&[cfg]).unwrap();
        let mut state = State::default();
        state.apply(&Command::RegisterExport { export_id: EXPORT, path: "/e".into() }).unwrap();
        (dir, vfs, RwLock::new(state))
    }

    /// Look `path` up from the root and record every step, as LOOKUPs would.
    fn walk(vfs: &Vfs, state: &RwLock<State>, path: &[&[u8]]) -> Obj {
        let (root_fh, _) = vfs.root_fh(EXPORT).unwrap();
        let mut cur = vfs.resolve(state, &root_fh).unwrap();
        for name in path {
            let next = vfs.child(state, &cur, name).unwrap();
            let cmd = vfs.handle_updates(state, vec![next.entry_in(&cur, name)]);
            if let Some(cmd) = cmd {
                state.write().unwrap().apply(&cmd).unwrap();
            }
            cur = next;
        }
        cur
    }

    #[test]
    fn resolves_and_goes_stale_when_moved_or_replaced() {
        let (dir, vfs, state) = setup("moved");
        let f = walk(&vfs, &state, &[b"d", b"f"]);
        assert_eq!(f.st.ino, std::fs::metadata(dir.join("d/f")).unwrap().ino());
        // Recording the same entries again changes nothing: no commit needed.
        let d = walk(&vfs, &state, &[b"d"]);
        assert!(vfs.handle_updates(&state, vec![f.entry_in(&d, b"f")]).is_none());
        let fh = f.fh();
        assert_eq!(vfs.resolve(&state, &fh).map(|o| o.st.ino).ok(), Some(f.st.ino));
        assert_eq!(vfs.resolve_stat(&state, &f.handle()).ok(), Some(f.st.clone()));
        assert_eq!(vfs.resolve_stat(&state, &d.handle()).map(|st| st.ino).ok(), Some(d.st.ino));
        // Wrong ident, unknown export, bad length.
        let mut h = f.handle();
        h.ident ^= 1;
        assert_eq!(vfs.resolve(&state, &h.encode()).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve_stat(&state, &h).err(), Some(nfsstat3::NFS3ERR_STALE));
        let mut h = f.handle();
        h.export_id = 99;
        assert_eq!(vfs.resolve(&state, &h.encode()).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve(&state, &fh[..5]).err(), Some(nfsstat3::NFS3ERR_BADHANDLE));
        // Moved behind the server's back: the recorded path is gone → STALE.
        std::fs::rename(dir.join("d/f"), dir.join("f2")).unwrap();
        assert_eq!(vfs.resolve(&state, &fh).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve_stat(&state, &f.handle()).err(), Some(nfsstat3::NFS3ERR_STALE));
        // Another object under the recorded name is not the handle's object.
        std::fs::write(dir.join("d/f"), b"new").unwrap();
        assert_eq!(vfs.resolve(&state, &fh).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve_stat(&state, &f.handle()).err(), Some(nfsstat3::NFS3ERR_STALE));
        std::fs::remove_file(dir.join("d/f")).unwrap();
        // A symlink where the directory was is never followed.
        std::fs::rename(dir.join("d"), dir.join("d-old")).unwrap();
        std::os::unix::fs::symlink(dir.join("d-old"), dir.join("d")).unwrap();
        std::fs::rename(dir.join("f2"), dir.join("d-old/f")).unwrap();
        assert_eq!(vfs.resolve(&state, &fh).err(), Some(nfsstat3::NFS3ERR_STALE));
        // `..` of the export root is the root.
        let (root_fh, _) = vfs.root_fh(EXPORT).unwrap();
        let root = vfs.resolve(&state, &root_fh).unwrap();
        assert_eq!(vfs.child(&state, &root, b"..").unwrap().st.ino, root.st.ino);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn a_rename_not_yet_committed_resolves_through_the_note() {
        let (dir, vfs, state) = setup("note");
        let d = walk(&vfs, &state, &[b"d"]);
        let f = walk(&vfs, &state, &[b"d", b"f"]);
        // On disk the file moves; the table still has d/f (commit not done yet).
        std::fs::rename(dir.join("d/f"), dir.join("d/.nfs0001")).unwrap();
        assert_eq!(vfs.resolve(&state, &f.fh()).err(), Some(nfsstat3::NFS3ERR_STALE));
        vfs.moved.note(EXPORT, f.st.ino, d.st.ino, b".nfs0001");
        assert_eq!(vfs.resolve(&state, &f.fh()).map(|o| o.st.ino).ok(), Some(f.st.ino));
        assert_eq!(vfs.resolve_stat(&state, &f.handle()).map(|st| st.ino).ok(), Some(f.st.ino));
        // A note never resolves to another object: the identity is still checked.
        std::fs::remove_file(dir.join("d/.nfs0001")).unwrap();
        std::fs::write(dir.join("d/.nfs0001"), b"other").unwrap();
        assert_eq!(vfs.resolve(&state, &f.fh()).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve_stat(&state, &f.handle()).err(), Some(nfsstat3::NFS3ERR_STALE));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
