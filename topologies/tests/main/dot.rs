//! DOT export.

use moesim_topologies::dot::to_dot;

use crate::preset;

#[test]
fn h800_node_dot_has_one_edge_per_physical_link() {
    let t = preset("h800-node", None);
    let dot = to_dot(&t);
    assert_eq!(dot.matches(" -- ").count(), 16, "{dot}");
    assert!(dot.contains("subgraph cluster_node0 {"));
    assert!(
        dot.contains("\"n0.gpu3\" -- \"n0.nvswitch\" [label=\"nvlink 200 GB/s\"]")
            || dot.contains("\"n0.nvswitch\" -- \"n0.gpu3\" [label=\"nvlink 200 GB/s\"]"),
        "{dot}"
    );
    assert!(dot.contains("[label=\"pcie 64 GB/s\"]"), "{dot}");
    assert!(dot.starts_with("graph \"h800-node\" {") && dot.ends_with("}\n"));
}

#[test]
fn cluster_dot_labels_infiniband_in_gbit_and_is_deterministic() {
    let a = to_dot(&preset("h800-cluster", Some(2)));
    let b = to_dot(&preset("h800-cluster", Some(2)));
    assert_eq!(a, b);
    assert_eq!(a.matches(" -- ").count(), 304);
    assert_eq!(a.matches("infiniband 400 Gb/s").count(), 16 + 256);
    assert!(a.contains("subgraph cluster_node1 {"));
    assert!(a.contains("\"spine.p0.31\" [shape=ellipse];"));
}
