//! A Chakra execution trace (.et protobuf), decoded and its dependencies checked.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    moesim::fuzzing::chakra(data);
});
