//! moesim's integration tests: one binary, one module per concern.

mod bad_input;
mod cli;
mod common;
mod determinism;
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
