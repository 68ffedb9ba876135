//! The export table: cluster-assigned export id ↔ path. Ids are stable, so
//! re-registering an id with another path (or a path under another id) is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, InvariantError, Table};
use crate::limits::{EXPORTS_MAX, PATH_BYTES_MAX};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ExportsWire")]
pub(crate) struct Exports {
    by_id: BTreeMap<u32, String>,
    /// Derived index: path → id (rebuilt on decode, not serialized).
    #[serde(skip)]
    by_path: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct ExportsWire {
    by_id: BTreeMap<u32, String>,
}

impl TryFrom<ExportsWire> for Exports {
    type Error = InvariantError;
    fn try_from(wire: ExportsWire) -> Result<Self, InvariantError> {
        let mut by_path = BTreeMap::new();
        for (&export_id, path) in &wire.by_id {
            if !path_valid(path) {
                return Err(InvariantError::ExportPathInvalid { export_id });
            }
            if by_path.insert(path.clone(), export_id).is_some() {
                return Err(InvariantError::ExportPathTwice { path: path.clone() });
            }
        }
        let exports = Exports { by_id: wire.by_id, by_path };
        exports.check_sizes()?;
        Ok(exports)
    }
}

/// A path is non-empty, has no NUL and fits `PATH_BYTES_MAX`.
pub(crate) fn path_valid(path: &str) -> bool {
    !path.is_empty() && path.len() as u64 <= PATH_BYTES_MAX && !path.as_bytes().contains(&0)
}

impl Exports {
    /// Registers `export_id` at `path`. Returns true if it was new (for undo).
    pub(crate) fn register(&mut self, export_id: u32, path: &str) -> Result<bool, ApplyError> {
        if !path_valid(path) {
            return Err(ApplyError::ExportPathInvalid);
        }
        if let Some(existing) = self.by_id.get(&export_id) {
            if existing == path {
                return Ok(false);
            }
            return Err(ApplyError::ExportIdConflict { export_id, existing: existing.clone() });
        }
        if let Some(&existing_id) = self.by_path.get(path) {
            return Err(ApplyError::ExportPathConflict { path: path.to_owned(), existing_id });
        }
        if self.by_id.len() as u64 >= EXPORTS_MAX {
            return Err(ApplyError::ExportsFull { max: EXPORTS_MAX });
        }
        self.by_id.insert(export_id, path.to_owned());
        self.by_path.insert(path.to_owned(), export_id);
        Ok(true)
    }

    /// Undo of a `register` that returned true.
    pub(crate) fn unregister(&mut self, export_id: u32) {
        if let Some(path) = self.by_id.remove(&export_id) {
            self.by_path.remove(&path);
        }
    }

    pub(crate) fn path(&self, export_id: u32) -> Option<&str> {
        self.by_id.get(&export_id).map(String::as_str)
    }

    pub(crate) fn id_of(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub(crate) fn contains(&self, export_id: u32) -> bool {
        self.by_id.contains_key(&export_id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.by_id.iter().map(|(&id, path)| (id, path.as_str()))
    }

    pub(crate) fn len(&self) -> u64 {
        self.by_id.len() as u64
    }

    /// O(1): the bound holds and both directions hold as many entries.
    pub(crate) fn check_sizes(&self) -> Result<(), InvariantError> {
        if self.len() > EXPORTS_MAX {
            return Err(InvariantError::OverBound { table: Table::Exports, count: self.len(), max: EXPORTS_MAX });
        }
        let (by_id, by_path) = (self.by_id.len() as u64, self.by_path.len() as u64);
        if by_id != by_path {
            return Err(InvariantError::ExportIndexSize { by_id, by_path });
        }
        Ok(())
    }

    /// O(log n): `export_id`, if registered, has a valid path that the path
    /// index maps back to it.
    pub(crate) fn check_id(&self, export_id: u32) -> Result<(), InvariantError> {
        let Some(path) = self.by_id.get(&export_id) else { return Ok(()) };
        if !path_valid(path) {
            return Err(InvariantError::ExportPathInvalid { export_id });
        }
        if self.by_path.get(path) != Some(&export_id) {
            return Err(InvariantError::ExportIndexDisagrees { export_id });
        }
        Ok(())
    }

    /// O(n): both directions agree and every path is valid.
    pub(crate) fn check(&self) -> Result<(), InvariantError> {
        self.check_sizes()?;
        for &export_id in self.by_id.keys() {
            self.check_id(export_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_is_idempotent_and_ids_are_stable() {
        let mut e = Exports::default();
        assert_eq!(e.register(1, "/srv/a"), Ok(true));
        assert_eq!(e.register(1, "/srv/a"), Ok(false));
        assert!(matches!(e.register(1, "/srv/b"), Err(ApplyError::ExportIdConflict { export_id: 1, .. })));
        assert!(matches!(e.register(2, "/srv/a"), Err(ApplyError::ExportPathConflict { existing_id: 1, .. })));
        assert_eq!(e.register(2, "/srv/b"), Ok(true));
        assert_eq!(e.path(2), Some("/srv/b"));
        assert_eq!(e.id_of("/srv/a"), Some(1));
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![(1, "/srv/a"), (2, "/srv/b")]);
        e.unregister(2);
        assert_eq!(e.path(2), None);
        assert_eq!(e.id_of("/srv/b"), None);
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn exports_are_bounded() {
        let mut e = Exports::default();
        for id in 0..EXPORTS_MAX as u32 {
            assert_eq!(e.register(id, &format!("/srv/{id}")), Ok(true));
        }
        assert_eq!(e.register(u32::MAX, "/srv/more"), Err(ApplyError::ExportsFull { max: EXPORTS_MAX }));
        assert_eq!(e.register(0, "/srv/0"), Ok(false));
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn invalid_paths_are_refused() {
        let mut e = Exports::default();
        assert_eq!(e.register(1, ""), Err(ApplyError::ExportPathInvalid));
        assert_eq!(e.register(1, "/a\0b"), Err(ApplyError::ExportPathInvalid));
        let long = "x".repeat(PATH_BYTES_MAX as usize + 1);
        assert_eq!(e.register(1, &long), Err(ApplyError::ExportPathInvalid));
        assert_eq!(e.len(), 0);
    }
}
