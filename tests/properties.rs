//! Property test over every workload kind: random small scenarios (a
//! built-in with random values of its size and shape keys) never panic, and
//! a run that is accepted reports finite, non-negative times, rates and
//! throughputs. A value the checks refuse is fine; a panic, a NaN or a
//! negative time is not.

use proptest::prelude::*;
use serde_json::Value;

use moesim::{run_scenario, AppError, ScenarioRef};

/// Runs a built-in with overrides in-process; `None` when the overrides are
/// refused as input, the summary otherwise (a failed run fails the test).
fn run(builtin: &'static str, sets: Vec<String>) -> Option<serde_json::Map<String, Value>> {
    match run_scenario(&ScenarioRef::Builtin(builtin), &sets, &Default::default()) {
        Ok((summary, _)) => Some(summary),
        Err(AppError::Input(_)) => None,
        Err(e) => panic!("{builtin} {sets:?}: {e}"),
    }
}

/// Every number of the summary is finite, and times, sizes and rates are
/// not negative.
fn check(builtin: &str, sets: &[String], summary: &serde_json::Map<String, Value>) {
    for (k, v) in summary {
        let Some(x) = v.as_f64() else { continue };
        assert!(x.is_finite(), "{builtin} {sets:?}: {k} = {x}");
        let quantity =
            ["_us", "_ms", "_s", "_per_s", "_bytes", "_gib", "_tflops", "_gb_per_s", "_per_node", "_per_gpu"]
                .iter()
                .any(|u| k.ends_with(u));
        assert!(!quantity || x >= 0.0, "{builtin} {sets:?}: {k} = {x} is negative");
    }
    let t = summary["sim_time_s"].as_f64().unwrap();
    assert!(t >= 0.0, "{builtin} {sets:?}: sim_time_s = {t}");
}

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(values)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn collectives_of_any_op_size_and_group(
        op in one_of(&["all-reduce", "reduce-scatter", "all-gather", "all-to-all", "send-recv"]),
        ranks in 2u32..=8,
        bytes in 1u64..(1 << 30),
    ) {
        let algorithm = if op == "all-to-all" { "direct" } else { "ring" };
        let sets = vec![
            format!("workload.op={op}"),
            format!("workload.ranks={ranks}"),
            format!("workload.bytes={bytes}"),
            format!("workload.algorithm={algorithm}"),
        ];
        if let Some(s) = run("allreduce-8xh800", sets.clone()) {
            check("allreduce-8xh800", &sets, &s);
        }
    }

    #[test]
    fn moe_exchanges_of_any_size_and_skew(
        kind in one_of(&["moe-dispatch", "moe-combine"]),
        ranks in 2u32..=8,
        tokens in 1u32..=512,
        skew in 0.0f64..8.0,
    ) {
        let sets = vec![
            format!("workload.kind={kind}"),
            format!("workload.ranks={ranks}"),
            format!("workload.tokens={tokens}"),
            format!("workload.skew={skew}"),
        ];
        if let Some(s) = run("deepep-dispatch-ep8", sets.clone()) {
            check("deepep-dispatch-ep8", &sets, &s);
        }
    }

    #[test]
    fn gemms_of_any_shape(m in 1u64..20_000, n in 1u64..20_000, k in 1u64..20_000, groups in 1u64..8,
                          dtype in one_of(&["fp8", "bf16"]), layout in one_of(&["masked", "contiguous"])) {
        let sets = vec![
            format!("workload.m={m}"), format!("workload.n={n}"), format!("workload.k={k}"),
            format!("workload.groups={groups}"), format!("workload.dtype={dtype}"), format!("workload.layout={layout}"),
        ];
        if let Some(s) = run("grouped-gemm-masked-h800", sets.clone()) {
            check("grouped-gemm-masked-h800", &sets, &s);
        }
    }

    #[test]
    fn pipelines_of_any_schedule(
        schedule in one_of(&["1f1b", "zb1p", "dualpipe", "dualpipev"]),
        stages in 1u32..=8,
        microbatches in 1u32..=24,
        forward in 0.001f64..1e3,
    ) {
        let sets = vec![
            format!("workload.schedule={schedule}"),
            format!("workload.stages={stages}"),
            format!("workload.microbatches={microbatches}"),
            format!("workload.forward_us={forward}"),
        ];
        if let Some(s) = run("pipeline-1f1b", sets.clone()) {
            check("pipeline-1f1b", &sets, &s);
        }
    }

    #[test]
    fn inference_iterations_of_any_batch(
        prefill in any::<bool>(),
        batch in 1u32..=256,
        context in 1u32..=16_384,
        skew in 0.0f64..2.0,
    ) {
        let (builtin, sets) = if prefill {
            ("deepseek-v3-prefill-32xh800", vec![
                format!("workload.tokens_per_gpu={}", batch * 16),
                format!("workload.prompt_len={context}"),
                format!("workload.skew={skew}"),
            ])
        } else {
            ("deepseek-v3-decode-144xh800", vec![
                format!("workload.batch_per_gpu={batch}"),
                format!("workload.context_len={context}"),
                format!("workload.skew={skew}"),
            ])
        };
        if let Some(s) = run(builtin, sets.clone()) {
            check(builtin, &sets, &s);
        }
    }

    #[test]
    fn serving_at_any_small_load(
        rate in 0.1f64..400.0,
        input in 1u32..=16_384,
        output in 1u32..=2_000,
        prefill_units in 1u32..=3,
        chunking in one_of(&["tokens", "time"]),
    ) {
        let sets = vec![
            "workload.duration_s=2".to_owned(),
            format!("workload.rate_per_s={rate}"),
            format!("workload.input_len={input}"),
            format!("workload.output_len={output}"),
            format!("workload.prefill_units={prefill_units}"),
            format!("workload.prefill.chunking={chunking}"),
        ];
        if let Some(s) = run("deepseek-v3-serving-h800", sets.clone()) {
            check("deepseek-v3-serving-h800", &sets, &s);
        }
    }
}

proptest! {
    // A training step takes about half a second: fewer cases.
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn training_steps_of_any_small_batch_and_plan(
        sequences in 1u64..=32,
        schedule in one_of(&["1f1b", "zb1p", "dualpipe", "dualpipev"]),
        skew in 0.0f64..2.0,
    ) {
        let sets = vec![
            format!("workload.global_batch={}", sequences * 64),
            format!("parallel.schedule={schedule}"),
            format!("workload.skew={skew}"),
        ];
        if let Some(s) = run("deepseek-v3-chunk-256xh800", sets.clone()) {
            check("deepseek-v3-chunk-256xh800", &sets, &s);
        }
    }
}
