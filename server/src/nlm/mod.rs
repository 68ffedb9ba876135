//! NLM, the Network Lock Manager, version 4 (program 100021; X/Open XNFS
//! chapter 10, and Linux `fs/lockd`), for byte-range locks and DOS shares on
//! NFSv3 files, served from the replicated lock table (`hanfs_state::locks`).
//!
//! `PROGRAM.procs` is indexed by procedure number. Each operation has one
//! core (`proc_lock.rs`: TEST, LOCK, CANCEL, UNLOCK) that returns the NLM
//! result; the synchronous procedure replies with it and the `_MSG` form
//! sends it back as a `_RES` call to the caller's NLM (the `_MSG` call itself
//! gets no RPC reply). Every change is one committed `NlmCommand`, and the
//! reply is encoded from the outcome `apply` decided on the committed table:
//! two concurrent conflicting LOCKs are never both granted. LOCK, NM_LOCK and
//! UNLOCK are in the replicated DRC as `Drc::ReplyOnly` (no intent: re-running one against the table is safe; the reply is recorded after it is sent). `file.rs` checks the
//! handle like any NFS handle and converts between wire and table types;
//! `proc_misc.rs` holds NULL, GRANTED, the `_RES` procedures, SHARE, UNSHARE
//! and FREE_ALL; `callback.rs` sends GRANTED_MSG for granted waiters and the
//! `_RES` calls. Only version 4 is registered: v1 and v3 calls get
//! PROG_MISMATCH(4, 4) from the dispatcher. With transparent failover (the
//! default: the table is replicated) there is no grace period and
//! DENIED_GRACE_PERIOD is never sent; classic recovery (`[nlm] lock_recovery
//! = "notify"`, `grace.rs`) refuses TEST and non-reclaim LOCKs with it for a
//! while after each promotion. Every reply's status is logged at debug level as
//! `nlm reply status=NAME`. `ofd.rs` holds every granted lock as an OFD
//! lock on the exported file too, so local processes see NFS clients' locks
//! and a LOCK or TEST sees theirs.
//!
//! [`xdr`] holds every NLM v4 argument and result type with a checked decoder
//! and an encoder (plus the small codec that `nsm::xdr` shares).

pub mod callback;
mod file;
pub mod grace;
pub mod ofd;
mod ofd_sys;
mod proc_lock;
mod proc_misc;
pub mod xdr;

pub const NLM_PROGRAM: u32 = 100_021;
pub const NLM4_VERSION: u32 = 4;

pub const NLMPROC4_NULL: u32 = 0;
/// `nlm4_testargs` -> `nlm4_testres`.
pub const NLMPROC4_TEST: u32 = 1;
/// `nlm4_lockargs` -> `nlm4_res`.
pub const NLMPROC4_LOCK: u32 = 2;
/// `nlm4_cancargs` -> `nlm4_res`.
pub const NLMPROC4_CANCEL: u32 = 3;
/// `nlm4_unlockargs` -> `nlm4_res`.
pub const NLMPROC4_UNLOCK: u32 = 4;
/// `nlm4_testargs` -> `nlm4_res`: a server tells a client its blocked lock is
/// now held.
pub const NLMPROC4_GRANTED: u32 = 5;
/// The `_MSG` procedures take the same arguments as their synchronous forms,
/// reply with nothing, and answer with a separate `_RES` call back.
pub const NLMPROC4_TEST_MSG: u32 = 6;
pub const NLMPROC4_LOCK_MSG: u32 = 7;
pub const NLMPROC4_CANCEL_MSG: u32 = 8;
pub const NLMPROC4_UNLOCK_MSG: u32 = 9;
pub const NLMPROC4_GRANTED_MSG: u32 = 10;
/// `nlm4_testres` -> void.
pub const NLMPROC4_TEST_RES: u32 = 11;
/// `nlm4_res` -> void, for the four below too.
pub const NLMPROC4_LOCK_RES: u32 = 12;
pub const NLMPROC4_CANCEL_RES: u32 = 13;
pub const NLMPROC4_UNLOCK_RES: u32 = 14;
pub const NLMPROC4_GRANTED_RES: u32 = 15;
/// Linux-private, not in XNFS: the local rpc.statd tells lockd that a host
/// rebooted (`nlm4_notifyargs`: the same layout as `nsm::xdr::SmStatus`).
/// hanfs's NSM and NLM share a process, so this is not meant to be served.
/// Procedures 17..=19 are not defined.
pub const NLMPROC4_SM_NOTIFY: u32 = 16;
/// `nlm4_shareargs` -> `nlm4_shareres`.
pub const NLMPROC4_SHARE: u32 = 20;
/// `nlm4_shareargs` -> `nlm4_shareres`.
pub const NLMPROC4_UNSHARE: u32 = 21;
/// `nlm4_lockargs` -> `nlm4_res`: LOCK without NSM monitoring.
pub const NLMPROC4_NM_LOCK: u32 = 22;
/// `nlm4_notify` -> void: drop every lock and share a host holds.
pub const NLMPROC4_FREE_ALL: u32 = 23;
/// Length of a procedure table indexed by procedure number.
pub const NLM4_PROCS_COUNT: usize = NLMPROC4_FREE_ALL as usize + 1;

