//! The export table: cluster-assigned export id ↔ name (the path clients
//! mount), the filesystem identity each export was first served from, and
//! what it is served as now (`ExportSpec`: directory and exports(5) client
//! list), changed live by `ExportSet` / `ExportRemove`.
//!
//! Ids are stable: an id, once bound to a name, stays bound to it forever,
//! and so does its first filesystem identity. Removing an export only stops
//! serving it (`served` becomes `None`); its entry stays, so neither its id
//! nor its name can ever come back naming another export, and a handle of a
//! removed export can never resolve into a different one. Re-adding the same
//! name gives the same id again (its old handles work again, as with knfsd
//! after `exportfs -u` and `exportfs` of the same directory).
//!
//! `seeded` turns true with the first `ExportSet` and never back: a node
//! seeds the table from its config only while it is false, so removing
//! every export does not bring the config's back at the next start.
//! `revision` counts changes, so a serving node sees cheaply that its
//! served view is out of date.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{ExportSpec, FsIdentity};
use crate::error::{ApplyError, InvariantError, Table};
use crate::limits::{
    EXPORTS_MAX, EXPORT_CLIENTS_BYTES_MAX, EXPORT_CLIENTS_TOTAL_BYTES_MAX, FS_HANDLE_BYTES_MAX, FS_UUID_BYTES_MAX,
    PATH_BYTES_MAX,
};

/// One export the cluster knows: served now, or removed (kept for its id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Export {
    pub(crate) path: String,
    /// Recorded by the first node that served it (`RegisterExport`).
    pub(crate) fs: Option<FsIdentity>,
    /// What it is served as; `None`: not served (removed, or only registered).
    pub(crate) served: Option<ExportSpec>,
}

