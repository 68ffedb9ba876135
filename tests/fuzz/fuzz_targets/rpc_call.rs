#![no_main]
//! RPC call header and AUTH_SYS credential.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hanfs_server::fuzzing::call_header(data);
});
