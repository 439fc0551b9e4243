//! `workload.flow_grouping = "node-pair"`: the direct all-to-all on the
//! multi-plane fat-tree as weighted flows, against the exact exchange, and
//! its bad inputs.

use crate::common::{input_error, run_json};

fn all_to_all(gpus: u32, grouping: &str, extra: &[&str]) -> serde_json::Value {
    let nodes = format!("topology.nodes={}", gpus / 8);
    let ranks = format!("workload.ranks={gpus}");
    let grouping = format!("workload.flow_grouping=\"{grouping}\"");
    let mut args = vec![
        "alltoall-512xh800",
        "--set",
        "topology.preset=multi-plane-fat-tree",
        "--set",
        &nodes,
        "--set",
        &ranks,
        "--set",
        &grouping,
    ];
    args.extend_from_slice(extra);
    run_json(&args)
}

/// The grouped exchange's time against the exact one's at `gpus`, as a
/// relative error, after checking the grouped run says it is grouped.
fn grouping_error(gpus: u32) -> f64 {
    let exact = all_to_all(gpus, "exact", &[]);
    let grouped = all_to_all(gpus, "node-pair", &[]);
    assert_eq!(grouped["flow_grouping"], "node-pair");
    assert!(exact.get("flow_grouping").is_none(), "the default adds no metric");
    let (t_exact, t_grouped) = (exact["time_us"].as_f64().unwrap(), grouped["time_us"].as_f64().unwrap());
    let error = t_grouped / t_exact - 1.0;
    eprintln!("{gpus} GPUs: grouped {t_grouped} us vs exact {t_exact} us: {:+.2} %", error * 100.0);
    error
}

/// The README's bound: on the multi-plane fat-tree preset the grouped
/// exchange's time is the exact one's up to +6 % (measured: +0.0 % at 512
/// and 1,024 GPUs, +3.5 % at 2,048, +5.5 % at 4,096 and 8,192): it errs high, as G
/// members on one spine collide more than G members hashed apart. Checked
/// at 2,048 GPUs, where the spines matter; with far fewer flows.
#[test]
fn node_pair_grouping_is_within_its_bound_of_the_exact_all_to_all() {
    let error = grouping_error(2048);
    assert!((0.0..=0.06).contains(&error), "{:+.2} %", error * 100.0);
}

/// The same bound at 4,096 GPUs, the size issue #20 times the solver at
/// (the exact run: 16.8M flows, about 2 GiB and 9-10 s on one core; the
/// grouped one about 2 s). Measured +5.51 %: the closest any checked size
/// comes to the bound.
#[test]
fn node_pair_grouping_is_within_its_bound_at_4096_gpus() {
    let error = grouping_error(4096);
    assert!((0.0..=0.06).contains(&error), "{:+.2} %", error * 100.0);
}

/// Where no spine is contended (one leaf per plane: every member's route is
/// fixed but for its plane), grouping loses nothing: the members per plane
/// and per NVLink route are the exact exchange's, so the time is the same.
#[test]
fn node_pair_grouping_is_exact_without_spine_choices() {
    let exact = all_to_all(256, "exact", &[]);
    let grouped = all_to_all(256, "node-pair", &[]);
    assert_eq!(exact["time_us"], grouped["time_us"]);
}

#[test]
fn bad_flow_grouping_is_refused_naming_the_key() {
    let base = ["run", "alltoall-512xh800", "--set", "topology.preset=multi-plane-fat-tree"];
    for (set, want) in [
        (vec!["workload.flow_grouping=\"pairs\""], "exact"),
        (vec!["workload.flow_grouping=\"node-pair\"", "workload.algorithm=\"ring\""], "algorithm = \"direct\""),
        (vec!["workload.flow_grouping=\"node-pair\"", "workload.ranks=500"], "multiple of 8"),
        (vec!["workload.flow_grouping=\"node-pair\"", "topology.preset=\"h800-cluster\""], "multi-plane-fat-tree"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        for s in &set {
            args.extend(["--set", s]);
        }
        let err = input_error(&args);
        assert!(err.contains("workload.flow_grouping") && err.contains(want), "{set:?}: {err}");
    }
}

/// 16,384 GPUs exactly is refused before allocating, and the message names
/// the grouping that fits; grouped, the estimate fits in 8 GiB.
#[test]
fn the_exact_16384_gpu_all_to_all_is_refused_suggesting_grouping() {
    let args = [
        "run",
        "alltoall-512xh800",
        "--set",
        "topology.preset=multi-plane-fat-tree",
        "--set",
        "topology.nodes=2048",
        "--set",
        "workload.ranks=16384",
    ];
    let mut exact = args.to_vec();
    exact.extend(["--max-memory-gib", "8"]);
    let err = input_error(&exact);
    assert!(err.contains("workload.flow_grouping = \"node-pair\""), "{err}");
    let mut grouped = args.to_vec();
    grouped.extend(["--set", "workload.flow_grouping=\"node-pair\"", "--max-memory-gib", "0.5"]);
    let err = input_error(&grouped);
    assert!(err.contains("grouped by node pair"), "the grouped estimate counts grouped flows: {err}");
}
