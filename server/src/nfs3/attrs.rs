//! Changing an object's metadata, shared by SETATTR and the create-type
//! procedures: applying a `sattr3` under the caller's ids (`apply_sattr`), and
//! making metadata changes durable on `sync` exports (`sync_meta`).

use nfs3_types::nfs3::nfsstat3;

use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, Errno, TimeSet};

use super::common::Access;
use super::xdr::{Sattr, SetTime};

/// Sentinel for "leave unchanged" in chown.
const ID_UNCHANGED: u32 = u32::MAX;

fn time_set(t: Option<SetTime>) -> TimeSet {
    match t {
        None | Some(SetTime::DontChange) => TimeSet::Omit,
        Some(SetTime::ServerTime) => TimeSet::Now,
        Some(SetTime::ClientTime(t)) => TimeSet::At(t.seconds, t.nseconds),
    }
}

/// Apply `s` to `obj` under the caller's ids (the kernel decides who may).
/// Order: owner, mode, size, times (so a truncate does not move a set mtime).
pub fn apply_sattr(obj: &Obj, acc: &Access, s: &Sattr) -> Result<(), nfsstat3> {
    if s.is_empty() {
        return Ok(());
    }
    if s.size.is_some() {
        if obj.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        if !obj.st.is_reg() {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
    }
    let truncate_denied = {
        let _user = acc.user()?;
        if s.uid.is_some() || s.gid.is_some() {
            sys::chown_fd(&obj.fd, s.uid.unwrap_or(ID_UNCHANGED), s.gid.unwrap_or(ID_UNCHANGED))?;
        }
        if let Some(mode) = s.mode {
            if !obj.st.is_lnk() {
                sys::chmod_fd(&obj.fd, mode & 0o7777)?;
            }
        }
        let denied = match s.size.map(|size| sys::truncate_fd(&obj.fd, size)) {
            Some(Err(Errno(libc::EACCES))) if acc.creds.uid == obj.st.uid => true,
            Some(Err(e)) => return Err(e.into()),
            _ => false,
        };
        if !denied && (s.atime.is_some() || s.mtime.is_some()) {
            sys::utimens_fd(&obj.fd, time_set(s.atime), time_set(s.mtime))?;
        }
        denied
    };
    if truncate_denied {
        // The owner may truncate its own file whatever the mode (knfsd's
        // NFSD_MAY_OWNER_OVERRIDE): opened at the server's ids, truncated at
        // the caller's.
        if let Some(size) = s.size {
            super::io::truncate_as_owner(obj, acc, size)?;
        }
        let _user = acc.user()?;
        if s.atime.is_some() || s.mtime.is_some() {
            sys::utimens_fd(&obj.fd, time_set(s.atime), time_set(s.mtime))?;
        }
    }
    Ok(())
}

/// fsync the directory (and the new object) on `sync` exports, as knfsd's
/// commit_metadata, so an acknowledged create survives a crash.
pub fn sync_meta(acc: &Access, objs: &[&Obj]) {
    if !acc.opts.sync {
        return;
    }
    for o in objs {
        if !(o.st.is_dir() || o.st.is_reg()) {
            continue;
        }
        if let Ok(fd) = sys::reopen(&o.fd, libc::O_RDONLY | libc::O_NONBLOCK) {
            if let Err(e) = std::fs::File::from(fd).sync_all() {
                tracing::warn!(error = %e, "metadata fsync failed");
            }
        }
    }
}
