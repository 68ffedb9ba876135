//! NFSv3 (program 100003, version 3): the procedure table and its handlers.
//!
//! `PROGRAM.procs` is indexed by procedure number, like knfsd's
//! `nfsd_procedures3`. `xdr.rs` decodes and checks arguments, `common.rs`
//! holds the shared plumbing, `attrs.rs` sets attributes and syncs metadata,
//! and the handlers are split by role:
//! `proc_read.rs`, `proc_readdir.rs`, `proc_write.rs`, `proc_dir.rs`.
//! Handlers never see sockets or the duplicate-request cache.

mod attrs;
mod common;
mod io;
mod proc_dir;
mod proc_link;
mod proc_read;
mod proc_readdir;
mod proc_write;
pub mod xdr;

use std::sync::Arc;

use hanfs_raft::commit::Commit;

use crate::exports::ExportTable;
use crate::rpc::program::{Drc, Handler, Proc, Program};
use crate::vfs::Vfs;

pub const PROCEDURES: usize = 22;

/// What the NFSv3 handlers reach.
pub struct NfsCtx {
    /// Export roots, handle resolution, credential switching.
    pub vfs: Arc<Vfs>,
    /// Exports by id, and each export's client list.
    pub exports: Arc<ExportTable>,
    /// The replicated state (the handle table, the epoch): read it here; the
    /// handlers' changes go back as a reply's effects.
    pub commit: Arc<dyn Commit>,
}

const fn p(name: &'static str, handler: Handler<NfsCtx>, drc: Drc) -> Proc<NfsCtx> {
    Proc { name, handler, drc }
}

static PROCS: [Proc<NfsCtx>; PROCEDURES] = [
    p("NULL", proc_read::null, Drc::Skip),
    p("GETATTR", proc_read::getattr, Drc::Skip),
    p("SETATTR", proc_write::setattr, Drc::Record),
    p("LOOKUP", proc_read::lookup, Drc::Skip),
    p("ACCESS", proc_read::access, Drc::Skip),
    p("READLINK", proc_read::readlink, Drc::Skip),
    p("READ", proc_read::read, Drc::Skip),
    p("WRITE", proc_write::write, Drc::Skip),
    p("CREATE", proc_dir::create, Drc::Record),
    p("MKDIR", proc_dir::mkdir, Drc::Record),
    p("SYMLINK", proc_dir::symlink, Drc::Record),
    p("MKNOD", proc_dir::mknod, Drc::Record),
    p("REMOVE", proc_dir::remove, Drc::Record),
    p("RMDIR", proc_dir::rmdir, Drc::Record),
    p("RENAME", proc_link::rename, Drc::Record),
    p("LINK", proc_link::link, Drc::Record),
    p("READDIR", proc_readdir::readdir, Drc::Skip),
    p("READDIRPLUS", proc_readdir::readdirplus, Drc::Skip),
    p("FSSTAT", proc_read::fsstat, Drc::Skip),
    p("FSINFO", proc_read::fsinfo, Drc::Skip),
    p("PATHCONF", proc_read::pathconf, Drc::Skip),
    p("COMMIT", proc_write::commit, Drc::Skip),
];

pub static PROGRAM: Program<NfsCtx> =
    Program { name: "nfs", prog: nfs3_types::nfs3::PROGRAM, vers: nfs3_types::nfs3::VERSION, procs: &PROCS };
