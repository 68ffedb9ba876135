//! NFSv3 procedures that change a file: SETATTR, WRITE, COMMIT (RFC 1813 §3.3).

use std::sync::Arc;

use nfs3_types::nfs3::*;

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::attr::nfstime;

use super::attrs::{apply_sattr, sync_meta};
use super::common::{async_export, no_wcc, reply, run, run_args, run_cheap, wcc_after, Op};
use super::io;
use super::xdr::{self, Fh, Sattr};
use super::NfsCtx;

/// SETATTR's decoded arguments: the object, the attributes, the ctime guard.
pub(super) type Setattr = (Fh, Sattr, Option<nfstime3>);

/// The SETATTR reply: `Ok` or the failure, with the object's wcc.
pub(super) fn setattr_reply(r: Result<(), nfsstat3>, obj_wcc: wcc_data) -> Reply {
    Reply::new(match r {
        Ok(()) => reply::<_, SETATTR3resfail>(Ok(SETATTR3resok { obj_wcc })),
        Err(e) => reply::<SETATTR3resok, _>(Err((e, SETATTR3resfail { obj_wcc }))),
    })
}

/// SETATTR once its arguments are decoded.
pub(super) fn setattr_decoded(op: &Op, (fh, s, guard): Setattr) -> Reply {
    let (mut obj, acc) = match op.object(&fh) {
        Ok(v) => v,
        Err(e) => return setattr_reply(Err(e), no_wcc()),
    };
    let pre = obj.st.clone();
    let r = acc.writable().and_then(|()| match guard {
        Some(ctime) if ctime != nfstime(pre.ctime) => Err(nfsstat3::NFS3ERR_NOT_SYNC),
        _ => apply_sattr(&obj, &acc, &s),
    });
    if r.is_ok() {
        sync_meta(&acc, &[&obj]);
    }
    let wcc = wcc_after(&mut obj, &pre);
    setattr_reply(r, wcc)
}

pub fn setattr(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    // Without a size change: attributes only, cheap on an async export.
    run_cheap(ctx, call, args, xdr::setattr, |v, (fh, s, _)| s.size.is_none() && async_export(v, fh), setattr_decoded)
}

pub fn write(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
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
        let r = io::write_at(&obj, &acc, w.offset, data, w.stable, &op.ctx.fence);
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

pub fn commit(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, dec_commit, |op, (fh, _offset, _count)| {
        let (mut obj, acc) = match op.object(&fh) {
            Ok(v) => v,
            Err(e) => return Reply::new(reply::<COMMIT3resok, _>(Err((e, COMMIT3resfail { file_wcc: no_wcc() })))),
        };
        let pre = obj.st.clone();
        // The whole file is synced whatever the range: simpler and never less safe.
        let r = io::commit(&obj, &acc);
        let file_wcc = wcc_after(&mut obj, &pre);
        let body = match r {
            Ok(()) => reply::<_, COMMIT3resfail>(Ok(COMMIT3resok { file_wcc, verf: io::verifier(op, obj.export_id) })),
            Err(e) => reply::<COMMIT3resok, _>(Err((e, COMMIT3resfail { file_wcc }))),
        };
        Reply::new(body)
    })
}
