//! Answers for a retransmission that the duplicate-request cache knows only
//! as an intent: the active recorded the call's intent, ran it (or not), and
//! died before recording the reply. Each function works out from the disk
//! whether the original's change is there and, if so, answers as the original
//! did (NFS3_OK, with the object's handle and attributes where the procedure
//! returns them), never running the call twice; if not, the original never
//! ran, and running it now is running it once. Dispatch calls these through
//! `Proc::recover` and records their reply as usual; nothing here knows the
//! cache.
//!
//! What counts as done:
//! - CREATE: the name is a regular file (EXCLUSIVE: carrying the verifier as
//!   `create_exclusive` stores it, or just made by the original, which died
//!   before storing it: an empty file with the mode it is made with, one
//!   link, changed no earlier than the intent was recorded; the verifier is
//!   stored now); MKDIR, SYMLINK (with the same target),
//!   MKNOD: the name has the type the call makes.
//! - LINK: the new name is the source object (the filesystem gives it the
//!   same handle).
//! - REMOVE, RMDIR: the name is gone.
//! - RENAME: the source name is gone and the target name exists.
//! - SETATTR with a guard: the guard no longer matches the ctime and every
//!   attribute that can be compared (all but times set to the server's
//!   clock) has the requested value. An unguarded SETATTR runs again: setting
//!   the same attributes twice is harmless.
//!
//! Weak cache consistency data in a recovered reply has no "before" part:
//! it is not known any more. Handles need no recovery: they are the
//! filesystem's own, so a removed object's handle is stale by itself.

use std::sync::Arc;

use nfs3_types::nfs3::*;

use crate::rpc::program::{Args, Call, ProcFuture, Reply};
use crate::vfs::attr::nfstime;
use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, Stat};

use super::common::{obj_attr, run, Access, Op};
use super::proc_dir::{self, CreatedRes};
use super::proc_link::{self, Link, Rename};
use super::proc_write::{self, Setattr};
use super::xdr::{CreateHow, Fh, Mknod, Name, Sattr, SetTime, PATH_BYTES_MAX};
use super::NfsCtx;

/// wcc_data after a recovered call: the "before" attributes are unknown.
fn wcc_now(obj: &Obj) -> wcc_data {
    wcc_data { before: Nfs3Option::None, after: obj_attr(obj) }
}

/// The directory `fh` and the caller's rights, if the caller may still write
/// there (a refused original touched nothing, so it is simply run again).
fn writable_dir(op: &Op, fh: &Fh) -> Option<(Obj, Access)> {
    let (dir, acc) = op.object(fh).ok()?;
    acc.writable().ok()?;
    dir.st.is_dir().then_some((dir, acc))
}

/// `name` in `dir`, looked up under the caller's ids.
fn child(op: &Op, dir: &Obj, acc: &Access, name: &[u8]) -> Result<Obj, nfsstat3> {
    let _user = acc.user()?;
    op.vfs().child(dir, name)
}

/// Is `name` gone from `dir` (and nothing else stands in the way of knowing)?
fn gone(op: &Op, dir: &Obj, acc: &Access, name: &[u8]) -> bool {
    matches!(child(op, dir, acc, name), Err(nfsstat3::NFS3ERR_NOENT))
}

/// For a create-type call: if `name` in the directory `fh` exists and `done`
/// says it is what the call makes, the call's OK reply.
fn made<R: CreatedRes>(op: &Op, fh: &Fh, name: &Name, done: impl Fn(&Obj) -> bool) -> Option<Reply> {
    let name = name.as_ref().ok()?;
    let (dir, acc) = writable_dir(op, fh)?;
    let obj = child(op, &dir, &acc, name).ok()?;
    if !done(&obj) {
        return None;
    }
    let fh = proc_dir::new_fh(op, &obj);
    Some(proc_dir::created_reply::<R>(Ok((fh, obj_attr(&obj), wcc_now(&dir)))))
}

fn exclusive_verifier_matches(st: &Stat, verf: &[u8; 8]) -> bool {
    let (mtime, atime) = proc_dir::verf_times(verf);
    st.mtime.0 == i64::from(mtime) && st.atime.0 == i64::from(atime)
}

