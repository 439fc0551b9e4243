//! Prefill and decode iterations of a deployment unit: the built-in
//! DeepSeek-V3 units, their overlap, memory, MTP and prefix caching, the
//! low-latency all-to-all's representative lowering, and the layer
//! extrapolation the serving tables use.

use moesim_models::hardware::device::Dtype;
use moesim_models::lowering::inference::{
    inference_memory, lower_iteration, weights_per_gpu, DeploymentUnit, ExpertPlacement, IterationPhase, IterationSpec,
};
use moesim_models::network::moe_comm::{
    critical_rank_of, lower_moe_comm, lower_moe_comm_mirror, MoeCommSpec, MoeKernel,
};
use moesim_models::transformer::routing::MoePhase;
use moesim_models::transformer::routing::Skew;
use moesim_models::{Cluster, DeviceSpec, ModelConfig};
use moesim_sim::{EngineOptions, Quiet, TaskGraph};
use moesim_topologies::{ClusterSpec, LinkDefaults, TopologyConfig};

use crate::common::*;

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no metric {k} in {v}"))
}

#[test]
fn kv_cache_bytes_per_token_match_isca25_table_1() {
    for (name, bytes) in [("deepseek-v3", 70_272.0), ("qwen-2.5-72b", 327_680.0), ("llama-3.1-405b", 516_096.0)] {
        assert_eq!(ModelConfig::preset(name).unwrap().kv_cache_bytes_per_token(2.0), bytes, "{name}");
    }
}

#[test]
fn deepseek_decode_unit_reports_the_issue_keys_consistently() {
    let m = run_json(&["deepseek-v3-decode-144xh800"]);
    for k in [
        "iteration_time_ms",
        "tokens_per_s_per_gpu",
        "tokens_per_s_per_node",
        "comm_time_ms",
        "exposed_comm_ms",
        "memory_gib_per_gpu",
        "tpot_ms",
    ] {
        assert!(f(&m, k) > 0.0, "{k}");
    }
    assert_eq!(m["fits"], true);
    assert_eq!(m["expert_slots_per_gpu"], 2);
    // 128 sequences x (1 + 0.85) tokens per iteration.
    let t = f(&m, "iteration_time_ms") / 1e3;
    assert!((f(&m, "tokens_per_s_per_gpu") - 128.0 * 1.85 / t).abs() < 1e-3 * f(&m, "tokens_per_s_per_gpu"));
    assert!((f(&m, "tokens_per_s_per_node") / f(&m, "tokens_per_s_per_gpu") - 8.0).abs() < 1e-6);
    assert!((f(&m, "tpot_ms") - f(&m, "iteration_time_ms") / 1.85).abs() < 1e-6);
    // The 5-stage two-micro-batch pipeline hides most of the low-latency all-to-all.
    assert!(f(&m, "exposed_comm_ms") < 0.25 * f(&m, "comm_time_ms"), "{m}");
    // KV: 128 x (4,989 + 2) tokens x 71,424 B (61 layers + the MTP layer).
    let kv = 128.0 * 4991.0 * 71_424.0 / (1u64 << 30) as f64;
    assert!((f(&m, "memory_kv_cache_gib") - kv).abs() < 1e-6, "{}", f(&m, "memory_kv_cache_gib"));
}

#[test]
fn two_micro_batches_hide_the_prefill_all_to_all_one_does_not() {
    // With DeepEP's line-rate (IBGDA) kernels; the IBRC ones the scenario
    // runs expose ~10 % of theirs even with two micro-batches.
    let ibgda = ["deepseek-v3-prefill-32xh800", "--set", "model.layers=8", "--set", "parallel.deepep_rdma=ibgda"];
    let two = run_json(&ibgda);
    let one = run_json(&[&ibgda[..], &["--set", "workload.micro_batches=1"]].concat());
    assert!(f(&two, "exposed_comm_ms") < 0.1 * f(&two, "comm_time_ms"), "{two}");
    assert!(f(&one, "exposed_comm_ms") > 0.9 * f(&one, "comm_time_ms"), "{one}");
    assert!(f(&one, "iteration_time_ms") > f(&two, "iteration_time_ms"));
    // Without overlap the computation is not confined to the SMs DeepEP
    // leaves free (108 of 132): per token it runs faster than beside the
    // all-to-alls (the two runs round to whole prompts differently).
    let per_token = |m: &serde_json::Value| f(m, "compute_time_ms") / f(m, "new_tokens_per_gpu");
    assert!(per_token(&one) < 0.92 * per_token(&two), "{one} {two}");
}

