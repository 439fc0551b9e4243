//! `kind = "local"`: DeepSeek-V3 on one workstation (KTransformers V0.2's
//! split, llama.cpp's layers), the NUMA mechanisms of two sockets, the
//! bytes a decoded token reads from DRAM, whether a model fits an edge SoC,
//! and bad input located at its key.

use moesim_models::hardware::host::HostSpec;
use moesim_models::lowering::local::{LocalSetup, NumaPolicy, RuntimeSpec};
use moesim_models::{DeviceSpec, ModelConfig};
use moesim_sim::{EngineOptions, Quiet};

use crate::common::*;

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no metric {k} in {v}"))
}

/// Decode tokens/s of the deepseek-v3-local-4090d setting under `runtime`.
fn decode_tokens_per_s(runtime: &RuntimeSpec, sockets: u32) -> f64 {
    let model = ModelConfig::preset("deepseek-v3").unwrap();
    let device = DeviceSpec::preset("rtx-4090d").unwrap();
    let host = HostSpec::preset("xeon-gold-6454s").unwrap();
    let setup = LocalSetup {
        model: &model,
        device: &device,
        host: Some(&host),
        runtime,
        sockets,
        prompt_tokens: 500,
        topk: 8,
        expert_bits: 4.5,
        other_bits: 4.5,
        kv_bytes_per_value: 2.0,
        gpu_layers: 0,
    };
    let low = setup.lower().unwrap();
    let prefill_end = low.prefill_end;
    let result = moesim_sim::run(&low.platform, &low.graph, &EngineOptions::default(), &mut Quiet).unwrap();
    let decode = result.end.as_secs_f64() - result.spans[prefill_end.0 as usize].end.as_secs_f64();
    1.0 / decode
}

#[test]
fn the_builtin_reproduces_the_single_socket_row_with_its_keys() {
    let m = run_json(&["deepseek-v3-local-4090d"]);
    // KTransformers V0.2 table, single socket, 8 experts: 54.21 and 8.73 tokens/s.
    for (key, published) in [("prefill_tokens_per_s", 54.21), ("decode_tokens_per_s", 8.73)] {
        let v = f(&m, key);
        assert!((v / published - 1.0).abs() <= 0.25, "{key} = {v}, published {published}");
    }
    assert_eq!(m["fits"], serde_json::Value::Bool(true));
    // The GPU holds attention, shared experts, dense layers, head and KV: the
    // tutorial's "at least 12G VRAM" is an upper bound on it.
    assert!(f(&m, "gpu_memory_bytes") < 12e9, "{m}");
}

#[test]
fn a_decoded_token_reads_its_eight_experts_of_every_moe_layer_from_dram() {
    let m = run_json(&["deepseek-v3-local-4090d"]);
    // 58 MoE layers x 8 experts x 3 matrices of 7168 x 2048 at 4.5 bits.
    let expected = 58.0 * 8.0 * 3.0 * 7168.0 * 2048.0 * 4.5 / 8.0;
    assert!((f(&m, "cpu_weight_bytes_per_token") / expected - 1.0).abs() < 1e-6, "{m}");
    // ... at no more than the socket's sustained DRAM bandwidth (8 x DDR5-4800 x 0.8).
    assert!(f(&m, "cpu_weight_gb_per_s") <= 307.2 * 0.8, "{m}");
}

#[test]
fn a_second_socket_with_its_own_copy_speeds_decode_but_less_than_twice() {
    let rt = RuntimeSpec::preset("ktransformers-v0.2").unwrap();
    let one = decode_tokens_per_s(&rt, 1);
    let two = decode_tokens_per_s(&rt, 2);
    // The CPU part halves; the GPU's attention and the hand-offs do not.
    assert!(two > 1.3 * one && two < 2.0 * one, "one socket {one}, two {two}");
}

#[test]
fn a_pool_spanning_both_sockets_costs_the_second_socket_only() {
    let rt = RuntimeSpec::preset("ktransformers-v0.2").unwrap();
    let perfect = RuntimeSpec { spanning_pool_fraction: 1.0, ..rt.clone() };
    // One socket: the share does not apply.
    assert_eq!(decode_tokens_per_s(&rt, 1), decode_tokens_per_s(&perfect, 1));
    // Two: each socket's experts run at the share of its rate, so decode is
    // slower than with perfect scaling but faster than one socket.
    let (two, ideal) = (decode_tokens_per_s(&rt, 2), decode_tokens_per_s(&perfect, 2));
    assert!(two < 0.9 * ideal && two > decode_tokens_per_s(&rt, 1), "two {two}, perfect {ideal}");
}

