//! Hardware: what one device is and what one kernel costs on it, alone.
//!
//! Owns the device specs and their embedded presets (`device.rs`,
//! `presets/devices/*.toml`), a local deployment's host of CPU sockets, DRAM,
//! UPI and PCIe (`host.rs`, `presets/hosts/*.toml`), the memory technologies of on-chip tiers
//! (`technology.rs`), the power model and the clock a power cap allows
//! (`power.rs`), GPU-to-GPU variability (`variability.rs`), and the op cost models (`ops/`: tiled GPU GEMM,
//! attention and streaming kernels; Ascend explicit-buffer pipelines).
//!
//! May use: the crate's `error` and `rng`, and `moesim-sim`'s kernel
//! vocabulary. Uses none of `network`, `transformer`, `lowering`, `serving`.

pub mod device;
pub mod host;
pub mod ops;
pub mod power;
pub mod technology;
pub mod variability;