#[test]
fn prefix_cache_hits_count_as_input_but_cost_no_linear_work() {
    let hit = run_json(&["deepseek-v3-prefill-32xh800", "--set", "model.layers=6"]);
    let cold =
        run_json(&["deepseek-v3-prefill-32xh800", "--set", "model.layers=6", "--set", "workload.cache_hit_ratio=0"]);
    // Same computed tokens per GPU budget; the cached run serves more input per second.
    assert_eq!(hit["cached_tokens_per_prompt"], 2306);
    assert!(f(&hit, "tokens_per_s_per_gpu") > 1.8 * f(&cold, "tokens_per_s_per_gpu"), "{hit} {cold}");
    // Input per GPU per iteration: whole prompts, cache hits included.
    let seqs = f(&hit, "sequences_per_gpu");
    let t = f(&hit, "iteration_time_ms") / 1e3;
    assert!((f(&hit, "tokens_per_s_per_gpu") - seqs * 4096.0 / t).abs() < 1e-3 * f(&hit, "tokens_per_s_per_gpu"));
}

#[test]
fn a_redundant_expert_slot_costs_one_expert_per_moe_layer_of_weights() {
    let model = ModelConfig::preset("deepseek-v3").unwrap();
    let unit =
        DeploymentUnit { gpus: 144, tp: 1, redundant_experts: 32, placement: ExpertPlacement::Balanced, comm_sms: 0 };
    let two = weights_per_gpu(&model, &unit, 2, Dtype::Fp8, false);
    let three = weights_per_gpu(&model, &unit, 3, Dtype::Fp8, false);
    let expert = 3.0 * 7168.0 * 2048.0 * (1.0 + 4.0 / 16384.0);
    assert!((three - two - 58.0 * expert).abs() < 1.0, "{}", three - two);
}

fn cluster(nodes: u32) -> Cluster {
    let config: TopologyConfig = toml::from_str(&format!("preset = \"h800-cluster\"\nnodes = {nodes}")).unwrap();
    let device = DeviceSpec::preset("h800").unwrap();
    let spec: ClusterSpec = config
        .resolve(LinkDefaults { nvlink_gb_per_s: device.nvlink_gb_per_s, nic_gbit_per_s: device.nic_gbit_per_s })
        .unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), device, 1)
}

fn time_s(cluster: &Cluster, graph: &TaskGraph) -> f64 {
    moesim_sim::run(&cluster.platform, graph, &EngineOptions::default(), &mut Quiet).unwrap().end.as_secs_f64()
}

#[test]
fn low_latency_representative_rank_matches_every_rank() {
    for (ranks, phase) in [(16, MoePhase::Dispatch), (32, MoePhase::Combine)] {
        let c = cluster(ranks / 8);
        let spec = MoeCommSpec {
            kernel: MoeKernel::LowLatency,
            phase,
            ranks,
            tokens_per_rank: 128,
            hidden: 7168,
            topk: 8,
            experts: 288,
            node_limit: ranks / 8,
            comm_sms: 0,
            skew: Skew::Balanced,
        };
        let mut all = TaskGraph::new();
        let streams: Vec<_> = (0..ranks).map(|r| all.add_stream(r, "ep")).collect();
        let full = lower_moe_comm(&c, &spec, 1, &mut all, &streams, &vec![None; ranks as usize]).unwrap();
        let rep = critical_rank_of(&c, &spec, 1).unwrap();
        let mut one = TaskGraph::new();
        let stream = one.add_stream(rep, "ep");
        let mirror = lower_moe_comm_mirror(&c, &spec, 1, &mut one, stream, rep).unwrap();
        let (a, b) = (time_s(&c, &all), time_s(&c, &one));
        assert!((b / a - 1.0).abs() < 0.03, "EP{ranks}: all {a:e} s, representative {b:e} s");
        assert_eq!(full.rdma_bytes_per_rank, mirror.rdma_bytes_per_rank);
        // DeepEP's count: 128 tokens x 8 copies x 7,408 B (dispatch) or 14,336 B.
        let per_copy = if phase == MoePhase::Dispatch { 7408.0 } else { 14_336.0 };
        assert_eq!(full.rdma_bytes_per_rank, 128.0 * 8.0 * per_copy);
    }
}

