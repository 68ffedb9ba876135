#![no_main]
//! MOUNT v1/v3 calls through the real dispatcher: `[proc, flags, args...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hanfs_server::fuzzing::mount(data);
});
