//! A [topology] table (preset, generated or written out with [[switch]] /
//! [[link]]): resolved, built and routed; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        moesim::fuzzing::topology(text);
    }
});