#[test]
fn sampled_moe_layers_extrapolate_to_the_full_model() {
    let c = cluster(18);
    let spec = IterationSpec {
        model: ModelConfig::preset("deepseek-v3").unwrap(),
        unit: DeploymentUnit {
            gpus: 144,
            tp: 1,
            redundant_experts: 32,
            placement: ExpertPlacement::Balanced,
            comm_sms: 0,
        },
        phase: IterationPhase::Decode { batch_per_gpu: 96, context_len: 4096, mtp_acceptance: Some(0.85) },
        linear_dtype: Dtype::Fp8,
        skew: Skew::Balanced,
        micro_batches: 2,
        moe_fill: 1.0,
    };
    let run = |layers: u32| {
        let mut s = spec.clone();
        s.model.layers = layers;
        let mut g = TaskGraph::new();
        lower_iteration(&c, &s, 1, &mut g).unwrap();
        time_s(&c, &g)
    };
    let full = run(61);
    let (a, b) = (run(5), run(7));
    let extrapolated = b + 54.0 * (b - a) / 2.0;
    assert!((extrapolated / full - 1.0).abs() < 0.01, "{extrapolated} vs {full}");
    assert!(inference_memory(&spec).total() < DeviceSpec::preset("h800").unwrap().hbm_bytes());
}

#[test]
fn skewed_routing_with_contiguous_placement_loads_one_rank_more_than_balanced() {
    let balanced = run_json(&["deepseek-v3-decode-144xh800", "--set", "model.layers=5", "--set", "workload.skew=1.0"]);
    let contiguous = run_json(&[
        "deepseek-v3-decode-144xh800",
        "--set",
        "model.layers=5",
        "--set",
        "workload.skew=1.0",
        "--set",
        "workload.placement=contiguous",
    ]);
    assert!(
        f(&contiguous, "expert_rows_per_layer_max") > 1.5 * f(&balanced, "expert_rows_per_layer_max"),
        "{contiguous} {balanced}"
    );
    assert!((f(&contiguous, "expert_rows_per_layer_mean") - f(&balanced, "expert_rows_per_layer_mean")).abs() < 1.0);
}

#[test]
fn a_partly_filled_prefill_unit_routes_fewer_tokens_to_the_experts() {
    // One GPU's batch with the unit's others carrying a quarter as much on
    // average: fewer expert rows and all-to-all bytes, a shorter iteration.
    let c = cluster(4);
    let spec = |fill: f64| IterationSpec {
        model: ModelConfig { layers: 5, ..ModelConfig::preset("deepseek-v3").unwrap() },
        unit: DeploymentUnit {
            gpus: 32,
            tp: 1,
            redundant_experts: 32,
            placement: ExpertPlacement::Balanced,
            comm_sms: 24,
        },
        phase: IterationPhase::Prefill { tokens_per_gpu: 8192, prompt_len: 4096, cached_len: 0 },
        linear_dtype: Dtype::Fp8,
        skew: Skew::Balanced,
        micro_batches: 2,
        moe_fill: fill,
    };
    let run = |fill: f64| {
        let mut g = TaskGraph::new();
        let low = lower_iteration(&c, &spec(fill), 1, &mut g).unwrap();
        (low.expert_rows.1, time_s(&c, &g))
    };
    let (full_rows, full_t) = run(1.0);
    let (quarter_rows, quarter_t) = run(0.25);
    assert!((quarter_rows / full_rows - 0.25).abs() < 0.02, "{quarter_rows} vs {full_rows}");
    assert!(quarter_t < full_t, "{quarter_t} vs {full_t}");
    let mut bad = spec(0.0);
    bad.moe_fill = 1.5;
    assert!(lower_iteration(&c, &bad, 1, &mut TaskGraph::new()).is_err());
}

