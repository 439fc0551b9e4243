//! Device presets: every preset parses cleanly and matches the published table.

use moesim_models::{DeviceSpec, Dtype, ModelError};

#[test]
fn every_preset_parses_without_problems() {
    let names = DeviceSpec::preset_names();
    assert_eq!(
        names,
        [
            "a100",
            "ascend-310",
            "ascend-910b",
            "ascend-910c",
            "b200",
            "gb200",
            "h100",
            "h20",
            "h200",
            "h800",
            "rtx-4090",
            "rtx-4090d"
        ]
    );
    for name in names {
        let d = DeviceSpec::preset(name).unwrap();
        assert_eq!(d.name, name);
        assert!(d.problems().is_empty());
    }
}

#[test]
fn presets_match_the_published_device_table() {
    // ../shared/reference/published.md, "Devices".
    let rows = [
        ("h800", 132, 989.0, 1979.0, 80.0, 3.35, 50.0, 200.0),
        ("h100", 132, 989.0, 1979.0, 80.0, 3.35, 50.0, 450.0),
        ("h200", 132, 989.0, 1979.0, 141.0, 4.8, 50.0, 450.0),
        ("h20", 78, 148.0, 296.0, 96.0, 4.0, 60.0, 450.0),
    ];
    for (name, sms, bf16, fp8, hbm, bw, l2, nvlink) in rows {
        let d = DeviceSpec::preset(name).unwrap();
        assert_eq!(d.sms, sms, "{name}");
        assert_eq!(d.bf16_tflops, bf16, "{name}");
        assert_eq!(d.fp8_tflops, Some(fp8), "{name}");
        assert_eq!(d.hbm_gib, hbm, "{name}");
        assert_eq!(d.hbm_tb_per_s, bw, "{name}");
        assert_eq!(d.l2_mib, l2, "{name}");
        assert_eq!(d.nvlink_gb_per_s, nvlink, "{name}");
        assert_eq!(d.nic_gbit_per_s, 400.0, "{name}");
        assert_eq!(d.smem_kib_per_sm, 228.0, "{name}");
    }
    let h20 = DeviceSpec::preset("h20").unwrap();
    assert_eq!(h20.tensor_flops_per_s(Dtype::Fp8).unwrap(), 296e12);
}

#[test]
fn unknown_preset_lists_the_known_ones() {
    let e = DeviceSpec::preset("h900").unwrap_err();
    assert!(matches!(e, ModelError::UnknownDevice { .. }));
    let msg = e.to_string();
    for n in ["h100", "h20", "h200", "h800"] {
        assert!(msg.contains(n), "{msg}");
    }
}

#[test]
fn problems_reports_every_bad_value_at_once() {
    let mut d = DeviceSpec::preset("h800").unwrap();
    d.sms = 0;
    d.hbm_tb_per_s = -1.0;
    d.nic_gbit_per_s = f64::NAN;
    let p = d.problems();
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["sms", "hbm_tb_per_s", "nic_gbit_per_s"]);
    assert_eq!(p[1].message, "expected a positive number, found -1");
}

/// The presets added for issue 13, against their vendors' tables (dense
/// rates: NVIDIA quotes Blackwell's with sparsity, half of it dense).
#[test]
fn new_presets_match_their_datasheets() {
    // (name, SMs, BF16, FP8, FP4, INT8, HBM GB, HBM TB/s, NVLink GB/s per direction, GPUs per server)
    let rows = [
        ("a100", 108, 312.0, None, None, Some(624.0), 80.0, 2.039, 300.0, 8),
        ("b200", 148, 2250.0, Some(4500.0), Some(9000.0), Some(4500.0), 180.0, 8.0, 900.0, 8),
        ("gb200", 148, 2500.0, Some(5000.0), Some(10000.0), Some(5000.0), 186.0, 8.0, 900.0, 4),
        ("rtx-4090", 128, 165.2, Some(330.3), None, Some(660.6), 24.0, 1.008, 32.0, 8),
        ("rtx-4090d", 114, 147.1, Some(294.2), None, Some(588.4), 24.0, 1.008, 32.0, 8),
    ];
    for (name, sms, bf16, fp8, fp4, int8, hbm, bw, nvlink, server) in rows {
        let d = DeviceSpec::preset(name).unwrap();
        assert_eq!(
            (d.sms, d.bf16_tflops, d.fp8_tflops, d.fp4_tflops, d.int8_tops),
            (sms, bf16, fp8, fp4, int8),
            "{name}"
        );
        assert_eq!(
            (d.hbm_gib, d.hbm_tb_per_s, d.nvlink_gb_per_s, d.server_gpus()),
            (hbm, bw, nvlink, server),
            "{name}"
        );
    }
    // FP16 with FP16 accumulation is twice BF16 on the consumer card only.
    let r = DeviceSpec::preset("rtx-4090").unwrap();
    assert_eq!(r.tensor_flops_per_s(Dtype::Fp16).unwrap(), 330.3e12);
    assert_eq!(DeviceSpec::preset("a100").unwrap().tensor_flops_per_s(Dtype::Fp16).unwrap(), 312e12);
    // A100 has no FP8: an error naming the device.
    assert!(matches!(
        DeviceSpec::preset("a100").unwrap().tensor_flops_per_s(Dtype::Fp8),
        Err(ModelError::Unsupported(_))
    ));
    // Prices: each preset's own, the fallback only where none is sourced.
    assert_eq!(DeviceSpec::preset("h800").unwrap().price_per_gpu_hour(None), 2.0);
    assert_eq!(DeviceSpec::preset("a100").unwrap().price_per_gpu_hour(None), 1.39);
    assert_eq!(DeviceSpec::preset("a100").unwrap().price_per_gpu_hour(Some(3.0)), 3.0);
    assert!(DeviceSpec::preset("gb200").unwrap().price_note(None).is_some());
}