/// What `ExportSet`, `ExportRemove` and `RegisterExport` changed, for undo:
/// the entry as it was (`None`: absent) and the table's counters.
#[derive(Debug)]
pub(crate) struct ExportUndo {
    export_id: u32,
    previous: Option<Export>,
    seeded: bool,
    revision: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ExportsWire")]
pub(crate) struct Exports {
    by_id: BTreeMap<u32, Export>,
    seeded: bool,
    revision: u64,
    /// Derived index: path → id (rebuilt on decode, not serialized).
    #[serde(skip)]
    by_path: BTreeMap<String, u32>,
    /// Derived: total bytes of the served client lists.
    #[serde(skip)]
    clients_bytes: u64,
}

#[derive(Deserialize)]
pub(crate) struct ExportsWire {
    by_id: BTreeMap<u32, Export>,
    seeded: bool,
    revision: u64,
}

/// The table as snapshot formats 1 and 2 encoded it: registrations only.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct ExportsV2 {
    by_id: BTreeMap<u32, ExportV2>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ExportV2 {
    path: String,
    fs: FsIdentity,
}

impl TryFrom<ExportsV2> for Exports {
    type Error = InvariantError;
    /// Every export registered, none served, not seeded: the first node to
    /// serve seeds the table from its config.
    fn try_from(v2: ExportsV2) -> Result<Self, InvariantError> {
        let by_id =
            v2.by_id.into_iter().map(|(id, e)| (id, Export { path: e.path, fs: Some(e.fs), served: None })).collect();
        Exports::try_from(ExportsWire { by_id, seeded: false, revision: 0 })
    }
}

#[cfg(test)]
impl From<&Exports> for ExportsV2 {
    fn from(e: &Exports) -> ExportsV2 {
        let by_id = e
            .by_id
            .iter()
            .filter_map(|(&id, x)| Some((id, ExportV2 { path: x.path.clone(), fs: x.fs.clone()? })))
            .collect();
        ExportsV2 { by_id }
    }
}

impl TryFrom<ExportsWire> for Exports {
    type Error = InvariantError;
    fn try_from(wire: ExportsWire) -> Result<Self, InvariantError> {
        let mut by_path = BTreeMap::new();
        let mut clients_bytes = 0u64;
        for (&export_id, export) in &wire.by_id {
            check_entry(export_id, export)?;
            if by_path.insert(export.path.clone(), export_id).is_some() {
                return Err(InvariantError::ExportPathTwice { path: export.path.clone() });
            }
            clients_bytes = clients_bytes.saturating_add(spec_bytes(export.served.as_ref()));
        }
        let exports =
            Exports { by_id: wire.by_id, seeded: wire.seeded, revision: wire.revision, by_path, clients_bytes };
        exports.check_sizes()?;
        Ok(exports)
    }
}

/// A path is non-empty, has no NUL and fits `PATH_BYTES_MAX`.
pub(crate) fn path_valid(path: &str) -> bool {
    !path.is_empty() && path.len() as u64 <= PATH_BYTES_MAX && !path.as_bytes().contains(&0)
}

/// A served export's name or directory: a valid path, and absolute.
pub(crate) fn absolute_valid(path: &str) -> bool {
    path_valid(path) && path.starts_with('/')
}

/// A client list: non-empty, no NUL, fits `EXPORT_CLIENTS_BYTES_MAX`. Its
/// syntax is the server's to check (before it commits one).
pub(crate) fn clients_valid(clients: &str) -> bool {
    !clients.trim().is_empty() && clients.len() as u64 <= EXPORT_CLIENTS_BYTES_MAX && !clients.as_bytes().contains(&0)
}

/// An identity's handle and UUID fit their bounds.
pub(crate) fn fs_valid(fs: &FsIdentity) -> bool {
    fs.root_handle.len() as u64 <= FS_HANDLE_BYTES_MAX
        && fs.uuid.as_ref().is_none_or(|u| u.len() as u64 <= FS_UUID_BYTES_MAX)
}

fn spec_bytes(spec: Option<&ExportSpec>) -> u64 {
    spec.map_or(0, |s| s.clients.len() as u64)
}

/// One entry is valid on its own.
fn check_entry(export_id: u32, export: &Export) -> Result<(), InvariantError> {
    if !path_valid(&export.path) {
        return Err(InvariantError::ExportPathInvalid { export_id });
    }
    if export.fs.as_ref().is_some_and(|fs| !fs_valid(fs)) {
        return Err(InvariantError::ExportFsInvalid { export_id });
    }
    if let Some(spec) = &export.served {
        if !absolute_valid(&export.path) || !absolute_valid(&spec.dir) || !clients_valid(&spec.clients) {
            return Err(InvariantError::ExportSpecInvalid { export_id });
        }
    }
    Ok(())
}

impl Exports {
    /// The undo record of `export_id` as it is now.
    fn undo_of(&self, export_id: u32) -> ExportUndo {
        ExportUndo {
            export_id,
            previous: self.by_id.get(&export_id).cloned(),
            seeded: self.seeded,
            revision: self.revision,
        }
    }

    /// The entry `export_id` may take for `path`: the existing one (same
    /// path), or a new one if neither the id nor the path is taken and the
    /// table has room.
    fn slot(&self, export_id: u32, path: &str) -> Result<Option<&Export>, ApplyError> {
        if let Some(existing) = self.by_id.get(&export_id) {
            if existing.path == path {
                return Ok(Some(existing));
            }
            return Err(ApplyError::ExportIdConflict { export_id, existing: existing.path.clone() });
        }
        if let Some(&existing_id) = self.by_path.get(path) {
            return Err(ApplyError::ExportPathConflict { path: path.to_owned(), existing_id });
        }
        if self.by_id.len() as u64 >= EXPORTS_MAX {
            return Err(ApplyError::ExportsFull { max: EXPORTS_MAX });
        }
        Ok(None)
    }

    /// Puts `export` at `export_id` (whose path it keeps), counters bumped.
    fn put(&mut self, export_id: u32, export: Export) {
        let old = self.by_id.get(&export_id).map(|e| spec_bytes(e.served.as_ref())).unwrap_or(0);
        self.clients_bytes = self.clients_bytes.saturating_sub(old).saturating_add(spec_bytes(export.served.as_ref()));
        self.by_path.insert(export.path.clone(), export_id);
        self.by_id.insert(export_id, export);
        self.revision = self.revision.wrapping_add(1);
    }

