//! NFSv3 procedures that read: NULL, GETATTR, LOOKUP, ACCESS, READLINK, READ,
//! FSSTAT, FSINFO, PATHCONF (RFC 1813 §3.3).

use std::sync::Arc;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Void};

use crate::rpc::program::{Args, Call, ProcError, ProcFuture, Reply};
use crate::rpc::xdr::Reader;
use crate::vfs::{attr, sys};

use super::common::{obj_attr, reply, run, run_inline, run_try, WouldBlock};
use super::xdr::{self, Fh, Name, NameUse, DIR_BYTES_MAX, IO_BYTES_MAX, NAME_BYTES_MAX, PATH_BYTES_MAX};
use super::NfsCtx;

/// FSINFO rtmult/wtmult: the block size I/O should be a multiple of.
const IO_MULTIPLE_BYTES: u32 = 4096;
/// Largest file offset served (Linux MAX_LFS_FILESIZE).
const FILE_BYTES_MAX: u64 = i64::MAX as u64;
/// Linux ext4's link limit, when fpathconf cannot say.
const LINKS_DEFAULT_MAX: u32 = 65000;

pub fn null(_ctx: Arc<NfsCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        if args.is_empty() {
            Ok(Reply::new(Vec::new()))
        } else {
            Err(ProcError::GarbageArgs)
        }
    })
}

pub fn getattr(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_inline(ctx, call, args, xdr::fh, |op, fh| {
        let r = op.attrs(&fh).map(|obj_attributes| GETATTR3resok { obj_attributes });
        Reply::new(reply(r.map_err(|s| (s, Void))))
    })
}

fn dec_lookup(r: &mut Reader) -> Result<(Fh, Name), crate::rpc::xdr::DecodeError> {
    xdr::dirop(r, NameUse::Lookup)
}

pub fn lookup(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_inline(ctx, call, args, dec_lookup, |op, (fh, name)| {
        let (dir, access) = match op.object(&fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<LOOKUP3resok, _>(Err((s, LOOKUP3resfail::default())))),
        };
        let fail = |s| reply::<LOOKUP3resok, _>(Err((s, LOOKUP3resfail { dir_attributes: obj_attr(&dir) })));
        let name = match name {
            Ok(n) => n,
            Err(s) => return Reply::new(fail(s)),
        };
        let child = {
            let _user = match access.user() {
                Ok(g) => g,
                Err(s) => return Reply::new(fail(s)),
            };
            // Attributes and fs handle relative to the directory; the child
            // itself is not opened (see `Vfs::child_attrs`).
            op.vfs().child_attrs(&dir, &name)
        };
        match child.and_then(|(st, fs)| Ok((st, op.vfs().encode(dir.export_id, fs)?))) {
            Err(s) => Reply::new(fail(s)),
            Ok((st, fh)) => {
                let ok = LOOKUP3resok {
                    object: nfs_fh3 { data: Opaque::owned(fh) },
                    obj_attributes: Nfs3Option::Some(attr::fattr(&st, dir.export_id)),
                    dir_attributes: obj_attr(&dir),
                };
                Reply::new(reply::<_, LOOKUP3resfail>(Ok(ok)))
            }
        }
    })
}

fn dec_access(r: &mut Reader) -> Result<(Fh, u32), crate::rpc::xdr::DecodeError> {
    Ok((xdr::fh(r)?, r.u32()?))
}

/// ACCESS bits, as knfsd's nfs3_regaccess / nfs3_diraccess tables, checked by
/// the kernel under the caller's fs credentials (faccessat2 AT_EACCESS).
pub fn access(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_inline(ctx, call, args, dec_access, |op, (fh, want)| {
        let (obj, acc) = match op.object(&fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<ACCESS3resok, _>(Err((s, ACCESS3resfail::default())))),
        };
        let granted = {
            let _user = match acc.user() {
                Ok(g) => g,
                Err(s) => {
                    let f = ACCESS3resfail { obj_attributes: obj_attr(&obj) };
                    return Reply::new(reply::<ACCESS3resok, _>(Err((s, f))));
                }
            };
            let can = |mode| sys::access_fd(&obj.fd, mode);
            let writable = !acc.opts.read_only;
            let mut g = 0;
            if obj.st.is_dir() {
                let x = can(libc::X_OK);
                let wx = writable && x && can(libc::W_OK);
                g |= if can(libc::R_OK) { ACCESS3_READ } else { 0 };
                g |= if x { ACCESS3_LOOKUP } else { 0 };
                g |= if wx { ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE } else { 0 };
            } else {
                let w = writable && can(libc::W_OK);
                g |= if can(libc::R_OK) { ACCESS3_READ } else { 0 };
                g |= if w { ACCESS3_MODIFY | ACCESS3_EXTEND } else { 0 };
                g |= if can(libc::X_OK) { ACCESS3_EXECUTE } else { 0 };
            }
            g
        };
        let ok = ACCESS3resok { obj_attributes: obj_attr(&obj), access: want & granted };
        Reply::new(reply::<_, ACCESS3resfail>(Ok(ok)))
    })
}

