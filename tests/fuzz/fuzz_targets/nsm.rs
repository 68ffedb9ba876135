#![no_main]
//! NSM argument decoders: `[proc, args...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hanfs_server::fuzzing::nsm(data);
});
