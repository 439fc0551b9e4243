//! Topology configuration: the `[topology]` table as written (every field
//! optional, unknown keys rejected), preset files of the same shape, and the
//! resolved `ClusterSpec` the builders take.

use serde::Deserialize;
use thiserror::Error;

/// One problem with a configuration value, found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path relative to the table checked, e.g. `ib_gbit_per_s`.
    pub key: String,
    /// What was expected and what was found, e.g.
    /// `expected a positive number, found -400`.
    pub message: String,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TopologyError {
    #[error("unknown topology preset `{name}`; known presets: {}", known.join(", "))]
    UnknownPreset { name: String, known: Vec<String> },
    #[error("{}", problems.iter().map(|p| format!("topology.{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid { problems: Vec<ConfigProblem> },
    #[error("the topology is disconnected: {0}")]
    Disconnected(String),
    #[error("preset file {name}: {message}")]
    BadPreset { name: String, message: String },
}

/// Which builder wires the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// One node: GPUs on one NVSwitch, each with a PCIe switch and NIC.
    Node,
    /// Nodes whose NIC i sits on rail i of a two-layer (leaf/spine) fat-tree.
    RailOptimized,
    /// A k-ary three-layer fat-tree with one GPU per host port.
    FatTree,
    /// Each NIC of a node on its own plane; each plane a two-layer fat-tree.
    MultiPlaneFatTree,
}

/// Per-GPU link rates that come from the device unless the topology table
/// overrides them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkDefaults {
    /// NVLink per GPU, one direction, GB/s.
    pub nvlink_gb_per_s: f64,
    /// NIC per GPU, Gb/s.
    pub nic_gbit_per_s: f64,
}

/// The `[topology]` table of a scenario, and the shape of a preset file.
/// Every field is optional so a scenario can override any of a preset's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Preset name (in a scenario) or nothing (in a preset file).
    pub preset: Option<String>,
    pub kind: Option<TopologyKind>,
    pub nodes: Option<u32>,
    pub gpus_per_node: Option<u32>,
    /// NVLink per GPU per direction, GB/s (default: the device's).
    pub nvlink_gb_per_s: Option<f64>,
    pub nvlink_efficiency: Option<f64>,
    pub nvlink_latency_ns: Option<f64>,
    /// PCIe between GPU, PCIe switch and NIC, per direction, GB/s.
    pub pcie_gb_per_s: Option<f64>,
    pub pcie_latency_ns: Option<f64>,
    /// NIC and switch-port rate, Gb/s (default: the device's NIC).
    pub ib_gbit_per_s: Option<f64>,
    pub ib_efficiency: Option<f64>,
    /// Latency per network link traversal, ns.
    pub ib_latency_ns: Option<f64>,
    /// Ports per leaf/spine switch.
    pub switch_radix: Option<u32>,
    /// `fat-tree` only: the k of the k-ary fat-tree.
    pub k: Option<u32>,
}

/// Everything a builder needs, resolved and checked. Rates in bytes/s.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub name: String,
    pub kind: TopologyKind,
    pub nodes: u32,
    pub gpus_per_node: u32,
    pub nvlink_bytes_per_s: f64,
    pub nvlink_efficiency: f64,
    pub nvlink_latency_ns: f64,
    pub pcie_bytes_per_s: f64,
    pub pcie_latency_ns: f64,
    pub ib_bytes_per_s: f64,
    pub ib_efficiency: f64,
    pub ib_latency_ns: f64,
    pub switch_radix: u32,
    pub k: u32,
}

impl TopologyConfig {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        todo!()
    }
    /// The embedded preset's TOML text (with its source comments).
    pub fn preset_text(name: &str) -> Result<&'static str, TopologyError> {
        let _ = name;
        todo!()
    }
    /// Resolves a scenario's table: preset values, then the device's link
    /// rates where neither sets them, then this table's overrides. Reports
    /// every problem at once.
    pub fn resolve(&self, defaults: LinkDefaults) -> Result<ClusterSpec, TopologyError> {
        let _ = defaults;
        todo!()
    }
}
