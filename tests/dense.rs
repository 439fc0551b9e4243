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

/// GPT 1.7B at sequence 16,384 on 4 nodes (32 A100), 64 sequences a step:
/// `cp = 1` (DP32) against `cp = 4` (DP8), by ring attention and by Llama
/// 3's all-gather.
fn long_context(extra: &[&str]) -> serde_json::Value {
    let mut v = vec![
        "topology.nodes=4",
        "parallel.pp=1",
        "model.max_context=32768",
        "workload.seq_len=16384",
        "workload.global_batch=64",
        "workload.recompute=\"none\"",
    ];
    v.extend_from_slice(extra);
    gpt(&v)
}

#[test]
fn context_parallelism_splits_activations_and_hides_the_ring_under_attention() {
    let whole = long_context(&["parallel.dp=32"]);
    let ring = long_context(&["parallel.cp=4", "parallel.dp=8"]);
    let gather = long_context(&["parallel.cp=4", "parallel.dp=8", "parallel.cp_comm=\"all-gather\""]);
    assert_eq!(ring["cp"], 4);
    // Each rank keeps the activations of a quarter of every sequence.
    let act = |v: &serde_json::Value| f(v, "memory_activations_gib");
    assert!((act(&ring) / act(&whole) - 0.25).abs() < 1e-9, "{} vs {}", act(&ring), act(&whole));
    assert_eq!(act(&ring), act(&gather));
    // The same replicas reduce the gradients (dp x cp = 32): optimizer shards alike.
    assert_eq!(f(&ring, "memory_optimizer_gib"), f(&whole, "memory_optimizer_gib"));
    // All-gather: every layer gathers K and V (24 heads x (96 + 96) x 2 bytes
    // per token) in the forward and again in the backward, and
    // reduce-scatters their gradients; each rank sends 3/4 of the gathered
    // 16,384 tokens per collective over NVLink (300 GB/s nominal), blocking.
    let gathered = 16384.0 * 24.0 * 192.0 * 2.0;
    let (layers, microbatches) = (24.0, 64.0 / 8.0);
    let blocking_s = 3.0 * layers * microbatches * 0.75 * gathered / 300e9;
    let exposed = |v: &serde_json::Value| f(v, "exposed_comm_s");
    assert!(
        exposed(&gather) - exposed(&whole) > blocking_s,
        "{} vs {} + {blocking_s}",
        exposed(&gather),
        exposed(&whole)
    );
    // The ring moves its chunks while the previous step computes: faster,
    // and some communication overlaps.
    assert!(f(&ring, "step_time_s") < f(&gather, "step_time_s"));
    assert!(f(&ring, "overlap_fraction") > 0.1, "{}", f(&ring, "overlap_fraction"));
    // Splitting a sequence costs something: cp = 1 is fastest here, and the
    // model FLOPs counted per token are the same.
    assert!(f(&whole, "step_time_s") < f(&ring, "step_time_s"));
    let per_token = |v: &serde_json::Value| f(v, "model_tflops_per_gpu") / f(v, "tokens_per_s_per_gpu");
    assert!((per_token(&ring) / per_token(&whole) - 1.0).abs() < 1e-6);
}

#[test]
fn bad_context_parallel_plans_name_the_key() {
    // 2,048 tokens do not cut into 2 x 3 chunks.
    let err = rejected(&["parallel.pp=1", "parallel.dp=2", "parallel.cp=3", "parallel.tp=1", "topology.nodes=1"]);
    assert!(err.contains("tp x cp x pp x dp"), "{err}");
    let err = rejected(&["parallel.pp=1", "parallel.dp=1", "parallel.cp=8", "workload.seq_len=2040"]);
    assert!(err.contains("workload.seq_len") && err.contains("multiple of 16"), "{err}");
    let err =
        rejected(&["parallel.pp=1", "parallel.dp=1", "parallel.cp=8", "workload.attention_kernel=\"materialized\""]);
    assert!(err.contains("parallel.cp") && err.contains("flash"), "{err}");
    let err = rejected(&["parallel.cp_comm=\"allgather\""]);
    assert!(err.contains("cp_comm") && err.contains("all-gather"), "{err}");
}
