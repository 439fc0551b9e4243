//! Topologies written out in full (`[[topology.switch]]`,
//! `[[topology.link]]`): the h800-cluster fabric written out runs every
//! workload kind to the same figures as its preset; oversubscription on the
//! generated fat-trees slows traffic across leaves by its ratio and not
//! inside a leaf; bad graphs are errors at their file:line with exit 2.

use crate::common::*;

/// The `[topology]` table and its switches and links from the built-in
/// `alltoall-16xh800-explicit` (h800-cluster written out), with `nodes`.
fn explicit_topology(nodes: u32) -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/alltoall-16xh800-explicit.toml"))
            .unwrap();
    let start = text.find("\n[topology]").unwrap() + 1;
    let end = text.find("\n[workload]").unwrap() + 1;
    text[start..end].replace("nodes = 2\n", &format!("nodes = {nodes}\n"))
}

/// A built-in scenario's text with its `[topology]` table replaced.
fn with_topology(builtin: &str, topology: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/scenarios/{builtin}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = text.find("\n[topology]").unwrap() + 1;
    let end = start + text[start..].find("\n[").unwrap() + 1;
    format!("{}{}{}", &text[..start], topology, &text[end..])
}

fn same_figures(builtin: &str, nodes: u32, sets: &[&str], keys: &[&str]) {
    let path = scenario_file(&format!("explicit_{builtin}"), &with_topology(builtin, &explicit_topology(nodes)));
    let mut args = vec![path.to_str().unwrap()];
    args.extend_from_slice(sets);
    let written = run_json(&args);
    let nodes_set = format!("topology.nodes={nodes}");
    let mut args = vec![builtin, "--set", "topology.preset=h800-cluster", "--set", &nodes_set];
    args.extend_from_slice(sets);
    let preset = run_json(&args);
    for key in keys {
        let (a, b) = (&written[*key], &preset[*key]);
        assert!(a.is_number(), "{builtin}: no {key} in {written}");
        assert_eq!(a, b, "{builtin}: {key} written out {a}, preset {b}");
    }
}

#[test]
fn a_written_out_fabric_runs_every_workload_kind_as_its_preset() {
    same_figures("alltoall-512xh800", 64, &[], &["time_us"]);
    same_figures("deepep-dispatch-ep64", 8, &[], &["time_us"]);
    same_figures("deepseek-v3-prefill-32xh800", 4, &[], &["iteration_time_ms"]);
    same_figures("deepseek-v3-decode-144xh800", 18, &[], &["iteration_time_ms"]);
    same_figures(
        "deepseek-v3-chunk-256xh800",
        4,
        &["--set", "model.layers=4", "--set", "parallel.pp=2", "--set", "parallel.ep=16"],
        &["step_time_s", "exposed_comm_s"],
    );
}

