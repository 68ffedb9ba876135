//! NFSv3 READDIR and READDIRPLUS (RFC 1813 §3.3.16, §3.3.17).
//!
//! Cookies are getdents64 `d_off` values (see `vfs::dir`), so a listing
//! resumes exactly after the last entry the client saw. The cookie verifier is
//! always zero and not checked, as knfsd does. `.` and `..` are listed; `..` of
//! the export root reports the root itself. READDIRPLUS gives each entry's
//! attributes and handle from a statx and a name_to_handle_at relative to the
//! directory, without opening the entry, and replicates nothing. Both encode
//! their entries straight into the reply as they are listed (`ListBody`): no
//! per-entry allocation between the kernel's buffer and the reply's.

use std::sync::Arc;

use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Pack;

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::rpc::xdr::{DecodeError, Reader};
use crate::vfs::dir::{self, Take};
use crate::vfs::resolve::Obj;
use crate::vfs::sys::Stat;
use crate::vfs::{attr, dircache, fhandle, handle, sys};

use super::common::{obj_attr, reply, run, run_try, Access, Op, WouldBlock};
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

#[derive(Clone)]
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
fn dotdot_ino(op: &Op, dir: &Obj, name: &[u8], ino: u64) -> u64 {
    if name == b".." {
        if let Some(root) = op.vfs().export(dir.export_id) {
            if root.ino == dir.st.ino {
                return root.ino;
            }
        }
    }
    ino
}

/// A READDIR3resok or READDIRPLUS3resok body, XDR-encoded as it is listed:
/// status and directory attributes, the cookie verifier, then each entry
/// with its list marker; `finish` ends the list.
struct ListBody(Vec<u8>);

impl ListBody {
    fn start(dir: &Stat, export_id: u32, maxcount: u32) -> ListBody {
        let mut b = ListBody(Vec::with_capacity(maxcount.min(DIR_BYTES_MAX) as usize));
        b.u32(nfsstat3::NFS3_OK as u32);
        b.attrs(Some(dir), export_id);
        b.0.extend_from_slice(&cookieverf3::default().0);
        b
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn pad(&mut self, len: usize) {
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
    }

    fn opaque(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self.pad(b.len());
    }

    /// post_op_attr.
    fn attrs(&mut self, st: Option<&Stat>, export_id: u32) {
        match st {
            Some(st) => {
                self.u32(1);
                // Writing to a Vec cannot fail.
                let _ = attr::fattr(st, export_id).pack(&mut self.0);
            }
            None => self.u32(0),
        }
    }

    /// entry3's fields, after the list marker.
    fn entry(&mut self, ino: u64, name: &[u8], cookie: u64) {
        self.u32(1);
        self.u64(ino);
        self.opaque(name);
        self.u64(cookie);
    }

    fn finish(mut self, eof: bool) -> Vec<u8> {
        self.u32(0);
        self.u32(u32::from(eof));
        self.0
    }
}

/// How a listing ended: the finished body, or a status for the failure reply.
fn listed(body: ListBody, entries: u32, result: Result<bool, nfsstat3>) -> Result<Vec<u8>, nfsstat3> {
    match result {
        Ok(eof) if eof || entries > 0 => Ok(body.finish(eof)),
        Ok(_) => Err(nfsstat3::NFS3ERR_TOOSMALL),
        Err(s) => Err(s),
    }
}

pub fn readdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, dec_readdir, |op, a| {
        let (dir, acc) = match op.object(&a.fh) {
            Ok(v) => v,
            Err(s) => return Reply::new(reply::<READDIR3resok, _>(Err((s, READDIR3resfail::default())))),
        };
        let mut body = ListBody::start(&dir.st, dir.export_id, a.maxcount);
        let (mut used, mut entries) = (REPLY_FIXED_BYTES, 0u32);
        let result = open_dir(&dir, &acc).and_then(|fd| {
            dir::list(&fd, a.cookie, |e| {
                let need = entry_bytes(e.name);
                if used.saturating_add(need) > a.maxcount {
                    return Take::Full;
                }
                used += need;
                entries += 1;
                body.entry(dotdot_ino(op, &dir, e.name, e.ino), e.name, e.cookie);
                Take::More
            })
            .map_err(nfsstat3::from)
        });
        match listed(body, entries, result) {
            Ok(b) => Reply::new(b),
            Err(s) => {
                Reply::new(reply::<READDIR3resok, _>(Err((s, READDIR3resfail { dir_attributes: obj_attr(&dir) }))))
            }
        }
    })
}

/// A READDIRPLUS entry's handle: made now from the fs handle, or remembered
/// whole (`vfs::dircache`).
enum PlusFh<'a> {
    Made(fhandle::RawHandle),
    Kept(&'a [u8]),
}

impl PlusFh<'_> {
    fn len(&self) -> usize {
        match self {
            PlusFh::Made(fs) => handle::wire_len(fs.bytes().len()),
            PlusFh::Kept(b) => b.len(),
        }
    }
}

