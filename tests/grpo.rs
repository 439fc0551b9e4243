//! `kind = "grpo"`: a GRPO iteration's phases add up, the straggler tail
//! grows with the spread of generation lengths and partial rollouts cut it,
//! the rollout engine's host time, the host offload and the log-probabilities
//! in the training layout cost what they say,
//! the two placements differ where they should (sync, pools), the same seed
//! gives the same figures, and bad input is a located error (exit 2).

use crate::common::*;

/// The small built-in (Llama 3.1 8B on 16 H100) with fewer prompts.
const SMALL: &str = "llama-3.1-8b-grpo-16xh100";

fn run(sets: &[&str]) -> serde_json::Value {
    let mut args = vec![SMALL, "--set", "workload.prompts=8", "--set", "workload.optimizer_steps=1"];
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    run_json(&args)
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn run_err(sets: &[&str]) -> String {
    let mut args = vec!["run", SMALL];
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    let o = moesim(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn grpo_phases_add_up_to_the_iteration() {
    let v = run(&[]);
    let sum = f(&v, "rollout_s") + f(&v, "scoring_s") + f(&v, "update_s") + f(&v, "sync_s") + f(&v, "offload_s");
    assert!((f(&v, "iteration_time_s") - sum).abs() < 1e-6 * sum, "{v}");
    for k in ["rollout_s", "scoring_s", "update_s", "sync_s", "offload_s"] {
        assert!(f(&v, k) > 0.0, "{k}: {v}");
    }
    // 8 prompts x 32 samples; every token generated counted once.
    assert_eq!(v["samples"], 256);
    let tokens = f(&v, "generated_tokens");
    assert!((f(&v, "generated_tokens_per_s") - tokens / f(&v, "iteration_time_s")).abs() < 1e-6 * tokens);
    // The last sample finishes at the end of the rollout, after the p90.
    assert!(f(&v, "rollout_p90_finish_s") < f(&v, "rollout_s"), "{v}");
    assert!(f(&v, "update_mfu_bf16_peak") > 0.05 && f(&v, "update_mfu_bf16_peak") < 1.0, "{v}");
}

/// The rollout engine's host time per step, the hand-over through host
/// memory and the log-probabilities in the training layout, each against
/// the run without it.
#[test]
fn grpo_framework_mechanisms_cost_what_they_say() {
    let v = run(&[]);
    let bare =
        run(&["workload.rollout.step_cpu_ms=0", "workload.host_offload=false", "workload.logprob_layout=\"rollout\""]);
    // Every generated token of the longest sample is one engine step of
    // at least 4 ms of host time (more steps: prompts, the batch's others).
    let steps = f(&v, "response_len_max_tokens");
    assert!(f(&v, "rollout_s") - f(&bare, "rollout_s") >= 0.004 * steps * 0.999, "{v} {bare}");
    // The offload moves its bytes at the topology's PCIe rate (64 GB/s).
    assert!((f(&v, "offload_s") - f(&v, "offload_bytes_per_gpu") / 64e9).abs() < 1e-6, "{v}");
    // ... more than the rollout's weights twice (vLLM slept and woken).
    assert!(f(&v, "offload_bytes_per_gpu") > 2.0 * f(&v, "sync_weights_gib_per_gpu") * (1u64 << 30) as f64);
    assert_eq!(f(&bare, "offload_s"), 0.0);
    // Two passes (reference, old policy), each a quarter of a step of the
    // same tokens under full recomputation.
    assert!((f(&v, "scoring_s") - 2.0 * f(&v, "update_s") / 4.0).abs() < 0.02 * f(&v, "scoring_s"), "{v}");
    assert!(f(&bare, "scoring_s") != f(&v, "scoring_s"));
}

#[test]
fn grpo_straggler_tail_grows_with_the_spread_and_partial_rollouts_cut_it() {
    let alike = run(&["workload.response_len_sigma=0"]);
    let spread = run(&["workload.response_len_sigma=1.0"]);
    // Every sample alike: no tail to speak of, nothing for partial rollouts
    // to save beyond noise.
    assert!(f(&alike, "rollout_tail_fraction") < 0.1, "{alike}");
    assert!(f(&spread, "rollout_tail_fraction") > 0.3, "{spread}");
    assert!(f(&spread, "rollout_s") > f(&alike, "rollout_s"), "the longest sample sets the rollout");
    assert!(f(&spread, "response_len_max_tokens") > 2.0 * f(&spread, "response_len_mean_tokens"));
    // A budget of 512 tokens per iteration cuts the long tail.
    let partial = run(&["workload.response_len_sigma=1.0", "workload.partial_rollout_tokens=512"]);
    assert!(f(&partial, "partial_rollout_saving_s") > 0.2 * f(&partial, "rollout_s"), "{partial}");
    assert!(f(&partial, "partial_iteration_time_s") < f(&partial, "iteration_time_s"));
}

#[test]
fn grpo_placements_differ_in_pools_and_sync() {
    let colocated = run(&[]);
    let apart = run(&["workload.placement=\"disaggregated\"", "workload.rollout_gpus=8", "parallel.pp=1"]);
    assert_eq!(apart["rollout_gpus"], 8);
    assert_eq!(apart["training_gpus"], 8);
    assert!(apart["one_step_off_policy_iteration_time_s"].is_number(), "{apart}");
    assert!(colocated.get("one_step_off_policy_iteration_time_s").is_none());
    // Colocated: a reshard inside a node over NVLink; apart: the whole model
    // to every rollout GPU over InfiniBand, slower.
    assert!(f(&apart, "sync_s") > f(&colocated, "sync_s"), "{apart} {colocated}");
    // Each pool is idle while the other works.
    assert!(f(&apart, "rollout_gpus_busy_fraction") < 0.95);
    assert!(f(&apart, "training_gpus_busy_fraction") < 0.95);
    let busy = f(&apart, "rollout_gpus_busy_fraction") + f(&apart, "training_gpus_busy_fraction");
    assert!(busy < 1.0, "{apart}");
}

#[test]
fn grpo_is_deterministic_and_the_seed_draws_the_lengths() {
    let a = run(&[]);
    let b = run(&[]);
    // Everything but the wall-clock figure.
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("wall_s");
        v
    };
    assert_eq!(strip(&a), strip(&b));
    let c = run(&["seed=2"]);
    assert_ne!(a["generated_tokens"], c["generated_tokens"]);
}

#[test]
fn grpo_bad_input_is_located() {
    let err = run_err(&["workload.samples_per_prompt=0"]);
    assert!(err.contains("workload.samples_per_prompt: expected an integer >= 1, found 0"), "{err}");
    let err = run_err(&["workload.rollout_gpus=8"]);
    assert!(err.contains("workload.rollout_gpus: colocated rollout runs on every GPU"), "{err}");
    let err = run_err(&["workload.placement=\"disaggregated\""]);
    assert!(err.contains("workload.rollout_gpus: disaggregated placement needs"), "{err}");
    let err = run_err(&["workload.placement=\"disaggregated\"", "workload.rollout_gpus=16"]);
    assert!(err.contains("workload.rollout_gpus: expected between 1 and 15"), "{err}");
    let err = run_err(&["workload.response_len_max=200000"]);
    assert!(err.contains("workload.response_len_max: prompt_len + response_len_max"), "{err}");
    let err = run_err(&["workload.response_len_sigma=-1"]);
    assert!(err.contains("workload.response_len_sigma"), "{err}");
    let err = run_err(&["workload.rollout.gpus=3"]);
    assert!(err.contains("workload.rollout.gpus: expected a divisor of the 16 rollout GPUs"), "{err}");
    let err = run_err(&["workload.rollout.step_cpu_ms=-1", "workload.host_copy_gb_per_s=0"]);
    assert!(err.contains("workload.rollout.step_cpu_ms: expected 0 to 1000 ms"), "{err}");
    assert!(err.contains("workload.host_copy_gb_per_s: expected a rate"), "{err}");
    let err = run_err(&["workload.bogus=1"]);
    assert!(err.contains("bogus"), "{err}");
}

/// The README's placement table: the built-in colocated on 512 H800, and
/// split into 256 rollout and 256 training GPUs (EP16 so the training
/// pool's 16 data-parallel ranks tile its expert groups).
#[test]
fn readme_grpo_placements_are_the_binary_output() {
    let rows: Vec<Vec<String>> = [
        ("", "colocated, 512 GPUs"),
        (
            "workload.placement=\"disaggregated\" workload.rollout_gpus=256 parallel.ep=16",
            "disaggregated, 256 rollout + 256 training",
        ),
    ]
    .iter()
    .map(|&(set, label)| {
        let mut args = vec!["deepseek-v3-grpo"];
        args.extend(set.split_whitespace().flat_map(|s| ["--set", s]));
        let v = run_json(&args);
        let g = |k: &str| f(&v, k);
        let off_policy = v["one_step_off_policy_iteration_time_s"].as_f64();
        vec![
            label.to_owned(),
            format!("{:.0}", g("iteration_time_s")),
            format!("{:.0}", g("rollout_s")),
            format!("{:.0}", g("scoring_s")),
            format!("{:.0}", g("update_s")),
            format!("{:.1}", g("sync_s")),
            format!("{:.0} ({:.0} %)", g("rollout_tail_s"), 100.0 * g("rollout_tail_fraction")),
            format!("{:.0}", g("partial_iteration_time_s")),
            off_policy.map_or("—".into(), |s| format!("{s:.0}")),
            format!("{:.0}K", g("generated_tokens_per_s") / 1e3),
            format!(
                "{:.0} % / {:.0} %",
                100.0 * g("rollout_gpus_busy_fraction"),
                100.0 * g("training_gpus_busy_fraction")
            ),
        ]
    })
    .collect();
    crate::readme::check_region(
        "grpo-placements",
        &crate::readme::table(
            &[
                "placement",
                "iteration s",
                "rollout s",
                "scoring s",
                "update s",
                "sync s",
                "tail after p90 s",
                "with partial rollouts s",
                "one-step off-policy s",
                "generated tok/s",
                "busy rollout / training GPUs",
            ],
            &["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"],
            &rows,
        ),
    );
}
