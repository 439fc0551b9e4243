//! Op cost models: what one kernel costs on one device, alone.
//!
//! Every workload (a GEMM micro-benchmark, a training step, a decode
//! iteration) asks [`op_cost`] for each kernel it lowers and turns the answer
//! into an engine [`Kernel`] with [`OpCost::kernel`]. The engine then shares
//! the device's SMs and HBM among kernels running at once, so the cost here
//! is the kernel *alone*: arithmetic time on every SM, bytes to and from HBM,
//! and how many SMs (CTAs) it can use at most.
//!
//! Cache-based GPUs (`gpu.rs`): each op is tiled for the device (tiles
//! sized to shared memory, the fewest waves over the SMs), traffic per tier
//! follows from the tiling (shared memory fills from L2, HBM re-reads when
//! operand panels outgrow L2), and time combines tensor / CUDA-core
//! arithmetic, the per-SM L2 port, latency and HBM. Devices with explicit
//! buffers (`npu.rs`, Ascend-style): DMA engines and cube/vector units are
//! stages of a simulated pipeline (`pipeline.rs`) with double buffering,
//! and a tile that does not fit its buffer is an error naming the buffer.
//! Another FP8 GEMM library than the one the GEMM model is validated on
//! (`gemm_kernels.rs`) scales a GEMM's cost by that library's published
//! speed relative to it ([`OpCost::slowed`]).

use moesim_sim::{DeviceId, Kernel, SimDuration, UnitDemand};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hardware::device::{DeviceSpec, Dtype};

pub mod gemm_kernels;
mod gpu;
mod npu;
pub mod pipeline;

/// Which resource or tier bounds an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// Tensor (cube) arithmetic, including tile and wave quantisation.
    Compute,
    /// CUDA-core / vector-unit arithmetic (softmax, norms, FP8 promotion).
    Vector,
    /// Filling shared memory / L1 from L2 at the per-SM port rate.
    L2,
    /// Too few loads in flight to cover the memory latency.
    Latency,
    /// A DMA stage of an explicit-buffer pipeline (MTE1/MTE2/FixPipe/MTE3).
    Dma,
    Hbm,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Vector => "vector",
            Bound::L2 => "l2",
            Bound::Latency => "latency",
            Bound::Dma => "dma",
            Bound::Hbm => "hbm",
        }
    }
}

/// Bytes an op moves through each tier (0 where the device has no such
/// tier). Shared memory is the GPU's; L0A/L0B/L0C/L1/UB are explicit
/// buffers of Ascend-style AI cores.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TierBytes {
    pub l0a_bytes: f64,
    pub l0b_bytes: f64,
    pub l0c_bytes: f64,
    pub l1_bytes: f64,
    pub ub_bytes: f64,
    pub smem_bytes: f64,
    pub l2_bytes: f64,
    pub hbm_bytes: f64,
}

impl TierBytes {
    /// `(metric name, bytes)` of every tier the op touches, innermost first.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        [
            ("l0a_bytes", self.l0a_bytes),
            ("l0b_bytes", self.l0b_bytes),
            ("l0c_bytes", self.l0c_bytes),
            ("l1_bytes", self.l1_bytes),
            ("ub_bytes", self.ub_bytes),
            ("smem_bytes", self.smem_bytes),
            ("l2_bytes", self.l2_bytes),
            ("hbm_bytes", self.hbm_bytes),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .collect()
    }
}

/// How an op was tiled (zeros for ops that stream without tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TileInfo {
    pub tile_m: u32,
    pub tile_n: u32,
    pub tile_k: u32,
    /// Pipeline stages (GPU) or buffer slots (2 = double buffering).
    pub stages: u32,
    pub tiles: u64,
    pub waves: u64,
}

/// Options of one op's costing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpOptions {
    /// SMs (AI cores) the kernel is launched on, e.g. 112 when a DeepEP
    /// kernel holds 20 of 132: tiles are quantised into waves over these,
    /// and `max_units` never exceeds them. `None`: the whole device.
    pub sms: Option<u32>,
    /// A tile `[m, n, k]` to use instead of the automatic choice; one that
    /// does not fit its buffer is an error naming the buffer.
    pub tile: Option<[u32; 3]>,
}

