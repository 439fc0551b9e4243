//! Vertex and link counts of every preset at a couple of sizes.

use moesim_topologies::{LinkKind, NodeKind, TopologyKind};

use crate::preset;

fn links_of(topo: &moesim_topologies::Topology, kind: LinkKind) -> usize {
    topo.graph.edge_weights().filter(|l| l.kind == kind).count()
}

#[test]
fn h800_node_has_8_gpus_on_one_nvswitch_and_8_nics() {
    let t = preset("h800-node", None);
    let s = t.summary();
    assert_eq!((s.nodes, s.gpus, s.nics, s.nvswitches, s.switches), (1, 8, 8, 1, 1));
    // 8 NVLink + 8 PCIe physical links, two directions each.
    assert_eq!(s.directed_links, 32);
    assert_eq!(links_of(&t, LinkKind::NvLink), 16);
    assert_eq!(links_of(&t, LinkKind::Pcie), 16);
    assert_eq!(links_of(&t, LinkKind::InfiniBand), 0);
    for rank in 0..8 {
        assert_eq!(t.graph[t.gpu(rank)], NodeKind::Gpu { node: 0, local: rank, rank });
    }
}

#[test]
fn h800_cluster_2_nodes_counts() {
    let t = preset("h800-cluster", Some(2));
    let s = t.summary();
    assert_eq!(t.spec.as_ref().unwrap().kind, TopologyKind::RailOptimized);
    // 8 rails x 1 leaf; 32 spines shared by the rails.
    assert_eq!(
        (s.gpus, s.nics, s.nvswitches, s.leaf_switches, s.spine_switches, s.core_switches),
        (16, 16, 2, 8, 32, 0)
    );
    // 16 NVLink + 16 PCIe + 16 NIC-leaf + 8 x 32 leaf-spine = 304 physical links.
    assert_eq!(s.directed_links, 2 * 304);
    assert_eq!(links_of(&t, LinkKind::InfiniBand), 2 * (16 + 256));
}

#[test]
fn h800_cluster_256_nodes_counts() {
    let t = preset("h800-cluster", Some(256));
    let s = t.summary();
    // 256 nodes / 32 down-ports = 8 leaves per rail, 64 leaves; 32 spines of 64 ports.
    assert_eq!((s.gpus, s.nics, s.nvswitches, s.leaf_switches, s.spine_switches), (2048, 2048, 256, 64, 32));
    assert_eq!(s.directed_links, 2 * (2048 * 3 + 64 * 32));
    let spine_ports = t
        .graph
        .node_indices()
        .filter(|&v| matches!(t.graph[v], NodeKind::Spine { .. }))
        .map(|v| t.graph.neighbors(v).count())
        .max();
    assert_eq!(spine_ports, Some(64));
}

#[test]
fn h800_cluster_512_nodes_uses_director_spines() {
    let t = preset("h800-cluster", Some(512));
    let s = t.summary();
    assert_eq!((s.gpus, s.leaf_switches, s.spine_switches), (4096, 128, 32));
    let spine_ports = t
        .graph
        .node_indices()
        .filter(|&v| matches!(t.graph[v], NodeKind::Spine { .. }))
        .map(|v| t.graph.neighbors(v).count())
        .max();
    assert_eq!(spine_ports, Some(128));
}

#[test]
fn multi_plane_16_nodes_has_one_leaf_per_plane_and_no_spines() {
    let t = preset("multi-plane-fat-tree", Some(16));
    let s = t.summary();
    assert_eq!((s.gpus, s.nics, s.nvswitches, s.leaf_switches, s.spine_switches), (128, 128, 16, 8, 0));
    assert_eq!(s.directed_links, 2 * (128 * 3));
}

#[test]
fn multi_plane_64_nodes_has_a_fat_tree_per_plane() {
    let t = preset("multi-plane-fat-tree", Some(64));
    let s = t.summary();
    // Per plane: 2 leaves, 32 spines; 8 planes.
    assert_eq!((s.gpus, s.leaf_switches, s.spine_switches), (512, 16, 256));
    assert_eq!(s.directed_links, 2 * (512 * 3 + 8 * 2 * 32));
    // No switch links between planes.
    for e in t.graph.raw_edges() {
        let plane = |v: moesim_topologies::NodeIndex| match t.graph[v] {
            NodeKind::Leaf { plane, .. } | NodeKind::Spine { plane, .. } => Some(plane),
            _ => None,
        };
        if let (Some(a), Some(b)) = (plane(e.source()), plane(e.target())) {
            assert_eq!(a, b, "{}", t.link_name(t.graph.find_edge(e.source(), e.target()).unwrap()));
        }
    }
}

#[test]
fn multi_plane_2048_nodes_holds_16384_gpus_with_64_port_switches() {
    let config = moesim_topologies::TopologyConfig {
        preset: Some("multi-plane-fat-tree".into()),
        nodes: Some(2048),
        ..Default::default()
    };
    let spec = config.resolve(crate::H800).unwrap();
    let t = moesim_topologies::build::multi_plane_fat_tree(&spec);
    let s = t.summary();
    assert_eq!((s.gpus, s.leaf_switches, s.spine_switches), (16384, 8 * 64, 8 * 32));
    let max_ports = t
        .graph
        .node_indices()
        .filter(|&v| matches!(t.graph[v], NodeKind::Spine { .. } | NodeKind::Leaf { .. }))
        .map(|v| t.graph.neighbors(v).count())
        .max();
    assert_eq!(max_ports, Some(64));
}

