//! `--set KEY=VALUE` overrides (one per line) on every built-in scenario in
//! turn, including `[hardware]` and `[model]` keys that stand for a device
//! or model file's values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let sets: Vec<String> = text.lines().map(str::to_owned).collect();
        moesim::fuzzing::overrides(data.first().copied().unwrap_or(0), &sets);
    }
});
