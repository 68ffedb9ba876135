//! The client TCP connections the active node has accepted, so that the node
//! that promotes next can "tickle" each of them (the server's `vip::tickle`):
//! when the active's host dies with its connections open (power-off), no
//! process is left to reset them and each client waits out its TCP
//! retransmissions; an ACK from the VIP with seq 0 draws the client's
//! challenge ACK, the new active (which has no such socket) answers it with a
//! reset, and the client reconnects at once.
//!
//! Each entry is (client address:port, server address:port) and the
//! write-verifier epoch in which it was recorded (`Command::ConnOpen`, applied
//! with the state's epoch at that point, so `apply` stays deterministic). A
//! promotion bumps the epoch before its listeners open, so every entry of an
//! earlier active period has an older epoch than any of the new one; the new
//! active tickles those and then drops them (`Command::ConnsForget`). A
//! connection that closes is removed (`Command::ConnClose`). At most
//! `CONNS_MAX` entries: a full table refuses a new one (`ApplyError::ConnsFull`),
//! which costs that client only the tickle.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, InvariantError, Table};
use crate::limits::CONNS_MAX;

/// One accepted client TCP connection, as the server saw it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TcpConn {
    /// The client's address and source port.
    pub client: SocketAddr,
    /// The server's local address (the VIP, in a cluster) and port.
    pub server: SocketAddr,
}

impl TcpConn {
    /// Both ends of one family, no port 0, no unspecified address.
    pub fn valid(&self) -> bool {
        let (c, s) = (self.client, self.server);
        c.is_ipv4() == s.is_ipv4()
            && c.port() != 0
            && s.port() != 0
            && !c.ip().is_unspecified()
            && !s.ip().is_unspecified()
    }
}

/// An entry as the undo list restores it.
pub(crate) type ConnRow = (TcpConn, u64);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Conns {
    /// Connection → epoch it was recorded in.
    rows: BTreeMap<TcpConn, u64>,
}

impl Conns {
    /// Records `conn` in `epoch` (again: its epoch is updated). Returns the
    /// previous epoch of the entry, `Some(None)` if it is new (for undo).
    pub(crate) fn open(&mut self, conn: &TcpConn, epoch: u64) -> Result<Option<u64>, ApplyError> {
        if !conn.valid() {
            return Err(ApplyError::ConnInvalid);
        }
        if !self.rows.contains_key(conn) && self.len() >= CONNS_MAX {
            return Err(ApplyError::ConnsFull { max: CONNS_MAX });
        }
        Ok(self.rows.insert(*conn, epoch))
    }

    /// Removes `conn`; returns its epoch if it was there (for undo).
    pub(crate) fn close(&mut self, conn: &TcpConn) -> Option<u64> {
        self.rows.remove(conn)
    }

    /// Removes every entry recorded before `epoch`; returns them (for undo).
    pub(crate) fn forget_before(&mut self, epoch: u64) -> Vec<ConnRow> {
        let old: Vec<ConnRow> = self.rows.iter().filter(|(_, &e)| e < epoch).map(|(c, &e)| (*c, e)).collect();
        for (conn, _) in &old {
            self.rows.remove(conn);
        }
        old
    }

    /// Undo helpers: put an entry back, or take one out, without checks.
    pub(crate) fn insert_raw(&mut self, conn: TcpConn, epoch: u64) {
        self.rows.insert(conn, epoch);
    }

    pub(crate) fn remove_raw(&mut self, conn: &TcpConn) {
        self.rows.remove(conn);
    }

