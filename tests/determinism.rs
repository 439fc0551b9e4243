//! Same inputs and seed, same bytes out.

use crate::common::*;

#[test]
fn two_runs_write_identical_files() {
    let dir = scratch("determinism");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let o = moesim(&[
            "run",
            "deepep-dispatch-ep64",
            "--set",
            "topology.nodes=2",
            "--set",
            "workload.ranks=16",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in ["summary.json", "summary.md", "timeline.csv", "resources.csv", "trace.json"] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs of the same scenario");
    }
}

#[test]
fn a_different_seed_changes_the_routing() {
    let v1 = run_json(&["deepep-dispatch-ep64", "--set", "topology.nodes=2", "--set", "workload.ranks=16"]);
    let v2 = run_json(&[
        "deepep-dispatch-ep64",
        "--set",
        "topology.nodes=2",
        "--set",
        "workload.ranks=16",
        "--set",
        "seed=7",
    ]);
    assert_ne!(v1["nvlink_bytes_per_rank"], v2["nvlink_bytes_per_rank"]);
}
