//! moesim's discrete-event engine.
//!
//! It runs a [`TaskGraph`] (per-rank streams of kernels, communications and
//! delays with dependencies) on a [`Platform`] (devices with shared compute
//! units and memory bandwidth; directed links) and records a [`RunResult`].
//! It knows nothing of GPUs, experts, TOML or files.
//!
//! Modelling contract:
//! - Time is integer picoseconds; events at equal times run in insertion order,
//!   so a run is deterministic.
//! - Kernels on one device share its units: `Hold(n)` kernels take n units,
//!   `Share` kernels split the rest (capped at their CTA count); a kernel's
//!   arithmetic slows in proportion to the units it lost, and kernels share the
//!   memory bandwidth max-min fairly.
//! - Flows share links max-min fairly (fluid); a flow's arrival adds its path's
//!   latency after its last byte.

pub mod analysis;
mod device;
pub mod engine;
pub mod error;
pub mod flow;
pub mod graph;
pub mod platform;
pub mod result;
pub mod series;
pub mod time;

pub use engine::run;
pub use error::SimError;
pub use graph::{
    Comm, Flow, Kernel, LabelId, PathId, Stream, StreamId, Task, TaskClass, TaskGraph, TaskId, TaskKind, UnitDemand,
};
pub use platform::{DeviceId, DeviceResource, LinkId, LinkKind, LinkResource, Platform};
pub use result::{DeviceStats, EngineOptions, LinkSample, LinkStats, Observer, Quiet, RunResult, TaskSpan};
pub use time::{SimDuration, SimTime};
