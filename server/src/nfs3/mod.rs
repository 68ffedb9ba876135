//! NFSv3 (program 100003, version 3): the procedure table and its handlers.
//!
//! `PROGRAM.procs` is indexed by procedure number, like knfsd's
//! `nfsd_procedures3`. `xdr.rs` decodes and checks arguments, `common.rs`
//! holds the shared plumbing, `attrs.rs` sets attributes and syncs metadata,
//! and the handlers are split by role:
//! `proc_read.rs`, `proc_readdir.rs`, `proc_write.rs`, `proc_dir.rs`,
//! `proc_link.rs`. `recover.rs` answers a retransmission of a non-idempotent
//! call whose original left only its intent (see `rpc::dispatch`).
//! Handlers never see sockets or the duplicate-request cache.

mod attrs;
mod common;
mod io;
mod proc_dir;
mod proc_link;
mod proc_read;
mod proc_readdir;
mod proc_write;
mod recover;
pub mod xdr;

use std::sync::Arc;

use hanfs_raft::commit::Commit;

use crate::live::Live;
use crate::rpc::program::{Drc, Handler, Proc, Program, Recover};

pub const PROCEDURES: usize = 22;

/// What the NFSv3 handlers reach.
pub struct NfsCtx {
    /// What is served now: export roots and handle resolution (`Vfs`),
    /// exports by id with their client lists. Each call takes the current
    /// view once (`Op::view`).
    pub live: Arc<Live>,
    /// The replicated state (the epoch, the DRC): read it here; the
    /// handlers' changes go back as a reply's effects.
    pub commit: Arc<dyn Commit>,
    /// This node may serve (`RpcShared`'s fence): WRITE checks it again
    /// right before its data reaches the disk (`io::write_at`).
    pub fence: crate::rpc::shared::Fence,
}

/// An idempotent procedure.
const fn p(name: &'static str, handler: Handler<NfsCtx>) -> Proc<NfsCtx> {
    Proc { name, handler, drc: Drc::Skip, recover: None, needs_intent: None }
}

/// A non-idempotent procedure: intent and reply recorded, `recover` answers
/// a retransmission found as an intent only.
const fn once(name: &'static str, handler: Handler<NfsCtx>, recover: Recover<NfsCtx>) -> Proc<NfsCtx> {
    Proc { name, handler, drc: Drc::Record, recover: Some(recover), needs_intent: None }
}

static PROCS: [Proc<NfsCtx>; PROCEDURES] = [
    p("NULL", proc_read::null),
    p("GETATTR", proc_read::getattr),
    Proc {
        name: "SETATTR",
        handler: proc_write::setattr,
        drc: Drc::Record,
        recover: Some(recover::setattr),
        needs_intent: Some(recover::setattr_is_guarded),
    },
    p("LOOKUP", proc_read::lookup),
    p("ACCESS", proc_read::access),
    p("READLINK", proc_read::readlink),
    p("READ", proc_read::read),
    p("WRITE", proc_write::write),
    once("CREATE", proc_dir::create, recover::create),
    once("MKDIR", proc_dir::mkdir, recover::mkdir),
    once("SYMLINK", proc_dir::symlink, recover::symlink),
    once("MKNOD", proc_dir::mknod, recover::mknod),
    once("REMOVE", proc_dir::remove, recover::remove),
    once("RMDIR", proc_dir::rmdir, recover::rmdir),
    once("RENAME", proc_link::rename, recover::rename),
    once("LINK", proc_link::link, recover::link),
    p("READDIR", proc_readdir::readdir),
    p("READDIRPLUS", proc_readdir::readdirplus),
    p("FSSTAT", proc_read::fsstat),
    p("FSINFO", proc_read::fsinfo),
    p("PATHCONF", proc_read::pathconf),
    p("COMMIT", proc_write::commit),
];

pub static PROGRAM: Program<NfsCtx> =
    Program { name: "nfs", prog: nfs3_types::nfs3::PROGRAM, vers: nfs3_types::nfs3::VERSION, procs: &PROCS };