use std::sync::Arc;

use hanfs_raft::commit::Commit;

use crate::live::Live;
use crate::rpc::program::{Args, Call, Drc, Handler, Proc, ProcError, ProcFuture, Program};
use callback::Callbacks;
use grace::Grace;
use ofd::OfdMirror;

/// What the NLM handlers reach.
pub struct NlmCtx {
    /// The replicated state: lock commands are committed, TEST reads it.
    pub commit: Arc<dyn Commit>,
    /// What is served now: handle resolution (a deleted file, or a file of
    /// a removed export, is NLM4_STALE_FH) and each export's client list.
    pub live: Arc<Live>,
    /// GRANTED_MSG and `_RES` calls to clients (this active period's task).
    pub callbacks: Callbacks,
    /// Classic recovery's grace period of this active period (never in
    /// grace in transparent mode).
    pub grace: Grace,
    /// The table's locks held as OFD locks on the exported files (this active period's).
    pub ofd: Arc<OfdMirror>,
}

const fn p(name: &'static str, handler: Handler<NlmCtx>, drc: Drc) -> Proc<NlmCtx> {
    Proc { name, handler, drc, recover: None, needs_intent: None }
}

/// Procedures 17..=19 are undefined. Linux answers them PROC_UNAVAIL, which
/// a handler cannot produce (`ProcError` has no such variant); GARBAGE_ARGS
/// is the nearest refusal.
fn undefined(_ctx: Arc<NlmCtx>, _call: Call, _args: Args) -> ProcFuture {
    Box::pin(async { Err(ProcError::GarbageArgs) })
}

static PROCS: [Proc<NlmCtx>; NLM4_PROCS_COUNT] = [
    p("NULL", proc_misc::null, Drc::Skip),
    p("TEST", proc_lock::test, Drc::Skip),
    p("LOCK", proc_lock::lock, Drc::ReplyOnly),
    p("CANCEL", proc_lock::cancel, Drc::Skip),
    p("UNLOCK", proc_lock::unlock, Drc::ReplyOnly),
    p("GRANTED", proc_misc::granted, Drc::Skip),
    p("TEST_MSG", proc_lock::test_msg, Drc::Skip),
    p("LOCK_MSG", proc_lock::lock_msg, Drc::Skip),
    p("CANCEL_MSG", proc_lock::cancel_msg, Drc::Skip),
    p("UNLOCK_MSG", proc_lock::unlock_msg, Drc::Skip),
    p("GRANTED_MSG", proc_misc::granted_msg, Drc::Skip),
    p("TEST_RES", proc_misc::test_res, Drc::Skip),
    p("LOCK_RES", proc_misc::other_res, Drc::Skip),
    p("CANCEL_RES", proc_misc::other_res, Drc::Skip),
    p("UNLOCK_RES", proc_misc::other_res, Drc::Skip),
    p("GRANTED_RES", proc_misc::granted_res_proc, Drc::Skip),
    p("SM_NOTIFY", proc_misc::sm_notify, Drc::Skip),
    p("UNDEFINED_17", undefined, Drc::Skip),
    p("UNDEFINED_18", undefined, Drc::Skip),
    p("UNDEFINED_19", undefined, Drc::Skip),
    p("SHARE", proc_misc::share, Drc::Skip),
    p("UNSHARE", proc_misc::unshare, Drc::Skip),
    p("NM_LOCK", proc_lock::nm_lock, Drc::ReplyOnly),
    p("FREE_ALL", proc_misc::free_all, Drc::Skip),
];

pub static PROGRAM: Program<NlmCtx> = Program { name: "nlm", prog: NLM_PROGRAM, vers: NLM4_VERSION, procs: &PROCS };

pub use file::client_ip;
