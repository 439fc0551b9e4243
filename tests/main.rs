//! moesim's integration tests: one binary, one module per concern.

mod bad_input;
mod cli;
mod common;
mod determinism;
mod hardening;
mod inference;
mod k8s;
mod memory_hierarchy;
mod pipeline;
mod plan_training;
mod properties;
mod replay;
mod serving;
mod serving_bad_input;
mod slurm;
mod sweep_files;
mod training;
mod validation;
mod validation_cases;