/// Grouped-GEMM layouts (DeepGEMM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GemmLayout {
    /// Every group's rows packed one after another (training, prefill).
    #[default]
    Contiguous,
    /// Each group padded to `m` rows of which few are valid (decode).
    Masked,
}

/// A GEMM (or grouped GEMM: `groups` independent m x n x k products sharing
/// n and k, each with its own weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmShape {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub groups: u64,
    pub layout: GemmLayout,
    pub dtype: Dtype,
}

impl GemmShape {
    /// A plain (ungrouped, contiguous) GEMM.
    pub fn plain(m: u64, n: u64, k: u64, dtype: Dtype) -> GemmShape {
        GemmShape { m, n, k, groups: 1, layout: GemmLayout::Contiguous, dtype }
    }
}

/// Forward or backward pass of a kernel that has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
}

/// Fused (flash-style) attention: `batch` sequences of `q_len` queries over
/// `kv_len` keys, `heads` query heads sharing `kv_heads` key/value heads.
/// MLA in training and prefill is `heads = kv_heads = 128`, `qk_dim = 192`,
/// `v_dim = 128`; absorbed MLA in decode is `kv_heads = 1`, `qk_dim = 576`,
/// `v_dim = 512` over the latent cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub batch: u64,
    pub q_len: u64,
    pub kv_len: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub qk_dim: u64,
    pub v_dim: u64,
    /// Causal mask with the queries at the end of the keys.
    pub causal: bool,
    pub dtype: Dtype,
    pub pass: Pass,
}

/// One kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Gemm(GemmShape),
    Attention(AttentionShape),
    /// RMSNorm over `tokens` rows of `hidden` values.
    Norm {
        tokens: u64,
        hidden: u64,
        dtype: Dtype,
        pass: Pass,
    },
    /// A memory-bound pass (activation, cast, add, optimizer step): bytes
    /// read and written, and its (non-tensor) arithmetic.
    Elementwise {
        read_bytes: f64,
        write_bytes: f64,
        flops: f64,
    },
}

impl Op {
    /// The number format of the op's tensor-core work (`None` for ops that
    /// run on the vector units: norms and elementwise passes).
    pub fn tensor_dtype(&self) -> Option<Dtype> {
        match self {
            Op::Gemm(s) => Some(s.dtype),
            Op::Attention(a) => Some(a.dtype),
            Op::Norm { .. } | Op::Elementwise { .. } => None,
        }
    }
}

/// The cost of one op on one device, alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpCost {
    pub flops: f64,
    pub hbm_bytes: f64,
    /// Time of the SM side at every SM of the device, seconds: tensor and
    /// vector arithmetic, filling shared memory / buffers from L2, tile and
    /// wave quantisation and pipeline fill, combined with the HBM time the
    /// way the device overlaps them. On `max_units` SMs the kernel takes
    /// `compute_s x sms / max_units` (= `kernel_s` alone).
    pub compute_s: f64,
    /// HBM time at full bandwidth, seconds.
    pub hbm_s: f64,
    /// Launch overhead, seconds.
    pub overhead_s: f64,
    /// The kernel alone on its CTAs, seconds (what a kernel benchmark reports).
    pub kernel_s: f64,
    /// `kernel_s` + overhead, seconds.
    pub time_s: f64,
    pub bound: Bound,
    /// The most SMs the kernel can use (its CTA count, at most the device's).
    pub max_units: u32,
    /// Bytes through every tier.
    pub tiers: TierBytes,
    pub tile: TileInfo,
}

