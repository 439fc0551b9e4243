//! moesim's integration tests: one binary, one module per concern.

mod all_problems;
mod bad_input;
mod cli;
mod common;
mod data_paths;
mod dense;
mod determinism;
mod discoverable;
mod explicit_topology;
mod hardening;
mod inference;
mod k8s;
mod memory_hierarchy;
mod outputs;
mod pipeline;
mod plan_training;
mod properties;
mod readme;
mod replay;
mod serving;
mod serving_bad_input;
mod slurm;
mod sweep_files;
mod training;
mod validation;
mod validation_cases;
