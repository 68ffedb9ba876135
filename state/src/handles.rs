//! The handle table: (export id, inode) → where the object lives, as
//! (parent inode, name). Full paths are derived by walking parents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::HandleEntry;
use crate::error::{ApplyError, InvariantError, NameError, Table};
use crate::limits::{HANDLES_MAX, NAME_BYTES_MAX, PATH_DEPTH_MAX};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handles {
    map: BTreeMap<(u32, u64), HandleEntry>,
}

/// Checks an entry's name: the root (`ino == parent_ino`) has none, every
/// other entry has a real name (no `/`, NUL, `.` or `..`, at most NAME_BYTES_MAX).
pub(crate) fn check_name(entry: &HandleEntry) -> Result<(), NameError> {
    let name = entry.name.as_slice();
    if entry.ino == entry.parent_ino {
        return if name.is_empty() { Ok(()) } else { Err(NameError::RootNamed) };
    }
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() as u64 > NAME_BYTES_MAX {
        return Err(NameError::TooLong);
    }
    if name.contains(&b'/') {
        return Err(NameError::Slash);
    }
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dot);
    }
    Ok(())
}

impl Handles {
    /// Inserts or replaces `entry`; returns the entry it replaced (for undo).
    /// The caller has checked the export; this checks the name and the bound.
    pub(crate) fn put(&mut self, entry: &HandleEntry) -> Result<Option<HandleEntry>, ApplyError> {
        self.put_bounded(entry, HANDLES_MAX)
    }

    /// `put` with the bound as a parameter, so tests can reach it.
    fn put_bounded(&mut self, entry: &HandleEntry, max: u64) -> Result<Option<HandleEntry>, ApplyError> {
        let (export_id, ino) = (entry.export_id, entry.ino);
        check_name(entry).map_err(|reason| ApplyError::HandleName { export_id, ino, reason })?;
        let key = (export_id, ino);
        if !self.map.contains_key(&key) && self.len() >= max {
            return Err(ApplyError::HandlesFull { max });
        }
        Ok(self.map.insert(key, entry.clone()))
    }

    /// Removes the entry if its `ident` matches; returns what was removed.
    pub(crate) fn remove_if_ident(&mut self, export_id: u32, ino: u64, ident: u64) -> Option<HandleEntry> {
        let key = (export_id, ino);
        match self.map.get(&key) {
            Some(entry) if entry.ident == ident => self.map.remove(&key),
            _ => None,
        }
    }

    /// Undo: put back exactly what was at `key` before.
    pub(crate) fn restore(&mut self, key: (u32, u64), prev: Option<HandleEntry>) {
        match prev {
            Some(entry) => {
                self.map.insert(key, entry);
            }
            None => {
                self.map.remove(&key);
            }
        }
    }

    pub(crate) fn get(&self, export_id: u32, ino: u64) -> Option<&HandleEntry> {
        self.map.get(&(export_id, ino))
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &HandleEntry> + '_ {
        self.map.values()
    }

    /// Components from the export root down to `ino`; the root gives an empty
    /// vec. None if a link is missing, or the walk exceeds PATH_DEPTH_MAX
    /// (which also ends any cycle).
    pub(crate) fn path_of(&self, export_id: u32, ino: u64) -> Option<Vec<Vec<u8>>> {
        let mut components = Vec::new();
        let mut current = ino;
        for _ in 0..=PATH_DEPTH_MAX {
            let entry = self.get(export_id, current)?;
            if entry.parent_ino == entry.ino {
                components.reverse();
                return Some(components);
            }
            components.push(entry.name.clone());
            current = entry.parent_ino;
        }
        None
    }

    /// O(1): the bound holds.
    pub(crate) fn check_size(&self) -> Result<(), InvariantError> {
        if self.len() > HANDLES_MAX {
            return Err(InvariantError::OverBound { table: Table::Handles, count: self.len(), max: HANDLES_MAX });
        }
        Ok(())
    }

    /// O(log n + name): the entry at (`export_id`, `ino`), if any, carries
    /// its own key and a valid name.
    pub(crate) fn check_at(&self, export_id: u32, ino: u64) -> Result<(), InvariantError> {
        let Some(entry) = self.map.get(&(export_id, ino)) else { return Ok(()) };
        if entry.export_id != export_id || entry.ino != ino {
            return Err(InvariantError::HandleKey { export_id, ino });
        }
        check_name(entry).map_err(|reason| InvariantError::HandleName { export_id, ino, reason })
    }

