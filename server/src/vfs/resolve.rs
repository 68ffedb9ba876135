//! Handle → object, and name → object.
//!
//! A handle is resolved with one `open_by_handle_at` on its export's
//! filesystem (O_PATH, never following a symlink): the object wherever it now
//! lives, renamed over NFS or on the disk itself. A deleted object (also one
//! still open somewhere, nlink 0) or a reused inode number gives
//! NFS3ERR_STALE. Names are looked up one at a time relative to their
//! directory with O_PATH|O_NOFOLLOW; objects on another device (a mount inside
//! the export) are not served, and `..` never leaves the export.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nfs3_types::nfs3::{fattr3, nfsstat3};

use super::fhandle::{self, FsHandle, OPEN_PATH};
use super::handle::FileHandle;
use super::sys::{self, Errno, Stat};
use super::{attr, ExportRoot, Vfs};

/// Most `..` steps taken to check that a parent is still inside its export.
const PARENT_DEPTH_MAX: u32 = 4096;

/// A resolved object: an O_PATH fd on it and its attributes.
pub struct Obj {
    pub export_id: u32,
    pub fd: OwnedFd,
    pub st: Stat,
}

impl Obj {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn fattr(&self) -> fattr3 {
        attr::fattr(&self.st, self.export_id)
    }

    /// Re-read the attributes (after a change).
    pub fn restat(&mut self) -> Result<(), nfsstat3> {
        self.st = sys::stat_fd(&self.fd)?;
        Ok(())
    }

    /// The filesystem's own handle of this object.
    pub fn fs_handle(&self) -> Result<FsHandle, nfsstat3> {
        fhandle::handle_of(&self.fd).map_err(nfsstat3::from)
    }

    /// The same object: the filesystem gives both the same handle.
    pub fn same_object(&self, other: &Obj) -> bool {
        self.export_id == other.export_id
            && self.st.ino == other.st.ino
            && matches!((self.fs_handle(), other.fs_handle()), (Ok(a), Ok(b)) if a == b)
    }
}

/// What `open_by_handle_at` failing means for the client: the object is gone
/// (ESTALE; ENOENT/EINVAL for handle bytes the filesystem cannot read) or the
/// server has a problem.
fn stale_or(e: Errno) -> nfsstat3 {
    match e.0 {
        libc::ESTALE | libc::ENOENT | libc::EINVAL | libc::ENOTDIR => nfsstat3::NFS3ERR_STALE,
        libc::EPERM => {
            tracing::error!("open_by_handle_at refused (EPERM): hanfs needs CAP_DAC_READ_SEARCH to resolve handles");
            nfsstat3::NFS3ERR_SERVERFAULT
        }
        _ => nfsstat3::from(e),
    }
}

impl Vfs {
    fn export_of(&self, export_id: u32) -> Result<&ExportRoot, nfsstat3> {
        // An export this node does not serve: STALE, as knfsd for an unknown fsid.
        self.export(export_id).ok_or(nfsstat3::NFS3ERR_STALE)
    }

    fn root_obj(&self, e: &ExportRoot) -> Result<Obj, nfsstat3> {
        let fd = sys::dup(&e.root)?;
        let st = sys::stat_fd(&fd)?;
        Ok(Obj { export_id: e.export_id, fd, st })
    }

    /// The wire handle of `obj`.
    pub fn fh(&self, obj: &Obj) -> Result<Vec<u8>, nfsstat3> {
        self.encode(obj.export_id, obj.fs_handle()?)
    }

    /// Resolve a handle from the wire.
    pub fn resolve(&self, fh: &[u8]) -> Result<Obj, nfsstat3> {
        self.resolve_fh(&self.decode(fh)?)
    }

