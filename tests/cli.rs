//! The CLI end to end: each micro-workload's JSON keys and numbers, the output
//! directory, and the informational subcommands.

use crate::common::*;

#[test]
fn default_run_is_the_deepseek_v3_training_step_with_the_documented_keys() {
    let v = run_json(&[]);
    for key in [
        "scenario",
        "sim_time_s",
        "events",
        "wall_s",
        "step_time_s",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "mfu_fp8_peak",
        "mfu_bf16_peak",
        "compute_s",
        "comm_s",
        "exposed_comm_s",
        "overlap_fraction",
        "bubble_fraction",
        "memory_gib_per_gpu",
        "fits",
        "gpu_hours_per_trillion_tokens",
        "cost_usd_per_trillion_tokens",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["scenario"], "deepseek-v3-pretrain-2048xh800");
    assert_eq!(v["fits"], true);
    // Cost = GPU-hours x 2 USD by default.
    let hours = v["gpu_hours_per_trillion_tokens"].as_f64().unwrap();
    assert!((v["cost_usd_per_trillion_tokens"].as_f64().unwrap() - 2.0 * hours).abs() < 1e-6 * hours);
    // Tokens per step over the step time.
    let step = v["step_time_s"].as_f64().unwrap();
    let tps = v["tokens_per_s"].as_f64().unwrap();
    assert!((tps * step / (15360.0 * 4096.0) - 1.0).abs() < 1e-6);
}

#[test]
fn deepep_dispatch_reports_the_documented_keys() {
    let v = run_json(&["deepep-dispatch-ep64"]);
    for key in ["scenario", "sim_time_s", "events", "wall_s", "time_us", "nvlink_gb_per_s", "rdma_gb_per_s"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["scenario"], "deepep-dispatch-ep64");
    assert!(v["events"].as_u64().unwrap() > 64);
    // 64 ranks x 4096 tokens x ~4 target nodes x 7168 x (1+4/128) bytes: ~121 MB per rank.
    let rdma = v["rdma_bytes_per_rank"].as_f64().unwrap();
    assert!((1.0e8..1.4e8).contains(&rdma), "{rdma}");
}

#[test]
fn collective_reports_time_algbw_and_busbw() {
    let path = scenario_file("cli_collective", ALLREDUCE);
    let v = run_json(&[path.to_str().unwrap()]);
    let time_us = v["time_us"].as_f64().unwrap();
    let algbw = v["algbw_gb_per_s"].as_f64().unwrap();
    let busbw = v["busbw_gb_per_s"].as_f64().unwrap();
    assert!(time_us > 0.0);
    assert!((algbw - 67108864.0 / (time_us * 1e-6) / 1e9).abs() / algbw < 1e-6);
    // nccl-tests: all-reduce busbw = algbw x 2(n-1)/n.
    assert!((busbw / algbw - 2.0 * 15.0 / 16.0).abs() < 1e-6);
    // A ring across two nodes is bound by the 400 Gb/s NICs: busbw below 50 GB/s.
    assert!(busbw < 50.0 && busbw > 20.0, "{busbw}");
}

#[test]
fn set_overrides_change_the_run() {
    let path = scenario_file("cli_set", ALLREDUCE);
    let p = path.to_str().unwrap();
    let base = run_json(&[p]);
    let fast = run_json(&[p, "--set", "topology.ib_gbit_per_s=800"]);
    let t0 = base["time_us"].as_f64().unwrap();
    let t1 = fast["time_us"].as_f64().unwrap();
    assert!(t1 < 0.75 * t0, "doubling IB should speed a cross-node ring up: {t0} -> {t1}");
    let small = run_json(&[p, "--set", "workload.ranks=8"]);
    assert_eq!(small["ranks"], 8);
}

#[test]
fn gemm_reports_tflops_and_bound() {
    let v = run_json(&["gemm-h800"]);
    assert_eq!(v["bound"], "compute");
    let tflops = v["tflops"].as_f64().unwrap();
    assert!(tflops > 1000.0 && tflops <= 1979.0, "{tflops}");
    let skinny =
        run_json(&["gemm-h800", "--set", "workload.m=64", "--set", "workload.n=2112", "--set", "workload.k=7168"]);
    // Too few loads in flight per SM to cover the memory latency (132 tiles of 64x16).
    assert_eq!(skinny["bound"], "latency");
}

