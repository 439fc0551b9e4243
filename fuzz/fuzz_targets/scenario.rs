//! A whole scenario file: parsed, resolved and checked (every kind, device
//! and model override), with its memory estimated; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        moesim::fuzzing::scenario(text, &[]);
    }
});
