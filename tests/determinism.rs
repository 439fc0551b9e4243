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

/// Runs `moesim run ARGS --out DIR` with one rayon thread and with two, and
/// checks that `files` are byte-identical between the two.
fn same_files_at_one_and_two_threads(name: &str, args: &[&str], files: &[&str]) {
    let dir = scratch(name);
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.join(format!("threads-{threads}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_moesim"))
            .env("RAYON_NUM_THREADS", threads)
            .arg("run")
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("moesim runs");
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(out);
    }
    for f in files {
        let x = std::fs::read(outs[0].join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let y = std::fs::read(outs[1].join(f)).unwrap();
        assert!(x == y, "{f} differs between 1 and 2 threads");
    }
}

/// The direct all-to-all routes blocks of senders on rayon's threads: one
/// thread and two write the same files.
#[test]
fn one_and_two_threads_write_identical_files() {
    same_files_at_one_and_two_threads(
        "determinism-threads",
        &[
            "alltoall-512xh800",
            "--set",
            "topology.preset=multi-plane-fat-tree",
            "--set",
            "topology.nodes=16",
            "--set",
            "workload.ranks=128",
        ],
        &["summary.json", "timeline.csv", "resources.csv", "trace.json.gz"],
    );
}

/// The direct all-to-all grouped by node pair routes blocks of source
/// nodes on rayon's threads: one thread and two write the same files.
#[test]
fn a_grouped_all_to_all_writes_identical_files_at_one_and_two_threads() {
    same_files_at_one_and_two_threads(
        "determinism-grouped-threads",
        &[
            "alltoall-512xh800",
            "--set",
            "topology.preset=multi-plane-fat-tree",
            "--set",
            "topology.nodes=80",
            "--set",
            "workload.ranks=640",
            "--set",
            "workload.flow_grouping=\"node-pair\"",
        ],
        &["summary.json", "timeline.csv", "resources.csv", "trace.json.gz"],
    );
}

/// A serving run records its outcomes (latency sketches, `requests.csv`) on
/// a second thread when it has one: one thread and two write the same files.
#[test]
fn serving_writes_identical_files_at_one_and_two_threads() {
    same_files_at_one_and_two_threads(
        "determinism-serving-threads",
        &["deepseek-v3-serving-h800", "--set", "workload.duration_s=40"],
        &[
            "summary.json",
            "requests.csv",
            "ttft_cdf.svg",
            "tpot_cdf.svg",
            "serving_timeline.svg",
            "timeline.csv",
            "resources.csv",
        ],
    );
}