    /// Open the object behind an authenticated handle.
    pub fn resolve_fh(&self, fh: &FileHandle) -> Result<Obj, nfsstat3> {
        let e = self.export_of(fh.export_id)?;
        if fh.fs == e.fs {
            return self.root_obj(e);
        }
        let fd = fhandle::open_handle(e.mount.as_raw_fd(), &fh.fs, OPEN_PATH).map_err(stale_or)?;
        let st = sys::stat_fd(&fd).map_err(|_| nfsstat3::NFS3ERR_STALE)?;
        // Unlinked but still open somewhere: gone for NFS (knfsd answers STALE too
        // once the last name is removed).
        if st.nlink == 0 {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        Ok(Obj { export_id: fh.export_id, fd, st })
    }

    /// The attributes behind a handle (GETATTR).
    pub fn resolve_stat(&self, fh: &FileHandle) -> Result<Stat, nfsstat3> {
        self.resolve_fh(fh).map(|o| o.st)
    }

    fn is_root(e: &ExportRoot, st: &Stat) -> bool {
        st.ino == e.ino && e.same_dev(st)
    }

    /// The parent directory of `dir`; the export root is its own parent, so
    /// `..` never leaves the export. A parent that is no longer below the
    /// export root (moved away on the server) is STALE.
    pub fn parent(&self, dir: &Obj) -> Result<Obj, nfsstat3> {
        let e = self.export_of(dir.export_id)?;
        if Self::is_root(e, &dir.st) {
            return self.root_obj(e);
        }
        let fd = sys::open_path_at(dir.raw(), b"..")?;
        let st = sys::stat_fd(&fd)?;
        if !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let parent = Obj { export_id: dir.export_id, fd, st };
        self.check_below_root(e, &parent)?;
        Ok(parent)
    }

    /// Walk `..` from `dir` up to the export root, at most PARENT_DEPTH_MAX steps.
    fn check_below_root(&self, e: &ExportRoot, dir: &Obj) -> Result<(), nfsstat3> {
        if Self::is_root(e, &dir.st) {
            return Ok(());
        }
        let mut cur = sys::open_path_at(dir.raw(), b"..")?;
        let mut st = sys::stat_fd(&cur)?;
        for _ in 0..PARENT_DEPTH_MAX {
            if Self::is_root(e, &st) {
                return Ok(());
            }
            let up = sys::open_path_at(cur.as_raw_fd(), b"..")?;
            let up_st = sys::stat_fd(&up)?;
            if up_st.ino == st.ino && up_st.dev_major == st.dev_major && up_st.dev_minor == st.dev_minor {
                // The filesystem's (or namespace's) root, and the export root not met on the way.
                return Err(nfsstat3::NFS3ERR_STALE);
            }
            (cur, st) = (up, up_st);
        }
        Err(nfsstat3::NFS3ERR_STALE)
    }

    /// Look `name` up in `dir` under the caller's credentials (the kernel checks
    /// search permission). `.` is `dir`, `..` is `parent`. Objects on another
    /// device (a mount inside the export) are not served.
    pub fn child(&self, dir: &Obj, name: &[u8]) -> Result<Obj, nfsstat3> {
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if name == b"." || name == b".." {
            if !sys::access_fd(&dir.fd, libc::X_OK) {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            return if name == b"." {
                Ok(Obj { export_id: dir.export_id, fd: sys::dup(&dir.fd)?, st: dir.st.clone() })
            } else {
                self.parent(dir)
            };
        }
        let e = self.export_of(dir.export_id)?;
        let fd = sys::open_path_at(dir.raw(), name)?;
        let st = sys::stat_fd(&fd)?;
        if !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        Ok(Obj { export_id: dir.export_id, fd, st })
    }

    /// Attributes and fs handle of `name` in `dir` for a listing (READDIRPLUS),
    /// with the same checks as `child` but without opening it: one statx and
    /// one name_to_handle_at relative to the directory (search permission
    /// checked by the kernel under the caller's ids, no symlink followed).
    pub fn child_attrs(&self, dir: &Obj, name: &[u8]) -> Result<(Stat, FsHandle), nfsstat3> {
        if name == b"." || name == b".." {
            if !dir.st.is_dir() {
                return Err(nfsstat3::NFS3ERR_NOTDIR);
            }
            let o = self.child(dir, name)?;
            let fs = o.fs_handle()?;
            return Ok((o.st, fs));
        }
        let (st, raw) = self.child_attrs_raw(dir, name)?;
        Ok((st, raw.to_fs_handle()))
    }

    /// The attributes `child_attrs` gives, without the handle.
    pub fn child_stat(&self, dir: &Obj, name: &[u8]) -> Result<Stat, nfsstat3> {
        let e = self.export_of(dir.export_id)?;
        let st = sys::stat_at(dir.raw(), name)?;
        if !e.same_dev(&st) {
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        Ok(st)
    }

    /// `child_attrs` for a name other than `.` and `..` (refused with
    /// NFS3ERR_INVAL), its fs handle kept on the stack.
    pub fn child_attrs_raw(&self, dir: &Obj, name: &[u8]) -> Result<(Stat, fhandle::RawHandle), nfsstat3> {
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        if name == b"." || name == b".." {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let st = self.child_stat(dir, name)?;
        let fs = fhandle::raw_handle_at(dir.raw(), name)?;
        Ok((st, fs))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use hanfs_state::{Command, State};

    use super::*;
    use crate::config::ExportConfig;

    const EXPORT: u32 = 3;

    struct Setup {
        dir: std::path::PathBuf,
        vfs: Vfs,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn setup(label: &str) -> Setup {
        let base = std::env::temp_dir().join(format!("hanfs-resolve-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("export");
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/f"), b"x").unwrap();
        let cfg = ExportConfig { name: "/e".into(), dir: dir.clone(), export_id: EXPORT, clients: Vec::new() };
        let roots = super::super::open_roots(&[cfg]).unwrap();
        let mut state = State::default();
        let fs = roots[0].identity();
        state.apply(&Command::RegisterExport { export_id: EXPORT, path: "/e".into(), fs }).unwrap();
        state.apply(&Command::SetHandleKey { key: [4; 32] }).unwrap();
        Setup { dir: base, vfs: Vfs::new(roots, &state).unwrap() }
    }

    fn walk(vfs: &Vfs, path: &[&[u8]]) -> Obj {
        let mut cur = vfs.resolve(&vfs.root_fh(EXPORT).unwrap()).unwrap();
        for name in path {
            cur = vfs.child(&cur, name).unwrap();
        }
        cur
    }

    #[test]
    fn handles_follow_renames_and_go_stale_when_deleted() {
        let s = setup("moved");
        let (vfs, dir) = (&s.vfs, s.dir.join("export"));
        let f = walk(vfs, &[b"d", b"f"]);
        assert_eq!(f.st.ino, std::fs::metadata(dir.join("d/f")).unwrap().ino());
        let fh = vfs.fh(&f).unwrap();
        assert_eq!(vfs.resolve(&fh).map(|o| o.st.ino).ok(), Some(f.st.ino));
        // Renamed on the disk itself, directory and file: the handle still resolves.
        std::fs::rename(dir.join("d"), dir.join("d2")).unwrap();
        std::fs::rename(dir.join("d2/f"), dir.join("f2")).unwrap();
        assert_eq!(vfs.resolve(&fh).map(|o| o.st.ino).ok(), Some(f.st.ino));
        // Created on the disk: a listing's handle resolves.
        std::fs::write(dir.join("d2/new"), b"n").unwrap();
        let d2 = walk(vfs, &[b"d2"]);
        let (st, fs) = vfs.child_attrs(&d2, b"new").unwrap();
        let new_fh = vfs.encode(EXPORT, fs).unwrap();
        assert_eq!(vfs.resolve(&new_fh).map(|o| o.st.ino).ok(), Some(st.ino));
        // Deleted, even while still open here: STALE. A new file (perhaps on the
        // same inode number) never answers for it.
        let held = vfs.resolve(&fh).unwrap();
        std::fs::remove_file(dir.join("f2")).unwrap();
        assert_eq!(vfs.resolve(&fh).err(), Some(nfsstat3::NFS3ERR_STALE));
        drop(held);
        std::fs::write(dir.join("f2"), b"new").unwrap();
        assert_eq!(vfs.resolve(&fh).err(), Some(nfsstat3::NFS3ERR_STALE));
        // Unknown export, forged MAC, bad length.
        let mut other = fh.clone();
        other[4] ^= 1;
        assert_eq!(vfs.resolve(&other).err(), Some(nfsstat3::NFS3ERR_STALE));
        assert_eq!(vfs.resolve(&fh[..5]).err(), Some(nfsstat3::NFS3ERR_BADHANDLE));
        let foreign = vfs.encode(99, f.fs_handle().unwrap_or(FsHandle { kind: 1, bytes: vec![1; 8] })).unwrap();
        assert_eq!(vfs.resolve(&foreign).err(), Some(nfsstat3::NFS3ERR_STALE));
    }

    #[test]
    fn dot_dot_stays_inside_the_export() {
        let s = setup("dotdot");
        let (vfs, dir) = (&s.vfs, s.dir.join("export"));
        let root = walk(vfs, &[]);
        assert_eq!(vfs.child(&root, b"..").unwrap().st.ino, root.st.ino);
        let d = walk(vfs, &[b"d"]);
        assert_eq!(vfs.child(&d, b"..").unwrap().st.ino, root.st.ino);
        // A directory moved out of the export on the server: its handle still
        // resolves (as knfsd's no_subtree_check), but `..` from it does not climb out.
        std::fs::create_dir_all(dir.join("d/sub")).unwrap();
        let sub = walk(vfs, &[b"d", b"sub"]);
        std::fs::rename(dir.join("d"), s.dir.join("outside")).unwrap();
        assert_eq!(vfs.child(&sub, b"..").err(), Some(nfsstat3::NFS3ERR_STALE));
    }

    #[test]
    fn a_wrong_filesystem_is_refused() {
        let s = setup("wrongfs");
        let dir = s.dir.join("export");
        let cfg = ExportConfig { name: "/e".into(), dir: dir.clone(), export_id: EXPORT, clients: Vec::new() };
        let mut state = State::default();
        let recorded = hanfs_state::FsIdentity { uuid: None, root_type: 1, root_handle: vec![0; 8] };
        state.apply(&Command::RegisterExport { export_id: EXPORT, path: "/e".into(), fs: recorded }).unwrap();
        state.apply(&Command::SetHandleKey { key: [4; 32] }).unwrap();
        let roots = super::super::open_roots(&[cfg]).unwrap();
        let err = Vfs::new(roots, &state).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is not the filesystem this cluster serves"), "{err}");
    }
}
