//! Route properties: shape, optimality, ECMP spread and determinism.

use std::collections::BTreeSet;

use moesim_topologies::{EdgeIndex, LinkKind, NodeKind, Router, Topology};

use crate::{bfs_hops, preset};

/// Checks every (src, dst) route: starts at src, ends at dst, contiguous,
/// as long as the BFS distance.
fn check_all_pairs(topo: &Topology, ranks: &[u32]) {
    let router = Router::new(topo, 7);
    let mut path = Vec::new();
    for &src in ranks {
        let dist = bfs_hops(topo, topo.gpu(src));
        for &dst in ranks {
            path.clear();
            router.route(topo, src, dst, u64::from(src ^ dst), &mut path);
            if src == dst {
                assert!(path.is_empty());
                continue;
            }
            let mut at = topo.gpu(src);
            for &e in &path {
                let (a, b) = topo.graph.edge_endpoints(e).unwrap();
                assert_eq!(a, at, "route {src}->{dst} is not contiguous at {}", topo.link_name(e));
                at = b;
            }
            assert_eq!(at, topo.gpu(dst), "route {src}->{dst} ends elsewhere");
            assert_eq!(path.len() as u32, dist[topo.gpu(dst).index()], "route {src}->{dst} is not shortest");
        }
    }
}

fn route(topo: &Topology, router: &Router, src: u32, dst: u32, key: u64) -> Vec<EdgeIndex> {
    let mut path = Vec::new();
    router.route(topo, src, dst, key, &mut path);
    path
}

fn vertices(topo: &Topology, path: &[EdgeIndex]) -> Vec<NodeKind> {
    path.iter().map(|&e| topo.graph[topo.graph.edge_endpoints(e).unwrap().1]).collect()
}

#[test]
fn all_pairs_are_shortest_and_contiguous_in_every_preset() {
    check_all_pairs(&preset("h800-node", None), &(0..8).collect::<Vec<_>>());
    check_all_pairs(&preset("h800-cluster", Some(4)), &(0..32).collect::<Vec<_>>());
    let big: Vec<u32> = (0..64 * 8).step_by(7).collect();
    check_all_pairs(&preset("h800-cluster", Some(64)), &big);
    check_all_pairs(&preset("multi-plane-fat-tree", Some(64)), &big);
    check_all_pairs(&preset("multi-plane-fat-tree", Some(4)), &(0..32).collect::<Vec<_>>());
    check_all_pairs(&preset("fat-tree", Some(32)), &(0..256).step_by(5).collect::<Vec<_>>());
}

#[test]
fn intra_node_route_is_gpu_nvswitch_gpu() {
    let t = preset("h800-cluster", Some(2));
    let r = Router::new(&t, 1);
    let path = route(&t, &r, 9, 14, 0);
    assert_eq!(path.len(), 2);
    assert!(path.iter().all(|&e| t.link(e).kind == LinkKind::NvLink));
    assert_eq!(
        vertices(&t, &path),
        vec![NodeKind::NvSwitch { node: 1 }, NodeKind::Gpu { node: 1, local: 6, rank: 14 }]
    );
}

#[test]
fn same_rail_inter_node_route_goes_through_the_rail_leaf() {
    let t = preset("h800-cluster", Some(2));
    let r = Router::new(&t, 1);
    let path = route(&t, &r, 3, 11, 0);
    let kinds: Vec<LinkKind> = path.iter().map(|&e| t.link(e).kind).collect();
    assert_eq!(kinds, vec![LinkKind::Pcie, LinkKind::InfiniBand, LinkKind::InfiniBand, LinkKind::Pcie]);
    assert_eq!(vertices(&t, &path)[1], NodeKind::Leaf { plane: 3, index: 0 });
}

#[test]
fn cross_rail_route_takes_a_spine_not_nvlink() {
    let t = preset("h800-cluster", Some(2));
    let r = Router::new(&t, 1);
    for key in 0..16 {
        let path = route(&t, &r, 0, 9, key);
        let v = vertices(&t, &path);
        assert_eq!(path.len(), 6);
        assert!(path.iter().all(|&e| t.link(e).kind != LinkKind::NvLink), "{:?}", v);
        assert!(matches!(v[2], NodeKind::Spine { .. }), "{:?}", v);
    }
}

#[test]
fn multi_plane_cross_plane_route_uses_nvlink() {
    let t = preset("multi-plane-fat-tree", Some(64));
    let r = Router::new(&t, 1);
    // Rank 0 (node 0, plane 0) to rank 8 x 40 + 3 (node 40, plane 3).
    let mut sides = BTreeSet::new();
    for key in 0..32 {
        let path = route(&t, &r, 0, 8 * 40 + 3, key);
        let nvlink: Vec<usize> = (0..path.len()).filter(|&i| t.link(path[i]).kind == LinkKind::NvLink).collect();
        assert_eq!(nvlink.len(), 2, "one NVLink crossing GPU -> NVSwitch -> GPU");
        // Every IB hop stays on plane 3 (the destination's) or 0 (the source's).
        let planes: BTreeSet<u32> = vertices(&t, &path)
            .into_iter()
            .filter_map(|k| match k {
                NodeKind::Leaf { plane, .. } | NodeKind::Spine { plane, .. } => Some(plane),
                _ => None,
            })
            .collect();
        assert_eq!(planes.len(), 1);
        sides.insert(nvlink[0] == 0);
    }
    // ECMP: the NVLink crossing happens at the source on some keys, at the destination on others.
    assert_eq!(sides.len(), 2);
}

