//! What is checked when. Every check below panics on a broken invariant: a
//! broken state machine must stop the node, not replicate its fault.
//!
//! - After every `apply`, in every build (release included), `assert!`s
//!   costing O(1) plus O(log n) per item the command names:
//!   the epoch never goes backwards; a refused command left the epoch and
//!   every table's size as they were; every bound holds; the derived indexes
//!   (export path → id, DRC age order) are as large as what they index; and
//!   each export, rmtab row and DRC entry the command named is consistent
//!   (`check_touched`: also each recorded TCP connection, valid and not from
//!   a future epoch); the handle key, once set, never changes.
//! - After every `trial`, in every build: the epoch and every table's size are
//!   as before.
//! - After every `apply` and `trial`, only under `cfg(test)` or the cargo
//!   feature `invariants` (`./test.sh` turns it on for the whole test run):
//!   the full walk `check_invariants`, O(size of the state). Never in a
//!   production build: a full DRC and lock table take milliseconds to walk,
//!   under the state's write lock.
//! - When a snapshot is loaded (`State::from_snapshot`), in every build: the
//!   full walk; a snapshot that fails it is refused (`CodecError::Invalid`).

use crate::command::{Command, HANDLE_KEY_BYTES};
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
    handle_key: Option<[u8; HANDLE_KEY_BYTES]>,
    rmtab: u64,
    drc_entries: u64,
    drc_bytes: u64,
    conns: u64,
}

impl State {
    pub(crate) fn sizes(&self) -> Sizes {
        Sizes {
            epoch: self.epoch,
            exports: self.exports.len(),
            handle_key: self.handle_key,
            rmtab: self.rmtab.len(),
            drc_entries: self.drc.len(),
            drc_bytes: self.drc.bytes(),
            conns: self.conns.len(),
        }
    }

    /// The checks after `apply(cmd)`; `refused` if it returned an error.
    pub(crate) fn assert_after_apply(&self, cmd: &Command, before: Sizes, refused: bool) {
        let after = self.sizes();
        assert!(after.epoch >= before.epoch, "epoch went backwards: {} -> {}", before.epoch, after.epoch);
        if before.handle_key.is_some() {
            assert_eq!(after.handle_key, before.handle_key, "the handle key changed once set");
        }
        if refused {
            assert_eq!(after.epoch, before.epoch, "a refused command changed the epoch");
            assert_eq!(after.exports, before.exports, "a refused command changed the export count");
            assert_eq!(after.handle_key, before.handle_key, "a refused command changed the handle key");
            assert_eq!(after.rmtab, before.rmtab, "a refused command changed the rmtab row count");
            assert_eq!(after.drc_entries, before.drc_entries, "a refused command changed the DRC entry count");
            assert_eq!(after.drc_bytes, before.drc_bytes, "a refused command changed the DRC byte count");
            assert_eq!(after.conns, before.conns, "a refused command changed the connection count");
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
        self.rmtab.check_size()?;
        self.conns.check_size()?;
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
            Command::RegisterExport { export_id, .. }
            | Command::ExportSet { export_id, .. }
            | Command::ExportRemove { export_id } => self.exports.check_id(*export_id),
            Command::Mount { client, path } | Command::Unmount { client, path } => self.rmtab.check_row(client, path),
            Command::DrcInsert { key, .. } | Command::DrcIntent { key, .. } => self.drc.check_key(key),
            Command::ConnOpen { conn } | Command::ConnClose { conn } => self.conns.check_conn(conn, self.epoch),
            Command::ConnsForget { .. } => Ok(()),
            Command::UnmountAll { .. }
            | Command::BumpEpoch
            | Command::RecordPromotion(_)
            | Command::SetHandleKey { .. } => Ok(()),
            // The lock table asserts its own O(1) checks inside each operation.
            Command::Nlm(_) => Ok(()),
        }
    }

