//! What is checked when. Every check below panics on a broken invariant: a
//! broken state machine must stop the node, not replicate its fault.
//!
//! - After every `apply`, in every build (release included), `assert!`s
//!   costing O(1) plus O(log n) per item the command names:
//!   the epoch never goes backwards; a refused command left the epoch and
//!   every table's size as they were; every bound holds; the derived indexes
//!   (export path → id, DRC age order) are as large as what they index; and
//!   each export, handle, rmtab row and DRC entry the command named is
//!   consistent (`check_touched`).
//! - After every `trial`, in every build: the epoch and every table's size are
//!   as before.
//! - After every `apply` and `trial`, only under `cfg(test)` or the cargo
//!   feature `invariants` (`./test.sh` turns it on for the whole test run):
//!   the full walk `check_invariants`, O(size of the state). Never in a
//!   production build: at `HANDLES_MAX` entries one walk takes seconds, under
//!   the state's write lock.
//! - When a snapshot is loaded (`State::from_snapshot`), in every build: the
//!   full walk; a snapshot that fails it is refused (`CodecError::Invalid`).

use crate::command::Command;
use crate::error::InvariantError;
use crate::limits::BATCH_DEPTH_MAX;
use crate::State;

/// Whether `apply` and `trial` also run the full `check_invariants` walk.
pub(crate) const FULL_CHECK_AFTER_APPLY: bool = cfg!(any(test, feature = "invariants"));

/// The O(1) measures of a state that a refused command must leave alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    epoch: u64,
    exports: u64,
    handles: u64,
    rmtab: u64,
    drc_entries: u64,
    drc_bytes: u64,
}

impl State {
    pub(crate) fn sizes(&self) -> Sizes {
        Sizes {
            epoch: self.epoch,
            exports: self.exports.len(),
            handles: self.handles.len(),
            rmtab: self.rmtab.len(),
            drc_entries: self.drc.len(),
            drc_bytes: self.drc.bytes(),
        }
    }

    /// The checks after `apply(cmd)`; `refused` if it returned an error.
    pub(crate) fn assert_after_apply(&self, cmd: &Command, before: Sizes, refused: bool) {
        let after = self.sizes();
        assert!(after.epoch >= before.epoch, "epoch went backwards: {} -> {}", before.epoch, after.epoch);
        if refused {
            assert_eq!(after.epoch, before.epoch, "a refused command changed the epoch");
            assert_eq!(after.exports, before.exports, "a refused command changed the export count");
            assert_eq!(after.handles, before.handles, "a refused command changed the handle count");
            assert_eq!(after.rmtab, before.rmtab, "a refused command changed the rmtab row count");
            assert_eq!(after.drc_entries, before.drc_entries, "a refused command changed the DRC entry count");
            assert_eq!(after.drc_bytes, before.drc_bytes, "a refused command changed the DRC byte count");
        }
        if let Err(e) = self.check_sizes() {
            panic!("invariant broken after apply: {e}");
        }
        if let Err(e) = self.check_touched(cmd, 0) {
            panic!("invariant broken after apply, at what the command named: {e}");
        }
        self.full_check_if_enabled("apply");
    }

    /// The checks after `trial`, which must restore the state.
    pub(crate) fn assert_after_trial(&self, before: Sizes) {
        assert_eq!(self.sizes(), before, "trial must leave the state unchanged");
        self.full_check_if_enabled("trial");
    }

    fn full_check_if_enabled(&self, after: &str) {
        if FULL_CHECK_AFTER_APPLY {
            if let Err(e) = self.check_invariants() {
                panic!("invariant broken after {after} (full check): {e}");
            }
        }
    }

    /// O(1): every table's bound and index sizes.
    fn check_sizes(&self) -> Result<(), InvariantError> {
        self.exports.check_sizes()?;
        self.handles.check_size()?;
        self.rmtab.check_size()?;
        self.drc.check_sizes()
    }

    /// Each item `cmd` names, as it is now (changed, restored or removed),
    /// is consistent. Batches deeper than `apply` accepts are not walked.
    fn check_touched(&self, cmd: &Command, depth: u32) -> Result<(), InvariantError> {
        match cmd {
            Command::Batch(members) if depth < BATCH_DEPTH_MAX => {
                for member in members {
                    self.check_touched(member, depth + 1)?;
                }
                Ok(())
            }
            Command::Batch(_) => Ok(()),
            Command::RegisterExport { export_id, .. } => self.exports.check_id(*export_id),
            Command::PutHandles(entries) => {
                for entry in entries {
                    self.check_handle(entry.export_id, entry.ino)?;
                }
                Ok(())
            }
            Command::RemoveHandle { export_id, ino, .. } => self.check_handle(*export_id, *ino),
            Command::Mount { client, path } | Command::Unmount { client, path } => self.rmtab.check_row(client, path),
            Command::DrcInsert { key, .. } | Command::DrcIntent { key, .. } => self.drc.check_key(key),
            Command::UnmountAll { .. } | Command::BumpEpoch | Command::RecordPromotion(_) => Ok(()),
            // The lock table asserts its own O(1) checks inside each operation.
            Command::Nlm(_) => Ok(()),
        }
    }

