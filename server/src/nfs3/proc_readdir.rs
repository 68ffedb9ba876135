//! NFSv3 READDIR and READDIRPLUS (RFC 1813 §3.3.16, §3.3.17).
//!
//! Cookies are getdents64 `d_off` values (see `vfs::dir`), so a listing
//! resumes exactly after the last entry the client saw. The cookie verifier is
//! always zero and not checked, as knfsd does. `.` and `..` are listed; `..` of
//! the export root reports the root itself. READDIRPLUS gives each entry's
//! attributes and handle from a statx and a name_to_handle_at relative to the
//! directory, without opening the entry, and replicates nothing.

use std::sync::Arc;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{List, Opaque};

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::dir::{self, DirEntry, Take};
use crate::vfs::resolve::Obj;
use crate::vfs::{attr, sys};

use super::common::{obj_attr, reply, run, Access, Op};
use super::xdr::{self, Fh, DIR_BYTES_MAX};
use super::NfsCtx;

/// XDR bytes of a reply around the entries: status, post_op_attr (1 + fattr3),
/// cookie verifier, end-of-list marker, eof flag.
const REPLY_FIXED_BYTES: u32 = 4 + (4 + FATTR_BYTES) + 8 + 4 + 4;
const FATTR_BYTES: u32 = 84;
/// entry3 without its name: list marker, fileid, name length, cookie.
const ENTRY_FIXED_BYTES: u32 = 4 + 8 + 4 + 8;
/// entryplus3's extra: post_op_attr and post_op_fh3 with a handle of `fh_bytes`.
const fn entryplus_extra_bytes(fh_bytes: u32) -> u32 {
    (4 + FATTR_BYTES) + (4 + 4 + pad4(fh_bytes))
}

const fn pad4(n: u32) -> u32 {
    (n + 3) & !3
}

fn entry_bytes(name: &[u8]) -> u32 {
    ENTRY_FIXED_BYTES + pad4(name.len() as u32)
}

struct ListArgs {
    fh: Fh,
    cookie: u64,
    dircount: u32,
    maxcount: u32,
}

fn dec_readdir(r: &mut Reader) -> Result<ListArgs, DecodeError> {
    let fh = xdr::fh(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed(8)?;
    let count = xdr::count(r, DIR_BYTES_MAX)?;
    Ok(ListArgs { fh, cookie, dircount: count, maxcount: count })
}

fn dec_readdirplus(r: &mut Reader) -> Result<ListArgs, DecodeError> {
    let fh = xdr::fh(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed(8)?;
    let dircount = xdr::count(r, DIR_BYTES_MAX)?;
    let maxcount = xdr::count(r, DIR_BYTES_MAX)?;
    Ok(ListArgs { fh, cookie, dircount, maxcount })
}

/// Open the directory for listing under the caller's ids (read permission).
fn open_dir(dir: &Obj, acc: &Access) -> Result<std::os::fd::OwnedFd, nfsstat3> {
    if !dir.st.is_dir() {
        return Err(nfsstat3::NFS3ERR_NOTDIR);
    }
    let _user = acc.user()?;
    sys::reopen(&dir.fd, libc::O_RDONLY | libc::O_DIRECTORY).map_err(nfsstat3::from)
}

/// The export root's `..` is the root itself: nothing above it is shown.
fn fix_dotdot(op: &Op, dir: &Obj, e: &mut DirEntry) {
    if e.name == b".." {
        if let Some(root) = op.vfs().export(dir.export_id) {
            if root.ino == dir.st.ino {
                e.ino = root.ino;
            }
        }
    }
}

pub fn readdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, dec_readdir, |op, a| {
        let (dir, acc) = match op.object(&a.fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<READDIR3resok, _>(Err((s, READDIR3resfail::default())))),
        };
        let mut entries: Vec<entry3<'static>> = Vec::new();
        let mut used = REPLY_FIXED_BYTES;
        let listed = open_dir(&dir, &acc).and_then(|fd| {
            dir::list(&fd, a.cookie, |mut e| {
                let need = entry_bytes(&e.name);
                if used.saturating_add(need) > a.maxcount {
                    return Take::Full;
                }
                used += need;
                fix_dotdot(op, &dir, &mut e);
                entries.push(entry3 { fileid: e.ino, name: filename3(Opaque::owned(e.name)), cookie: e.cookie });
                Take::More
            })
            .map_err(nfsstat3::from)
        });
        let body = match listed {
            Ok(eof) if eof || !entries.is_empty() => reply::<_, READDIR3resfail>(Ok(READDIR3resok {
                dir_attributes: obj_attr(&dir),
                cookieverf: cookieverf3::default(),
                reply: dirlist3 { entries: List(entries), eof },
            })),
            Ok(_) => reply::<READDIR3resok, _>(Err((
                nfsstat3::NFS3ERR_TOOSMALL,
                READDIR3resfail { dir_attributes: obj_attr(&dir) },
            ))),
            Err(s) => reply::<READDIR3resok, _>(Err((s, READDIR3resfail { dir_attributes: obj_attr(&dir) }))),
        };
        Reply::new(body)
    })
}

