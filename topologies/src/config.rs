//! Topology configuration: the `[topology]` table as written (every field
//! optional, unknown keys rejected), preset files of the same shape, and the
//! resolved `ClusterSpec` the builders take.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::topology::LinkKind;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// One node: GPUs on one NVSwitch, GPU i joined to NIC i by PCIe.
    Node,
    /// Nodes whose NIC i sits on rail i of a two-layer (leaf/spine) fat-tree.
    RailOptimized,
    /// A k-ary three-layer fat-tree with one GPU per host port.
    FatTree,
    /// Each NIC of a node on its own plane; each plane a two-layer fat-tree.
    MultiPlaneFatTree,
    /// Written out in full: `[[topology.switch]]` and `[[topology.link]]`
    /// (see [`crate::explicit`]); implied by a `link` entry.
    Explicit,
}

/// `oversubscription` as written: one ratio (the leaf tier's) or one per
/// tier.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(untagged, expecting = "expected a down:up ratio such as 2.0, or a table such as { leaf = 2.0, spine = 7.0 }")]
pub enum Oversubscription {
    Leaf(f64),
    Tiers(TierRatios),
}

/// Oversubscription per tier: a tier's down-link capacity over its
/// up-link capacity (2.0 = 2:1). `leaf`: leaf (edge) switches' uplinks to
/// spines (aggregation); `spine`: a three-layer `fat-tree`'s aggregation
/// uplinks to the cores. Realised as thinner uplinks (see
/// [`ClusterSpec::oversubscription`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRatios {
    pub leaf: Option<f64>,
    pub spine: Option<f64>,
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// Preset name (in a scenario) or nothing (in a preset file).
    pub preset: Option<String>,
    pub kind: Option<TopologyKind>,
    /// Nodes (scale-up domains) in the cluster.
    pub nodes: Option<u32>,
    /// GPUs per node (one NVLink / scale-up domain).
    pub gpus_per_node: Option<u32>,
    /// NVLink per GPU per direction, GB/s (default: the device's).
    pub nvlink_gb_per_s: Option<f64>,
    /// Fraction of the NVLink rate a bulk transfer achieves (preset-fitted; default 1).
    pub nvlink_efficiency: Option<f64>,
    /// Latency per NVLink traversal, ns.
    pub nvlink_latency_ns: Option<f64>,
    /// NVLS (NVLink SHARP, in-switch reduction and multicast): the fraction
    /// of the NVLink rate an NVLS collective moves data at. Absent: the
    /// NVSwitch has no NVLS and `algorithm = "nvls"` is refused.
    pub nvls_efficiency: Option<f64>,
    /// Fraction of the NVLink rate NCCL's kernels (collectives, send/recv,
    /// NVLS) move data at: NCCL's own per-link NVLink bandwidth over the
    /// link's nominal rate (`SMxx_NVLINK_BW` in NVIDIA/nccl
    /// `src/graph/topo.h`). Absent: NCCL's kernels run at
    /// `nvlink_efficiency`, as every other kernel does.
    pub nccl_nvlink_efficiency: Option<f64>,
    /// NVLS: the time each of NCCL's NVLS channels spends per chunk beyond
    /// moving it (the multimem step's synchronisation between the GPUs), ns.
    /// With NCCL's chunk size, which shrinks for smaller messages
    /// (`src/enqueue.cc`), it makes NVLS reach its peak only at large
    /// messages. Absent: 0.
    pub nvls_chunk_overhead_ns: Option<f64>,
    /// The NCCL release whose tuner picks collective algorithms and
    /// protocols ("2.19" to "2.30"; default "2.29"). Two generations of
    /// constants differ: 2.19-2.20 (ring LL at 1/4 of the bus bandwidth,
    /// llMaxBw 87.7 GB/s, NVLS 23 us, tree Simple 28 us per hop) and
    /// 2.21 on (LL at 1/2, llMaxBw by GPU generation, NVLS 25 us, tree
    /// Simple 4 us per NVLink hop), in NVIDIA/nccl `src/graph/tuning.cc`.
    pub nccl_version: Option<String>,
    /// PCIe between GPU i and NIC i, per direction, GB/s.
    pub pcie_gb_per_s: Option<f64>,
    /// Latency per PCIe traversal (GPU to NIC), ns.
    pub pcie_latency_ns: Option<f64>,
    /// Fraction of the PCIe rate a bulk transfer achieves (default 1).
    pub pcie_efficiency: Option<f64>,
    /// NIC and switch-port rate, Gb/s (default: the device's NIC).
    pub ib_gbit_per_s: Option<f64>,
    /// Fraction of the NIC / switch-port rate a bulk transfer achieves (preset-fitted; default 1).
    pub ib_efficiency: Option<f64>,
    /// Latency per network link traversal, ns.
    pub ib_latency_ns: Option<f64>,
    /// Ports per leaf/spine switch.
    pub switch_radix: Option<u32>,
    /// `fat-tree` only: the k of the k-ary fat-tree.
    pub k: Option<u32>,
    /// Generated fat-trees (`rail-optimized`, `fat-tree`,
    /// `multi-plane-fat-tree`): down/up capacity ratio per tier.
    pub oversubscription: Option<Oversubscription>,
    /// Explicit topologies: the switches (see [`crate::explicit`]).
    pub switch: Option<Vec<crate::explicit::SwitchEntry>>,
    /// Explicit topologies: the links (see [`crate::explicit`]).
    pub link: Option<Vec<crate::explicit::LinkEntry>>,
}

