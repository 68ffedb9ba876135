//! NFSv3 procedures that change a directory: CREATE, MKDIR, SYMLINK, MKNOD,
//! REMOVE, RMDIR (RFC 1813 §3.3; RENAME and LINK are in `proc_link.rs`). Each
//! runs the syscall under the caller's ids. Handles carry the filesystem's own
//! object handles, so nothing but the DRC record is replicated for them: a new
//! object's handle is its fs handle, a removed one's handle goes stale by
//! itself.

use std::sync::Arc;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Pack};

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, TimeSet};

use super::attrs::{apply_sattr, sync_meta};
use super::common::{async_export, frees_little, no_wcc, obj_attr, reply, run_cheap, wcc_after, Access, Op};
use super::xdr::{self, CreateHow, Fh, Mknod, Name, NameUse, Sattr};
use super::NfsCtx;
use crate::live::View;

/// Mode of a new file or directory when the client sends none.
const FILE_MODE_DEFAULT: u32 = 0o644;
const DIR_MODE_DEFAULT: u32 = 0o755;
/// Mode of an exclusively created file until the client's follow-up SETATTR.
pub(super) const EXCLUSIVE_MODE: u32 = 0o600;
/// knfsd clears the top bit of the verifier words it stores as times.
const VERF_TIME_MASK: u32 = 0x7fff_ffff;

/// The parts every create-type reply has (CREATE, MKDIR, SYMLINK, MKNOD share
/// one shape: obj, obj_attributes, dir_wcc / dir_wcc).
pub(super) type CreateOut = Result<(post_op_fh3, post_op_attr, wcc_data), (nfsstat3, wcc_data)>;

/// Resolve the directory, check the name and write access, run `make` under
/// the caller's ids, then look the new object up for its handle.
// The result is encoded at once by the caller; boxing it would buy nothing.
#[allow(clippy::result_large_err)]
fn create_in(
    op: &Op,
    fh: &Fh,
    name: Name,
    make: impl FnOnce(&Obj, &[u8], &Access) -> Result<Option<Obj>, nfsstat3>,
) -> CreateOut {
    let (mut dir, acc) = match op.object(fh) {
        Ok(v) => v,
        Err(s) => return Err((s, no_wcc())),
    };
    let pre = dir.st.clone();
    let r = (|| {
        let name = name?;
        acc.writable()?;
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let existing = make(&dir, &name, &acc)?;
        let obj = match existing {
            Some(o) => o,
            None => {
                let _user = acc.user()?;
                op.vfs().child(&dir, &name)?
            }
        };
        sync_meta(&acc, &[&dir, &obj]);
        Ok(obj)
    })();
    let wcc = wcc_after(&mut dir, &pre);
    match r {
        Ok(obj) => Ok((new_fh(op, &obj), obj_attr(&obj), wcc)),
        Err(s) => Err((s, wcc)),
    }
}

/// The handle of a new object for its reply. Optional in the protocol: if the
/// filesystem gave no handle, the client looks the name up instead.
pub(super) fn new_fh(op: &Op, obj: &Obj) -> post_op_fh3 {
    match op.fh(obj) {
        Ok(fh) => Nfs3Option::Some(nfs_fh3 { data: Opaque::owned(fh) }),
        Err(_) => Nfs3Option::None,
    }
}

/// A create-type procedure's result pair (CREATE, MKDIR, SYMLINK, MKNOD share
/// one shape: obj, obj_attributes, dir_wcc / dir_wcc).
pub(super) trait CreatedRes: Pack + Sized {
    type Fail: Pack;
    fn ok(obj: post_op_fh3, obj_attributes: post_op_attr, dir_wcc: wcc_data) -> Self;
    fn fail(dir_wcc: wcc_data) -> Self::Fail;
}

macro_rules! created_res {
    ($($ok:ident / $fail:ident),* $(,)?) => {$(
        impl CreatedRes for $ok {
            type Fail = $fail;
            fn ok(obj: post_op_fh3, obj_attributes: post_op_attr, dir_wcc: wcc_data) -> Self {
                $ok { obj, obj_attributes, dir_wcc }
            }
            fn fail(dir_wcc: wcc_data) -> $fail {
                $fail { dir_wcc }
            }
        }
    )*};
}

created_res!(
    CREATE3resok / CREATE3resfail,
    MKDIR3resok / MKDIR3resfail,
    SYMLINK3resok / SYMLINK3resfail,
    MKNOD3resok / MKNOD3resfail
);

