//! Sustained clocks under the power cap (issue #15): the summary's clock,
//! power and energy, the cap as a what-if, microbenchmarks at the preset's
//! clock.

use crate::common::*;

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no metric {k} in {v}"))
}

#[test]
fn a_decode_unit_reports_its_clock_power_and_energy() {
    let m = run_json(&["deepseek-v3-decode-144xh800"]);
    let (clock, w) = (f(&m, "sm_clock_mhz"), f(&m, "avg_power_w"));
    assert!((200.0..=1600.0).contains(&clock), "{clock}");
    assert!(w > 105.0 && w <= 700.0 + 1e-6, "{w}");
    // Energy = average power x time.
    let step_s = f(&m, "iteration_time_ms") / 1e3;
    let e = f(&m, "energy_j_per_step");
    assert!((e - w * step_s * f(&m, "gpus")).abs() < 1e-6 * e, "{e}");
    let t = f(&m, "energy_j_per_token");
    assert!((t - w / f(&m, "tokens_per_s_per_gpu")).abs() < 1e-6 * t, "{t}");
}

#[test]
fn a_lower_power_cap_lowers_the_clock_and_lengthens_the_iteration() {
    let base = run_json(&["deepseek-v3-decode-144xh800"]);
    let low = run_json(&["deepseek-v3-decode-144xh800", "--set", "hardware.power_cap_w=300"]);
    assert!(f(&low, "sm_clock_mhz") < f(&base, "sm_clock_mhz") - 1.0, "{low}");
    assert!(f(&low, "iteration_time_ms") > f(&base, "iteration_time_ms"), "{low}");
    assert!(f(&low, "busy_power_w") <= 300.0 * 1.02, "{low}");
    // Off: the preset's clock, no energy figures.
    let off = run_json(&["deepseek-v3-decode-144xh800", "--set", "hardware.sustained_clocks=off"]);
    assert!(off.get("sm_clock_mhz").is_none(), "{off}");
}

#[test]
fn a_standalone_gemm_runs_at_the_preset_clock_unless_asked() {
    let auto = run_json(&["gemm-h800"]);
    assert!(auto.get("sm_clock_mhz").is_none(), "{auto}");
    let capped = run_json(&["gemm-h800", "--set", "hardware.sustained_clocks=on", "--set", "hardware.power_cap_w=300"]);
    assert!(f(&capped, "sm_clock_mhz") < 1600.0, "{capped}");
}