/// A generation of NCCL's tuner constants (`topology.nccl_version`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NcclTuner {
    /// NCCL 2.19-2.20 (bundled with PyTorch 2.2-2.4).
    V2_19,
    /// NCCL 2.21 to 2.30.
    #[default]
    V2_21,
}

impl NcclTuner {
    /// The generation of release `version` ("2.19", "2.20.5", ...).
    pub fn of_version(version: &str) -> Option<NcclTuner> {
        let mut parts = version.trim().split('.');
        let (major, minor) = (parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?);
        if parts.any(|p| p.split('-').next().is_none_or(|n| n.parse::<u32>().is_err())) {
            return None;
        }
        match (major, minor) {
            (2, 19..=20) => Some(NcclTuner::V2_19),
            (2, 21..=30) => Some(NcclTuner::V2_21),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NcclTuner::V2_19 => "2.19-2.20",
            NcclTuner::V2_21 => "2.21-2.30",
        }
    }
}

/// Everything a builder needs, resolved and checked. Rates in bytes/s.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub name: String,
    pub kind: TopologyKind,
    /// Nodes (scale-up domains) in the cluster.
    pub nodes: u32,
    /// GPUs per node (one NVLink / scale-up domain).
    pub gpus_per_node: u32,
    pub nvlink_bytes_per_s: f64,
    /// Fraction of the NVLink rate a bulk transfer achieves (preset-fitted; default 1).
    pub nvlink_efficiency: f64,
    /// Latency per NVLink traversal, ns.
    pub nvlink_latency_ns: f64,
    /// NVLS efficiency (see [`TopologyConfig::nvls_efficiency`]); `None`:
    /// no NVLS.
    pub nvls_efficiency: Option<f64>,
    /// NCCL's NVLink efficiency (see
    /// [`TopologyConfig::nccl_nvlink_efficiency`]); `None`: the links' own.
    pub nccl_nvlink_efficiency: Option<f64>,
    /// NVLS's overhead per chunk and channel (see
    /// [`TopologyConfig::nvls_chunk_overhead_ns`]), ns.
    pub nvls_chunk_overhead_ns: f64,
    /// The generation of NCCL's tuner constants (`nccl_version`).
    pub nccl_tuner: NcclTuner,
    pub pcie_bytes_per_s: f64,
    /// Latency per PCIe traversal (GPU to NIC), ns.
    pub pcie_latency_ns: f64,
    pub pcie_efficiency: f64,
    pub ib_bytes_per_s: f64,
    /// Fraction of the NIC / switch-port rate a bulk transfer achieves (preset-fitted; default 1).
    pub ib_efficiency: f64,
    pub ib_latency_ns: f64,
    pub switch_radix: u32,
    pub k: u32,
    /// Oversubscription of the leaf tier's and the spine tier's uplinks
    /// (1 = non-blocking). Built as *thinner* uplinks: each uplink's rate
    /// is the port rate / ratio, with the wiring (every leaf to every
    /// spine) unchanged. Thinner rather than fewer because any real ratio
    /// (1.5, 7) is then exact for every radix and size, and in the fluid
    /// model only a tier's aggregate capacity matters (fewer uplinks would
    /// only realise ratios dividing radix/2, and ECMP over fewer paths
    /// changes hashing collisions, not capacity).
    pub oversubscription: TierOversubscription,
    /// The written-out graph of a `kind = "explicit"` topology.
    pub explicit: Option<crate::explicit::ExplicitGraph>,
    /// Each link class's nominal rate and efficiency with where they came
    /// from, for `moesim topology` and every run's notes.
    pub link_classes: Vec<LinkClassRate>,
}

impl ClusterSpec {
    /// The link classes its builder wires (a single node has no network).
    pub fn used_link_classes(&self) -> impl Iterator<Item = &LinkClassRate> {
        let node = self.kind == TopologyKind::Node;
        self.link_classes.iter().filter(move |c| !(node && c.class == "infiniband"))
    }
}

