//! The portmap mapping table: (prog, vers, prot) → port, each mapping owned
//! either by hanfs (the programs the node registers when its listeners open)
//! or by a local caller of SET.
//!
//! Ownership rules (the SET/UNSET handlers check the caller first: loopback
//! and a reserved source port, i.e. root on this host):
//! - hanfs' own mappings are registered by `set_own`, which replaces whatever
//!   a caller may have set for the same (prog, vers); SET and UNSET can
//!   neither remove nor replace them, nor add another protocol to a
//!   (prog, vers) hanfs registered.
//! - a foreign mapping (set by SET) may be unset by any permitted caller:
//!   portmap v2 over UDP/TCP carries no uid, and every loopback caller on a
//!   reserved port is root on this host, so they are all the same owner.
//! - only TCP and UDP, ports 1..=65535, and at most `PMAP_FOREIGN_ENTRIES_MAX`
//!   foreign mappings beside hanfs' own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use nfs3_types::portmap::{mapping, IPPROTO_TCP, IPPROTO_UDP};

/// Foreign mappings (set by SET, not by hanfs) the table holds at most.
pub const PMAP_FOREIGN_ENTRIES_MAX: usize = 64;
/// The highest port a mapping may name.
pub const PMAP_PORT_MAX: u32 = u16::MAX as u32;

/// Who set a mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The node itself, for the programs it serves: never removed by UNSET.
    Hanfs,
    /// A permitted local caller of SET (root on this host).
    Local,
}

/// Why SET was answered FALSE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetRefused {
    #[error("protocol {0} is neither TCP (6) nor UDP (17)")]
    Protocol(u32),
    #[error("port {0} is outside 1..=65535")]
    Port(u32),
    #[error("program {prog} version {vers} is hanfs' own")]
    HanfsOwn { prog: u32, vers: u32 },
    #[error("already mapped to port {0}")]
    Taken(u32),
    #[error("table full ({PMAP_FOREIGN_ENTRIES_MAX} foreign mappings)")]
    Full,
}

/// Why UNSET was answered FALSE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsetRefused {
    #[error("program {prog} version {vers} is hanfs' own")]
    HanfsOwn { prog: u32, vers: u32 },
    #[error("no such mapping")]
    NotMapped,
}

#[derive(Copy, Clone, Debug)]
struct Entry {
    port: u32,
    owner: Owner,
}

/// (prog, vers, prot) → port and owner: the context of the portmap program.
/// Local to this node, not replicated.
#[derive(Default)]
pub struct Table {
    map: Mutex<BTreeMap<(u32, u32, u32), Entry>>,
    /// SET and UNSET calls refused because of who sent them (see `mod.rs`).
    refused: AtomicU64,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(u32, u32, u32), Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register one of hanfs' own mappings, replacing whatever is mapped for
    /// its key and dropping foreign mappings of the same (prog, vers).
    pub fn set_own(&self, m: mapping) {
        let mut map = self.lock();
        map.retain(|&(p, v, _), e| !(p == m.prog && v == m.vers && e.owner == Owner::Local));
        map.insert((m.prog, m.vers, m.prot), Entry { port: m.port, owner: Owner::Hanfs });
    }

    /// SET from a permitted caller: a foreign mapping. Setting the same
    /// foreign mapping again is fine.
    pub fn set_foreign(&self, m: mapping) -> Result<(), SetRefused> {
        if m.prot != IPPROTO_TCP && m.prot != IPPROTO_UDP {
            return Err(SetRefused::Protocol(m.prot));
        }
        if m.port == 0 || m.port > PMAP_PORT_MAX {
            return Err(SetRefused::Port(m.port));
        }
        let mut map = self.lock();
        if owned_by_hanfs(&map, m.prog, m.vers) {
            return Err(SetRefused::HanfsOwn { prog: m.prog, vers: m.vers });
        }
        match map.get(&(m.prog, m.vers, m.prot)) {
            Some(e) if e.port == m.port => Ok(()),
            Some(e) => Err(SetRefused::Taken(e.port)),
            None if foreign_count(&map) >= PMAP_FOREIGN_ENTRIES_MAX => Err(SetRefused::Full),
            None => {
                map.insert((m.prog, m.vers, m.prot), Entry { port: m.port, owner: Owner::Local });
                Ok(())
            }
        }
    }

    /// UNSET from a permitted caller: remove every foreign mapping of
    /// (prog, vers), whatever the protocol. Refused for hanfs' own.
    pub fn unset_foreign(&self, prog: u32, vers: u32) -> Result<(), UnsetRefused> {
        let mut map = self.lock();
        if owned_by_hanfs(&map, prog, vers) {
            return Err(UnsetRefused::HanfsOwn { prog, vers });
        }
        let before = map.len();
        map.retain(|&(p, v, _), _| !(p == prog && v == vers));
        if map.len() == before {
            return Err(UnsetRefused::NotMapped);
        }
        Ok(())
    }

    /// The port of (prog, vers, prot), or 0.
    pub fn getport(&self, prog: u32, vers: u32, prot: u32) -> u32 {
        self.lock().get(&(prog, vers, prot)).map_or(0, |e| e.port)
    }

    /// Every mapping: hanfs' own first, then the foreign ones (so that a
    /// size-bounded DUMP always lists what this node serves).
    pub fn dump(&self) -> Vec<mapping> {
        let map = self.lock();
        let of = |owner: Owner| {
            map.iter().filter(move |(_, e)| e.owner == owner).map(|(&(prog, vers, prot), e)| mapping {
                prog,
                vers,
                prot,
                port: e.port,
            })
        };
        of(Owner::Hanfs).chain(of(Owner::Local)).collect()
    }

