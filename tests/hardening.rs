//! Regression tests for the hardening audit (issue 18), one per defect and
//! named after it: each input once gave a wrong answer with exit 0, a hang,
//! unbounded memory, a panic or mixed output folders; each must now be a
//! clear error (exit 2, naming the key or file) or a bounded, correct run.

use std::path::Path;

use crate::common::*;

#[test]
fn time_overflow_a_year_between_trace_rows_is_an_error_naming_the_trace() {
    let dir = scratch("hardening_year_trace");
    let trace = dir.join("year.csv");
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2024-11-16 18:15:46.6805900,374,44\n",
    )
    .unwrap();
    let set = format!("workload.trace={}", trace.display());
    let err = input_error(&[
        "run",
        "deepseek-v3-serving-h800",
        "--set",
        &set,
        "--set",
        "workload.arrivals=trace",
        "--set",
        "workload.duration_s=1e9",
    ]);
    assert!(err.contains("workload.trace") && err.contains("time range"), "{err}");
}

#[test]
fn time_overflow_an_absurd_link_latency_is_refused_by_its_key() {
    let err = input_error(&["run", "alltoall-512xh800", "--set", "topology.ib_latency_ns=1e18"]);
    assert!(err.contains("topology.ib_latency_ns") && err.contains("plausible"), "{err}");
}

#[test]
fn trace_length_overflow_the_impossible_request_is_left_out_not_wrapped() {
    let dir = scratch("hardening_length_overflow");
    let trace = dir.join("big.jsonl");
    std::fs::write(
        &trace,
        "{\"timestamp\": 0, \"input_length\": 18446744073709551615, \"output_length\": 1}\n\
         {\"timestamp\": 1, \"input_length\": 100, \"output_length\": 10}\n",
    )
    .unwrap();
    let set = format!("workload.trace={}", trace.display());
    let v = run_json(&["deepseek-v3-serving-h800", "--set", &set, "--set", "workload.arrivals=trace"]);
    assert_eq!(v["requests"], 1, "{v}");
    let notes = v["notes"].to_string();
    assert!(notes.contains("cannot be served") && notes.contains("18446744073709551615"), "{notes}");
}

