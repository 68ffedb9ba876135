//! Passthrough filesystem: the exported directories, file handles and their
//! resolution, and per-thread credential switching.
//!
//! Each export root is held open as an O_PATH fd. Every operation works with
//! *at() syscalls relative to fds reached from that root one name at a time
//! (never following a symlink, never `..`), so nothing outside an export is
//! ever reached. Handles are `handle::FileHandle`; where an object lives is the
//! replicated handle table in `hanfs_state::State`.

pub mod attr;
pub mod cred;
pub mod dir;
pub mod errno;
pub mod handle;
pub mod moved;
pub mod resolve;
pub mod sys;

use std::os::fd::{AsRawFd, OwnedFd};

use hanfs_state::HandleEntry;
use nfs3_types::nfs3::nfsstat3;

use crate::config::ExportConfig;
use handle::FileHandle;
use sys::Stat;

/// One exported directory, opened once at startup.
pub struct ExportRoot {
    pub export_id: u32,
    pub name: String,
    /// O_PATH fd of the export's directory.
    pub root: OwnedFd,
    /// Device of the root: nothing on another device (a mount inside the export)
    /// is served, so a handle never reaches beyond the export's filesystem.
    pub dev: (u32, u32),
    pub ino: u64,
    pub ident: u64,
}

pub struct Vfs {
    exports: Vec<ExportRoot>,
    /// Process umask, re-applied explicitly after creating objects so the
    /// client's requested mode is the mode the object gets (knfsd uses umask 0).
    umask: u32,
    /// Renames whose new location may not be committed yet.
    pub moved: moved::Moved,
}

impl Vfs {
    pub fn new(exports: &[ExportConfig]) -> std::io::Result<Vfs> {
        let mut roots = Vec::with_capacity(exports.len());
        for e in exports {
            let root = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags_path()
                .open(&e.dir)
                .map_err(|err| std::io::Error::new(err.kind(), format!("export {}: {err}", e.dir.display())))?;
            let root: OwnedFd = root.into();
            let st = sys::stat_fd(&root).map_err(|en| std::io::Error::from_raw_os_error(en.0))?;
            if !st.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("export {} is not a directory", e.dir.display()),
                ));
            }
            let ident = handle::ident_of(&root, &st);
            roots.push(ExportRoot {
                export_id: e.export_id,
                name: e.name.clone(),
                root,
                dev: (st.dev_major, st.dev_minor),
                ino: st.ino,
                ident,
            });
        }
        Ok(Vfs { exports: roots, umask: sys::current_umask(), moved: moved::Moved::default() })
    }

    pub fn export(&self, export_id: u32) -> Option<&ExportRoot> {
        self.exports.iter().find(|e| e.export_id == export_id)
    }

    pub fn umask(&self) -> u32 {
        self.umask
    }

    /// The root handle of an export and its handle-table entry (MOUNT MNT).
    pub fn root_fh(&self, export_id: u32) -> Result<(Vec<u8>, HandleEntry), nfsstat3> {
        let e = self.export(export_id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        // Re-check the root: a replaced directory must not be served under the old id.
        let st = sys::stat_fd(&e.root).map_err(nfsstat3::from)?;
        if st.ino != e.ino {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let fh = FileHandle { export_id, ino: e.ino, ident: e.ident };
        let entry = HandleEntry { export_id, ino: e.ino, ident: e.ident, parent_ino: e.ino, name: Vec::new() };
        Ok((fh.encode(), entry))
    }
}

impl ExportRoot {
    pub fn root_fd(&self) -> i32 {
        self.root.as_raw_fd()
    }

    pub fn same_dev(&self, st: &Stat) -> bool {
        (st.dev_major, st.dev_minor) == self.dev
    }
}

/// `OpenOptions` helper: open a directory as O_PATH|O_DIRECTORY.
trait PathOpen {
    fn custom_flags_path(&mut self) -> &mut Self;
}

impl PathOpen for std::fs::OpenOptions {
    fn custom_flags_path(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_PATH | libc::O_DIRECTORY)
    }
}
