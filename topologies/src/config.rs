//! Topology configuration: the `[topology]` table as written (every field
//! optional, unknown keys rejected), preset files of the same shape, and the
//! resolved `ClusterSpec` the builders take.

use serde::{Deserialize, Serialize};
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
    pub nodes: Option<u32>,
    pub gpus_per_node: Option<u32>,
    /// NVLink per GPU per direction, GB/s (default: the device's).
    pub nvlink_gb_per_s: Option<f64>,
    pub nvlink_efficiency: Option<f64>,
    pub nvlink_latency_ns: Option<f64>,
    /// NVLS (NVLink SHARP, in-switch reduction and multicast): the fraction
    /// of the NVLink rate an NVLS collective moves data at. Absent: the
    /// NVSwitch has no NVLS and `algorithm = "nvls"` is refused.
    pub nvls_efficiency: Option<f64>,
    /// PCIe between GPU i and NIC i, per direction, GB/s.
    pub pcie_gb_per_s: Option<f64>,
    pub pcie_latency_ns: Option<f64>,
    /// Fraction of the PCIe rate a bulk transfer achieves (default 1).
    pub pcie_efficiency: Option<f64>,
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
    /// NVLS efficiency (see [`TopologyConfig::nvls_efficiency`]); `None`:
    /// no NVLS.
    pub nvls_efficiency: Option<f64>,
    pub pcie_bytes_per_s: f64,
    pub pcie_latency_ns: f64,
    pub pcie_efficiency: f64,
    pub ib_bytes_per_s: f64,
    pub ib_efficiency: f64,
    pub ib_latency_ns: f64,
    pub switch_radix: u32,
    pub k: u32,
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
            pcie_gb_per_s: self.pcie_gb_per_s.or(base.pcie_gb_per_s),
            pcie_latency_ns: self.pcie_latency_ns.or(base.pcie_latency_ns),
            pcie_efficiency: self.pcie_efficiency.or(base.pcie_efficiency),
            ib_gbit_per_s: self.ib_gbit_per_s.or(base.ib_gbit_per_s),
            ib_efficiency: self.ib_efficiency.or(base.ib_efficiency),
            ib_latency_ns: self.ib_latency_ns.or(base.ib_latency_ns),
            switch_radix: self.switch_radix.or(base.switch_radix),
            k: self.k.or(base.k),
        }
    }
    /// Resolves a scenario's table: preset values, then the device's link
    /// rates where neither sets them, then this table's overrides. Reports
    /// every problem at once.
    pub fn resolve(&self, defaults: LinkDefaults) -> Result<ClusterSpec, TopologyError> {
        let mut problems = Vec::new();
        let (name, merged) = match &self.preset {
            Some(name) => (name.clone(), self.overlay(&Self::preset(name)?)),
            None => {
                problems.push(problem(
                    "preset",
                    format!("expected a preset name (one of {}), found none", Self::preset_names().join(", ")),
                ));
                ("custom".to_owned(), self.clone())
            }
        };
        let mut c = Checker { problems };
        let kind = match merged.kind {
            Some(kind) => Some(kind),
            None => {
                c.push(
                    "kind",
                    "expected one of node, rail-optimized, fat-tree, multi-plane-fat-tree, found none".into(),
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
            pcie_bytes_per_s: pcie_gb_per_s * 1e9,
            pcie_latency_ns,
            pcie_efficiency,
            ib_bytes_per_s: ib_gbit_per_s * 1e9 / 8.0,
            ib_efficiency,
            ib_latency_ns,
            switch_radix,
            k,
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
