#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| faaskeeper_fuzz_harness::paths(data));