#[test]
fn trace_length_overflow_a_huge_input_scale_is_left_out_not_wrapped() {
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/Azure+AzurePublicDataset/data/AzureLLMInferenceTrace_conv.csv"
    );
    if !Path::new(trace).exists() {
        panic!("{trace} is missing: tests read ../shared beside the checkout");
    }
    let o = moesim(&[
        "run",
        "deepseek-v3-serving-h800",
        "--set",
        &format!("workload.trace={trace}"),
        "--set",
        "workload.duration_s=10",
        "--set",
        "workload.rate_per_s=10",
        "--set",
        "workload.input_scale=1e30",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no request can be served") && err.contains("more than the model"), "{err}");
}

#[test]
fn skew_5_finishes_with_topk_distinct_experts() {
    // A steep Zipf skew once spun in rejection sampling; now the last
    // experts of a token come from what is left.
    for skew in ["5", "50", "1e300"] {
        let v = run_json(&["deepep-dispatch-ep8", "--set", &format!("workload.skew={skew}")]);
        let t = v["time_us"].as_f64().unwrap();
        assert!(t.is_finite() && t > 0.0, "skew {skew}: {v}");
    }
}

#[test]
fn memory_without_bound_is_refused_before_allocating_naming_the_key() {
    for (args, key) in [
        (vec!["run", "deepseek-v3-serving-h800", "--set", "workload.rate_per_s=1e5"], "workload.rate_per_s"),
        (
            vec!["plan", "deepseek-v3-serving-h800", "--rate", "1e308", "--ttft-p99-ms", "2000", "--tpot-p99-ms", "50"],
            "--rate",
        ),
        (
            vec!["run", "alltoall-512xh800", "--set", "topology.nodes=8192", "--set", "workload.ranks=8"],
            "topology.nodes",
        ),
        (
            vec!["run", "alltoall-4096xh800", "--set", "topology.nodes=2048", "--set", "workload.ranks=16384"],
            "workload.ranks",
        ),
        (vec!["run", "deepseek-v3-chunk-256xh800", "--set", "workload.global_batch=15360000"], "workload.global_batch"),
    ] {
        let mut args = args.clone();
        args.extend(["--max-memory-gib", "8"]);
        let err = input_error(&args);
        assert!(err.contains(key) && err.contains("GiB"), "{args:?}: {err}");
    }
    // The limit is the user's to raise, and it is checked.
    let v = run_json(&["alltoall-512xh800", "--max-memory-gib", "1"]);
    assert!(v["time_us"].as_f64().unwrap() > 0.0);
    let err = input_error(&["run", "alltoall-512xh800", "--max-memory-gib", "0.0001"]);
    assert!(err.contains("--max-memory-gib"), "{err}");
    let err = input_error(&["run", "gemm-h800", "--max-memory-gib=-1"]);
    assert!(err.contains("expected a positive number of GiB"), "{err}");
}

#[test]
fn extreme_device_and_fabric_values_are_refused_by_key() {
    for (set, key) in [
        ("hardware.launch_overhead_us=1e14", "hardware.launch_overhead_us"),
        ("hardware.bf16_tflops=1e-12", "hardware.bf16_tflops"),
        ("topology.ib_gbit_per_s=5e-324", "topology.ib_gbit_per_s"),
        ("topology.nvlink_latency_ns=1e18", "topology.nvlink_latency_ns"),
    ] {
        let err = input_error(&["run", "deepep-dispatch-ep64", "--set", set]);
        assert!(err.contains(key) && err.contains("plausible"), "{set}: {err}");
        assert!(!err.contains("0.000000000000"), "numbers in scientific notation: {err}");
    }
}

#[test]
fn plan_with_max_units_0_is_an_input_error_not_a_panic() {
    let err = input_error(&[
        "plan",
        "deepseek-v3-serving-h800",
        "--rate",
        "200",
        "--ttft-p99-ms",
        "2000",
        "--tpot-p99-ms",
        "50",
        "--duration-s",
        "2",
        "--max-units",
        "0",
    ]);
    assert!(err.contains("--max-units"), "{err}");
}

#[test]
fn out_is_checked_before_the_run() {
    let dir = scratch("hardening_out_file");
    let file = dir.join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let err = input_error(&[
        "sweep",
        "pipeline-1f1b",
        "--vary",
        "workload.microbatches=4,8",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn out_refuses_a_folder_moesim_did_not_write_unless_forced() {
    let dir = scratch("hardening_out_foreign").join("mine");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("thesis.tex"), "precious").unwrap();
    let err = input_error(&["run", "pipeline-1f1b", "--out", dir.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    assert!(dir.join("thesis.tex").exists());
    let o = moesim(&["run", "pipeline-1f1b", "--out", dir.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("summary.json").exists() && !dir.join("thesis.tex").exists());
}

#[test]
fn out_is_replaced_as_a_whole_never_mixing_two_runs() {
    let dir = scratch("hardening_out_replace").join("out");
    let o = moesim(&["run", "gemm-h800", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("roofline.png").exists());
    // A stale staging folder of a dead process is cleaned up on the next run.
    let stale = dir.parent().unwrap().join(".out.moesim-staging-4000000000");
    std::fs::create_dir_all(&stale).unwrap();
    let o = moesim(&["run", "pipeline-1f1b", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.join("roofline.png").exists(), "an earlier run's file stayed beside the new ones");
    assert!(dir.join("summary.json").exists());
    assert!(!stale.exists(), "stale staging folder left behind");
    let left: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["out".to_owned()], "{left:?}");
}

#[test]
#[cfg(unix)]
fn special_files_as_traces_and_scenarios_are_refused() {
    let err = input_error(&[
        "run",
        "deepseek-v3-serving-h800",
        "--set",
        "workload.trace=/dev/zero",
        "--set",
        "workload.trace_format=azure-csv",
    ]);
    assert!(err.contains("not a regular file"), "{err}");
    let dir = scratch("hardening_fifo");
    let fifo = dir.join("trace.csv");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if made {
        let err =
            input_error(&["run", "deepseek-v3-serving-h800", "--set", &format!("workload.trace={}", fifo.display())]);
        assert!(err.contains("not a regular file"), "{err}");
    }
    let err = input_error(&["run", "/dev/zero"]);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn weak_messages_a_missing_device_file_keeps_its_cause() {
    let err = input_error(&["run", "gemm-h800", "--set", "hardware.device=no-such-device.toml"]);
    assert!(err.contains("no-such-device.toml") && err.contains("No such file"), "{err}");
}

#[test]
fn weak_messages_a_syntax_error_in_a_device_file_has_its_line_and_column() {
    let dir = scratch("hardening_device_syntax");
    let device = dir.join("dev.toml");
    std::fs::write(&device, "name = \"x\"\nsms = = 3\n").unwrap();
    let err = input_error(&["run", "gemm-h800", "--set", &format!("hardware.device={}", device.display())]);
    assert!(err.contains("dev.toml:2:7"), "{err}");
}

#[test]
fn weak_messages_a_positive_but_too_large_time_says_so() {
    let err = input_error(&["run", "pipeline-1f1b", "--set", "workload.forward_us=1e13"]);
    assert!(err.contains("workload.forward_us") && err.contains("plausible") && !err.contains("positive"), "{err}");
}

#[test]
fn weak_messages_every_bad_set_type_is_reported_not_only_the_first() {
    let err = input_error(&[
        "run",
        "allreduce-8xh800",
        "--set",
        "workload.ranks=abc",
        "--set",
        "workload.bytes=xyz",
        "--set",
        "topology.nodes=q",
    ]);
    for key in ["workload.ranks=abc", "workload.bytes=xyz", "topology.nodes=q"] {
        assert!(err.contains(key), "{key} not reported: {err}");
    }
}

#[test]
fn trace_importers_take_arbitrary_bytes_without_panicking() {
    // What the kineto and chakra fuzz targets run, on a few hand-picked inputs.
    let astra = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/astra-sim+astra-sim/examples/workload/microbenchmarks/all_reduce/8npus_1MB/all_reduce.1.et"
    );
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 12],
        vec![0x1f, 0x8b, 0x08, 0x00],
        b"{\"traceEvents\":[{\"ph\":\"X\",\"cat\":\"kernel\",\"ts\":1e300,\"dur\":-1}]}".to_vec(),
        b"\x02\x0a\x00\x0b\x38\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01".to_vec(),
    ];
    if let Ok(real) = std::fs::read(astra) {
        inputs.push(real[..real.len() - 3].to_vec());
        inputs.push(real);
    }
    for bytes in &inputs {
        moesim::fuzzing::kineto(bytes);
        moesim::fuzzing::chakra(bytes);
    }
}

/// A sweep file whose axes multiply past any memory: refused by its count
/// before a point is built (it built them all first, then checked).
#[test]
fn a_sweep_file_of_astronomically_many_points_is_refused_before_building_them() {
    let axis = |k: &str| {
        let values: Vec<String> = (1..=60).map(|v| v.to_string()).collect();
        format!("[[grid]]\nkey = \"{k}\"\nvalues = [{}]\n", values.join(", "))
    };
    let keys = ["topology.nodes", "parallel.ep", "parallel.tp", "parallel.pp", "workload.seed", "parallel.dp"];
    let mut text = "scenario = \"deepseek-v3-pretrain-2048xh800\"\n".to_owned();
    for k in keys {
        text.push_str(&axis(k));
    }
    // 60^6 = 46.7e9 points: what the fuzz target runs, and the CLI's answer.
    moesim::fuzzing::sweep_file(&text);
    let file = crate::common::scenario_file("huge-sweep", &text);
    let o = moesim(&["sweep", file.to_str().unwrap()]);
    let err = crate::common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("46656000000 points") && err.contains("at most 1000"), "{err}");
}

#[test]
fn topology_tables_take_arbitrary_text_without_panicking() {
    // What the topology fuzz target runs, on a few hand-picked inputs.
    for text in [
        "",
        "preset = \"h800-cluster\"\nnodes = 2",
        "preset = \"nope\"",
        "nodes = 0",
        "[[switch]]\nname = \"s\"\n[[link]]\na = \"gpu0\"\nb = \"s\"\ngb_per_s = 100",
        "[[switch]]\nname = \"s{v:0..3}\"\n[[link]]\na = \"gpu{v:0..7}\"\nb = \"s{v/4}\"\ngb_per_s = 1e308",
        "preset = \"multi-plane-fat-tree\"\nnodes = 4\noversubscription = 0",
    ] {
        moesim::fuzzing::topology(text);
    }
}
