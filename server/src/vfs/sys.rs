//! Thin, checked wrappers around the Linux syscalls the passthrough needs.
//! Every path argument is one file name relative to a directory fd (the *at()
//! family) or a `/proc/self/fd/N` magic link, never a joined path string.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An errno value from a failed syscall.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type SysResult<T> = Result<T, Errno>;

fn last() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

fn check(rc: libc::c_int) -> SysResult<libc::c_int> {
    if rc < 0 {
        Err(last())
    } else {
        Ok(rc)
    }
}

/// A file name as a C string. Names were checked by the decoder (no NUL), so a
/// NUL here is reported as EINVAL rather than trusted.
pub fn cname(name: &[u8]) -> SysResult<CString> {
    CString::new(name).map_err(|_| Errno(libc::EINVAL))
}

/// Longest name `with_cname` copies to the stack (a directory entry's name
/// is at most 255 bytes on Linux); a longer one gets a `CString`.
const STACK_NAME_BYTES: usize = 256;

/// Run `f` with `name` as a C string, built on the stack for the usual
/// name (no allocation per READDIRPLUS entry). A NUL in `name` is EINVAL.
pub fn with_cname<R>(name: &[u8], f: impl FnOnce(&std::ffi::CStr) -> SysResult<R>) -> SysResult<R> {
    if name.len() >= STACK_NAME_BYTES {
        return f(&cname(name)?);
    }
    let mut buf = [0u8; STACK_NAME_BYTES];
    buf.get_mut(..name.len()).ok_or(Errno(libc::EINVAL))?.copy_from_slice(name);
    let c = std::ffi::CStr::from_bytes_with_nul(buf.get(..=name.len()).ok_or(Errno(libc::EINVAL))?)
        .map_err(|_| Errno(libc::EINVAL))?;
    f(c)
}

