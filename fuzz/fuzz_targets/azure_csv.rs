//! A request trace (azure csv), parsed and turned into requests.
#![no_main]
use libfuzzer_sys::fuzz_target;
use moesim::workloads::traces::TraceFormat;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        moesim::fuzzing::trace(text, TraceFormat::AzureCsv);
    }
});
