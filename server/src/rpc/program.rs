//! The interface between the RPC layer and the programs. Each program is a
//! table from procedure number to `Proc<C>`, like nfsd's `nfsd_procedures3`,
//! where `C` is the program's own context (whatever its handlers need; the RPC
//! layer never looks inside it). Handlers never see sockets, record marking or
//! the DRC: they get their context, the checked `Call` and the argument bytes,
//! and return the reply body plus the replicated effects that must be
//! committed before it is sent. A non-idempotent procedure may also have a
//! `recover` function: it answers a retransmission whose original left only
//! its intent in the DRC (see `dispatch`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hanfs_state::Command;

/// Caller credentials, already parsed from the RPC call header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cred {
    /// AUTH_NONE (treated as anonymous by the export's squash rules).
    None,
    /// AUTH_SYS / AUTH_UNIX. At most 16 supplementary gids (checked by the decoder).
    Sys { uid: u32, gid: u32, gids: Vec<u32>, machine: String },
}

/// Everything a handler may know about the call itself.
#[derive(Clone, Debug)]
pub struct Call {
    pub peer: SocketAddr,
    pub xid: u32,
    pub cred: Cred,
    pub transport: Transport,
    /// For a `recover` run only: when the original's intent was recorded
    /// (the recording node's `unix_ms`), so recovery can tell an object the
    /// original made from one that was there before.
    pub intent_ms: Option<u64>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// What a handler produces on success.
pub struct Reply {
    /// XDR-encoded procedure result (everything after the accepted-reply header).
    pub body: Vec<u8>,
    /// Replicated state changes this reply depends on (new handles, rmtab ...).
    /// Dispatch commits them, together with the DRC record, before sending `body`.
    pub effects: Vec<Command>,
}

impl Reply {
    pub fn new(body: Vec<u8>) -> Self {
        Reply { body, effects: Vec::new() }
    }
    pub fn with_effects(body: Vec<u8>, effects: Vec<Command>) -> Self {
        Reply { body, effects }
    }
}

/// Why a handler produced no result body.
#[derive(Debug)]
pub enum ProcError {
    /// The arguments did not decode or broke a limit: GARBAGE_ARGS.
    GarbageArgs,
    /// The server failed in a way the protocol has no status for: SYSTEM_ERR.
    SystemErr,
    /// Send nothing at all (a call the protocol answers with silence, such as
    /// a failed broadcast forward, RFC 1833 CALLIT).
    NoReply,
}

pub type ProcFuture = Pin<Box<dyn Future<Output = Result<Reply, ProcError>> + Send>>;

/// A handler takes its program's context, the call and the raw argument bytes
/// (bounded by the record size limit) and decodes them itself with the
/// program's checked decoders.
pub type Handler<C> = fn(Arc<C>, Call, Args) -> ProcFuture;

/// Answers a retransmission of a call whose intent was recorded but whose
/// reply was not (the active died in between): works out from the disk what
/// the original did and answers as it would have, running the call only if it
/// concludes the original never ran. Same arguments and result as `Handler`.
pub type Recover<C> = fn(Arc<C>, Call, Args) -> ProcFuture;

/// A call's argument bytes: the tail of the record they arrived in. The RPC
/// header before them is skipped, not moved out of the way, so a 1 MiB WRITE's
/// payload is never copied between the socket and the handler.
pub struct Args {
    record: Vec<u8>,
    start: usize,
}

impl Args {
    /// The bytes of `record` from `start` (the whole record past its end: none).
    pub fn new(record: Vec<u8>, start: usize) -> Args {
        let start = start.min(record.len());
        Args { record, start }
    }
}

impl From<Vec<u8>> for Args {
    fn from(args: Vec<u8>) -> Args {
        Args { record: args, start: 0 }
    }
}

impl std::ops::Deref for Args {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.record.get(self.start..).unwrap_or_default()
    }
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Args({} bytes)", self.len())
    }
}

/// Whether, and how, a procedure's reply is remembered in the replicated
/// duplicate-request cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Drc {
    /// Idempotent: re-executing is harmless.
    Skip,
    /// Non-idempotent against the disk: its intent is committed before the
    /// handler runs, its reply after (with its effects). A retransmission
    /// gets the reply, or, if only the intent is there, the answer of the
    /// procedure's `recover` function (the handler when it has none).
    Record,
    /// Non-idempotent, but re-executing against the replicated state is safe
    /// (a call whose only effect is its own commands, e.g. NLM LOCK/UNLOCK):
    /// no intent; the reply is recorded with its effects, and a
    /// retransmission gets it from the cache or is executed again.
    ReplyOnly,
}

pub struct Proc<C: 'static> {
    pub name: &'static str,
    pub handler: Handler<C>,
    pub drc: Drc,
    /// For `Drc::Record`: how to answer a retransmission found as an intent
    /// without a reply. `None`: run the handler (for a call that is safe to
    /// run again against the disk).
    pub recover: Option<Recover<C>>,
    /// For `Drc::Record`: whether this call's arguments make it
    /// non-idempotent, so it needs its intent (`None`: always). A call that
    /// does not is handled as `Drc::ReplyOnly` (e.g. an unguarded SETATTR:
    /// setting the same attributes again is harmless, DESIGN.md invariant 6).
    pub needs_intent: Option<NeedsIntent>,
}

/// Looks at a call's arguments (after the RPC header): true when it needs
/// its intent recorded. Undecodable arguments answer true (the handler then
/// refuses them anyway).
pub type NeedsIntent = fn(&[u8]) -> bool;

/// One program version: its number, version and procedure table, whose
/// handlers all take the context `C`.
pub struct Program<C: 'static> {
    pub name: &'static str,
    pub prog: u32,
    pub vers: u32,
    pub procs: &'static [Proc<C>],
}