/// The reply of a create-type procedure from what `create_in` returned: its
/// resok from the new object, its resfail from the directory's wcc.
pub(super) fn created_reply<R: CreatedRes>(out: CreateOut) -> Reply {
    let body = match out {
        Ok((obj, obj_attributes, dir_wcc)) => reply::<R, R::Fail>(Ok(R::ok(obj, obj_attributes, dir_wcc))),
        Err((s, dir_wcc)) => reply::<R, R::Fail>(Err((s, R::fail(dir_wcc)))),
    };
    Reply::new(body)
}

/// Set the client's mode exactly (the process umask may have cleared bits),
/// then the rest of the attributes.
fn finish_attrs(op: &Op, dir: &Obj, name: &[u8], acc: &Access, mode: u32, rest: &Sattr) -> Result<(), nfsstat3> {
    let obj = {
        let _user = acc.user()?;
        op.vfs().child(dir, name)?
    };
    let mut s = Sattr { mode: None, ..rest.clone() };
    if obj.st.uid == acc.creds.uid {
        // As knfsd's nfsd_create_setattr: the creator already owns the object;
        // a uid/gid in the request (e.g. root's, squashed) is not applied.
        s.uid = None;
        s.gid = None;
    }
    if mode & op.vfs().umask() != 0 {
        s.mode = Some(mode);
    }
    apply_sattr(&obj, acc, &s)
}

/// How one create-type procedure makes its object `name` in `dir`, from its
/// own arguments `A`: `Ok(None)` when it made a new object, `Ok(Some(obj))`
/// when an existing one is the answer (an UNCHECKED or repeated EXCLUSIVE
/// CREATE). Everything around it is `create_in`.
pub(super) type Make<A> = fn(&Op, &Obj, &[u8], &Access, &A) -> Result<Option<Obj>, nfsstat3>;

/// The whole of CREATE, MKDIR, SYMLINK and MKNOD once their arguments are
/// decoded: `create_in` with the procedure's `make`, then its reply `R`.
pub(super) fn created<R: CreatedRes, A>(op: &Op, (fh, name, what): (Fh, Name, A), make: Make<A>) -> Reply {
    created_reply::<R>(create_in(op, &fh, name, |dir, n, acc| make(op, dir, n, acc, &what)))
}

/// The step MKDIR, SYMLINK and MKNOD share: `make` the object under the
/// caller's ids, then set the client's mode exactly and the rest of `s`
/// (`finish_attrs`). (CREATE also handles an existing file, so it calls
/// `mknod_at` and `finish_attrs` itself.)
fn make_then_set(
    op: &Op,
    dir: &Obj,
    name: &[u8],
    acc: &Access,
    (mode, s): (u32, &Sattr),
    make: impl FnOnce() -> Result<(), nfsstat3>,
) -> Result<Option<Obj>, nfsstat3> {
    {
        let _user = acc.user()?;
        make()?;
    }
    finish_attrs(op, dir, name, acc, mode, s).map(|()| None)
}

fn mknod_at(dir: &Obj, name: &[u8], acc: &Access, mode: u32, dev: u64) -> Result<(), nfsstat3> {
    let _user = acc.user()?;
    sys::mknod_at(dir.raw(), name, mode, dev).map_err(nfsstat3::from)
}

pub(super) fn make_file(
    op: &Op,
    dir: &Obj,
    name: &[u8],
    acc: &Access,
    how: &CreateHow,
) -> Result<Option<Obj>, nfsstat3> {
    let s = match how {
        CreateHow::Unchecked(s) | CreateHow::Guarded(s) => s,
        CreateHow::Exclusive(verf) => return create_exclusive(op, dir, name, acc, verf),
    };
    let mode = s.mode.unwrap_or(FILE_MODE_DEFAULT) & 0o7777;
    match mknod_at(dir, name, acc, libc::S_IFREG | mode, 0) {
        Ok(()) => finish_attrs(op, dir, name, acc, mode, s).map(|()| None),
        Err(nfsstat3::NFS3ERR_EXIST) if matches!(how, CreateHow::Unchecked(_)) => {
            // knfsd: an existing regular file is kept; only a size is applied.
            let obj = {
                let _user = acc.user()?;
                op.vfs().child(dir, name)?
            };
            if !obj.st.is_reg() {
                return Err(nfsstat3::NFS3ERR_EXIST);
            }
            apply_sattr(&obj, acc, &Sattr { size: s.size, ..Sattr::default() })?;
            Ok(Some(obj))
        }
        Err(e) => Err(e),
    }
}