    /// O(n): keys match their entries, names are valid, the bound holds.
    pub(crate) fn check(&self) -> Result<(), InvariantError> {
        self.check_size()?;
        for &(export_id, ino) in self.map.keys() {
            self.check_at(export_id, ino)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u64, parent_ino: u64, name: &[u8]) -> HandleEntry {
        HandleEntry { export_id: 1, ino, ident: ino * 10, parent_ino, name: name.to_vec() }
    }

    #[test]
    fn names_are_checked() {
        let mut h = Handles::default();
        for (e, reason) in [
            (entry(2, 1, b""), NameError::Empty),
            (entry(2, 1, b"a/b"), NameError::Slash),
            (entry(2, 1, b"a\0b"), NameError::Nul),
            (entry(2, 1, b"."), NameError::Dot),
            (entry(2, 1, b".."), NameError::Dot),
            (entry(1, 1, b"root"), NameError::RootNamed),
            (entry(2, 1, &[b'x'; NAME_BYTES_MAX as usize + 1]), NameError::TooLong),
        ] {
            assert_eq!(h.put(&e), Err(ApplyError::HandleName { export_id: 1, ino: e.ino, reason }));
        }
        assert_eq!(h.len(), 0);
        assert_eq!(h.put(&entry(2, 1, &[b'x'; NAME_BYTES_MAX as usize])), Ok(None));
        assert_eq!(h.put(&entry(3, 1, b"...")), Ok(None));
    }

    #[test]
    fn the_bound_refuses_new_entries_only() {
        let mut h = Handles::default();
        for ino in 2..5 {
            assert_eq!(h.put_bounded(&entry(ino, 1, b"a"), 3), Ok(None));
        }
        assert_eq!(h.put_bounded(&entry(9, 1, b"a"), 3), Err(ApplyError::HandlesFull { max: 3 }));
        // Replacing an existing entry (a rename) still works at the bound.
        assert_eq!(h.put_bounded(&entry(4, 1, b"b"), 3), Ok(Some(entry(4, 1, b"a"))));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn put_replaces_and_remove_needs_ident() {
        let mut h = Handles::default();
        assert_eq!(h.put(&entry(2, 1, b"a")), Ok(None));
        let renamed = entry(2, 1, b"b");
        assert_eq!(h.put(&renamed), Ok(Some(entry(2, 1, b"a"))));
        assert_eq!(h.get(1, 2), Some(&renamed));
        assert_eq!(h.remove_if_ident(1, 2, 999), None);
        assert_eq!(h.len(), 1);
        assert_eq!(h.remove_if_ident(1, 2, 20), Some(renamed));
        assert_eq!(h.len(), 0);
        assert_eq!(h.remove_if_ident(1, 2, 20), None);
    }

    #[test]
    fn path_of_walks_parents() {
        let mut h = Handles::default();
        for e in [entry(1, 1, b""), entry(2, 1, b"dir"), entry(3, 2, b"sub"), entry(4, 3, b"file")] {
            assert_eq!(h.put(&e), Ok(None));
        }
        assert_eq!(h.path_of(1, 1), Some(vec![]));
        assert_eq!(h.path_of(1, 4), Some(vec![b"dir".to_vec(), b"sub".to_vec(), b"file".to_vec()]));
        // Renaming a directory moves every descendant.
        assert!(h.put(&entry(2, 1, b"moved")).is_ok());
        assert_eq!(h.path_of(1, 4), Some(vec![b"moved".to_vec(), b"sub".to_vec(), b"file".to_vec()]));
        // Wrong export, unknown inode, missing link.
        assert_eq!(h.path_of(2, 4), None);
        assert_eq!(h.path_of(1, 99), None);
        assert!(h.put(&entry(5, 77, b"orphan")).is_ok());
        assert_eq!(h.path_of(1, 5), None);
    }

    #[test]
    fn path_of_survives_cycles_and_depth() {
        let mut h = Handles::default();
        assert!(h.put(&entry(2, 3, b"a")).is_ok());
        assert!(h.put(&entry(3, 2, b"b")).is_ok());
        assert_eq!(h.path_of(1, 2), None);
        // A chain exactly PATH_DEPTH_MAX deep resolves; one deeper does not.
        let mut h = Handles::default();
        assert!(h.put(&entry(1, 1, b"")).is_ok());
        let depth = u64::from(PATH_DEPTH_MAX);
        for ino in 2..=depth + 2 {
            assert!(h.put(&entry(ino, ino - 1, b"d")).is_ok());
        }
        assert_eq!(h.path_of(1, depth + 1).map(|p| p.len() as u64), Some(depth));
        assert_eq!(h.path_of(1, depth + 2), None);
    }
}
