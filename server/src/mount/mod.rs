//! MOUNT (RFC 1813 appendix I, program 100005): version 3, and version 1 for
//! `showmount`, which asks v1 for DUMP and EXPORT (same encodings as v3).
//!
//! MNT finds the export holding the path (the longest export name that is a
//! prefix of it on a component boundary), checks that export's client list
//! and options, and returns the handle of the export's root or of the
//! directory below it: any directory of an export may be mounted, as with
//! knfsd. The directory is resolved beneath the export root with openat2's
//! `RESOLVE_BENEATH` (a `..` or a symlink leading out, or another mount
//! below, is MNT3ERR_ACCES). The rmtab row, the reply's effect, committed
//! before the reply is sent, holds the path as the client asked for it. A `secure` export
//! refuses callers from ports >= 1024 with MNT3ERR_ACCES, as rpc.mountd does
//! ("illegal port"). The client is recorded by IP address (knfsd does the same
//! when it does no reverse lookup).
//!
//! v1 MNT answers with a v1 `fhstatus`: the same access checks, but an allowed
//! client gets EOPNOTSUPP (95), since a v1 mount is only for NFSv2, which hanfs
//! does not serve (NFSv2 calls get PROG_MISMATCH(3, 3)).

use std::net::SocketAddr;
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use hanfs_state::Command;
use nfs3_types::mount::{
    dirpath, export_node, exports, fhandle3, mountbody, mountres3, mountres3_ok, mountstat3, name,
};
use nfs3_types::nfs3::nfsstat3;
use nfs3_types::xdr_codec::{BoundedList, List, Opaque};

use crate::exports::{pattern_string, ExportTable, Verdict};
use crate::live::Live;
use crate::rpc::program::{Args, Call, Drc, Proc, ProcError, ProcFuture, Program, Reply, Transport};
use crate::rpc::xdr::{self, Reader};

pub const MOUNT_PROGRAM: u32 = 100_005;
/// Longest path in a MOUNT call (RFC 1813 MNTPATHLEN).
pub const MOUNT_PATH_BYTES_MAX: usize = 1024;
/// Largest DUMP/EXPORT result over UDP (what fits in a datagram with headers).
pub const MOUNT_UDP_RESULT_BYTES_MAX: usize = 60 * 1024;
/// Largest DUMP/EXPORT result over TCP.
pub const MOUNT_TCP_RESULT_BYTES_MAX: usize = 1024 * 1024;
/// AUTH_SYS: the one flavor MNT offers (knfsd's default `sec=sys`).
pub const AUTH_FLAVOR_SYS: u32 = 1;
/// The v1 `fhstatus` error for a v1 (NFSv2) mount of an allowed export.
pub const V1_EOPNOTSUPP: u32 = 95;

// A datagram can hold any MOUNT reply with its RPC headers.
const _: () = assert!(crate::rpc::listener::UDP_DATAGRAM_BYTES_MAX >= MOUNT_UDP_RESULT_BYTES_MAX + 1024);

/// What the MOUNT handlers reach.
pub struct MountCtx {
    /// What is served now: exports by name with their client lists, and
    /// the export roots' handles. Each call takes the current view once.
    pub live: Arc<Live>,
    /// The replicated state: the rmtab is read from it (DUMP).
    pub commit: Arc<dyn Commit>,
}

/// The procedure table of MOUNT version `VERS` (1 or 3): both versions share
/// every procedure, and MNT differs only in its result (`mnt::<VERS>`).
const fn procs<const VERS: u32>() -> [Proc<MountCtx>; 6] {
    [
        Proc { name: "NULL", handler: null, drc: Drc::Skip, recover: None, needs_intent: None },
        Proc { name: "MNT", handler: mnt::<VERS>, drc: Drc::Skip, recover: None, needs_intent: None },
        Proc { name: "DUMP", handler: dump, drc: Drc::Skip, recover: None, needs_intent: None },
        Proc { name: "UMNT", handler: umnt, drc: Drc::Skip, recover: None, needs_intent: None },
        Proc { name: "UMNTALL", handler: umntall, drc: Drc::Skip, recover: None, needs_intent: None },
        Proc { name: "EXPORT", handler: export, drc: Drc::Skip, recover: None, needs_intent: None },
    ]
}

