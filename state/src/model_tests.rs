//! Property tests: random command sequences applied to `State` and to a
//! deliberately naive model (vectors, linear scans, clone-and-restore for
//! batches) must agree on every table after every command. Also: apply is
//! deterministic, snapshots round-trip, `trial` predicts group commit, and a
//! store reopened from its log (and snapshot) gives back the same state.
//!
//! The entry and byte bounds of the DRC are too large to reach here; the unit
//! tests in `drc.rs` cover them.

use proptest::prelude::*;

use crate::command::{Command, DrcCred, DrcKey, ExportSpec, FsIdentity, Promotion, TcpConn, HANDLE_KEY_BYTES};
use crate::limits::{
    BATCH_DEPTH_MAX, CLIENT_BYTES_MAX, DRC_REPLY_BYTES_MAX, DRC_WINDOW_MS, FS_HANDLE_BYTES_MAX, PATH_BYTES_MAX,
};
use crate::{State, Store};

const CASES: u32 = 64;
const STORE_CASES: u32 = 16;

#[derive(Clone, Debug, Default)]
struct Model {
    epoch: u64,
    /// (id, name, identity, served as)
    exports: Vec<(u32, String, Option<FsIdentity>, Option<ExportSpec>)>,
    exports_seeded: bool,
    handle_key: Option<[u8; HANDLE_KEY_BYTES]>,
    rmtab: Vec<(String, String)>,
    /// (key, reply (None: an intent), time_ms, seq)
    drc: Vec<(DrcKey, Option<Vec<u8>>, u64, u64)>,
    next_seq: u64,
    promotion: Option<Promotion>,
    /// (connection, epoch recorded in)
    conns: Vec<(TcpConn, u64)>,
}

fn text_ok(s: &str, max: u64) -> bool {
    !s.is_empty() && s.len() as u64 <= max && !s.contains('\0')
}

impl Model {
    fn apply(&mut self, cmd: &Command) -> bool {
        self.apply_at(cmd, 0)
    }

    fn apply_at(&mut self, cmd: &Command, depth: u32) -> bool {
        match cmd {
            Command::Batch(members) => {
                if depth >= BATCH_DEPTH_MAX {
                    return false;
                }
                let saved = self.clone();
                for m in members {
                    if !self.apply_at(m, depth + 1) {
                        *self = saved;
                        return false;
                    }
                }
                true
            }
            Command::RegisterExport { export_id, path, fs } => {
                if !text_ok(path, PATH_BYTES_MAX) || fs.root_handle.len() as u64 > FS_HANDLE_BYTES_MAX {
                    return false;
                }
                if let Some((_, p, known, _)) = self.exports.iter_mut().find(|(id, _, _, _)| id == export_id) {
                    if p != path {
                        return false;
                    }
                    known.get_or_insert_with(|| fs.clone());
                    return true;
                }
                if self.exports.iter().any(|(_, p, _, _)| p == path) {
                    return false;
                }
                self.exports.push((*export_id, path.clone(), Some(fs.clone()), None));
                true
            }
            // The byte bounds are too large to reach here; `exports.rs` tests them.
            Command::ExportSet { export_id, path, spec } => {
                let absolute = |p: &str| text_ok(p, PATH_BYTES_MAX) && p.starts_with('/');
                if !absolute(path) || !absolute(&spec.dir) || spec.clients.trim().is_empty() {
                    return false;
                }
                if let Some((_, p, _, served)) = self.exports.iter_mut().find(|(id, _, _, _)| id == export_id) {
                    if p != path {
                        return false;
                    }
                    *served = Some(spec.clone());
                } else if self.exports.iter().any(|(_, p, _, _)| p == path) {
                    return false;
                } else {
                    self.exports.push((*export_id, path.clone(), None, Some(spec.clone())));
                }
                self.exports_seeded = true;
                true
            }
            Command::ExportRemove { export_id } => {
                match self.exports.iter_mut().find(|(id, _, _, served)| id == export_id && served.is_some()) {
                    Some((_, _, _, served)) => {
                        *served = None;
                        true
                    }
                    None => false,
                }
            }
            Command::SetHandleKey { key } => {
                self.handle_key.get_or_insert(*key);
                true
            }
            Command::Mount { client, path } => {
                if !text_ok(client, CLIENT_BYTES_MAX) || !text_ok(path, PATH_BYTES_MAX) {
                    return false;
                }
                let row = (client.clone(), path.clone());
                if !self.rmtab.contains(&row) {
                    self.rmtab.push(row);
                }
                true
            }
            Command::Unmount { client, path } => {
                self.rmtab.retain(|(c, p)| (c, p) != (client, path));
                true
            }
            Command::UnmountAll { client } => {
                self.rmtab.retain(|(c, _)| c != client);
                true
            }
            Command::BumpEpoch => {
                self.epoch += 1;
                true
            }
            // Never refused (their decisions are outcomes); the lock table's
            // own model tests live in `locks/model_tests.rs`.
            Command::Nlm(_) => true,
            Command::DrcInsert { key, reply, now_ms } => {
                if reply.len() as u64 > DRC_REPLY_BYTES_MAX || !text_ok(&key.client, CLIENT_BYTES_MAX) {
                    return false;
                }
                let cutoff = now_ms.saturating_sub(DRC_WINDOW_MS);
                self.drc.retain(|(k, _, t, _)| k != key && *t >= cutoff);
                self.drc.push((key.clone(), Some(reply.clone()), *now_ms, self.next_seq));
                self.next_seq += 1;
                true
            }
            Command::DrcIntent { key, now_ms } => {
                if self.drc.iter().any(|(k, _, _, _)| k == key) {
                    return true;
                }
                if !text_ok(&key.client, CLIENT_BYTES_MAX) {
                    return false;
                }
                let cutoff = now_ms.saturating_sub(DRC_WINDOW_MS);
                self.drc.retain(|(_, _, t, _)| *t >= cutoff);
                self.drc.push((key.clone(), None, *now_ms, self.next_seq));
                self.next_seq += 1;
                true
            }
            Command::RecordPromotion(p) => {
                self.promotion = Some(*p);
                true
            }
            // CONNS_MAX is too large to reach here; `conns.rs` tests it.
            Command::ConnOpen { conn } => {
                if !conn.valid() {
                    return false;
                }
                self.conns.retain(|(c, _)| c != conn);
                self.conns.push((*conn, self.epoch));
                true
            }
            Command::ConnClose { conn } => {
                self.conns.retain(|(c, _)| c != conn);
                true
            }
            Command::ConnsForget { epoch } => {
                self.conns.retain(|(_, e)| e >= epoch);
                true
            }
        }
    }