#[test]
fn one_copy_on_one_node_is_slower_than_a_copy_per_socket() {
    let replicated = RuntimeSpec::preset("ktransformers-v0.2").unwrap();
    let one_node = RuntimeSpec { numa: NumaPolicy::OneNode, ..replicated.clone() };
    let r = decode_tokens_per_s(&replicated, 2);
    let o = decode_tokens_per_s(&one_node, 2);
    // Both sockets' reads come out of socket 0's DRAM: no faster than one socket.
    assert!(o < r, "one node {o}, replicated {r}");
    assert!(o <= decode_tokens_per_s(&replicated, 1) * 1.01, "one node {o}");
}

#[test]
fn llama_cpp_streams_its_weights_over_pcie_for_a_prompt() {
    let m = run_json(&[
        "deepseek-v3-local-4090d",
        "--set",
        "workload.runtime=\"llama.cpp\"",
        "--set",
        "workload.sockets=2",
    ]);
    // Every layer's weights cross the pageable staging copy (8 GB/s): the
    // prompt takes at least the model's bytes at that rate.
    let model_bytes = ModelConfig::preset("deepseek-v3").unwrap().params().total * 4.5 / 8.0;
    let floor_s = (model_bytes - 0.93e9 * 4.5 / 8.0 - 0.93e9 * 4.5 / 8.0) / 8e9;
    assert!(f(&m, "prefill_s") >= floor_s * 0.95, "{m}");
    assert!(f(&m, "decode_tokens_per_s") < 8.73, "{m}");
}

#[test]
fn deepseek_v2_lite_fits_an_ascend_310_at_4_bits_not_at_4_5() {
    let q4k = run_json(&["deepseek-v2-lite-ascend-310"]);
    assert_eq!(q4k["fits"], serde_json::Value::Bool(false), "{q4k}");
    let int4 = run_json(&[
        "deepseek-v2-lite-ascend-310",
        "--set",
        "workload.expert_bits_per_weight=4",
        "--set",
        "workload.weight_bits_per_weight=4",
    ]);
    assert_eq!(int4["fits"], serde_json::Value::Bool(true), "{int4}");
    // Decode is bound by the LPDDR4x (51.2 GB/s): at most its bandwidth over
    // the bytes of the 2.4B active weights.
    let ceiling = 51.2e9 / (2.4e9 * 4.0 / 8.0);
    let d = f(&int4, "decode_tokens_per_s");
    assert!(d > 0.3 * ceiling && d < ceiling, "{d} vs {ceiling}");
}

fn rejected(test: &str, workload: &str) -> String {
    let text = format!(
        "name = \"t\"\nseed = 1\n\n[hardware]\ndevice = \"rtx-4090d\"\n\n[model]\npreset = \"deepseek-v3\"\n\n[workload]\nkind = \"local\"\n{workload}"
    );
    let path = scenario_file(test, &text);
    let o = moesim(&["run", path.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_local_input_is_located_at_its_key() {
    let err = rejected(
        "local-bad-sockets",
        "runtime = \"ktransformers-v0.2\"\nhost = \"xeon-gold-6454s\"\nsockets = 3\nprompt_tokens = 500\n",
    );
    assert!(err.contains("scenario.toml:14:") && err.contains("workload.sockets"), "{err}");
    let err = rejected("local-bad-runtime", "runtime = \"vllm\"\nprompt_tokens = 500\n");
    assert!(err.contains("scenario.toml:12:") && err.contains("ktransformers-v0.2"), "{err}");
    let err = rejected("local-no-host", "runtime = \"llama.cpp\"\nprompt_tokens = 500\n");
    assert!(err.contains("workload.host") && err.contains("xeon-gold-6454s"), "{err}");
    let err =
        rejected("local-bad-bits", "runtime = \"all-on-device\"\nprompt_tokens = 0\nexpert_bits_per_weight = 0.5\n");
    assert!(err.contains("workload.prompt_tokens") && err.contains("workload.expert_bits_per_weight"), "{err}");
}

/// Streaming the routed experts over PCIe instead of running them on the
/// CPU: a decoded token copies its 8 experts of every MoE layer (11.5 GB at
/// Q4_K) over the host's PCIe link, so decode is bound by that copy, well
/// below KTransformers' CPU split on the same machine.
#[test]
fn streamed_experts_bound_decode_by_the_pcie_copy_of_the_routed_experts() {
    let host = HostSpec::preset("xeon-gold-6454s").unwrap();
    let streamed = decode_tokens_per_s(&RuntimeSpec::preset("expert-streaming").unwrap(), 1);
    let routed_bytes = 58.0 * 8.0 * 3.0 * 7168.0 * 2048.0 * 4.5 / 8.0;
    let bound = host.pcie_gb_per_s * 1e9 / routed_bytes;
    assert!(streamed <= bound && streamed >= 0.8 * bound, "{streamed} tokens/s against the PCIe bound {bound}");
    let split = decode_tokens_per_s(&RuntimeSpec::preset("ktransformers-v0.2").unwrap(), 1);
    assert!(streamed < 0.5 * split, "streamed {streamed} against the CPU split {split}");
}
