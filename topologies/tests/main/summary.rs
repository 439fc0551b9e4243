//! Summary numbers computed by hand.

use moesim_topologies::{build, TopologyConfig};

use crate::{preset, H800};

#[test]
fn h800_cluster_256_nodes_summary() {
    let s = preset("h800-cluster", Some(256)).summary();
    assert_eq!(s.name, "h800-cluster");
    // 200 GB/s NVLink per direction; 400 Gb/s = 50 GB/s per NIC (PCIe 64 GB/s is wider).
    assert_eq!(s.gpu_nvlink_bytes_per_s, 200e9);
    assert_eq!(s.gpu_network_bytes_per_s, 50e9);
    // Non-blocking: 1024 GPUs x 50 GB/s = 51.2 TB/s = 409.6 Tb/s one direction.
    assert_eq!(s.bisection_bytes_per_s, 1024.0 * 50e9);
    // Fabric cut: 64 leaves x 32 spines / 2 = 1024 links of 50 GB/s — exactly the NIC term.
    assert_eq!(s.switches, 256 + 64 + 32);
}

#[test]
fn h800_node_summary_is_nvlink_bisection() {
    let s = preset("h800-node", None).summary();
    assert_eq!(s.gpu_network_bytes_per_s, 0.0);
    assert_eq!(s.bisection_bytes_per_s, 4.0 * 200e9);
}

#[test]
fn network_injection_is_capped_by_pcie() {
    let config = TopologyConfig {
        preset: Some("multi-plane-fat-tree".into()),
        nodes: Some(64),
        ib_gbit_per_s: Some(800.0),
        ..Default::default()
    };
    let s = build(&config.resolve(H800).unwrap()).unwrap().summary();
    // 800 Gb/s = 100 GB/s, but PCIe Gen5 x16 gives 64 GB/s.
    assert_eq!(s.gpu_network_bytes_per_s, 64e9);
    assert_eq!(s.bisection_bytes_per_s, 256.0 * 64e9);
}

#[test]
fn fat_tree_summary() {
    let s = preset("fat-tree", Some(32)).summary();
    assert_eq!(s.bisection_bytes_per_s, 128.0 * 50e9);
    assert_eq!(s.switches, 32 + 16 * 16 + 64);
}
