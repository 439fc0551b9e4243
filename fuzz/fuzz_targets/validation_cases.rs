//! A user's validation cases file (`moesim validate --cases`), parsed and
//! checked (scenarios and overrides resolved), not run.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        moesim::fuzzing::validation_cases(text);
    }
});
