//! NFSv3 procedures that change a file: SETATTR, WRITE, COMMIT (RFC 1813 §3.3).

use std::sync::Arc;

use nfs3_types::nfs3::*;

use crate::rpc::program::{Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::attr::nfstime;
use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, Errno, TimeSet};

use super::common::{no_wcc, reply, run, run_args, wcc_after, Access};
use super::io;
use super::xdr::{self, Fh, Sattr, SetTime};
use super::NfsCtx;

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
pub(super) fn apply_sattr(obj: &Obj, acc: &Access, s: &Sattr) -> Result<(), nfsstat3> {
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
        // NFSD_MAY_OWNER_OVERRIDE); done at the server's ids.
        if let Some(size) = s.size {
            sys::truncate_fd(&obj.fd, size)?;
        }
        let _user = acc.user()?;
        if s.atime.is_some() || s.mtime.is_some() {
            sys::utimens_fd(&obj.fd, time_set(s.atime), time_set(s.mtime))?;
        }
    }
    Ok(())
}

pub fn setattr(ctx: Arc<NfsCtx>, call: Call, args: Vec<u8>) -> ProcFuture {
    run(ctx, call, args, xdr::setattr, |op, (fh, s, guard)| {
        let (mut obj, acc) = match op.object(&fh) {
            Ok(v) => v,
            Err(e) => return Reply::new(reply::<SETATTR3resok, _>(Err((e, SETATTR3resfail::default())))),
        };
        let pre = obj.st.clone();
        let r = acc.writable().and_then(|()| match guard {
            Some(ctime) if ctime != nfstime(pre.ctime) => Err(nfsstat3::NFS3ERR_NOT_SYNC),
            _ => apply_sattr(&obj, &acc, &s),
        });
        if r.is_ok() {
            super::proc_dir::sync_meta(&acc, &[&obj]);
        }
        let wcc = wcc_after(&mut obj, &pre);
        let body = match r {
            Ok(()) => reply::<_, SETATTR3resfail>(Ok(SETATTR3resok { obj_wcc: wcc })),
            Err(e) => reply::<SETATTR3resok, _>(Err((e, SETATTR3resfail { obj_wcc: wcc }))),
        };
        Reply::new(body)
    })
}

pub fn write(ctx: Arc<NfsCtx>, call: Call, args: Vec<u8>) -> ProcFuture {
    run_args(ctx, call, args, xdr::write, |op, w, args| {
        // The decoder checked the range against the argument bytes.
        let Some(data) = args.get(w.data.clone()) else {
            return Reply::new(reply::<WRITE3resok, _>(Err((nfsstat3::NFS3ERR_SERVERFAULT, WRITE3resfail::default()))));
        };
        let (mut obj, acc) = match op.object(&w.fh) {
            Ok(v) => v,
            Err(e) => return Reply::new(reply::<WRITE3resok, _>(Err((e, WRITE3resfail::default())))),
        };
        let pre = obj.st.clone();
        let r = io::write_at(&obj, &acc, w.offset, data, w.stable);
        let file_wcc = wcc_after(&mut obj, &pre);
        let body = match r {
            Ok(()) => reply::<_, WRITE3resfail>(Ok(WRITE3resok {
                file_wcc,
                count: data.len() as u32,
                committed: match w.stable {
                    0 => stable_how::UNSTABLE,
                    1 => stable_how::DATA_SYNC,
                    _ => stable_how::FILE_SYNC,
                },
                verf: io::verifier(op, obj.export_id),
            })),
            Err(e) => reply::<WRITE3resok, _>(Err((e, WRITE3resfail { file_wcc }))),
        };
        Reply::new(body)
    })
}

fn dec_commit(r: &mut Reader) -> Result<(Fh, u64, u32), DecodeError> {
    Ok((xdr::fh(r)?, r.u64()?, r.u32()?))
}

pub fn commit(ctx: Arc<NfsCtx>, call: Call, args: Vec<u8>) -> ProcFuture {
    run(ctx, call, args, dec_commit, |op, (fh, _offset, _count)| {
        let (mut obj, _acc) = match op.object(&fh) {
            Ok(v) => v,
            Err(e) => return Reply::new(reply::<COMMIT3resok, _>(Err((e, COMMIT3resfail { file_wcc: no_wcc() })))),
        };
        let pre = obj.st.clone();
        // The whole file is synced whatever the range: simpler and never less safe.
        let r = io::commit(&obj);
        let file_wcc = wcc_after(&mut obj, &pre);
        let body = match r {
            Ok(()) => reply::<_, COMMIT3resfail>(Ok(COMMIT3resok { file_wcc, verf: io::verifier(op, obj.export_id) })),
            Err(e) => reply::<COMMIT3resok, _>(Err((e, COMMIT3resfail { file_wcc }))),
        };
        Reply::new(body)
    })
}
