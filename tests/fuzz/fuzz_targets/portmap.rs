#![no_main]
//! portmap v2 calls through the real dispatcher: `[proc, flags, args...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hanfs_server::fuzzing::portmap(data);
});