/// Regression (issue 13): with `tp > 1` a tensor-parallel group serves one
/// batch, so per-GPU decode throughput counts it once over the group's GPUs,
/// not once per GPU.
#[test]
fn decode_with_tp_counts_the_group_batch_once_not_once_per_gpu() {
    let tp2 = run_json(&["deepseek-v3-decode-144xh800", "--set", "model.layers=5", "--set", "parallel.tp=2"]);
    let t = f(&tp2, "iteration_time_ms") / 1e3;
    // 128 sequences per TP group of 2 GPUs, 1 + 0.85 tokens each (MTP).
    let expected = 128.0 * 1.85 / 2.0 / t;
    assert!((f(&tp2, "tokens_per_s_per_gpu") / expected - 1.0).abs() < 1e-6, "{tp2}");
    assert_eq!(f(&tp2, "sequences_per_gpu"), 64.0);
    // Each member dispatches its half of the group's tokens: over the two
    // micro-batches, 128 sequences x 2 tokens (one MTP draft) / 2 x top-8.
    assert!((f(&tp2, "expert_rows_per_layer_mean") - 128.0 * 2.0 / 2.0 * 8.0).abs() < 1.0, "{tp2}");
}

/// Regression (issue 13): "per node" followed the topology's node (the
/// NVLink scale-up domain), meaningless beyond 8-GPU servers. Figures are
/// per GPU, per server and per scale-up domain, each named with its size.
#[test]
fn per_node_figures_follow_the_server_and_name_the_scale_up_domain() {
    let m = run_json(&[
        "deepseek-v3-decode-144xh800",
        "--set",
        "model.layers=5",
        "--set",
        "topology.nodes=9",
        "--set",
        "topology.gpus_per_node=16",
    ]);
    let gpu = f(&m, "tokens_per_s_per_gpu");
    assert_eq!(f(&m, "server_gpus"), 8.0, "{m}");
    assert_eq!(f(&m, "scale_up_domain_gpus"), 16.0, "{m}");
    assert!((f(&m, "tokens_per_s_per_server") / gpu - 8.0).abs() < 1e-6, "{m}");
    assert!((f(&m, "tokens_per_s_per_node") / gpu - 8.0).abs() < 1e-6, "{m}");
    assert!((f(&m, "tokens_per_s_per_scale_up_domain") / gpu - 16.0).abs() < 1e-6, "{m}");
}

/// Regression (issue 13): the price of a GPU-hour came from one constant
/// whatever the device; a device preset now carries its own (with source and
/// date), used when the workload sets none.
#[test]
fn cost_follows_the_device_price_unless_the_workload_sets_one() {
    let h100 = run_json(&["deepseek-v3-decode-72xh100", "--set", "model.layers=5"]);
    let h800 = run_json(&["deepseek-v3-decode-72xh100", "--set", "model.layers=5", "--set", "hardware.device=h800"]);
    assert_eq!(f(&h800, "usd_per_gpu_hour"), 2.0, "DeepSeek-V3's H800 rental price");
    assert_eq!(f(&h100, "usd_per_gpu_hour"), 2.69, "the h100 preset's RunPod price, {h100}");
    let set =
        run_json(&["deepseek-v3-decode-72xh100", "--set", "model.layers=5", "--set", "workload.usd_per_gpu_hour=3"]);
    assert_eq!(f(&set, "usd_per_gpu_hour"), 3.0);
    let per_m =
        |m: &serde_json::Value| f(m, "usd_per_million_output_tokens") / f(m, "gpu_hours_per_million_output_tokens");
    assert!((per_m(&h100) - f(&h100, "usd_per_gpu_hour")).abs() < 1e-6);
}
