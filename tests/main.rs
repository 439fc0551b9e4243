//! moesim's integration tests: one binary, one module per concern.

mod all_problems;
mod bad_input;
mod cli;
mod common;
mod data_paths;
mod determinism;
mod discoverable;
mod hardening;
mod inference;
mod memory_hierarchy;
mod outputs;
mod pipeline;
mod properties;
mod readme;
mod replay;
mod serving;
mod serving_bad_input;
mod training;
mod validation;
mod validation_cases;