    /// The owner of (prog, vers, prot), if mapped.
    pub fn owner(&self, prog: u32, vers: u32, prot: u32) -> Option<Owner> {
        self.lock().get(&(prog, vers, prot)).map(|e| e.owner)
    }

    /// Count one refused SET/UNSET; the new total.
    pub fn count_refused(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// SET/UNSET calls refused so far because of who sent them.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

fn owned_by_hanfs(map: &BTreeMap<(u32, u32, u32), Entry>, prog: u32, vers: u32) -> bool {
    map.range((prog, vers, 0)..=(prog, vers, u32::MAX)).any(|(_, e)| e.owner == Owner::Hanfs)
}

fn foreign_count(map: &BTreeMap<(u32, u32, u32), Entry>) -> usize {
    map.values().filter(|e| e.owner == Owner::Local).count()
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
        assert_eq!(t.set_foreign(m(300_000, 3, 6, 2049)), Ok(()));
        assert_eq!(t.set_foreign(m(300_000, 3, 6, 2049)), Ok(()), "same mapping again is fine");
        assert_eq!(t.set_foreign(m(300_000, 3, 6, 2050)), Err(SetRefused::Taken(2049)));
        assert_eq!(t.set_foreign(m(300_000, 3, 17, 2049)), Ok(()));
        assert_eq!(t.getport(300_000, 3, 6), 2049);
        assert_eq!(t.getport(300_000, 4, 6), 0);
        assert_eq!(t.owner(300_000, 3, 6), Some(Owner::Local));
        assert_eq!(t.dump().len(), 2);
        assert_eq!(t.unset_foreign(300_000, 3), Ok(()));
        assert_eq!(t.unset_foreign(300_000, 3), Err(UnsetRefused::NotMapped));
        assert_eq!(t.getport(300_000, 3, 17), 0);
    }

    #[test]
    fn only_tcp_udp_and_real_ports() {
        let t = Table::default();
        assert_eq!(t.set_foreign(m(300_000, 1, 99, 4000)), Err(SetRefused::Protocol(99)));
        assert_eq!(t.set_foreign(m(300_000, 1, 6, 70_000)), Err(SetRefused::Port(70_000)));
        assert_eq!(t.set_foreign(m(300_000, 1, 6, 0)), Err(SetRefused::Port(0)));
        assert_eq!(t.set_foreign(m(300_000, 1, 17, 65_535)), Ok(()));
        assert_eq!(t.dump().len(), 1);
    }

    #[test]
    fn hanfs_own_mappings_stay() {
        let t = Table::default();
        assert_eq!(t.set_foreign(m(100_003, 3, 17, 5000)), Ok(()));
        t.set_own(m(100_003, 3, 6, 2049));
        assert_eq!(t.getport(100_003, 3, 17), 0, "set_own drops foreign mappings of its (prog, vers)");
        assert_eq!(t.owner(100_003, 3, 6), Some(Owner::Hanfs));
        let own = SetRefused::HanfsOwn { prog: 100_003, vers: 3 };
        assert_eq!(t.set_foreign(m(100_003, 3, 6, 2049)), Err(own.clone()));
        assert_eq!(t.set_foreign(m(100_003, 3, 6, 4000)), Err(own.clone()));
        assert_eq!(t.set_foreign(m(100_003, 3, 17, 4000)), Err(own), "no other protocol either");
        assert_eq!(t.unset_foreign(100_003, 3), Err(UnsetRefused::HanfsOwn { prog: 100_003, vers: 3 }));
        assert_eq!(t.getport(100_003, 3, 6), 2049);
        t.set_own(m(100_003, 3, 6, 2050));
        assert_eq!(t.getport(100_003, 3, 6), 2050, "hanfs replaces its own");
        assert_eq!(t.set_foreign(m(100_003, 4, 6, 4000)), Ok(()), "another version is not hanfs'");
    }

    #[test]
    fn foreign_mappings_are_bounded_beside_hanfs_own() {
        let t = Table::default();
        for prog in 0..16 {
            t.set_own(m(prog, 1, 6, 1));
        }
        for i in 0..PMAP_FOREIGN_ENTRIES_MAX as u32 {
            assert_eq!(t.set_foreign(m(1_000 + i, 1, 6, 1)), Ok(()));
        }
        assert_eq!(t.set_foreign(m(u32::MAX, 1, 6, 1)), Err(SetRefused::Full));
        assert_eq!(t.set_foreign(m(1_000, 1, 6, 1)), Ok(()), "an existing mapping again is fine");
        t.set_own(m(u32::MAX - 1, 1, 6, 1));
        assert_eq!(t.getport(u32::MAX - 1, 1, 6), 1, "hanfs' own are not counted");
        let dump = t.dump();
        assert_eq!(dump.len(), 17 + PMAP_FOREIGN_ENTRIES_MAX);
        assert!(dump.iter().take(17).all(|e| t.owner(e.prog, e.vers, e.prot) == Some(Owner::Hanfs)), "own first");
        assert_eq!(t.unset_foreign(1_000, 1), Ok(()));
        assert_eq!(t.set_foreign(m(u32::MAX, 1, 6, 1)), Ok(()), "room again");
    }
}