pub fn readlink(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, xdr::fh, |op, fh| {
        let (obj, _) = match op.object(&fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<READLINK3resok, _>(Err((s, READLINK3resfail::default())))),
        };
        let r = if obj.st.is_lnk() {
            sys::readlink_fd(&obj.fd, PATH_BYTES_MAX).map_err(nfsstat3::from)
        } else {
            Err(nfsstat3::NFS3ERR_INVAL)
        };
        let body = match r {
            Ok(target) => reply::<_, READLINK3resfail>(Ok(READLINK3resok {
                symlink_attributes: obj_attr(&obj),
                data: nfspath3(Opaque::owned(target)),
            })),
            Err(s) => reply::<READLINK3resok, _>(Err((s, READLINK3resfail { symlink_attributes: obj_attr(&obj) }))),
        };
        Reply::new(body)
    })
}

fn dec_read(r: &mut Reader) -> Result<(Fh, u64, u32), crate::rpc::xdr::DecodeError> {
    Ok((xdr::fh(r)?, r.u64()?, xdr::count(r, IO_BYTES_MAX)?))
}

/// XDR bytes of READ3resok before the data: status, post_op_attr with
/// attributes, count, eof, data length.
const READ_OK_HEAD_BYTES: usize = 4 + (4 + FATTR_BYTES) + 4 + 4 + 4;
const FATTR_BYTES: usize = 84;
/// XDR pads opaque data to this multiple.
const XDR_UNIT_BYTES: usize = 4;

pub fn read(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_try(ctx, call, args, dec_read, |op, (fh, offset, count), may_block| {
        let (mut obj, acc) = match op.object(&fh) {
            Ok(v) => v,
            Err(s) => return Ok(Reply::new(reply::<READ3resok, _>(Err((s, READ3resfail::default()))))),
        };
        // The data is read straight into the reply body, after room for the
        // fixed-size head, which is encoded once the count and attributes are
        // known: the payload is written once.
        let mut body = Vec::with_capacity(READ_OK_HEAD_BYTES + count as usize + XDR_UNIT_BYTES);
        body.resize(READ_OK_HEAD_BYTES, 0);
        let r = super::io::read_into(&obj, &acc, offset, count, &mut body, !may_block);
        if r == Err(nfsstat3::NFS3ERR_JUKEBOX) && !may_block {
            return Err(WouldBlock);
        }
        let _ = obj.restat();
        let body = match r {
            Ok(n) => {
                let eof = n < count as usize || offset.saturating_add(n as u64) >= obj.st.size;
                read_ok_body(body, obj_attr(&obj), n, eof)
            }
            Err(s) => reply::<READ3resok, _>(Err((s, READ3resfail { file_attributes: obj_attr(&obj) }))),
        };
        Ok(Reply::new(body))
    })
}

/// Complete a READ3resok body whose data (`n` bytes) already follows
/// `READ_OK_HEAD_BYTES` of room: encode the head there and pad the data.
fn read_ok_body(mut body: Vec<u8>, attrs: post_op_attr, n: usize, eof: bool) -> Vec<u8> {
    let head = reply::<_, READ3resfail>(Ok(READ3resok {
        file_attributes: attrs.clone(),
        count: n as u32,
        eof,
        data: Opaque::borrowed(&[]),
    }));
    let len_at = READ_OK_HEAD_BYTES - XDR_UNIT_BYTES;
    match (head.get(..len_at), body.get_mut(..READ_OK_HEAD_BYTES)) {
        (Some(fixed), Some(room)) if head.len() == READ_OK_HEAD_BYTES => {
            let (room_fixed, room_len) = room.split_at_mut(len_at);
            room_fixed.copy_from_slice(fixed);
            room_len.copy_from_slice(&(n as u32).to_be_bytes());
            body.resize(body.len() + (XDR_UNIT_BYTES - n % XDR_UNIT_BYTES) % XDR_UNIT_BYTES, 0);
            body
        }
        // Not the expected layout (cannot happen with attributes present):
        // encode the usual way.
        _ => {
            let data = body.get(READ_OK_HEAD_BYTES..).unwrap_or_default().to_vec();
            reply::<_, READ3resfail>(Ok(READ3resok {
                file_attributes: attrs,
                count: n as u32,
                eof,
                data: Opaque::owned(data),
            }))
        }
    }
}

