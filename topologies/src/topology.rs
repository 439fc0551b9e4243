//! The `Topology` graph type: nodes (GPUs, switches, NICs), directed links
//! with nominal bandwidth, efficiency and latency, and the rank -> GPU map.

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::Direction;
use serde::Serialize;

use crate::config::{ClusterSpec, TopologyError, TopologyKind};

/// What a vertex of the cluster graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NodeKind {
    /// A GPU (or NPU); `rank` is its global index.
    Gpu { node: u32, local: u32, rank: u32 },
    /// The NVSwitch fabric of one node, modelled as one non-blocking switch.
    NvSwitch { node: u32 },
    /// Network interface `local` of a node.
    Nic { node: u32, local: u32 },
    /// A leaf (top-of-rack) switch; `plane` is the rail or plane it belongs
    /// to (in a three-layer `fat-tree`: an edge switch, `plane` = its pod).
    Leaf { plane: u32, index: u32 },
    /// A spine switch; in `rail-optimized` spines are shared by all rails
    /// (`plane` = 0); in a `fat-tree`, an aggregation switch of pod `plane`.
    Spine { plane: u32, index: u32 },
    /// A core switch of a three-layer fat-tree.
    Core { index: u32 },
    /// A switch of a written-out topology: its index in
    /// [`Topology::switch_names`] and its tier in [`Topology::tiers`].
    Switch { index: u32, tier: u32 },
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
    /// The spec it was built from (`None` for a hand-built graph); the
    /// summary's bisection uses it.
    pub spec: Option<ClusterSpec>,
    /// Names of the `NodeKind::Switch` vertices (written-out topologies).
    pub switch_names: Vec<String>,
    /// Tier names of the `NodeKind::Switch` vertices.
    pub tiers: Vec<String>,
}

/// Switches of one tier of a written-out topology.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierSummary {
    pub tier: String,
    pub switches: u32,
}