#[test]
fn moesim_topology_lists_the_tiers_of_a_written_out_fabric() {
    let o = moesim(&["topology", "alltoall-16xh800-explicit", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["gpus"], 16);
    // 2 NVSwitches + 16 NICs + 8 leaves + 32 spines.
    assert_eq!(v["switches"], 58);
    let tiers: Vec<(String, u64)> = v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tier"].as_str().unwrap().to_owned(), t["switches"].as_u64().unwrap()))
        .collect();
    let expected = [("nvswitch", 2), ("nic", 16), ("leaf", 8), ("spine", 32)];
    assert_eq!(tiers, expected.map(|(t, n)| (t.to_owned(), n)));
    // 16 x (NVLink + PCIe + NIC-leaf) + 8 x 32 leaf-spine, two directions.
    assert_eq!(v["directed_links"], 2 * (16 * 3 + 8 * 32));
    // The real cut (max-flow from ranks 0-7 to 8-15): each GPU's NIC, 400
    // Gb/s, under the PCIe link's 64 GB/s; the leaf-spine tier is
    // non-blocking. 8 x 50 GB/s.
    assert_eq!(v["bisection_includes_fabric"], true);
    let cut = v["bisection_bytes_per_s"].as_f64().unwrap();
    assert!((cut - 8.0 * 50e9).abs() < 1.0, "{cut}");
}

/// Direct all-to-all of `bytes` per rank between 2 GPUs of an h800-cluster
/// fabric of 2 one-GPU nodes on `radix`-port switches, with `sets`; its
/// time in µs.
fn pair_us(radix: u32, bytes: u64, sets: &[&str]) -> f64 {
    let radix = format!("topology.switch_radix={radix}");
    let bytes = format!("workload.bytes={bytes}");
    let mut args = vec![
        "alltoall-512xh800",
        "--set",
        "topology.nodes=2",
        "--set",
        "topology.gpus_per_node=1",
        "--set",
        &radix,
        "--set",
        "workload.ranks=2",
        "--set",
        &bytes,
    ];
    args.extend_from_slice(sets);
    run_json(&args)["time_us"].as_f64().unwrap()
}

/// Microseconds per MiB: the slope between two sizes (latency cancels).
fn us_per_mib(radix: u32, sets: &[&str]) -> f64 {
    (pair_us(radix, 64 << 20, sets) - pair_us(radix, 32 << 20, sets)) / 32.0
}

/// Two nodes of one GPU: with 2-port switches each node has its own leaf
/// (one NIC down, one uplink to the one spine), so the pair's flows cross
/// both leaves' uplinks; with 4-port switches both NICs sit on one leaf.
/// Oversubscription r makes each uplink 1/r of the 400 Gb/s port (thinner
/// uplinks), so across leaves the bottleneck is the uplink at 400/r Gb/s x
/// 0.905 and the time per byte grows by exactly r; inside a leaf it stays.
#[test]
fn oversubscription_slows_traffic_across_leaves_by_its_ratio_and_not_inside_a_leaf() {
    let across = us_per_mib(2, &[]);
    let across_25 = us_per_mib(2, &["--set", "topology.oversubscription=2.5"]);
    assert!((across_25 / across - 2.5).abs() < 1e-6, "{across} -> {across_25} µs/MiB, expected x2.5");
    let per_tier = us_per_mib(2, &["--set", "topology.oversubscription.leaf=2.5"]);
    assert!((per_tier - across_25).abs() < 1e-9 * across_25, "a number is the leaf tier's ratio");
    let inside = us_per_mib(4, &[]);
    let inside_25 = us_per_mib(4, &["--set", "topology.oversubscription=2.5"]);
    assert_eq!(inside, inside_25, "traffic inside a leaf crosses no uplink");
    // Two-layer fabrics have no spine uplinks.
    let o = moesim(&["run", "alltoall-512xh800", "--set", "topology.oversubscription.spine=2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("topology.oversubscription.spine"), "{}", stderr(&o));
}

/// A three-layer k = 16 fat-tree of 512 GPUs: the fabric's cut is k^3/8
/// core links of 400 Gb/s (25.6 TB/s), above the GPUs' injection bound
/// (256 x 50 GB/s = 12.8 TB/s); 8:1 thinner core uplinks make the cut
/// 3.2 TB/s, which then decides.
#[test]
fn fat_tree_bisection_falls_by_the_oversubscription() {
    let summary = |sets: &[&str]| {
        let mut args = vec!["topology", "alltoall-512xh800", "--set", "topology.preset=fat-tree", "--format", "json"];
        args.extend_from_slice(sets);
        let o = moesim(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["bisection_bytes_per_s"].as_f64().unwrap()
    };
    assert_eq!(summary(&[]), 256.0 * 50e9);
    let thin = summary(&["--set", "topology.oversubscription.spine=8"]);
    assert!((thin - 512.0 * 50e9 / 8.0).abs() < 1.0, "{thin}");
}

/// A small written-out fabric to break: 2 nodes of 2 GPUs, each node on a
/// switch, the two switches joined.
const SMALL: &str = r#"name = "t"
seed = 1

[hardware]
device = "h800"

[topology]
nodes = 2
gpus_per_node = 2

[[topology.switch]]
name = "sw{i:0..nodes}"
tier = "nvswitch"

[[topology.link]]
a = "n{n:0..nodes}.gpu{g:0..gpus_per_node}"
b = "sw{n}"
class = "nvlink"
gb_per_s = 200.0
latency_ns = 1000.0

[[topology.link]]
a = "sw0"
b = "sw1"
class = "infiniband"
gbit_per_s = 400.0
latency_ns = 500.0

[workload]
kind = "collective"
op = "all-reduce"
ranks = 4
bytes = 1048576
algorithm = "ring"
"#;

/// Runs a broken scenario: exit 2, no panic; its stderr.
fn rejected(test: &str, text: &str) -> String {
    let path = scenario_file(test, text);
    let o = moesim(&["run", path.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_small_written_out_fabric_runs_and_its_ring_follows_the_slow_link() {
    let path = scenario_file("explicit_small", SMALL);
    let v = run_json(&[path.to_str().unwrap()]);
    // A 4-rank ring all-reduce moves 2 x 3/4 of the bytes through each rank;
    // the ring crosses sw0-sw1 (50 GB/s) once each way, the bottleneck.
    let bound_us = 2.0 * 0.75 * 1048576.0 / 50e9 * 1e6;
    let t = v["time_us"].as_f64().unwrap();
    assert!(t > bound_us && t < 1.5 * bound_us + 50.0, "{t} µs against the 50 GB/s bound {bound_us}");
}

#[test]
fn bad_graphs_are_errors_at_their_line() {
    // A link to an unknown switch: line 24 is the second link's `b`.
    let err = rejected("explicit_unknown", &SMALL.replace("b = \"sw1\"", "b = \"sw7\""));
    assert!(err.contains("scenario.toml:24:5: topology.link[1].b: no GPU or switch is named `sw7`"), "{err}");
    // An unknown switch inside a pattern names the expansion and the pattern.
    let err = rejected("explicit_unknown_pattern", &SMALL.replace("b = \"sw{n}\"", "b = \"sw{n+1}\""));
    assert!(err.contains("topology.link[0].b: no GPU or switch is named `sw2` (from `sw{n+1}`)"), "{err}");
    // Disconnected: drop the inter-switch link.
    let err = rejected("explicit_disconnected", &SMALL.replace("b = \"sw1\"", "b = \"sw0\""));
    assert!(err.contains("topology.link[1]: `sw0` is linked to itself"), "{err}");
    let cut = SMALL.replace("a = \"sw0\"\nb = \"sw1\"", "a = \"n0.gpu0\"\nb = \"n0.gpu1\"");
    let err = rejected("explicit_cut", &cut);
    assert!(err.contains("topology.link: the graph is disconnected: n1.gpu0 (rank 2) cannot reach n0.gpu0"), "{err}");
    // Zero, negative and absurd rates (the Plausible ranges).
    for (rate, expected) in [
        ("0.0", "expected a positive number, found 0"),
        ("-400.0", "expected a positive number, found -400"),
        ("4e12", "expected a plausible value in [0.001, 1e7] Gb/s, found 4e12"),
    ] {
        let err = rejected("explicit_rate", &SMALL.replace("gbit_per_s = 400.0", &format!("gbit_per_s = {rate}")));
        assert!(err.contains(&format!("scenario.toml:26:14: topology.link[1].gbit_per_s: {expected}")), "{err}");
    }
    // Duplicate names: a switch declared twice, a switch named as a GPU.
    let dup = SMALL.replace("tier = \"nvswitch\"", "tier = \"nvswitch\"\n\n[[topology.switch]]\nname = \"sw1\"");
    let err = rejected("explicit_duplicate", &dup);
    assert!(err.contains("topology.switch[1].name: switch `sw1` is declared twice"), "{err}");
    let err = rejected("explicit_gpu_name", &SMALL.replace("name = \"sw{i:0..nodes}\"", "name = \"n0.gpu{i:0..2}\""));
    assert!(err.contains("topology.switch[0].name: `n0.gpu0` is a GPU's name"), "{err}");
    // A switch nothing links to; a bad pattern; a generated-only key.
    let lonely = SMALL.replace("tier = \"nvswitch\"", "tier = \"nvswitch\"\n\n[[topology.switch]]\nname = \"spare\"");
    let err = rejected("explicit_lonely", &lonely);
    assert!(err.contains("topology.switch[1].name: switch `spare` has no link"), "{err}");
    let err = rejected("explicit_pattern", &SMALL.replace("sw{n}", "sw{m}"));
    assert!(err.contains("unknown variable `m`"), "{err}");
    let err =
        rejected("explicit_radix", &SMALL.replace("gpus_per_node = 2\n", "gpus_per_node = 2\nswitch_radix = 64\n"));
    assert!(err.contains("topology.switch_radix: not used by an explicit topology"), "{err}");
    // An unknown link class is a parse error at its place.
    let err = rejected("explicit_class", &SMALL.replace("class = \"infiniband\"", "class = \"ethernet\""));
    assert!(err.contains("scenario.toml:25:9"), "{err}");
}