pub(super) fn verf_times(verf: &[u8; 8]) -> (u32, u32) {
    let w = |i: usize| u32::from_be_bytes([verf[i], verf[i + 1], verf[i + 2], verf[i + 3]]);
    (w(0) & VERF_TIME_MASK, w(4) & VERF_TIME_MASK)
}

/// EXCLUSIVE create, as knfsd: the verifier is stored in mtime/atime, so a
/// retransmission with the same verifier finds "its" file and succeeds, and a
/// different verifier gets NFS3ERR_EXIST. The client then sends SETATTR.
fn create_exclusive(op: &Op, dir: &Obj, name: &[u8], acc: &Access, verf: &[u8; 8]) -> Result<Option<Obj>, nfsstat3> {
    let (mtime, atime) = verf_times(verf);
    let made = mknod_at(dir, name, acc, libc::S_IFREG | EXCLUSIVE_MODE, 0);
    if let Err(e) = made {
        if e != nfsstat3::NFS3ERR_EXIST {
            return Err(e);
        }
    }
    let _user = acc.user()?;
    let obj = op.vfs().child(dir, name)?;
    match made {
        Ok(()) => {
            sys::utimens_fd(&obj.fd, TimeSet::At(atime, 0), TimeSet::At(mtime, 0))?;
            Ok(None)
        }
        Err(_) => {
            let same = obj.st.is_reg() && obj.st.mtime.0 == i64::from(mtime) && obj.st.atime.0 == i64::from(atime);
            if same {
                Ok(Some(obj))
            } else {
                Err(nfsstat3::NFS3ERR_EXIST)
            }
        }
    }
}

pub(super) fn make_dir(op: &Op, dir: &Obj, name: &[u8], acc: &Access, s: &Sattr) -> Result<Option<Obj>, nfsstat3> {
    let mode = s.mode.unwrap_or(DIR_MODE_DEFAULT) & 0o7777;
    let rest = Sattr { size: None, ..s.clone() };
    make_then_set(op, dir, name, acc, (mode, &rest), || Ok(sys::mkdir_at(dir.raw(), name, mode)?))
}

pub(super) fn make_symlink(
    op: &Op,
    dir: &Obj,
    name: &[u8],
    acc: &Access,
    (s, target): &(Sattr, Name),
) -> Result<Option<Obj>, nfsstat3> {
    let target = target.clone()?;
    // A symlink's mode means nothing on Linux; owner and times still apply.
    let rest = Sattr { mode: None, size: None, ..s.clone() };
    make_then_set(op, dir, name, acc, (0, &rest), || Ok(sys::symlink_at(&target, dir.raw(), name)?))
}

pub(super) fn make_node(op: &Op, dir: &Obj, name: &[u8], acc: &Access, what: &Mknod) -> Result<Option<Obj>, nfsstat3> {
    let (kind, s, dev) = match what {
        Mknod::Chr(s, ma, mi) => (libc::S_IFCHR, s, libc::makedev(*ma, *mi)),
        Mknod::Blk(s, ma, mi) => (libc::S_IFBLK, s, libc::makedev(*ma, *mi)),
        Mknod::Sock(s) => (libc::S_IFSOCK, s, 0),
        Mknod::Fifo(s) => (libc::S_IFIFO, s, 0),
        Mknod::BadType => return Err(nfsstat3::NFS3ERR_BADTYPE),
    };
    let mode = s.mode.unwrap_or(FILE_MODE_DEFAULT) & 0o7777;
    let rest = Sattr { size: None, ..s.clone() };
    // Devices need CAP_MKNOD, which the kernel drops with a non-zero
    // fsuid: a squashed or ordinary caller gets EPERM → NFS3ERR_PERM.
    make_then_set(op, dir, name, acc, (mode, &rest), || Ok(sys::mknod_at(dir.raw(), name, kind | mode, dev)?))
}

pub(super) fn dec_create(r: &mut Reader) -> Result<(Fh, Name, CreateHow), DecodeError> {
    let (fh, name) = xdr::dirop(r, NameUse::Create)?;
    Ok((fh, name, xdr::createhow(r)?))
}

pub(super) fn dec_mkdir(r: &mut Reader) -> Result<(Fh, Name, Sattr), DecodeError> {
    let (fh, name) = xdr::dirop(r, NameUse::Create)?;
    Ok((fh, name, xdr::sattr(r)?))
}

