//! Cluster graphs for moesim: GPUs, NVSwitches, NICs, PCIe and leaf/spine
//! switches on a `petgraph` directed graph (one edge per link direction),
//! builders for the presets, ECMP routing, summaries and DOT export.
//!
//! Builders are plain functions over a resolved [`ClusterSpec`]; the
//! [`Topology`] type itself holds no wiring logic.

pub mod build;
pub mod config;
pub mod dot;
pub mod explicit;
pub mod maxflow;
pub mod route;
pub mod topology;

pub use build::build;
pub use config::{
    show_number, ClusterSpec, ConfigProblem, LinkClassRate, LinkDefaults, NcclTuner, Oversubscription, Plausible,
    TierOversubscription, TierRatios, TopologyConfig, TopologyError, TopologyKind,
};
pub use petgraph::graph::{EdgeIndex, NodeIndex};
pub use route::Router;
pub use topology::{LinkKind, LinkSpec, NodeKind, Topology, TopologySummary};
