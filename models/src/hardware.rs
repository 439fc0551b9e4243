//! Device specs (`DeviceSpec`) and the embedded presets (`presets/devices/*.toml`),
//! each value with its source in the preset file.

use serde::{Deserialize, Serialize};

use moesim_topologies::ConfigProblem;

use crate::error::ModelError;

/// Number formats the cost models know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Fp8,
    Bf16,
    Fp16,
    Fp32,
}

impl Dtype {
    pub fn bytes(self) -> f64 {
        match self {
            Dtype::Fp8 => 1.0,
            Dtype::Bf16 | Dtype::Fp16 => 2.0,
            Dtype::Fp32 => 4.0,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Fp8 => "fp8",
            Dtype::Bf16 => "bf16",
            Dtype::Fp16 => "fp16",
            Dtype::Fp32 => "fp32",
        }
    }
}

/// One accelerator. Rates are dense (no sparsity); link rates are per GPU.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Preset name, e.g. `h800`.
    pub name: String,
    /// Human-readable product name.
    pub product: String,
    /// Streaming multiprocessors (or AI cores).
    pub sms: u32,
    /// Dense BF16 tensor throughput, TFLOP/s.
    pub bf16_tflops: f64,
    /// Dense FP8 tensor throughput, TFLOP/s; absent on devices without FP8.
    pub fp8_tflops: Option<f64>,
    /// FP32 (non-tensor) throughput, TFLOP/s.
    pub fp32_tflops: f64,
    /// Shared memory per SM, KiB.
    pub smem_kib_per_sm: f64,
    /// L2 cache, MiB.
    pub l2_mib: f64,
    /// HBM capacity, GiB.
    pub hbm_gib: f64,
    /// HBM bandwidth, TB/s (10^12 bytes/s).
    pub hbm_tb_per_s: f64,
    /// NVLink per GPU, one direction, GB/s (half the bidirectional figure).
    pub nvlink_gb_per_s: f64,
    /// Scale-out NIC per GPU, Gb/s.
    pub nic_gbit_per_s: f64,
    /// Kernel launch overhead, microseconds.
    pub launch_overhead_us: f64,
}

/// `(name, TOML text)` of every embedded device preset, sorted by name.
const PRESETS: &[(&str, &str)] = &[
    ("h100", include_str!("../presets/devices/h100.toml")),
    ("h20", include_str!("../presets/devices/h20.toml")),
    ("h200", include_str!("../presets/devices/h200.toml")),
    ("h800", include_str!("../presets/devices/h800.toml")),
];

fn positive(key: &str, v: f64, out: &mut Vec<ConfigProblem>) {
    if !(v.is_finite() && v > 0.0) {
        out.push(ConfigProblem { key: key.into(), message: format!("expected a positive number, found {v}") });
    }
}

impl DeviceSpec {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// The embedded preset's TOML text (with its source comments).
    pub fn preset_text(name: &str) -> Result<&'static str, ModelError> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ModelError::UnknownDevice {
            name: name.to_owned(),
            known: Self::preset_names().iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Parses and checks an embedded preset.
    pub fn preset(name: &str) -> Result<DeviceSpec, ModelError> {
        let text = Self::preset_text(name)?;
        let bad = |message: String| ModelError::BadPreset { name: name.to_owned(), message };
        let spec: DeviceSpec = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let problems = spec.problems();
        if let Some(p) = problems.first() {
            return Err(bad(format!("{}: {}", p.key, p.message)));
        }
        Ok(spec)
    }

    /// Every impossible value (zero SMs, non-positive rates, ...), keys
    /// relative to the device table.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.sms == 0 {
            out.push(ConfigProblem { key: "sms".into(), message: "expected an integer >= 1, found 0".into() });
        }
        positive("bf16_tflops", self.bf16_tflops, &mut out);
        if let Some(v) = self.fp8_tflops {
            positive("fp8_tflops", v, &mut out);
        }
        positive("fp32_tflops", self.fp32_tflops, &mut out);
        positive("smem_kib_per_sm", self.smem_kib_per_sm, &mut out);
        positive("l2_mib", self.l2_mib, &mut out);
        positive("hbm_gib", self.hbm_gib, &mut out);
        positive("hbm_tb_per_s", self.hbm_tb_per_s, &mut out);
        positive("nvlink_gb_per_s", self.nvlink_gb_per_s, &mut out);
        positive("nic_gbit_per_s", self.nic_gbit_per_s, &mut out);
        if !(self.launch_overhead_us.is_finite() && self.launch_overhead_us >= 0.0) {
            out.push(ConfigProblem {
                key: "launch_overhead_us".into(),
                message: format!("expected a non-negative number, found {}", self.launch_overhead_us),
            });
        }
        out
    }

    /// Dense tensor throughput for a dtype in FLOP/s, or an error if the
    /// device has no such unit.
    pub fn tensor_flops_per_s(&self, dtype: Dtype) -> Result<f64, ModelError> {
        let tflops = match dtype {
            Dtype::Fp8 => self.fp8_tflops.ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "device {} has no FP8 tensor cores (set fp8_tflops to model them)",
                    self.name
                ))
            })?,
            Dtype::Bf16 | Dtype::Fp16 => self.bf16_tflops,
            Dtype::Fp32 => self.fp32_tflops,
        };
        Ok(tflops * 1e12)
    }

    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.hbm_tb_per_s * 1e12
    }

    pub fn hbm_bytes(&self) -> f64 {
        self.hbm_gib * (1u64 << 30) as f64
    }
}