/// Resolved oversubscription ratios (each ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierOversubscription {
    pub leaf: f64,
    pub spine: f64,
}

impl Default for TierOversubscription {
    fn default() -> TierOversubscription {
        TierOversubscription { leaf: 1.0, spine: 1.0 }
    }
}

/// One link class's rate: nominal x efficiency, and where each came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkClassRate {
    /// `nvlink`, `pcie` or `infiniband`.
    pub class: &'static str,
    /// Nominal rate per direction, bytes/s.
    pub nominal_bytes_per_s: f64,
    pub efficiency: f64,
    /// nominal x efficiency, bytes/s.
    pub effective_bytes_per_s: f64,
    /// `device`, `preset <name>` or `scenario` (`topology.<key>`).
    pub rate_from: String,
    /// `preset <name>`, `scenario` or `default`.
    pub efficiency_from: String,
    /// The scenario overrides the nominal rate but keeps the preset's
    /// efficiency (fitted at the preset's own rate).
    pub efficiency_kept_from_preset: bool,
}

impl LinkClassRate {
    /// One line: `nvlink 450.0 GB/s nominal (device) x 0.676 (preset h800-node) = 304.2 GB/s effective per direction`.
    pub fn describe(&self) -> String {
        let (scale, unit) = if self.class == "infiniband" { (8e-9, "Gb/s") } else { (1e-9, "GB/s") };
        let mut line = format!(
            "{} {:.1} {unit} nominal ({}) x {} efficiency ({}) = {:.1} {unit} effective per direction",
            self.class,
            self.nominal_bytes_per_s * scale,
            self.rate_from,
            self.efficiency,
            self.efficiency_from,
            self.effective_bytes_per_s * scale
        );
        if self.efficiency_kept_from_preset {
            let (rate, eff) = match self.class {
                "nvlink" => ("nvlink_gb_per_s", "nvlink_efficiency"),
                "pcie" => ("pcie_gb_per_s", "pcie_efficiency"),
                _ => ("ib_gbit_per_s", "ib_efficiency"),
            };
            line.push_str(&format!(
                "; topology.{rate} overrides the nominal rate but the efficiency is still {}'s, fitted at its own \
                 rate: set topology.{eff} beside it if this link reaches another fraction",
                self.efficiency_from
            ));
        }
        line
    }
}

/// The embedded presets: name and TOML text.
const PRESETS: &[(&str, &str)] = &[
    ("h800-node", include_str!("../presets/h800-node.toml")),
    ("h800-cluster", include_str!("../presets/h800-cluster.toml")),
    ("fat-tree", include_str!("../presets/fat-tree.toml")),
    ("multi-plane-fat-tree", include_str!("../presets/multi-plane-fat-tree.toml")),
    ("nvl72", include_str!("../presets/nvl72.toml")),
    ("cloudmatrix384", include_str!("../presets/cloudmatrix384.toml")),
    ("llama3-roce", include_str!("../presets/llama3-roce.toml")),
];

/// The most GPUs a topology may have (ranks are `u32`, and routing state
/// grows with GPUs x vertices).
pub const MAX_GPUS: u64 = 65_536;

impl TopologyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TopologyKind::Node => "node",
            TopologyKind::RailOptimized => "rail-optimized",
            TopologyKind::FatTree => "fat-tree",
            TopologyKind::MultiPlaneFatTree => "multi-plane-fat-tree",
            TopologyKind::Explicit => "explicit",
        }
    }
}

/// A plausible range of a physical value, with its unit: outside it a value
/// is a unit mistake or a typo, and would stall a run or overrun simulated
/// time. Shared by the topology and device checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plausible {
    pub lo: f64,
    pub hi: f64,
    pub unit: &'static str,
}

impl Plausible {
    pub const fn new(lo: f64, hi: f64, unit: &'static str) -> Plausible {
        Plausible { lo, hi, unit }
    }

    /// A problem at `key` if `v` lies outside the range.
    pub fn problem(&self, key: &str, v: f64) -> Option<ConfigProblem> {
        (!(self.lo..=self.hi).contains(&v)).then(|| ConfigProblem {
            key: key.to_owned(),
            message: format!(
                "expected a plausible value in [{}, {}] {}, found {}",
                show_number(self.lo),
                show_number(self.hi),
                self.unit,
                show_number(v)
            ),
        })
    }
}

/// A number as a person reads it: plain between 1e-3 and 1e6, else in
/// scientific notation (`5e-324`, not three hundred zeros).
pub fn show_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-3..1e6).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// NVLink/PCIe rates: 1 MB/s to 1 PB/s per direction.
const GB_PER_S: Plausible = Plausible::new(1e-3, 1e6, "GB/s");
/// Network rates: 1 Mb/s to 10 Pb/s per direction.
const GBIT_PER_S: Plausible = Plausible::new(1e-3, 1e7, "Gb/s");
/// Latencies: up to one second.
const LATENCY_NS: Plausible = Plausible::new(0.0, 1e9, "ns");

