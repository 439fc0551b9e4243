//! Device specs (`DeviceSpec`) and the embedded presets (`presets/devices/*.toml`),
//! each value with its source in the preset file.

use serde::{Deserialize, Serialize};

use moesim_topologies::{ConfigProblem, Plausible};

use crate::error::ModelError;
pub use crate::hardware::technology::MemoryTechnology;

/// NCCL's NVLS channels on Hopper (`NVLS_NCHANNELS_SM90`).
fn default_nvls_channels() -> u32 {
    16
}

/// Number formats the cost models know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
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
    /// Dense FP16 tensor throughput, TFLOP/s, where it differs from BF16
    /// (consumer cards: FP16 with FP16 accumulation); absent: the BF16 rate.
    #[serde(default)]
    pub fp16_tflops: Option<f64>,
    /// Dense INT8 tensor throughput, TOP/s; absent on devices without it.
    #[serde(default)]
    pub int8_tops: Option<f64>,
    /// Dense FP4 tensor throughput, TFLOP/s; absent on devices without it.
    #[serde(default)]
    pub fp4_tflops: Option<f64>,
    /// Default price of one GPU-hour, USD, used when a workload sets no
    /// `usd_per_gpu_hour` (its source and date are in the preset file).
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
    /// GPUs in one server (HGX/DGX baseboard: 8; GB200 NVL72 compute tray:
    /// 4), for "per server" figures; the topology's node is the NVLink
    /// scale-up domain, which can be larger. Default 8.
    #[serde(default)]
    pub gpus_per_server: Option<u32>,
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
    /// Whether the GPU and its NVSwitch reduce in the switch (NVLink SHARP,
    /// NCCL's NVLS algorithm): Hopper and newer with third-generation
    /// NVSwitch. Without it NVLS is never chosen nor allowed.
    #[serde(default)]
    pub nvls: bool,
    /// Channels (thread blocks) NCCL gives an NVLS collective: 16 on
    /// Hopper, 24 on Blackwell inside one NVLink domain (NVIDIA/nccl
    /// `src/transport/nvls.cc`, `NVLS_NCHANNELS_SM90` / `_SM100_NVL`). With
    /// the ranks they make NCCL's concurrent NVLS operations, which size its
    /// chunks (`topology.nvls_chunk_overhead_ns`).
    #[serde(default = "default_nvls_channels")]
    pub nvls_channels: u32,
    /// The bus bandwidth NCCL's LL protocol reaches at most inside one node,
    /// GB/s (`llMaxBws` of the GPU generation in NVIDIA/nccl
    /// `src/graph/tuning.cc`: Ampere 87.7, Hopper 141, Blackwell 282).
    /// Absent: LL is only halved, not capped.
    pub nccl_ll_max_busbw_gb_per_s: Option<f64>,
    /// Scale-out NIC per GPU, Gb/s.
    pub nic_gbit_per_s: f64,
    /// Kernel launch overhead, microseconds.
    pub launch_overhead_us: f64,

    // --- The memory hierarchy and the tiled cost models (all optional, with
    // --- defaults, so a device file with only the keys above still works).
    /// Clock the tensor rates above are quoted at, MHz.
    #[serde(default)]
    pub boost_clock_mhz: Option<f64>,
    /// Clock under sustained tensor load (power throttling), MHz; tensor-bound
    /// kernels run at `rate x sustained / boost`.
    #[serde(default)]
    pub sustained_clock_mhz: Option<f64>,
    /// Bytes per clock one SM can pull from L2 into shared memory.
    #[serde(default = "default_l2_port")]
    pub l2_bytes_per_clk_per_sm: f64,
    /// Latency of a load under bandwidth load (the pipeline fill of a tile
    /// and what a bounded number of in-flight stages can hide), ns.
    #[serde(default = "default_mem_latency")]
    pub mem_latency_ns: f64,
    /// L2 hit latency of the L2 as built, ns, at `l2_latency_ref_mib` of
    /// capacity; latency grows with the square root of capacity.
    #[serde(default)]
    pub l2_latency_ns: Option<f64>,
    /// The capacity `l2_latency_ns` was measured at, MiB (defaults to `l2_mib`).
    #[serde(default)]
    pub l2_latency_ref_mib: Option<f64>,
    /// Technology the L2 is built in (a name in `presets/memory-technologies.toml`).
    #[serde(default = "default_technology")]
    pub l2_technology: String,
    /// What-if: rebuild the L2 in this technology in the same silicon area
    /// (capacity scales with density, latency with the technology and the
    /// square root of capacity).
    #[serde(default)]
    pub l2_rebuild_technology: Option<String>,
    /// FP32 lanes per SM (CUDA cores) for the FP8 accumulator promotion and
    /// softmax arithmetic.
    #[serde(default = "default_fp32_lanes")]
    pub fp32_lanes_per_sm: f64,
    /// Special-function (exp) results per clock per SM.
    #[serde(default = "default_sfu")]
    pub sfu_per_clk_per_sm: f64,
    /// Fraction of the FP8 accumulator promotion (CUDA-core FFMA every 128
    /// of K) not hidden behind the tensor cores.
    #[serde(default)]
    pub fp8_promotion_exposed: f64,
    /// How the SM-side time and the HBM time of a kernel combine:
    /// `(t_sm^p + t_hbm^p)^(1/p)`; large p is a perfect-overlap max.
    #[serde(default = "default_overlap")]
    pub overlap_exponent: f64,
    /// Fraction of the HBM bandwidth a simple streaming kernel (casts,
    /// norms, activations, residual adds) reaches on every SM; on `n` of the
    /// device's SMs it reaches `n / sms` of that (each SM keeps a bounded
    /// number of loads in flight, so the rate follows the SMs).
    #[serde(default = "default_stream_efficiency")]
    pub stream_hbm_efficiency: f64,
    /// Whether communication kernels run on the compute units (GPUs: DeepEP
    /// and NCCL kernels hold SMs) or on separate copy/DMA engines (then a
    /// plan's `comm_sms` holds nothing).
    #[serde(default = "yes_comm")]
    pub comm_uses_compute_units: bool,
    /// Whether communication (DeepEP, NCCL, copies) reads the bytes it moves
    /// from HBM at the source and writes them at the destination, sharing
    /// the bandwidth with the kernels beside it in training and inference
    /// runs (units-weighted max-min between the two, see `sim::device`);
    /// false: communication takes no memory bandwidth (the model before
    /// issue #15). Standalone communication benchmarks run alone and are not
    /// affected either way.
    #[serde(default = "yes_comm")]
    pub comm_shares_hbm: bool,
    /// Fixed time of a low-latency (decode) all-to-all kernel besides moving
    /// data: launch, FP8 packing, per-expert count signalling, microseconds.
    #[serde(default)]
    pub low_latency_kernel_overhead_us: f64,
    /// Bytes per second one SM moves in an SM-driven all-to-all kernel
    /// (DeepEP's normal kernels: sends, forwards and receives are warps on
    /// the SMs the kernel holds), GB/s; absent: not SM-bound.
    #[serde(default)]
    pub comm_gb_per_s_per_sm: Option<f64>,
    /// What an FP8 GEMM does on a device without FP8 tensor units.
    #[serde(default)]
    pub fp8_emulation: Fp8Emulation,

    // --- The power model (all optional: a device without `power_cap_w`,
    // --- `idle_power_w` and `sm_dynamic_power_w` is never throttled by it).
    /// Board power limit (TDP), W; `--set hardware.power_cap_w=...` is a
    /// what-if. Under sustained load the SM clock drops until the modelled
    /// power is at most this (see `hardware::power`).
    #[serde(default)]
    pub power_cap_w: Option<f64>,
    /// Static power of the board while it runs (clocks up, no work done:
    /// leakage, memory refresh, fans and regulators), W.
    #[serde(default)]
    pub idle_power_w: Option<f64>,
    /// Dynamic power of the whole SM array (tensor cores, registers, shared
    /// memory, L2) while every SM computes, at `boost_clock_mhz`, W; scales
    /// with the cube of the clock (P = C V^2 f, V proportional to f).
    #[serde(default)]
    pub sm_dynamic_power_w: Option<f64>,
    /// Energy per byte read from or written to HBM (DRAM array, I/O and the
    /// memory controller), pJ; absent: 0.
    #[serde(default)]
    pub hbm_pj_per_byte: Option<f64>,
    /// Whether a run lowers the SM clock to what `power_cap_w` allows:
    /// `auto` (training, prefill, decode, GRPO and local runs yes; standalone
    /// kernel and communication benchmarks no: they keep the preset's clock),
    /// `on` (every kind) or `off` (none; the preset's clock everywhere).
    #[serde(default)]
    pub sustained_clocks: SustainedClocks,
    /// Explicitly managed on-chip buffers (Ascend-style AI cores); absent on
    /// cache-based GPUs.
    #[serde(default)]
    pub buffers: Option<ExplicitBuffers>,
}