/// What `moesim topology` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopologySummary {
    pub name: String,
    pub nodes: u32,
    pub gpus: u32,
    pub gpus_per_node: u32,
    pub nics: u32,
    /// Every switch vertex: NVSwitches, leaves, spines and cores.
    pub switches: u32,
    /// One per node.
    pub nvswitches: u32,
    /// Leaf switches (in a three-layer fat-tree: edge switches).
    pub leaf_switches: u32,
    /// Spine switches (in a three-layer fat-tree: aggregation switches).
    pub spine_switches: u32,
    /// Core switches (three-layer fat-tree only).
    pub core_switches: u32,
    /// Directed links (twice the physical links).
    pub directed_links: u32,
    /// Per GPU, one direction, nominal: scale-up (NVLink) bandwidth, bytes/s.
    pub gpu_nvlink_bytes_per_s: f64,
    /// Per GPU, one direction, nominal: scale-out (NIC) bandwidth, bytes/s.
    pub gpu_network_bytes_per_s: f64,
    /// Bisection bandwidth of the scale-out network, one direction, nominal,
    /// bytes/s: the smaller of the network injection of half the GPUs
    /// (floor(gpus / 2) x `gpu_network_bytes_per_s`) and the capacity
    /// crossing a balanced cut of the switch fabric, computed per kind:
    /// `rail-optimized` cuts leaves and spines in half, L x S / 2 leaf-spine
    /// links (L leaves, S spines, one link per pair) carry one direction;
    /// `multi-plane-fat-tree` sums that over the planes (a one-leaf plane is
    /// one non-blocking switch); a k-ary `fat-tree` has k^3/8 links across.
    /// All preset fabrics are non-blocking, so the NIC term decides. For a
    /// single node (no network) it is the NVLink bisection, floor(gpus / 2)
    /// x `gpu_nvlink_bytes_per_s`; a hand-built graph (no spec) is taken as
    /// non-blocking.
    pub bisection_bytes_per_s: f64,
    /// Nominal rate x efficiency of each link class the graph has, with
    /// where each value came from (empty for a hand-built graph).
    pub link_classes: Vec<crate::config::LinkClassRate>,
    /// A written-out topology's switches per tier, in the order declared
    /// (empty for the generated kinds).
    pub tiers: Vec<TierSummary>,
    /// Whether `bisection_bytes_per_s` includes a cut of the switch fabric
    /// (false for a written-out or hand-built graph in
    /// [`Topology::summary`]: only the injection bound, the fabric taken as
    /// non-blocking; true in [`Topology::summary_with_cut`], which computes
    /// its real cut).
    pub bisection_includes_fabric: bool,
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
    /// GPU `rank`'s scale-up switch (its NVSwitch vertex, or in a
    /// written-out topology the first switch it reaches over an NVLink
    /// link) with the link up to it and the link back down; `None` if it
    /// has none.
    pub fn nvswitch_links(&self, rank: u32) -> Option<(NodeIndex, EdgeIndex, EdgeIndex)> {
        use petgraph::visit::EdgeRef;
        let v = self.gpu(rank);
        let up = self.graph.edges_directed(v, Direction::Outgoing).find(|e| match self.graph[e.target()] {
            NodeKind::NvSwitch { .. } => true,
            NodeKind::Switch { .. } => e.weight().kind == LinkKind::NvLink,
            _ => false,
        })?;
        let down = self.graph.find_edge(up.target(), v)?;
        Some((up.target(), up.id(), down))
    }
    /// The spec's link classes that this graph has links of.
    pub fn link_classes(&self) -> Vec<crate::config::LinkClassRate> {
        let Some(spec) = &self.spec else { return Vec::new() };
        spec.link_classes
            .iter()
            .filter(|c| self.graph.edge_weights().any(|l| l.kind.as_str() == c.class))
            .cloned()
            .collect()
    }
    /// Display name of a vertex, e.g. `n3.gpu2`, `leaf.r1.4`.
    pub fn node_name(&self, v: NodeIndex) -> String {
        match self.graph[v] {
            NodeKind::Gpu { node, local, .. } => format!("n{node}.gpu{local}"),
            NodeKind::NvSwitch { node } => format!("n{node}.nvswitch"),
            NodeKind::Nic { node, local } => format!("n{node}.nic{local}"),
            NodeKind::Leaf { plane, index } => format!("leaf.p{plane}.{index}"),
            NodeKind::Spine { plane, index } => format!("spine.p{plane}.{index}"),
            NodeKind::Core { index } => format!("core.{index}"),
            NodeKind::Switch { index, .. } => {
                self.switch_names.get(index as usize).cloned().unwrap_or_else(|| format!("switch.{index}"))
            }
        }
    }
    /// Display name of a directed link, e.g. `n0.gpu1->n0.nvswitch`.
    pub fn link_name(&self, e: EdgeIndex) -> String {
        let (a, b) = self.graph.edge_endpoints(e).expect("edge of this graph");
        format!("{}->{}", self.node_name(a), self.node_name(b))
    }

    /// Checks that every GPU can reach every other over directed links:
    /// GPU 0 must reach every GPU and every GPU must reach GPU 0. The error
    /// names one unreachable pair.
    pub fn check_connected(&self) -> Result<(), TopologyError> {
        let Some(&first) = self.gpus.first() else {
            return Ok(());
        };
        for dir in [Direction::Outgoing, Direction::Incoming] {
            let mut seen = vec![false; self.graph.node_count()];
            let mut stack = vec![first];
            seen[first.index()] = true;
            while let Some(v) = stack.pop() {
                for w in self.graph.neighbors_directed(v, dir) {
                    if !seen[w.index()] {
                        seen[w.index()] = true;
                        stack.push(w);
                    }
                }
            }
            if let Some(rank) = (0..self.gpu_count()).find(|&r| !seen[self.gpu(r).index()]) {
                let (a, ra, b, rb) = match dir {
                    Direction::Outgoing => (first, 0, self.gpu(rank), rank),
                    Direction::Incoming => (self.gpu(rank), rank, first, 0),
                };
                return Err(TopologyError::Disconnected(format!(
                    "{} (rank {ra}) cannot reach {} (rank {rb})",
                    self.node_name(a),
                    self.node_name(b)
                )));
            }
        }
        Ok(())
    }

    /// Counts, per-GPU bandwidths and bisection (see [`TopologySummary`]).
    pub fn summary(&self) -> TopologySummary {
        let (mut nics, mut nvswitches, mut leaves, mut spines, mut cores) = (0u32, 0u32, 0u32, 0u32, 0u32);
        let mut tiers: Vec<TierSummary> =
            self.tiers.iter().map(|t| TierSummary { tier: t.clone(), switches: 0 }).collect();
        for kind in self.graph.node_weights() {
            match kind {
                NodeKind::Switch { tier, .. } => {
                    if let Some(t) = tiers.get_mut(*tier as usize) {
                        t.switches += 1;
                    }
                }
                NodeKind::Gpu { .. } => {}
                NodeKind::NvSwitch { .. } => nvswitches += 1,
                NodeKind::Nic { .. } => nics += 1,
                NodeKind::Leaf { .. } => leaves += 1,
                NodeKind::Spine { .. } => spines += 1,
                NodeKind::Core { .. } => cores += 1,
            }
        }
        let has_network = self.graph.edge_weights().any(|l| l.kind == LinkKind::InfiniBand);
        let (mut nvlink, mut network) = (0.0, 0.0);
        if let Some(&gpu) = self.gpus.first() {
            let mut pcie = 0.0;
            for e in self.graph.edges_directed(gpu, Direction::Outgoing) {
                use petgraph::visit::EdgeRef;
                match e.weight().kind {
                    LinkKind::NvLink => nvlink += e.weight().nominal_bytes_per_s,
                    LinkKind::Pcie => {
                        pcie += e.weight().nominal_bytes_per_s;
                        let nic_out: f64 = self
                            .graph
                            .edges_directed(e.target(), Direction::Outgoing)
                            .filter(|n| n.weight().kind == LinkKind::InfiniBand)
                            .map(|n| n.weight().nominal_bytes_per_s)
                            .sum();
                        network += nic_out;
                    }
                    LinkKind::InfiniBand => network += e.weight().nominal_bytes_per_s,
                }
            }
            if pcie > 0.0 {
                network = f64::min(network, pcie);
            }
            if !has_network {
                network = 0.0;
            }
        }
        let half = f64::from(self.gpu_count() / 2);
        let explicit = self.spec.as_ref().is_some_and(|s| s.kind == TopologyKind::Explicit);
        let bisection = match &self.spec {
            Some(spec) if spec.kind == TopologyKind::Node || !has_network => half * nvlink,
            Some(_) if explicit => half * network,
            Some(spec) => f64::min(half * network, fabric_cut_bytes_per_s(spec)),
            None if !has_network => half * nvlink,
            None => half * network,
        };
        TopologySummary {
            name: self.name.clone(),
            nodes: self.nodes,
            gpus: self.gpu_count(),
            gpus_per_node: self.gpus_per_node,
            nics,
            switches: nvswitches + leaves + spines + cores + tiers.iter().map(|t| t.switches).sum::<u32>(),
            nvswitches,
            leaf_switches: leaves,
            spine_switches: spines,
            core_switches: cores,
            directed_links: self.graph.edge_count() as u32,
            gpu_nvlink_bytes_per_s: nvlink,
            gpu_network_bytes_per_s: network,
            bisection_bytes_per_s: bisection,
            link_classes: self.link_classes(),
            bisection_includes_fabric: self.spec.is_some() && !explicit && has_network,
            tiers,
        }
    }
}

