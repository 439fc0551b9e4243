//! Dense-model training plans (issue 13): attention with materialised
//! scores (`[workload] attention_kernel`) and uneven pipeline stages
//! (`[parallel] stage_layers`, `first_last_stage_layers_fewer`), each
//! checked against a closed form or a direction, and their bad input.

use crate::common::{moesim, run_json, stderr};

/// GPT 1.7B (24 layers, 24 heads of 96, h = 2,304) on one 8-GPU A100 node,
/// sequence 2,048, one sequence per micro-batch.
fn gpt(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["gpt-1t-pretrain-3072xa100"];
    for s in ["model.preset=gpt-1.7b", "topology.nodes=1", "parallel.tp=1"].iter().chain(extra) {
        args.extend_from_slice(&["--set", s]);
    }
    run_json(&args)
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// Megatron-LM before FlashAttention: every layer writes `b x a x s^2` BF16
/// scores and the softmax and dropout read and write them (9 bytes per score
/// forward, 11 backward at least), and Korthikanti's Table 2 stores `5as`
/// bytes per token per layer for them where fused attention keeps `4a`.
#[test]
fn materialized_attention_costs_the_scores_in_time_and_memory() {
    let sets = ["parallel.pp=1", "parallel.dp=8", "workload.global_batch=8", "workload.recompute=\"none\""];
    let flash = gpt(&sets);
    let mut m = sets.to_vec();
    m.push("workload.attention_kernel=\"materialized\"");
    let mat = gpt(&m);
    let (a, s, layers) = (24.0, 2048.0, 24.0);
    let scores = a * s * s;
    let at_peak = layers * 20.0 * scores / 2.039e12;
    let slower = f(&mat, "step_time_s") - f(&flash, "step_time_s");
    assert!(slower > at_peak, "{slower} s slower, the score passes alone take {at_peak} s at the HBM peak");
    assert!(slower < 4.0 * at_peak, "{slower} s slower vs {at_peak} s of score passes");
    // One micro-batch in flight: 24 layers x 2,048 tokens x (5as - 4a) bytes.
    let more = (f(&mat, "memory_gib_per_gpu") - f(&flash, "memory_gib_per_gpu")) * (1u64 << 30) as f64;
    let want = layers * s * (5.0 * a * s - 4.0 * a);
    assert!((more / want - 1.0).abs() < 1e-3, "{more} more bytes vs Table 2's {want}");
    // The FLOPs counted are the same (Narayanan's eq. 3): only the time moves.
    assert!(f(&mat, "hardware_tflops_per_gpu") < f(&flash, "hardware_tflops_per_gpu"));
}

#[test]
fn uneven_stages_move_step_time_and_memory() {
    let base = ["parallel.pp=4", "parallel.dp=2", "workload.global_batch=16"];
    let with = |extra: &str| {
        let mut v = base.to_vec();
        v.push(extra);
        gpt(&v)
    };
    let even = gpt(&base);
    let explicit_even = with("parallel.stage_layers=[6, 6, 6, 6]");
    let llama = with("parallel.first_last_stage_layers_fewer=2");
    let explicit = with("parallel.stage_layers=[5, 7, 7, 5]");
    let lopsided = with("parallel.stage_layers=[3, 7, 7, 7]");
    // The shorthand is the explicit [5, 7, 7, 5].
    for k in ["step_time_s", "memory_gib_per_gpu"] {
        assert_eq!(f(&llama, k), f(&explicit, k), "{k}");
    }
    // The embedding and the head (a 51,200-word vocabulary) ride on the end
    // stages: one layer fewer each balances them (Llama 3's reason), seven
    // on three stages and three on the first does not.
    let t = |v: &serde_json::Value| f(v, "step_time_s");
    assert!(t(&explicit) < t(&explicit_even), "{} vs {}", t(&explicit), t(&explicit_even));
    assert!(t(&lopsided) > t(&explicit_even) * 1.05, "{} vs {}", t(&lopsided), t(&explicit_even));
    // The first stage keeps 4 micro-batches in flight, the second 3: moving
    // layers off the first lowers the peak (4 x 6 = 24 layer-activations
    // against 3 x 7 = 21), although the second holds more weights.
    assert!(f(&lopsided, "memory_gib_per_gpu") < f(&explicit_even, "memory_gib_per_gpu"));
    // The default split by cost beats six each too.
    assert!(t(&even) < t(&explicit_even));
}

fn rejected(extra: &[&str]) -> String {
    let mut args = vec!["run", "gpt-1t-pretrain-3072xa100"];
    for s in ["model.preset=gpt-1.7b", "topology.nodes=1", "parallel.tp=1", "parallel.pp=4", "parallel.dp=2"]
        .iter()
        .chain(extra)
    {
        args.extend_from_slice(&["--set", s]);
    }
    let o = moesim(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_stage_layers_name_the_key_and_the_sum() {
    let err = rejected(&["parallel.stage_layers=[6, 6, 6, 5]"]);
    assert!(err.contains("parallel.stage_layers") && err.contains("add up to 23") && err.contains("24"), "{err}");
    let err = rejected(&["parallel.stage_layers=[12, 12]"]);
    assert!(err.contains("parallel.stage_layers") && err.contains("2 counts for 4 model stages"), "{err}");
    let err = rejected(&["parallel.stage_layers=[0, 8, 8, 8]"]);
    assert!(err.contains("stage 0 has no layer"), "{err}");
    let err = rejected(&["parallel.first_last_stage_layers_fewer=3"]);
    assert!(err.contains("parallel.first_last_stage_layers_fewer") && err.contains("do not split evenly"), "{err}");
    let err = rejected(&["parallel.first_last_stage_layers_fewer=2", "parallel.stage_layers=[5, 7, 7, 5]"]);
    assert!(err.contains("found both"), "{err}");
    let err = rejected(&["workload.attention_kernel=\"unfused\""]);
    assert!(err.contains("attention_kernel") && err.contains("materialized"), "{err}");
}
