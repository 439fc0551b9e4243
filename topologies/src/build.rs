//! Builders: one function per `TopologyKind`, wiring a `ClusterSpec` into a
//! `Topology`.
//!
//! Every builder starts from the same servers: node n has one NVSwitch vertex
//! (a non-blocking switch) and GPUs `local` 0..gpus_per_node, GPU i joined to
//! the NVSwitch by one NVLink link and to NIC i by one PCIe link. GPU rank =
//! node x gpus_per_node + local. Every physical link is two directed edges,
//! added one after the other (a->b, then b->a), each carrying a `LinkSpec`.

use petgraph::graph::{DiGraph, NodeIndex};

use crate::config::{ClusterSpec, ConfigProblem, TopologyError, TopologyKind};
use crate::explicit::End;
use crate::topology::{LinkKind, LinkSpec, NodeKind, Topology};

/// Builds the cluster a spec describes and checks every GPU reaches every other.
pub fn build(spec: &ClusterSpec) -> Result<Topology, TopologyError> {
    check_shape(spec)?;
    let topology = match spec.kind {
        TopologyKind::Node => node(spec),
        TopologyKind::RailOptimized => rail_optimized(spec),
        TopologyKind::FatTree => fat_tree(spec),
        TopologyKind::MultiPlaneFatTree => multi_plane_fat_tree(spec),
        TopologyKind::Explicit => explicit(spec)?,
    };
    topology.check_connected()?;
    Ok(topology)
}

/// Leaves per rail (rail-optimized) or per plane (multi-plane): each leaf
/// has switch_radix/2 down-ports, one per node.
pub fn leaves_per_plane(spec: &ClusterSpec) -> u32 {
    let down = (spec.switch_radix / 2).max(1);
    spec.nodes.div_ceil(down)
}

/// The structural checks a builder relies on (a spec from
/// `TopologyConfig::resolve` always passes; a hand-made one might not).
fn check_shape(spec: &ClusterSpec) -> Result<(), TopologyError> {
    let mut problems = Vec::new();
    let mut push = |key: &str, message: String| problems.push(ConfigProblem { key: key.into(), message });
    if spec.nodes == 0 {
        push("nodes", "expected an integer ≥ 1, found 0".into());
    }
    if spec.gpus_per_node == 0 {
        push("gpus_per_node", "expected an integer ≥ 1, found 0".into());
    }
    let gpus = u64::from(spec.nodes) * u64::from(spec.gpus_per_node);
    if gpus > crate::config::MAX_GPUS {
        push("nodes", format!("expected at most {} GPUs in all, found {gpus}", crate::config::MAX_GPUS));
    }
    match spec.kind {
        TopologyKind::Node if spec.nodes > 1 => {
            push("nodes", format!("expected 1 for kind \"node\", found {}", spec.nodes))
        }
        TopologyKind::RailOptimized | TopologyKind::MultiPlaneFatTree
            if spec.switch_radix < 2 || spec.switch_radix % 2 == 1 =>
        {
            push("switch_radix", format!("expected an even integer ≥ 2, found {}", spec.switch_radix))
        }
        TopologyKind::FatTree if spec.k < 2 || spec.k % 2 == 1 || spec.k > 254 => {
            push("k", format!("expected an even integer in [2, 254], found {}", spec.k))
        }
        TopologyKind::Explicit if spec.explicit.is_none() => {
            push("link", "expected the written-out graph of an explicit topology, found none".into())
        }
        TopologyKind::FatTree if gpus > u64::from(spec.k).pow(3) / 4 => push(
            "k",
            format!(
                "expected at least one host port per GPU, found k = {} ({} ports) for {gpus} GPUs",
                spec.k,
                u64::from(spec.k).pow(3) / 4
            ),
        ),
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TopologyError::Invalid { problems })
    }
}

/// Graph under construction: the servers and their NICs.
struct Wiring {
    graph: DiGraph<NodeKind, LinkSpec>,
    gpus: Vec<NodeIndex>,
    /// NIC of each rank.
    nics: Vec<NodeIndex>,
    nvlink: LinkSpec,
    pcie: LinkSpec,
    ib: LinkSpec,
    /// The leaf tier's uplinks: `ib` at 1/ratio of its rate.
    leaf_up: LinkSpec,
    /// A fat-tree's aggregation uplinks to the cores.
    spine_up: LinkSpec,
}