/// Slack between the intent's time and the file's ctime, both from the
/// clock of the node that ran the original (the times a filesystem keeps
/// can be coarser than the clock).
const INTENT_CTIME_SLACK_MS: u64 = 1_000;

/// An EXCLUSIVE create the original left half done: it made the file
/// (mode `EXCLUSIVE_MODE`, empty, one link, changed since the intent) and
/// died before storing the verifier in its times. Store it and answer OK.
fn finish_exclusive(op: &Op, fh: &Fh, name: &Name, verf: &[u8; 8]) -> Option<Reply> {
    let intent_ms = op.intent_ms?;
    let name = name.as_ref().ok()?;
    let (dir, acc) = writable_dir(op, fh)?;
    let obj = child(op, &dir, &acc, name).ok()?;
    let st = &obj.st;
    let ctime_ms =
        u64::try_from(st.ctime.0).ok()?.saturating_mul(1000).saturating_add(u64::from(st.ctime.1 / 1_000_000));
    let half_made = st.is_reg()
        && st.mode & 0o7777 == proc_dir::EXCLUSIVE_MODE
        && st.size == 0
        && st.nlink == 1
        && ctime_ms.saturating_add(INTENT_CTIME_SLACK_MS) >= intent_ms;
    if !half_made {
        return None;
    }
    if exclusive_verifier_matches(st, verf) {
        return None;
    }
    let (mtime, atime) = proc_dir::verf_times(verf);
    {
        let _user = acc.user().ok()?;
        sys::utimens_fd(&obj.fd, sys::TimeSet::At(atime, 0), sys::TimeSet::At(mtime, 0)).ok()?;
    }
    made::<CREATE3resok>(op, fh, &Ok(name.to_vec()), |o| exclusive_verifier_matches(&o.st, verf))
}

pub fn create(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_create, |op, (fh, name, how)| {
        // (A finished original is left to `made` below.)
        if let CreateHow::Exclusive(verf) = &how {
            if let Some(reply) = finish_exclusive(op, &fh, &name, verf) {
                return reply;
            }
        }
        let done = |o: &Obj| {
            o.st.is_reg()
                && match &how {
                    CreateHow::Unchecked(_) | CreateHow::Guarded(_) => true,
                    CreateHow::Exclusive(verf) => exclusive_verifier_matches(&o.st, verf),
                }
        };
        match made::<CREATE3resok>(op, &fh, &name, done) {
            Some(reply) => reply,
            None => proc_dir::created::<CREATE3resok, _>(op, (fh, name, how), proc_dir::make_file),
        }
    })
}

pub fn mkdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_mkdir, |op, (fh, name, s)| {
        match made::<MKDIR3resok>(op, &fh, &name, |o| o.st.is_dir()) {
            Some(reply) => reply,
            None => proc_dir::created::<MKDIR3resok, _>(op, (fh, name, s), proc_dir::make_dir),
        }
    })
}

pub fn symlink(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_symlink, |op, (fh, name, what)| {
        let same_target = |o: &Obj| {
            o.st.is_lnk()
                && what
                    .1
                    .as_ref()
                    .is_ok_and(|target| sys::readlink_fd(&o.fd, PATH_BYTES_MAX).ok().as_ref() == Some(target))
        };
        match made::<SYMLINK3resok>(op, &fh, &name, same_target) {
            Some(reply) => reply,
            None => proc_dir::created::<SYMLINK3resok, _>(op, (fh, name, what), proc_dir::make_symlink),
        }
    })
}

/// The file type bits MKNOD makes for `what` (None: a type it refuses).
fn mknod_type(what: &Mknod) -> Option<u32> {
    match what {
        Mknod::Chr(..) => Some(libc::S_IFCHR),
        Mknod::Blk(..) => Some(libc::S_IFBLK),
        Mknod::Sock(_) => Some(libc::S_IFSOCK),
        Mknod::Fifo(_) => Some(libc::S_IFIFO),
        Mknod::BadType => None,
    }
}

