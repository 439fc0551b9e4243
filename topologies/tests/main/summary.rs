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

/// Four one-GPU nodes, two per leaf (400 Gb/s = 50 GB/s GPU to leaf), each
/// leaf with one 200 Gb/s uplink to the one spine (4:1 oversubscribed), and
/// the spine's own `extra` links. Written out, as `[[topology.link]]`s.
fn oversubscribed(extra: &str) -> moesim_topologies::Topology {
    let text = format!(
        r#"
nodes = 4
gpus_per_node = 1
ib_latency_ns = 450.0
ib_efficiency = 1.0

[[switch]]
name = "leaf{{l:0..2}}"
tier = "leaf"

[[switch]]
name = "spine"
tier = "spine"

[[link]]
a = "n{{n:0..4}}.gpu0"
b = "leaf{{n/2}}"
class = "infiniband"
gbit_per_s = 400.0

[[link]]
a = "leaf{{l:0..2}}"
b = "spine"
class = "infiniband"
gbit_per_s = 200.0
{extra}
"#
    );
    let config: TopologyConfig = toml::from_str(&text).expect("valid TOML");
    build(&config.resolve(H800).expect("valid graph")).expect("connected")
}

#[test]
fn the_bisection_of_a_written_out_fabric_is_its_real_cut() {
    let t = oversubscribed("");
    // The summary alone takes the fabric as non-blocking: 2 GPUs x 50 GB/s.
    assert_eq!(t.summary().bisection_bytes_per_s, 100e9);
    assert!(!t.summary().bisection_includes_fabric);
    // Ranks 0-1 (leaf 0) to ranks 2-3 (leaf 1): one 25 GB/s uplink crosses.
    let s = t.summary_with_cut();
    assert!(s.bisection_includes_fabric);
    assert!((s.bisection_bytes_per_s - 25e9).abs() < 1.0, "{}", s.bisection_bytes_per_s);
    // A second path (a direct 400 Gb/s leaf-to-leaf link) adds its 50 GB/s.
    let t = oversubscribed("\n[[link]]\na = \"leaf0\"\nb = \"leaf1\"\nclass = \"infiniband\"\ngbit_per_s = 400.0\n");
    let cut = t.summary_with_cut().bisection_bytes_per_s;
    assert!((cut - 75e9).abs() < 1.0, "{cut}");
    // Fatter than the injection: the GPUs' own links bound it (2 x 50 GB/s).
    let t = oversubscribed("\n[[link]]\na = \"leaf0\"\nb = \"leaf1\"\nclass = \"infiniband\"\ngbit_per_s = 800.0\n");
    let cut = t.summary_with_cut().bisection_bytes_per_s;
    assert!((cut - 100e9).abs() < 1.0, "{cut}");
}
