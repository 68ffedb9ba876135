//! What every NFSv3 handler shares: decode-then-run plumbing, export access
//! checks (client list, read-only, secure port), credential switching, and
//! building post-op and wcc attributes. No sockets and no DRC logic here.
//!
//! Where a body runs: on a blocking thread (`run`: every filesystem call may
//! block), on the runtime's thread (`run_inline`: a few cached metadata
//! syscalls), on the runtime's thread when the export is async and the call
//! frees little (`run_cheap`), or on the runtime's thread first and a
//! blocking thread only if it would wait for the disk (`run_try`: READ with
//! RWF_NOWAIT, a page of a remembered listing).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hanfs_state::State;
use nfs3_types::nfs3::{fattr3, nfsstat3, post_op_attr, pre_op_attr, wcc_data, Nfs3Option, Nfs3Result};
use nfs3_types::xdr_codec::Pack;

use crate::config::ExportOptions;
use crate::exports::{PeerLookup, Verdict};
use crate::live::View;
use crate::rpc::program::{Args, Call, Cred, ProcError, ProcFuture, Reply};
use crate::rpc::xdr::{encode, DecodeError, Reader};
use crate::vfs::attr;
use crate::vfs::cred::{squash, CredGuard, Creds};
use crate::vfs::resolve::Obj;
use crate::vfs::sys::{self, Stat};
use crate::vfs::Vfs;

use super::xdr::{decode_all, Name};
use super::NfsCtx;

/// Reserved ports end here: `secure` exports want a source port below it.
const PRIVILEGED_PORT_END: u16 = 1024;

/// One call being executed on a blocking thread.
pub struct Op {
    pub ctx: Arc<NfsCtx>,
    /// The exports served when the call started, for its whole run.
    pub view: Arc<View>,
    pub cred: Cred,
    pub peer: SocketAddr,
    /// The caller's host names, looked up before the body runs if a name
    /// rule may decide its access (`ExportTable::peer_names`): the body
    /// never waits for a lookup.
    pub names: PeerLookup,
    /// `Call::intent_ms`: set when this run recovers an interrupted call.
    pub intent_ms: Option<u64>,
}

/// The caller's rights on one export.
pub struct Access {
    pub opts: ExportOptions,
    pub creds: Creds,
}

impl Access {
    /// Switch this thread to the caller's (squashed) ids until the guard drops.
    pub fn user(&self) -> Result<CredGuard, nfsstat3> {
        CredGuard::switch(&self.creds).map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)
    }

    /// Modifying calls on a read-only export get NFS3ERR_ROFS.
    pub fn writable(&self) -> Result<(), nfsstat3> {
        if self.opts.read_only {
            Err(nfsstat3::NFS3ERR_ROFS)
        } else {
            Ok(())
        }
    }
}

impl Op {
    /// The call's view of the exports as it starts, and the caller's host
    /// names if a name rule may need them.
    async fn start(ctx: Arc<NfsCtx>, call: Call) -> Op {
        let view = ctx.live.load();
        let names = view.exports.peer_names(None, call.peer.ip()).await;
        Op { view, ctx, cred: call.cred, peer: call.peer, names, intent_ms: call.intent_ms }
    }

    pub fn vfs(&self) -> &Vfs {
        &self.view.vfs
    }

    pub fn state(&self) -> Arc<RwLock<State>> {
        self.ctx.commit.state()
    }

