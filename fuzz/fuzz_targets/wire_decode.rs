#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| transport_quic::codec::fuzz_decode(data));
