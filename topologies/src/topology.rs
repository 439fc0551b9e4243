//! The `Topology` graph type: nodes (GPUs, switches, NICs), directed links
//! with nominal bandwidth, efficiency and latency, and the rank -> GPU map.

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use serde::Serialize;

/// What a vertex of the cluster graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NodeKind {
    /// A GPU (or NPU); `rank` is its global index.
    Gpu { node: u32, local: u32, rank: u32 },
    /// The NVSwitch fabric of one node, modelled as one non-blocking switch.
    NvSwitch { node: u32 },
    /// PCIe switch joining GPU `local` and its NIC.
    PcieSwitch { node: u32, local: u32 },
    /// Network interface `local` of a node.
    Nic { node: u32, local: u32 },
    /// A leaf (top-of-rack) switch; `plane` is the rail or plane it belongs to.
    Leaf { plane: u32, index: u32 },
    /// A spine switch.
    Spine { plane: u32, index: u32 },
    /// A core switch of a three-layer fat-tree.
    Core { index: u32 },
}

/// The medium of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum LinkKind {
    NvLink,
    Pcie,
    InfiniBand,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::NvLink => "nvlink",
            LinkKind::Pcie => "pcie",
            LinkKind::InfiniBand => "infiniband",
        }
    }
}

/// One direction of a physical link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkSpec {
    pub kind: LinkKind,
    /// Nominal rate in this direction, bytes per second.
    pub nominal_bytes_per_s: f64,
    /// Fraction of nominal a bulk transfer achieves (protocol, headers, ...).
    pub efficiency: f64,
    /// Latency per traversal, nanoseconds.
    pub latency_ns: f64,
}

impl LinkSpec {
    /// The rate a flow can use: nominal x efficiency.
    pub fn effective_bytes_per_s(&self) -> f64 {
        self.nominal_bytes_per_s * self.efficiency
    }
}

/// A built cluster.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Preset or builder name, e.g. `h800-cluster`.
    pub name: String,
    pub graph: DiGraph<NodeKind, LinkSpec>,
    /// GPU vertex of each rank, rank = node * gpus_per_node + local.
    pub gpus: Vec<NodeIndex>,
    pub nodes: u32,
    pub gpus_per_node: u32,
}

/// What `moesim topology` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopologySummary {
    pub name: String,
    pub nodes: u32,
    pub gpus: u32,
    pub gpus_per_node: u32,
    pub nics: u32,
    pub switches: u32,
    /// Directed links (twice the physical links).
    pub directed_links: u32,
    /// Per GPU, one direction, nominal: scale-up (NVLink) bandwidth, bytes/s.
    pub gpu_nvlink_bytes_per_s: f64,
    /// Per GPU, one direction, nominal: scale-out (NIC) bandwidth, bytes/s.
    pub gpu_network_bytes_per_s: f64,
    /// Bisection bandwidth of the scale-out network, one direction, nominal,
    /// bytes/s: the smaller of the NIC total of half the GPUs and the
    /// capacity crossing the narrowest balanced cut of the switch fabric.
    pub bisection_bytes_per_s: f64,
}

impl Topology {
    pub fn gpu_count(&self) -> u32 {
        self.gpus.len() as u32
    }
    pub fn gpu(&self, rank: u32) -> NodeIndex {
        self.gpus[rank as usize]
    }
    pub fn node_of(&self, rank: u32) -> u32 {
        rank / self.gpus_per_node
    }
    pub fn local_index(&self, rank: u32) -> u32 {
        rank % self.gpus_per_node
    }
    pub fn link(&self, e: EdgeIndex) -> &LinkSpec {
        &self.graph[e]
    }
    /// Display name of a vertex, e.g. `n3.gpu2`, `leaf.r1.4`.
    pub fn node_name(&self, v: NodeIndex) -> String {
        match self.graph[v] {
            NodeKind::Gpu { node, local, .. } => format!("n{node}.gpu{local}"),
            NodeKind::NvSwitch { node } => format!("n{node}.nvswitch"),
            NodeKind::PcieSwitch { node, local } => format!("n{node}.pcie{local}"),
            NodeKind::Nic { node, local } => format!("n{node}.nic{local}"),
            NodeKind::Leaf { plane, index } => format!("leaf.p{plane}.{index}"),
            NodeKind::Spine { plane, index } => format!("spine.p{plane}.{index}"),
            NodeKind::Core { index } => format!("core.{index}"),
        }
    }
    /// Display name of a directed link, e.g. `n0.gpu1->n0.nvswitch`.
    pub fn link_name(&self, e: EdgeIndex) -> String {
        let (a, b) = self.graph.edge_endpoints(e).expect("edge of this graph");
        format!("{}->{}", self.node_name(a), self.node_name(b))
    }
}
