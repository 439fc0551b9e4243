//! The `moesim-sim` integration tests: one binary, one module per subject.

mod engine;
mod fabric;
mod memory;
mod props;
mod scale;
