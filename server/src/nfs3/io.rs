//! File data I/O for READ, WRITE and COMMIT (and SETATTR's size change for an
//! owner the mode refuses), with knfsd's permission rules: the caller's ids
//! decide, except that the owner may always read and write its own file
//! (NFSD_MAY_OWNER_OVERRIDE: the client checked at open time) and a file the
//! caller may execute may also be read (NFSD_MAY_READ_IF_EXEC).
//!
//! The data moves under the caller's ids and capabilities (`CredGuard`), not
//! only the open: a write by a non-root caller clears the set-id bits and
//! cannot use ext4's root-reserved blocks, as a local process's would. Only
//! an open the rules above allow against the mode happens at the server's ids.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nfs3_types::nfs3::{nfsstat3, writeverf3};

use crate::rpc::shared::Fence;
use crate::vfs::cred::CredGuard;
use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, Errno};

use super::common::{Access, Op};

fn regular(obj: &Obj) -> Result<(), nfsstat3> {
    if obj.st.is_dir() {
        return Err(nfsstat3::NFS3ERR_ISDIR);
    }
    if !obj.st.is_reg() {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    Ok(())
}

fn io_status(e: std::io::Error) -> nfsstat3 {
    Errno(e.raw_os_error().unwrap_or(libc::EIO)).into()
}

/// Open `obj` for reading or writing under the rules above. The file comes
/// with the caller's ids in force (the guard): do the I/O before dropping it.
fn open(obj: &Obj, acc: &Access, write: bool) -> Result<(File, CredGuard), nfsstat3> {
    regular(obj)?;
    if write {
        acc.writable()?;
    }
    let flags = if write { libc::O_WRONLY } else { libc::O_RDONLY };
    let user = acc.user()?;
    match sys::reopen(&obj.fd, flags) {
        Ok(fd) => return Ok((File::from(fd), user)),
        Err(Errno(libc::EACCES)) => {
            let may_exec = !write && sys::access_fd(&obj.fd, libc::X_OK);
            if acc.creds.uid != obj.st.uid && !may_exec {
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
        }
        Err(e) => return Err(e.into()),
    }
    // Opened at the server's own ids, then used at the caller's again.
    drop(user);
    let f = sys::reopen(&obj.fd, flags).map(File::from).map_err(nfsstat3::from)?;
    Ok((f, acc.user()?))
}

/// Read up to `count` bytes at `offset` (short only at end of file), appended
/// to `out` (so a reply can be built around the data without copying it).
/// Returns the number of bytes read. `nowait`: only from the page cache;
/// `Err(NFS3ERR_JUKEBOX)` with `out` as it was if the disk would have to be
/// read, or the file system cannot tell (no RWF_NOWAIT: tmpfs); the caller
/// then reads on a blocking thread.
pub fn read_into(
    obj: &Obj,
    acc: &Access,
    offset: u64,
    count: u32,
    out: &mut Vec<u8>,
    nowait: bool,
) -> Result<usize, nfsstat3> {
    let (f, _user) = open(obj, acc, false)?;
    let (count, start) = (count as usize, out.len());
    let mut done = 0usize;
    // Each pass reads at least one byte, or the loop ends (end of file, an
    // error); EINTR, which a regular file does not give, retries.
    while done < count {
        match sys::pread_append(&f, out, count - done, offset.saturating_add(done as u64), nowait) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno(libc::EINTR)) => continue,
            // EOPNOTSUPP: a file system without no-wait reads (tmpfs, for
            // one): read it like an uncached file, on a blocking thread.
            Err(Errno(libc::EAGAIN | libc::EOPNOTSUPP)) if nowait => {
                out.truncate(start);
                return Err(nfsstat3::NFS3ERR_JUKEBOX);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// An UNSTABLE write at least this large is sent on to the disk at once
/// (without waiting): a streaming writer's COMMIT then finds most of its data
/// already written instead of all of it still dirty, as a local `dd` keeps
/// the disk busy while it copies. Smaller writes (a random rewriter of the
/// same pages) are left to COMMIT and the kernel's own writeback.
const WRITE_BEHIND_MIN: usize = 256 * 1024;

/// Write all of `data` at `offset`; `stable` 1 = DATA_SYNC (fdatasync),
/// 2 = FILE_SYNC (fsync), 0 = UNSTABLE (left to COMMIT).
///
/// `fence` is checked once more right before the data is written: a node
/// stopped (SIGSTOP, a stall) between the dispatch's check and here, and
/// resumed after another took over, must not write a client's old data over
/// what was written since (the soak saw a counter go back after a stop); the
/// call is then not answered here (dispatch closes the connection).
pub fn write_at(obj: &Obj, acc: &Access, offset: u64, data: &[u8], stable: u32, fence: &Fence) -> Result<(), nfsstat3> {
    let (f, _user) = open(obj, acc, true)?;
    if !fence.serving_now() {
        return Err(nfsstat3::NFS3ERR_JUKEBOX);
    }
    f.write_all_at(data, offset).map_err(io_status)?;
    match stable {
        1 => f.sync_data().map_err(io_status),
        2 => f.sync_all().map_err(io_status),
        _ => {
            if data.len() >= WRITE_BEHIND_MIN {
                // Best effort: a failure to start is seen again by COMMIT's fsync.
                let _ = sys::start_writeback(&f, offset, data.len());
            }
            Ok(())
        }
    }
}

/// COMMIT: fsync the file, at the caller's ids. The fd is opened read-only at
/// the server's (an fd opened read-only may be fsynced, and the data being
/// committed was already written under the caller's rights), as before.
pub fn commit(obj: &Obj, acc: &Access) -> Result<(), nfsstat3> {
    regular(obj)?;
    let f = File::from(sys::reopen(&obj.fd, libc::O_RDONLY)?);
    let _user = acc.user()?;
    f.sync_all().map_err(io_status)
}

/// SETATTR's size change for the owner whose file's mode refuses it the
/// write (knfsd's NFSD_MAY_OWNER_OVERRIDE): opened at the server's ids,
/// truncated at the caller's (so set-id bits are cleared as for any
/// non-root truncate, and reserved blocks stay out of reach).
pub fn truncate_as_owner(obj: &Obj, acc: &Access, size: u64) -> Result<(), nfsstat3> {
    regular(obj)?;
    if acc.creds.uid != obj.st.uid {
        return Err(nfsstat3::NFS3ERR_ACCES);
    }
    if i64::try_from(size).is_err() {
        return Err(nfsstat3::NFS3ERR_FBIG);
    }
    let f = File::from(sys::reopen(&obj.fd, libc::O_WRONLY)?);
    let _user = acc.user()?;
    f.set_len(size).map_err(io_status)
}

/// The write verifier: derived from the replicated epoch (which every
/// promotion or restart bumps) and the export id, so it changes on failover
/// and clients resend uncommitted data.
pub fn verifier(op: &Op, export_id: u32) -> writeverf3 {
    let epoch = op.state().read().map(|s| s.epoch()).unwrap_or(0);
    let v = epoch ^ (u64::from(export_id) << 40).rotate_left(7);
    writeverf3(v.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;
    use crate::config::ExportOptions;
    use crate::vfs::cred::Creds;

    /// A temporary file holding `content`, as an object a root caller may write.
    fn root_file(tag: &str, content: &[u8]) -> (std::path::PathBuf, Obj, Access) {
        root_file_in(&std::env::temp_dir(), tag, content)
    }

    /// As `root_file`, in `dir`.
    fn root_file_in(dir: &std::path::Path, tag: &str, content: &[u8]) -> (std::path::PathBuf, Obj, Access) {
        let path = dir.join(format!("hanfs-io-{tag}-{}", std::process::id()));
        std::fs::write(&path, content).expect("file");
        let fd: OwnedFd = File::open(&path).expect("open").into();
        let st = sys::stat_fd(&fd).expect("stat");
        let acc = Access {
            opts: ExportOptions { read_only: false, ..ExportOptions::default() },
            creds: Creds { uid: 0, gid: 0, gids: Vec::new() },
        };
        (path, Obj { export_id: 1, fd, st }, acc)
    }

    /// A node whose fence fails between the dispatch's check and the write
    /// (stopped, then resumed after another took over) writes nothing.
    #[test]
    fn a_write_past_the_fence_leaves_the_file_alone() {
        let (path, obj, acc) = root_file("fence", b"newer");
        let err = write_at(&obj, &acc, 0, b"older", 0, &Fence::new(|| false));
        assert_eq!(err, Err(nfsstat3::NFS3ERR_JUKEBOX));
        assert_eq!(std::fs::read(&path).expect("read"), b"newer", "nothing written past the fence");
        write_at(&obj, &acc, 0, b"later", 0, &Fence::always()).expect("a serving node writes");
        assert_eq!(std::fs::read(&path).expect("read"), b"later");
        let _ = std::fs::remove_file(&path);
    }

    /// A file system without no-wait reads (tmpfs answers RWF_NOWAIT with
    /// EOPNOTSUPP) sends the read to the blocking path instead of failing
    /// it: every READ of a tmpfs export once answered NFS3ERR_NOTSUPP.
    #[test]
    fn a_file_system_without_nowait_reads_is_read_on_the_blocking_path() {
        let dir = std::path::Path::new("/dev/shm");
        // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a struct statfs fills.
        let rc = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut sfs) };
        assert!(rc == 0 && sfs.f_type == libc::TMPFS_MAGIC, "this test needs /dev/shm on tmpfs");
        let (path, obj, acc) = root_file_in(dir, "nowait", b"on tmpfs");
        let mut out = b"head".to_vec();
        assert_eq!(read_into(&obj, &acc, 0, 100, &mut out, true), Err(nfsstat3::NFS3ERR_JUKEBOX));
        assert_eq!(out, b"head", "nothing appended by the refused no-wait read");
        assert_eq!(read_into(&obj, &acc, 0, 100, &mut out, false), Ok(8));
        assert_eq!(out, b"headon tmpfs");
        let _ = std::fs::remove_file(&path);
    }

    /// Dirty pages of `f` in `len` bytes at `offset` (cachestat(2), Linux 6.5).
    fn dirty_pages(f: &File, offset: u64, len: u64) -> u64 {
        use std::os::fd::AsRawFd;
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = [offset, len];
        // nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted
        let mut stat = [0u64; 5];
        // SAFETY: the kernel reads two u64s and writes five.
        let rc = unsafe { libc::syscall(SYS_CACHESTAT, f.as_raw_fd(), range.as_ptr(), stat.as_mut_ptr(), 0) };
        assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
        stat[1]
    }

    /// An UNSTABLE write of WRITE_BEHIND_MIN or more leaves none of its pages
    /// merely dirty (all sent on to the disk, or written already); a smaller
    /// one is left to COMMIT.
    #[test]
    fn a_large_unstable_write_is_sent_on_to_the_disk_at_once() {
        let (path, obj, acc) = root_file("behind", b"");
        let f = File::open(&path).expect("open");
        let small = vec![7u8; WRITE_BEHIND_MIN / 2];
        write_at(&obj, &acc, 0, &small, 0, &Fence::always()).expect("small write");
        let before = dirty_pages(&f, 0, small.len() as u64);
        assert!(before > 0, "a small UNSTABLE write stays dirty until COMMIT ({before} dirty pages)");
        let large = vec![9u8; WRITE_BEHIND_MIN * 4];
        let at = WRITE_BEHIND_MIN as u64;
        write_at(&obj, &acc, at, &large, 0, &Fence::always()).expect("large write");
        assert_eq!(dirty_pages(&f, at, large.len() as u64), 0, "no page of the large write is left merely dirty");
        commit(&obj, &acc).expect("commit");
        let _ = std::fs::remove_file(&path);
    }
}
