#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::codec::fuzz_decode(data));