impl Wiring {
    fn servers(spec: &ClusterSpec) -> Wiring {
        let mut w = Wiring {
            graph: DiGraph::new(),
            gpus: Vec::new(),
            nics: Vec::new(),
            nvlink: LinkSpec {
                kind: LinkKind::NvLink,
                nominal_bytes_per_s: spec.nvlink_bytes_per_s,
                efficiency: spec.nvlink_efficiency,
                latency_ns: spec.nvlink_latency_ns,
            },
            pcie: LinkSpec {
                kind: LinkKind::Pcie,
                nominal_bytes_per_s: spec.pcie_bytes_per_s,
                efficiency: spec.pcie_efficiency,
                latency_ns: spec.pcie_latency_ns,
            },
            ib: LinkSpec {
                kind: LinkKind::InfiniBand,
                nominal_bytes_per_s: spec.ib_bytes_per_s,
                efficiency: spec.ib_efficiency,
                latency_ns: spec.ib_latency_ns,
            },
            leaf_up: LinkSpec {
                kind: LinkKind::InfiniBand,
                nominal_bytes_per_s: spec.ib_bytes_per_s / spec.oversubscription.leaf,
                efficiency: spec.ib_efficiency,
                latency_ns: spec.ib_latency_ns,
            },
            spine_up: LinkSpec {
                kind: LinkKind::InfiniBand,
                nominal_bytes_per_s: spec.ib_bytes_per_s / spec.oversubscription.spine,
                efficiency: spec.ib_efficiency,
                latency_ns: spec.ib_latency_ns,
            },
        };
        for node in 0..spec.nodes {
            let nvswitch = w.graph.add_node(NodeKind::NvSwitch { node });
            for local in 0..spec.gpus_per_node {
                let rank = node * spec.gpus_per_node + local;
                let gpu = w.graph.add_node(NodeKind::Gpu { node, local, rank });
                let nic = w.graph.add_node(NodeKind::Nic { node, local });
                w.link(gpu, nvswitch, w.nvlink);
                w.link(gpu, nic, w.pcie);
                w.gpus.push(gpu);
                w.nics.push(nic);
            }
        }
        w
    }
    /// One physical link: a->b, then b->a.
    fn link(&mut self, a: NodeIndex, b: NodeIndex, spec: LinkSpec) {
        self.graph.add_edge(a, b, spec);
        self.graph.add_edge(b, a, spec);
    }
    fn ib_link(&mut self, a: NodeIndex, b: NodeIndex) {
        self.link(a, b, self.ib);
    }
    fn finish(self, spec: &ClusterSpec) -> Topology {
        Topology {
            name: spec.name.clone(),
            graph: self.graph,
            gpus: self.gpus,
            nodes: spec.nodes,
            gpus_per_node: spec.gpus_per_node,
            spec: Some(spec.clone()),
            switch_names: Vec::new(),
            tiers: Vec::new(),
        }
    }
    /// Leaves of one rail/plane: leaf j takes NIC `plane` of nodes
    /// j x radix/2 .. (j+1) x radix/2.
    fn plane_leaves(&mut self, spec: &ClusterSpec, plane: u32) -> Vec<NodeIndex> {
        let down = spec.switch_radix / 2;
        let leaves: Vec<NodeIndex> =
            (0..leaves_per_plane(spec)).map(|index| self.graph.add_node(NodeKind::Leaf { plane, index })).collect();
        for node in 0..spec.nodes {
            let nic = self.nics[(node * spec.gpus_per_node + plane) as usize];
            self.ib_link(nic, leaves[(node / down) as usize]);
        }
        leaves
    }
}

/// `explicit`: the written-out graph as given. GPU vertices first, in rank
/// order (node-major), then the switches in declaration order, then every
/// physical link as two directed edges in entry order.
pub fn explicit(spec: &ClusterSpec) -> Result<Topology, TopologyError> {
    let Some(g) = &spec.explicit else {
        return Err(TopologyError::Invalid {
            problems: vec![ConfigProblem { key: "link".into(), message: "expected a written-out graph".into() }],
        });
    };
    let mut graph =
        DiGraph::with_capacity((spec.nodes * spec.gpus_per_node) as usize + g.switches.len(), 2 * g.links.len());
    let mut gpus = Vec::new();
    for node in 0..spec.nodes {
        for local in 0..spec.gpus_per_node {
            gpus.push(graph.add_node(NodeKind::Gpu { node, local, rank: node * spec.gpus_per_node + local }));
        }
    }
    let switches: Vec<NodeIndex> = (0..g.switches.len() as u32)
        .map(|index| graph.add_node(NodeKind::Switch { index, tier: g.switches[index as usize].1 }))
        .collect();
    let vertex = |end: End| match end {
        End::Gpu(r) => gpus[r as usize],
        End::Switch(s) => switches[s as usize],
    };
    for &(a, b, link) in &g.links {
        graph.add_edge(vertex(a), vertex(b), link);
        graph.add_edge(vertex(b), vertex(a), link);
    }
    Ok(Topology {
        name: spec.name.clone(),
        graph,
        gpus,
        nodes: spec.nodes,
        gpus_per_node: spec.gpus_per_node,
        spec: Some(spec.clone()),
        switch_names: g.switches.iter().map(|(n, _)| n.clone()).collect(),
        tiers: g.tiers.clone(),
    })
}

