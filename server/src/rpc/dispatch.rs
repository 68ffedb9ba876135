//! The one dispatch path for every program (nfsd's `nfsd_dispatch`): decode the
//! header, find the program and procedure in the registry, consult the
//! duplicate-request cache, run the handler, commit its effects (with the DRC
//! record) and build the reply message. Transports call `Dispatcher::call` and
//! send whatever it returns.
//!
//! A `Dispatcher<C>` serves the programs of one context type `C`, and hands
//! that context to every handler; a program with a new context type gets its
//! own dispatcher (and listener) without any change here.

use std::net::SocketAddr;
use std::sync::Arc;

use hanfs_state::{Command, DrcKey};

use super::msg::{self, AcceptStat, CallHeader};
use super::program::{Call, Drc, Proc, ProcError, Program, Transport};
use super::shared::{Claim, RpcShared};

/// The programs one listener serves.
pub struct Registry<C: 'static> {
    programs: Vec<&'static Program<C>>,
}

enum Lookup<C: 'static> {
    Found(&'static Program<C>),
    Mismatch { low: u32, high: u32 },
    Unavailable,
}

impl<C> Registry<C> {
    pub fn new(programs: &[&'static Program<C>]) -> Self {
        Registry { programs: programs.to_vec() }
    }

    pub fn programs(&self) -> &[&'static Program<C>] {
        &self.programs
    }

    fn find(&self, prog: u32, vers: u32) -> Lookup<C> {
        let mut range: Option<(u32, u32)> = None;
        for p in self.programs.iter().filter(|p| p.prog == prog) {
            if p.vers == vers {
                return Lookup::Found(p);
            }
            range = Some(match range {
                None => (p.vers, p.vers),
                Some((low, high)) => (low.min(p.vers), high.max(p.vers)),
            });
        }
        match range {
            Some((low, high)) => Lookup::Mismatch { low, high },
            None => Lookup::Unavailable,
        }
    }
}

/// FNV-1a 64 of the argument bytes: the DRC's argument checksum.
pub fn args_checksum(args: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    args.iter().fold(OFFSET_BASIS, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Milliseconds since the Unix epoch, stamped into DRC records by this node.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Answers calls for one registry of programs sharing the context `C`.
pub struct Dispatcher<C: 'static> {
    shared: Arc<RpcShared>,
    ctx: Arc<C>,
    registry: Registry<C>,
}

impl<C: Send + Sync + 'static> Dispatcher<C> {
    pub fn new(shared: Arc<RpcShared>, ctx: Arc<C>, registry: Registry<C>) -> Self {
        Dispatcher { shared, ctx, registry }
    }

    pub fn shared(&self) -> &Arc<RpcShared> {
        &self.shared
    }

    pub fn registry(&self) -> &Registry<C> {
        &self.registry
    }

    /// Handle one call record; returns the reply message, or `None` when
    /// nothing must be sent (not a call, a retransmission in progress, a commit
    /// failure the client will retry, a procedure that answers with silence,
    /// or this node may no longer serve: `RpcShared::serving_now`, fencing).
    pub async fn call(&self, record: Vec<u8>, peer: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        self.call_unfenced(record, peer, transport).await.filter(|_| self.shared.serving_now())
    }

    async fn call_unfenced(&self, mut record: Vec<u8>, peer: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        let header = match msg::decode_call(&record) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%peer, error = ?e, "refused call header");
                return e.reply();
            }
        };
        let program = match self.registry.find(header.prog, header.vers) {
            Lookup::Found(p) => p,
            Lookup::Mismatch { low, high } => return Some(msg::prog_mismatch(header.xid, low, high)),
            Lookup::Unavailable => return Some(msg::accepted(header.xid, AcceptStat::ProgUnavail)),
        };
        let Some(proc_) = usize::try_from(header.proc_).ok().and_then(|i| program.procs.get(i)) else {
            return Some(msg::accepted(header.xid, AcceptStat::ProcUnavail));
        };
        // The arguments keep the record's buffer: the header is removed in
        // place (a move within the buffer, no second allocation of a 1 MiB WRITE).
        record.drain(..header.args_offset.min(record.len()));
        let args = record;
        tracing::trace!(%peer, xid = header.xid, program = program.name, proc_ = proc_.name, "call");
        self.run(&header, proc_, args, peer, transport).await
    }

    /// Runs the call: for `Drc::Record` procedures first the duplicate-request
    /// cache (a retransmission of a running call is dropped, one of a finished
    /// call answered from the cache), then the handler, then one commit of its
    /// effects (plus the DRC record) before the reply is returned.
    async fn run(
        &self,
        header: &CallHeader,
        proc_: &Proc<C>,
        args: Vec<u8>,
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        // Held until the reply is built; released however the call ends.
        let mut claim = None;
        if let Drc::Record = proc_.drc {
            let key = DrcKey {
                client: peer.ip().to_string(),
                xid: header.xid,
                prog: header.prog,
                vers: header.vers,
                proc_: header.proc_,
                args_sum: args_checksum(&args),
            };
            let Some(held) = Claim::take(&self.shared.in_progress, key) else {
                tracing::debug!(%peer, xid = header.xid, proc_ = proc_.name, "retransmission while in progress; dropped");
                return None;
            };
            if let Some(body) = drc_lookup(&self.shared, &held.key) {
                tracing::debug!(%peer, xid = header.xid, proc_ = proc_.name, "answered from the DRC");
                return Some(msg::success(header.xid, &body));
            }
            claim = Some(held);
        }
        let call = Call { peer, xid: header.xid, cred: header.cred.clone(), transport };
        let reply = match (proc_.handler)(self.ctx.clone(), call, args).await {
            Ok(reply) => reply,
            Err(e) => return error_reply(header.xid, e, proc_.name),
        };
        let mut cmds = reply.effects;
        if let Some(held) = &claim {
            // The state refuses oversize DRC entries, and that refusal would fail
            // the effects too; such a reply is sent uncached instead.
            if reply.body.len() as u64 <= hanfs_state::DRC_REPLY_BYTES_MAX {
                cmds.push(Command::DrcInsert { key: held.key.clone(), reply: reply.body.clone(), now_ms: now_ms() });
            } else {
                tracing::warn!(%peer, xid = header.xid, proc_ = proc_.name, bytes = reply.body.len(), "reply too large for the DRC; not cached");
            }
        }
        if !cmds.is_empty() {
            if let Err(e) = self.shared.commit.commit(cmds).await {
                tracing::warn!(%peer, xid = header.xid, proc_ = proc_.name, error = %e, "commit failed; reply dropped");
                return None;
            }
        }
        Some(msg::success(header.xid, &reply.body))
    }
}

fn error_reply(xid: u32, e: ProcError, name: &str) -> Option<Vec<u8>> {
    match e {
        ProcError::GarbageArgs => Some(msg::accepted(xid, AcceptStat::GarbageArgs)),
        ProcError::SystemErr => {
            tracing::warn!(xid, proc_ = name, "SYSTEM_ERR");
            Some(msg::accepted(xid, AcceptStat::SystemErr))
        }
        ProcError::NoReply => None,
    }
}

/// The cached reply body for `key`, if the replicated DRC holds one.
fn drc_lookup(shared: &RpcShared, key: &DrcKey) -> Option<Vec<u8>> {
    let state = shared.commit.state();
    let guard = match state.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.drc_get(key).map(|r| r.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(args_checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(args_checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