// statvfs counts are u32 on some targets and u64 on others.
#[allow(clippy::useless_conversion)]
pub fn fsstat(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, xdr::fh, |op, fh| {
        let (obj, _) = match op.object(&fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<FSSTAT3resok, _>(Err((s, FSSTAT3resfail::default())))),
        };
        let body = match sys::statvfs_fd(&obj.fd) {
            Ok(sv) => {
                let frsize = u64::from(sv.f_frsize);
                reply::<_, FSSTAT3resfail>(Ok(FSSTAT3resok {
                    obj_attributes: obj_attr(&obj),
                    tbytes: u64::from(sv.f_blocks).saturating_mul(frsize),
                    fbytes: u64::from(sv.f_bfree).saturating_mul(frsize),
                    abytes: u64::from(sv.f_bavail).saturating_mul(frsize),
                    tfiles: u64::from(sv.f_files),
                    ffiles: u64::from(sv.f_ffree),
                    afiles: u64::from(sv.f_favail),
                    invarsec: 0,
                }))
            }
            Err(e) => reply::<FSSTAT3resok, _>(Err((e.into(), FSSTAT3resfail { obj_attributes: obj_attr(&obj) }))),
        };
        Reply::new(body)
    })
}

pub fn fsinfo(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, xdr::fh, |op, fh| {
        let obj = match op.object(&fh) {
            Ok((o, _)) => o,
            Err(s) => return Reply::new(reply::<FSINFO3resok, _>(Err((s, FSINFO3resfail::default())))),
        };
        let ok = FSINFO3resok {
            obj_attributes: obj_attr(&obj),
            rtmax: IO_BYTES_MAX,
            rtpref: IO_BYTES_MAX,
            rtmult: IO_MULTIPLE_BYTES,
            wtmax: IO_BYTES_MAX,
            wtpref: IO_BYTES_MAX,
            wtmult: IO_MULTIPLE_BYTES,
            dtpref: DIR_BYTES_MAX,
            maxfilesize: FILE_BYTES_MAX,
            time_delta: nfstime3 { seconds: 0, nseconds: 1 },
            properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
        };
        Reply::new(reply::<_, FSINFO3resfail>(Ok(ok)))
    })
}

pub fn pathconf(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, xdr::fh, |op, fh| {
        let obj = match op.object(&fh) {
            Ok((o, _)) => o,
            Err(s) => return Reply::new(reply::<PATHCONF3resok, _>(Err((s, PATHCONF3resfail::default())))),
        };
        let name_max = sys::statvfs_fd(&obj.fd)
            .map(|sv| u32::try_from(sv.f_namemax).unwrap_or(u32::MAX).min(NAME_BYTES_MAX as u32))
            .unwrap_or(NAME_BYTES_MAX as u32);
        // SAFETY: fpathconf on a valid fd; it only reads.
        let links = unsafe { libc::fpathconf(obj.raw(), libc::_PC_LINK_MAX) };
        let ok = PATHCONF3resok {
            obj_attributes: obj_attr(&obj),
            linkmax: u32::try_from(links).ok().filter(|l| *l > 0).unwrap_or(LINKS_DEFAULT_MAX),
            name_max,
            no_trunc: true,
            chown_restricted: true,
            case_insensitive: false,
            case_preserving: true,
        };
        Reply::new(reply::<_, PATHCONF3resfail>(Ok(ok)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_body_built_in_place_matches_the_generic_encoding() {
        let st = sys::Stat { size: 9, ino: 7, mode: 0o100644, ..Default::default() };
        let attrs = Nfs3Option::Some(attr::fattr(&st, 3));
        for n in [0usize, 1, 3, 4, 5, 4096] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut body = vec![0u8; READ_OK_HEAD_BYTES];
            body.extend_from_slice(&data);
            let built = read_ok_body(body, attrs.clone(), n, n < 5);
            let generic = reply::<_, READ3resfail>(Ok(READ3resok {
                file_attributes: attrs.clone(),
                count: n as u32,
                eof: n < 5,
                data: Opaque::owned(data),
            }));
            assert_eq!(built, generic, "n = {n}");
        }
    }
}
