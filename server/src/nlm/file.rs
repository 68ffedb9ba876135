//! What every NLM handler shares: the file check (a lock call's handle is
//! resolved like any NFS handle, and the caller must be in the export's
//! client list), the conversions between the wire types and the lock table's,
//! the status names the logs carry, and the leader's clock.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hanfs_state::locks::{FileId, Holder, LockArgs, LockKind, LockOwner, LockRange};
use nfs3_types::nfs3::nfsstat3;

use super::xdr::{NetObj, Nlm4Holder, Nlm4Lock, Nlm4Stats};
use super::NlmCtx;
use crate::exports::Verdict;
use crate::rpc::program::Call;

/// How much of a handle a call needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The object must exist (TEST, LOCK, SHARE): a deleted file is STALE_FH.
    Object,
    /// Only the export (UNLOCK, CANCEL, UNSHARE): releasing state on a file
    /// deleted meanwhile must still work, or its locks would stay forever.
    Export,
}

/// The lock table's name for the file behind `fh`, if `call`'s caller may
/// lock it. Like knfsd's `nlm_fopen`: a bad or stale handle is STALE_FH, any
/// other refusal (a client outside the export's list, an I/O error) FAILED.
pub async fn check_file(ctx: &Arc<NlmCtx>, call: &Call, fh: &[u8], need: Need) -> Result<FileId, Nlm4Stats> {
    let view = ctx.live.load();
    let handle = view.vfs.decode(fh).map_err(|_| Nlm4Stats::StaleFh)?;
    if view.vfs.export(handle.export_id).is_none() {
        return Err(Nlm4Stats::StaleFh);
    }
    let names = view.exports.peer_names(Some(handle.export_id), call.peer.ip()).await;
    match view.exports.verdict(handle.export_id, call.peer.ip(), &names) {
        Verdict::Allow(_) => {}
        Verdict::Deny => {
            tracing::info!(peer = %call.peer, export_id = handle.export_id, "nlm call refused: client not in the export's list");
            return Err(Nlm4Stats::Failed);
        }
        // Only after `hostnames::HOST_LOOKUP_WAIT` without an answer; the
        // NFS calls before it (MNT, then the file's handle) have usually
        // cached the client's names already.
        Verdict::Unresolved => {
            tracing::info!(peer = %call.peer, export_id = handle.export_id, "nlm call refused: the client's host name lookup did not answer");
            return Err(Nlm4Stats::Failed);
        }
    }
    if need == Need::Object {
        let fh2 = fh.to_vec();
        let resolved = tokio::task::spawn_blocking(move || view.vfs.resolve(&fh2).map(|_| ()))
            .await
            .map_err(|_| Nlm4Stats::Failed)?;
        match resolved {
            Ok(()) => {}
            Err(nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE) => return Err(Nlm4Stats::StaleFh),
            Err(e) => {
                tracing::debug!(error = ?e, "nlm: handle did not resolve");
                return Err(Nlm4Stats::Failed);
            }
        }
    }
    Ok(FileId(fh.to_vec()))
}

/// The owner of a lock: (caller_name, svid, oh). A caller_name that is not
/// UTF-8 is refused (FAILED) rather than converted lossily, which could make
/// two hosts one.
pub fn owner(lock: &Nlm4Lock) -> Result<LockOwner, Nlm4Stats> {
    let caller_name = std::str::from_utf8(lock.caller_name.as_bytes()).map_err(|_| Nlm4Stats::Failed)?;
    Ok(LockOwner { caller_name: caller_name.to_string(), svid: lock.svid as u32, oh: lock.oh.as_bytes().to_vec() })
}

pub fn kind(exclusive: bool) -> LockKind {
    if exclusive {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    }
}

pub fn range(lock: &Nlm4Lock) -> LockRange {
    LockRange { offset: lock.l_offset, len: lock.l_len }
}

/// TEST/LOCK/CANCEL arguments for the table.
pub fn lock_args(file: FileId, lock: &Nlm4Lock, exclusive: bool) -> Result<LockArgs, Nlm4Stats> {
    Ok(LockArgs { file, owner: owner(lock)?, range: range(lock), kind: kind(exclusive) })
}

/// The holder a TEST or a denied LOCK reports.
pub fn holder(h: &Holder) -> Nlm4Holder {
    // The table took `oh` from a decoded netobj, so it fits; an empty one otherwise.
    let oh = NetObj::new(h.owner.oh.clone()).unwrap_or_else(|_| NetObj::default());
    Nlm4Holder {
        exclusive: h.kind == LockKind::Exclusive,
        svid: h.owner.svid as i32,
        oh,
        l_offset: h.range.offset,
        l_len: h.range.len,
    }
}

/// The status as XNFS names it (without `NLM4_`/`LCK_`), for the logs:
/// `nlm reply status=GRANTED`.
pub fn status_name(stat: Nlm4Stats) -> &'static str {
    match stat {
        Nlm4Stats::Granted => "GRANTED",
        Nlm4Stats::Denied => "DENIED",
        Nlm4Stats::DeniedNolocks => "DENIED_NOLOCKS",
        Nlm4Stats::Blocked => "BLOCKED",
        Nlm4Stats::DeniedGracePeriod => "DENIED_GRACE_PERIOD",
        Nlm4Stats::Deadlck => "DEADLCK",
        Nlm4Stats::Rofs => "ROFS",
        Nlm4Stats::StaleFh => "STALE_FH",
        Nlm4Stats::Fbig => "FBIG",
        Nlm4Stats::Failed => "FAILED",
    }
}

/// Log one NLM reply's status at debug level (interop checks grep these).
pub fn log_reply(proc_: &'static str, call: &Call, stat: Nlm4Stats) {
    let status = status_name(stat);
    tracing::debug!(peer = %call.peer, xid = call.xid, proc_, "nlm reply status={status}");
}

/// The caller's IP as the table records hosts (IPv4-mapped IPv6 as IPv4).
pub fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}