/// `node`: one server, GPUs on an NVSwitch, GPU i <-> NIC i (the NICs lead
/// nowhere).
pub fn node(spec: &ClusterSpec) -> Topology {
    Wiring::servers(spec).finish(spec)
}

/// `rail-optimized`: NIC i of every node on rail i. Each rail has
/// ceil(nodes / (radix/2)) leaves with radix/2 NIC down-ports and radix/2
/// up-ports; the radix/2 spines are shared by all rails and each connects to
/// every leaf of every rail by one link. With more leaves than the radix the
/// spines have more ports than the radix (idealised director-class spines):
/// the fabric stays two-layer and non-blocking at any size.
pub fn rail_optimized(spec: &ClusterSpec) -> Topology {
    let mut w = Wiring::servers(spec);
    let leaves: Vec<NodeIndex> = (0..spec.gpus_per_node).flat_map(|rail| w.plane_leaves(spec, rail)).collect();
    for index in 0..spec.switch_radix / 2 {
        let spine = w.graph.add_node(NodeKind::Spine { plane: 0, index });
        for &leaf in &leaves {
            w.link(leaf, spine, w.leaf_up);
        }
    }
    w.finish(spec)
}

/// `multi-plane-fat-tree`: NIC i of every node on plane i; each plane an
/// independent two-layer fat-tree (leaves as in `rail_optimized`, its own
/// radix/2 spines, none when the plane has a single leaf); no links between
/// planes, so cross-plane traffic crosses NVLink inside a node.
pub fn multi_plane_fat_tree(spec: &ClusterSpec) -> Topology {
    let mut w = Wiring::servers(spec);
    for plane in 0..spec.gpus_per_node {
        let leaves = w.plane_leaves(spec, plane);
        if leaves.len() < 2 {
            continue;
        }
        for index in 0..spec.switch_radix / 2 {
            let spine = w.graph.add_node(NodeKind::Spine { plane, index });
            for &leaf in &leaves {
                w.link(leaf, spine, w.leaf_up);
            }
        }
    }
    w.finish(spec)
}

/// `fat-tree`: the full k-ary three-layer fat-tree (k pods of k/2 edge
/// switches `Leaf { plane: pod }` and k/2 aggregation switches
/// `Spine { plane: pod }`, (k/2)^2 cores; aggregation switch a of every pod
/// connects to cores a x k/2 .. (a+1) x k/2). GPU rank r's NIC is host port
/// r: edge switch r / (k/2) in order, pod r / (k^2/4). Unused host ports stay
/// empty; every switch is built.
pub fn fat_tree(spec: &ClusterSpec) -> Topology {
    let mut w = Wiring::servers(spec);
    let half = spec.k / 2;
    let cores: Vec<NodeIndex> = (0..half * half).map(|index| w.graph.add_node(NodeKind::Core { index })).collect();
    let mut edges = Vec::with_capacity((spec.k * half) as usize);
    for pod in 0..spec.k {
        let pod_edges: Vec<NodeIndex> =
            (0..half).map(|index| w.graph.add_node(NodeKind::Leaf { plane: pod, index })).collect();
        let aggs: Vec<NodeIndex> =
            (0..half).map(|index| w.graph.add_node(NodeKind::Spine { plane: pod, index })).collect();
        for &edge in &pod_edges {
            for &agg in &aggs {
                w.link(edge, agg, w.leaf_up);
            }
        }
        for (a, &agg) in aggs.iter().enumerate() {
            for &core in &cores[a * half as usize..(a + 1) * half as usize] {
                w.link(agg, core, w.spine_up);
            }
        }
        edges.extend(pod_edges);
    }
    for rank in 0..w.nics.len() {
        let nic = w.nics[rank];
        w.ib_link(nic, edges[rank / half as usize]);
    }
    w.finish(spec)
}