impl Topology {
    /// [`Topology::summary`] with the bisection of a written-out or
    /// hand-built graph computed as its real cut: the maximum flow, over
    /// the links' nominal rates, from the first half of the ranks to the
    /// second (`maxflow::rank_halves_bytes_per_s`; the scale-out links only
    /// where the graph has a network), so oversubscribed tiers count. The
    /// generated kinds keep their closed forms. Costs a max-flow over the
    /// whole graph, so `moesim topology` calls it, the lowerings call
    /// [`Topology::summary`].
    pub fn summary_with_cut(&self) -> TopologySummary {
        let mut s = self.summary();
        let generated = self.spec.as_ref().is_some_and(|s| s.kind != TopologyKind::Explicit);
        if !generated && self.gpu_count() >= 2 {
            let has_network = self.graph.edge_weights().any(|l| l.kind == LinkKind::InfiniBand);
            s.bisection_bytes_per_s = crate::maxflow::rank_halves_bytes_per_s(self, has_network);
            s.bisection_includes_fabric = true;
        }
        s
    }
}

/// One direction of the capacity crossing a balanced cut of the switch
/// fabric a spec builds (see [`TopologySummary::bisection_bytes_per_s`]).
fn fabric_cut_bytes_per_s(spec: &ClusterSpec) -> f64 {
    let ib = spec.ib_bytes_per_s;
    // Thinner leaf uplinks (oversubscription) carry 1/ratio of a port.
    let ib_up = ib / spec.oversubscription.leaf;
    match spec.kind {
        TopologyKind::Node | TopologyKind::Explicit => f64::INFINITY,
        TopologyKind::RailOptimized => {
            let leaves = spec.gpus_per_node * crate::build::leaves_per_plane(spec);
            let spines = spec.switch_radix / 2;
            f64::from(leaves) * f64::from(spines) / 2.0 * ib_up
        }
        TopologyKind::MultiPlaneFatTree => {
            let leaves = crate::build::leaves_per_plane(spec);
            if leaves == 1 {
                return f64::INFINITY;
            }
            let per_plane = f64::from(leaves) * f64::from(spec.switch_radix / 2) / 2.0 * ib_up;
            per_plane * f64::from(spec.gpus_per_node)
        }
        // A balanced cut splits the pods in half: k/2 pods' (k/2)^2 core
        // uplinks cross, each at 1/spine-ratio of a port, bounded by the
        // edge tier's uplinks of those pods (1/leaf-ratio).
        TopologyKind::FatTree => {
            f64::from(spec.k).powi(3) / 8.0 * ib / spec.oversubscription.leaf.max(spec.oversubscription.spine)
        }
    }
}
