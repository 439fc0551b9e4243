//! moesim's integration tests: one binary, one module per concern.

mod bad_input;
mod cli;
mod common;
mod determinism;
mod memory_hierarchy;
mod pipeline;
mod training;
mod validation;
