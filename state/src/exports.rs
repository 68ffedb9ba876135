//! The export table: cluster-assigned export id ↔ path, and the filesystem
//! identity each export was first served from. Ids are stable, so
//! re-registering an id with another path (or a path under another id) is
//! refused; re-registering the same pair keeps the first identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::FsIdentity;
use crate::error::{ApplyError, InvariantError, Table};
use crate::limits::{EXPORTS_MAX, FS_HANDLE_BYTES_MAX, FS_UUID_BYTES_MAX, PATH_BYTES_MAX};

/// One registered export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Export {
    pub(crate) path: String,
    pub(crate) fs: FsIdentity,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ExportsWire")]
pub(crate) struct Exports {
    by_id: BTreeMap<u32, Export>,
    /// Derived index: path → id (rebuilt on decode, not serialized).
    #[serde(skip)]
    by_path: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct ExportsWire {
    by_id: BTreeMap<u32, Export>,
}

impl TryFrom<ExportsWire> for Exports {
    type Error = InvariantError;
    fn try_from(wire: ExportsWire) -> Result<Self, InvariantError> {
        let mut by_path = BTreeMap::new();
        for (&export_id, export) in &wire.by_id {
            if !path_valid(&export.path) {
                return Err(InvariantError::ExportPathInvalid { export_id });
            }
            if !fs_valid(&export.fs) {
                return Err(InvariantError::ExportFsInvalid { export_id });
            }
            if by_path.insert(export.path.clone(), export_id).is_some() {
                return Err(InvariantError::ExportPathTwice { path: export.path.clone() });
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

/// An identity's handle and UUID fit their bounds.
pub(crate) fn fs_valid(fs: &FsIdentity) -> bool {
    fs.root_handle.len() as u64 <= FS_HANDLE_BYTES_MAX
        && fs.uuid.as_ref().is_none_or(|u| u.len() as u64 <= FS_UUID_BYTES_MAX)
}

impl Exports {
    /// Registers `export_id` at `path` on the filesystem `fs`. Returns true if
    /// it was new (for undo). An export already registered keeps its first
    /// identity: the caller compares it with what it sees on disk.
    pub(crate) fn register(&mut self, export_id: u32, path: &str, fs: &FsIdentity) -> Result<bool, ApplyError> {
        if !path_valid(path) {
            return Err(ApplyError::ExportPathInvalid);
        }
        if !fs_valid(fs) {
            return Err(ApplyError::ExportFsInvalid { export_id });
        }
        if let Some(existing) = self.by_id.get(&export_id) {
            if existing.path == path {
                return Ok(false);
            }
            return Err(ApplyError::ExportIdConflict { export_id, existing: existing.path.clone() });
        }
        if let Some(&existing_id) = self.by_path.get(path) {
            return Err(ApplyError::ExportPathConflict { path: path.to_owned(), existing_id });
        }
        if self.by_id.len() as u64 >= EXPORTS_MAX {
            return Err(ApplyError::ExportsFull { max: EXPORTS_MAX });
        }
        self.by_id.insert(export_id, Export { path: path.to_owned(), fs: fs.clone() });
        self.by_path.insert(path.to_owned(), export_id);
        Ok(true)
    }

    /// Undo of a `register` that returned true.
    pub(crate) fn unregister(&mut self, export_id: u32) {
        if let Some(export) = self.by_id.remove(&export_id) {
            self.by_path.remove(&export.path);
        }
    }

    pub(crate) fn path(&self, export_id: u32) -> Option<&str> {
        self.by_id.get(&export_id).map(|e| e.path.as_str())
    }

    pub(crate) fn fs(&self, export_id: u32) -> Option<&FsIdentity> {
        self.by_id.get(&export_id).map(|e| &e.fs)
    }

    pub(crate) fn id_of(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.by_id.iter().map(|(&id, e)| (id, e.path.as_str()))
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
        let Some(export) = self.by_id.get(&export_id) else { return Ok(()) };
        if !path_valid(&export.path) {
            return Err(InvariantError::ExportPathInvalid { export_id });
        }
        if !fs_valid(&export.fs) {
            return Err(InvariantError::ExportFsInvalid { export_id });
        }
        if self.by_path.get(&export.path) != Some(&export_id) {
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

/// Corruptions only a bug could make, for the invariant tests.
#[cfg(test)]
impl Exports {
    pub(crate) fn corrupt_index(&mut self, path: &str, export_id: u32) {
        self.by_path.insert(path.to_owned(), export_id);
    }

    pub(crate) fn corrupt_fs(&mut self, export_id: u32, root_handle: Vec<u8>) {
        if let Some(e) = self.by_id.get_mut(&export_id) {
            e.fs.root_handle = root_handle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_fs;

    fn other_fs() -> FsIdentity {
        FsIdentity { uuid: None, root_type: 1, root_handle: vec![9; 8] }
    }

    #[test]
    fn register_is_idempotent_and_ids_are_stable() {
        let mut e = Exports::default();
        assert_eq!(e.register(1, "/srv/a", &test_fs()), Ok(true));
        assert_eq!(e.register(1, "/srv/a", &test_fs()), Ok(false));
        assert!(matches!(e.register(1, "/srv/b", &test_fs()), Err(ApplyError::ExportIdConflict { export_id: 1, .. })));
        assert!(matches!(
            e.register(2, "/srv/a", &test_fs()),
            Err(ApplyError::ExportPathConflict { existing_id: 1, .. })
        ));
        assert_eq!(e.register(2, "/srv/b", &test_fs()), Ok(true));
        assert_eq!(e.path(2), Some("/srv/b"));
        assert_eq!(e.id_of("/srv/a"), Some(1));
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![(1, "/srv/a"), (2, "/srv/b")]);
        e.unregister(2);
        assert_eq!(e.path(2), None);
        assert_eq!(e.id_of("/srv/b"), None);
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn the_first_identity_stays() {
        let mut e = Exports::default();
        assert_eq!(e.register(1, "/srv/a", &test_fs()), Ok(true));
        assert_eq!(e.register(1, "/srv/a", &other_fs()), Ok(false));
        assert_eq!(e.fs(1), Some(&test_fs()));
        let long = FsIdentity { root_handle: vec![0; FS_HANDLE_BYTES_MAX as usize + 1], ..test_fs() };
        assert_eq!(e.register(2, "/srv/b", &long), Err(ApplyError::ExportFsInvalid { export_id: 2 }));
        let uuid = FsIdentity { uuid: Some(vec![0; FS_UUID_BYTES_MAX as usize + 1]), ..test_fs() };
        assert_eq!(e.register(2, "/srv/b", &uuid), Err(ApplyError::ExportFsInvalid { export_id: 2 }));
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn exports_are_bounded() {
        let mut e = Exports::default();
        for id in 0..EXPORTS_MAX as u32 {
            assert_eq!(e.register(id, &format!("/srv/{id}"), &test_fs()), Ok(true));
        }
        assert_eq!(e.register(u32::MAX, "/srv/more", &test_fs()), Err(ApplyError::ExportsFull { max: EXPORTS_MAX }));
        assert_eq!(e.register(0, "/srv/0", &test_fs()), Ok(false));
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn invalid_paths_are_refused() {
        let mut e = Exports::default();
        assert_eq!(e.register(1, "", &test_fs()), Err(ApplyError::ExportPathInvalid));
        assert_eq!(e.register(1, "/a\0b", &test_fs()), Err(ApplyError::ExportPathInvalid));
        let long = "x".repeat(PATH_BYTES_MAX as usize + 1);
        assert_eq!(e.register(1, &long, &test_fs()), Err(ApplyError::ExportPathInvalid));
        assert_eq!(e.len(), 0);
    }
}
