//! NSM, the Network Status Monitor, version 1 (program 100024; X/Open XNFS
//! chapter 11, nfs-utils `sm_inter.x`): hosts tell each other they restarted
//! (SM_NOTIFY with a new, odd state number), so locks held by or for a
//! restarted host can be dropped or reclaimed.
//!
//! What exists: the program, version and procedure numbers below, and in
//! [`xdr`] every NSM argument and result type, the SM_NOTIFY argument and the
//! `status` callback, with checked decoders and encoders.
//!
//! Still to come: the procedure table and handlers, the monitored-host list and
//! state number in `hanfs-state`, and sending SM_NOTIFY to clients after a
//! failover. Until then nothing registers or serves this program.

pub mod xdr;

pub const SM_PROGRAM: u32 = 100_024;
pub const SM_VERSION: u32 = 1;

pub const SM_NULL: u32 = 0;
/// `sm_name` -> `sm_stat_res`.
pub const SM_STAT: u32 = 1;
/// `mon` -> `sm_stat_res`.
pub const SM_MON: u32 = 2;
/// `mon_id` -> `sm_stat`.
pub const SM_UNMON: u32 = 3;
/// `my_id` -> `sm_stat`.
pub const SM_UNMON_ALL: u32 = 4;
/// void -> void.
pub const SM_SIMU_CRASH: u32 = 5;
/// `stat_chge` -> void.
pub const SM_NOTIFY: u32 = 6;
/// Length of a procedure table indexed by procedure number.
pub const SM_PROCS_COUNT: usize = SM_NOTIFY as usize + 1;
