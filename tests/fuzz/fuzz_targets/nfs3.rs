#![no_main]
//! NFSv3 calls through the real dispatcher: `[proc, flags, args...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hanfs_server::fuzzing::nfs3(data);
});
