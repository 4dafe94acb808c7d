#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| ringcast_fuzz::ring_consumer_vs_hostile_producer::run(data)
);