pub fn mknod(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_mknod, |op, (fh, name, what)| {
        let kind = mknod_type(&what);
        match made::<MKNOD3resok>(op, &fh, &name, |o| Some(o.st.mode & libc::S_IFMT) == kind) {
            Some(reply) => reply,
            None => proc_dir::created::<MKNOD3resok, _>(op, (fh, name, what), proc_dir::make_node),
        }
    })
}

/// REMOVE or RMDIR: the directory's wcc now, if `name` is gone from it.
fn removed(op: &Op, fh: &Fh, name: &Name) -> Option<wcc_data> {
    let name = name.as_ref().ok()?;
    let (dir, acc) = writable_dir(op, fh)?;
    gone(op, &dir, &acc, name).then(|| wcc_now(&dir))
}

pub fn remove(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_remove, |op, (fh, name)| match removed(op, &fh, &name) {
        Some(wcc) => proc_dir::remove_reply(Ok(wcc)),
        None => proc_dir::do_remove(op, (fh, name)),
    })
}

pub fn rmdir(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_dir::dec_remove, |op, (fh, name)| match removed(op, &fh, &name) {
        Some(wcc) => proc_dir::rmdir_reply(Ok(wcc)),
        None => proc_dir::do_rmdir(op, (fh, name)),
    })
}

/// RENAME: the OK reply if the source name is gone and the target name exists.
fn renamed(op: &Op, (ffh, fname, tfh, tname): &Rename) -> Option<Reply> {
    let (fname, tname) = (fname.as_ref().ok()?, tname.as_ref().ok()?);
    let (from, acc) = writable_dir(op, ffh)?;
    let (to, _) = writable_dir(op, tfh)?;
    if from.export_id != to.export_id || !gone(op, &from, &acc, fname) {
        return None;
    }
    child(op, &to, &acc, tname).ok()?;
    Some(proc_link::rename_reply(Ok(()), wcc_now(&from), wcc_now(&to)))
}

pub fn rename(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_link::dec_rename, |op, a| match renamed(op, &a) {
        Some(reply) => reply,
        None => proc_link::rename_decoded(op, a),
    })
}

/// LINK: the OK reply if the new name is the source object.
fn linked(op: &Op, (ffh, dfh, name): &Link) -> Option<Reply> {
    let name = name.as_ref().ok()?;
    let (file, _) = op.object(ffh).ok()?;
    let (dir, acc) = writable_dir(op, dfh)?;
    let new = child(op, &dir, &acc, name).ok()?;
    new.same_object(&file).then(|| proc_link::link_reply(Ok(()), obj_attr(&new), wcc_now(&dir)))
}

pub fn link(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, proc_link::dec_link, |op, a| match linked(op, &a) {
        Some(reply) => reply,
        None => proc_link::link_decoded(op, a),
    })
}

/// Does `st` show every attribute of `s` that can be compared?
fn attrs_equal(st: &Stat, s: &Sattr) -> bool {
    let time_ok = |want: Option<SetTime>, have: (i64, u32)| match want {
        Some(SetTime::ClientTime(t)) => nfstime(have) == t,
        None | Some(SetTime::DontChange) | Some(SetTime::ServerTime) => true,
    };
    let mode_ok = s.mode.is_none_or(|m| st.mode & 0o7777 == m & 0o7777 || st.is_lnk());
    mode_ok
        && s.uid.is_none_or(|u| st.uid == u)
        && s.gid.is_none_or(|g| st.gid == g)
        && s.size.is_none_or(|n| st.size == n)
        && time_ok(s.atime, st.atime)
        && time_ok(s.mtime, st.mtime)
}

/// Guarded SETATTR: the OK reply if the guard no longer matches and the
/// attributes are as requested.
fn set_already(op: &Op, (fh, s, guard): &Setattr) -> Option<Reply> {
    let guard = guard.as_ref()?;
    let (obj, acc) = op.object(fh).ok()?;
    acc.writable().ok()?;
    let done = *guard != nfstime(obj.st.ctime) && attrs_equal(&obj.st, s);
    done.then(|| proc_write::setattr_reply(Ok(()), wcc_now(&obj)))
}

