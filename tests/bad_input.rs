//! Bad input, one test per class: each gets a message naming the file, line
//! and column (or the key path / `--set`) and what was expected, exit code 2,
//! no panic, and no output files.

use crate::common::*;

/// Runs a broken scenario with `--out`, checks exit 2, no panic, no files, and
/// returns stderr.
fn rejected(test: &str, text: &str, extra: &[&str]) -> String {
    let path = scenario_file(test, text);
    let out = path.parent().unwrap().join("out");
    let mut args = vec!["run", path.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = moesim(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "no output files for a failed run");
    err
}

#[test]
fn malformed_toml_names_line_and_column() {
    let err = rejected("bad_malformed", &ALLREDUCE.replace("nodes = 2", "nodes = = 2"), &[]);
    assert!(err.contains("scenario.toml:9:9:"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_with_their_place() {
    let err = rejected("bad_unknown_workload_key", &ALLREDUCE.replace("ranks = 16", "rank = 16"), &[]);
    assert!(err.contains("scenario.toml:14:1") && err.contains("unknown field `rank`"), "{err}");
    let err = rejected("bad_unknown_topology_key", &ALLREDUCE.replace("nodes = 2", "nodes = 2\nib_gbps = 400"), &[]);
    assert!(err.contains("scenario.toml:10:1") && err.contains("ib_gbps"), "{err}");
    let err = rejected(
        "bad_unknown_hardware_key",
        &ALLREDUCE.replace("device = \"h800\"", "device = \"h800\"\nhbm_tbps = 4"),
        &[],
    );
    assert!(err.contains("hardware.hbm_tbps") && err.contains("hbm_tb_per_s"), "{err}");
}

#[test]
fn wrong_types_are_rejected_with_their_place() {
    let err = rejected("bad_type", &ALLREDUCE.replace("ranks = 16", "ranks = \"sixteen\""), &[]);
    assert!(err.contains("scenario.toml:14:9"), "{err}");
}

#[test]
fn zero_or_negative_bandwidths_are_rejected() {
    let err = rejected("bad_bandwidth", &ALLREDUCE.replace("nodes = 2", "nodes = 2\nib_gbit_per_s = -400"), &[]);
    assert!(
        err.contains("scenario.toml:10:17: topology.ib_gbit_per_s: expected a positive number, found -400"),
        "{err}"
    );
    let err = rejected("bad_hbm", ALLREDUCE, &["--set", "hardware.hbm_tb_per_s=0"]);
    assert!(err.contains("--set hardware.hbm_tb_per_s=0") && err.contains("positive"), "{err}");
    let err = rejected("bad_nvlink", ALLREDUCE, &["--set", "topology.nvlink_gb_per_s=0"]);
    assert!(err.contains("topology.nvlink_gb_per_s"), "{err}");
}

#[test]
fn unknown_presets_list_the_known_ones() {
    let err = rejected("bad_topology_preset", &ALLREDUCE.replace("h800-cluster", "h900-cluster"), &[]);
    assert!(err.contains("scenario.toml:8:") && err.contains("h900-cluster") && err.contains("h800-node"), "{err}");
    let err = rejected("bad_device_preset", &ALLREDUCE.replace("\"h800\"", "\"h900\""), &[]);
    assert!(err.contains("scenario.toml:5:") && err.contains("h900") && err.contains("h20"), "{err}");
    let err = rejected("bad_kind", &ALLREDUCE.replace("\"collective\"", "\"colective\""), &[]);
    assert!(err.contains("workload.kind") && err.contains("moe-dispatch"), "{err}");
}

#[test]
fn a_group_larger_than_the_cluster_is_rejected() {
    let err = rejected("bad_group", &ALLREDUCE.replace("ranks = 16", "ranks = 64"), &[]);
    assert!(err.contains("scenario.toml:14:9: workload.ranks: expected at most 16"), "{err}");
}

#[test]
fn bad_overrides_and_unknown_scenarios_are_rejected() {
    let err = rejected("bad_set", ALLREDUCE, &["--set", "workload.ranks"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    let o = moesim(&["run", "no-such-scenario"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("deepep-dispatch-ep64"), "{}", stderr(&o));
}

#[test]
fn a_topology_with_unreachable_gpus_is_rejected() {
    use moesim_topologies::{LinkDefaults, TopologyConfig};
    let spec = TopologyConfig { preset: Some("h800-node".into()), ..Default::default() }
        .resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 })
        .unwrap();
    let mut topo = moesim_topologies::build(&spec).unwrap();
    // Cut GPU 3 off the NVSwitch.
    let gpu = topo.gpu(3);
    let edges: Vec<_> = topo
        .graph
        .edges_directed(gpu, petgraph::Direction::Outgoing)
        .map(|e| petgraph::visit::EdgeRef::id(&e))
        .collect();
    for e in edges.into_iter().rev() {
        topo.graph.remove_edge(e);
    }
    let err = topo.check_connected().unwrap_err().to_string();
    assert!(err.contains("gpu3") || err.contains("rank 3"), "{err}");
}

#[test]
fn a_cyclic_task_graph_is_rejected() {
    use moesim_sim::*;
    let mut platform = Platform::default();
    platform.add_device(DeviceResource { name: "gpu0".into(), units: 132, mem_bytes_per_s: 3.35e12 });
    let mut g = TaskGraph::new();
    let s = g.add_stream(0, "compute");
    let a = g.add_delay(s, "a", SimDuration::from_ns(5));
    let b = g.add_delay(s, "b", SimDuration::from_ns(5));
    g.add_dep(b, a);
    let err = moesim_sim::run(&platform, &g, &EngineOptions::default(), &mut Quiet).unwrap_err();
    assert!(matches!(err, SimError::Cycle { .. }), "{err}");
    assert!(err.to_string().contains("cycle"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = ALLREDUCE.replace("nodes = 2", "nodes = 2\nib_gbit_per_s = -400").replace("ranks = 16", "ranks = 64");
    let err = rejected("bad_many", &text, &["--set", "hardware.hbm_tb_per_s=0", "--set", "workload.bytes=-1"]);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    // The ranks cannot be checked against a topology that has problems itself.
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains("--set hardware.hbm_tb_per_s=0"), "{err}");
    assert!(lines[1].contains("scenario.toml:10:17: topology.ib_gbit_per_s"), "{err}");
    assert!(lines[2].contains("--set workload.bytes=-1"), "{err}");
}

/// A small training scenario to break.
const TRAINING: &str = r#"name = "train"
[hardware]
device = "h800"
[topology]
preset = "h800-cluster"
nodes = 4
[model]
preset = "deepseek-v3"
layers = 4
[parallel]
pp = 2
ep = 16
schedule = "dualpipe"
[workload]
kind = "training"
seq_len = 1024
global_batch = 64
precision = "fp8"
"#;

#[test]
fn parallel_plans_that_do_not_divide_the_cluster_say_what_would_work() {
    let err = rejected("bad_plan_world", TRAINING, &["--set", "parallel.dp=10"]);
    assert!(err.contains("parallel") && err.contains("dp = 16 would fill it"), "{err}");
    let err = rejected("bad_plan_ep", TRAINING, &["--set", "parallel.ep=512"]);
    assert!(err.contains("parallel.ep") && err.contains("at most the model's 256 routed experts"), "{err}");
    let err = rejected("bad_plan_batch", TRAINING, &["--set", "workload.global_batch=60"]);
    assert!(err.contains("workload.global_batch") && err.contains("multiple of dp x micro_batch"), "{err}");
    // DualPipe needs an even number of micro-batches >= 2 x PP: 16 sequences over DP16 is one each.
    let err = rejected("bad_plan_schedule", TRAINING, &["--set", "workload.global_batch=16"]);
    assert!(err.contains("parallel.schedule") && err.contains("micro-batches"), "{err}");
}

#[test]
fn training_needs_its_tables_and_sane_values() {
    let err =
        rejected("bad_train_no_model", &TRAINING.replace("[model]\npreset = \"deepseek-v3\"\nlayers = 4\n", ""), &[]);
    assert!(err.contains("model") && err.contains("needs a [model] table"), "{err}");
    let err = rejected("bad_train_model_preset", TRAINING, &["--set", "model.preset=gpt-5"]);
    assert!(err.contains("unknown model preset `gpt-5`") && err.contains("deepseek-v3"), "{err}");
    let err = rejected("bad_train_model_value", TRAINING, &["--set", "model.moe.topk=0"]);
    assert!(err.contains("model.moe.topk"), "{err}");
    let err = rejected("bad_train_context", TRAINING, &["--set", "workload.seq_len=1000000"]);
    assert!(err.contains("workload.seq_len") && err.contains("context"), "{err}");
    let err = rejected("bad_train_unknown", TRAINING, &["--set", "parallel.pipeline=4"]);
    assert!(err.contains("unknown field `pipeline`"), "{err}");
    let err = rejected("bad_train_fp8", TRAINING, &["--set", "hardware.fp8_tflops=0"]);
    assert!(err.contains("fp8_tflops"), "{err}");
}

#[test]
fn model_and_parallel_tables_are_rejected_where_unused() {
    let err = rejected("bad_unused_model", &format!("{ALLREDUCE}\n[model]\npreset = \"deepseek-v3\"\n"), &[]);
    assert!(err.contains("not used by kind \"collective\""), "{err}");
}

#[test]
fn slow_gpus_are_checked_at_their_key_and_need_every_rank() {
    let all = TRAINING.replace("precision = \"fp8\"\n", "precision = \"fp8\"\nsimulate = \"all\"\n");
    let text = format!("{all}slow_gpus = [{{ rank = 40, factor = 0.8 }}, {{ rank = 3, factor = 1.5 }}]\n");
    let err = rejected("bad_slow_gpus", &text, &[]);
    // Line 20: the slow_gpus line; the rank is beyond the 32 GPUs, the factor is no fraction.
    assert!(err.contains("scenario.toml:20:23") && err.contains("workload.slow_gpus[0].rank"), "{err}");
    assert!(err.contains("below the cluster's 32 GPUs, found 40"), "{err}");
    assert!(err.contains("workload.slow_gpus[1].factor") && err.contains("found 1.5"), "{err}");
    // Representative ranks cannot stand for one slow peer: refused, not ignored.
    let err = rejected("bad_slow_gpus_rep", TRAINING, &["--set", "workload.slow_gpus=[{rank = 3, factor = 0.8}]"]);
    assert!(err.contains("workload.slow_gpus") && err.contains("simulate = \"all\""), "{err}");
    // GPU-to-GPU variability: a spread in [0, 0.2].
    let err = rejected("bad_speed_spread", &format!("{all}gpu_speed_spread = -0.1\n"), &[]);
    assert!(err.contains("scenario.toml:20") && err.contains("workload.gpu_speed_spread"), "{err}");
    assert!(err.contains("in [0, 0.2]") && err.contains("found -0.1"), "{err}");
    let err = rejected("bad_speed_spread_big", TRAINING, &["--set", "workload.gpu_speed_spread=0.5"]);
    assert!(err.contains("workload.gpu_speed_spread") && err.contains("found 0.5"), "{err}");
    // The finish-time tolerance is a fraction in [0, 0.1].
    for bad in ["-0.01", "0.5", "nan"] {
        let err =
            rejected("bad_finish_tolerance", TRAINING, &["--set", &format!("workload.flow_finish_tolerance={bad}")]);
        assert!(err.contains("workload.flow_finish_tolerance") && err.contains("in [0, 0.1]"), "{err}");
    }
}

#[test]
fn every_rank_steps_too_big_for_memory_are_refused_by_their_estimate() {
    // No GPU count cap: the estimate grows with ranks x micro-batches x
    // tasks per micro-batch (and every rank's all-to-all flows) and is
    // checked against the limit, at the key that drives it.
    let all = TRAINING.replace("precision = \"fp8\"\n", "precision = \"fp8\"\nsimulate = \"all\"\n");
    let err = rejected("all_ranks_memory", &all, &["--max-memory-gib", "0.001"]);
    assert!(err.contains("scenario.toml:17:16: workload.global_batch"), "{err}");
    assert!(
        err.contains("4.096e4 tasks and 4.096e3 all-to-all flows of 16 simulated ranks per pipeline device"),
        "{err}"
    );
    assert!(err.contains("GiB allowed (--max-memory-gib)"), "{err}");
    // The 2,048-GPU default step with every rank: about 8.4 GiB, refused
    // under 8 (and run under the default limit of a 24 GiB machine).
    let err = input_error(&[
        "run",
        "deepseek-v3-pretrain-2048xh800",
        "--set",
        "workload.simulate=all",
        "--max-memory-gib",
        "8",
    ]);
    assert!(err.contains(":29:16: workload.global_batch") && err.contains("the run would need about 8.4 GiB"), "{err}");
    assert!(err.contains("128 simulated ranks per pipeline device") && err.contains("8.0 GiB allowed"), "{err}");
}

#[test]
fn nccl_protocols_and_nvls_constants_are_checked() {
    let err = rejected("bad_protocol", ALLREDUCE, &["--set", "workload.protocol=\"fast\""]);
    assert!(err.contains("workload.protocol") && err.contains("auto, ll, ll128, simple"), "{err}");
    // NVLS runs Simple only.
    let err = rejected(
        "nvls_ll",
        ALLREDUCE,
        &[
            "--set",
            "topology.nodes=1",
            "--set",
            "workload.ranks=8",
            "--set",
            "workload.algorithm=\"nvls\"",
            "--set",
            "workload.protocol=\"ll\"",
        ],
    );
    assert!(err.contains("workload.protocol") && err.contains("Simple protocol only"), "{err}");
    let err = rejected("bad_nvls_channels", ALLREDUCE, &["--set", "hardware.nvls_channels=0"]);
    assert!(err.contains("hardware.nvls_channels") && err.contains("[1, 64]"), "{err}");
    let err = rejected("bad_chunk_overhead", ALLREDUCE, &["--set", "topology.nvls_chunk_overhead_ns=-1"]);
    assert!(err.contains("topology.nvls_chunk_overhead_ns"), "{err}");
    let err = rejected("bad_nccl_version", ALLREDUCE, &["--set", "topology.nccl_version=\"3.1\""]);
    assert!(err.contains("topology.nccl_version") && err.contains("2.19"), "{err}");
}