impl TopologyConfig {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(name, _)| *name).collect()
    }
    /// The embedded preset's TOML text (with its source comments).
    pub fn preset_text(name: &str) -> Result<&'static str, TopologyError> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text).ok_or_else(|| TopologyError::UnknownPreset {
            name: name.to_owned(),
            known: Self::preset_names().into_iter().map(str::to_owned).collect(),
        })
    }
    /// Parses an embedded preset into a table of this shape.
    pub fn preset(name: &str) -> Result<TopologyConfig, TopologyError> {
        let text = Self::preset_text(name)?;
        let config: TopologyConfig = toml::from_str(text)
            .map_err(|e| TopologyError::BadPreset { name: name.to_owned(), message: e.to_string() })?;
        if config.preset.is_some() {
            return Err(TopologyError::BadPreset {
                name: name.to_owned(),
                message: "a preset file must not name a preset".into(),
            });
        }
        Ok(config)
    }
    /// This table's `Some` fields over `base`'s.
    pub fn overlay(&self, base: &TopologyConfig) -> TopologyConfig {
        TopologyConfig {
            preset: self.preset.clone().or_else(|| base.preset.clone()),
            kind: self.kind.or(base.kind),
            nodes: self.nodes.or(base.nodes),
            gpus_per_node: self.gpus_per_node.or(base.gpus_per_node),
            nvlink_gb_per_s: self.nvlink_gb_per_s.or(base.nvlink_gb_per_s),
            nvlink_efficiency: self.nvlink_efficiency.or(base.nvlink_efficiency),
            nvlink_latency_ns: self.nvlink_latency_ns.or(base.nvlink_latency_ns),
            nvls_efficiency: self.nvls_efficiency.or(base.nvls_efficiency),
            nccl_nvlink_efficiency: self.nccl_nvlink_efficiency.or(base.nccl_nvlink_efficiency),
            nvls_chunk_overhead_ns: self.nvls_chunk_overhead_ns.or(base.nvls_chunk_overhead_ns),
            nccl_version: self.nccl_version.clone().or_else(|| base.nccl_version.clone()),
            pcie_gb_per_s: self.pcie_gb_per_s.or(base.pcie_gb_per_s),
            pcie_latency_ns: self.pcie_latency_ns.or(base.pcie_latency_ns),
            pcie_efficiency: self.pcie_efficiency.or(base.pcie_efficiency),
            ib_gbit_per_s: self.ib_gbit_per_s.or(base.ib_gbit_per_s),
            ib_efficiency: self.ib_efficiency.or(base.ib_efficiency),
            ib_latency_ns: self.ib_latency_ns.or(base.ib_latency_ns),
            switch_radix: self.switch_radix.or(base.switch_radix),
            k: self.k.or(base.k),
            oversubscription: self.oversubscription.or(base.oversubscription),
            switch: self.switch.clone().or_else(|| base.switch.clone()),
            link: self.link.clone().or_else(|| base.link.clone()),
        }
    }
    /// Resolves a scenario's table: preset values, then the device's link
    /// rates where neither sets them, then this table's overrides. Reports
    /// every problem at once.
    pub fn resolve(&self, defaults: LinkDefaults) -> Result<ClusterSpec, TopologyError> {
        let mut problems = Vec::new();
        let (name, merged) = match &self.preset {
            Some(name) => (name.clone(), self.overlay(&Self::preset(name)?)),
            None if self.kind == Some(TopologyKind::Explicit) || self.link.is_some() || self.switch.is_some() => {
                ("explicit".to_owned(), self.clone())
            }
            None => {
                problems.push(problem(
                    "preset",
                    format!("expected a preset name (one of {}), found none", Self::preset_names().join(", ")),
                ));
                ("custom".to_owned(), self.clone())
            }
        };
        if merged.kind == Some(TopologyKind::Explicit) || merged.link.is_some() || merged.switch.is_some() {
            return self.resolve_explicit(name, &merged, defaults, problems);
        }
        let mut c = Checker { problems };
        let kind = match merged.kind {
            Some(kind) => Some(kind),
            None => {
                c.push(
                    "kind",
                    "expected one of node, rail-optimized, fat-tree, multi-plane-fat-tree, explicit (with [[topology.link]]), found none".into(),
                );
                None
            }
        };
        let nodes = c.integer_at_least("nodes", merged.nodes, 1);
        let gpus_per_node = c.integer_at_least("gpus_per_node", merged.gpus_per_node, 1);
        let nvlink_gb_per_s =
            c.rate("nvlink_gb_per_s", Some(merged.nvlink_gb_per_s.unwrap_or(defaults.nvlink_gb_per_s)), GB_PER_S);
        let nvlink_efficiency = c.fraction("nvlink_efficiency", merged.nvlink_efficiency);
        let nvlink_latency_ns = c.latency("nvlink_latency_ns", merged.nvlink_latency_ns);
        let nvls_efficiency = merged.nvls_efficiency.map(|v| c.fraction("nvls_efficiency", Some(v)));
        let nccl_nvlink_efficiency =
            merged.nccl_nvlink_efficiency.map(|v| c.fraction("nccl_nvlink_efficiency", Some(v)));
        let nvls_chunk_overhead_ns =
            c.latency("nvls_chunk_overhead_ns", Some(merged.nvls_chunk_overhead_ns.unwrap_or(0.0)));
        let nccl_tuner = c.nccl_tuner(merged.nccl_version.as_deref());
        let pcie_gb_per_s = c.rate("pcie_gb_per_s", merged.pcie_gb_per_s, GB_PER_S);
        let pcie_latency_ns = c.latency("pcie_latency_ns", merged.pcie_latency_ns);
        let pcie_efficiency = c.fraction("pcie_efficiency", Some(merged.pcie_efficiency.unwrap_or(1.0)));
        let ib_gbit_per_s =
            c.rate("ib_gbit_per_s", Some(merged.ib_gbit_per_s.unwrap_or(defaults.nic_gbit_per_s)), GBIT_PER_S);
        let ib_efficiency = c.fraction("ib_efficiency", merged.ib_efficiency);
        let ib_latency_ns = c.latency("ib_latency_ns", merged.ib_latency_ns);
        let needs_radix = matches!(kind, Some(TopologyKind::RailOptimized | TopologyKind::MultiPlaneFatTree));
        let switch_radix = match merged.switch_radix {
            None if !needs_radix => 0,
            value => c.even_integer("switch_radix", value, 65_534),
        };
        let k = match merged.k {
            None if kind != Some(TopologyKind::FatTree) => 0,
            value => c.even_integer("k", value, 254),
        };
        let oversubscription = c.oversubscription(merged.oversubscription, kind);
        let gpus = u64::from(nodes) * u64::from(gpus_per_node);
        if nodes >= 1 && gpus_per_node >= 1 {
            if kind == Some(TopologyKind::Node) && nodes != 1 {
                c.push(
                    "nodes",
                    format!("expected 1 for kind \"node\" (use preset h800-cluster or another fabric for more), found {nodes}"),
                );
            } else if gpus > MAX_GPUS {
                c.push(
                    "nodes",
                    format!("expected at most {MAX_GPUS} GPUs in all, found {gpus} ({nodes} nodes x {gpus_per_node})"),
                );
            } else if kind == Some(TopologyKind::FatTree) && k >= 2 {
                let ports = u64::from(k).pow(3) / 4;
                if gpus > ports {
                    let mut need = k;
                    while u64::from(need).pow(3) / 4 < gpus {
                        need += 2;
                    }
                    c.push(
                        "k",
                        format!(
                            "expected a k whose fat-tree has a host port per GPU: k = {k} has k^3/4 = {ports} host ports \
                             but the cluster has {gpus} GPUs ({nodes} nodes x {gpus_per_node}); use k >= {need} or fewer nodes, found {k}"
                        ),
                    );
                }
            }
        }
        if !c.problems.is_empty() {
            return Err(TopologyError::Invalid { problems: c.problems });
        }
        let base = self.preset.as_deref().map(Self::preset).transpose()?.unwrap_or_default();
        let preset = format!("preset {name}");
        let class = |class: &'static str,
                     nominal: f64,
                     efficiency: f64,
                     ours: (Option<f64>, Option<f64>),
                     theirs: (Option<f64>, Option<f64>),
                     default_rate: &str| {
            let rate_from = match (ours.0, theirs.0) {
                (Some(_), _) => "scenario".to_owned(),
                (None, Some(_)) => preset.clone(),
                (None, None) => default_rate.to_owned(),
            };
            let efficiency_from = match (ours.1, theirs.1) {
                (Some(_), _) => "scenario".to_owned(),
                (None, Some(_)) => preset.clone(),
                (None, None) => "default".to_owned(),
            };
            LinkClassRate {
                class,
                nominal_bytes_per_s: nominal,
                efficiency,
                effective_bytes_per_s: nominal * efficiency,
                rate_from,
                efficiency_kept_from_preset: ours.0.is_some() && ours.1.is_none() && theirs.1.is_some(),
                efficiency_from,
            }
        };
        let link_classes = vec![
            class(
                "nvlink",
                nvlink_gb_per_s * 1e9,
                nvlink_efficiency,
                (self.nvlink_gb_per_s, self.nvlink_efficiency),
                (base.nvlink_gb_per_s, base.nvlink_efficiency),
                "device",
            ),
            class(
                "pcie",
                pcie_gb_per_s * 1e9,
                pcie_efficiency,
                (self.pcie_gb_per_s, self.pcie_efficiency),
                (base.pcie_gb_per_s, base.pcie_efficiency),
                "device",
            ),
            class(
                "infiniband",
                ib_gbit_per_s * 1e9 / 8.0,
                ib_efficiency,
                (self.ib_gbit_per_s, self.ib_efficiency),
                (base.ib_gbit_per_s, base.ib_efficiency),
                "device NIC",
            ),
        ];
        Ok(ClusterSpec {
            name,
            kind: kind.expect("checked above"),
            nodes,
            gpus_per_node,
            nvlink_bytes_per_s: nvlink_gb_per_s * 1e9,
            nvlink_efficiency,
            nvlink_latency_ns,
            nvls_efficiency,
            nccl_nvlink_efficiency,
            nvls_chunk_overhead_ns,
            nccl_tuner,
            pcie_bytes_per_s: pcie_gb_per_s * 1e9,
            pcie_latency_ns,
            pcie_efficiency,
            ib_bytes_per_s: ib_gbit_per_s * 1e9 / 8.0,
            ib_efficiency,
            ib_latency_ns,
            switch_radix,
            k,
            oversubscription,
            explicit: None,
            link_classes,
        })
    }

    /// Resolves a written-out topology (`kind = "explicit"`): `nodes` x
    /// `gpus_per_node` GPUs, the switches and links as listed. The class
    /// keys (`nvlink_gb_per_s`, `ib_latency_ns`, ...) are optional here:
    /// defaults for links that leave a value out.
    fn resolve_explicit(
        &self,
        name: String,
        merged: &TopologyConfig,
        defaults: LinkDefaults,
        problems: Vec<ConfigProblem>,
    ) -> Result<ClusterSpec, TopologyError> {
        let mut c = Checker { problems };
        if let Some(kind) = merged.kind.filter(|k| *k != TopologyKind::Explicit) {
            c.push(
                "kind",
                format!(
                    "expected \"explicit\" (or no kind) beside [[topology.link]] entries, found \"{}\"",
                    kind.as_str()
                ),
            );
        }
        for (key, set) in [
            ("switch_radix", merged.switch_radix.is_some()),
            ("k", merged.k.is_some()),
            ("oversubscription", merged.oversubscription.is_some()),
        ] {
            if set {
                c.push(key, "not used by an explicit topology (its links carry their own rates); remove it".into());
            }
        }
        let nodes = c.integer_at_least("nodes", merged.nodes, 1);
        let gpus_per_node = c.integer_at_least("gpus_per_node", merged.gpus_per_node, 1);
        let gpus = u64::from(nodes) * u64::from(gpus_per_node);
        if gpus > MAX_GPUS {
            c.push(
                "nodes",
                format!("expected at most {MAX_GPUS} GPUs in all, found {gpus} ({nodes} nodes x {gpus_per_node})"),
            );
        }
        if merged.link.as_ref().is_none_or(|l| l.is_empty()) {
            c.push("link", "expected [[topology.link]] entries (a, b, class, rate), found none".into());
        }
        let optional =
            |c: &mut Checker, key: &str, v: Option<f64>, check: fn(&mut Checker, &str, Option<f64>) -> f64| {
                v.map(|v| check(c, key, Some(v))).filter(|v| *v > 0.0 || key.ends_with("latency_ns"))
            };
        let rate_gb = |c: &mut Checker, key: &str, v: Option<f64>| c.rate(key, v, GB_PER_S);
        let rate_gbit = |c: &mut Checker, key: &str, v: Option<f64>| c.rate(key, v, GBIT_PER_S);
        let latency = |c: &mut Checker, key: &str, v: Option<f64>| c.latency(key, v);
        let fraction = |c: &mut Checker, key: &str, v: Option<f64>| c.fraction(key, v);
        let nv_rate = optional(
            &mut c,
            "nvlink_gb_per_s",
            Some(merged.nvlink_gb_per_s.unwrap_or(defaults.nvlink_gb_per_s)),
            rate_gb,
        );
        let pcie_rate = optional(&mut c, "pcie_gb_per_s", merged.pcie_gb_per_s, rate_gb);
        let ib_rate =
            optional(&mut c, "ib_gbit_per_s", Some(merged.ib_gbit_per_s.unwrap_or(defaults.nic_gbit_per_s)), rate_gbit);
        let class = [
            crate::explicit::ClassDefaults {
                bytes_per_s: nv_rate.map(|v| v * 1e9),
                efficiency: optional(&mut c, "nvlink_efficiency", merged.nvlink_efficiency, fraction),
                latency_ns: optional(&mut c, "nvlink_latency_ns", merged.nvlink_latency_ns, latency),
            },
            crate::explicit::ClassDefaults {
                bytes_per_s: pcie_rate.map(|v| v * 1e9),
                efficiency: optional(&mut c, "pcie_efficiency", merged.pcie_efficiency, fraction),
                latency_ns: optional(&mut c, "pcie_latency_ns", merged.pcie_latency_ns, latency),
            },
            crate::explicit::ClassDefaults {
                bytes_per_s: ib_rate.map(|v| v * 1e9 / 8.0),
                efficiency: optional(&mut c, "ib_efficiency", merged.ib_efficiency, fraction),
                latency_ns: optional(&mut c, "ib_latency_ns", merged.ib_latency_ns, latency),
            },
        ];
        let nvls_efficiency = merged.nvls_efficiency.map(|v| c.fraction("nvls_efficiency", Some(v)));
        let nccl_nvlink_efficiency =
            merged.nccl_nvlink_efficiency.map(|v| c.fraction("nccl_nvlink_efficiency", Some(v)));
        let nvls_chunk_overhead_ns =
            c.latency("nvls_chunk_overhead_ns", Some(merged.nvls_chunk_overhead_ns.unwrap_or(0.0)));
        let nccl_tuner = c.nccl_tuner(merged.nccl_version.as_deref());
        if !c.problems.is_empty() {
            return Err(TopologyError::Invalid { problems: c.problems });
        }
        let no_switches = Vec::new();
        let graph = crate::explicit::resolve(
            nodes,
            gpus_per_node,
            merged.switch.as_ref().unwrap_or(&no_switches),
            merged.link.as_deref().unwrap_or_default(),
            class,
        )
        .map_err(|problems| TopologyError::Invalid { problems })?;
        // A class's figures for the spec's scalar fields (serving's KV
        // transfer estimate, replay re-costing): its first link's, else the
        // class default.
        let first = |kind: LinkKind| graph.links.iter().map(|l| l.2).find(|l| l.kind == kind);
        let figures = |kind: LinkKind, d: crate::explicit::ClassDefaults| match first(kind) {
            Some(l) => (l.nominal_bytes_per_s, l.efficiency, l.latency_ns),
            None => (d.bytes_per_s.unwrap_or(0.0), d.efficiency.unwrap_or(1.0), d.latency_ns.unwrap_or(0.0)),
        };
        let nv = figures(LinkKind::NvLink, class[0]);
        let pcie = figures(LinkKind::Pcie, class[1]);
        let ib = figures(LinkKind::InfiniBand, class[2]);
        // One entry per distinct (class, rate, efficiency), in link order.
        let mut link_classes: Vec<LinkClassRate> = Vec::new();
        for (_, _, l) in &graph.links {
            if !link_classes.iter().any(|c| {
                c.class == l.kind.as_str()
                    && c.nominal_bytes_per_s == l.nominal_bytes_per_s
                    && c.efficiency == l.efficiency
            }) {
                link_classes.push(LinkClassRate {
                    class: l.kind.as_str(),
                    nominal_bytes_per_s: l.nominal_bytes_per_s,
                    efficiency: l.efficiency,
                    effective_bytes_per_s: l.effective_bytes_per_s(),
                    rate_from: "topology.link".into(),
                    efficiency_from: "topology.link".into(),
                    efficiency_kept_from_preset: false,
                });
            }
        }
        Ok(ClusterSpec {
            name,
            kind: TopologyKind::Explicit,
            nodes,
            gpus_per_node,
            nvlink_bytes_per_s: nv.0,
            nvlink_efficiency: nv.1,
            nvlink_latency_ns: nv.2,
            nvls_efficiency,
            nccl_nvlink_efficiency,
            nvls_chunk_overhead_ns,
            nccl_tuner,
            pcie_bytes_per_s: pcie.0,
            pcie_efficiency: pcie.1,
            pcie_latency_ns: pcie.2,
            ib_bytes_per_s: ib.0,
            ib_efficiency: ib.1,
            ib_latency_ns: ib.2,
            switch_radix: 0,
            k: 0,
            oversubscription: TierOversubscription::default(),
            explicit: Some(graph),
            link_classes,
        })
    }
}

