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

/// DeepSeek-V3 layers at full size in the profile's conditions (256 GPUs,
/// 4 MoE layers per stage, 16 micro-batches of 4,096 tokens).
fn chunk(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["deepseek-v3-chunk-256xh800"];
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

#[test]
fn the_step_runs_on_an_ascend_npu_cluster() {
    // No FP8 cube (the preset emulates it at the BF16 rate, and says so) and
    // HCCL on copy engines (comm_sms holds no AI cores).
    let v = chunk(&["--set", "hardware.device=ascend-910b"]);
    let h800 = chunk(&[]);
    let notes = v["notes"].to_string();
    assert!(notes.contains("FP8 GEMMs run at the BF16 rate") && notes.contains("copy engines"), "{notes}");
    // A 910B has under a third of an H800's dense BF16 rate (and no FP8): slower.
    assert!(f(&v, "step_time_s") > 2.0 * f(&h800, "step_time_s"), "{v}");
}

#[test]
fn what_ifs_move_the_step_the_right_way() {
    let base = chunk(&[]);
    let step = |v: &serde_json::Value| f(v, "step_time_s");
    // Half the InfiniBand bandwidth: slower, more exposed communication.
    let slow_ib = chunk(&["--set", "topology.ib_gbit_per_s=200"]);
    assert!(step(&slow_ib) > step(&base) && f(&slow_ib, "exposed_comm_s") > f(&base, "exposed_comm_s"));
    // Communication kernels holding more SMs slow the GEMMs beside them.
    let sms32 = chunk(&["--set", "parallel.comm_sms=32"]);
    assert!(step(&sms32) > step(&base));
    // Too few, and the all-to-all is SM-bound: slower again, more exposed.
    let sms8 = chunk(&["--set", "parallel.comm_sms=8"]);
    assert!(step(&sms8) > step(&base) && f(&sms8, "exposed_comm_s") > f(&base, "exposed_comm_s"), "{sms8}");
    // 1F1B cannot overlap a chunk's all-to-all with another chunk's compute.
    let f1b = chunk(&["--set", "parallel.schedule=1f1b"]);
    assert!(f(&f1b, "exposed_comm_s") > f(&base, "exposed_comm_s"), "{f1b}");
    // H20: a sixth of the tensor throughput.
    let h20 = chunk(&["--set", "hardware.device=h20"]);
    assert!(step(&h20) > 3.0 * step(&base));
}