    /// Asserts the state shows exactly what the model holds.
    fn assert_matches(&self, s: &State) {
        assert_eq!(s.epoch(), self.epoch);
        assert_eq!(s.last_promotion(), self.promotion);
        let mut exports = self.exports.clone();
        exports.sort_by_key(|e| e.0);
        let got: Vec<(u32, String, Option<FsIdentity>, Option<ExportSpec>)> = s
            .exports()
            .map(|(id, p)| (id, p.to_owned(), s.export_fs(id).cloned(), s.export_spec(id).cloned()))
            .collect();
        assert_eq!(got, exports);
        assert_eq!(s.exports_seeded(), self.exports_seeded);
        assert_eq!(s.handle_key(), self.handle_key.as_ref());
        let mut rmtab = self.rmtab.clone();
        rmtab.sort();
        let got: Vec<(String, String)> = s.rmtab().map(|(c, p)| (c.to_owned(), p.to_owned())).collect();
        assert_eq!(got, rmtab);
        let mut drc = self.drc.clone();
        drc.sort_by_key(|(_, _, t, seq)| (*t, *seq));
        let keys: Vec<&DrcKey> = drc.iter().map(|(k, _, _, _)| k).collect();
        assert_eq!(s.drc_keys_by_age().collect::<Vec<_>>(), keys);
        assert_eq!(s.drc_len(), drc.len() as u64);
        for (k, reply, _, _) in &drc {
            assert_eq!(s.drc_get(k), reply.as_deref());
            assert!(s.drc_entry(k).is_some());
        }
        let mut conns = self.conns.clone();
        conns.sort();
        assert_eq!(s.conns().map(|(c, e)| (*c, e)).collect::<Vec<_>>(), conns);
        assert_eq!(s.check_invariants(), Ok(()));
    }
}

fn fs() -> impl Strategy<Value = FsIdentity> {
    prop_oneof![
        6 => (0u8..3).prop_map(|n| FsIdentity { uuid: Some(vec![n; 16]), root_type: 1, root_handle: vec![n; 8] }),
        1 => Just(FsIdentity { uuid: None, root_type: 1, root_handle: vec![0; FS_HANDLE_BYTES_MAX as usize + 1] }),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/a", "/b", "/c", "", "/n\0"]).prop_map(String::from)
}

fn export_spec() -> impl Strategy<Value = ExportSpec> {
    let dir = prop::sample::select(vec!["/srv/a", "/srv/b", "srv", ""]);
    let clients = prop::sample::select(vec!["*", "10.0.0.0/8(rw) *(ro)", " "]);
    (dir, clients).prop_map(|(dir, clients)| ExportSpec { dir: dir.into(), clients: clients.into() })
}

fn client() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["c1", "c2", "c10", ""]).prop_map(String::from)
}

