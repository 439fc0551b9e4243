//! A sweep file ([[grid]] / [[zip]] axes): parsed and resolved into its
//! points without building more than a sweep may run; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        moesim::fuzzing::sweep_file(text);
    }
});