/// One READDIRPLUS entry: attributes and handle for real names (not `.`/`..`),
/// looked up under the caller's ids (a statx relative to the directory, no
/// open: see `Vfs::child_attrs`); a name that vanished meanwhile is listed
/// without them. Also its XDR size.
fn plus_entry(op: &Op, dir: &Obj, e: DirEntry) -> (entryplus3<'static>, u32) {
    let dots = e.name == b"." || e.name == b"..";
    let child = if dots { None } else { op.vfs().child_attrs(dir, &e.name).ok() };
    let child = child.and_then(|(st, fs)| Some((st, op.vfs().encode(dir.export_id, fs).ok()?)));
    let bytes = entry_bytes(&e.name) + entryplus_extra_bytes(child.as_ref().map_or(0, |(_, fh)| fh.len() as u32));
    let (attrs, fh) = match child {
        Some((st, fh)) => {
            (Nfs3Option::Some(attr::fattr(&st, dir.export_id)), Nfs3Option::Some(nfs_fh3 { data: Opaque::owned(fh) }))
        }
        None => (Nfs3Option::None, Nfs3Option::None),
    };
    let entry = entryplus3 {
        fileid: e.ino,
        name: filename3(Opaque::owned(e.name)),
        cookie: e.cookie,
        name_attributes: attrs,
        name_handle: fh,
    };
    (entry, bytes)
}

pub fn readdirplus(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, dec_readdirplus, |op, a| {
        let (dir, acc) = match op.object(&a.fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<READDIRPLUS3resok, _>(Err((s, READDIRPLUS3resfail::default())))),
        };
        let mut entries: Vec<entryplus3<'static>> = Vec::new();
        let (mut used, mut dir_used) = (REPLY_FIXED_BYTES, 0u32);
        let listed = open_dir(&dir, &acc).and_then(|fd| {
            let _user = acc.user()?;
            dir::list(&fd, a.cookie, |mut e| {
                let short = entry_bytes(&e.name);
                // Cheap check first (the smallest an entry can be), then the exact size.
                let least = short + entryplus_extra_bytes(0);
                if used.saturating_add(least) > a.maxcount || dir_used.saturating_add(short) > a.dircount {
                    return Take::Full;
                }
                fix_dotdot(op, &dir, &mut e);
                let (entry, need) = plus_entry(op, &dir, e);
                if used.saturating_add(need) > a.maxcount {
                    return Take::Full;
                }
                used += need;
                dir_used += short;
                entries.push(entry);
                Take::More
            })
            .map_err(nfsstat3::from)
        });
        let body = match listed {
            Ok(eof) if eof || !entries.is_empty() => reply::<_, READDIRPLUS3resfail>(Ok(READDIRPLUS3resok {
                dir_attributes: obj_attr(&dir),
                cookieverf: cookieverf3::default(),
                reply: dirlistplus3 { entries: List(entries), eof },
            })),
            Ok(_) => reply::<READDIRPLUS3resok, _>(Err((
                nfsstat3::NFS3ERR_TOOSMALL,
                READDIRPLUS3resfail { dir_attributes: obj_attr(&dir) },
            ))),
            Err(s) => reply::<READDIRPLUS3resok, _>(Err((s, READDIRPLUS3resfail { dir_attributes: obj_attr(&dir) }))),
        };
        Reply::new(body)
    })
}
