//! NFSv3 (program 100003, version 3): the procedure table and its handlers.
//!
//! `PROGRAM.procs` is indexed by procedure number, like knfsd's
//! `nfsd_procedures3`. `xdr.rs` decodes and checks arguments, `common.rs`
//! holds the shared plumbing, and the handlers are split by role:
//! `proc_read.rs`, `proc_readdir.rs`, `proc_write.rs`, `proc_dir.rs`.
//! Handlers never see sockets or the duplicate-request cache.

mod common;
mod io;
mod proc_dir;
mod proc_link;
mod proc_read;
mod proc_readdir;
mod proc_write;
pub mod xdr;

use crate::rpc::program::{Drc, Proc, Program};

pub const PROCEDURES: usize = 22;

const fn p(name: &'static str, handler: crate::rpc::program::Handler, drc: Drc) -> Proc {
    Proc { name, handler, drc }
}

static PROCS: [Proc; PROCEDURES] = [
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

pub static PROGRAM: Program =
    Program { name: "nfs", prog: nfs3_types::nfs3::PROGRAM, vers: nfs3_types::nfs3::VERSION, procs: &PROCS };
