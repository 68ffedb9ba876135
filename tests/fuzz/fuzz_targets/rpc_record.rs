#![no_main]
//! RPC record marking: reassembly, fragment bounds, whole vs chunked arrival.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hanfs_server::fuzzing::record(data);
});