fn problem(key: &str, message: String) -> ConfigProblem {
    ConfigProblem { key: key.to_owned(), message }
}

/// Collects problems; each check returns a harmless placeholder on failure.
struct Checker {
    problems: Vec<ConfigProblem>,
}

impl Checker {
    fn push(&mut self, key: &str, message: String) {
        self.problems.push(problem(key, message));
    }
    fn number(&mut self, key: &str, value: Option<f64>, expected: &str, ok: impl Fn(f64) -> bool) -> f64 {
        match value {
            Some(v) if v.is_finite() && ok(v) => v,
            Some(v) => {
                self.push(key, format!("expected {expected}, found {v}"));
                0.0
            }
            None => {
                self.push(key, format!("expected {expected}, found none"));
                0.0
            }
        }
    }
    /// A link rate: positive, and within `range` (a plausible span; outside
    /// it a value is a unit mistake, and it would overrun simulated time).
    fn rate(&mut self, key: &str, value: Option<f64>, range: Plausible) -> f64 {
        let v = self.number(key, value, "a positive number", |v| v > 0.0);
        self.plausible(key, v, range)
    }
    /// A latency in ns: >= 0 and at most a second.
    fn latency(&mut self, key: &str, value: Option<f64>) -> f64 {
        let v = self.number(key, value, "a number ≥ 0", |v| v >= 0.0);
        self.plausible(key, v, LATENCY_NS)
    }
    fn plausible(&mut self, key: &str, v: f64, range: Plausible) -> f64 {
        // 0 here means the value was already reported (or is a zero latency).
        match range.problem(key, v).filter(|_| v != 0.0) {
            Some(p) => {
                self.push(key, p.message);
                0.0
            }
            None => v,
        }
    }
    /// `oversubscription`: ratios ≥ 1 (at most 64), on the tiers `kind`
    /// has uplinks at.
    fn oversubscription(
        &mut self,
        value: Option<Oversubscription>,
        kind: Option<TopologyKind>,
    ) -> TierOversubscription {
        let mut out = TierOversubscription::default();
        let Some(value) = value else { return out };
        let (leaf, spine, key) = match value {
            Oversubscription::Leaf(r) => (Some(r), None, "oversubscription"),
            Oversubscription::Tiers(t) => (t.leaf, t.spine, "oversubscription.leaf"),
        };
        let ratio = |c: &mut Checker, key: &str, r: f64| {
            if r.is_finite() && (1.0..=64.0).contains(&r) {
                r
            } else {
                c.push(
                    key,
                    format!(
                        "expected a down:up ratio in [1, 64] (2.0 = 2:1, 1 = non-blocking), found {}",
                        show_number(r)
                    ),
                );
                1.0
            }
        };
        match kind {
            Some(TopologyKind::Node) => {
                self.push("oversubscription", "not used by kind \"node\" (one switch, no uplinks); remove it".into());
                return out;
            }
            Some(TopologyKind::RailOptimized | TopologyKind::MultiPlaneFatTree) if spine.is_some() => self.push(
                "oversubscription.spine",
                "expected no spine ratio: a two-layer fabric's spines are its top tier (no uplinks); set leaf".into(),
            ),
            _ => {}
        }
        if let Some(r) = leaf {
            out.leaf = ratio(self, key, r);
        }
        if let Some(r) = spine {
            out.spine = ratio(self, "oversubscription.spine", r);
        }
        out
    }
    /// `nccl_version`: a release from 2.19 to 2.30, as its tuner generation.
    fn nccl_tuner(&mut self, value: Option<&str>) -> NcclTuner {
        let Some(v) = value else { return NcclTuner::default() };
        match NcclTuner::of_version(v) {
            Some(t) => t,
            None => {
                self.push("nccl_version", format!("expected an NCCL release from \"2.19\" to \"2.30\", found \"{v}\""));
                NcclTuner::default()
            }
        }
    }
    fn fraction(&mut self, key: &str, value: Option<f64>) -> f64 {
        self.number(key, value, "a value in (0, 1]", |v| v > 0.0 && v <= 1.0)
    }
    fn integer_at_least(&mut self, key: &str, value: Option<u32>, min: u32) -> u32 {
        match value {
            Some(v) if v >= min => v,
            Some(v) => {
                self.push(key, format!("expected an integer ≥ {min}, found {v}"));
                0
            }
            None => {
                self.push(key, format!("expected an integer ≥ {min}, found none"));
                0
            }
        }
    }
    fn even_integer(&mut self, key: &str, value: Option<u32>, max: u32) -> u32 {
        let expected = format!("an even integer in [2, {max}]");
        match value {
            Some(v) if v >= 2 && v <= max && v % 2 == 0 => v,
            Some(v) => {
                self.push(key, format!("expected {expected}, found {v}"));
                0
            }
            None => {
                self.push(key, format!("expected {expected}, found none"));
                0
            }
        }
    }
}
