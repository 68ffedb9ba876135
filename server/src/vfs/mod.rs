//! Passthrough filesystem: the exported directories, file handles and their
//! resolution, and per-thread credential switching.
//!
//! Each export root is held open as an O_PATH fd. A file handle carries the
//! filesystem's own handle of the object (`handle`, `fhandle`), so resolving
//! it is one `open_by_handle_at` on the export's filesystem: no table of
//! objects, no path walk, the same on every node that mounts the filesystem.
//! Names are looked up with *at() syscalls relative to a directory fd, one
//! name at a time (never following a symlink; `..` of the export root is the
//! root), so a client only ever receives handles for objects inside its
//! export, and the MAC in every handle keeps it from making up others. As with
//! knfsd's default `no_subtree_check`, an object moved out of the export on
//! the server itself still resolves by the handle the client already holds.
//!
//! Before a node serves an export, it checks that the export's directory is
//! on the filesystem the replicated state recorded for it (`FsIdentity`: the
//! filesystem UUID and the root directory's own handle), so a missing or
//! wrong disk is refused instead of answering with wrong objects.
//!
//! READDIRPLUS listings of settled directories are remembered, in memory
//! and exactly (`dircache`: valid while the directory's ctime is unchanged).
//!
//! A `Vfs` is immutable apart from those listings: when the exports change
//! live, the node builds a new one around the roots it keeps (`Vfs::with_roots`,
//! see `crate::live`), with no listings remembered.

pub mod attr;
pub mod cred;
pub mod dir;
pub mod dircache;
pub mod errno;
pub mod fhandle;
pub mod handle;
pub mod resolve;
pub mod sys;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use hanfs_state::{Command, FsIdentity, State, HANDLE_KEY_BYTES};
use nfs3_types::nfs3::nfsstat3;

use crate::config::ExportConfig;
use fhandle::FsHandle;
use handle::{FileHandle, FitError, HandleKey};
use sys::Stat;

/// One exported directory, opened when the node starts serving.
pub struct ExportRoot {
    pub export_id: u32,
    pub name: String,
    pub dir: std::path::PathBuf,
    /// O_PATH fd of the export's directory.
    pub root: OwnedFd,
    /// The same directory opened for reading: the mount fd of
    /// `open_by_handle_at`, which refuses an O_PATH fd (EBADF).
    pub mount: OwnedFd,
    /// Device of the root as this node sees it: an object on another device
    /// (a mount inside the export) is not served. Local only, never in a handle.
    pub dev: (u32, u32),
    pub ino: u64,
    /// The root directory's own fs handle.
    pub fs: FsHandle,
    /// The filesystem's UUID, where it reports one.
    pub uuid: Option<Vec<u8>>,
}

/// Why an export cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export {dir}: {error}")]
    Open { dir: String, error: std::io::Error },
    #[error("export {dir} is not a directory")]
    NotDir { dir: String },
    #[error("export {dir}: the filesystem gives no handles (name_to_handle_at: errno {errno}); hanfs needs a filesystem that supports NFS export (ext4, XFS, btrfs, tmpfs...)")]
    NoHandles { dir: String, errno: i32 },
    #[error("export {dir}: {error}")]
    HandleFit { dir: String, error: FitError },
    #[error("export {name} (id {export_id}): {dir} is not the filesystem this cluster serves there (recorded {recorded}, found {found}); is the shared disk mounted? Refusing to serve it rather than hand out wrong handles. If the directory was replaced on purpose, give the export a new name and export_id (its old handles then go stale, as with knfsd)")]
    WrongFilesystem { name: String, export_id: u32, dir: String, recorded: String, found: String },
    #[error("the replicated state has no handle key yet")]
    NoKey,
}

/// Open every export's directory and read its filesystem identity.
pub fn open_roots(exports: &[ExportConfig]) -> Result<Vec<ExportRoot>, ExportError> {
    exports.iter().map(open_root).collect()
}