static PROCS_V3: [Proc<MountCtx>; 6] = procs::<3>();
static PROCS_V1: [Proc<MountCtx>; 6] = procs::<1>();

pub static PROGRAM_V3: Program<MountCtx> = Program { name: "mount", prog: MOUNT_PROGRAM, vers: 3, procs: &PROCS_V3 };
pub static PROGRAM_V1: Program<MountCtx> = Program { name: "mount", prog: MOUNT_PROGRAM, vers: 1, procs: &PROCS_V1 };

fn no_args(args: &[u8]) -> Result<(), ProcError> {
    Reader::new(args).finish().map_err(|_| ProcError::GarbageArgs)
}

fn decode_path(args: &[u8]) -> Result<String, ProcError> {
    let mut r = Reader::new(args);
    let path = r.opaque(MOUNT_PATH_BYTES_MAX).map_err(|_| ProcError::GarbageArgs)?;
    r.finish().map_err(|_| ProcError::GarbageArgs)?;
    String::from_utf8(path.to_vec()).map_err(|_| ProcError::GarbageArgs)
}

fn client_name(peer: SocketAddr) -> String {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    }
}

/// The export `path` is in (its id, and the directory below its root), if
/// `call`'s caller may mount it: the export's client list and options apply
/// to every directory below it.
///
/// The caller's host names are looked up first when a rule needs them
/// (mountd does the same); a lookup that does not answer in time refuses.
async fn check_mount(exports: &ExportTable, call: &Call, path: &str) -> Result<(u32, String), mountstat3> {
    let (export, sub) = exports.containing(path).ok_or(mountstat3::MNT3ERR_NOENT)?;
    let names = exports.peer_names(Some(export.export_id), call.peer.ip()).await;
    let options = match exports.verdict(export.export_id, call.peer.ip(), &names) {
        Verdict::Allow(options) => options,
        Verdict::Deny => {
            tracing::info!(peer = %call.peer, path, "mount refused: client not in the export's list");
            return Err(mountstat3::MNT3ERR_ACCES);
        }
        Verdict::Unresolved => {
            tracing::info!(peer = %call.peer, path, "mount refused: the client's host name lookup did not answer");
            return Err(mountstat3::MNT3ERR_SERVERFAULT);
        }
    };
    if options.secure && call.peer.port() >= 1024 {
        tracing::info!(peer = %call.peer, path, "mount refused: illegal port (export is `secure`)");
        return Err(mountstat3::MNT3ERR_ACCES);
    }
    Ok((export.export_id, sub))
}

/// How the rmtab records a mounted `path`: the export's name plus the
/// normalised directory below it (no trailing `/`, no `.`), so MNT and UMNT
/// of the same directory spelled differently meet; as given if no export
/// holds it.
fn rmtab_path(exports: &ExportTable, path: &str) -> String {
    match exports.containing(path) {
        Some((e, sub)) if sub.is_empty() => e.name.clone(),
        Some((e, sub)) => format!("{}/{sub}", e.name.trim_end_matches('/')),
        None => path.to_owned(),
    }
}

/// Why a subdirectory MNT was refused, for the log.
fn refusal(stat: mountstat3) -> &'static str {
    match stat {
        mountstat3::MNT3ERR_NOENT => "no such directory in the export",
        mountstat3::MNT3ERR_NOTDIR => "not a directory",
        mountstat3::MNT3ERR_ACCES => "the path leaves the export (.., a symlink out, or another mount)",
        _ => "the directory cannot be opened",
    }
}

fn mount_status(e: nfsstat3) -> mountstat3 {
    match e {
        nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE => mountstat3::MNT3ERR_NOENT,
        nfsstat3::NFS3ERR_ACCES => mountstat3::MNT3ERR_ACCES,
        nfsstat3::NFS3ERR_PERM => mountstat3::MNT3ERR_PERM,
        nfsstat3::NFS3ERR_NOTDIR => mountstat3::MNT3ERR_NOTDIR,
        nfsstat3::NFS3ERR_IO => mountstat3::MNT3ERR_IO,
        nfsstat3::NFS3ERR_NAMETOOLONG => mountstat3::MNT3ERR_NAMETOOLONG,
        _ => mountstat3::MNT3ERR_SERVERFAULT,
    }
}

fn null(_ctx: Arc<MountCtx>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        Ok(Reply::new(Vec::new()))
    })
}

