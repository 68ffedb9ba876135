//! NLM, the Network Lock Manager, version 4 (program 100021; X/Open XNFS
//! chapter 10, and Linux `fs/lockd`), for byte-range locks and DOS shares on
//! NFSv3 files.
//!
//! What exists: the program, version and procedure numbers below, and in
//! [`xdr`] every NLM v4 argument and result type with a checked decoder and an
//! encoder (plus the small codec that `nsm::xdr` shares).
//!
//! Still to come: the procedure table and handlers (one core per operation,
//! with the synchronous and `_MSG` forms differing only in how the reply is
//! delivered), the GRANTED/GRANTED_MSG callbacks to clients, and the lock
//! state in `hanfs-state`. Until then nothing registers or serves this
//! program.

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
