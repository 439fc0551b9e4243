//! Hardware and workload models for moesim, in rooms by concern (one way:
//! each room may use only the rooms before it in this list):
//!
//! | room | owns |
//! |---|---|
//! | `hardware/` | device specs and presets, memory technologies, op cost models |
//! | `transformer/` | model configs and presets, per-layer kernel programs, token routing, parallel plans, pipeline schedules |
//! | `network/` | cluster = topology + device → platform, collectives, DeepEP-style exchanges |
//! | `lowering/` | the block → task emitter, the training step, prefill/decode iterations |
//! | `serving/` | the request-level serving model: it knows iteration times, no kernels |
//!
//! `error` and `rng` are shared by all. Everything here turns a description
//! (a device, a cluster, a model and plan) into the engine's vocabulary
//! (`Platform`, `TaskGraph`) or, for serving, into request timings; nothing
//! here reads a user's file, prints or exits.

pub mod error;
pub mod hardware;
pub mod lowering;
pub mod network;
pub mod rng;
pub mod serving;
pub mod transformer;

pub use error::ModelError;
pub use hardware::device::{DeviceSpec, Dtype};
pub use network::cluster::Cluster;
pub use transformer::model::ModelConfig;