    /// (connection, epoch recorded in), ordered by connection.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TcpConn, u64)> + '_ {
        self.rows.iter().map(|(c, &e)| (c, e))
    }

    pub(crate) fn len(&self) -> u64 {
        self.rows.len() as u64
    }

    /// O(1): the bound holds.
    pub(crate) fn check_size(&self) -> Result<(), InvariantError> {
        if self.len() > CONNS_MAX {
            return Err(InvariantError::OverBound { table: Table::Conns, count: self.len(), max: CONNS_MAX });
        }
        Ok(())
    }

    /// O(log n): the entry for `conn`, if present, is valid and not from a
    /// future epoch.
    pub(crate) fn check_conn(&self, conn: &TcpConn, state_epoch: u64) -> Result<(), InvariantError> {
        match self.rows.get(conn) {
            Some(&epoch) => check_row(conn, epoch, state_epoch),
            None => Ok(()),
        }
    }

    /// O(n): the bound holds and every entry is valid.
    pub(crate) fn check(&self, state_epoch: u64) -> Result<(), InvariantError> {
        self.check_size()?;
        self.rows.iter().try_for_each(|(conn, &epoch)| check_row(conn, epoch, state_epoch))
    }
}

fn check_row(conn: &TcpConn, epoch: u64, state_epoch: u64) -> Result<(), InvariantError> {
    if !conn.valid() || epoch > state_epoch {
        return Err(InvariantError::ConnInvalid { client: conn.client, server: conn.server, epoch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(client_port: u16) -> TcpConn {
        TcpConn {
            client: SocketAddr::from(([10, 0, 0, 2], client_port)),
            server: SocketAddr::from(([10, 0, 0, 100], 2049)),
        }
    }

    #[test]
    fn open_close_and_forget_by_epoch() {
        let mut t = Conns::default();
        assert_eq!(t.open(&conn(700), 1), Ok(None));
        assert_eq!(t.open(&conn(701), 1), Ok(None));
        // The client reconnected from the same port in a later period.
        assert_eq!(t.open(&conn(701), 2), Ok(Some(1)));
        assert_eq!(t.open(&conn(702), 2), Ok(None));
        assert_eq!(t.close(&conn(702)), Some(2));
        assert_eq!(t.close(&conn(702)), None);
        assert_eq!(t.forget_before(2), vec![(conn(700), 1)]);
        assert_eq!(t.iter().map(|(c, e)| (*c, e)).collect::<Vec<_>>(), vec![(conn(701), 2)]);
        assert_eq!(t.forget_before(2), vec![]);
        assert_eq!(t.check(2), Ok(()));
    }

    #[test]
    fn entries_are_bounded() {
        let mut t = Conns::default();
        let many = |i: u64| TcpConn {
            client: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1000 + (i % 7) as u16)),
            server: SocketAddr::from(([10, 0, 0, 100], 2049)),
        };
        for i in 0..CONNS_MAX {
            assert_eq!(t.open(&many(i), 0), Ok(None));
        }
        assert_eq!(t.open(&conn(9), 0), Err(ApplyError::ConnsFull { max: CONNS_MAX }));
        // An entry already there is still refreshed, and a close makes room.
        assert_eq!(t.open(&many(0), 0), Ok(Some(0)));
        assert_eq!(t.close(&many(0)), Some(0));
        assert_eq!(t.open(&conn(9), 0), Ok(None));
        assert_eq!(t.len(), CONNS_MAX);
        assert_eq!(t.check(0), Ok(()));
    }

    #[test]
    fn bad_entries_are_refused_and_caught() {
        let mut t = Conns::default();
        let v6 = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 1], 2049));
        assert_eq!(t.open(&TcpConn { server: v6, ..conn(700) }, 0), Err(ApplyError::ConnInvalid));
        assert_eq!(t.open(&conn(0), 0), Err(ApplyError::ConnInvalid));
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 2049));
        assert_eq!(t.open(&TcpConn { server: unspecified, ..conn(700) }, 0), Err(ApplyError::ConnInvalid));
        assert_eq!(t.len(), 0);
        // An entry from an epoch the state has not reached is a broken invariant.
        t.insert_raw(conn(700), 5);
        assert!(matches!(t.check(4), Err(InvariantError::ConnInvalid { epoch: 5, .. })));
        assert!(t.check_conn(&conn(700), 4).is_err());
        assert_eq!(t.check_conn(&conn(700), 5), Ok(()));
    }
}
