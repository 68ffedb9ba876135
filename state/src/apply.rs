//! `State::apply`: matches on the command and lets each table compute. Every
//! change is recorded in an undo list, so a command that fails part-way (a
//! bad member of a batch) leaves the state exactly as it was. What is checked
//! after each apply and trial is in `invariants.rs`.

use crate::command::{Command, NlmCommand, Promotion, TcpConn};
use crate::conns::ConnRow;
use crate::drc::DrcUndo;
use crate::error::ApplyError;
use crate::exports::ExportUndo;
use crate::limits::BATCH_DEPTH_MAX;
use crate::locks::NlmUndo;
use crate::outcome::Outcome;
use crate::State;

/// One reversible change.
#[derive(Debug)]
enum Undo {
    /// An export entry changed (registered, set or removed).
    Export(ExportUndo),
    HandleKeySet,
    Mounted {
        client: String,
        path: String,
    },
    Unmounted {
        client: String,
        paths: Vec<String>,
    },
    EpochBumped,
    Drc(DrcUndo),
    Promotion(Option<Promotion>),
    Nlm(NlmUndo),
    /// A connection was recorded; `previous` is its earlier epoch, if any.
    ConnOpened {
        conn: TcpConn,
        previous: Option<u64>,
    },
    /// Connections were removed (closed or forgotten), with their epochs.
    ConnsRemoved(Vec<ConnRow>),
}

impl State {
    /// Applies `cmd` and returns what it decided (one `Outcome` per command,
    /// `Outcome::Batch` for a batch). On error nothing changed.
    /// Deterministic: the same sequence of commands gives the same state and
    /// the same outcomes.
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, ApplyError> {
        let before = self.sizes();
        let mut undo = Vec::new();
        let result = self.apply_at(cmd, 0, &mut undo);
        if result.is_err() {
            self.rollback(undo);
        }
        self.assert_after_apply(cmd, before, result.is_err());
        result
    }

    /// Group commit's dry run: applies each group as a nested batch, in order,
    /// exactly as `apply(&Command::Batch(ok groups, each as a Batch))` would,
    /// reports each group's result, then restores the state exactly. A failed
    /// group changes nothing, so applying only the Ok groups afterwards gives
    /// the same results (all Ok) and the same state.
    pub fn trial(&mut self, groups: &[&[Command]]) -> Vec<Result<(), ApplyError>> {
        let before = self.sizes();
        let mut all_undo = Vec::new();
        let mut results = Vec::with_capacity(groups.len());
        for group in groups {
            let mut undo = Vec::new();
            // Depth 1: the group sits inside the entry's outer Batch.
            let result = self.apply_batch(group, 1, &mut undo).map(drop);
            if result.is_err() {
                self.rollback(undo);
            } else {
                all_undo.extend(undo);
            }
            results.push(result);
        }
        self.rollback(all_undo);
        self.assert_after_trial(before);
        results
    }