    /// The handle at (`export_id`, `ino`), if any, is consistent and its export registered.
    fn check_handle(&self, export_id: u32, ino: u64) -> Result<(), InvariantError> {
        self.handles.check_at(export_id, ino)?;
        if self.handles.get(export_id, ino).is_some() && !self.exports.contains(export_id) {
            return Err(InvariantError::HandleExportUnknown { export_id, ino });
        }
        Ok(())
    }

    /// Full consistency check, O(size): every table's own invariants, plus
    /// every handle's export registered. Runs when a snapshot is loaded, and
    /// after every apply under `cfg(test)` or the feature `invariants`.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        self.exports.check()?;
        self.handles.check()?;
        self.rmtab.check()?;
        self.drc.check()?;
        self.nlm.check_invariants().map_err(InvariantError::Nlm)?;
        for entry in self.handles.iter() {
            if !self.exports.contains(entry.export_id) {
                return Err(InvariantError::HandleExportUnknown { export_id: entry.export_id, ino: entry.ino });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::HandleEntry;
    use crate::error::NameError;

    const EXPORT: u32 = 7;

    fn entry(ino: u64, parent_ino: u64, name: &[u8]) -> HandleEntry {
        HandleEntry { export_id: EXPORT, ino, ident: ino + 100, parent_ino, name: name.to_vec() }
    }

    fn registered() -> State {
        let mut s = State::default();
        assert_eq!(s.apply(&Command::RegisterExport { export_id: EXPORT, path: "/srv/x".into() }).map(drop), Ok(()));
        assert_eq!(s.apply(&Command::PutHandles(vec![entry(1, 1, b""), entry(2, 1, b"f")])).map(drop), Ok(()));
        s
    }

    /// A handle stored under another key than its own (only a bug could do this).
    fn with_misfiled_handle() -> State {
        let mut s = registered();
        s.handles.restore((EXPORT, 5), Some(entry(6, 1, b"g")));
        s
    }

    #[test]
    fn a_consistent_state_passes() {
        let s = registered();
        assert_eq!(s.check_invariants(), Ok(()));
        assert_eq!(s.check_touched(&Command::PutHandles(vec![entry(2, 1, b"f")]), 0), Ok(()));
    }

    #[test]
    fn the_cheap_check_sees_a_broken_item_the_command_names() {
        let s = with_misfiled_handle();
        let err = InvariantError::HandleKey { export_id: EXPORT, ino: 5 };
        let names_it = Command::Batch(vec![Command::RemoveHandle { export_id: EXPORT, ino: 5, ident: 0 }]);
        assert_eq!(s.check_touched(&names_it, 0), Err(err.clone()));
        assert_eq!(s.check_touched(&Command::BumpEpoch, 0), Ok(()));
        assert_eq!(s.check_invariants(), Err(err));
    }

    #[test]
    #[should_panic(expected = "invariant broken after apply, at what the command named: handle 7/5: key disagrees")]
    fn apply_panics_on_a_broken_item_it_touches() {
        let mut s = with_misfiled_handle();
        let _ = s.apply(&Command::RemoveHandle { export_id: EXPORT, ino: 5, ident: 0 });
    }

    #[test]
    #[should_panic(expected = "rmtab row \"\" \"/srv/x\" invalid")]
    fn apply_panics_on_a_broken_row_even_when_the_command_is_refused() {
        let mut s = registered();
        s.rmtab.insert_raw(String::new(), "/srv/x".into());
        let _ = s.apply(&Command::Mount { client: String::new(), path: "/srv/x".into() });
    }

    #[test]
    #[should_panic(expected = "invariant broken after apply (full check): handle 9/3: export not registered")]
    fn the_full_check_runs_after_every_apply_in_tests() {
        let mut s = registered();
        let orphan = HandleEntry { export_id: 9, ino: 3, ident: 1, parent_ino: 1, name: b"o".to_vec() };
        assert!(s.handles.put(&orphan).is_ok());
        // BumpEpoch names no handle: only the full walk can see the orphan.
        let _ = s.apply(&Command::BumpEpoch);
    }

    #[test]
    fn a_snapshot_that_breaks_an_invariant_is_refused() {
        let mut s = registered();
        assert!(s.handles.put(&entry(3, 1, b"ok")).is_ok());
        s.handles.restore((EXPORT, 4), Some(HandleEntry { name: b"a/b".to_vec(), ..entry(4, 1, b"x") }));
        let err = InvariantError::HandleName { export_id: EXPORT, ino: 4, reason: NameError::Slash };
        assert_eq!(s.check_invariants(), Err(err.clone()));
        match State::from_snapshot(&s.to_snapshot()) {
            Err(crate::CodecError::Invalid(got)) => assert_eq!(got, err),
            other => panic!("expected Invalid({err}), got {other:?}"),
        }
    }
}
