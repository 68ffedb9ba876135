//! Entry points for the fuzz targets (`tests/fuzz`) and their regression
//! test (`tests/fuzz_replay.rs`): each takes arbitrary bytes, drives the real
//! decoder a hostile client reaches with them, and panics only if that code
//! panics or breaks one of the invariants checked here. Not an API.
//!
//! - `record`: record-marking reassembly (`rpc::record`), the whole stream at
//!   once and again in chunks, which must give the same records.
//! - `call_header`: the call header and credential (`rpc::msg`, `rpc::auth`).
//! - `nfs3`, `mount`, `portmap`: one call through the real
//!   `rpc::dispatch::Dispatcher` with the program's real procedure table. The
//!   contexts have no exports: an empty `Vfs` (every handle is refused before
//!   any filesystem call), an empty export table, a fresh portmap `Table`, and
//!   an in-memory `State` (fixed handle key) behind a `Commit` that applies to
//!   it. So a call goes through header decoding, program lookup, the DRC steps,
//!   the argument decoder and the handler's first refusal, with no filesystem
//!   or Raft side effect.
//! - `nlm`, `nsm`: their contexts carry the callback task and the OFD mirror
//!   (threads, outbound sockets), so these decode each procedure's argument
//!   type with `nlm::xdr::from_bytes`, as its handler does, and check that a
//!   decoded value encodes to bytes that decode to it again.
//!
//! Dispatcher inputs are `[proc, flags, args...]`; `flags` picks the transport,
//! the caller's address and port, the credential and (MOUNT) the version.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::BytesMut;
use hanfs_raft::commit::{Commit, CommitError, CommitFuture};
use hanfs_state::{Command, State};

use crate::exports::ExportTable;
use crate::live::Live;
use crate::mount::MountCtx;
use crate::nfs3::NfsCtx;
use crate::nlm;
use crate::nlm::xdr::{self as nlmx, Xdr};
use crate::nsm::{self, xdr as nsmx};
use crate::portmap::{self, Table};
use crate::rpc::dispatch::{Dispatcher, Outcome, Registry};
use crate::rpc::program::{Program, Transport};
use crate::rpc::shared::{Fence, RpcShared};
use crate::rpc::{auth, msg, record};
use crate::vfs::Vfs;

/// The handle key of the fuzzing state (no handle of it is ever valid: there
/// are no exports).
const FUZZ_HANDLE_KEY: [u8; 32] = [0x5a; 32];
/// Record bound of the fuzzing dispatchers.
const FUZZ_RECORD_BYTES_MAX: u32 = record::RECORD_BYTES_MAX;
/// Spawned tasks (a reply record committed off the reply path) get this many
/// yields to finish inside the call that spawned them.
const TASK_YIELDS_MAX: usize = 8;
/// `flags` bits of a dispatcher input.
const FLAG_UDP: u8 = 1;
const FLAG_REMOTE: u8 = 1 << 1;
const FLAG_HIGH_PORT: u8 = 1 << 2;
const FLAG_AUTH_NONE: u8 = 1 << 3;
const FLAG_ROOT: u8 = 1 << 4;
const FLAG_MOUNT_V1: u8 = 1 << 5;

/// Record marking: `[bound, chunk, stream...]`. `bound` 255 is the server's
/// record bound, else `bound * 16` bytes; the stream is parsed whole, then
/// fed `chunk` bytes at a time, and both must yield the same records.
pub fn record(data: &[u8]) {
    let Some(([bound, chunk], stream)) = data.split_first_chunk::<2>() else { return };
    let max = if *bound == u8::MAX { record::RECORD_BYTES_MAX } else { u32::from(*bound) * 16 };
    let whole = records(stream, max, stream.len().max(1));
    let chunked = records(stream, max, usize::from(*chunk).max(1));
    assert_eq!(whole, chunked, "record reassembly depends on how the bytes arrive");
}

