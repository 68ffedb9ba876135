#![no_main]
//! Raft peer frames after the authentication layer: `[kind, payload...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hanfs_raft::fuzzing::peer_frame(data);
});
