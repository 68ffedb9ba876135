//! portmap v2 (RFC 1833 §3, program 100000): NULL, SET, UNSET, GETPORT, DUMP and
//! CALLIT, over TCP and UDP. rpcbind v3/v4 calls get PROG_MISMATCH(2, 2) from the
//! dispatcher, which makes libtirpc clients and the kernel fall back to v2.
//!
//! The mapping table (`table::Table`) is local to this node, not replicated,
//! and is the program's whole context: at startup the node registers its own
//! programs in it (`Table::set_own`). When a system rpcbind already owns port
//! 111, the node registers there instead (`client`, which also asks other
//! hosts' portmappers where their programs listen: GETPORT).
//!
//! As rpcbind and the classic portmap: SET and UNSET are answered FALSE unless
//! the call comes from a loopback address and a reserved source port (below
//! `PRIVILEGED_PORT_END`, i.e. root on this host); refusals are counted in the
//! table and logged at info at the 1st, 2nd, 4th, 8th ... (debug otherwise), so
//! a flood of them cannot flood the log. What a permitted caller may set and
//! unset (not hanfs' own mappings; TCP/UDP and ports 1..=65535 only; a bounded
//! number of foreign mappings) is the table's rule, see `table`.
//!
//! DUMP over UDP lists hanfs' own mappings first and then as many foreign ones
//! as fit in `PMAP_UDP_DUMP_BYTES_MAX` (whole entries, still a well-formed
//! list), so a small datagram cannot draw a large reply; over TCP it lists the
//! whole table, which is bounded by `PMAP_FOREIGN_ENTRIES_MAX` anyway.
//!
//! CALLIT answers with silence: the RFC says no reply is sent when the call
//! fails, and forwarding calls for anyone (an amplification and ACL-bypass
//! vector) is what current rpcbind disables by default too.

pub mod client;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;

use nfs3_types::portmap::{mapping, pmaplist};
use nfs3_types::xdr_codec::List;

pub use self::table::{Owner, SetRefused, Table, UnsetRefused, PMAP_FOREIGN_ENTRIES_MAX};
use crate::rpc::program::{Args, Call, Drc, Proc, ProcError, ProcFuture, Program, Reply, Transport};
use crate::rpc::xdr::{self, Reader};

pub const PMAP_PROGRAM: u32 = 100_000;
pub const PMAP_VERSION: u32 = 2;
/// CALLIT argument bytes accepted (bounded by the record anyway).
pub const CALLIT_ARGS_BYTES_MAX: usize = 64 * 1024;
/// Reserved ports end here: SET and UNSET want a source port below it.
pub const PRIVILEGED_PORT_END: u16 = 1024;
/// Result bytes of a DUMP over UDP at most (a datagram that fits an Ethernet
/// frame with the RPC, UDP and IP headers).
pub const PMAP_UDP_DUMP_BYTES_MAX: usize = 1400;
/// Bytes of one pmaplist entry: the "more" TRUE and the four words of a mapping.
const PMAPLIST_ENTRY_BYTES: usize = 4 + 16;
/// Bytes of the pmaplist's closing FALSE.
const PMAPLIST_END_BYTES: usize = 4;

static PROCS: [Proc<Table>; 6] = [
    Proc { name: "NULL", handler: null, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "SET", handler: set, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "UNSET", handler: unset, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "GETPORT", handler: getport, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "DUMP", handler: dump, drc: Drc::Skip, recover: None, needs_intent: None },
    Proc { name: "CALLIT", handler: callit, drc: Drc::Skip, recover: None, needs_intent: None },
];

pub static PROGRAM: Program<Table> = Program { name: "portmap", prog: PMAP_PROGRAM, vers: PMAP_VERSION, procs: &PROCS };