/// Open one export's directory and read its filesystem identity.
pub fn open_root(e: &ExportConfig) -> Result<ExportRoot, ExportError> {
    let dir = e.dir.display().to_string();
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_path()
        .open(&e.dir)
        .map_err(|error| ExportError::Open { dir: dir.clone(), error })?;
    let root: OwnedFd = root.into();
    let st = sys::stat_fd(&root)
        .map_err(|en| ExportError::Open { dir: dir.clone(), error: std::io::Error::from_raw_os_error(en.0) })?;
    if !st.is_dir() {
        return Err(ExportError::NotDir { dir });
    }
    let mount = sys::reopen(&root, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|en| ExportError::Open { dir: dir.clone(), error: std::io::Error::from_raw_os_error(en.0) })?;
    let fs = fhandle::handle_of(&root).map_err(|en| ExportError::NoHandles { dir: dir.clone(), errno: en.0 })?;
    handle::check_fit(&fs).map_err(|error| ExportError::HandleFit { dir: dir.clone(), error })?;
    let uuid = fhandle::fs_uuid(&mount);
    Ok(ExportRoot {
        export_id: e.export_id,
        name: e.name.clone(),
        dir: e.dir.clone(),
        root,
        mount,
        dev: (st.dev_major, st.dev_minor),
        ino: st.ino,
        fs,
        uuid,
    })
}

impl ExportRoot {
    pub fn root_fd(&self) -> i32 {
        self.root.as_raw_fd()
    }

    pub fn same_dev(&self, st: &Stat) -> bool {
        (st.dev_major, st.dev_minor) == self.dev
    }

    /// What the replicated state records for this export.
    pub fn identity(&self) -> FsIdentity {
        FsIdentity { uuid: self.uuid.clone(), root_type: self.fs.kind, root_handle: self.fs.bytes.clone() }
    }

    /// The export is the filesystem `recorded` names: the same root handle,
    /// and the same UUID where both sides know one.
    pub fn check_identity(&self, recorded: &FsIdentity) -> Result<(), ExportError> {
        let uuid_ok = match (&recorded.uuid, &self.uuid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if uuid_ok && recorded.root_type == self.fs.kind && recorded.root_handle == self.fs.bytes {
            return Ok(());
        }
        Err(ExportError::WrongFilesystem {
            name: self.name.clone(),
            export_id: self.export_id,
            dir: self.dir.display().to_string(),
            recorded: describe(recorded),
            found: describe(&self.identity()),
        })
    }
}

/// What makes `roots` servable, to commit before `Vfs::new`: each export's
/// registration with the identity found on disk (the first one recorded
/// stays), and a fresh random handle key if the state has none yet.
pub fn register_commands(roots: &[ExportRoot], state: &State) -> Result<Vec<Command>, std::io::Error> {
    let mut cmds: Vec<Command> = roots
        .iter()
        .map(|e| Command::RegisterExport { export_id: e.export_id, path: e.name.clone(), fs: e.identity() })
        .collect();
    if state.handle_key().is_none() {
        cmds.push(Command::SetHandleKey { key: random_key()? });
    }
    Ok(cmds)
}

/// 32 bytes from the kernel's CSPRNG (getrandom(2), blocking until seeded).
fn random_key() -> Result<[u8; HANDLE_KEY_BYTES], std::io::Error> {
    let mut key = [0u8; HANDLE_KEY_BYTES];
    let mut filled = 0;
    while filled < key.len() {
        let rest = &mut key[filled..];
        // SAFETY: `rest` is writable for its length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(key)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn describe(id: &FsIdentity) -> String {
    let uuid = id.uuid.as_deref().map_or("none".to_owned(), hex);
    format!("uuid {uuid}, root handle {}:{}", id.root_type, hex(&id.root_handle))
}

/// What a node currently serves (`crate::live::Live`), for the admin
/// socket: read-only views (`hanfs-server locks` names files through its
/// `Vfs`) and the refresh after an `exports` change. Weak: it never keeps a
/// stopped service alive. One per node, so nodes sharing a process (tests)
/// never mix.
#[derive(Clone, Default)]
pub struct ServingVfs(Arc<std::sync::Mutex<std::sync::Weak<crate::live::Live>>>);

impl ServingVfs {
    pub fn set(&self, live: &Arc<crate::live::Live>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(live);
    }

    /// The served exports, while they are served.
    pub fn live(&self) -> Option<Arc<crate::live::Live>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).upgrade()
    }

    /// The Vfs served now, while it is served.
    pub fn get(&self) -> Option<Arc<Vfs>> {
        self.live().map(|live| live.load().vfs.clone())
    }
}

pub struct Vfs {
    exports: Vec<Arc<ExportRoot>>,
    key: HandleKey,
    /// Process umask, re-applied explicitly after creating objects so the
    /// client's requested mode is the mode the object gets (knfsd uses umask 0).
    umask: u32,
    /// Listings remembered for READDIRPLUS.
    dircache: dircache::DirCache,
}