/// A READDIRPLUS entry's attributes and fs handle for real names (not
/// `.`/`..`), looked up under the caller's ids (a statx and a
/// name_to_handle_at relative to the directory, no open: see
/// `Vfs::child_attrs_raw`); a name that vanished meanwhile, or whose handle
/// does not fit, is listed without them.
fn plus_child(op: &Op, dir: &Obj, name: &[u8]) -> Option<(Stat, PlusFh<'static>)> {
    if name == b"." || name == b".." {
        return None;
    }
    let (st, fs) = op.vfs().child_attrs_raw(dir, name).ok()?;
    handle::fits(fs.kind(), fs.bytes().len()).then_some((st, PlusFh::Made(fs)))
}

/// `plus_child` for a remembered entry: only the statx (under the caller's
/// ids, so permissions are checked as without the cache), which must show
/// the remembered inode; else the handle is made afresh.
fn plus_kept<'a>(op: &Op, dir: &Obj, e: &'a dircache::Entry) -> Option<(Stat, PlusFh<'a>)> {
    let Some(fh) = e.fh.as_deref() else { return plus_child(op, dir, &e.name) };
    let st = op.vfs().child_stat(dir, &e.name).ok()?;
    if st.ino == e.ino {
        Some((st, PlusFh::Kept(fh)))
    } else {
        plus_child(op, dir, &e.name)
    }
}

/// A READDIRPLUS reply being filled: the body and the bounds on it.
struct PlusPage<'a> {
    op: &'a Op,
    dir: &'a Obj,
    args: &'a ListArgs,
    body: ListBody,
    used: u32,
    dir_used: u32,
    entries: u32,
}

impl PlusPage<'_> {
    /// The smallest the entry `name` can be fits (checked before any lookup).
    fn may_fit(&self, name: &[u8]) -> bool {
        let short = entry_bytes(name);
        let least = short + entryplus_extra_bytes(0);
        self.used.saturating_add(least) <= self.args.maxcount
            && self.dir_used.saturating_add(short) <= self.args.dircount
    }

    /// Add the entry if it fits exactly.
    fn put(&mut self, ino: u64, name: &[u8], cookie: u64, child: Option<(Stat, PlusFh<'_>)>) -> Take {
        let short = entry_bytes(name);
        let fh_bytes = child.as_ref().map_or(0, |(_, fh)| fh.len() as u32);
        let need = short + entryplus_extra_bytes(fh_bytes);
        if self.used.saturating_add(need) > self.args.maxcount {
            return Take::Full;
        }
        self.used += need;
        self.dir_used += short;
        self.entries += 1;
        let body = &mut self.body;
        body.entry(ino, name, cookie);
        match child {
            Some((st, fh)) => {
                body.attrs(Some(&st), self.dir.export_id);
                body.u32(1);
                body.u32(fh_bytes);
                let at = body.0.len();
                match fh {
                    PlusFh::Kept(b) => body.0.extend_from_slice(b),
                    PlusFh::Made(fs) => {
                        if self.op.vfs().encode_into(self.dir.export_id, &fs, &mut body.0).is_err() {
                            // Checked to fit: cannot happen; keep the XDR whole.
                            body.0.resize(at + fh_bytes as usize, 0);
                        }
                    }
                }
                body.pad(fh_bytes as usize);
            }
            None => {
                body.attrs(None, self.dir.export_id);
                body.u32(0);
            }
        }
        Take::More
    }
}

/// Where a remembered listing resumes at `cookie`, if it can.
type Kept = Option<(usize, Arc<dircache::Listing>)>;

fn resume(listing: Option<Arc<dircache::Listing>>, cookie: u64) -> Kept {
    listing.filter(|l| !l.too_big).and_then(|l| Some((l.resume_at(cookie)?, l)))
}