impl OpCost {
    /// Builds the cost from the kernel's time alone on `ctas` SMs.
    pub(crate) fn from_parts(
        device: &DeviceSpec,
        flops: f64,
        kernel_s: f64,
        bound: Bound,
        ctas: u32,
        tiers: TierBytes,
        tile: TileInfo,
    ) -> OpCost {
        let max_units = ctas.clamp(1, device.sms);
        let overhead_s = device.launch_overhead_us * 1e-6;
        OpCost {
            flops,
            hbm_bytes: tiers.hbm_bytes,
            compute_s: kernel_s * max_units as f64 / device.sms as f64,
            hbm_s: tiers.hbm_bytes / device.hbm_bytes_per_s(),
            overhead_s,
            kernel_s,
            time_s: kernel_s + overhead_s,
            bound,
            max_units,
            tiers,
            tile,
        }
    }

    /// The same op on a kernel `factor` times as slow (another kernel
    /// library's implementation of it; see [`gemm_kernels`]).
    pub fn slowed(self, factor: f64) -> OpCost {
        let kernel_s = self.kernel_s * factor;
        OpCost { compute_s: self.compute_s * factor, kernel_s, time_s: kernel_s + self.overhead_s, ..self }
    }

    /// Achieved arithmetic rate of the kernel alone, TFLOP/s.
    pub fn tflops(&self) -> f64 {
        self.flops / self.kernel_s.max(1e-15) / 1e12
    }

    /// The engine kernel for this op on `device` (launch overhead is left to
    /// the caller, who may put it in the stream as a delay or drop it where
    /// launches overlap).
    pub fn kernel(&self, device: DeviceId) -> Kernel {
        Kernel {
            device,
            compute: SimDuration::from_secs_f64(self.compute_s),
            mem_bytes: self.hbm_bytes,
            units: UnitDemand::Share { max_units: self.max_units },
        }
    }
}

fn at_least_one(values: &[(&str, u64)]) -> Result<(), ModelError> {
    for &(key, v) in values {
        if v == 0 {
            return Err(ModelError::invalid(key, "expected an integer >= 1, found 0"));
        }
    }
    Ok(())
}

/// The cost of `op` on `device`, on the whole device, tiles chosen automatically.
pub fn op_cost(device: &DeviceSpec, op: &Op) -> Result<OpCost, ModelError> {
    op_cost_with(device, op, &OpOptions::default())
}

/// The cost of `op` on `device` with options (SMs it is launched on, a
/// forced tile).
pub fn op_cost_with(device: &DeviceSpec, op: &Op, options: &OpOptions) -> Result<OpCost, ModelError> {
    check_op(op)?;
    if let Some(sms) = options.sms {
        if sms == 0 {
            return Err(ModelError::invalid("sms", "expected an integer >= 1, found 0"));
        }
    }
    if let Some(tile) = options.tile {
        if tile.contains(&0) {
            return Err(ModelError::invalid("tile", format!("expected three integers >= 1, found {tile:?}")));
        }
    }
    match &device.buffers {
        Some(buffers) => npu::op_cost(device, buffers, op, options),
        None => gpu::op_cost(device, op, options),
    }
}

fn check_op(op: &Op) -> Result<(), ModelError> {
    match op {
        Op::Gemm(s) => at_least_one(&[
            ("workload.m", s.m),
            ("workload.n", s.n),
            ("workload.k", s.k),
            ("workload.groups", s.groups),
        ]),
        Op::Attention(a) => {
            at_least_one(&[
                ("batch", a.batch),
                ("q_len", a.q_len),
                ("kv_len", a.kv_len),
                ("heads", a.heads),
                ("kv_heads", a.kv_heads),
                ("qk_dim", a.qk_dim),
                ("v_dim", a.v_dim),
            ])?;
            if a.heads % a.kv_heads != 0 {
                return Err(ModelError::invalid(
                    "kv_heads",
                    format!("expected a divisor of heads ({}), found {}", a.heads, a.kv_heads),
                ));
            }
            Ok(())
        }
        Op::Norm { tokens, hidden, .. } => at_least_one(&[("tokens", *tokens), ("hidden", *hidden)]),
        Op::Elementwise { read_bytes, write_bytes, flops } => {
            for (k, v) in [("read_bytes", *read_bytes), ("write_bytes", *write_bytes), ("flops", *flops)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ModelError::invalid(k, format!("expected a non-negative number, found {v}")));
                }
            }
            Ok(())
        }
    }
}