/// When the power model sets the SM clock (`hardware.sustained_clocks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SustainedClocks {
    /// Sustained workloads (training, prefill, decode, GRPO, local) yes,
    /// standalone microbenchmarks no.
    #[default]
    Auto,
    /// Every workload.
    On,
    /// None: the preset's `sustained_clock_mhz` (or boost) everywhere.
    Off,
}

/// What an FP8 GEMM does on a device with no FP8 tensor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Fp8Emulation {
    /// An error naming the device.
    #[default]
    None,
    /// Keep FP8 storage and traffic, compute at the BF16 (FP16) rate after
    /// an up-conversion in the load path.
    Bf16,
}

/// Explicitly managed buffers of one AI core and its DMA engines
/// (Huawei Da Vinci architecture: MTE2 GM->L1, MTE1 L1->L0A/L0B, FixPipe
/// L0C->GM, MTE3 UB->GM; a cube unit and a vector unit).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplicitBuffers {
    /// L0A buffer (the cube unit's left-operand buffer) per AI core, KiB.
    pub l0a_kib: f64,
    /// L0B buffer (the cube unit's right-operand buffer) per AI core, KiB.
    pub l0b_kib: f64,
    /// L0C buffer (the cube unit's accumulator buffer) per AI core, KiB.
    pub l0c_kib: f64,
    /// L1 buffer per AI core (staging between global memory and L0), KiB.
    pub l1_kib: f64,
    /// Unified Buffer (vector unit's scratchpad).
    pub ub_kib: f64,
    /// Cube unit: m x n x k multiply-accumulates per clock (16 x 16 x 16).
    pub cube_m: u32,
    /// Columns of the cube unit's matrix tile (N).
    pub cube_n: u32,
    /// Depth of the cube unit's matrix tile (K).
    pub cube_k: u32,
    /// AI-core clock, MHz.
    pub clock_mhz: f64,
    /// Vector cores on the chip (the cube cores are `sms`).
    pub vector_cores: u32,
    /// FP16 lanes of one vector core per clock.
    pub vector_lanes: f64,
    /// MTE2: global memory (L2/HBM) -> L1 or UB, bytes per clock per core.
    pub gm_to_l1_bytes_per_clk: f64,
    /// MTE1: L1 -> L0A/L0B, bytes per clock per core.
    pub l1_to_l0_bytes_per_clk: f64,
    /// FixPipe: L0C -> global memory, bytes per clock per core.
    pub l0c_out_bytes_per_clk: f64,
    /// MTE3: UB -> global memory, bytes per clock per core.
    pub ub_out_bytes_per_clk: f64,
    /// Double buffering: a tile's loads overlap the previous tile's compute.
    #[serde(default = "yes")]
    pub double_buffer: bool,
}

