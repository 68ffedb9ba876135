//! File data I/O for READ, WRITE and COMMIT, with knfsd's permission rules:
//! the caller's ids decide, except that the owner may always read and write its
//! own file (NFSD_MAY_OWNER_OVERRIDE: the client checked at open time) and a
//! file the caller may execute may also be read (NFSD_MAY_READ_IF_EXEC).

use std::fs::File;
use std::os::unix::fs::FileExt;

use nfs3_types::nfs3::{nfsstat3, writeverf3};

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

/// Open `obj` for reading or writing under the rules above.
pub fn open(obj: &Obj, acc: &Access, write: bool) -> Result<File, nfsstat3> {
    regular(obj)?;
    if write {
        acc.writable()?;
    }
    let flags = if write { libc::O_WRONLY } else { libc::O_RDONLY };
    let (tried, may_exec) = {
        let _user = acc.user()?;
        let r = sys::reopen(&obj.fd, flags);
        let x = !write && r.is_err() && sys::access_fd(&obj.fd, libc::X_OK);
        (r, x)
    };
    match tried {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno(libc::EACCES)) if acc.creds.uid == obj.st.uid || may_exec => {
            // Back at the server's own ids (the guard has dropped).
            sys::reopen(&obj.fd, flags).map(File::from).map_err(nfsstat3::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Read up to `count` bytes at `offset` (short only at end of file), appended
/// to `out` (so a reply can be built around the data without copying it).
/// Returns the number of bytes read.
pub fn read_into(obj: &Obj, acc: &Access, offset: u64, count: u32, out: &mut Vec<u8>) -> Result<usize, nfsstat3> {
    let f = open(obj, acc, false)?;
    let start = out.len();
    out.resize(start + count as usize, 0);
    let mut done = 0usize;
    let r = loop {
        let Some(rest) = out.get_mut(start + done..) else { break Err(nfsstat3::NFS3ERR_IO) };
        if rest.is_empty() {
            break Ok(());
        }
        match f.read_at(rest, offset.saturating_add(done as u64)) {
            Ok(0) => break Ok(()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(Errno(e.raw_os_error().unwrap_or(libc::EIO)).into()),
        }
    };
    out.truncate(start + done);
    r.map(|()| done)
}

/// Write all of `data` at `offset`; `stable` 1 = DATA_SYNC (fdatasync),
/// 2 = FILE_SYNC (fsync), 0 = UNSTABLE (left to COMMIT).
pub fn write_at(obj: &Obj, acc: &Access, offset: u64, data: &[u8], stable: u32) -> Result<(), nfsstat3> {
    let f = open(obj, acc, true)?;
    let io = |e: std::io::Error| nfsstat3::from(Errno(e.raw_os_error().unwrap_or(libc::EIO)));
    f.write_all_at(data, offset).map_err(io)?;
    match stable {
        1 => f.sync_data().map_err(io),
        2 => f.sync_all().map_err(io),
        _ => Ok(()),
    }
}

/// COMMIT: fsync the file. An fd opened read-only may be fsynced, and the
/// data being committed was already written under the caller's rights.
pub fn commit(obj: &Obj) -> Result<(), nfsstat3> {
    regular(obj)?;
    let f = File::from(sys::reopen(&obj.fd, libc::O_RDONLY)?);
    f.sync_all().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)).into())
}

/// The write verifier: derived from the replicated epoch (which every
/// promotion or restart bumps) and the export id, so it changes on failover
/// and clients resend uncommitted data.
pub fn verifier(op: &Op, export_id: u32) -> writeverf3 {
    let epoch = op.state().read().map(|s| s.epoch()).unwrap_or(0);
    let v = epoch ^ (u64::from(export_id) << 40).rotate_left(7);
    writeverf3(v.to_be_bytes())
}
