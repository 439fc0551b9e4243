//! Graphviz DOT export of a topology.

use crate::topology::Topology;

/// The topology as a DOT graph (one undirected edge per physical link).
pub fn to_dot(topology: &Topology) -> String {
    let _ = topology;
    todo!()
}
