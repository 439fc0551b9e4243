//! Transformer: the model and how it is split, independent of any cluster.
//!
//! Owns model configs and their embedded presets (`model.rs`,
//! `presets/models/*.toml`), the per-unit kernel programs (`layers.rs`:
//! forward and backward `Block`s costed by `hardware::ops`), MoE token routing
//! and the exchange direction (`routing.rs`), parallel plans and rank layout
//! (`parallel.rs`), and pipeline schedules (`schedule.rs`).
//!
//! May use: `hardware` (devices, op costs), the crate's `error` and `rng`.
//! Uses neither `network`, `lowering` nor `serving`: a layer's kernels are
//! described here, their communication is placed by `lowering`.

pub mod layers;
pub mod model;
pub mod parallel;
pub mod routing;
pub mod schedule;
