//! The filesystem's own object handles: `name_to_handle_at` gives the handle
//! of an object (inode and generation on ext4 and XFS), `open_by_handle_at`
//! opens it again from any process on any node that mounts the same
//! filesystem, as knfsd and nfs-ganesha's VFS FSAL do. A deleted object, or
//! a reused inode number (another generation), gives ESTALE.
//! `open_by_handle_at` needs CAP_DAC_READ_SEARCH: handles are resolved with
//! the server's own credentials, before switching to the caller's.
//!
//! Also the filesystem's UUID (FS_IOC_GETFSUUID), part of an export's
//! `FsIdentity`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::sys::{with_cname, Errno, SysResult};

/// Largest handle the kernel hands out (MAX_HANDLE_SZ).
pub const FS_HANDLE_BYTES_MAX: usize = 128;

/// An object's handle on its filesystem: the type the filesystem gave it and
/// its bytes. Opaque: only the filesystem that made it can interpret it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsHandle {
    pub kind: i32,
    pub bytes: Vec<u8>,
}

/// `struct file_handle` with room for the largest handle: a handle as the
/// kernel gave it, on the stack (a listing takes one per entry).
#[repr(C)]
pub struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; FS_HANDLE_BYTES_MAX],
}

impl RawHandle {
    fn empty() -> RawHandle {
        RawHandle {
            handle_bytes: FS_HANDLE_BYTES_MAX as libc::c_uint,
            handle_type: 0,
            f_handle: [0; FS_HANDLE_BYTES_MAX],
        }
    }

    /// The type the filesystem gave the handle.
    pub fn kind(&self) -> i32 {
        self.handle_type
    }

    /// The handle's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.f_handle.get(..self.handle_bytes as usize).unwrap_or(&self.f_handle)
    }

    /// The same handle, owned.
    pub fn to_fs_handle(&self) -> FsHandle {
        FsHandle { kind: self.kind(), bytes: self.bytes().to_vec() }
    }
}

/// The handle of `name` in `dir` (never following a symlink), or of `dir`
/// itself when `name` is empty.
pub fn handle_at(dir: RawFd, name: &[u8]) -> SysResult<FsHandle> {
    raw_handle_at(dir, name).map(|raw| raw.to_fs_handle())
}

/// `handle_at`, kept on the stack.
pub fn raw_handle_at(dir: RawFd, name: &[u8]) -> SysResult<RawHandle> {
    let flags = if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    with_cname(name, |c| {
        let mut raw = RawHandle::empty();
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `raw` is a file_handle followed by FS_HANDLE_BYTES_MAX bytes, as
        // `handle_bytes` says; c is a valid C string; mount_id is a valid int.
        let rc = unsafe {
            libc::name_to_handle_at(dir, c.as_ptr(), (&mut raw as *mut RawHandle).cast(), &mut mount_id, flags)
        };
        if rc < 0 {
            return Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)));
        }
        raw.handle_bytes = raw.handle_bytes.min(FS_HANDLE_BYTES_MAX as libc::c_uint);
        Ok(raw)
    })
}

/// The handle of the object behind `fd`.
pub fn handle_of(fd: &OwnedFd) -> SysResult<FsHandle> {
    handle_at(fd.as_raw_fd(), b"")
}

/// Open the object `h` on the filesystem of `mount_fd`, O_PATH unless
/// `flags` says otherwise. Symlinks are opened themselves (O_PATH|O_NOFOLLOW).
pub fn open_handle(mount_fd: RawFd, h: &FsHandle, flags: i32) -> SysResult<OwnedFd> {
    if h.bytes.len() > FS_HANDLE_BYTES_MAX {
        return Err(Errno(libc::ESTALE));
    }
    let mut raw = RawHandle::empty();
    raw.handle_bytes = h.bytes.len() as libc::c_uint;
    raw.handle_type = h.kind;
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    // SAFETY: `raw` is a valid file_handle of `handle_bytes` bytes; the fd
    // returned is owned by us.
    let fd = unsafe { libc::open_by_handle_at(mount_fd, (&mut raw as *mut RawHandle).cast(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)));
    }
    // SAFETY: fd is a fresh descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// O_PATH|O_NOFOLLOW: what every resolution opens.
pub const OPEN_PATH: i32 = libc::O_PATH | libc::O_NOFOLLOW;

/// `struct fsuuid2` of FS_IOC_GETFSUUID.
#[repr(C)]
struct FsUuid2 {
    len: u8,
    uuid: [u8; 16],
}

/// FS_IOC_GETFSUUID = _IOR(0x15, 0, struct fsuuid2).
const FS_IOC_GETFSUUID: libc::c_ulong =
    (2 << 30) | ((std::mem::size_of::<FsUuid2>() as libc::c_ulong) << 16) | (0x15 << 8);

/// The UUID of the filesystem behind `dir`, a descriptor opened for reading
/// (an O_PATH one cannot take ioctls), if the kernel and filesystem report one.
pub fn fs_uuid(dir: &OwnedFd) -> Option<Vec<u8>> {
    let mut u = FsUuid2 { len: 0, uuid: [0; 16] };
    // SAFETY: FS_IOC_GETFSUUID writes one struct fsuuid2 into `u`.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_GETFSUUID as _, &mut u as *mut FsUuid2) };
    if rc < 0 || u.len == 0 {
        return None;
    }
    Some(u.uuid[..usize::from(u.len).min(16)].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_resolve_and_go_stale() {
        let dir = std::env::temp_dir().join(format!("hanfs-fhandle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let root: OwnedFd = std::fs::File::open(&dir).unwrap().into();
        let h = handle_at(root.as_raw_fd(), b"f").unwrap();
        assert!(!h.bytes.is_empty());
        let fd = open_handle(root.as_raw_fd(), &h, OPEN_PATH).unwrap();
        assert_eq!(handle_of(&fd).unwrap(), h);
        // Renamed: the same handle still opens it.
        std::fs::rename(dir.join("f"), dir.join("g")).unwrap();
        assert!(open_handle(root.as_raw_fd(), &h, OPEN_PATH).is_ok());
        drop(fd);
        // Deleted: ESTALE.
        std::fs::remove_file(dir.join("g")).unwrap();
        assert_eq!(open_handle(root.as_raw_fd(), &h, OPEN_PATH).err(), Some(Errno(libc::ESTALE)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