/// The entries from the page's cookie: from the directory's remembered
/// listing (`kept`) when there is one, else from the directory itself.
/// Returns whether the listing reached its end.
fn list_plus(page: &mut PlusPage<'_>, fd: &std::os::fd::OwnedFd, acc: &Access, kept: Kept) -> Result<bool, nfsstat3> {
    let (op, dir, cookie) = (page.op, page.dir, page.args.cookie);
    let _user = acc.user()?;
    if let Some((start, listing)) = kept {
        for e in listing.entries.iter().skip(start) {
            if !page.may_fit(&e.name) {
                return Ok(false);
            }
            let ino = dotdot_ino(op, dir, &e.name, e.ino);
            if page.put(ino, &e.name, e.cookie, plus_kept(op, dir, e)) == Take::Full {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    dir::list(fd, cookie, |e| {
        if !page.may_fit(e.name) {
            return Take::Full;
        }
        let child = plus_child(op, dir, e.name);
        page.put(dotdot_ino(op, dir, e.name, e.ino), e.name, e.cookie, child)
    })
    .map_err(nfsstat3::from)
}

/// READDIRPLUS. A page of a remembered listing (`vfs::dircache`: a statx
/// per entry, of inodes the kernel has at hand) runs on the runtime thread;
/// any other reads the directory on a blocking thread, filling the listing
/// at a listing's start.
pub fn readdirplus(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run_try(ctx, call, args, dec_readdirplus, |op, a, may_block| {
        let (dir, acc) = match op.object(&a.fh) {
            Ok(v) => v,
            Err(s) => return Ok(Reply::new(reply::<READDIRPLUS3resok, _>(Err((s, READDIRPLUS3resfail::default()))))),
        };
        let cache = op.vfs().dircache();
        let remembered = cache.get(&dir);
        // A directory remembered as too big is not read whole again.
        let known = remembered.is_some();
        let kept = resume(remembered, a.cookie);
        if kept.is_none() && !may_block {
            return Err(WouldBlock);
        }
        let mut page = PlusPage {
            op,
            dir: &dir,
            args: &a,
            body: ListBody::start(&dir.st, dir.export_id, a.maxcount),
            used: REPLY_FIXED_BYTES,
            dir_used: 0,
            entries: 0,
        };
        let result = open_dir(&dir, &acc).and_then(|fd| {
            // Filled with the server's own ids (open_dir switched back).
            let fill = a.cookie == 0 && !known;
            let kept = kept.or_else(|| resume(fill.then(|| cache.fill(op.vfs(), &dir, &fd, dircache::now_ns()))?, 0));
            list_plus(&mut page, &fd, &acc, kept)
        });
        let PlusPage { body, entries, .. } = page;
        Ok(match listed(body, entries, result) {
            Ok(b) => Reply::new(b),
            Err(s) => Reply::new(reply::<READDIRPLUS3resok, _>(Err((
                s,
                READDIRPLUS3resfail { dir_attributes: obj_attr(&dir) },
            )))),
        })
    })
}

#[cfg(test)]
mod tests {
    use nfs3_types::xdr_codec::{List, Opaque};

    use super::*;

    fn st(ino: u64) -> Stat {
        Stat { ino, mode: 0o100640, nlink: 1, size: ino * 3, mtime: (5, 6), ..Default::default() }
    }

    #[test]
    fn list_bodies_encode_as_the_generic_encoder_does() {
        let names: [&[u8]; 4] = [b".", b"a", b"abcd", b"seven77"];
        let fh = |i: usize| vec![i as u8; 14 + i];
        // READDIRPLUS: entries with and without attributes and handles.
        let mut body = ListBody::start(&st(2), 9, 4096);
        let mut expect = Vec::new();
        for (i, name) in names.iter().enumerate() {
            body.entry(10 + i as u64, name, 100 + i as u64);
            let with = i % 2 == 1;
            if with {
                body.attrs(Some(&st(10 + i as u64)), 9);
                body.u32(1);
                body.opaque(&fh(i));
            } else {
                body.attrs(None, 9);
                body.u32(0);
            }
            expect.push(entryplus3 {
                fileid: 10 + i as u64,
                name: filename3(Opaque::owned(name.to_vec())),
                cookie: 100 + i as u64,
                name_attributes: if with {
                    Nfs3Option::Some(attr::fattr(&st(10 + i as u64), 9))
                } else {
                    Nfs3Option::None
                },
                name_handle: if with {
                    Nfs3Option::Some(nfs_fh3 { data: Opaque::owned(fh(i)) })
                } else {
                    Nfs3Option::None
                },
            });
        }
        let generic = reply::<_, READDIRPLUS3resfail>(Ok(READDIRPLUS3resok {
            dir_attributes: Nfs3Option::Some(attr::fattr(&st(2), 9)),
            cookieverf: cookieverf3::default(),
            reply: dirlistplus3 { entries: List(expect), eof: true },
        }));
        assert_eq!(body.finish(true), generic);
        // READDIR, not at the end.
        let mut body = ListBody::start(&st(2), 9, 4096);
        let mut expect = Vec::new();
        for (i, name) in names.iter().enumerate() {
            body.entry(10 + i as u64, name, 100 + i as u64);
            expect.push(entry3 {
                fileid: 10 + i as u64,
                name: filename3(Opaque::owned(name.to_vec())),
                cookie: 100 + i as u64,
            });
        }
        let generic = reply::<_, READDIR3resfail>(Ok(READDIR3resok {
            dir_attributes: Nfs3Option::Some(attr::fattr(&st(2), 9)),
            cookieverf: cookieverf3::default(),
            reply: dirlist3 { entries: List(expect), eof: false },
        }));
        assert_eq!(body.finish(false), generic);
    }

    #[test]
    fn the_size_bounds_match_the_encoding() {
        // One entry's bytes as counted for maxcount are the bytes it adds.
        for (name, fh) in [(&b"x"[..], 22u32), (b"abcd", 30), (b"", 0)] {
            let mut body = ListBody(Vec::new());
            body.entry(1, name, 2);
            body.attrs(Some(&st(1)), 1);
            body.u32(1);
            body.opaque(&vec![0; fh as usize]);
            assert_eq!(body.0.len() as u32, entry_bytes(name) + entryplus_extra_bytes(fh));
        }
        let body = ListBody::start(&st(1), 1, 0).finish(true);
        assert_eq!(body.len() as u32, REPLY_FIXED_BYTES);
    }
}
