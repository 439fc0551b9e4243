//! Hardware and workload models for moesim: device specs and presets, op cost
//! models, collectives lowered to flows, MoE dispatch/combine, token routing,
//! pipeline-parallel schedules.
//!
//! Everything here turns a description (a device, a cluster, a collective)
//! into the engine's vocabulary (`Platform`, `TaskGraph`); nothing here runs
//! a simulation, reads a user's file, prints or exits.

pub mod cluster;
pub mod collectives;
pub mod emit;
pub mod error;
pub mod hardware;
pub mod inference;
pub mod layers;
pub mod model;
pub mod moe_comm;
pub mod ops;
pub mod parallel;
pub mod rng;
pub mod routing;
pub mod schedule;
pub mod serving;
pub mod technology;
pub mod training;

pub use cluster::Cluster;
pub use error::ModelError;
pub use hardware::{DeviceSpec, Dtype};
pub use model::ModelConfig;