/// Cost of a (grouped) GEMM; see [`op_cost`].
pub fn gemm_cost(device: &DeviceSpec, shape: &GemmShape) -> Result<OpCost, ModelError> {
    op_cost(device, &Op::Gemm(*shape))
}

/// Cost of fused attention; see [`op_cost`].
pub fn attention_cost(device: &DeviceSpec, a: &AttentionShape) -> Result<OpCost, ModelError> {
    op_cost(device, &Op::Attention(*a))
}

/// Output element bytes of a GEMM: BF16 for FP8/BF16 inputs.
pub(crate) fn gemm_out_bytes(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Fp8 | Dtype::Bf16 => 2.0,
        other => other.bytes(),
    }
}

/// HBM bytes of a GEMM group (m x k times k x n) whose operands are re-read
/// once per L2-sized super-block of the other dimension: the scheduler walks
/// output tiles in blocks of `side x side` rows and columns whose operand
/// panels fit the L2 (`2 x side x k` elements), so A is read
/// `ceil(n / side)` times and B `ceil(m / side)` times; once each when both
/// fit together.
pub(crate) fn gemm_hbm_bytes(m: f64, n: f64, k: f64, in_b: f64, out_b: f64, l2_bytes: f64) -> f64 {
    let (a, b, c) = (m * k * in_b, n * k * in_b, m * n * out_b);
    if a + b <= l2_bytes {
        return a + b + c;
    }
    let side = (l2_bytes / (2.0 * k * in_b)).max(1.0);
    a * (n / side).ceil().max(1.0) + b * (m / side).ceil().max(1.0) + c
}

/// Keys an attention row sees on average (causal: queries at the end).
pub(crate) fn keys_seen(a: &AttentionShape) -> f64 {
    let (q, kv) = (a.q_len as f64, a.kv_len as f64);
    if a.causal {
        (kv - q).max(0.0) + (q + 1.0) / 2.0
    } else {
        kv
    }
}

