#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| ringcast_fuzz::ring_producer_vs_hostile_consumer::run(data)
);