fn drc_key() -> impl Strategy<Value = DrcKey> {
    // Few credentials, so that keys repeat (replaced replies, completed intents).
    let cred = prop_oneof![3 => Just(DrcCred::None), 1 => Just(DrcCred::Sys { uid: 1, gid: 1 })];
    (client(), 0u32..5, 0u32..2, cred).prop_map(|(client, xid, proc_, cred)| DrcKey {
        client,
        xid,
        prog: 100003,
        vers: 3,
        proc_,
        args_sum: 1,
        cred,
    })
}

/// A few connections (so that they repeat), one of them invalid (port 0).
fn tcp_conn() -> impl Strategy<Value = TcpConn> {
    (0u16..4).prop_map(|port| TcpConn {
        client: std::net::SocketAddr::from(([10, 0, 0, 2], port)),
        server: std::net::SocketAddr::from(([10, 0, 0, 100], 2049)),
    })
}

fn leaf() -> impl Strategy<Value = Command> {
    prop_oneof![
        2 => (0u32..3, path(), fs()).prop_map(|(export_id, path, fs)| Command::RegisterExport { export_id, path, fs }),
        2 => (0u32..4, path(), export_spec())
            .prop_map(|(export_id, path, spec)| Command::ExportSet { export_id, path, spec }),
        1 => (0u32..4).prop_map(|export_id| Command::ExportRemove { export_id }),
        1 => (0u8..3).prop_map(|n| Command::SetHandleKey { key: [n; HANDLE_KEY_BYTES] }),
        1 => (client(), path()).prop_map(|(client, path)| Command::Mount { client, path }),
        1 => (client(), path()).prop_map(|(client, path)| Command::Unmount { client, path }),
        1 => client().prop_map(|client| Command::UnmountAll { client }),
        1 => Just(Command::BumpEpoch),
        2 => (drc_key(), prop::collection::vec(any::<u8>(), 0..6), 0u64..1_000_000)
            .prop_map(|(key, reply, now_ms)| Command::DrcInsert { key, reply, now_ms }),
        1 => (drc_key(), 0u64..1_000_000).prop_map(|(key, now_ms)| Command::DrcIntent { key, now_ms }),
        1 => (1u64..4, 0u64..1_000, 0u64..5_000)
            .prop_map(|(node_id, at_unix_ms, took_ms)| Command::RecordPromotion(Promotion { node_id, at_unix_ms, took_ms })),
        2 => tcp_conn().prop_map(|conn| Command::ConnOpen { conn }),
        1 => tcp_conn().prop_map(|conn| Command::ConnClose { conn }),
        1 => (0u64..4).prop_map(|epoch| Command::ConnsForget { epoch }),
    ]
}

/// Mostly plain commands; one in five a (possibly nested) batch.
fn command() -> impl Strategy<Value = Command> {
    let batch = leaf().prop_recursive(3, 24, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Command::Batch));
    prop_oneof![4 => leaf(), 1 => batch]
}

/// Usually starts by registering exports 0 and 1, so that later commands
/// have something to act on.
fn commands() -> impl Strategy<Value = Vec<Command>> {
    (prop::bool::weighted(0.8), prop::collection::vec(command(), 0..40)).prop_map(|(setup, cmds)| {
        let mut all = Vec::new();
        if setup {
            let fs = |n: u8| FsIdentity { uuid: Some(vec![n; 16]), root_type: 1, root_handle: vec![n; 8] };
            all.push(Command::RegisterExport { export_id: 0, path: "/a".into(), fs: fs(0) });
            all.push(Command::RegisterExport { export_id: 1, path: "/b".into(), fs: fs(1) });
        }
        all.extend(cmds);
        all
    })
}