fn yes() -> bool {
    true
}
fn default_l2_port() -> f64 {
    64.0
}
fn default_mem_latency() -> f64 {
    900.0
}
fn default_technology() -> String {
    "sram".into()
}
fn default_fp32_lanes() -> f64 {
    128.0
}
fn default_sfu() -> f64 {
    16.0
}
fn yes_comm() -> bool {
    true
}

fn default_stream_efficiency() -> f64 {
    1.0
}

fn default_overlap() -> f64 {
    2.0
}

/// `(name, TOML text)` of every embedded device preset, sorted by name.
const PRESETS: &[(&str, &str)] = &[
    ("a100", include_str!("../../presets/devices/a100.toml")),
    ("ascend-310", include_str!("../../presets/devices/ascend-310.toml")),
    ("ascend-910b", include_str!("../../presets/devices/ascend-910b.toml")),
    ("ascend-910c", include_str!("../../presets/devices/ascend-910c.toml")),
    ("b200", include_str!("../../presets/devices/b200.toml")),
    ("gb200", include_str!("../../presets/devices/gb200.toml")),
    ("h100", include_str!("../../presets/devices/h100.toml")),
    ("h20", include_str!("../../presets/devices/h20.toml")),
    ("h200", include_str!("../../presets/devices/h200.toml")),
    ("h800", include_str!("../../presets/devices/h800.toml")),
    ("rtx-4090", include_str!("../../presets/devices/rtx-4090.toml")),
    ("rtx-4090d", include_str!("../../presets/devices/rtx-4090d.toml")),
];