/// Only a guarded SETATTR needs its intent (DESIGN.md invariant 6): setting
/// the same attributes again is what an unguarded one does when re-run, as
/// with knfsd after a restart. Undecodable arguments count as guarded.
pub fn setattr_is_guarded(args: &[u8]) -> bool {
    let mut r = crate::rpc::xdr::Reader::new(args);
    super::xdr::setattr(&mut r).map_or(true, |(_, _, guard)| guard.is_some())
}

pub fn setattr(ctx: Arc<NfsCtx>, call: Call, args: Args) -> ProcFuture {
    run(ctx, call, args, super::xdr::setattr, |op, a| match set_already(op, &a) {
        Some(reply) => reply,
        None => proc_write::setattr_decoded(op, a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SETATTR3args: an ext4-sized handle, a sattr3 setting mode 0644, and
    /// the guard (none, or a ctime).
    fn setattr_args(guard: Option<(u32, u32)>) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&22u32.to_be_bytes());
        a.extend_from_slice(&[7; 22]);
        a.extend_from_slice(&[0, 0]);
        for w in [1u32, 0o644, 0, 0, 0, 0, 0] {
            a.extend_from_slice(&w.to_be_bytes());
        }
        match guard {
            None => a.extend_from_slice(&0u32.to_be_bytes()),
            Some((s, ns)) => {
                for w in [1u32, s, ns] {
                    a.extend_from_slice(&w.to_be_bytes());
                }
            }
        }
        a
    }

    #[test]
    fn only_a_guarded_setattr_needs_its_intent() {
        assert!(!setattr_is_guarded(&setattr_args(None)));
        assert!(setattr_is_guarded(&setattr_args(Some((300, 3)))));
        let args = setattr_args(None);
        assert!(setattr_is_guarded(&args[..args.len() - 2]), "undecodable counts as guarded");
        assert!(setattr_is_guarded(&[]));
    }

    fn st(mode: u32) -> Stat {
        Stat {
            ino: 5,
            mode,
            nlink: 1,
            uid: 10,
            gid: 20,
            size: 7,
            blocks: 0,
            rdev_major: 0,
            rdev_minor: 0,
            dev_major: 0,
            dev_minor: 0,
            atime: (100, 1),
            mtime: (200, 2),
            ctime: (300, 3),
            btime: None,
        }
    }

    #[test]
    fn attrs_equal_compares_what_can_be_compared() {
        let file = st(libc::S_IFREG | 0o640);
        assert!(attrs_equal(&file, &Sattr::default()));
        assert!(attrs_equal(&file, &Sattr { mode: Some(0o640), uid: Some(10), gid: Some(20), ..Sattr::default() }));
        assert!(!attrs_equal(&file, &Sattr { mode: Some(0o600), ..Sattr::default() }));
        assert!(!attrs_equal(&file, &Sattr { size: Some(8), ..Sattr::default() }));
        let t = |seconds, nseconds| Some(SetTime::ClientTime(nfstime3 { seconds, nseconds }));
        assert!(attrs_equal(&file, &Sattr { mtime: t(200, 2), atime: t(100, 1), ..Sattr::default() }));
        assert!(!attrs_equal(&file, &Sattr { mtime: t(200, 3), ..Sattr::default() }));
        assert!(attrs_equal(&file, &Sattr { mtime: Some(SetTime::ServerTime), ..Sattr::default() }));
    }

    #[test]
    fn exclusive_verifier_is_read_as_stored() {
        let mut s = st(libc::S_IFREG | 0o600);
        let verf = [0x80, 0, 0, 9, 0, 0, 0, 4];
        let (mtime, atime) = proc_dir::verf_times(&verf);
        s.mtime = (i64::from(mtime), 0);
        s.atime = (i64::from(atime), 0);
        assert!(exclusive_verifier_matches(&s, &verf));
        assert!(!exclusive_verifier_matches(&s, &[0, 0, 0, 9, 0, 0, 0, 5]));
    }

    #[test]
    fn mknod_types() {
        assert_eq!(mknod_type(&Mknod::Fifo(Sattr::default())), Some(libc::S_IFIFO));
        assert_eq!(mknod_type(&Mknod::BadType), None);
    }
}