/// The records of `stream` fed in pieces of `chunk` bytes, and the error
/// that ended it (if any).
fn records(stream: &[u8], max: u32, chunk: usize) -> (Vec<Vec<u8>>, Option<record::RecordError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        if let Some(len) = record::pending_single(&buf, max) {
            assert!(len <= max as usize && buf.len() < len + record::FRAGMENT_HEADER_BYTES);
        }
        loop {
            let before = buf.len();
            let checked = record::check(&buf, max);
            match record::parse(&mut buf, max) {
                Ok(Some(rec)) => {
                    assert!(rec.len() <= max as usize, "record over its bound");
                    assert_eq!(checked.ok(), Some(before - buf.len()), "check and parse disagree");
                    out.push(rec);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// A call record: header and credential decoding, and the refusal built for
/// a header error; the same bytes also as an AUTH_SYS body.
pub fn call_header(data: &[u8]) {
    match msg::decode_call(data) {
        Ok(h) => {
            assert!(h.args_offset <= data.len());
            if let crate::rpc::program::Cred::Sys { gids, machine, .. } = &h.cred {
                assert!(gids.len() <= auth::AUTH_SYS_GIDS_MAX);
                assert!(machine.len() <= 3 * auth::MACHINE_NAME_BYTES_MAX);
            }
        }
        Err(e) => drop(e.reply()),
    }
    let _ = auth::parse_cred(auth::AUTH_SYS, data);
}

/// An NFSv3 call: `[proc, flags, args...]`. Returns the reply message, if
/// any (for checking that seeds decode).
pub fn nfs3(data: &[u8]) -> Option<Vec<u8>> {
    let input = Input::parse(data)?;
    let fix = Fixture::new();
    let ctx = NfsCtx { live: fix.live.clone(), commit: fix.commit.clone(), fence: crate::rpc::shared::Fence::always() };
    dispatch(&fix, ctx, &crate::nfs3::PROGRAM, &input)
}

/// A MOUNT call (v3, or v1 with `FLAG_MOUNT_V1`): `[proc, flags, args...]`.
/// Returns the reply message, if any.
pub fn mount(data: &[u8]) -> Option<Vec<u8>> {
    let input = Input::parse(data)?;
    let fix = Fixture::new();
    let ctx = MountCtx { live: fix.live.clone(), commit: fix.commit.clone() };
    let program = if input.flags & FLAG_MOUNT_V1 != 0 { &crate::mount::PROGRAM_V1 } else { &crate::mount::PROGRAM_V3 };
    dispatch(&fix, ctx, program, &input)
}

/// A portmap call: `[proc, flags, args...]` (SET and UNSET are allowed from
/// loopback with a reserved port, so both paths are reached). Returns the
/// reply message, if any.
pub fn portmap(data: &[u8]) -> Option<Vec<u8>> {
    let input = Input::parse(data)?;
    let fix = Fixture::new();
    dispatch(&fix, Table::default(), &portmap::PROGRAM, &input)
}

/// NLM v4 arguments: `[proc, args...]`, decoded as the handler of `proc` does.
/// Returns whether they decoded.
pub fn nlm(data: &[u8]) -> bool {
    let Some((proc_, args)) = data.split_first() else { return false };
    match u32::from(*proc_) {
        nlm::NLMPROC4_NULL => args.is_empty(),
        nlm::NLMPROC4_TEST | nlm::NLMPROC4_TEST_MSG | nlm::NLMPROC4_GRANTED | nlm::NLMPROC4_GRANTED_MSG => {
            round_trip::<nlmx::Nlm4TestArgs>(args)
        }
        nlm::NLMPROC4_LOCK | nlm::NLMPROC4_LOCK_MSG | nlm::NLMPROC4_NM_LOCK => round_trip::<nlmx::Nlm4LockArgs>(args),
        nlm::NLMPROC4_CANCEL | nlm::NLMPROC4_CANCEL_MSG => round_trip::<nlmx::Nlm4CancArgs>(args),
        nlm::NLMPROC4_UNLOCK | nlm::NLMPROC4_UNLOCK_MSG => round_trip::<nlmx::Nlm4UnlockArgs>(args),
        nlm::NLMPROC4_TEST_RES => round_trip::<nlmx::Nlm4TestRes>(args),
        nlm::NLMPROC4_LOCK_RES..=nlm::NLMPROC4_GRANTED_RES => round_trip::<nlmx::Nlm4Res>(args),
        nlm::NLMPROC4_SM_NOTIFY => round_trip::<nsmx::SmStatus>(args),
        nlm::NLMPROC4_SHARE | nlm::NLMPROC4_UNSHARE => round_trip::<nlmx::Nlm4ShareArgs>(args),
        nlm::NLMPROC4_FREE_ALL => round_trip::<nlmx::Nlm4Notify>(args),
        _ => false,
    }
}

/// NSM arguments: `[proc, args...]`, decoded as the handler of `proc` does.
/// Returns whether they decoded.
pub fn nsm(data: &[u8]) -> bool {
    let Some((proc_, args)) = data.split_first() else { return false };
    match u32::from(*proc_) {
        nsm::SM_STAT => round_trip::<nsmx::SmName>(args),
        nsm::SM_MON => round_trip::<nsmx::Mon>(args),
        nsm::SM_UNMON => round_trip::<nsmx::MonId>(args),
        nsm::SM_UNMON_ALL => round_trip::<nsmx::MyId>(args),
        nsm::SM_NULL | nsm::SM_SIMU_CRASH => args.is_empty(),
        nsm::SM_NOTIFY => round_trip::<nsmx::StatChge>(args),
        _ => false,
    }
}

/// Decode `args` as `T`; a value must survive encoding and decoding again.
fn round_trip<T: Xdr + PartialEq + std::fmt::Debug>(args: &[u8]) -> bool {
    let Ok(value) = nlmx::from_bytes::<T>(args) else { return false };
    let again = nlmx::from_bytes::<T>(&nlmx::to_bytes(&value));
    assert_eq!(again.as_ref(), Ok(&value), "a decoded value does not survive re-encoding");
    true
}

/// A dispatcher input.
struct Input<'a> {
    proc_: u32,
    flags: u8,
    args: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let ([proc_, flags], args) = data.split_first_chunk::<2>()?;
        Some(Input { proc_: u32::from(*proc_), flags: *flags, args })
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn peer(&self) -> SocketAddr {
        let port = if self.has(FLAG_HIGH_PORT) { 40_000 } else { 800 };
        let ip = if self.has(FLAG_REMOTE) { [192, 0, 2, 7] } else { [127, 0, 0, 1] };
        SocketAddr::from((ip, port))
    }

    /// The call record: header (xid 1, the program's number and version,
    /// `self.proc_`), credential, AUTH_NONE verifier, then the arguments.
    fn record<C>(&self, program: &Program<C>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.args.len());
        let mut put = |w: u32| out.extend_from_slice(&w.to_be_bytes());
        for w in [1, msg::MSG_CALL, msg::RPC_VERSION, program.prog, program.vers, self.proc_] {
            put(w);
        }
        if self.has(FLAG_AUTH_NONE) {
            put(auth::AUTH_NONE);
            put(0);
        } else {
            let id = if self.has(FLAG_ROOT) { 0 } else { 1000 };
            // stamp, machine "fz", uid, gid, one supplementary gid.
            let body = [0, 2, u32::from_be_bytes(*b"fz\0\0"), id, id, 1, id];
            put(auth::AUTH_SYS);
            put(body.len() as u32 * 4);
            for w in body {
                put(w);
            }
        }
        put(auth::AUTH_NONE);
        put(0);
        out.extend_from_slice(self.args);
        out
    }
}

/// What every dispatcher input gets fresh: an in-memory state with a handle
/// key, a `Vfs` and export table with no exports.
struct Fixture {
    commit: Arc<dyn Commit>,
    live: Arc<Live>,
}

impl Fixture {
    fn new() -> Self {
        let mut state = State::default();
        let keyed = state.apply(&Command::SetHandleKey { key: FUZZ_HANDLE_KEY });
        assert!(keyed.is_ok(), "a fresh state takes a handle key");
        let vfs = match Vfs::new(Vec::new(), &state) {
            Ok(vfs) => Arc::new(vfs),
            Err(e) => panic!("a Vfs with no exports: {e}"),
        };
        let commit = Arc::new(MemCommit { state: Arc::new(RwLock::new(state)) });
        Fixture { commit, live: Live::fixed(vfs, Arc::new(ExportTable::new(&[]))) }
    }
}

/// Applies every commit to the in-memory state (all commands or, on the
/// first refused one, an error as Raft's commit would return).
struct MemCommit {
    state: Arc<RwLock<State>>,
}

impl Commit for MemCommit {
    fn commit(&self, cmds: Vec<Command>) -> CommitFuture<'_> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let outcomes: Result<Vec<_>, _> = cmds.iter().map(|c| state.apply(c)).collect();
        Box::pin(std::future::ready(outcomes.map_err(CommitError::Rejected)))
    }

    fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }
}

