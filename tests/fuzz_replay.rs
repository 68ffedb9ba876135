//! The fuzz targets' regression test, on stable: every file under
//! `tests/fuzz/regressions/<target>/` (crashers `interop/fuzz.sh` found) and
//! `tests/fuzz/seeds/<target>/` goes through the target's own entry function
//! (`hanfs_server::fuzzing`, `hanfs_raft::fuzzing`); a panic on any of them
//! fails the test and names the file. Also checks that the seeds (from
//! `fuzz_seeds`) still decode, so the fuzzer starts from valid calls.

use std::path::{Path, PathBuf};

use crate::fuzz_seeds;

/// A fuzz target's entry function.
type Entry = fn(&[u8]);

/// Every fuzz target and its entry function.
const TARGETS: [(&str, Entry); 8] = [
    ("rpc_record", hanfs_server::fuzzing::record),
    ("rpc_call", hanfs_server::fuzzing::call_header),
    ("nfs3", |d| drop(hanfs_server::fuzzing::nfs3(d))),
    ("mount", |d| drop(hanfs_server::fuzzing::mount(d))),
    ("portmap", |d| drop(hanfs_server::fuzzing::portmap(d))),
    ("nlm", |d| {
        hanfs_server::fuzzing::nlm(d);
    }),
    ("nsm", |d| {
        hanfs_server::fuzzing::nsm(d);
    }),
    ("raft_frame", |d| {
        hanfs_raft::fuzzing::peer_frame(d);
    }),
];

/// Bytes 20..24 of an accepted reply: `accept_stat`.
const ACCEPT_STAT_OFFSET: usize = 20;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly under `dir` (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[test]
fn fuzz_seeds_and_regressions_replay_without_a_panic() {
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target} under tests/fuzz/seeds (see interop/fuzz.sh)");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if std::panic::catch_unwind(|| entry(&bytes)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "decoders panicked on: {failures:#?}");
}

#[test]
fn fuzz_seeds_are_valid_calls_and_checked_in() {
    let accepted = |reply: Option<Vec<u8>>| {
        reply.and_then(|r| r.get(ACCEPT_STAT_OFFSET..ACCEPT_STAT_OFFSET + 4).map(|s| s.to_vec()))
    };
    for (target, name, bytes) in fuzz_seeds::all() {
        let decoded = match target {
            "nlm" => hanfs_server::fuzzing::nlm(&bytes),
            "nsm" => hanfs_server::fuzzing::nsm(&bytes),
            "raft_frame" => hanfs_raft::fuzzing::peer_frame(&bytes),
            _ => true,
        };
        assert!(decoded, "{target}/{name}: does not decode");
        let reply = match target {
            "nfs3" => Some(hanfs_server::fuzzing::nfs3(&bytes)),
            "mount" => Some(hanfs_server::fuzzing::mount(&bytes)),
            // CALLIT answers with silence.
            "portmap" if name == "callit" => None,
            "portmap" => Some(hanfs_server::fuzzing::portmap(&bytes)),
            _ => None,
        };
        if let Some(reply) = reply {
            let stat = accepted(reply);
            assert_eq!(stat, Some(vec![0; 4]), "{target}/{name}: not decoded (accept_stat {stat:?})");
        }
        let file = fuzz_dir().join("seeds").join(target).join(&name);
        let on_disk = std::fs::read(&file).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} differs from fuzz_seeds::all(); rewrite the seeds: \
             cargo test -p hanfs-tests -- --ignored write_fuzz_seeds",
            file.display()
        );
    }
}

#[test]
#[ignore = "writes tests/fuzz/seeds/ from fuzz_seeds::all(); run by hand after a wire change"]
fn write_fuzz_seeds() {
    for (target, name, bytes) in fuzz_seeds::all() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join(&name), bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}
