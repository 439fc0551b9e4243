//! A Kineto trace (JSON or gzip), read and rebuilt into a rank's graph.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    moesim::fuzzing::kineto(data);
});
