//! Bad configuration values, missing and unknown presets, disconnected graphs.

use moesim_topologies::{build, ConfigProblem, TopologyConfig, TopologyError, TopologyKind};
use petgraph::visit::EdgeRef;

use crate::{preset, H800};

fn problems(config: TopologyConfig) -> Vec<ConfigProblem> {
    match config.resolve(H800) {
        Err(TopologyError::Invalid { problems }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn message<'a>(problems: &'a [ConfigProblem], key: &str) -> &'a str {
    &problems.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no problem on {key}: {problems:?}")).message
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let p = problems(TopologyConfig {
        preset: Some("h800-cluster".into()),
        nodes: Some(0),
        ib_gbit_per_s: Some(-400.0),
        nvlink_efficiency: Some(1.5),
        ib_efficiency: Some(0.0),
        pcie_latency_ns: Some(-1.0),
        nvlink_gb_per_s: Some(f64::NAN),
        switch_radix: Some(63),
        ..Default::default()
    });
    assert_eq!(p.len(), 7, "{p:?}");
    assert_eq!(message(&p, "nodes"), "expected an integer ≥ 1, found 0");
    assert_eq!(message(&p, "ib_gbit_per_s"), "expected a positive number, found -400");
    assert_eq!(message(&p, "nvlink_efficiency"), "expected a value in (0, 1], found 1.5");
    assert_eq!(message(&p, "ib_efficiency"), "expected a value in (0, 1], found 0");
    assert_eq!(message(&p, "pcie_latency_ns"), "expected a number ≥ 0, found -1");
    assert_eq!(message(&p, "nvlink_gb_per_s"), "expected a positive number, found NaN");
    assert!(message(&p, "switch_radix").contains("even integer"));
    let text = TopologyError::Invalid { problems: p }.to_string();
    assert!(text.contains("topology.ib_gbit_per_s: expected a positive number, found -400"), "{text}");
}

#[test]
fn a_bad_device_default_is_reported_on_the_rate_key() {
    let config = TopologyConfig { preset: Some("h800-node".into()), ..Default::default() };
    let err =
        config.resolve(moesim_topologies::LinkDefaults { nvlink_gb_per_s: 0.0, nic_gbit_per_s: 400.0 }).unwrap_err();
    let TopologyError::Invalid { problems } = err else { panic!() };
    assert_eq!(problems.len(), 1);
    assert_eq!(message(&problems, "nvlink_gb_per_s"), "expected a positive number, found 0");
}

#[test]
fn a_missing_preset_is_a_problem_on_key_preset() {
    let p = problems(TopologyConfig { nodes: Some(2), ..Default::default() });
    assert!(message(&p, "preset").contains("h800-cluster"), "{p:?}");
}

#[test]
fn an_unknown_preset_lists_the_known_ones() {
    let err = TopologyConfig { preset: Some("dgx-superpod".into()), ..Default::default() }.resolve(H800).unwrap_err();
    assert!(matches!(&err, TopologyError::UnknownPreset { name, known } if name == "dgx-superpod" && known.len() == 7));
    let text = err.to_string();
    for name in ["h800-node", "h800-cluster", "fat-tree", "multi-plane-fat-tree"] {
        assert!(text.contains(name), "{text}");
    }
    assert!(TopologyConfig::preset_text("nope").is_err());
}

#[test]
fn a_fat_tree_too_small_for_the_gpus_is_a_clear_problem() {
    let p = problems(TopologyConfig { preset: Some("fat-tree".into()), nodes: Some(129), ..Default::default() });
    assert_eq!(p.len(), 1, "{p:?}");
    let m = message(&p, "k");
    assert!(m.contains("1024 host ports") && m.contains("1032 GPUs") && m.contains("k >= 18"), "{m}");
    let odd = problems(TopologyConfig { preset: Some("fat-tree".into()), k: Some(5), ..Default::default() });
    assert!(message(&odd, "k").contains("found 5"));
}

#[test]
fn a_node_kind_with_several_nodes_is_a_problem() {
    let p = problems(TopologyConfig { preset: Some("h800-node".into()), nodes: Some(2), ..Default::default() });
    assert!(message(&p, "nodes").contains("found 2"));
}

#[test]
fn overrides_and_device_rates_reach_the_spec() {
    let spec = TopologyConfig { preset: Some("h800-cluster".into()), ..Default::default() }.resolve(H800).unwrap();
    assert_eq!(spec.kind, TopologyKind::RailOptimized);
    assert_eq!((spec.nodes, spec.gpus_per_node, spec.switch_radix), (32, 8, 64));
    assert_eq!(spec.nvlink_bytes_per_s, 200e9);
    assert_eq!(spec.ib_bytes_per_s, 50e9);
    assert_eq!(spec.pcie_bytes_per_s, 64e9);
    assert_eq!((spec.nvlink_latency_ns, spec.pcie_latency_ns, spec.ib_latency_ns), (1665.0, 950.0, 450.0));
    let spec = TopologyConfig {
        preset: Some("h800-cluster".into()),
        nvlink_gb_per_s: Some(160.0),
        ib_gbit_per_s: Some(800.0),
        kind: Some(TopologyKind::MultiPlaneFatTree),
        ..Default::default()
    }
    .resolve(H800)
    .unwrap();
    assert_eq!((spec.nvlink_bytes_per_s, spec.ib_bytes_per_s), (160e9, 100e9));
    assert_eq!(spec.kind, TopologyKind::MultiPlaneFatTree);
}

#[test]
fn latencies_add_up_to_isca25_table5() {
    let t = preset("h800-cluster", Some(64));
    let r = moesim_topologies::Router::new(&t, 0);
    let latency_us = |src: u32, dst: u32| {
        let mut path = Vec::new();
        r.route(&t, src, dst, 0, &mut path);
        path.iter().map(|&e| t.link(e).latency_ns).sum::<f64>() / 1e3
    };
    assert!((latency_us(0, 1) - 3.33).abs() < 1e-9);
    assert!((latency_us(0, 8) - 2.8).abs() < 1e-9, "same leaf");
    assert!((latency_us(0, 8 * 40) - 3.7).abs() < 1e-9, "cross leaf");
}

#[test]
fn every_preset_parses_strictly() {
    for name in TopologyConfig::preset_names() {
        let text = TopologyConfig::preset_text(name).unwrap();
        let config: TopologyConfig = toml::from_str(text).unwrap();
        // A generated preset names its kind; a written-out one lists links.
        assert!(config.preset.is_none() && (config.kind.is_some() != config.link.is_some()), "{name}");
        // NVLink's rate comes from the device, except in scale-up domains
        // whose fabric sets it (NVL72's NVLink 5, CloudMatrix's UB).
        let own_fabric = ["nvl72", "cloudmatrix384"].contains(&name);
        assert_eq!(config.nvlink_gb_per_s.is_some(), own_fabric, "{name}");
    }
    assert!(toml::from_str::<TopologyConfig>("nodes = 2\nib_gbps = 400\n").is_err());
}

#[test]
fn a_graph_with_an_isolated_gpu_is_rejected() {
    let mut t = preset("h800-cluster", Some(2));
    assert!(t.check_connected().is_ok());
    // Cut GPU 11 off both its NVSwitch and its NIC (every edge at it).
    let gpu = t.gpu(11);
    let mut cut: Vec<_> = t.graph.edges_directed(gpu, petgraph::Direction::Outgoing).map(|e| e.id()).collect();
    cut.extend(t.graph.edges_directed(gpu, petgraph::Direction::Incoming).map(|e| e.id()));
    cut.sort();
    for e in cut.into_iter().rev() {
        t.graph.remove_edge(e);
    }
    let err = t.check_connected().unwrap_err();
    assert!(matches!(&err, TopologyError::Disconnected(m) if m.contains("n1.gpu3 (rank 11)")), "{err}");
}

#[test]
fn a_one_way_link_is_rejected() {
    let mut t = preset("h800-node", None);
    // Remove GPU 5's links into it only: it can send but not receive.
    let gpu = t.gpu(5);
    let mut cut: Vec<_> = t.graph.edges_directed(gpu, petgraph::Direction::Incoming).map(|e| e.id()).collect();
    cut.sort();
    for e in cut.into_iter().rev() {
        t.graph.remove_edge(e);
    }
    let err = t.check_connected().unwrap_err().to_string();
    assert!(err.contains("cannot reach n0.gpu5"), "{err}");
    let _ = build;
}
