//! Device presets: every preset parses cleanly and matches the published table.

use moesim_models::{DeviceSpec, Dtype, ModelError};

#[test]
fn every_preset_parses_without_problems() {
    let names = DeviceSpec::preset_names();
    assert_eq!(names, ["ascend-310", "ascend-910b", "ascend-910c", "h100", "h20", "h200", "h800"]);
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
