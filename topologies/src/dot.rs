//! Graphviz DOT export of a topology.

use std::fmt::Write;

use petgraph::visit::EdgeRef;

use crate::topology::{LinkKind, LinkSpec, NodeKind, Topology};

fn rate_label(spec: &LinkSpec) -> String {
    match spec.kind {
        LinkKind::NvLink | LinkKind::Pcie => {
            format!("{} {} GB/s", spec.kind.as_str(), trim(spec.nominal_bytes_per_s / 1e9))
        }
        LinkKind::InfiniBand => format!("{} {} Gb/s", spec.kind.as_str(), trim(spec.nominal_bytes_per_s * 8.0 / 1e9)),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The topology as a DOT graph (one undirected edge per physical link).
///
/// Vertices of server n (its GPUs, NVSwitch and NICs) are grouped in
/// `subgraph cluster_node<n>`; switches of the network follow. A physical
/// link is a pair of opposite directed edges; a directed edge without its
/// opposite is drawn too, with `dir=forward`. Output depends only on the
/// graph, so it is deterministic.
pub fn to_dot(topology: &Topology) -> String {
    let g = &topology.graph;
    let mut out = String::new();
    let _ = writeln!(out, "graph \"{}\" {{", topology.name);
    let _ = writeln!(out, "  node [shape=box, fontsize=10];");
    let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); topology.nodes as usize];
    let mut fabric = Vec::new();
    for v in g.node_indices() {
        let server = match g[v] {
            NodeKind::Gpu { node, .. } | NodeKind::NvSwitch { node } | NodeKind::Nic { node, .. } => {
                Some(node as usize)
            }
            _ => None,
        };
        match server {
            Some(s) if s < per_node.len() => per_node[s].push(v.index()),
            _ => fabric.push(v.index()),
        }
    }
    let name = |v: usize| topology.node_name(petgraph::graph::NodeIndex::new(v));
    for (s, members) in per_node.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_node{s} {{");
        let _ = writeln!(out, "    label=\"node {s}\";");
        for &v in members {
            let _ = writeln!(out, "    \"{}\";", name(v));
        }
        let _ = writeln!(out, "  }}");
    }
    for &v in &fabric {
        let _ = writeln!(out, "  \"{}\" [shape=ellipse];", name(v));
    }
    // Pair each a->b (a < b) with one unused b->a.
    let mut used = vec![false; g.edge_count()];
    for e in g.edge_references() {
        let (a, b) = (e.source(), e.target());
        if used[e.id().index()] || a > b {
            continue;
        }
        used[e.id().index()] = true;
        let back = g.edges_connecting(b, a).find(|r| !used[r.id().index()]).map(|r| r.id());
        let dir = match back {
            Some(r) => {
                used[r.index()] = true;
                ""
            }
            None => ", dir=forward",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -- \"{}\" [label=\"{}\"{dir}];",
            name(a.index()),
            name(b.index()),
            rate_label(e.weight())
        );
    }
    for e in g.edge_references() {
        if !used[e.id().index()] {
            used[e.id().index()] = true;
            let back = g.edges_connecting(e.target(), e.source()).find(|r| !used[r.id().index()]).map(|r| r.id());
            let dir = match back {
                Some(r) => {
                    used[r.index()] = true;
                    ""
                }
                None => ", dir=forward",
            };
            let _ = writeln!(
                out,
                "  \"{}\" -- \"{}\" [label=\"{}\"{dir}];",
                name(e.source().index()),
                name(e.target().index()),
                rate_label(e.weight())
            );
        }
    }
    out.push_str("}\n");
    out
}