/// The runtime every dispatcher input runs on (one thread, with a blocking
/// pool for the handlers that hand off to it).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("fuzzing runtime: {e}"),
    })
}

/// Run `input` as one call of `program` through a fresh `Dispatcher`. The
/// outcome must be a reply to xid 1, silence, or a close (never a panic).
fn dispatch<C: Send + Sync + 'static>(
    fix: &Fixture,
    ctx: C,
    program: &'static Program<C>,
    input: &Input,
) -> Option<Vec<u8>> {
    let shared = Arc::new(RpcShared::new(fix.commit.clone(), Fence::always(), FUZZ_RECORD_BYTES_MAX));
    let dispatcher = Dispatcher::new(shared, Arc::new(ctx), Registry::new(&[program]));
    let transport = if input.has(FLAG_UDP) { Transport::Udp } else { Transport::Tcp };
    let record = input.record(program);
    runtime().block_on(async {
        let outcome = dispatcher.call(record, input.peer(), transport).await;
        for _ in 0..TASK_YIELDS_MAX {
            tokio::task::yield_now().await;
        }
        match outcome {
            Outcome::Reply(reply) => {
                let reply = reply.to_vec();
                assert_eq!(reply.get(..4), Some(&1u32.to_be_bytes()[..]), "a reply to another xid");
                Some(reply)
            }
            Outcome::Silent | Outcome::Close { .. } => None,
        }
    })
}
