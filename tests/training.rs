//! The training step end to end: the representative-rank simplification
//! against simulating every rank, schedules and what-ifs that must move the
//! figures the right way, and the memory model.

use crate::common::run_json;

/// A small DeepSeek-V3-shaped step: 4 MoE layers on 2 DualPipe devices,
/// EP16 over 2 nodes, DP16, 4 micro-batches of 1,024 tokens (32 GPUs).
const SMALL: &[&str] = &[
    "deepseek-v3-chunk-256xh800",
    "--set",
    "topology.nodes=4",
    "--set",
    "model.layers=4",
    "--set",
    "parallel.pp=2",
    "--set",
    "parallel.ep=16",
    "--set",
    "workload.seq_len=1024",
    "--set",
    "workload.global_batch=64",
];

fn run(extra: &[&str]) -> serde_json::Value {
    let mut args = SMALL.to_vec();
    args.extend_from_slice(extra);
    run_json(&args)
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn representative_ranks_match_simulating_every_rank() {
    for skew in ["0", "0.6"] {
        let rep = run(&["--set", &format!("workload.skew={skew}")]);
        let all = run(&["--set", &format!("workload.skew={skew}"), "--set", "workload.simulate=all"]);
        assert_eq!(f(&rep, "simulated_ranks"), 2.0);
        assert_eq!(f(&all, "simulated_ranks"), 32.0);
        let (a, b) = (f(&rep, "step_time_s"), f(&all, "step_time_s"));
        println!("skew {skew}: representative {a:.6} s, all ranks {b:.6} s ({:+.2}%)", (a / b - 1.0) * 100.0);
        // The representative mirrors the critical rank and the most loaded
        // expert rows, so it may only be slower, and by little.
        assert!(a >= b * 0.99 && a <= b * 1.05, "skew {skew}: representative {a}, all {b}");
    }
}
