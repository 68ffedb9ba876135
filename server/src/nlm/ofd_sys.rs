//! The kernel side of the OFD lock mirror (`ofd.rs`): NLM ranges in the
//! kernel's signed offsets, and checked `F_OFD_GETLK` / `F_OFD_SETLK`
//! wrappers (never `F_OFD_SETLKW`: the mirror never waits for a lock).

use std::os::fd::{OwnedFd, RawFd};

use hanfs_state::locks::{LockKind, LockRange};
use nfs3_types::nfs3::nfsstat3;

use crate::vfs::sys;

/// A byte range in the kernel's terms: first and last byte, inclusive,
/// `end == i64::MAX` meaning to end of file (the kernel's `OFFSET_MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub kind: LockKind,
}

impl Span {
    /// `l_len` for `struct flock`: 0 runs to end of file.
    fn flock_len(self) -> i64 {
        if self.end == i64::MAX {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// The NLM `l_len` of this range (0: to end of file).
    pub fn nlm_len(self) -> u64 {
        self.flock_len() as u64
    }
}

/// An NLM range in kernel form; None when it starts past `i64::MAX` (the
/// kernel cannot lock there, so no local lock can conflict with it). A range
/// ending past `i64::MAX` runs to the kernel's end of file.
pub fn kernel_span(range: LockRange, kind: LockKind) -> Option<Span> {
    let start = i64::try_from(range.offset).ok()?;
    let last = match range.len {
        0 => u64::MAX,
        len => range.offset.saturating_add(len - 1),
    };
    let end = i64::try_from(last).unwrap_or(i64::MAX);
    Some(Span { start, end, kind })
}

/// Why a lock call failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SysError {
    /// Another description (a lock outside hanfs) holds a conflicting lock.
    Conflict,
    /// Any other errno (EBADF: an exclusive lock on a read-only description).
    Errno(i32),
    /// The handle no longer resolves.
    Resolve(nfsstat3),
}

/// A lock found by `F_OFD_GETLK`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub span: Span,
    /// The holder's pid (-1 for an OFD lock).
    pub pid: i32,
}

fn flock(typ: i32, span: Span) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is valid (l_pid must be 0 for OFD calls).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = span.start;
    fl.l_len = span.flock_len();
    fl
}

fn lock_type(kind: LockKind) -> i32 {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn fcntl_lock(fd: RawFd, cmd: i32, fl: &mut libc::flock) -> Result<(), SysError> {
    // SAFETY: `fl` is a valid, initialised flock the kernel reads (and, for GETLK, writes).
    let rc = unsafe { libc::fcntl(fd, cmd, fl as *mut libc::flock) };
    if rc == 0 {
        return Ok(());
    }
    match errno() {
        libc::EAGAIN | libc::EACCES => Err(SysError::Conflict),
        e => Err(SysError::Errno(e)),
    }
}

/// Set `span` to its kind on the description `fd` (replacing what the
/// description held there), without waiting.
pub fn setlk(fd: RawFd, span: Span) -> Result<(), SysError> {
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut flock(lock_type(span.kind), span))
}

/// Release `span` on the description `fd`.
pub fn unlock(fd: RawFd, span: Span) -> Result<(), SysError> {
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut flock(libc::F_UNLCK, span))
}

/// The first lock of another description (or process) that conflicts with
/// `span`, or None.
pub fn getlk(fd: RawFd, span: Span) -> Result<Option<Found>, SysError> {
    let mut fl = flock(lock_type(span.kind), span);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    if i32::from(fl.l_type) == libc::F_UNLCK {
        return Ok(None);
    }
    let kind = if i32::from(fl.l_type) == libc::F_WRLCK { LockKind::Exclusive } else { LockKind::Shared };
    let end = if fl.l_len == 0 { i64::MAX } else { fl.l_start.saturating_add(fl.l_len - 1) };
    Ok(Some(Found { span: Span { start: fl.l_start, end, kind }, pid: fl.l_pid }))
}

/// A new open file description on the regular file behind the O_PATH fd
/// `path_fd`, for locking: with `writable`, read-write if the server may (an
/// exclusive lock needs it), else read-only. Non-blocking, so an open never
/// waits for a lease break.
pub fn open_for_locks(path_fd: &OwnedFd, writable: bool) -> Result<OwnedFd, SysError> {
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !writable {
        return sys::reopen(path_fd, libc::O_RDONLY | flags).map_err(|e| SysError::Errno(e.0));
    }
    match sys::reopen(path_fd, libc::O_RDWR | flags) {
        Ok(fd) => Ok(fd),
        Err(sys::Errno(libc::EACCES | libc::EPERM | libc::EROFS | libc::ETXTBSY | libc::EWOULDBLOCK)) => {
            sys::reopen(path_fd, libc::O_RDONLY | flags).map_err(|e| SysError::Errno(e.0))
        }
        Err(e) => Err(SysError::Errno(e.0)),
    }
}

/// The process's soft open-file limit, if finite, after raising it to the
/// hard limit (as Go's runtime does at start: only `select(2)` users care
/// about a low soft limit, and nothing here uses it). A refused raise keeps
/// the old limit.
pub fn nofile_soft_limit() -> Option<u64> {
    // SAFETY: rlimit is plain old data; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
        // SAFETY: a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl = raised;
        }
    }
    (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlm_ranges_in_kernel_offsets() {
        let s = |offset, len| kernel_span(LockRange { offset, len }, LockKind::Shared).map(|s| (s.start, s.end));
        assert_eq!(s(0, 0), Some((0, i64::MAX)));
        assert_eq!(s(10, 5), Some((10, 14)));
        // Ending past the kernel's last offset: to end of file.
        assert_eq!(s(10, u64::MAX), Some((10, i64::MAX)));
        assert_eq!(s(i64::MAX as u64, 1), Some((i64::MAX, i64::MAX)));
        // Starting past it: not representable, not mirrored.
        assert_eq!(s(i64::MAX as u64 + 1, 1), None);
        let span = kernel_span(LockRange { offset: 10, len: 5 }, LockKind::Shared).unwrap();
        assert_eq!(span.nlm_len(), 5);
        assert_eq!(kernel_span(LockRange { offset: 3, len: 0 }, LockKind::Shared).unwrap().nlm_len(), 0);
    }
}