#[test]
fn fat_tree_k16_counts() {
    let t = preset("fat-tree", Some(2));
    let s = t.summary();
    // 16 pods x (8 edge + 8 aggregation), 64 cores; 16 GPUs on host ports 0..16.
    assert_eq!((s.gpus, s.leaf_switches, s.spine_switches, s.core_switches), (16, 128, 128, 64));
    // 16 x 64 edge-agg + 16 x 8 x 8 agg-core + 16 NIC-edge IB links.
    assert_eq!(links_of(&t, moesim_topologies::LinkKind::InfiniBand), 2 * (1024 + 1024 + 16));
    let full = preset("fat-tree", Some(128));
    assert_eq!(full.summary().gpus, 1024);
}

#[test]
fn fat_tree_k4_counts() {
    let config = moesim_topologies::TopologyConfig {
        preset: Some("fat-tree".into()),
        nodes: Some(4),
        gpus_per_node: Some(4),
        k: Some(4),
        ..Default::default()
    };
    let t = moesim_topologies::build(&config.resolve(crate::H800).unwrap()).unwrap();
    let s = t.summary();
    // k = 4: 4 pods x (2 + 2), 4 cores, 16 host ports.
    assert_eq!((s.gpus, s.leaf_switches, s.spine_switches, s.core_switches), (16, 8, 8, 4));
    assert_eq!(links_of(&t, moesim_topologies::LinkKind::InfiniBand), 2 * (16 + 16 + 16));
}

#[test]
fn nvl72_is_one_72_gpu_nvlink_domain_per_rack_with_a_rail_per_gpu() {
    let t = preset("nvl72", Some(2));
    let s = t.summary();
    let spec = t.spec.as_ref().unwrap();
    // 2 racks x 72 GPUs, one NVSwitch vertex each; 72 rails x 1 leaf, 32 spines.
    assert_eq!((s.gpus, s.gpus_per_node, s.nvswitches, s.leaf_switches, s.spine_switches), (144, 72, 2, 72, 32));
    // NVLink 5: 900 GB/s per direction per GPU; NVLS at Blackwell's 0.74.
    assert_eq!(s.gpu_nvlink_bytes_per_s, 900e9);
    assert_eq!(spec.nvls_efficiency, Some(0.74));
    // Every GPU of a rack hangs off the same switch.
    let sw = t.nvswitch_links(0).unwrap().0;
    assert!((0..72).all(|r| t.nvswitch_links(r).unwrap().0 == sw));
    assert_ne!(t.nvswitch_links(72).unwrap().0, sw);
}

#[test]
fn cloudmatrix384_is_one_384_npu_scale_up_domain_without_nvls() {
    let t = preset("cloudmatrix384", None);
    let s = t.summary();
    assert_eq!((s.gpus, s.gpus_per_node, s.nvswitches, s.nics), (384, 384, 1, 384));
    assert_eq!(s.gpu_nvlink_bytes_per_s, 392e9);
    assert_eq!(s.gpu_network_bytes_per_s, 50e9);
    assert_eq!(t.spec.as_ref().unwrap().nvls_efficiency, None);
}

#[test]
fn every_preset_sources_each_value_it_sets() {
    // Each rate, efficiency and latency of a preset carries a comment (or
    // the comment block right above it) saying where the value comes from.
    for name in moesim_topologies::TopologyConfig::preset_names() {
        let text = moesim_topologies::TopologyConfig::preset_text(name).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let key = line.split('=').next().unwrap_or("").trim();
            let physical = ["_per_s", "_efficiency", "_latency_ns"].iter().any(|s| key.ends_with(s));
            if line.starts_with('#') || !physical {
                continue;
            }
            let commented = line.contains('#') || (i > 0 && lines[i - 1].starts_with('#'));
            assert!(commented, "{name}: `{line}` has no source comment");
        }
    }
}

#[test]
fn llama3_roce_has_the_papers_tiers_and_routes_across_pods_through_the_aggregation_layer() {
    // 3,200 GPUs: 200 racks of 16 GPUs, 2 pods of up to 192 racks (16
    // cluster switches each), 16 aggregation switches.
    let t = preset("llama3-roce", Some(400));
    let s = t.summary();
    let tiers: Vec<(&str, u32)> = s.tiers.iter().map(|t| (t.tier.as_str(), t.switches)).collect();
    assert_eq!(tiers, [("nvswitch", 400), ("nic", 3200), ("tor", 200), ("cluster", 32), ("aggregation", 16)]);
    let r = moesim_topologies::Router::new(&t, 0);
    let names = |src: u32, dst: u32| {
        let mut path = Vec::new();
        r.route(&t, src, dst, 0, &mut path);
        path.iter().map(|&e| t.link_name(e)).collect::<Vec<_>>()
    };
    // Same rack (servers 0 and 1 share tor0): GPU, NIC, ToR, NIC, GPU.
    let same_rack = names(0, 8);
    assert_eq!(same_rack.len(), 4, "{same_rack:?}");
    assert!(same_rack[1].ends_with("->tor0"), "{same_rack:?}");
    // Same pod, other rack: up to a cluster switch and down.
    let same_pod = names(0, 16 * 100);
    assert!(same_pod.iter().any(|l| l.contains("->pod0.cluster")) && !same_pod.iter().any(|l| l.contains("agg")));
    // Rack 195 is in pod 1: the path crosses an aggregation switch, whose
    // links run at 1/7 of the pod's ToR capacity over 16 links.
    let cross = names(0, 16 * 195);
    assert_eq!(cross.len(), 8, "{cross:?}");
    assert!(cross[3].contains("->agg"), "{cross:?}");
    let mut path = Vec::new();
    r.route(&t, 0, 16 * 195, 0, &mut path);
    let agg = t.link(path[3]).nominal_bytes_per_s * 8.0 / 1e9;
    assert!((agg - 192.0 * 400.0 / 7.0 / 16.0).abs() < 1e-6, "{agg}");
}
