//! portmap v2 (RFC 1833 §3, program 100000): NULL, SET, UNSET, GETPORT, DUMP and
//! CALLIT, over TCP and UDP. rpcbind v3/v4 calls get PROG_MISMATCH(2, 2) from the
//! dispatcher, which makes libtirpc clients and the kernel fall back to v2.
//!
//! The mapping table (`Table`) is local to this node, not replicated, and is
//! the program's whole context: at startup the node registers its own
//! programs in it. When a system rpcbind already owns port 111, the node
//! registers there instead (`client`, which also asks other hosts' portmappers
//! where their programs listen: GETPORT).
//!
//! CALLIT answers with silence: the RFC says no reply is sent when the call
//! fails, and forwarding calls for anyone (an amplification and ACL-bypass
//! vector) is what current rpcbind disables by default too.

pub mod client;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use nfs3_types::portmap::{mapping, pmaplist};
use nfs3_types::xdr_codec::List;

use crate::rpc::program::{Call, Drc, Proc, ProcError, ProcFuture, Program, Reply};
use crate::rpc::xdr::{self, Reader};

pub const PMAP_PROGRAM: u32 = 100_000;
pub const PMAP_VERSION: u32 = 2;
/// Mappings the table holds at most (SET beyond it answers false).
pub const PMAP_ENTRIES_MAX: usize = 1024;
/// CALLIT argument bytes accepted (bounded by the record anyway).
pub const CALLIT_ARGS_BYTES_MAX: usize = 64 * 1024;

/// (prog, vers, prot) → port: the context of the portmap program.
#[derive(Default)]
pub struct Table {
    map: Mutex<BTreeMap<(u32, u32, u32), u32>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u32, u32, u32), u32>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a mapping. False if (prog, vers, prot) is already mapped to
    /// another port, or the table is full.
    pub fn set(&self, m: mapping) -> bool {
        let mut map = self.lock();
        match map.get(&(m.prog, m.vers, m.prot)) {
            Some(port) => *port == m.port,
            None if map.len() >= PMAP_ENTRIES_MAX => false,
            None => {
                map.insert((m.prog, m.vers, m.prot), m.port);
                true
            }
        }
    }

    /// Remove every mapping of (prog, vers), whatever the protocol. True if
    /// any was removed.
    pub fn unset(&self, prog: u32, vers: u32) -> bool {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|(p, v, _), _| !(*p == prog && *v == vers));
        map.len() != before
    }

    /// The port of (prog, vers, prot), or 0.
    pub fn getport(&self, prog: u32, vers: u32, prot: u32) -> u32 {
        self.lock().get(&(prog, vers, prot)).copied().unwrap_or(0)
    }

    pub fn dump(&self) -> Vec<mapping> {
        self.lock().iter().map(|(&(prog, vers, prot), &port)| mapping { prog, vers, prot, port }).collect()
    }
}

static PROCS: [Proc<Table>; 6] = [
    Proc { name: "NULL", handler: null, drc: Drc::Skip, recover: None },
    Proc { name: "SET", handler: set, drc: Drc::Skip, recover: None },
    Proc { name: "UNSET", handler: unset, drc: Drc::Skip, recover: None },
    Proc { name: "GETPORT", handler: getport, drc: Drc::Skip, recover: None },
    Proc { name: "DUMP", handler: dump, drc: Drc::Skip, recover: None },
    Proc { name: "CALLIT", handler: callit, drc: Drc::Skip, recover: None },
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

/// SET and UNSET change what other hosts are told, so only local callers may.
fn may_change(call: &Call) -> bool {
    match call.peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

fn null(_table: Arc<Table>, _call: Call, args: Vec<u8>) -> ProcFuture {
    Box::pin(async move {
        Reader::new(&args).finish().map_err(|_| ProcError::GarbageArgs)?;
        Ok(Reply::new(Vec::new()))
    })
}

fn set(table: Arc<Table>, call: Call, args: Vec<u8>) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        let ok = may_change(&call) && table.set(m);
        if !may_change(&call) {
            tracing::warn!(peer = %call.peer, prog = m.prog, "portmap SET from a remote host refused");
        }
        Ok(Reply::new(xdr::encode(&ok)))
    })
}

fn unset(table: Arc<Table>, call: Call, args: Vec<u8>) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        let ok = may_change(&call) && table.unset(m.prog, m.vers);
        Ok(Reply::new(xdr::encode(&ok)))
    })
}

fn getport(table: Arc<Table>, _call: Call, args: Vec<u8>) -> ProcFuture {
    Box::pin(async move {
        let m = decode_mapping(&args)?;
        Ok(Reply::new(xdr::encode(&table.getport(m.prog, m.vers, m.prot))))
    })
}

fn dump(table: Arc<Table>, _call: Call, args: Vec<u8>) -> ProcFuture {
    Box::pin(async move {
        Reader::new(&args).finish().map_err(|_| ProcError::GarbageArgs)?;
        let list: pmaplist = List(table.dump());
        Ok(Reply::new(xdr::encode(&list)))
    })
}

fn callit(_table: Arc<Table>, call: Call, args: Vec<u8>) -> ProcFuture {
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
mod tests {
    use super::*;

    fn m(prog: u32, vers: u32, prot: u32, port: u32) -> mapping {
        mapping { prog, vers, prot, port }
    }

    #[test]
    fn set_unset_getport() {
        let t = Table::default();
        assert!(t.set(m(100003, 3, 6, 2049)));
        assert!(t.set(m(100003, 3, 6, 2049)), "same mapping again is fine");
        assert!(!t.set(m(100003, 3, 6, 2050)), "another port for the same key is refused");
        assert!(t.set(m(100003, 3, 17, 2049)));
        assert_eq!(t.getport(100003, 3, 6), 2049);
        assert_eq!(t.getport(100003, 4, 6), 0);
        assert_eq!(t.dump().len(), 2);
        assert!(t.unset(100003, 3));
        assert!(!t.unset(100003, 3));
        assert_eq!(t.getport(100003, 3, 17), 0);
    }

    #[test]
    fn table_is_bounded() {
        let t = Table::default();
        for i in 0..PMAP_ENTRIES_MAX as u32 {
            assert!(t.set(m(i, 1, 6, 1)));
        }
        assert!(!t.set(m(u32::MAX, 1, 6, 1)));
    }
}
