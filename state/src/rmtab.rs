//! rmtab: the set of (client, path) mounts, as MOUNT DUMP and `showmount -a` report it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, InvariantError, Table};
use crate::exports::path_valid;
use crate::limits::{CLIENT_BYTES_MAX, RMTAB_ROWS_MAX};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rmtab {
    rows: BTreeSet<(String, String)>,
}

/// A client name is non-empty, has no NUL and fits CLIENT_BYTES_MAX.
pub(crate) fn client_valid(client: &str) -> bool {
    !client.is_empty() && client.len() as u64 <= CLIENT_BYTES_MAX && !client.as_bytes().contains(&0)
}

impl Rmtab {
    /// Adds the row; returns true if it was new (for undo).
    pub(crate) fn mount(&mut self, client: &str, path: &str) -> Result<bool, ApplyError> {
        if !client_valid(client) {
            return Err(ApplyError::ClientInvalid);
        }
        if !path_valid(path) {
            return Err(ApplyError::MountPathInvalid);
        }
        let row = (client.to_owned(), path.to_owned());
        if self.rows.contains(&row) {
            return Ok(false);
        }
        if self.len() >= RMTAB_ROWS_MAX {
            return Err(ApplyError::RmtabFull { max: RMTAB_ROWS_MAX });
        }
        Ok(self.rows.insert(row))
    }

    /// Removes the row; returns true if it was there (for undo).
    pub(crate) fn unmount(&mut self, client: &str, path: &str) -> bool {
        self.rows.remove(&(client.to_owned(), path.to_owned()))
    }

    /// Removes every row of `client`; returns the removed paths (for undo).
    pub(crate) fn unmount_all(&mut self, client: &str) -> Vec<String> {
        let start = (client.to_owned(), String::new());
        let paths: Vec<String> =
            self.rows.range(start..).take_while(|(c, _)| c == client).map(|(_, p)| p.clone()).collect();
        for path in &paths {
            self.rows.remove(&(client.to_owned(), path.clone()));
        }
        paths
    }

    /// Undo helpers: put a row back or take it out without checks.
    pub(crate) fn insert_raw(&mut self, client: String, path: String) {
        self.rows.insert((client, path));
    }

    pub(crate) fn remove_raw(&mut self, client: &str, path: &str) {
        self.rows.remove(&(client.to_owned(), path.to_owned()));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.rows.iter().map(|(c, p)| (c.as_str(), p.as_str()))
    }

    pub(crate) fn len(&self) -> u64 {
        self.rows.len() as u64
    }

    /// O(1): the bound holds.
    pub(crate) fn check_size(&self) -> Result<(), InvariantError> {
        if self.len() > RMTAB_ROWS_MAX {
            return Err(InvariantError::OverBound { table: Table::Rmtab, count: self.len(), max: RMTAB_ROWS_MAX });
        }
        Ok(())
    }

    /// The row (`client`, `path`), if present, is valid.
    pub(crate) fn check_row(&self, client: &str, path: &str) -> Result<(), InvariantError> {
        let present = self.rows.contains(&(client.to_owned(), path.to_owned()));
        if present && !(client_valid(client) && path_valid(path)) {
            return Err(InvariantError::RmtabRowInvalid { client: client.to_owned(), path: path.to_owned() });
        }
        Ok(())
    }

    /// O(n): the bound holds and every row is valid.
    pub(crate) fn check(&self) -> Result<(), InvariantError> {
        self.check_size()?;
        for (client, path) in &self.rows {
            if !(client_valid(client) && path_valid(path)) {
                return Err(InvariantError::RmtabRowInvalid { client: client.clone(), path: path.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_unmount_and_unmount_all() {
        let mut r = Rmtab::default();
        assert_eq!(r.mount("10.0.0.2", "/srv/a"), Ok(true));
        assert_eq!(r.mount("10.0.0.2", "/srv/a"), Ok(false));
        assert_eq!(r.mount("10.0.0.2", "/srv/b"), Ok(true));
        assert_eq!(r.mount("10.0.0.1", "/srv/a"), Ok(true));
        // A client whose name extends another's is a different client.
        assert_eq!(r.mount("10.0.0.20", "/srv/a"), Ok(true));
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![("10.0.0.1", "/srv/a"), ("10.0.0.2", "/srv/a"), ("10.0.0.2", "/srv/b"), ("10.0.0.20", "/srv/a")]
        );
        assert!(r.unmount("10.0.0.1", "/srv/a"));
        assert!(!r.unmount("10.0.0.1", "/srv/a"));
        assert_eq!(r.unmount_all("10.0.0.2"), vec!["/srv/a".to_owned(), "/srv/b".to_owned()]);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![("10.0.0.20", "/srv/a")]);
        assert_eq!(r.unmount_all("nobody"), Vec::<String>::new());
    }

    #[test]
    fn rows_are_bounded() {
        let mut r = Rmtab::default();
        for i in 0..RMTAB_ROWS_MAX {
            assert_eq!(r.mount(&format!("c{i}"), "/srv"), Ok(true));
        }
        assert_eq!(r.mount("one-more", "/srv"), Err(ApplyError::RmtabFull { max: RMTAB_ROWS_MAX }));
        // An existing row is still fine (idempotent), and room comes back after an unmount.
        assert_eq!(r.mount("c0", "/srv"), Ok(false));
        assert!(r.unmount("c0", "/srv"));
        assert_eq!(r.mount("one-more", "/srv"), Ok(true));
        assert_eq!(r.len(), RMTAB_ROWS_MAX);
        assert_eq!(r.check(), Ok(()));
    }

    #[test]
    fn bad_rows_are_refused() {
        let mut r = Rmtab::default();
        assert_eq!(r.mount("", "/srv/a"), Err(ApplyError::ClientInvalid));
        assert_eq!(r.mount("a\0", "/srv/a"), Err(ApplyError::ClientInvalid));
        assert_eq!(r.mount("c", ""), Err(ApplyError::MountPathInvalid));
        assert_eq!(r.len(), 0);
    }
}