/// The combination of the SM side and HBM: `(a^p + b^p)^(1/p)`.
pub(crate) fn combine(device: &DeviceSpec, sm_s: f64, hbm_s: f64) -> f64 {
    let p = device.overlap_exponent;
    if p >= 64.0 {
        return sm_s.max(hbm_s);
    }
    let big = sm_s.max(hbm_s);
    if big <= 0.0 {
        return 0.0;
    }
    big * ((sm_s / big).powf(p) + (hbm_s / big).powf(p)).powf(1.0 / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dimensions_and_missing_fp8_are_errors() {
        let mut d = DeviceSpec::preset("h800").unwrap();
        let e = gemm_cost(&d, &GemmShape::plain(0, 1, 1, Dtype::Bf16)).unwrap_err();
        assert!(e.to_string().contains("workload.m"), "{e}");
        d.fp8_tflops = None;
        let e = gemm_cost(&d, &GemmShape::plain(1, 1, 1, Dtype::Fp8)).unwrap_err();
        assert!(e.to_string().contains("no FP8") && e.to_string().contains("fp8_emulation"), "{e}");
        d.fp8_emulation = crate::hardware::device::Fp8Emulation::Bf16;
        let c = gemm_cost(&d, &GemmShape::plain(4096, 4096, 4096, Dtype::Fp8)).unwrap();
        let bf16 = gemm_cost(&d, &GemmShape::plain(4096, 4096, 4096, Dtype::Bf16)).unwrap();
        // Same arithmetic rate, half the operand bytes.
        assert!(c.kernel_s <= bf16.kernel_s * 1.001 && c.kernel_s > bf16.kernel_s * 0.8, "{c:?} {bf16:?}");
    }

    #[test]
    fn causal_attention_does_half_the_work_and_backward_two_and_a_half_times() {
        let h800 = DeviceSpec::preset("h800").unwrap();
        let shape = AttentionShape {
            batch: 1,
            q_len: 4096,
            kv_len: 4096,
            heads: 128,
            kv_heads: 128,
            qk_dim: 192,
            v_dim: 128,
            causal: false,
            dtype: Dtype::Bf16,
            pass: Pass::Forward,
        };
        let full = attention_cost(&h800, &shape).unwrap();
        assert_eq!(full.flops, 2.0 * 128.0 * 4096.0 * 4096.0 * 320.0);
        let causal = attention_cost(&h800, &AttentionShape { causal: true, ..shape }).unwrap();
        assert!((causal.flops / full.flops - 0.5).abs() < 1e-3);
        let bwd = attention_cost(&h800, &AttentionShape { causal: true, pass: Pass::Backward, ..shape }).unwrap();
        assert!((bwd.flops / causal.flops - 2.5).abs() < 1e-12);
        assert!(bwd.kernel_s > 2.0 * causal.kernel_s);
    }

    #[test]
    fn kernel_carries_compute_bytes_and_cta_cap() {
        let h800 = DeviceSpec::preset("h800").unwrap();
        let c =
            op_cost(&h800, &Op::Norm { tokens: 4096, hidden: 7168, dtype: Dtype::Bf16, pass: Pass::Forward }).unwrap();
        assert_eq!(c.bound, Bound::Hbm);
        let k = c.kernel(DeviceId(3));
        assert_eq!(k.device, DeviceId(3));
        assert_eq!(k.mem_bytes, 2.0 * 4096.0 * 7168.0 * 2.0);
        assert_eq!(k.units, UnitDemand::Share { max_units: 132 });
        // Alone on its CTAs the engine reproduces the kernel time.
        assert!((c.compute_s * 132.0 / c.max_units as f64 - c.kernel_s).abs() < 1e-15);
        assert!(c.hbm_s <= c.kernel_s);
    }

    #[test]
    fn a_streaming_pass_on_fewer_sms_moves_its_bytes_proportionally_slower() {
        // Each SM keeps a bounded number of loads in flight, so a memory-bound
        // pass on 112 of the H800's 132 SMs takes 132 / 112 of its time on all
        // of them (DeepSeek's profile: 1.20-1.24x beside a 20-SM DeepEP kernel).
        let h800 = DeviceSpec::preset("h800").unwrap();
        let op = Op::Elementwise { read_bytes: 4096.0 * 7168.0 * 2.0, write_bytes: 4096.0 * 7168.0, flops: 0.0 };
        let all = op_cost(&h800, &op).unwrap();
        let part = op_cost_with(&h800, &op, &OpOptions { sms: Some(112), tile: None }).unwrap();
        assert_eq!((all.bound, part.bound), (Bound::Hbm, Bound::Hbm));
        let ratio = part.kernel_s / all.kernel_s;
        assert!((ratio - 132.0 / 112.0).abs() < 0.01, "{ratio}");
        // On every SM it reaches (nearly) `stream_hbm_efficiency` of HBM peak.
        let share = all.hbm_bytes / all.kernel_s / h800.hbm_bytes_per_s();
        assert!(share <= h800.stream_hbm_efficiency && share > 0.95 * h800.stream_hbm_efficiency, "{share}");
    }

    #[test]
    fn hbm_bytes_grow_when_operand_panels_outgrow_l2() {
        // Both fit: read once.
        assert_eq!(gemm_hbm_bytes(1024.0, 1024.0, 1024.0, 1.0, 2.0, 50e6), 2.0 * 1048576.0 + 2.0 * 1048576.0);
        // 4096 x 7168 x 16384 FP8 in 50 MiB: side = 52428800 / 32768 = 1600 rows,
        // A read ceil(7168/1600) = 5 times, B ceil(4096/1600) = 3 times.
        let l2 = 50.0 * 1048576.0;
        let got = gemm_hbm_bytes(4096.0, 7168.0, 16384.0, 1.0, 2.0, l2);
        let want = 4096.0 * 16384.0 * 5.0 + 7168.0 * 16384.0 * 3.0 + 4096.0 * 7168.0 * 2.0;
        assert_eq!(got, want);
    }
}