#[test]
fn ecmp_spreads_flow_keys_over_spines_and_is_deterministic() {
    let t = preset("h800-cluster", Some(64));
    let r = Router::new(&t, 42);
    // Node 0 and node 40 sit on different leaves of rail 0.
    let spines: BTreeSet<String> = (0..64)
        .map(|key| {
            let path = route(&t, &r, 0, 8 * 40, key);
            assert_eq!(path.len(), 6);
            t.node_name(t.graph.edge_endpoints(path[2]).unwrap().1)
        })
        .collect();
    assert!(spines.len() >= 2, "{spines:?}");
    assert!(spines.iter().all(|s| s.starts_with("spine.")), "{spines:?}");
    for key in [0, 5, 1 << 40] {
        assert_eq!(route(&t, &r, 0, 320, key), route(&t, &r, 0, 320, key));
        let again = Router::new(&t, 42);
        assert_eq!(route(&t, &r, 0, 320, key), route(&t, &again, 0, 320, key));
    }
    let other_seed = Router::new(&t, 43);
    assert!((0..64).any(|key| route(&t, &r, 0, 320, key) != route(&t, &other_seed, 0, 320, key)));
}

#[test]
fn fat_tree_cross_pod_route_climbs_to_a_core() {
    let t = preset("fat-tree", Some(32));
    let r = Router::new(&t, 3);
    // k = 16: 64 host ports per pod, so rank 0 (pod 0) and rank 200 (pod 3).
    let path = route(&t, &r, 0, 200, 9);
    let v = vertices(&t, &path);
    assert_eq!(path.len(), 8);
    assert!(matches!(v[3], NodeKind::Core { .. }), "{v:?}");
}

/// `cargo test --release -p moesim-topologies -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn all_to_all_routing_on_4096_gpus() {
    for name in ["h800-cluster", "multi-plane-fat-tree"] {
        let t0 = std::time::Instant::now();
        let t = preset(name, Some(512));
        let built = t0.elapsed();
        let t1 = std::time::Instant::now();
        let r = Router::new(&t, 1);
        let precomputed = t1.elapsed();
        let t2 = std::time::Instant::now();
        let mut path = Vec::new();
        let mut hops = 0usize;
        for src in 0..t.gpu_count() {
            for dst in 0..t.gpu_count() {
                path.clear();
                r.route(&t, src, dst, u64::from(dst), &mut path);
                hops += path.len();
            }
        }
        let routed = t2.elapsed();
        let t3 = std::time::Instant::now();
        for dst in 0..t.gpu_count() {
            for src in 0..t.gpu_count() {
                path.clear();
                r.route(&t, src, dst, u64::from(dst), &mut path);
                hops += path.len();
            }
        }
        let routed_dst_major = t3.elapsed();
        println!(
            "{name} 512 nodes: {} vertices, {} directed links; build {:.2} s, Router::new {:.2} s ({:.0} MB), \
             16.8M routes src-major {:.2} s, dst-major {:.2} s ({hops} hops)",
            t.graph.node_count(),
            t.graph.edge_count(),
            built.as_secs_f64(),
            precomputed.as_secs_f64(),
            r.memory_bytes() as f64 / 1e6,
            routed.as_secs_f64(),
            routed_dst_major.as_secs_f64()
        );
    }
}

#[test]
fn wide_tables_for_high_radix_switches_route_correctly() {
    // 260 spines: every leaf has 262 out-edges, past the u16 table's 254.
    let config = moesim_topologies::TopologyConfig {
        preset: Some("h800-cluster".into()),
        nodes: Some(2),
        switch_radix: Some(520),
        ..Default::default()
    };
    let t = moesim_topologies::build(&config.resolve(crate::H800).unwrap()).unwrap();
    assert!(t.graph.node_indices().any(|v| t.graph.neighbors(v).count() > 255));
    check_all_pairs(&t, &(0..16).collect::<Vec<_>>());
}

#[test]
fn next_hops_that_are_not_adjacent_in_edge_order_are_still_found() {
    use moesim_topologies::{LinkSpec, NodeKind as K};
    let spec = LinkSpec { kind: LinkKind::InfiniBand, nominal_bytes_per_s: 50e9, efficiency: 1.0, latency_ns: 0.0 };
    let mut g = petgraph::graph::DiGraph::new();
    let g0 = g.add_node(K::Gpu { node: 0, local: 0, rank: 0 });
    let g1 = g.add_node(K::Gpu { node: 1, local: 0, rank: 1 });
    let n0 = g.add_node(K::Nic { node: 0, local: 0 });
    let n1 = g.add_node(K::Nic { node: 1, local: 0 });
    // Leaves 0 and 2 reach n1; leaf 1 (between them in edge order) is a dead end.
    let leaves: Vec<_> = (0..3).map(|index| g.add_node(K::Leaf { plane: 0, index })).collect();
    let mut link = |a, b| {
        g.add_edge(a, b, spec);
        g.add_edge(b, a, spec);
    };
    link(g0, n0);
    link(g1, n1);
    for &l in &leaves {
        link(n0, l);
    }
    link(leaves[0], n1);
    link(leaves[2], n1);
    let t = Topology {
        name: "hand".into(),
        graph: g,
        gpus: vec![g0, g1],
        nodes: 2,
        gpus_per_node: 1,
        spec: None,
        switch_names: vec![],
        tiers: vec![],
    };
    t.check_connected().unwrap();
    let r = Router::new(&t, 5);
    let used: BTreeSet<String> = (0..32)
        .map(|key| {
            let path = route(&t, &r, 0, 1, key);
            assert_eq!(path.len(), 4);
            t.node_name(t.graph.edge_endpoints(path[1]).unwrap().1)
        })
        .collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec!["leaf.p0.0".to_owned(), "leaf.p0.2".to_owned()]);
    check_all_pairs(&t, &[0, 1]);
}