    /// Registers `export_id` at `path` on the filesystem `fs`. An export
    /// already registered keeps its first identity (the caller compares it
    /// with what it sees on disk); one created by `set` without an identity
    /// gets this one. Returns the undo record if anything changed.
    pub(crate) fn register(
        &mut self,
        export_id: u32,
        path: &str,
        fs: &FsIdentity,
    ) -> Result<Option<ExportUndo>, ApplyError> {
        if !path_valid(path) {
            return Err(ApplyError::ExportPathInvalid);
        }
        if !fs_valid(fs) {
            return Err(ApplyError::ExportFsInvalid { export_id });
        }
        let export = match self.slot(export_id, path)? {
            Some(e) if e.fs.is_some() => return Ok(None),
            Some(e) => Export { fs: Some(fs.clone()), ..e.clone() },
            None => Export { path: path.to_owned(), fs: Some(fs.clone()), served: None },
        };
        let undo = self.undo_of(export_id);
        self.put(export_id, export);
        Ok(Some(undo))
    }

    /// Serves `export_id` at `path` as `spec` (a new export, a changed one,
    /// or a removed one again). Returns the undo record if anything changed.
    pub(crate) fn set(
        &mut self,
        export_id: u32,
        path: &str,
        spec: &ExportSpec,
    ) -> Result<Option<ExportUndo>, ApplyError> {
        if !absolute_valid(path) {
            return Err(ApplyError::ExportPathInvalid);
        }
        if !absolute_valid(&spec.dir) {
            return Err(ApplyError::ExportDirInvalid);
        }
        if !clients_valid(&spec.clients) {
            return Err(ApplyError::ExportClientsInvalid { max: EXPORT_CLIENTS_BYTES_MAX });
        }
        let export = match self.slot(export_id, path)? {
            Some(e) if e.served.as_ref() == Some(spec) => return Ok(None),
            Some(e) => Export { served: Some(spec.clone()), ..e.clone() },
            None => Export { path: path.to_owned(), fs: None, served: Some(spec.clone()) },
        };
        let old = self.by_id.get(&export_id).map(|e| spec_bytes(e.served.as_ref())).unwrap_or(0);
        let total = self.clients_bytes.saturating_sub(old).saturating_add(spec_bytes(Some(spec)));
        if total > EXPORT_CLIENTS_TOTAL_BYTES_MAX {
            return Err(ApplyError::ExportClientsFull { max: EXPORT_CLIENTS_TOTAL_BYTES_MAX });
        }
        let undo = self.undo_of(export_id);
        self.put(export_id, export);
        self.seeded = true;
        Ok(Some(undo))
    }

    /// Stops serving `export_id` (its entry, id and identity stay).
    pub(crate) fn remove(&mut self, export_id: u32) -> Result<ExportUndo, ApplyError> {
        let Some(e) = self.by_id.get(&export_id).filter(|e| e.served.is_some()) else {
            return Err(ApplyError::ExportNotServed { export_id });
        };
        let export = Export { served: None, ..e.clone() };
        let undo = self.undo_of(export_id);
        self.put(export_id, export);
        Ok(undo)
    }

    /// Undo of `register`, `set` or `remove`.
    pub(crate) fn restore(&mut self, undo: ExportUndo) {
        let ExportUndo { export_id, previous, seeded, revision } = undo;
        if let Some(e) = self.by_id.remove(&export_id) {
            self.by_path.remove(&e.path);
            self.clients_bytes = self.clients_bytes.saturating_sub(spec_bytes(e.served.as_ref()));
        }
        if let Some(e) = previous {
            self.clients_bytes = self.clients_bytes.saturating_add(spec_bytes(e.served.as_ref()));
            self.by_path.insert(e.path.clone(), export_id);
            self.by_id.insert(export_id, e);
        }
        self.seeded = seeded;
        self.revision = revision;
    }

    pub(crate) fn path(&self, export_id: u32) -> Option<&str> {
        self.by_id.get(&export_id).map(|e| e.path.as_str())
    }

    pub(crate) fn fs(&self, export_id: u32) -> Option<&FsIdentity> {
        self.by_id.get(&export_id).and_then(|e| e.fs.as_ref())
    }

    pub(crate) fn spec(&self, export_id: u32) -> Option<&ExportSpec> {
        self.by_id.get(&export_id).and_then(|e| e.served.as_ref())
    }

