#![no_main]
//! NLM v4 argument decoders: `[proc, args...]`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hanfs_server::fuzzing::nlm(data);
});