const MIB: f64 = 1048576.0;

/// The L2 a cost model sees, after any technology what-if.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveL2 {
    pub bytes: f64,
    pub latency_ns: Option<f64>,
    /// Bandwidth relative to the L2 as built.
    pub bandwidth_factor: f64,
    pub technology: String,
    /// Static (leakage or refresh) power of the array, watts.
    pub static_w: f64,
}

const TFLOPS: Plausible = Plausible::new(1e-3, 1e6, "TFLOP/s");
const TB_PER_S: Plausible = Plausible::new(1e-4, 1e3, "TB/s");
const GB_PER_S: Plausible = Plausible::new(1e-3, 1e6, "GB/s");
const GBIT_PER_S: Plausible = Plausible::new(1e-3, 1e7, "Gb/s");
const SIZE: Plausible = Plausible::new(1e-3, 1e7, "KiB, MiB or GiB");
const US: Plausible = Plausible::new(0.0, 1e6, "us");
const USD_PER_HOUR: Plausible = Plausible::new(0.0, 1e4, "USD per GPU-hour");
const NS: Plausible = Plausible::new(1e-3, 1e9, "ns");
const MHZ: Plausible = Plausible::new(1.0, 1e5, "MHz");
const PER_CLK: Plausible = Plausible::new(1e-3, 1e5, "per clock");
const WATTS: Plausible = Plausible::new(1.0, 1e5, "W");
const PJ_PER_BYTE: Plausible = Plausible::new(0.0, 1e4, "pJ per byte");

fn non_negative(key: &str, v: f64, range: Plausible, out: &mut Vec<ConfigProblem>) {
    if !(v.is_finite() && v >= 0.0) {
        out.push(ConfigProblem { key: key.into(), message: format!("expected a non-negative number, found {v}") });
    } else {
        out.extend(range.problem(key, v));
    }
}

fn positive(key: &str, v: f64, range: Plausible, out: &mut Vec<ConfigProblem>) {
    if !(v.is_finite() && v > 0.0) {
        out.push(ConfigProblem { key: key.into(), message: format!("expected a positive number, found {v}") });
    } else {
        out.extend(range.problem(key, v));
    }
}