    pub(crate) fn id_of(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.by_id.iter().map(|(&id, e)| (id, e.path.as_str()))
    }

    /// The served exports: (id, name, spec), by id.
    pub(crate) fn served(&self) -> impl Iterator<Item = (u32, &str, &ExportSpec)> + '_ {
        self.by_id.iter().filter_map(|(&id, e)| Some((id, e.path.as_str(), e.served.as_ref()?)))
    }

    pub(crate) fn seeded(&self) -> bool {
        self.seeded
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The lowest id above every id the table ever held (`None`: none left).
    pub(crate) fn next_id(&self) -> Option<u32> {
        match self.by_id.keys().next_back() {
            None => Some(1),
            Some(&last) => last.checked_add(1),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.by_id.len() as u64
    }

    /// O(1): the bounds hold and both directions hold as many entries.
    pub(crate) fn check_sizes(&self) -> Result<(), InvariantError> {
        if self.len() > EXPORTS_MAX {
            return Err(InvariantError::OverBound { table: Table::Exports, count: self.len(), max: EXPORTS_MAX });
        }
        if self.clients_bytes > EXPORT_CLIENTS_TOTAL_BYTES_MAX {
            return Err(InvariantError::OverBound {
                table: Table::ExportClientsBytes,
                count: self.clients_bytes,
                max: EXPORT_CLIENTS_TOTAL_BYTES_MAX,
            });
        }
        let (by_id, by_path) = (self.by_id.len() as u64, self.by_path.len() as u64);
        if by_id != by_path {
            return Err(InvariantError::ExportIndexSize { by_id, by_path });
        }
        Ok(())
    }

    /// O(log n): `export_id`, if known, is a valid entry that the path index
    /// maps back to it, and a served one is seeded.
    pub(crate) fn check_id(&self, export_id: u32) -> Result<(), InvariantError> {
        let Some(export) = self.by_id.get(&export_id) else { return Ok(()) };
        check_entry(export_id, export)?;
        if self.by_path.get(&export.path) != Some(&export_id) {
            return Err(InvariantError::ExportIndexDisagrees { export_id });
        }
        if export.served.is_some() && !self.seeded {
            return Err(InvariantError::ExportServedUnseeded { export_id });
        }
        Ok(())
    }

    /// O(n): both directions agree, every entry is valid, and the client
    /// byte count is the sum of the served client lists.
    pub(crate) fn check(&self) -> Result<(), InvariantError> {
        self.check_sizes()?;
        let mut sum = 0u64;
        for (&export_id, export) in &self.by_id {
            self.check_id(export_id)?;
            sum = sum.saturating_add(spec_bytes(export.served.as_ref()));
        }
        if sum != self.clients_bytes {
            return Err(InvariantError::ExportClientsBytes { counted: self.clients_bytes, sum });
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
        if let Some(fs) = self.by_id.get_mut(&export_id).and_then(|e| e.fs.as_mut()) {
            fs.root_handle = root_handle;
        }
    }

    pub(crate) fn corrupt_clients_bytes(&mut self, bytes: u64) {
        self.clients_bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_fs;

    fn other_fs() -> FsIdentity {
        FsIdentity { uuid: None, root_type: 1, root_handle: vec![9; 8] }
    }

    fn spec(dir: &str, clients: &str) -> ExportSpec {
        ExportSpec { dir: dir.into(), clients: clients.into() }
    }

    fn reg(e: &mut Exports, id: u32, path: &str, fs: &FsIdentity) -> Result<bool, ApplyError> {
        e.register(id, path, fs).map(|u| u.is_some())
    }

    fn set(e: &mut Exports, id: u32, path: &str, s: &ExportSpec) -> Result<bool, ApplyError> {
        e.set(id, path, s).map(|u| u.is_some())
    }

    #[test]
    fn register_is_idempotent_and_ids_are_stable() {
        let mut e = Exports::default();
        assert_eq!(reg(&mut e, 1, "/srv/a", &test_fs()), Ok(true));
        assert_eq!(reg(&mut e, 1, "/srv/a", &test_fs()), Ok(false));
        assert!(matches!(e.register(1, "/srv/b", &test_fs()), Err(ApplyError::ExportIdConflict { export_id: 1, .. })));
        assert!(matches!(
            e.register(2, "/srv/a", &test_fs()),
            Err(ApplyError::ExportPathConflict { existing_id: 1, .. })
        ));
        let undo = e.register(2, "/srv/b", &test_fs()).ok().flatten();
        assert_eq!(e.path(2), Some("/srv/b"));
        assert_eq!(e.id_of("/srv/a"), Some(1));
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![(1, "/srv/a"), (2, "/srv/b")]);
        assert_eq!(e.next_id(), Some(3));
        e.restore(undo.expect("registered"));
        assert_eq!(e.path(2), None);
        assert_eq!(e.id_of("/srv/b"), None);
        assert_eq!(e.check(), Ok(()));
        assert!(!e.seeded(), "registering is not seeding");
    }

    #[test]
    fn the_first_identity_stays() {
        let mut e = Exports::default();
        assert_eq!(reg(&mut e, 1, "/srv/a", &test_fs()), Ok(true));
        assert_eq!(reg(&mut e, 1, "/srv/a", &other_fs()), Ok(false));
        assert_eq!(e.fs(1), Some(&test_fs()));
        let long = FsIdentity { root_handle: vec![0; FS_HANDLE_BYTES_MAX as usize + 1], ..test_fs() };
        assert!(matches!(e.register(2, "/srv/b", &long), Err(ApplyError::ExportFsInvalid { export_id: 2 })));
        let uuid = FsIdentity { uuid: Some(vec![0; FS_UUID_BYTES_MAX as usize + 1]), ..test_fs() };
        assert!(matches!(e.register(2, "/srv/b", &uuid), Err(ApplyError::ExportFsInvalid { export_id: 2 })));
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn set_serves_remove_retires_and_the_id_stays_bound() {
        let mut e = Exports::default();
        let a = spec("/srv/a", "*(rw)");
        assert_eq!(set(&mut e, 1, "/a", &a), Ok(true));
        assert!(e.seeded());
        assert_eq!(e.fs(1), None, "no identity until a node serves it");
        assert_eq!(set(&mut e, 1, "/a", &a), Ok(false), "the same spec changes nothing");
        let rev = e.revision();
        assert_eq!(reg(&mut e, 1, "/a", &test_fs()), Ok(true), "the first serving node records the identity");
        assert!(e.revision() > rev);
        assert_eq!(set(&mut e, 1, "/a", &spec("/srv/a", "10.0.0.0/8(ro)")), Ok(true));
        assert_eq!(e.spec(1).map(|s| s.clients.as_str()), Some("10.0.0.0/8(ro)"));
        assert_eq!(e.served().count(), 1);
        // Removed: not served, but the id keeps its name and identity.
        assert!(e.remove(1).is_ok());
        assert_eq!(e.spec(1), None);
        assert_eq!(e.fs(1), Some(&test_fs()));
        assert!(matches!(e.remove(1), Err(ApplyError::ExportNotServed { export_id: 1 })));
        assert!(matches!(e.set(1, "/b", &a), Err(ApplyError::ExportIdConflict { export_id: 1, .. })));
        assert!(matches!(e.set(2, "/a", &a), Err(ApplyError::ExportPathConflict { existing_id: 1, .. })));
        assert_eq!(e.next_id(), Some(2));
        // Re-added under its own id.
        assert_eq!(set(&mut e, 1, "/a", &a), Ok(true));
        assert!(e.seeded());
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn undo_restores_exactly() {
        let mut e = Exports::default();
        assert_eq!(set(&mut e, 1, "/a", &spec("/srv/a", "*")), Ok(true));
        let before = e.clone();
        let u1 = e.set(1, "/a", &spec("/srv/a2", "10.0.0.1")).ok().flatten().expect("changed");
        let u2 = e.set(2, "/b", &spec("/srv/b", "*")).ok().flatten().expect("added");
        let u3 = e.remove(1).expect("removed");
        for u in [u3, u2, u1] {
            e.restore(u);
        }
        assert_eq!(e, before);
        assert_eq!(e.check(), Ok(()));
        let mut fresh = Exports::default();
        let u = fresh.set(1, "/a", &spec("/srv/a", "*")).ok().flatten().expect("added");
        fresh.restore(u);
        assert_eq!(fresh, Exports::default());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut e = Exports::default();
        let ok = spec("/srv/a", "*");
        assert!(matches!(e.set(1, "a", &ok), Err(ApplyError::ExportPathInvalid)));
        assert!(matches!(e.set(1, "/a", &spec("srv/a", "*")), Err(ApplyError::ExportDirInvalid)));
        assert!(matches!(e.set(1, "/a", &spec("/srv/a", " ")), Err(ApplyError::ExportClientsInvalid { .. })));
        assert!(matches!(e.set(1, "/a", &spec("/srv/a", "*\0")), Err(ApplyError::ExportClientsInvalid { .. })));
        let huge = "*".repeat(EXPORT_CLIENTS_BYTES_MAX as usize + 1);
        assert!(matches!(e.set(1, "/a", &spec("/srv/a", &huge)), Err(ApplyError::ExportClientsInvalid { .. })));
        assert_eq!(e, Exports::default());
    }

    #[test]
    fn client_lists_are_bounded_in_total() {
        let mut e = Exports::default();
        let big = "*".repeat(EXPORT_CLIENTS_BYTES_MAX as usize);
        let fit = (EXPORT_CLIENTS_TOTAL_BYTES_MAX / EXPORT_CLIENTS_BYTES_MAX) as u32;
        for id in 0..fit {
            assert_eq!(set(&mut e, id, &format!("/e{id}"), &spec("/srv", &big)), Ok(true));
        }
        assert!(matches!(
            e.set(fit, "/more", &spec("/srv", &big)),
            Err(ApplyError::ExportClientsFull { max: EXPORT_CLIENTS_TOTAL_BYTES_MAX })
        ));
        // Replacing one list by one as long still fits.
        assert_eq!(set(&mut e, 0, "/e0", &spec("/srv", &"?".repeat(big.len()))), Ok(true));
        assert!(e.remove(0).is_ok());
        assert_eq!(set(&mut e, fit, "/more", &spec("/srv", &big)), Ok(true));
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn exports_are_bounded() {
        let mut e = Exports::default();
        for id in 0..EXPORTS_MAX as u32 {
            assert_eq!(reg(&mut e, id, &format!("/srv/{id}"), &test_fs()), Ok(true));
        }
        assert!(matches!(e.register(u32::MAX, "/srv/more", &test_fs()), Err(ApplyError::ExportsFull { .. })));
        assert!(matches!(e.set(u32::MAX, "/more", &spec("/srv", "*")), Err(ApplyError::ExportsFull { .. })));
        assert_eq!(reg(&mut e, 0, "/srv/0", &test_fs()), Ok(false));
        assert_eq!(e.check(), Ok(()));
    }

    #[test]
    fn ids_run_out_at_the_top() {
        let mut e = Exports::default();
        assert_eq!(e.next_id(), Some(1));
        assert_eq!(reg(&mut e, u32::MAX, "/top", &test_fs()), Ok(true));
        assert_eq!(e.next_id(), None);
    }

    #[test]
    fn invalid_paths_are_refused() {
        let mut e = Exports::default();
        assert!(matches!(e.register(1, "", &test_fs()), Err(ApplyError::ExportPathInvalid)));
        assert!(matches!(e.register(1, "/a\0b", &test_fs()), Err(ApplyError::ExportPathInvalid)));
        let long = "x".repeat(PATH_BYTES_MAX as usize + 1);
        assert!(matches!(e.register(1, &long, &test_fs()), Err(ApplyError::ExportPathInvalid)));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn an_old_table_loads_registered_but_unseeded() {
        let mut e = Exports::default();
        assert_eq!(reg(&mut e, 1, "/a", &test_fs()), Ok(true));
        let back = Exports::try_from(ExportsV2::from(&e)).expect("valid");
        assert_eq!(back.fs(1), Some(&test_fs()));
        assert_eq!(back.spec(1), None);
        assert!(!back.seeded());
        assert_eq!(back.check(), Ok(()));
    }
}