    /// The caller's rights on `export_id`, as knfsd's fh_verify: an unknown
    /// export is STALE, an insecure port on a `secure` export is PERM, a client
    /// not in the list is ACCES. A client whose host names a rule needs but
    /// whose lookup has not answered gets JUKEBOX: the Linux client retries
    /// the call a few seconds later, by when the lookup has filled the cache
    /// (knfsd drops the call while mountd answers, for the same retry).
    pub fn access(&self, export_id: u32) -> Result<Access, nfsstat3> {
        if self.vfs().export(export_id).is_none() {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let opts = match self.view.exports.verdict(export_id, self.peer.ip(), &self.names) {
            Verdict::Allow(opts) => opts,
            Verdict::Deny => return Err(nfsstat3::NFS3ERR_ACCES),
            Verdict::Unresolved => return Err(nfsstat3::NFS3ERR_JUKEBOX),
        };
        if opts.secure && self.peer.port() >= PRIVILEGED_PORT_END {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        Ok(Access { opts, creds: squash(&self.cred, &opts) })
    }

    /// Authenticate and resolve a handle from the wire (as the server: see
    /// `vfs::fhandle`) and check the caller's export access.
    pub fn object(&self, fh: &[u8]) -> Result<(Obj, Access), nfsstat3> {
        let h = self.vfs().decode(fh)?;
        let access = self.access(h.export_id)?;
        let obj = self.vfs().resolve_fh(&h)?;
        Ok((obj, access))
    }

    /// The attributes behind a handle from the wire, with the same checks as
    /// `object` (GETATTR).
    pub fn attrs(&self, fh: &[u8]) -> Result<fattr3, nfsstat3> {
        let h = self.vfs().decode(fh)?;
        self.access(h.export_id)?;
        let st = self.vfs().resolve_stat(&h)?;
        Ok(attr::fattr(&st, h.export_id))
    }

    /// The wire handle of `obj`.
    pub fn fh(&self, obj: &Obj) -> Result<Vec<u8>, nfsstat3> {
        self.vfs().fh(obj)
    }
}

/// Decode the arguments with `dec` (else GARBAGE_ARGS), then run `body` on a
/// blocking thread: every filesystem call blocks, and credentials are per thread.
pub fn run<T: Send + 'static>(
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    body: fn(&Op, T) -> Reply,
) -> ProcFuture {
    run_on(Thread::Blocking, ctx, call, args, dec, body)
}

/// As `run`, but `body` runs right here on the runtime's thread, without the
/// hand-off to a blocking thread (which costs more than the call itself):
/// only for procedures whose filesystem work is a few cached metadata
/// syscalls (GETATTR, ACCESS, LOOKUP). Credentials are per thread and the
/// body switches and restores them without awaiting, so nothing else runs on
/// this thread under the caller's ids. The Raft lease and transport run on
/// their own runtime, so a slow disk here cannot starve them.
pub fn run_inline<T: Send + 'static>(
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    body: fn(&Op, T) -> Reply,
) -> ProcFuture {
    run_on(Thread::Runtime, ctx, call, args, dec, body)
}

/// As `run`, but `body` runs on the runtime's thread (as `run_inline`) when
/// `cheap` says so: when the export the call changes is `async` for every
/// client (`async_export`) and what it does there is a few syscalls on
/// cached blocks (as knfsd's `async`, nothing is flushed before the reply),
/// the hand-off to a blocking thread and back costs more than the call
/// (about 60 µs of a SETATTR on a 2-core VM). What may free many blocks (a
/// size change; removing, or renaming over, a large file: see
/// `frees_little`) and every `sync` export, which flushes metadata, stay on
/// a blocking thread. `cheap` runs on the runtime thread with the server's
/// own ids and may look (statx) but must not change anything.
pub fn run_cheap<T: Send + 'static>(
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    cheap: fn(&View, &T) -> bool,
    body: fn(&Op, T) -> Reply,
) -> ProcFuture {
    run_on(Thread::IfCheap(cheap), ctx, call, args, dec, body)
}

/// A body run by `run_try` on the runtime thread found it would have to
/// wait for the disk.
pub struct WouldBlock;

/// As `run`, but `body` is first tried right here on the runtime's thread
/// with `may_block` false, where it must not wait for the disk (a READ from
/// the page cache: RWF_NOWAIT) and gives `WouldBlock` instead; only then does
/// it run again on a blocking thread, with `may_block` true. A cached READ
/// then costs no hand-off to a blocking thread and back.
pub fn run_try<T: Clone + Send + 'static>(
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    body: fn(&Op, T, bool) -> Result<Reply, WouldBlock>,
) -> ProcFuture {
    let decoded = decode_all(&args, dec);
    Box::pin(async move {
        let a = decoded.map_err(|_| ProcError::GarbageArgs)?;
        let op = Op::start(ctx, call).await;
        if let Ok(reply) = body(&op, a.clone(), false) {
            return Ok(reply);
        }
        let reply = tokio::task::spawn_blocking(move || body(&op, a, true)).await.map_err(|_| ProcError::SystemErr)?;
        reply.map_err(|WouldBlock| ProcError::SystemErr)
    })
}

/// Where a handler's body runs.
enum Thread<T> {
    Blocking,
    Runtime,
    /// On the runtime when `run_cheap`'s test says so.
    IfCheap(fn(&View, &T) -> bool),
}

/// Whether every client of the export `fh` claims has it `async`. A handle
/// that names no export (or a forged one, refused later by its MAC) is
/// simply not cheap here.
pub fn async_export(view: &View, fh: &[u8]) -> bool {
    let Some(id) = crate::vfs::handle::FileHandle::claimed_export_id(fh) else { return false };
    view.exports.by_id(id).is_some_and(|e| e.clients.iter().all(|r| !r.options.sync))
}

/// Most bytes a file may have allocated for unlinking its last name to count
/// as cheap: freeing them (and their cached pages) takes microseconds.
const CHEAP_UNLINK_BYTES_MAX: u64 = 1 << 20;

