#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_redis_http::fuzzing::range(data));
