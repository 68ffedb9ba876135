//! NFSv3 RENAME and LINK (RFC 1813 §3.3.14, §3.3.15). Handles carry the
//! filesystem's own object handles, so a renamed object and everything below
//! it keep their handles with nothing to record, and any name of a hard-linked
//! file reaches the same handle.

use std::sync::Arc;

use nfs3_types::nfs3::*;

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::sys;

use super::attrs::sync_meta;
use super::common::{async_export, frees_little, no_wcc, obj_attr, reply, run_cheap, wcc_after, Op};
use super::xdr::{self, Fh, Name, NameUse};
use super::NfsCtx;
use crate::live::View;

pub(super) type Rename = (Fh, Name, Fh, Name);

pub(super) fn dec_rename(r: &mut Reader) -> Result<Rename, DecodeError> {
    let (f, fname) = xdr::dirop(r, NameUse::Remove)?;
    let (t, tname) = xdr::dirop(r, NameUse::Remove)?;
    Ok((f, fname, t, tname))
}

fn do_rename(op: &Op, (ffh, fname, tfh, tname): Rename) -> (Result<(), nfsstat3>, wcc_data, wcc_data) {
    let (mut from, acc) = match op.object(&ffh) {
        Ok(v) => v,
        Err(s) => return (Err(s), no_wcc(), no_wcc()),
    };
    let (mut to, _) = match op.object(&tfh) {
        Ok(v) => v,
        Err(s) => {
            let fw = wcc_data { before: Nfs3Option::None, after: obj_attr(&from) };
            return (Err(s), fw, no_wcc());
        }
    };
    let (fpre, tpre) = (from.st.clone(), to.st.clone());
    let r = (|| {
        let (fname, tname) = (fname?, tname?);
        acc.writable()?;
        if from.export_id != to.export_id {
            return Err(nfsstat3::NFS3ERR_XDEV);
        }
        if !from.st.is_dir() || !to.st.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        {
            let _user = acc.user()?;
            sys::rename_at(from.raw(), &fname, to.raw(), &tname)?;
        }
        sync_meta(&acc, &[&from, &to]);
        Ok(())
    })();
    let fw = wcc_after(&mut from, &fpre);
    let tw = wcc_after(&mut to, &tpre);
    (r, fw, tw)
}

/// The RENAME reply: `Ok` or the failure, with both directories' wcc.
pub(super) fn rename_reply(r: Result<(), nfsstat3>, fromdir_wcc: wcc_data, todir_wcc: wcc_data) -> Reply {
    let body = match r {
        Ok(()) => reply::<_, RENAME3resfail>(Ok(RENAME3resok { fromdir_wcc, todir_wcc })),
        Err(s) => reply::<RENAME3resok, _>(Err((s, RENAME3resfail { fromdir_wcc, todir_wcc }))),
    };
    Reply::new(body)
}

/// RENAME once its arguments are decoded.
pub(super) fn rename_decoded(op: &Op, a: Rename) -> Reply {
    let (r, fromdir_wcc, todir_wcc) = do_rename(op, a);
    rename_reply(r, fromdir_wcc, todir_wcc)
}

/// On an async export, a rename that replaces nothing large runs on the runtime.
fn rename_cheap(view: &View, (ffh, _, tfh, tname): &Rename) -> bool {
    async_export(view, ffh) && async_export(view, tfh) && frees_little(view, tfh, tname)
}

pub fn rename(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_rename, rename_cheap, rename_decoded)
}

pub(super) type Link = (Fh, Fh, Name);

pub(super) fn dec_link(r: &mut Reader) -> Result<Link, DecodeError> {
    let f = xdr::fh(r)?;
    let (d, name) = xdr::dirop(r, NameUse::Create)?;
    Ok((f, d, name))
}

/// The LINK reply: `Ok` or the failure, with the file's attributes and the
/// directory's wcc.
pub(super) fn link_reply(r: Result<(), nfsstat3>, file_attributes: post_op_attr, linkdir_wcc: wcc_data) -> Reply {
    Reply::new(match r {
        Ok(()) => reply::<_, LINK3resfail>(Ok(LINK3resok { file_attributes, linkdir_wcc })),
        Err(s) => reply::<LINK3resok, _>(Err((s, LINK3resfail { file_attributes, linkdir_wcc }))),
    })
}

/// LINK once its arguments are decoded.
pub(super) fn link_decoded(op: &Op, (ffh, dfh, name): Link) -> Reply {
    let (mut file, acc) = match op.object(&ffh) {
        Ok(v) => v,
        Err(s) => return link_reply(Err(s), Nfs3Option::None, no_wcc()),
    };
    let (mut dir, _) = match op.object(&dfh) {
        Ok(v) => v,
        Err(s) => return link_reply(Err(s), obj_attr(&file), no_wcc()),
    };
    let pre = dir.st.clone();
    let r = (|| {
        let name = name?;
        acc.writable()?;
        if file.export_id != dir.export_id {
            return Err(nfsstat3::NFS3ERR_XDEV);
        }
        if file.st.is_dir() {
            // Linux refuses hard links to directories (EPERM); RFC 1813 allows ISDIR.
            return Err(nfsstat3::NFS3ERR_ISDIR);
        }
        let _user = acc.user()?;
        sys::link_fd(&file.fd, dir.raw(), &name).map_err(nfsstat3::from)
    })();
    if r.is_ok() {
        sync_meta(&acc, &[&dir]);
    }
    let linkdir_wcc = wcc_after(&mut dir, &pre);
    let _ = file.restat();
    link_reply(r, obj_attr(&file), linkdir_wcc)
}

pub fn link(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_cheap(ctx, call, args, dec_link, |v, (_, dir, _)| async_export(v, dir), link_decoded)
}