fn applied(cmds: &[Command]) -> State {
    let mut s = State::default();
    for c in cmds {
        let _ = s.apply(c);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn state_agrees_with_model(cmds in commands()) {
        let mut state = State::default();
        let mut model = Model::default();
        for cmd in &cmds {
            let before = state.clone();
            let result = state.apply(cmd);
            prop_assert_eq!(result.is_ok(), model.apply(cmd), "{:?} gave {:?}", cmd, result);
            if result.is_err() {
                prop_assert_eq!(&state, &before);
            }
            model.assert_matches(&state);
        }
    }

    #[test]
    fn apply_is_deterministic_and_snapshots_roundtrip(cmds in commands()) {
        let a = applied(&cmds);
        let b = applied(&cmds);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.to_snapshot(), b.to_snapshot());
        let back = State::from_snapshot(&a.to_snapshot()).ok();
        prop_assert_eq!(back, Some(a));
    }

    #[test]
    fn trial_predicts_group_commit(prefix in commands(), groups in prop::collection::vec(prop::collection::vec(command(), 0..4), 0..6)) {
        let mut state = applied(&prefix);
        let before = state.clone();
        let slices: Vec<&[Command]> = groups.iter().map(Vec::as_slice).collect();
        let results = state.trial(&slices);
        prop_assert_eq!(&state, &before);
        // The same outcome, one group at a time.
        let mut one_by_one = state.clone();
        for (group, result) in groups.iter().zip(&results) {
            let r = one_by_one.apply(&Command::Batch(vec![Command::Batch(group.clone())]));
            prop_assert_eq!(r.is_ok(), result.is_ok());
        }
        let ok: Vec<Command> = groups.iter().zip(&results)
            .filter(|(_, r)| r.is_ok()).map(|(g, _)| Command::Batch(g.clone())).collect();
        prop_assert_eq!(state.apply(&Command::Batch(ok)).map(drop), Ok(()));
        prop_assert_eq!(&state, &one_by_one);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(STORE_CASES))]

    #[test]
    fn store_reopen_gives_the_same_state(cmds in commands(), compact_at in 0usize..42) {
        let dir = std::env::temp_dir().join(format!("hanfs-state-prop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let file = dir.join("t.redb");
        let fail = |e: crate::StoreError| TestCaseError::fail(e.to_string());
        let mut state = State::default();
        {
            let store = Store::open(&file).map_err(fail)?;
            for (i, cmd) in (1u64..).zip(&cmds) {
                store.append(i, cmd).map_err(fail)?;
                let _ = state.apply(cmd);
                if i as usize == compact_at {
                    store.compact(&state, i).map_err(fail)?;
                }
            }
        }
        let store = Store::open(&file).map_err(fail)?;
        let (loaded, last) = store.load().map_err(fail)?;
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        prop_assert_eq!(last, cmds.len() as u64);
        prop_assert_eq!(loaded, state);
    }
}

/// The generators must exercise the interesting paths, or the properties above
/// prove little: over a fixed-seed sample, every kind of command both
/// succeeds and (where it can) fails, and a second handle key is ignored.
#[test]
fn generators_reach_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..CASES {
        let Ok(tree) = commands().new_tree(&mut runner) else { continue };
        let mut state = State::default();
        let cmds = tree.current();
        for cmd in cmds.clone() {
            let before = state.clone();
            let ok = state.apply(&cmd).is_ok();
            let kind = format!("{:?}", cmd).split([' ', '(', '{']).next().unwrap_or("").to_owned();
            seen.insert((kind, ok));
            if let Command::SetHandleKey { key } = &cmd {
                if before.handle_key().is_some_and(|k| k != key) {
                    seen.insert(("second handle key ignored".to_owned(), state.handle_key() == before.handle_key()));
                }
            }
            if let Command::DrcInsert { key, .. } = &cmd {
                if state.drc_len() <= before.drc_len() && ok {
                    seen.insert(("drc evicted or replaced".to_owned(), true));
                }
                if ok && before.drc_entry(key).is_some_and(|e| e.reply().is_none()) {
                    seen.insert(("drc intent completed".to_owned(), true));
                }
            }
            if let Command::DrcIntent { key, .. } = &cmd {
                if ok && before.drc_entry(key).is_some() {
                    seen.insert(("drc intent on a cached key".to_owned(), true));
                }
            }
        }
    }
    for want in [
        ("Batch", true),
        ("Batch", false),
        ("SetHandleKey", true),
        ("RegisterExport", true),
        ("RegisterExport", false),
        ("Mount", true),
        ("Mount", false),
        ("DrcInsert", true),
        ("DrcInsert", false),
        ("DrcIntent", true),
        ("DrcIntent", false),
        ("drc intent completed", true),
        ("drc intent on a cached key", true),
        ("UnmountAll", true),
        ("BumpEpoch", true),
        ("RecordPromotion", true),
        ("second handle key ignored", true),
        ("drc evicted or replaced", true),
    ] {
        assert!(seen.contains(&(want.0.to_owned(), want.1)), "never saw {want:?}; saw {seen:?}");
    }
}