    fn apply_at(&mut self, cmd: &Command, depth: u32, undo: &mut Vec<Undo>) -> Result<Outcome, ApplyError> {
        match cmd {
            Command::Batch(members) => self.apply_batch(members, depth, undo),
            Command::RegisterExport { export_id, path, fs } => {
                if let Some(export_undo) = self.exports.register(*export_id, path, fs)? {
                    undo.push(Undo::Export(export_undo));
                }
                Ok(Outcome::Done)
            }
            Command::ExportSet { export_id, path, spec } => {
                if let Some(export_undo) = self.exports.set(*export_id, path, spec)? {
                    undo.push(Undo::Export(export_undo));
                }
                Ok(Outcome::Done)
            }
            Command::ExportRemove { export_id } => {
                undo.push(Undo::Export(self.exports.remove(*export_id)?));
                Ok(Outcome::Done)
            }
            Command::SetHandleKey { key } => {
                if self.handle_key.is_none() {
                    self.handle_key = Some(*key);
                    undo.push(Undo::HandleKeySet);
                }
                Ok(Outcome::Done)
            }
            Command::Mount { client, path } => {
                if self.rmtab.mount(client, path)? {
                    undo.push(Undo::Mounted { client: client.clone(), path: path.clone() });
                }
                Ok(Outcome::Done)
            }
            Command::Unmount { client, path } => {
                if self.rmtab.unmount(client, path) {
                    undo.push(Undo::Unmounted { client: client.clone(), paths: vec![path.clone()] });
                }
                Ok(Outcome::Done)
            }
            Command::UnmountAll { client } => {
                let paths = self.rmtab.unmount_all(client);
                if !paths.is_empty() {
                    undo.push(Undo::Unmounted { client: client.clone(), paths });
                }
                Ok(Outcome::Done)
            }
            Command::BumpEpoch => {
                self.epoch = self.epoch.checked_add(1).ok_or(ApplyError::EpochOverflow)?;
                undo.push(Undo::EpochBumped);
                Ok(Outcome::Done)
            }
            Command::DrcInsert { key, reply, now_ms } => {
                undo.push(Undo::Drc(self.drc.insert(key, reply, *now_ms)?));
                Ok(Outcome::Done)
            }
            Command::DrcIntent { key, now_ms } => {
                if let Some(drc_undo) = self.drc.intent(key, *now_ms)? {
                    undo.push(Undo::Drc(drc_undo));
                }
                Ok(Outcome::Done)
            }
            Command::RecordPromotion(p) => {
                undo.push(Undo::Promotion(self.last_promotion.replace(*p)));
                Ok(Outcome::Done)
            }
            Command::Nlm(nlm) => {
                let mut nlm_undo = NlmUndo::default();
                let outcome = self.apply_nlm(nlm, &mut nlm_undo);
                if !nlm_undo.is_empty() {
                    undo.push(Undo::Nlm(nlm_undo));
                }
                Ok(outcome)
            }
            Command::ConnOpen { conn } => {
                let previous = self.conns.open(conn, self.epoch)?;
                undo.push(Undo::ConnOpened { conn: *conn, previous });
                Ok(Outcome::Done)
            }
            Command::ConnClose { conn } => {
                if let Some(epoch) = self.conns.close(conn) {
                    undo.push(Undo::ConnsRemoved(vec![(*conn, epoch)]));
                }
                Ok(Outcome::Done)
            }
            Command::ConnsForget { epoch } => {
                let removed = self.conns.forget_before(*epoch);
                if !removed.is_empty() {
                    undo.push(Undo::ConnsRemoved(removed));
                }
                Ok(Outcome::Done)
            }
        }
    }

    /// The members of a `Batch` found at `depth`, in order.
    fn apply_batch(&mut self, members: &[Command], depth: u32, undo: &mut Vec<Undo>) -> Result<Outcome, ApplyError> {
        if depth >= BATCH_DEPTH_MAX {
            return Err(ApplyError::BatchTooDeep { max: BATCH_DEPTH_MAX });
        }
        let mut outcomes = Vec::with_capacity(members.len());
        for member in members {
            outcomes.push(self.apply_at(member, depth + 1, undo)?);
        }
        Ok(Outcome::Batch(outcomes))
    }

    /// The NLM/NSM commands: the lock table decides, and its decision is the
    /// outcome. A refusal (a bound, a bad argument) is an outcome the reply
    /// reports, not an `ApplyError`, so it never fails a batch.
    fn apply_nlm(&mut self, cmd: &NlmCommand, undo: &mut NlmUndo) -> Outcome {
        let nlm = &mut self.nlm;
        match cmd {
            NlmCommand::Lock { args, block, client_addr, now_ms } => {
                let effect = nlm.lock(args, *block, *now_ms, undo);
                let holds_or_waits =
                    matches!(effect.outcome, crate::locks::LockOutcome::Granted | crate::locks::LockOutcome::Blocked);
                if holds_or_waits {
                    // A full host list only loses the callback address: the
                    // client still re-polls a blocked LOCK every 30 s.
                    nlm.record_host(&args.owner.caller_name, client_addr, undo);
                }
                Outcome::Lock(effect)
            }
            NlmCommand::Unlock { file, owner, range, now_ms } => {
                Outcome::Unlock(nlm.unlock(file, owner, *range, *now_ms, undo))
            }
            NlmCommand::Cancel { args } => Outcome::Cancel(nlm.cancel(args, undo)),
            NlmCommand::GrantAcknowledged { id } => Outcome::GrantAcknowledged(nlm.grant_acknowledged(*id, undo)),
            NlmCommand::FreeAll { caller_name, now_ms } => Outcome::FreeAll(nlm.free_all(caller_name, *now_ms, undo)),
            NlmCommand::Share { file, share } => Outcome::Share(nlm.share(file, share, undo)),
            NlmCommand::Unshare { file, owner } => Outcome::Unshare(nlm.unshare(file, owner, undo)),
            NlmCommand::Mon { mon_name, id, priv_ } => Outcome::Mon(nlm.mon(mon_name, id, *priv_, undo)),
            NlmCommand::Unmon { mon_name, id } => Outcome::Unmon(nlm.unmon(mon_name, id, undo)),
            NlmCommand::UnmonAll { id } => Outcome::Unmon(nlm.unmon_all(id, undo)),
            NlmCommand::Notify { mon_name, state, now_ms } => {
                Outcome::Notify(nlm.notify(mon_name, *state, *now_ms, undo))
            }
            NlmCommand::BumpNsmState => Outcome::NsmState(nlm.bump_nsm_state(undo)),
            NlmCommand::Wake { now_ms } => Outcome::Wake(nlm.wake(*now_ms, undo)),
        }
    }