/// MNT: the same lookup and access checks for both versions. v3 answers with
/// the root handle (and records the mount); v1 answers with a `fhstatus`
/// status only: EOPNOTSUPP for an allowed client (see the module doc).
fn mnt<const VERS: u32>(ctx: Arc<MountCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let path = decode_path(&args)?;
        let view = ctx.live.load();
        let checked = check_mount(&view.exports, &call, &path).await;
        if VERS == 1 {
            let status = match checked {
                Ok(_) => V1_EOPNOTSUPP,
                Err(stat) => stat as u32,
            };
            return Ok(Reply::new(xdr::encode(&status)));
        }
        let (export_id, sub) = match checked {
            Ok(found) => found,
            Err(stat) => return Ok(Reply::new(xdr::encode(&mountres3::Err(stat)))),
        };
        let fh = match view.vfs.dir_fh(export_id, &sub) {
            Ok(x) => x,
            Err(e) => {
                let stat = mount_status(e);
                if sub.is_empty() {
                    tracing::warn!(path, error = ?e, "export root unusable");
                } else {
                    tracing::info!(peer = %call.peer, path, error = ?e, "mount refused: {}", refusal(stat));
                }
                return Ok(Reply::new(xdr::encode(&mountres3::Err(stat))));
            }
        };
        // The rmtab row (and `showmount -a`) shows the path the client asked for.
        let shown = rmtab_path(&view.exports, &path);
        tracing::info!(peer = %call.peer, path = %shown, "mounted");
        let ok = mountres3_ok { fhandle: fhandle3(Opaque::owned(fh)), auth_flavors: vec![AUTH_FLAVOR_SYS] };
        let effects = vec![Command::Mount { client: client_name(call.peer), path: shown }];
        Ok(Reply::with_effects(xdr::encode(&mountres3::Ok(ok)), effects))
    })
}

fn result_bytes_max(call: &Call) -> usize {
    match call.transport {
        Transport::Udp => MOUNT_UDP_RESULT_BYTES_MAX,
        Transport::Tcp => MOUNT_TCP_RESULT_BYTES_MAX,
    }
}

fn dump(ctx: Arc<MountCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        let rows: Vec<(String, String)> = {
            let state = ctx.commit.state();
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            guard.rmtab().map(|(c, p)| (c.to_string(), p.to_string())).collect()
        };
        let mut list = BoundedList::new(result_bytes_max(&call));
        for (client, path) in &rows {
            let body = mountbody {
                ml_hostname: name(Opaque::borrowed(client.as_bytes())),
                ml_directory: dirpath(Opaque::borrowed(path.as_bytes())),
            };
            if list.try_push(body).is_err() {
                tracing::warn!(rows = rows.len(), "mount DUMP truncated to fit one reply");
                break;
            }
        }
        Ok(Reply::new(xdr::encode(&list.into_inner())))
    })
}

fn umnt(ctx: Arc<MountCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let path = decode_path(&args)?;
        let path = rmtab_path(&ctx.live.load().exports, &path);
        let effects = vec![Command::Unmount { client: client_name(call.peer), path }];
        Ok(Reply::with_effects(Vec::new(), effects))
    })
}

fn umntall(_ctx: Arc<MountCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        let effects = vec![Command::UnmountAll { client: client_name(call.peer) }];
        Ok(Reply::with_effects(Vec::new(), effects))
    })
}

fn export(ctx: Arc<MountCtx>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        no_args(&args)?;
        let mut list: Vec<export_node<'static, 'static>> = Vec::new();
        let mut size = 4usize;
        let view = ctx.live.load();
        for e in view.exports.all() {
            let groups: Vec<name<'static>> =
                e.clients.iter().map(|rule| name(Opaque::owned(pattern_string(&rule.pattern).into_bytes()))).collect();
            let node =
                export_node { ex_dir: dirpath(Opaque::owned(e.name.clone().into_bytes())), ex_groups: List(groups) };
            size += 4 + nfs3_types::xdr_codec::Pack::packed_size(&node);
            if size > result_bytes_max(&call) {
                tracing::warn!("mount EXPORT truncated to fit one reply");
                break;
            }
            list.push(node);
        }
        let list: exports<'static, 'static> = List(list);
        Ok(Reply::new(xdr::encode(&list)))
    })
}
