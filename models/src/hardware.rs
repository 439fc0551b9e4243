//! Device specs (`DeviceSpec`) and the embedded presets (`presets/devices/*.toml`),
//! each value with its source in the preset file.

use serde::{Deserialize, Serialize};

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

impl DeviceSpec {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        todo!()
    }
    /// The embedded preset's TOML text (with its source comments).
    pub fn preset_text(name: &str) -> Result<&'static str, ModelError> {
        let _ = name;
        todo!()
    }
    /// Parses and checks an embedded preset.
    pub fn preset(name: &str) -> Result<DeviceSpec, ModelError> {
        let _ = name;
        todo!()
    }
    /// Every impossible value (zero SMs, non-positive rates, ...), keys
    /// relative to the device table.
    pub fn problems(&self) -> Vec<moesim_topologies::ConfigProblem> {
        todo!()
    }
    /// Dense tensor throughput for a dtype in FLOP/s, or an error if the
    /// device has no such unit.
    pub fn tensor_flops_per_s(&self, dtype: Dtype) -> Result<f64, ModelError> {
        let _ = dtype;
        todo!()
    }
    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.hbm_tb_per_s * 1e12
    }
    pub fn hbm_bytes(&self) -> f64 {
        self.hbm_gib * (1u64 << 30) as f64
    }
}
