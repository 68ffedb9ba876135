//! The replicated commands. Every change to client-visible state is one of these,
//! applied by `State::apply` in log order on every node.
//!
//! Wire and replicated types use u32/u64, never usize. Time is stamped by the
//! leader into the command (`now_ms`), so `apply` never reads a clock.

use serde::{Deserialize, Serialize};

pub use crate::conns::TcpConn;
use crate::locks::{FileId, LockArgs, LockOwner, LockRange, MonitorId, Share, ShareOwner};

/// The filesystem an export lives on, as the node that first served it saw
/// it. Handles carry the filesystem's own object handles, so a node serves an
/// export only where its directory shows this same identity (the right disk is
/// mounted there); never st_dev, which differs between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsIdentity {
    /// The filesystem's UUID (FS_IOC_GETFSUUID), where it reports one.
    pub uuid: Option<Vec<u8>>,
    /// The export root directory's own handle (`name_to_handle_at`): its type
    /// and bytes (inode and generation on ext4 and XFS).
    pub root_type: i32,
    pub root_handle: Vec<u8>,
}

/// What an export is served as: the directory on the shared filesystem and
/// its exports(5) client list (`10.0.0.0/8(rw) *(ro)`), as the server
/// canonicalised it before committing (the state only bounds its size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSpec {
    /// Absolute path of the exported directory, the same on every node.
    pub dir: String,
    pub clients: String,
}

/// An identity for tests.
#[cfg(test)]
pub(crate) fn test_fs() -> FsIdentity {
    FsIdentity { uuid: Some(vec![7; 16]), root_type: 1, root_handle: vec![1, 2, 3, 4, 5, 6, 7, 8] }
}

/// The key that authenticates file handles (see the server's `vfs::handle`).
pub const HANDLE_KEY_BYTES: usize = 32;

/// Key of a duplicate-request-cache entry: same client, credential, xid,
/// program, version, procedure and argument checksum means a retransmission
/// (knfsd keys by xid, address, procedure and checksum; the credential is
/// added so that another user replaying a call never gets its reply).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DrcKey {
    /// Client address without port (the Linux client may reconnect from another port).
    pub client: String,
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    /// Checksum of the argument bytes (e.g. FNV-1a 64 or CRC64), computed by the server.
    pub args_sum: u64,
    /// Who made the call.
    pub cred: DrcCred,
}

/// The credential part of a `DrcKey`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DrcCred {
    /// AUTH_NONE (or any flavor without ids): one fixed marker.
    None,
    /// AUTH_SYS: the caller's uid and primary gid as sent.
    Sys { uid: u32, gid: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Several commands committed as one log entry (group commit). Applied in order.
    Batch(Vec<Command>),
    /// Record an export's cluster-assigned id, its path and the filesystem
    /// it lives on. Registering it again changes nothing: the first identity
    /// stays, and a node that finds another one refuses to serve the export.
    RegisterExport { export_id: u32, path: String, fs: FsIdentity },
    /// Set the key that authenticates file handles, drawn at random by the
    /// first active node. Only the first one counts: once set, the key never
    /// changes (a handle must keep resolving on every node, forever).
    SetHandleKey { key: [u8; HANDLE_KEY_BYTES] },
    /// rmtab: `client` mounted `path` (MOUNT MNT).
    Mount { client: String, path: String },
    /// rmtab: `client` unmounted `path` (MOUNT UMNT).
    Unmount { client: String, path: String },
    /// rmtab: `client` unmounted everything (MOUNT UMNTALL).
    UnmountAll { client: String },
    /// Start a new write-verifier epoch (every promotion / restart).
    BumpEpoch,
    /// Remember the reply to a non-idempotent request (completing its intent,
    /// if one was recorded). Entries older than the window, or beyond the
    /// entry bound, are evicted deterministically here.
    DrcInsert { key: DrcKey, reply: Vec<u8>, now_ms: u64 },
    /// A non-idempotent request is about to touch the disk: recorded before
    /// it runs, so that a retransmission after a crash finds either the reply
    /// or this intent, never nothing. No change if `key` is already cached.
    /// Evicted like a reply.
    DrcIntent { key: DrcKey, now_ms: u64 },
    /// For `status` on every node: which node last started serving, when
    /// (unix ms, the proposer's clock, carried in the command so apply stays
    /// deterministic) and how long its promotion took.
    RecordPromotion(Promotion),
    /// A change to the NLM lock table or the NSM monitor list. Its outcome
    /// (granted, denied, blocked ...) is decided by `apply` on the committed
    /// table and comes back through the commit, never from a check made
    /// before it.
    Nlm(NlmCommand),
    /// The active accepted a client TCP connection: recorded with the
    /// current epoch, for the next active to tickle (see `conns.rs`).
    /// Recording it again refreshes its epoch.
    ConnOpen { conn: TcpConn },
    /// That connection closed: forget it (no change if unknown).
    ConnClose { conn: TcpConn },
    /// A new active tickled every connection recorded before `epoch` (its
    /// own, bumped one): forget them.
    ConnsForget { epoch: u64 },
    /// Serve export `export_id` at `path` (the name clients mount) as
    /// `spec`: a new export, a changed directory or client list, or a
    /// removed export served again. The id stays bound to `path` forever
    /// (`exports.rs`). (New variants go last: the log's encoding numbers
    /// variants by position.)
    ExportSet { export_id: u32, path: String, spec: ExportSpec },
    /// Stop serving `export_id`: MNT of it is refused and its handles are
    /// STALE. Its id, name and identity stay recorded.
    ExportRemove { export_id: u32 },
}

/// The NLM and NSM changes (see `locks::NlmState` for the rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NlmCommand {
    /// LOCK (LOCK_MSG, NM_LOCK, reclaims). `client_addr` is the address the
    /// call came from (IP, no port): GRANTED_MSG callbacks for that host go
    /// there. `now_ms` is the leader's clock.
    Lock { args: LockArgs, block: bool, client_addr: String, now_ms: u64 },
    /// UNLOCK (UNLOCK_MSG).
    Unlock { file: FileId, owner: LockOwner, range: LockRange, now_ms: u64 },
    /// CANCEL (CANCEL_MSG).
    Cancel { args: LockArgs },
    /// GRANTED_RES (or GRANTED's reply) for the callback `Grant::id`.
    GrantAcknowledged { id: u64 },
    /// FREE_ALL: every lock, waiter and share of the host goes.
    FreeAll { caller_name: String, now_ms: u64 },
    /// SHARE.
    Share { file: FileId, share: Share },
    /// UNSHARE.
    Unshare { file: FileId, owner: ShareOwner },
    /// SM_MON.
    Mon { mon_name: String, id: MonitorId, priv_: [u8; 16] },
    /// SM_UNMON.
    Unmon { mon_name: String, id: MonitorId },
    /// SM_UNMON_ALL.
    UnmonAll { id: MonitorId },
    /// SM_NOTIFY: `mon_name` restarted with NSM state `state`; its locks go.
    Notify { mon_name: String, state: u32, now_ms: u64 },
    /// This server's NSM state goes up by 2 (classic recovery only).
    BumpNsmState,
    /// Re-check every waiter and grant those that now fit: a new active
    /// commits it once when it starts serving (queued waiters are re-checked
    /// after a failover). `now_ms` is the leader's clock.
    Wake { now_ms: u64 },
}

/// The last promotion (see `Command::RecordPromotion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub node_id: u64,
    pub at_unix_ms: u64,
    pub took_ms: u64,
}