    /// Full consistency check, O(size): every table's own invariants. Runs when a snapshot is loaded, and
    /// after every apply under `cfg(test)` or the feature `invariants`.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        self.exports.check()?;
        self.rmtab.check()?;
        self.drc.check()?;
        self.conns.check(self.epoch)?;
        self.nlm.check_invariants().map_err(InvariantError::Nlm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_fs;

    const EXPORT: u32 = 7;

    fn registered() -> State {
        let mut s = State::default();
        let register = Command::RegisterExport { export_id: EXPORT, path: "/srv/x".into(), fs: test_fs() };
        assert_eq!(s.apply(&register).map(drop), Ok(()));
        s
    }

    /// Export 7's path indexed under another id (only a bug could do this).
    fn with_misfiled_export() -> State {
        let mut s = registered();
        s.exports.corrupt_index("/srv/x", 8);
        s
    }

    #[test]
    fn a_consistent_state_passes() {
        let s = registered();
        assert_eq!(s.check_invariants(), Ok(()));
        let register = Command::RegisterExport { export_id: EXPORT, path: "/srv/x".into(), fs: test_fs() };
        assert_eq!(s.check_touched(&register, 0), Ok(()));
    }

    #[test]
    fn the_cheap_check_sees_a_broken_item_the_command_names() {
        let s = with_misfiled_export();
        let err = InvariantError::ExportIndexDisagrees { export_id: EXPORT };
        let register = Command::RegisterExport { export_id: EXPORT, path: "/srv/x".into(), fs: test_fs() };
        let names_it = Command::Batch(vec![register]);
        assert_eq!(s.check_touched(&names_it, 0), Err(err.clone()));
        assert_eq!(s.check_touched(&Command::BumpEpoch, 0), Ok(()));
        assert_eq!(s.check_invariants(), Err(err));
    }

    #[test]
    #[should_panic(
        expected = "invariant broken after apply, at what the command named: export 7: path index disagrees"
    )]
    fn apply_panics_on_a_broken_item_it_touches() {
        let mut s = with_misfiled_export();
        let _ = s.apply(&Command::RegisterExport { export_id: EXPORT, path: "/srv/x".into(), fs: test_fs() });
    }

    #[test]
    #[should_panic(expected = "rmtab row \"\" \"/srv/x\" invalid")]
    fn apply_panics_on_a_broken_row_even_when_the_command_is_refused() {
        let mut s = registered();
        s.rmtab.insert_raw(String::new(), "/srv/x".into());
        let _ = s.apply(&Command::Mount { client: String::new(), path: "/srv/x".into() });
    }

    #[test]
    #[should_panic(expected = "invariant broken after apply (full check): export 7: path index disagrees")]
    fn the_full_check_runs_after_every_apply_in_tests() {
        let mut s = with_misfiled_export();
        // BumpEpoch names no export: only the full walk can see it.
        let _ = s.apply(&Command::BumpEpoch);
    }

    #[test]
    #[should_panic(expected = "the handle key changed once set")]
    fn the_handle_key_never_changes() {
        let mut s = registered();
        assert_eq!(s.apply(&Command::SetHandleKey { key: [1; 32] }).map(drop), Ok(()));
        s.handle_key = None;
        // Only a bug could clear it; the next apply sets another and must panic.
        let before = s.sizes();
        s.handle_key = Some([2; 32]);
        s.assert_after_apply(&Command::BumpEpoch, Sizes { handle_key: Some([1; 32]), ..before }, false);
    }

    #[test]
    fn the_full_check_sees_served_exports_and_their_byte_count() {
        let mut s = registered();
        let spec = crate::command::ExportSpec { dir: "/disk/x".into(), clients: "*(rw)".into() };
        let set = Command::ExportSet { export_id: EXPORT, path: "/srv/x".into(), spec };
        assert_eq!(s.apply(&set).map(drop), Ok(()));
        assert_eq!(s.check_touched(&set, 0), Ok(()));
        assert_eq!(s.check_touched(&Command::ExportRemove { export_id: EXPORT }, 0), Ok(()));
        s.exports.corrupt_clients_bytes(1);
        assert_eq!(s.check_invariants(), Err(InvariantError::ExportClientsBytes { counted: 1, sum: 5 }));
        // The byte count is derived, so a snapshot rebuilds it right.
        assert!(State::from_snapshot(&s.to_snapshot()).is_ok_and(|back| back.check_invariants().is_ok()));
    }

    #[test]
    #[should_panic(expected = "export 7: path index disagrees")]
    fn apply_panics_when_a_removed_export_it_names_is_broken() {
        let mut s = with_misfiled_export();
        let _ = s.apply(&Command::ExportRemove { export_id: EXPORT });
    }

    #[test]
    fn a_snapshot_that_breaks_an_invariant_is_refused() {
        let s = with_misfiled_export();
        let err = InvariantError::ExportIndexDisagrees { export_id: EXPORT };
        assert_eq!(s.check_invariants(), Err(err.clone()));
        // The path index is rebuilt on decode, so corrupt what is encoded instead: a bad identity.
        let mut s = registered();
        s.exports.corrupt_fs(EXPORT, vec![0; crate::limits::FS_HANDLE_BYTES_MAX as usize + 1]);
        let err = InvariantError::ExportFsInvalid { export_id: EXPORT };
        assert_eq!(s.check_invariants(), Err(err.clone()));
        // Refused while decoding the export table (its `try_from` checks every identity).
        match State::from_snapshot(&s.to_snapshot()) {
            Err(e) => assert!(e.to_string().contains(&err.to_string()), "{e}"),
            Ok(_) => panic!("a snapshot with {err} was loaded"),
        }
    }
}
