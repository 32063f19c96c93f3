#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| oubli_fuzz::note(data));