/// `/proc/self/fd/N`: reopening or addressing an O_PATH fd without a path walk.
pub fn proc_path(fd: RawFd) -> CString {
    // Digits only: this never contains a NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

pub fn open_at(dir: RawFd, name: &[u8], flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cname(name)?;
    // SAFETY: c is a valid C string; the returned fd is owned by us.
    let fd = check(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An O_PATH handle on `name` inside `dir`, never following a final symlink.
pub fn open_path_at(dir: RawFd, name: &[u8]) -> SysResult<OwnedFd> {
    open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// An O_PATH handle on the directory `path` (relative, several components)
/// below `dir`, resolved with openat2(2) `RESOLVE_BENEATH` (no `..` or
/// absolute symlink out of `dir`: EXDEV), `RESOLVE_NO_MAGICLINKS` and
/// `RESOLVE_NO_XDEV` (no other mount, as knfsd without `crossmnt`). Symlinks
/// that stay below `dir` are followed, as mountd's realpath does.
pub fn open_dir_beneath(dir: RawFd, path: &[u8]) -> SysResult<OwnedFd> {
    let c = cname(path)?;
    // struct open_how (linux/openat2.h; libc's is non-exhaustive): the
    // kernel's ABI, three u64s.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: c is a valid C string and `how` a valid open_how of the size
    // passed; the returned fd is owned by us.
    let rc = unsafe {
        libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    let fd = check(i32::try_from(rc).unwrap_or(-1))?;
    // SAFETY: fd was just returned by openat2 and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reopen an O_PATH fd for I/O (permission is checked under the current fs creds).
pub fn reopen(fd: &OwnedFd, flags: i32) -> SysResult<OwnedFd> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: p is a valid C string; the returned fd is owned by us.
    let nfd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: nfd was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd) })
}

pub fn dup(fd: &OwnedFd) -> SysResult<OwnedFd> {
    fd.try_clone().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Attributes as read by statx(2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Birth time, when the filesystem reports one.
    pub btime: Option<(i64, u32)>,
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_lnk(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

const STATX_WANT: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME;

fn statx_raw(dir: RawFd, name: &std::ffi::CStr, flags: i32) -> SysResult<Stat> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a properly sized out buffer.
    check(unsafe { libc::statx(dir, name.as_ptr(), flags | libc::AT_SYMLINK_NOFOLLOW, STATX_WANT, &mut sx) })?;
    let t = |ts: libc::statx_timestamp| (ts.tv_sec, ts.tv_nsec);
    Ok(Stat {
        ino: sx.stx_ino,
        mode: u32::from(sx.stx_mode),
        nlink: sx.stx_nlink,
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        size: sx.stx_size,
        blocks: sx.stx_blocks,
        rdev_major: sx.stx_rdev_major,
        rdev_minor: sx.stx_rdev_minor,
        dev_major: sx.stx_dev_major,
        dev_minor: sx.stx_dev_minor,
        atime: t(sx.stx_atime),
        mtime: t(sx.stx_mtime),
        ctime: t(sx.stx_ctime),
        btime: if sx.stx_mask & libc::STATX_BTIME != 0 { Some(t(sx.stx_btime)) } else { None },
    })
}

/// statx of the object an fd refers to (O_PATH fds included).
pub fn stat_fd(fd: &OwnedFd) -> SysResult<Stat> {
    statx_raw(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// statx of `name` inside `dir`, not following a final symlink.
pub fn stat_at(dir: RawFd, name: &[u8]) -> SysResult<Stat> {
    with_cname(name, |c| statx_raw(dir, c, 0))
}

pub fn mkdir_at(dir: RawFd, name: &[u8], mode: u32) -> SysResult<()> {
    let c = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(drop)
}

pub fn mknod_at(dir: RawFd, name: &[u8], mode: u32, dev: u64) -> SysResult<()> {
    let c = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode, dev) }).map(drop)
}

pub fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> SysResult<()> {
    let t = cname(target)?;
    let c = cname(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

pub fn unlink_at(dir: RawFd, name: &[u8], flags: i32) -> SysResult<()> {
    let c = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

pub fn rename_at(from_dir: RawFd, from: &[u8], to_dir: RawFd, to: &[u8]) -> SysResult<()> {
    let f = cname(from)?;
    let t = cname(to)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::renameat(from_dir, f.as_ptr(), to_dir, t.as_ptr()) }).map(drop)
}

/// Link the object behind an O_PATH fd as `name` in `dir` (needs no capability,
/// unlike AT_EMPTY_PATH).
pub fn link_fd(fd: &OwnedFd, dir: RawFd, name: &[u8]) -> SysResult<()> {
    let p = proc_path(fd.as_raw_fd());
    let c = cname(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(libc::AT_FDCWD, p.as_ptr(), dir, c.as_ptr(), libc::AT_SYMLINK_FOLLOW) }).map(drop)
}

/// Target of a symlink given as an O_PATH fd, at most `max` bytes.
pub fn readlink_fd(fd: &OwnedFd, max: usize) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; max + 1];
    let empty = CString::default();
    // SAFETY: buf has max+1 writable bytes.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), empty.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last());
    }
    let n = n as usize;
    if n > max {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

pub fn chmod_fd(fd: &OwnedFd, mode: u32) -> SysResult<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid C string.
    check(unsafe { libc::fchmodat(libc::AT_FDCWD, p.as_ptr(), mode, 0) }).map(drop)
}

/// chown (u32::MAX = leave unchanged), not following symlinks.
pub fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> SysResult<()> {
    let empty = CString::default();
    // SAFETY: valid C string.
    check(unsafe {
        libc::fchownat(fd.as_raw_fd(), empty.as_ptr(), uid, gid, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
    })
    .map(drop)
}

pub fn truncate_fd(fd: &OwnedFd, size: u64) -> SysResult<()> {
    let p = proc_path(fd.as_raw_fd());
    let size = libc::off_t::try_from(size).map_err(|_| Errno(libc::EFBIG))?;
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(p.as_ptr(), size) }).map(drop)
}

/// One timestamp for utimensat: leave, now, or an explicit time.
#[derive(Copy, Clone, Debug)]
pub enum TimeSet {
    Omit,
    Now,
    At(u32, u32),
}

fn timespec(t: TimeSet) -> libc::timespec {
    match t {
        TimeSet::Omit => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        TimeSet::Now => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        TimeSet::At(s, ns) => libc::timespec { tv_sec: libc::time_t::from(s), tv_nsec: libc::c_long::from(ns) },
    }
}

/// Set atime/mtime of the object behind an fd (symlinks included: with
/// AT_EMPTY_PATH the object itself is changed, nothing is followed).
pub fn utimens_fd(fd: &OwnedFd, atime: TimeSet, mtime: TimeSet) -> SysResult<()> {
    let ts = [timespec(atime), timespec(mtime)];
    let empty = CString::default();
    // SAFETY: valid C string and two timespecs.
    check(unsafe { libc::utimensat(fd.as_raw_fd(), empty.as_ptr(), ts.as_ptr(), libc::AT_EMPTY_PATH) }).map(drop)
}