pub(super) fn dec_symlink(r: &mut Reader) -> Result<(Fh, Name, (Sattr, Name)), DecodeError> {
    let (fh, name) = xdr::dirop(r, NameUse::Create)?;
    let s = xdr::sattr(r)?;
    Ok((fh, name, (s, xdr::symlink_target(r)?)))
}

pub(super) fn dec_mknod(r: &mut Reader) -> Result<(Fh, Name, Mknod), DecodeError> {
    let (fh, name) = xdr::dirop(r, NameUse::Create)?;
    Ok((fh, name, xdr::mknod(r)?))
}

pub fn create(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_create, create_cheap, |op, a| created::<CREATE3resok, _>(op, a, make_file))
}

/// A create-type call in directory `fh` is cheap on an async export.
fn parent_async<A>(view: &View, (fh, _, _): &(Fh, Name, A)) -> bool {
    async_export(view, fh)
}

/// An UNCHECKED create with a size may truncate an existing file: not cheap.
fn create_cheap(view: &View, a: &(Fh, Name, CreateHow)) -> bool {
    match &a.2 {
        CreateHow::Unchecked(s) if s.size.is_some() => false,
        _ => parent_async(view, a),
    }
}

pub fn mkdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_mkdir, parent_async, |op, a| created::<MKDIR3resok, _>(op, a, make_dir))
}

pub fn symlink(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_symlink, parent_async, |op, a| created::<SYMLINK3resok, _>(op, a, make_symlink))
}

pub fn mknod(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_mknod, parent_async, |op, a| created::<MKNOD3resok, _>(op, a, make_node))
}

/// REMOVE and RMDIR: unlink `name` under the caller's ids.
#[allow(clippy::result_large_err)] // encoded at once by the caller, as `create_in`'s
fn unlink(op: &Op, fh: &Fh, name: Name, flags: i32) -> Result<wcc_data, (nfsstat3, wcc_data)> {
    let (mut dir, acc) = op.object(fh).map_err(|s| (s, no_wcc()))?;
    let pre = dir.st.clone();
    let r = (|| {
        let name = name?;
        acc.writable()?;
        if !dir.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        {
            let _user = acc.user()?;
            sys::unlink_at(dir.raw(), &name, flags)?;
        }
        sync_meta(&acc, &[&dir]);
        Ok(())
    })();
    let wcc = wcc_after(&mut dir, &pre);
    match r {
        Ok(()) => Ok(wcc),
        Err(s) => Err((s, wcc)),
    }
}

pub(super) fn dec_remove(r: &mut Reader) -> Result<(Fh, Name), DecodeError> {
    xdr::dirop(r, NameUse::Remove)
}

/// The REMOVE reply: `Ok(dir_wcc)` or the failure with its wcc.
pub(super) fn remove_reply(r: Result<wcc_data, (nfsstat3, wcc_data)>) -> Reply {
    let body = match r {
        Ok(dir_wcc) => reply::<_, REMOVE3resfail>(Ok(REMOVE3resok { dir_wcc })),
        Err((s, dir_wcc)) => reply::<REMOVE3resok, _>(Err((s, REMOVE3resfail { dir_wcc }))),
    };
    Reply::new(body)
}

/// The RMDIR reply: `Ok(dir_wcc)` or the failure with its wcc.
pub(super) fn rmdir_reply(r: Result<wcc_data, (nfsstat3, wcc_data)>) -> Reply {
    let body = match r {
        Ok(dir_wcc) => reply::<_, RMDIR3resfail>(Ok(RMDIR3resok { dir_wcc })),
        Err((s, dir_wcc)) => reply::<RMDIR3resok, _>(Err((s, RMDIR3resfail { dir_wcc }))),
    };
    Reply::new(body)
}

/// REMOVE once its arguments are decoded.
pub(super) fn do_remove(op: &Op, (fh, name): (Fh, Name)) -> Reply {
    remove_reply(unlink(op, &fh, name, 0))
}

/// RMDIR once its arguments are decoded.
pub(super) fn do_rmdir(op: &Op, (fh, name): (Fh, Name)) -> Reply {
    rmdir_reply(unlink(op, &fh, name, libc::AT_REMOVEDIR))
}

/// On an async export, removing a name that frees little runs on the runtime.
fn remove_cheap(view: &View, (fh, name): &(Fh, Name)) -> bool {
    async_export(view, fh) && frees_little(view, fh, name)
}

pub fn remove(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_remove, remove_cheap, do_remove)
}

pub fn rmdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_remove, remove_cheap, do_rmdir)
}