fn decode_mapping(args: &[u8]) -> Result<mapping, ProcError> {
    let mut r = Reader::new(args);
    let garbage = |_| ProcError::GarbageArgs;
    let m = mapping {
        prog: r.u32().map_err(garbage)?,
        vers: r.u32().map_err(garbage)?,
        prot: r.u32().map_err(garbage)?,
        port: r.u32().map_err(garbage)?,
    };
    r.finish().map_err(garbage)?;
    Ok(m)
}

/// SET and UNSET change what other hosts are told, so only root on this host
/// may: a loopback source address and a reserved source port.
fn may_change(call: &Call) -> bool {
    let loopback = match call.peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    loopback && call.peer.port() < PRIVILEGED_PORT_END
}

/// Count a SET/UNSET refused because of its sender, and log it without
/// flooding: at info when the total is a power of two, else at debug.
fn refuse_sender(table: &Table, call: &Call, proc_: &'static str, m: &mapping) {
    let refused = table.count_refused();
    if refused.is_power_of_two() {
        tracing::info!(peer = %call.peer, proc_, prog = m.prog, vers = m.vers, refused,
            "portmap {proc_} refused: not from a reserved port on loopback (logged at the 1st, 2nd, 4th ... refusal)");
    } else {
        tracing::debug!(peer = %call.peer, proc_, prog = m.prog, vers = m.vers, refused, "portmap {proc_} refused");
    }
}

fn null(_table: Arc<Table>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        Reader::new(&args).finish().map_err(|_| ProcError::GarbageArgs)?;
        Ok(Reply::new(Vec::new()))
    })
}

fn set(table: Arc<Table>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        let ok = if !may_change(&call) {
            refuse_sender(&table, &call, "SET", &m);
            false
        } else {
            match table.set_foreign(m) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(peer = %call.peer, prog = m.prog, vers = m.vers, prot = m.prot, port = m.port, reason = %e, "portmap SET refused");
                    false
                }
            }
        };
        Ok(Reply::new(xdr::encode(&ok)))
    })
}

fn unset(table: Arc<Table>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        let ok = if !may_change(&call) {
            refuse_sender(&table, &call, "UNSET", &m);
            false
        } else {
            match table.unset_foreign(m.prog, m.vers) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(peer = %call.peer, prog = m.prog, vers = m.vers, reason = %e, "portmap UNSET refused");
                    false
                }
            }
        };
        Ok(Reply::new(xdr::encode(&ok)))
    })
}

fn getport(table: Arc<Table>, _call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        Ok(Reply::new(xdr::encode(&table.getport(m.prog, m.vers, m.prot))))
    })
}

fn dump(table: Arc<Table>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        Reader::new(&args).finish().map_err(|_| ProcError::GarbageArgs)?;
        let mut entries = table.dump();
        if call.transport == Transport::Udp {
            let fit = PMAP_UDP_DUMP_BYTES_MAX.saturating_sub(PMAPLIST_END_BYTES) / PMAPLIST_ENTRY_BYTES;
            if entries.len() > fit {
                tracing::debug!(peer = %call.peer, entries = entries.len(), fit, "portmap DUMP over UDP truncated");
                entries.truncate(fit);
            }
        }
        let list: pmaplist = List(entries);
        Ok(Reply::new(xdr::encode(&list)))
    })
}

fn callit(_table: Arc<Table>, call: Call, args: Args) -> ProcFuture {
    Box::pin(async move {
        let mut r = Reader::new(&args);
        let garbage = |_| ProcError::GarbageArgs;
        let prog = r.u32().map_err(garbage)?;
        let vers = r.u32().map_err(garbage)?;
        let proc_ = r.u32().map_err(garbage)?;
        r.opaque(CALLIT_ARGS_BYTES_MAX).map_err(garbage)?;
        r.finish().map_err(garbage)?;
        tracing::debug!(peer = %call.peer, prog, vers, proc_, "portmap CALLIT not forwarded (no reply, as RFC 1833 for a failed call)");
        Err(ProcError::NoReply)
    })
}

#[cfg(test)]
mod tests;