    /// Reverts changes newest first.
    fn rollback(&mut self, undo: Vec<Undo>) {
        for change in undo.into_iter().rev() {
            match change {
                Undo::Export(export_undo) => self.exports.restore(export_undo),
                Undo::HandleKeySet => self.handle_key = None,
                Undo::Mounted { client, path } => self.rmtab.remove_raw(&client, &path),
                Undo::Unmounted { client, paths } => {
                    for path in paths {
                        self.rmtab.insert_raw(client.clone(), path);
                    }
                }
                Undo::EpochBumped => self.epoch = self.epoch.saturating_sub(1),
                Undo::Drc(drc_undo) => self.drc.undo(drc_undo),
                Undo::Promotion(prev) => self.last_promotion = prev,
                Undo::Nlm(nlm_undo) => self.nlm.undo(nlm_undo),
                Undo::ConnOpened { conn, previous: None } => self.conns.remove_raw(&conn),
                Undo::ConnOpened { conn, previous: Some(epoch) } => self.conns.insert_raw(conn, epoch),
                Undo::ConnsRemoved(rows) => {
                    for (conn, epoch) in rows {
                        self.conns.insert_raw(conn, epoch);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{test_fs, DrcKey};

    fn register(export_id: u32, path: &str) -> Command {
        Command::RegisterExport { export_id, path: path.into(), fs: test_fs() }
    }

    fn registered() -> State {
        let mut s = State::default();
        assert_eq!(s.apply(&register(7, "/srv/x")).map(drop), Ok(()));
        s
    }

    #[test]
    fn the_first_handle_key_stays() {
        let mut s = State::default();
        assert_eq!(s.handle_key(), None);
        assert_eq!(s.apply(&Command::SetHandleKey { key: [1; 32] }).map(drop), Ok(()));
        assert_eq!(s.apply(&Command::SetHandleKey { key: [2; 32] }).map(drop), Ok(()));
        assert_eq!(s.handle_key(), Some(&[1; 32]));
        // Undone with a refused batch.
        let mut s = State::default();
        let bad = Command::Batch(vec![Command::SetHandleKey { key: [3; 32] }, register(1, "")]);
        assert_eq!(s.apply(&bad), Err(ApplyError::ExportPathInvalid));
        assert_eq!(s.handle_key(), None);
    }

    #[test]
    fn a_rejected_batch_changes_nothing() {
        let mut s = registered();
        assert_eq!(s.apply(&Command::SetHandleKey { key: [5; 32] }).map(drop), Ok(()));
        assert_eq!(s.apply(&Command::Mount { client: "c".into(), path: "/srv/x".into() }).map(drop), Ok(()));
        let key = DrcKey {
            client: "c".into(),
            xid: 1,
            prog: 100003,
            vers: 3,
            proc_: 8,
            args_sum: 1,
            cred: crate::command::DrcCred::None,
        };
        assert_eq!(
            s.apply(&Command::DrcInsert { key: key.clone(), reply: b"r".to_vec(), now_ms: 1 }).map(drop),
            Ok(())
        );
        let before = s.clone();
        let bad = Command::Batch(vec![
            Command::BumpEpoch,
            Command::SetHandleKey { key: [6; 32] },
            Command::UnmountAll { client: "c".into() },
            Command::Mount { client: "d".into(), path: "/srv/x".into() },
            register(8, "/srv/y"),
            Command::DrcInsert { key: key.clone(), reply: b"other".to_vec(), now_ms: 10_000_000 },
            Command::DrcIntent { key: DrcKey { xid: 2, ..key.clone() }, now_ms: 10_000_000 },
            Command::Batch(vec![register(9, "/a\0b")]),
        ]);
        assert_eq!(s.apply(&bad), Err(ApplyError::ExportPathInvalid));
        assert_eq!(s, before);
    }

    #[test]
    fn batches_nest_only_so_deep() {
        let mut s = State::default();
        let mut cmd = Command::BumpEpoch;
        for _ in 0..BATCH_DEPTH_MAX {
            cmd = Command::Batch(vec![cmd]);
        }
        assert_eq!(s.apply(&cmd).map(drop), Ok(()));
        assert_eq!(s.epoch(), 1);
        let deeper = Command::Batch(vec![cmd]);
        assert_eq!(s.apply(&deeper), Err(ApplyError::BatchTooDeep { max: BATCH_DEPTH_MAX }));
        assert_eq!(s.epoch(), 1);
    }

    #[test]
    fn trial_reports_per_group_and_changes_nothing() {
        let mut s = registered();
        let good = vec![register(8, "/srv/y"), Command::BumpEpoch];
        let bad = vec![Command::BumpEpoch, register(9, "")];
        // Conflicts with `good`'s export 8 only once `good` is applied.
        let depends = vec![register(10, "/srv/y")];
        let before = s.clone();
        let results = s.trial(&[&good, &bad, &depends]);
        assert!(results[0].is_ok());
        assert_eq!(results[1], Err(ApplyError::ExportPathInvalid));
        assert!(matches!(results[2], Err(ApplyError::ExportPathConflict { existing_id: 8, .. })));
        assert_eq!(s, before);
        let entry_cmd = Command::Batch(vec![Command::Batch(good)]);
        assert_eq!(s.apply(&entry_cmd).map(drop), Ok(()));
        assert_eq!(s.epoch(), 1);
        assert_eq!(s.export_path(8), Some("/srv/y"));
    }

    fn lock_cmd(svid: u32, offset: u64, block: bool) -> Command {
        use crate::locks::{FileId, LockArgs, LockKind, LockOwner, LockRange};
        let owner = LockOwner { caller_name: format!("host{svid}"), svid, oh: vec![1] };
        let args = LockArgs {
            file: FileId(vec![9; 8]),
            owner,
            range: LockRange { offset, len: 10 },
            kind: LockKind::Exclusive,
        };
        Command::Nlm(NlmCommand::Lock { args, block, client_addr: format!("10.0.0.{svid}"), now_ms: 5 })
    }

    #[test]
    fn nlm_outcomes_come_from_apply_in_log_order() {
        use crate::locks::LockOutcome;
        let mut s = State::default();
        // Two conflicting LOCKs in one entry: the first is granted, the second
        // sees the first (the check is made on the table as applied).
        let entry = Command::Batch(vec![
            Command::Batch(vec![lock_cmd(1, 0, false)]),
            Command::Batch(vec![lock_cmd(2, 5, true)]),
        ]);
        let Ok(Outcome::Batch(groups)) = s.apply(&entry) else { panic!("batch outcome") };
        let Outcome::Batch(first) = &groups[0] else { panic!("group") };
        let Outcome::Batch(second) = &groups[1] else { panic!("group") };
        assert!(matches!(&first[0], Outcome::Lock(e) if e.outcome == LockOutcome::Granted));
        assert!(matches!(&second[0], Outcome::Lock(e) if e.outcome == LockOutcome::Blocked));
        assert_eq!(s.nlm().hosts().addr("host1"), Some("10.0.0.1"));
        // Unlocking grants the waiter in the same step.
        let Some(Command::Nlm(NlmCommand::Lock { args, .. })) = Some(lock_cmd(1, 0, false)) else { unreachable!() };
        let unlock =
            Command::Nlm(NlmCommand::Unlock { file: args.file, owner: args.owner, range: args.range, now_ms: 6 });
        let Ok(Outcome::Unlock(effect)) = s.apply(&unlock) else { panic!("unlock outcome") };
        assert_eq!(effect.granted.len(), 1);
        assert_eq!(effect.granted[0].owner.svid, 2);
    }

    #[test]
    fn a_rejected_batch_undoes_its_nlm_changes() {
        let mut s = State::default();
        let before = s.clone();
        let bad = Command::Batch(vec![lock_cmd(1, 0, false), register(1, "")]);
        assert_eq!(s.apply(&bad), Err(ApplyError::ExportPathInvalid));
        assert_eq!(s, before);
    }

    #[test]
    fn epoch_counts_bumps() {
        let mut s = State::default();
        assert_eq!(s.epoch(), 0);
        for _ in 0..3 {
            assert_eq!(s.apply(&Command::BumpEpoch).map(drop), Ok(()));
        }
        assert_eq!(s.epoch(), 3);
    }
}
