//! Routing: shortest paths (in hops) with seeded ECMP among equal-cost next hops.

use petgraph::graph::EdgeIndex;

use crate::topology::Topology;

/// Precomputed routing state for one topology.
pub struct Router {
    _seed: u64,
}

impl Router {
    pub fn new(topology: &Topology, seed: u64) -> Router {
        let _ = topology;
        Router { _seed: seed }
    }
    /// Appends to `out` the directed links of a shortest path from GPU rank
    /// `src` to GPU rank `dst`; among equal-cost choices picks by a hash of
    /// (seed, src, dst, `flow_key`), so one (src, dst) pair can spread flows.
    /// `src == dst` gives an empty path.
    pub fn route(&self, topology: &Topology, src: u32, dst: u32, flow_key: u64, out: &mut Vec<EdgeIndex>) {
        let _ = (topology, src, dst, flow_key, out);
        todo!()
    }
}