impl DeviceSpec {
    /// Every key a `[hardware]` table may set (besides `device`).
    pub const KEYS: &'static [&'static str] = &[
        "name",
        "product",
        "sms",
        "bf16_tflops",
        "fp8_tflops",
        "fp32_tflops",
        "fp16_tflops",
        "int8_tops",
        "fp4_tflops",
        "usd_per_gpu_hour",
        "gpus_per_server",
        "smem_kib_per_sm",
        "l2_mib",
        "hbm_gib",
        "hbm_tb_per_s",
        "nvlink_gb_per_s",
        "nvls",
        "nvls_channels",
        "nccl_ll_max_busbw_gb_per_s",
        "nic_gbit_per_s",
        "launch_overhead_us",
        "boost_clock_mhz",
        "sustained_clock_mhz",
        "l2_bytes_per_clk_per_sm",
        "mem_latency_ns",
        "l2_latency_ns",
        "l2_latency_ref_mib",
        "l2_technology",
        "l2_rebuild_technology",
        "fp32_lanes_per_sm",
        "sfu_per_clk_per_sm",
        "fp8_promotion_exposed",
        "overlap_exponent",
        "stream_hbm_efficiency",
        "comm_uses_compute_units",
        "comm_shares_hbm",
        "low_latency_kernel_overhead_us",
        "comm_gb_per_s_per_sm",
        "fp8_emulation",
        "power_cap_w",
        "idle_power_w",
        "sm_dynamic_power_w",
        "hbm_pj_per_byte",
        "sustained_clocks",
        "buffers",
    ];

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
        if !(1..=100_000).contains(&self.sms) {
            out.push(ConfigProblem {
                key: "sms".into(),
                message: format!("expected an integer in [1, 100000], found {}", self.sms),
            });
        }
        positive("bf16_tflops", self.bf16_tflops, TFLOPS, &mut out);
        if let Some(v) = self.fp8_tflops {
            positive("fp8_tflops", v, TFLOPS, &mut out);
        }
        positive("fp32_tflops", self.fp32_tflops, TFLOPS, &mut out);
        for (key, v) in
            [("fp16_tflops", self.fp16_tflops), ("int8_tops", self.int8_tops), ("fp4_tflops", self.fp4_tflops)]
        {
            if let Some(v) = v {
                positive(key, v, TFLOPS, &mut out);
            }
        }
        if let Some(v) = self.usd_per_gpu_hour {
            non_negative("usd_per_gpu_hour", v, USD_PER_HOUR, &mut out);
        }
        if let Some(g) = self.gpus_per_server {
            if !(1..=100_000).contains(&g) {
                out.push(ConfigProblem {
                    key: "gpus_per_server".into(),
                    message: format!("expected an integer in [1, 100000], found {g}"),
                });
            }
        }
        positive("smem_kib_per_sm", self.smem_kib_per_sm, SIZE, &mut out);
        positive("l2_mib", self.l2_mib, SIZE, &mut out);
        positive("hbm_gib", self.hbm_gib, SIZE, &mut out);
        positive("hbm_tb_per_s", self.hbm_tb_per_s, TB_PER_S, &mut out);
        positive("nvlink_gb_per_s", self.nvlink_gb_per_s, GB_PER_S, &mut out);
        positive("nic_gbit_per_s", self.nic_gbit_per_s, GBIT_PER_S, &mut out);
        if let Some(v) = self.nccl_ll_max_busbw_gb_per_s {
            positive("nccl_ll_max_busbw_gb_per_s", v, GB_PER_S, &mut out);
        }
        if !(1..=64).contains(&self.nvls_channels) {
            out.push(ConfigProblem {
                key: "nvls_channels".into(),
                message: format!("expected an integer in [1, 64], found {}", self.nvls_channels),
            });
        }
        non_negative("launch_overhead_us", self.launch_overhead_us, US, &mut out);
        for (key, v) in [("boost_clock_mhz", self.boost_clock_mhz), ("sustained_clock_mhz", self.sustained_clock_mhz)] {
            if let Some(v) = v {
                positive(key, v, MHZ, &mut out);
            }
        }
        if let (Some(b), Some(s)) = (self.boost_clock_mhz, self.sustained_clock_mhz) {
            if s > b {
                out.push(ConfigProblem {
                    key: "sustained_clock_mhz".into(),
                    message: format!("expected at most boost_clock_mhz ({b}), found {s}"),
                });
            }
        }
        positive("l2_bytes_per_clk_per_sm", self.l2_bytes_per_clk_per_sm, PER_CLK, &mut out);
        positive("mem_latency_ns", self.mem_latency_ns, NS, &mut out);
        if let Some(v) = self.l2_latency_ns {
            positive("l2_latency_ns", v, NS, &mut out);
        }
        if let Some(v) = self.l2_latency_ref_mib {
            positive("l2_latency_ref_mib", v, SIZE, &mut out);
        }
        positive("fp32_lanes_per_sm", self.fp32_lanes_per_sm, PER_CLK, &mut out);
        positive("sfu_per_clk_per_sm", self.sfu_per_clk_per_sm, PER_CLK, &mut out);
        if !(self.fp8_promotion_exposed.is_finite() && (0.0..=1.0).contains(&self.fp8_promotion_exposed)) {
            out.push(ConfigProblem {
                key: "fp8_promotion_exposed".into(),
                message: format!("expected a fraction in [0, 1], found {}", self.fp8_promotion_exposed),
            });
        }
        if !(self.stream_hbm_efficiency.is_finite()
            && self.stream_hbm_efficiency > 0.0
            && self.stream_hbm_efficiency <= 1.0)
        {
            out.push(ConfigProblem {
                key: "stream_hbm_efficiency".into(),
                message: format!("expected a value in (0, 1], found {}", self.stream_hbm_efficiency),
            });
        }
        non_negative("low_latency_kernel_overhead_us", self.low_latency_kernel_overhead_us, US, &mut out);
        if let Some(r) = self.comm_gb_per_s_per_sm {
            positive("comm_gb_per_s_per_sm", r, GB_PER_S, &mut out);
        }
        if !(self.overlap_exponent.is_finite() && self.overlap_exponent >= 1.0) {
            out.push(ConfigProblem {
                key: "overlap_exponent".into(),
                message: format!("expected a number >= 1, found {}", self.overlap_exponent),
            });
        }
        for (key, name) in [
            ("l2_technology", Some(&self.l2_technology)),
            ("l2_rebuild_technology", self.l2_rebuild_technology.as_ref()),
        ] {
            if let Some(name) = name {
                if let Err(e) = MemoryTechnology::named(name) {
                    out.push(ConfigProblem { key: key.into(), message: e.to_string() });
                }
            }
        }
        for (key, v) in [
            ("power_cap_w", self.power_cap_w),
            ("idle_power_w", self.idle_power_w),
            ("sm_dynamic_power_w", self.sm_dynamic_power_w),
        ] {
            if let Some(v) = v {
                positive(key, v, WATTS, &mut out);
            }
        }
        if let Some(v) = self.hbm_pj_per_byte {
            non_negative("hbm_pj_per_byte", v, PJ_PER_BYTE, &mut out);
        }
        if let (Some(cap), Some(idle)) = (self.power_cap_w, self.idle_power_w) {
            if idle >= cap {
                out.push(ConfigProblem {
                    key: "idle_power_w".into(),
                    message: format!("expected less than power_cap_w ({cap}), found {idle}"),
                });
            }
        }
        if let Some(b) = &self.buffers {
            for (key, v) in [
                ("buffers.l0a_kib", b.l0a_kib),
                ("buffers.l0b_kib", b.l0b_kib),
                ("buffers.l0c_kib", b.l0c_kib),
                ("buffers.l1_kib", b.l1_kib),
                ("buffers.ub_kib", b.ub_kib),
                ("buffers.clock_mhz", b.clock_mhz),
                ("buffers.vector_lanes", b.vector_lanes),
                ("buffers.gm_to_l1_bytes_per_clk", b.gm_to_l1_bytes_per_clk),
                ("buffers.l1_to_l0_bytes_per_clk", b.l1_to_l0_bytes_per_clk),
                ("buffers.l0c_out_bytes_per_clk", b.l0c_out_bytes_per_clk),
                ("buffers.ub_out_bytes_per_clk", b.ub_out_bytes_per_clk),
            ] {
                positive(key, v, if key.ends_with("clock_mhz") { MHZ } else { SIZE }, &mut out);
            }
            for (key, v) in [
                ("buffers.cube_m", b.cube_m),
                ("buffers.cube_n", b.cube_n),
                ("buffers.cube_k", b.cube_k),
                ("buffers.vector_cores", b.vector_cores),
            ] {
                if v == 0 {
                    out.push(ConfigProblem { key: key.into(), message: "expected an integer >= 1, found 0".into() });
                }
            }
        }
        out
    }

    /// Tensor-clock ratio under sustained load (1 when no throttling is given).
    pub fn throttle(&self) -> f64 {
        match (self.boost_clock_mhz, self.sustained_clock_mhz) {
            (Some(b), Some(s)) => s / b,
            _ => 1.0,
        }
    }

    /// The clock the tensor rates are quoted at, MHz: `boost_clock_mhz`, else
    /// the clock the SM-side model counts cycles at without one (1600).
    pub fn rated_clock_mhz(&self) -> f64 {
        self.boost_clock_mhz.or(self.sustained_clock_mhz).unwrap_or(1600.0)
    }

    /// This device with its SM clock under load set to `mhz` (a power-capped
    /// clock): tensor-bound kernels run at `mhz / rated`, cycle counts at
    /// `mhz`; memory-bound work is unchanged.
    pub fn at_clock(&self, mhz: f64) -> DeviceSpec {
        let mut d = self.clone();
        d.boost_clock_mhz = Some(self.rated_clock_mhz());
        d.sustained_clock_mhz = Some(mhz);
        d
    }

    /// The clock the SM-side model counts cycles at, Hz (sustained clock, or
    /// the tensor rate's implied clock when no clocks are given: 1.6 GHz).
    pub fn sm_clock_hz(&self) -> f64 {
        self.sustained_clock_mhz.or(self.boost_clock_mhz).unwrap_or(1600.0) * 1e6
    }

    /// The effective L2: capacity in bytes, hit latency in ns (if known) and
    /// bandwidth factor, after an `l2_rebuild_technology` what-if.
    pub fn effective_l2(&self) -> Result<EffectiveL2, ModelError> {
        let built = MemoryTechnology::named(&self.l2_technology)?;
        let base_bytes = self.l2_mib * MIB;
        let Some(target) = &self.l2_rebuild_technology else {
            return Ok(EffectiveL2 {
                bytes: base_bytes,
                latency_ns: self.l2_latency_ns.map(|l| l * self.latency_scale(base_bytes)),
                bandwidth_factor: 1.0,
                technology: built.name.clone(),
                static_w: built.static_mw_per_mib * self.l2_mib / 1e3,
            });
        };
        let t = MemoryTechnology::named(target)?;
        let bytes = base_bytes * t.density_relative_to(&built);
        Ok(EffectiveL2 {
            bytes,
            latency_ns: self
                .l2_latency_ns
                .map(|l| l * t.latency_factor / built.latency_factor * self.latency_scale(bytes)),
            bandwidth_factor: t.bandwidth_factor / built.bandwidth_factor,
            technology: t.name.clone(),
            static_w: t.static_mw_per_mib * bytes / MIB / 1e3,
        })
    }

    /// Latency grows with the square root of capacity at equal technology.
    fn latency_scale(&self, bytes: f64) -> f64 {
        let reference = self.l2_latency_ref_mib.unwrap_or(self.l2_mib) * MIB;
        (bytes / reference).sqrt()
    }

    /// Dense tensor throughput for a dtype in FLOP/s, or an error if the
    /// device has no such unit.
    pub fn tensor_flops_per_s(&self, dtype: Dtype) -> Result<f64, ModelError> {
        let tflops = match dtype {
            Dtype::Fp8 => match (self.fp8_tflops, self.fp8_emulation) {
                (Some(v), _) => v,
                (None, Fp8Emulation::Bf16) => self.bf16_tflops,
                (None, Fp8Emulation::None) => {
                    return Err(ModelError::Unsupported(format!(
                        "device {} has no FP8 tensor units: set hardware.fp8_emulation = \"bf16\" to run FP8 \
                         GEMMs at the BF16 rate (FP8 storage kept), or fp8_tflops to model FP8 units",
                        self.name
                    )))
                }
            },
            Dtype::Bf16 => self.bf16_tflops,
            Dtype::Fp16 => self.fp16_tflops.unwrap_or(self.bf16_tflops),
            Dtype::Fp32 => self.fp32_tflops,
        };
        Ok(tflops * 1e12)
    }

    /// GPUs per server (8 unless the preset says otherwise).
    pub fn server_gpus(&self) -> u32 {
        self.gpus_per_server.unwrap_or(8).max(1)
    }

    /// The price of a GPU-hour a workload uses: its own, else the device's,
    /// else USD 2 (DeepSeek-V3's H800 rental assumption, V3-TR §1).
    pub fn price_per_gpu_hour(&self, workload: Option<f64>) -> f64 {
        workload.or(self.usd_per_gpu_hour).unwrap_or(2.0)
    }

    /// A note for a run's notes when the price is the fallback.
    pub fn price_note(&self, workload: Option<f64>) -> Option<String> {
        (workload.is_none() && self.usd_per_gpu_hour.is_none()).then(|| {
            format!(
                "{} has no sourced price per GPU-hour: USD 2 assumed (DeepSeek-V3's H800 figure); set workload.usd_per_gpu_hour",
                self.name
            )
        })
    }

    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.hbm_tb_per_s * 1e12
    }

    pub fn hbm_bytes(&self) -> f64 {
        self.hbm_gib * (1u64 << 30) as f64
    }
}
