//! Integration tests of `moesim-topologies` (one test binary).

mod bad_config;
mod counts;
mod dot;
mod routing;
mod summary;

use moesim_topologies::{build, LinkDefaults, Topology, TopologyConfig};

/// H800: 400 GB/s NVLink bidirectional = 200 per direction; 400 Gb/s CX7.
pub const H800: LinkDefaults = LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 };

/// Builds a preset with `nodes` nodes (None: the preset's).
pub fn preset(name: &str, nodes: Option<u32>) -> Topology {
    let config = TopologyConfig { preset: Some(name.into()), nodes, ..Default::default() };
    build(&config.resolve(H800).expect("valid preset")).expect("connected")
}

/// Hop distances from `src` to every vertex (plain BFS on petgraph).
pub fn bfs_hops(topo: &Topology, src: moesim_topologies::NodeIndex) -> Vec<u32> {
    let mut dist = vec![u32::MAX; topo.graph.node_count()];
    let mut queue = std::collections::VecDeque::from([src]);
    dist[src.index()] = 0;
    while let Some(v) = queue.pop_front() {
        for w in topo.graph.neighbors(v) {
            if dist[w.index()] == u32::MAX {
                dist[w.index()] = dist[v.index()] + 1;
                queue.push_back(w);
            }
        }
    }
    dist
}