/// faccessat2 with AT_EACCESS: checks against the fs uid/gid the thread runs as.
pub fn access_fd(fd: &OwnedFd, mode: i32) -> bool {
    let empty = CString::default();
    // SAFETY: valid C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            mode,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    rc == 0
}

pub fn statvfs_fd(fd: &OwnedFd) -> SysResult<libc::statvfs> {
    // SAFETY: statvfs is plain old data.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out buffer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut sv) })?;
    Ok(sv)
}

/// pread up to `count` bytes at `offset` into the spare room after `out`'s
/// contents, appending what was read (a short count at end of file). The room
/// is not zero-filled first: a 1 MiB READ writes its buffer once, not twice.
/// `nowait`: only what the page cache holds (RWF_NOWAIT: EAGAIN, or a short
/// count, where the disk would have to be read).
pub fn pread_append(fd: &impl AsRawFd, out: &mut Vec<u8>, count: usize, offset: u64, nowait: bool) -> SysResult<usize> {
    out.reserve(count);
    let spare = out.spare_capacity_mut();
    let want = count.min(spare.len());
    let offset = i64::try_from(offset).map_err(|_| Errno(libc::EINVAL))?;
    let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: want };
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
    // SAFETY: the kernel writes at most `want` bytes into `spare` (the one
    // iovec), which is `want` or more bytes of memory owned by `out`.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset, flags) };
    let n = usize::try_from(n).map_err(|_| last())?.min(want);
    // SAFETY: the first `n` bytes after the old length were written by pread.
    unsafe { out.set_len(out.len() + n) };
    Ok(n)
}

/// Start writing `len` bytes at `offset` back to the disk without waiting
/// for it (sync_file_range SYNC_FILE_RANGE_WRITE): a hint, durability still
/// comes only from fsync. An error of the write-out itself is not lost: it
/// stays recorded on the file for the next fsync (COMMIT) to report.
pub fn start_writeback(fd: &impl AsRawFd, offset: u64, len: usize) -> SysResult<()> {
    let offset = i64::try_from(offset).map_err(|_| Errno(libc::EINVAL))?;
    let len = i64::try_from(len).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: plain syscall on an open fd; no memory is passed.
    check(unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) }).map(drop)
}

/// One getdents64 call into `buf`; returns the number of bytes filled.
pub fn getdents(fd: &OwnedFd, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: buf is writable for buf.len() bytes.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(last());
    }
    Ok(n as usize)
}

pub fn seek_dir(fd: &OwnedFd, pos: u64) -> SysResult<()> {
    let off = libc::off_t::try_from(pos).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: plain lseek on an owned fd.
    let rc = unsafe { libc::lseek(fd.as_raw_fd(), off, libc::SEEK_SET) };
    if rc < 0 {
        return Err(last());
    }
    Ok(())
}

/// The process umask, read without changing it (from /proc/self/status).
pub fn current_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_c_strings_on_the_stack_or_the_heap() {
        let len = |n: &[u8]| with_cname(n, |c| Ok(c.to_bytes().len()));
        assert_eq!(len(b"abc"), Ok(3));
        assert_eq!(len(&[b'x'; 255]), Ok(255));
        assert_eq!(len(&[b'x'; 256]), Ok(256));
        assert_eq!(len(&[b'x'; 4000]), Ok(4000));
        assert_eq!(len(b""), Ok(0));
        assert_eq!(len(b"a\0b"), Err(Errno(libc::EINVAL)));
        assert_eq!(len(&[0u8; 300]), Err(Errno(libc::EINVAL)));
    }

    #[test]
    fn pread_append_appends_what_it_read_and_stops_at_the_end() {
        let path = std::env::temp_dir().join(format!("hanfs-pread-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut out = b"head".to_vec();
        assert_eq!(pread_append(&f, &mut out, 4, 3, false), Ok(4));
        assert_eq!(out, b"head3456");
        // Short at the end of the file; nothing past it.
        assert_eq!(pread_append(&f, &mut out, 100, 8, false), Ok(2));
        assert_eq!(out, b"head345689");
        assert_eq!(pread_append(&f, &mut out, 100, 10, false), Ok(0));
        assert_eq!(out.len(), 10);
        // Just written, so in the page cache: a no-wait read gets it.
        assert_eq!(pread_append(&f, &mut out, 3, 0, true), Ok(3));
        assert_eq!(out, b"head345689012");
        // An offset no file can have.
        assert_eq!(pread_append(&f, &mut out, 1, u64::MAX, false), Err(Errno(libc::EINVAL)));
        std::fs::remove_file(&path).unwrap();
    }
}
