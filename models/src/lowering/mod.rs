//! Lowering: a model run on a cluster turned into one engine `TaskGraph`.
//!
//! Owns the block → task emitter shared by training and inference
//! (`emit.rs`), the training step and its memory model (`training.rs`), and
//! the prefill/decode iterations of a deployment unit (`inference.rs`), and
//! a local deployment's prompt and decode step on a GPU with a host of CPU
//! sockets and DRAM (`local.rs`, runtimes in `presets/runtimes/`).
//!
//! May use: `hardware`, `transformer`, `network`. No other room uses it:
//! `serving` is handed iteration times by its caller (the root crate), not
//! built from here.

pub mod emit;
pub mod inference;
pub mod local;
pub mod training;