/// Whether removing `name` from the directory `dir` (or renaming something
/// over it) frees little: it is not there, is not a regular file, has other
/// links, or has at most `CHEAP_UNLINK_BYTES_MAX` allocated. A handle or
/// name that does not resolve is cheap (the call fails fast). Looked at with
/// the server's own ids, without opening the object.
pub fn frees_little(view: &View, dir: &[u8], name: &Name) -> bool {
    let Ok(name) = name else { return true };
    let Ok(dir) = view.vfs.resolve(dir) else { return true };
    sys::stat_at(dir.raw(), name).map_or(true, |st| unlink_frees_little(&st))
}

/// Whether unlinking a name of the object `st` frees little (see `frees_little`).
fn unlink_frees_little(st: &Stat) -> bool {
    !st.is_reg() || st.nlink > 1 || st.blocks.saturating_mul(512) <= CHEAP_UNLINK_BYTES_MAX
}

fn run_on<T: Send + 'static>(
    thread: Thread<T>,
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    body: fn(&Op, T) -> Reply,
) -> ProcFuture {
    let decoded = decode_all(&args, dec);
    Box::pin(async move {
        let a = decoded.map_err(|_| ProcError::GarbageArgs)?;
        let op = Op::start(ctx, call).await;
        let inline = match thread {
            Thread::Blocking => false,
            Thread::Runtime => true,
            Thread::IfCheap(cheap) => cheap(&op.view, &a),
        };
        if inline {
            Ok(body(&op, a))
        } else {
            tokio::task::spawn_blocking(move || body(&op, a)).await.map_err(|_| ProcError::SystemErr)
        }
    })
}

/// As `run`, for arguments that keep pointing into the argument bytes (WRITE's
/// data): `body` also gets those bytes, so nothing large is copied to decode.
pub fn run_args<T: Send + 'static>(
    ctx: Arc<NfsCtx>,
    call: Call,
    args: Args,
    dec: fn(&mut Reader) -> Result<T, DecodeError>,
    body: fn(&Op, T, &[u8]) -> Reply,
) -> ProcFuture {
    let decoded = decode_all(&args, dec);
    Box::pin(async move {
        let a = decoded.map_err(|_| ProcError::GarbageArgs)?;
        let op = Op::start(ctx, call).await;
        tokio::task::spawn_blocking(move || body(&op, a, &args)).await.map_err(|_| ProcError::SystemErr)
    })
}

/// Encode an NFSv3 result: status then the ok or fail body.
pub fn reply<T: Pack, E: Pack>(r: Result<T, (nfsstat3, E)>) -> Vec<u8> {
    match r {
        Ok(v) => encode(&Nfs3Result::<T, E>::Ok(v)),
        Err((s, e)) => encode(&Nfs3Result::<T, E>::Err((s, e))),
    }
}

pub fn obj_attr(obj: &Obj) -> post_op_attr {
    Nfs3Option::Some(obj.fattr())
}

pub fn pre_op(st: Option<&Stat>) -> pre_op_attr {
    match st {
        Some(s) => Nfs3Option::Some(attr::wcc(s)),
        None => Nfs3Option::None,
    }
}

/// wcc_data for `obj`: `pre` as taken before the change, and a fresh stat now.
pub fn wcc_after(obj: &mut Obj, pre: &Stat) -> wcc_data {
    let after = if obj.restat().is_ok() { obj_attr(obj) } else { Nfs3Option::None };
    wcc_data { before: pre_op(Some(pre)), after }
}

/// wcc_data when the call failed before anything was resolved.
pub fn no_wcc() -> wcc_data {
    wcc_data::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_name_of_a_large_file_is_not_cheap_to_remove() {
        let dir = std::env::temp_dir().join(format!("hanfs-frees-little-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("small"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(dir.join("large"), vec![1u8; 3 << 20]).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let st = |n: &str| sys::stat_at(libc::AT_FDCWD, dir.join(n).as_os_str().as_encoded_bytes()).unwrap();
        assert!(unlink_frees_little(&st("small")));
        assert!(unlink_frees_little(&st("sub")));
        assert!(!unlink_frees_little(&st("large")), "3 MiB allocated: its blocks are freed");
        std::fs::hard_link(dir.join("large"), dir.join("other")).unwrap();
        assert!(unlink_frees_little(&st("large")), "another name keeps the blocks");
        // Sparse: a large size with nothing allocated frees nothing.
        std::fs::File::create(dir.join("sparse")).unwrap().set_len(1 << 40).unwrap();
        assert!(unlink_frees_little(&st("sparse")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
