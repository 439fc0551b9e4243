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
    for f in ["summary.json", "summary.md", "timeline.csv", "resources.csv", "trace.json.gz", "scenario.resolved.toml"]
    {
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

#[test]
fn a_training_step_writes_identical_files_and_plots() {
    let dir = scratch("determinism_training");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let small = [
        "--set",
        "model.layers=4",
        "--set",
        "parallel.pp=2",
        "--set",
        "topology.nodes=16",
        "--set",
        "workload.global_batch=256",
    ];
    for out in [&a, &b] {
        let mut args = vec!["run", "deepseek-v3-chunk-256xh800", "--out", out.to_str().unwrap()];
        args.extend_from_slice(&small);
        let o = moesim(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for f in [
        "summary.json",
        "timeline.csv",
        "resources.csv",
        "trace.json.gz",
        "timeline.png",
        "timeline.svg",
        "breakdown.png",
        "breakdown.svg",
    ] {
        let x = std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs of the same scenario");
    }
}

/// The direct all-to-all routes blocks of senders on rayon's threads: one
/// thread and two write the same files.
#[test]
fn one_and_two_threads_write_identical_files() {
    let dir = scratch("determinism-threads");
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.join(format!("threads-{threads}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_moesim"))
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "run",
                "alltoall-512xh800",
                "--set",
                "topology.preset=multi-plane-fat-tree",
                "--set",
                "topology.nodes=16",
                "--set",
                "workload.ranks=128",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .expect("moesim runs");
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(out);
    }
    for f in ["summary.json", "timeline.csv", "resources.csv", "trace.json.gz"] {
        let x = std::fs::read(outs[0].join(f)).unwrap();
        let y = std::fs::read(outs[1].join(f)).unwrap();
        assert!(x == y, "{f} differs between 1 and 2 threads");
    }
}

/// A serving run records its outcomes (latency sketches, `requests.csv`) on
/// a second thread when it has one: one thread and two write the same files.
#[test]
fn serving_writes_identical_files_at_one_and_two_threads() {
    let dir = scratch("determinism-serving-threads");
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.join(format!("threads-{threads}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_moesim"))
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "run",
                "deepseek-v3-serving-h800",
                "--set",
                "workload.duration_s=40",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .expect("moesim runs");
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(out);
    }
    for f in ["summary.json", "requests.csv", "ttft_cdf.svg", "tpot_cdf.svg", "timeline.svg"] {
        let x = std::fs::read(outs[0].join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let y = std::fs::read(outs[1].join(f)).unwrap();
        assert!(x == y, "{f} differs between 1 and 2 threads");
    }
}