#[test]
fn out_dir_has_every_file_and_the_trace_parses() {
    let dir = scratch("cli_out");
    let out = dir.join("run");
    let o = moesim(&["run", "allreduce-8xh800", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["summary.json", "summary.md", "timeline.csv", "resources.csv", "trace.json.gz", "scenario.resolved.toml"]
    {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let gz = std::fs::read(out.join("trace.json.gz")).unwrap();
    let trace: serde_json::Value = serde_json::from_reader(flate2::read::GzDecoder::new(&gz[..])).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X"), "task spans");
    assert!(events.iter().any(|e| e["ph"] == "C"), "link counters");
    let timeline = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    assert!(timeline.lines().next().unwrap().contains("start_us"));
    // 8 ranks x 14 ring steps.
    assert!(timeline.lines().count() > 8 * 14);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.') && e.file_name() != ".moesim-output")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Nothing is left beside the folder either (no staging or old copies).
    let beside: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("run")]);
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    use std::process::{Command, Stdio};
    // `moesim scenarios | head -0`: the reader is gone before moesim prints.
    let mut child = Command::new(env!("CARGO_BIN_EXE_moesim"))
        .arg("scenarios")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

#[test]
fn scenarios_show_prints_a_built_in_file_that_runs() {
    let o = moesim(&["scenarios", "show", "pipeline-1f1b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = scenario_file("cli_scenarios_show", &stdout(&o));
    let v = run_json(&[path.to_str().unwrap()]);
    assert_eq!(v["workload"], "pipeline");
    let o = moesim(&["scenarios", "show", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn informational_subcommands_work() {
    let o = moesim(&["scenarios"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("deepseek-v3-pretrain-2048xh800 (default)"));

    let o = moesim(&["hardware", "list"]);
    assert!(o.status.success());
    for name in ["h800", "h100", "h200", "h20"] {
        assert!(stdout(&o).lines().any(|l| l.starts_with(name)), "{name} listed");
    }
    let o = moesim(&["hardware", "show", "h20", "--format", "json"]);
    assert!(o.status.success());
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["sms"], 78);

    let dir = scratch("cli_topology");
    let dot = dir.join("c.dot");
    let o = moesim(&["topology", "deepep-dispatch-ep64", "--format", "json", "--dot", dot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["gpus"], 64);
    // 400 Gb/s NIC per GPU = 50 GB/s.
    assert!((s["gpu_network_bytes_per_s"].as_f64().unwrap() - 50e9).abs() < 1e6);
    let dot = std::fs::read_to_string(dot).unwrap();
    assert!(dot.starts_with("graph \"h800-cluster\""), "{dot}");
    // 8 nodes: 64 NVLink + 64 PCIe links, 64 NIC-leaf + 8 leaves x 32 spines.
    assert_eq!(dot.matches(" -- ").count(), 64 + 64 + 64 + 8 * 32);
}

#[test]
fn sweep_runs_the_grid_in_order_and_writes_a_table_and_charts() {
    let dir = scratch("sweep");
    let out = dir.join("out");
    let args = [
        "sweep",
        "allreduce-8xh800",
        "--vary",
        "workload.bytes=1048576,16777216,67108864",
        "--vary",
        "hardware.device=h800,h100",
        "--metric",
        "busbw_gb_per_s",
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = moesim(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    // The last key varies fastest.
    assert_eq!(
        (points[0]["workload.bytes"].as_str(), points[0]["hardware.device"].as_str()),
        (Some("1048576"), Some("h800"))
    );
    assert_eq!(points[1]["hardware.device"], "h100");
    // Each point is the same run as `moesim run` with those overrides.
    let single = run_json(&["allreduce-8xh800", "--set", "workload.bytes=16777216", "--set", "hardware.device=h100"]);
    assert_eq!(points[3]["busbw_gb_per_s"], single["busbw_gb_per_s"]);
    // Bigger buffers reach a higher bus bandwidth on either device.
    for d in 0..2 {
        let bw: Vec<f64> = (0..3).map(|b| points[b * 2 + d]["busbw_gb_per_s"].as_f64().unwrap()).collect();
        assert!(bw.windows(2).all(|w| w[1] > w[0]), "{bw:?}");
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(csv.starts_with("workload.bytes,hardware.device,"));
    for f in ["sweep_busbw_gb_per_s.png", "sweep_busbw_gb_per_s.svg"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
    }
    // Same inputs, same bytes.
    let again = moesim(&args);
    assert_eq!(o.stdout, again.stdout);
    assert_eq!(csv, std::fs::read_to_string(out.join("sweep.csv")).unwrap());
}

#[test]
fn sweep_bad_input_names_what_is_wrong() {
    for (args, want) in [
        (vec!["sweep", "allreduce-8xh800", "--vary", "workload.bytes"], "expected KEY=V1,V2"),
        (vec!["sweep", "allreduce-8xh800", "--vary", "workload.bytes=abc,-1"], "--set workload.bytes=abc"),
        (vec!["sweep", "allreduce-8xh800", "--vary", "a=1", "--vary", "a=2"], "varied twice"),
        (vec!["sweep", "allreduce-8xh800", "--vary", "workload.bytes=1024", "--metric", "nope"], "nope: not a metric"),
    ] {
        let o = moesim(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    // A grid with some invalid points runs the rest and shows why the
    // others could not run.
    let o = moesim(&["sweep", "allreduce-8xh800", "--vary", "workload.bytes=1048576,abc", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let points = v["points"].as_array().unwrap();
    assert!(points[0]["time_us"].as_f64().unwrap() > 0.0 && points[0].get("error").is_none());
    assert!(points[1]["time_us"].is_null());
    assert!(points[1]["error"].as_str().unwrap().contains("workload.bytes"), "{}", points[1]);
}

#[test]
fn deepep_normal_kernels_are_sm_bound_below_twenty_sms() {
    // V3-TR: 20 SMs fill NVLink. With 10 the EP8 dispatch is SM-bound at
    // 10 x 8 GB/s against the link's 200 x 0.676 GB/s; with 32 it moves no
    // more than with 20; with 0 it cannot run.
    let bw = |sms: &str| {
        let v = run_json(&["deepep-dispatch-ep8", "--set", &format!("workload.comm_sms={sms}")]);
        v["nvlink_gb_per_s"].as_f64().unwrap()
    };
    let (b10, b20, b32) = (bw("10"), bw("20"), bw("32"));
    let expected = 10.0 * 8.0 / (200.0 * 0.676);
    assert!((b10 / b20 / expected - 1.0).abs() < 0.02, "{b10} {b20} {expected}");
    assert!((b32 - b20).abs() < 1e-6 * b20, "{b32} {b20}");
    let o = moesim(&["run", "deepep-dispatch-ep8", "--set", "workload.comm_sms=0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("workload.comm_sms") && stderr(&o).contains("at least 1"), "{}", stderr(&o));
}

#[test]
fn every_run_notes_each_link_class_rate_and_an_overridden_rate_says_whose_efficiency_applies() {
    let path = scenario_file("cli_link_rates", ALLREDUCE);
    let p = path.to_str().unwrap();
    let v = run_json(&[p]);
    let notes: Vec<&str> = v["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(
        notes.iter().any(|n| n.starts_with(
            "link rate: nvlink 200.0 GB/s nominal (device) x 0.676 efficiency (preset h800-cluster) = 135.2 GB/s"
        )),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("infiniband 400.0 Gb/s nominal (device NIC) x 0.905")), "{notes:?}");
    assert!(!notes.iter().any(|n| n.contains("overrides")), "{notes:?}");
    // Overriding the nominal rate keeps the preset's fitted efficiency, and says so.
    let v = run_json(&[p, "--set", "topology.nvlink_gb_per_s=400"]);
    let notes = v["notes"].to_string();
    assert!(
        notes.contains(
            "topology.nvlink_gb_per_s overrides the nominal rate but the efficiency is still preset h800-cluster's"
        ),
        "{notes}"
    );
    // A `*_efficiency` beside it sets it.
    let v = run_json(&[p, "--set", "topology.nvlink_gb_per_s=400", "--set", "topology.nvlink_efficiency=0.8"]);
    let notes = v["notes"].to_string();
    assert!(notes.contains("400.0 GB/s nominal (scenario) x 0.8 efficiency (scenario) = 320.0 GB/s"), "{notes}");
    assert!(!notes.contains("overrides"), "{notes}");
    // `moesim topology` prints the same lines.
    let o = moesim(&["topology", p, "--set", "topology.ib_gbit_per_s=800"]);
    let text = stdout(&o);
    assert!(text.contains("infiniband 800.0 Gb/s nominal (scenario) x 0.905"), "{text}");
    assert!(text.contains("topology.ib_gbit_per_s overrides"), "{text}");
}

#[test]
fn ep72_dispatch_over_one_nvl72_domain_stays_on_nvlink_and_a_decode_unit_runs_there() {
    // The built-in: 72 ranks on one NVL72 NVLink domain, no RDMA at all.
    let v = run_json(&["deepep-dispatch-ep72-nvl72"]);
    assert_eq!(v["rdma_bytes_per_rank"].as_f64(), Some(0.0));
    assert_eq!(v["ib_bytes_per_rank"].as_f64(), Some(0.0));
    assert!(v["nvlink_gb_per_s"].as_f64().unwrap() > 100.0, "{v}");
    // DeepSeek-V3's 72-GPU decode unit on one NVL72 rack instead of 9
    // 8-GPU nodes: the EP exchange never leaves NVLink, so TPOT drops.
    let nvl = run_json(&["deepseek-v3-decode-72xh100", "--set", "topology.preset=nvl72", "--set", "topology.nodes=1"]);
    let ib = run_json(&["deepseek-v3-decode-72xh100"]);
    let (t_nvl, t_ib) = (nvl["tpot_ms"].as_f64().unwrap(), ib["tpot_ms"].as_f64().unwrap());
    assert!(t_nvl < t_ib, "nvl72 {t_nvl} ms vs 9 nodes {t_ib} ms");
    // And on CloudMatrix384 (384 NPUs, one UB domain): an all-to-all of all 384.
    let v = run_json(&[
        "alltoall-512xh800",
        "--set",
        "topology.preset=cloudmatrix384",
        "--set",
        "topology.nodes=1",
        "--set",
        "workload.ranks=384",
        "--set",
        "hardware.device=ascend-910c",
    ]);
    assert!(v["busbw_gb_per_s"].as_f64().unwrap() > 100.0, "{v}");
}