impl Vfs {
    /// The exports as served, once the replicated state holds the handle key
    /// and each export's identity: refuses an export whose directory is not
    /// the recorded filesystem.
    pub fn new(exports: Vec<ExportRoot>, state: &State) -> Result<Vfs, ExportError> {
        let key = HandleKey::new(state.handle_key().ok_or(ExportError::NoKey)?);
        for e in &exports {
            if let Some(recorded) = state.export_fs(e.export_id) {
                e.check_identity(recorded)?;
            }
        }
        Ok(Vfs {
            exports: exports.into_iter().map(Arc::new).collect(),
            key,
            umask: sys::current_umask(),
            dircache: Default::default(),
        })
    }

    /// The same key and umask around other roots (the exports changed
    /// live); the caller checked each new root's identity.
    pub fn with_roots(&self, exports: Vec<Arc<ExportRoot>>) -> Vfs {
        Vfs { exports, key: self.key.clone(), umask: self.umask, dircache: Default::default() }
    }

    /// The roots served, by the order they were given.
    pub fn roots(&self) -> &[Arc<ExportRoot>] {
        &self.exports
    }

    pub fn export(&self, export_id: u32) -> Option<&ExportRoot> {
        self.exports.iter().find(|e| e.export_id == export_id).map(|e| &**e)
    }

    pub fn umask(&self) -> u32 {
        self.umask
    }

    pub fn dircache(&self) -> &dircache::DirCache {
        &self.dircache
    }

    /// Decode and authenticate a handle from the wire.
    pub fn decode(&self, fh: &[u8]) -> Result<FileHandle, nfsstat3> {
        FileHandle::decode(fh, &self.key)
    }

    /// The wire handle of `fs` in `export_id`.
    pub fn encode(&self, export_id: u32, fs: FsHandle) -> Result<Vec<u8>, nfsstat3> {
        FileHandle { export_id, fs }.encode(&self.key)
    }

    /// Append the wire handle of `fs` in `export_id` to `out`
    /// (`handle::wire_len(fs.bytes().len())` bytes).
    pub fn encode_into(&self, export_id: u32, fs: &fhandle::RawHandle, out: &mut Vec<u8>) -> Result<(), nfsstat3> {
        handle::encode_into(export_id, fs.kind(), fs.bytes(), &self.key, out)
    }

    /// Where the object behind `fh` lives now, relative to its export's root
    /// (empty for the root), read back from the kernel; None if it is gone or
    /// no longer below the export root.
    pub fn path_of(&self, fh: &FileHandle) -> Option<Vec<u8>> {
        let e = self.export(fh.export_id)?;
        let obj = self.resolve_fh(fh).ok()?;
        let path_of_fd = |fd: i32| {
            let p = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            Some(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        };
        let (root, path) = (path_of_fd(e.root_fd())?, path_of_fd(obj.raw())?);
        let rel = path.strip_prefix(root.as_slice())?;
        (rel.is_empty() || rel.starts_with(b"/")).then(|| rel.to_vec())
    }

    /// The handle of the directory `sub` below an export's root (MOUNT MNT of
    /// a subdirectory): `sub` is relative, resolved with
    /// `sys::open_dir_beneath` (never out of the export, never onto another
    /// mount). An empty `sub` is the root.
    pub fn dir_fh(&self, export_id: u32, sub: &str) -> Result<Vec<u8>, nfsstat3> {
        if sub.is_empty() {
            return self.root_fh(export_id);
        }
        let e = self.export(export_id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        // EXDEV: `..` or a symlink out of the export, or another mount.
        let dir = sys::open_dir_beneath(e.root_fd(), sub.as_bytes()).map_err(|e| {
            if e.0 == libc::EXDEV {
                nfsstat3::NFS3ERR_ACCES
            } else {
                nfsstat3::from(e)
            }
        })?;
        let fs = fhandle::handle_of(&dir).map_err(nfsstat3::from)?;
        self.encode(export_id, fs)
    }

    /// The root handle of an export (MOUNT MNT).
    pub fn root_fh(&self, export_id: u32) -> Result<Vec<u8>, nfsstat3> {
        let e = self.export(export_id).ok_or(nfsstat3::NFS3ERR_STALE)?;
        // Re-check the root: a replaced directory must not be served under the old id.
        let fs = fhandle::handle_of(&e.root).map_err(nfsstat3::from)?;
        if fs != e.fs {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        self.encode(export_id, fs)
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
