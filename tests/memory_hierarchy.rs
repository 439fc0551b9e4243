//! The memory-hierarchy cost models end to end: tiled kernels (wave
//! quantisation, SMs held by communication, tier bytes), explicit buffers
//! on Ascend presets, memory-technology what-ifs, and their bad input
//! (zero-sized buffers, tiles that do not fit, missing FP8, unknown
//! technologies): clear errors naming the key, exit 2, no panic.

use moesim_models::hardware::device::Fp8Emulation;
use moesim_models::hardware::ops::{gemm_cost, op_cost_with, Bound, GemmShape, Op, OpOptions};
use moesim_models::{DeviceSpec, Dtype};

use crate::common::*;

fn rejected(args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let o = moesim(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn wave_quantisation_makes_time_a_step_function_of_n() {
    // 128 x 128 tiles of M=4096 (32 row blocks): N = 528 is 4.125 column
    // blocks. The tile heuristic picks the tile with the fewest waves, so
    // the time grows in steps, not in proportion to N.
    let h800 = DeviceSpec::preset("h800").unwrap();
    let t = |n: u64| gemm_cost(&h800, &GemmShape::plain(4096, n, 7168, Dtype::Fp8)).unwrap();
    let (a, b) = (t(4096), t(4096 + 8));
    assert!(b.tile.waves >= a.tile.waves);
    // A full-wave shape uses every SM; 132 tiles of 64x16 are exactly one wave.
    let skinny = gemm_cost(&h800, &GemmShape::plain(64, 2112, 7168, Dtype::Fp8)).unwrap();
    assert_eq!((skinny.tile.tile_m, skinny.tile.tile_n, skinny.tile.tiles, skinny.tile.waves), (64, 16, 132, 1));
    assert_eq!(skinny.max_units, 132);
    assert_eq!(skinny.bound, Bound::Latency);
}

#[test]
fn a_gemm_launched_on_112_sms_has_112_ctas_and_the_engine_time_matches() {
    // DeepSeek's profile: GEMMs launch 112 CTAs while DeepEP holds 20 SMs.
    let h800 = DeviceSpec::preset("h800").unwrap();
    let op = Op::Gemm(GemmShape::plain(4096, 7168, 2048, Dtype::Fp8));
    let all = op_cost_with(&h800, &op, &OpOptions::default()).unwrap();
    let some = op_cost_with(&h800, &op, &OpOptions { sms: Some(112), tile: None }).unwrap();
    assert!(some.max_units <= 112 && some.max_units > 100, "{}", some.max_units);
    assert!(some.kernel_s > all.kernel_s * 1.1, "{} vs {}", some.kernel_s, all.kernel_s);
    // On its 112 SMs the engine's share model gives back the kernel time.
    let engine_s = some.compute_s * 132.0 / some.max_units as f64;
    assert!((engine_s - some.kernel_s).abs() < 1e-12);
}

#[test]
fn tier_bytes_are_ordered_inner_to_outer_for_a_reused_gemm() {
    let h800 = DeviceSpec::preset("h800").unwrap();
    let c = gemm_cost(&h800, &GemmShape::plain(4096, 7168, 16384, Dtype::Fp8)).unwrap();
    // Shared memory receives every tile's operands; multicast halves B's L2
    // reads; HBM sees each operand a few times (L2 blocking).
    assert!(c.tiers.smem_bytes > c.tiers.l2_bytes && c.tiers.l2_bytes > c.tiers.hbm_bytes);
    let unique = 4096.0 * 16384.0 + 7168.0 * 16384.0 + 4096.0 * 7168.0 * 2.0;
    assert!(c.tiers.hbm_bytes > unique);
}

#[test]
fn an_edram_l2_of_the_same_area_holds_five_times_more_and_cuts_hbm_traffic() {
    let mut d = DeviceSpec::preset("h800").unwrap();
    let sram = d.effective_l2().unwrap();
    let shape = GemmShape::plain(4096, 7168, 16384, Dtype::Fp8);
    let before = gemm_cost(&d, &shape).unwrap();
    d.l2_rebuild_technology = Some("edram".into());
    let edram = d.effective_l2().unwrap();
    assert!((edram.bytes / sram.bytes - 5.0).abs() < 1e-9, "{}", edram.bytes / sram.bytes);
    // Latency: 1.6x the technology factor, sqrt(5) for the capacity.
    let want = 160.0 * 1.6 * 5f64.sqrt();
    assert!((edram.latency_ns.unwrap() - want).abs() < 1e-6);
    let after = gemm_cost(&d, &shape).unwrap();
    assert!(after.hbm_bytes < before.hbm_bytes * 0.6, "{} -> {}", before.hbm_bytes, after.hbm_bytes);
}

#[test]
fn ascend_tiles_must_fit_their_buffers() {
    let d = DeviceSpec::preset("ascend-910b").unwrap();
    let op = Op::Gemm(GemmShape::plain(4096, 4096, 4096, Dtype::Bf16));
    // 256 x 128 x 2 B x 2 slots = 128 KiB > 64 KiB of L0A.
    let e = op_cost_with(&d, &op, &OpOptions { sms: None, tile: Some([256, 256, 128]) }).unwrap_err().to_string();
    assert!(e.contains("L0A") && e.contains("128.0 KiB") && e.contains("64 KiB"), "{e}");
    // 128 x 256 FP32 accumulators = 128 KiB fits L0C exactly; 256 x 256 does not.
    let e = op_cost_with(&d, &op, &OpOptions { sms: None, tile: Some([256, 256, 16]) }).unwrap_err().to_string();
    assert!(e.contains("L0C"), "{e}");
    let ok = op_cost_with(&d, &op, &OpOptions { sms: None, tile: Some([128, 256, 32]) }).unwrap();
    assert_eq!((ok.tile.tile_m, ok.tile.tile_n, ok.tile.tile_k, ok.tile.stages), (128, 256, 32, 2));
    // Cube: 16x16x16 MACs/clk at 1.8 GHz on 20 cores is the ceiling.
    assert!(ok.tflops() <= 294.95 && ok.tflops() > 200.0, "{}", ok.tflops());
}

#[test]
fn double_buffering_hides_the_loads() {
    let mut d = DeviceSpec::preset("ascend-910b").unwrap();
    let op = Op::Gemm(GemmShape::plain(2048, 2048, 2048, Dtype::Bf16));
    let tile = OpOptions { sms: None, tile: Some([128, 128, 64]) };
    let double = op_cost_with(&d, &op, &tile).unwrap();
    d.buffers.as_mut().unwrap().double_buffer = false;
    let single = op_cost_with(&d, &op, &tile).unwrap();
    assert!(single.kernel_s > 1.2 * double.kernel_s, "{} vs {}", single.kernel_s, double.kernel_s);
}

#[test]
fn fp8_on_a_device_without_it_is_an_error_or_an_explicit_emulation() {
    let mut d = DeviceSpec::preset("ascend-910b").unwrap();
    // The preset emulates FP8 explicitly; without that setting FP8 is an error.
    assert_eq!(d.fp8_emulation, Fp8Emulation::Bf16);
    d.fp8_emulation = Fp8Emulation::None;
    let shape = GemmShape::plain(4096, 4096, 4096, Dtype::Fp8);
    let e = gemm_cost(&d, &shape).unwrap_err().to_string();
    assert!(e.contains("ascend-910b") && e.contains("fp8_emulation"), "{e}");
    d.fp8_emulation = Fp8Emulation::Bf16;
    let c = gemm_cost(&d, &shape).unwrap();
    assert!(c.tflops() <= 294.95, "{}", c.tflops());
    let err = rejected(&["gemm-ascend-910b", "--set", "workload.dtype=fp8", "--set", "hardware.fp8_emulation=none"]);
    assert!(err.contains("workload.dtype") && err.contains("fp8_emulation"), "{err}");
}

#[test]
fn zero_or_negative_buffers_and_tiers_are_rejected_with_their_key() {
    let err = rejected(&["gemm-ascend-910b", "--set", "hardware.buffers.l0a_kib=0"]);
    assert!(err.contains("--set hardware.buffers.l0a_kib=0: hardware.buffers.l0a_kib: expected a positive"), "{err}");
    let err = rejected(&["gemm-ascend-910b", "--set", "hardware.buffers.ub_kib=-192"]);
    assert!(err.contains("hardware.buffers.ub_kib") && err.contains("-192"), "{err}");
    let err = rejected(&["gemm-h800", "--set", "hardware.l2_mib=0"]);
    assert!(err.contains("hardware.l2_mib: expected a positive number, found 0"), "{err}");
    let err = rejected(&["gemm-h800", "--set", "hardware.smem_kib_per_sm=-1"]);
    assert!(err.contains("hardware.smem_kib_per_sm"), "{err}");
}

#[test]
fn tiles_larger_than_their_buffer_are_rejected_naming_it() {
    let err = rejected(&["gemm-ascend-910b", "--set", "workload.tile=[256,256,128]"]);
    assert!(err.contains("workload.tile") && err.contains("L0A") && err.contains("hardware.buffers.l0a_kib"), "{err}");
    let err = rejected(&["gemm-h800", "--set", "workload.tile=[256,256,512]"]);
    assert!(err.contains("workload.tile") && err.contains("shared memory"), "{err}");
    let err = rejected(&["gemm-h800", "--set", "workload.sms=200"]);
    assert!(err.contains("workload.sms: expected at most the device's 132 SMs"), "{err}");
}

#[test]
fn unknown_technologies_list_the_known_ones() {
    let err = rejected(&["gemm-h800", "--set", "hardware.l2_rebuild_technology=dram3d"]);
    assert!(err.contains("hardware.l2_rebuild_technology") && err.contains("edram, stt-mram"), "{err}");
}

#[test]
fn ascend_910b_runs_the_built_in_collective_and_dispatch_scenarios() {
    for scenario in ["deepep-dispatch-ep8", "allreduce-8xh800"] {
        let v = run_json(&[scenario, "--set", "hardware.device=ascend-910b"]);
        assert!(v["time_us"].as_f64().unwrap() > 0.0, "{scenario}: {v}");
    }
    // HCCS (196 GB/s per direction) is the intra-node link: the EP8
    // dispatch cannot beat it.
    let v = run_json(&["deepep-dispatch-ep8", "--set", "hardware.device=ascend-910b"]);
    let gbps = v["nvlink_gb_per_s"].as_f64().unwrap();
    assert!(gbps > 50.0 && gbps < 196.0, "{gbps}");
}

#[test]
fn op_kind_reports_tiers_and_writes_a_roofline() {
    let dir = scratch("op_roofline");
    let out = dir.join("run");
    let o = moesim(&["run", "flashmla-decode-h800", "--out", out.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["smem_bytes", "l2_bytes", "hbm_bytes", "bound", "tflops", "kernel_us"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    let png = std::fs::read(out.join("roofline.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(out.join("roofline.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("TFLOP/s"));
    let err = rejected(&["flashmla-decode-h800", "--set", "workload.kv_heads=3"]);
    assert!(err.contains("workload.kv_heads: expected a divisor of heads (128), found 3"), "{err}");
}
