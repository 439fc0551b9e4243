//! Bad input to inference and serving: an unreachable SLO, a bad trace, a
//! context longer than the model's, a batch beyond the KV cache, misplaced
//! tables. Each is a clear error (exit 2, naming the key or the file and
//! line) or a warning with the best that could be done; never a panic.

use crate::common::*;

#[test]
fn an_unreachable_slo_says_so_with_the_best_found() {
    let o = moesim(&[
        "plan",
        "deepseek-v3-serving-h800",
        "--rate",
        "50",
        "--ttft-p99-ms",
        "5000",
        "--tpot-p99-ms",
        "2",
        "--duration-s",
        "30",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("no configuration meets the targets") && out.contains("the best found"), "{out}");
    let o = moesim(&["plan", "deepseek-v3-decode-144xh800", "--rate", "1", "--ttft-p99-ms", "1", "--tpot-p99-ms", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("needs a serving scenario"), "{}", stderr(&o));
}

#[test]
fn bad_trace_rows_name_the_file_and_line() {
    let dir = scratch("bad_trace");
    let trace = dir.join("t.jsonl");
    std::fs::write(
        &trace,
        "{\"timestamp\": 0, \"input_length\": 100, \"output_length\": 10}\n{\"timestamp\": 50, \"input_length\": 100, \"output_length\": 10}\n{\"timestamp\": 20, \"input_length\": 100, \"output_length\": 10}\n",
    )
    .unwrap();
    let set = format!("workload.trace={}", trace.display());
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", &set, "--set", "workload.arrivals=trace"]);
    assert!(err.contains("t.jsonl:3:1: timestamp: timestamps must not decrease"), "{err}");
    std::fs::write(&trace, "{\"timestamp\": -5, \"input_length\": 100, \"output_length\": 10}\n").unwrap();
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", &set, "--set", "workload.arrivals=trace"]);
    assert!(err.contains("t.jsonl:1:1: timestamp: expected milliseconds >= 0, found -5"), "{err}");
    let csv = dir.join("t.csv");
    std::fs::write(&csv, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,100,ten\n").unwrap();
    let set = format!("workload.trace={}", csv.display());
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", &set, "--set", "workload.arrivals=trace"]);
    assert!(err.contains("t.csv:2:1: GeneratedTokens: expected a whole number of tokens, found \"ten\""), "{err}");
}

#[test]
fn a_context_longer_than_the_model_supports_is_an_error_or_left_out() {
    let err = input_error(&["run", "deepseek-v3-decode-144xh800", "--set", "workload.context_len=200000"]);
    assert!(err.contains("workload.context_len") && err.contains("131072"), "{err}");
    let err = input_error(&["run", "deepseek-v3-prefill-32xh800", "--set", "workload.prompt_len=140000"]);
    assert!(err.contains("workload.prompt_len") && err.contains("131072"), "{err}");
    // Serving leaves such requests out with a warning; with none left, an error.
    let err = input_error(&[
        "run",
        "deepseek-v3-serving-h800",
        "--set",
        "workload.input_len=140000",
        "--set",
        "workload.duration_s=5",
    ]);
    assert!(err.contains("no request can be served") && err.contains("131072"), "{err}");
}

#[test]
fn a_batch_beyond_the_kv_cache_warns_and_does_not_fit() {
    let o = moesim(&["run", "deepseek-v3-decode-144xh800", "--set", "workload.context_len=32768", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["fits"], false);
    let notes: Vec<&str> = m["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert!(notes.iter().any(|n| n.starts_with("warning: does not fit") && n.contains("KV cache")), "{notes:?}");
}

#[test]
fn misplaced_or_impossible_unit_keys_are_errors() {
    let err = input_error(&["run", "deepseek-v3-decode-144xh800", "--set", "parallel.pp=2"]);
    assert!(err.contains("parallel.pp") && err.contains("no pipeline stages"), "{err}");
    let err = input_error(&["run", "deepseek-v3-decode-144xh800", "--set", "workload.redundant_experts=30"]);
    assert!(err.contains("workload.redundant_experts") && err.contains("144 GPUs"), "{err}");
    let err = input_error(&["run", "deepseek-v3-decode-144xh800", "--set", "model.preset=qwen-2.5-72b"]);
    assert!(err.contains("workload.mtp_acceptance") && err.contains("no MTP module"), "{err}");
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "parallel.ep=8"]);
    assert!(err.contains("parallel") && err.contains("[workload.prefill]"), "{err}");
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "workload.prefill.gpus=12"]);
    assert!(err.contains("workload.prefill.gpus") && err.contains("whole nodes"), "{err}");
    let err = input_error(&["run", "deepseek-v3-decode-144xh800", "--set", "parallel.ep=160"]);
    assert!(err.contains("parallel.ep") && err.contains("144"), "{err}");
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "workload.prefill.tokens_per_gpu=0"]);
    assert!(err.contains("workload.prefill.tokens_per_gpu") && err.contains(">= 1"), "{err}");
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "workload.prefill.context_parallel=33"]);
    assert!(err.contains("workload.prefill.context_parallel") && err.contains("32 GPUs"), "{err}");
    // A prefix-cache size: positive, at least a block, and only for traces with block ids.
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "workload.prefix_cache_gib=-1"]);
    assert!(err.contains("workload.prefix_cache_gib") && err.contains("> 0"), "{err}");
    let err = input_error(&["run", "deepseek-v3-serving-h800", "--set", "workload.prefix_cache_gib=64"]);
    assert!(err.contains("workload.prefix_cache_gib") && err.contains("block ids"), "{err}");
}
