//! What-if re-costing: each measured GPU op's time on the target hardware,
//! with the measurement as the anchor (new = measured x model(target) /
//! model(source)).
//!
//! - Compute ops whose parent CPU op recorded shapes (`aten::mm`, `addmm`,
//!   `bmm`, `baddbmm`, `linear`, `matmul`, `_scaled_mm`, the SDPA/flash
//!   attention ops, `layer_norm`/`rms_norm`) are re-costed by the op cost
//!   models (`models::hardware::ops::op_cost`) on both devices: *by shape*.
//! - Other compute ops scale by their class's roofline bound: tensor classes
//!   by the dense tensor rate of their number format (FP8 when the name says
//!   so, FP32 for SGEMMs, else BF16), memory classes by HBM bandwidth: *by
//!   class*.
//! - Tensor ops that ran beside a communication kernel holding SMs ran on
//!   the SMs left; with another `comm_sms` (or SM count) the overlapped part
//!   scales by the ratio of SMs left.
//! - Communication: DeepEP normal kernels by the rate of an SM-driven
//!   all-to-all, `min(NIC, comm SMs x per-SM rate)`; DeepEP low-latency by
//!   the NIC (token counts are not in Kineto traces, so their bytes cannot
//!   be rebuilt; the link-rate ratio stands in): *by class*. NCCL
//!   collectives whose args give the op, message size and group are re-timed
//!   on the modelled network by `network.rs` (*by message*); the others, and
//!   send/recv, by NVLink inside a node (group of at most 8) and by the NIC
//!   beyond: *by class*.
//! - Unrecognised kernels and CPU time are kept.
//!
//! With no change (same device, links and SMs) every op is kept.

use moesim_models::hardware::ops::{op_cost, AttentionShape, GemmShape, Op, Pass};
use moesim_models::{DeviceSpec, Dtype};
use serde::Serialize;

use super::classify::KernelClass;
use super::graph::GpuOp;

/// How an op's new time was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    Shape,
    /// An NCCL collective re-timed from its message size on the modelled
    /// network (`network.rs`).
    Message,
    Class,
    Kept,
}

/// One side of a what-if: a device and its links.
#[derive(Debug, Clone)]
pub struct Hardware {
    pub device: DeviceSpec,
    /// Scale-out NIC per GPU, bytes/s (nominal).
    pub nic_bytes_per_s: f64,
    /// NVLink per GPU per direction, bytes/s (nominal).
    pub nvlink_bytes_per_s: f64,
    /// SMs each DeepEP normal kernel holds; `None`: as traced.
    pub comm_sms: Option<u32>,
}

/// The source (traced) and target hardware.
#[derive(Debug, Clone)]
pub struct WhatIf {
    pub source: Hardware,
    pub target: Hardware,
}

impl WhatIf {
    /// Whether anything differs (otherwise every op keeps its time).
    pub fn is_identity(&self) -> bool {
        let (s, t) = (&self.source, &self.target);
        s.device == t.device
            && s.nic_bytes_per_s == t.nic_bytes_per_s
            && s.nvlink_bytes_per_s == t.nvlink_bytes_per_s
            && (t.comm_sms.is_none() || t.comm_sms == s.comm_sms)
    }

    /// The new duration of `op` (ns) and its basis. `comm_overlap` is the
    /// fraction of the op's measured time during which a communication
    /// kernel held `held_sms` SMs of the source device.
    pub fn recost(&self, op: &GpuOp, comm_overlap: f64, held_sms: u32, world_size: Option<u32>) -> (i64, Basis) {
        if self.is_identity() {
            return (op.dur_ns, Basis::Kept);
        }
        let scale = |r: f64| ((op.dur_ns as f64) * r).round().max(0.0) as i64;
        let (src, tgt) = (&self.source, &self.target);
        if op.class.is_tensor() {
            let sm = self.sm_factor(comm_overlap, held_sms);
            if let Some(r) = self.shape_ratio(op) {
                return (scale(r * sm), Basis::Shape);
            }
            let dtype = dtype_of_name(&op.name);
            let rate = |d: &DeviceSpec| {
                d.tensor_flops_per_s(dtype).or_else(|_| d.tensor_flops_per_s(Dtype::Bf16)).unwrap_or(1.0) * d.throttle()
            };
            return (scale(rate(&src.device) / rate(&tgt.device) * sm), Basis::Class);
        }
        match op.class {
            KernelClass::Norm if self.shape_ratio(op).is_some() => {
                (scale(self.shape_ratio(op).unwrap_or(1.0)), Basis::Shape)
            }
            KernelClass::Norm
            | KernelClass::Cast
            | KernelClass::Reduction
            | KernelClass::Elementwise
            | KernelClass::Memcpy
            | KernelClass::Memset => (scale(src.device.hbm_bytes_per_s() / tgt.device.hbm_bytes_per_s()), Basis::Class),
            KernelClass::DeepEpNormal => {
                let rate = |h: &Hardware, sms: u32| {
                    let sm_bound = h.device.comm_gb_per_s_per_sm.map_or(f64::INFINITY, |g| g * 1e9 * sms as f64);
                    h.nic_bytes_per_s.min(sm_bound)
                };
                let src_sms = src.comm_sms.unwrap_or(op.grid[0].max(1));
                let tgt_sms = tgt.comm_sms.unwrap_or(src_sms);
                (scale(rate(src, src_sms) / rate(tgt, tgt_sms)), Basis::Class)
            }
            KernelClass::DeepEpLowLatency => (scale(src.nic_bytes_per_s / tgt.nic_bytes_per_s), Basis::Class),
            KernelClass::NcclCollective | KernelClass::NcclSendRecv => {
                let group = op.collective.as_ref().and_then(|c| c.group_size).or(world_size).unwrap_or(8);
                let r = if group <= 8 {
                    src.nvlink_bytes_per_s / tgt.nvlink_bytes_per_s
                } else {
                    src.nic_bytes_per_s / tgt.nic_bytes_per_s
                };
                (scale(r), Basis::Class)
            }
            _ => (op.dur_ns, Basis::Kept),
        }
    }

    /// Slow-down of a tensor op from the SMs a communication kernel held
    /// during `overlap` of it: SMs left on the source over SMs left on the
    /// target, as fractions of each device.
    fn sm_factor(&self, overlap: f64, held_sms: u32) -> f64 {
        if overlap <= 0.0 || held_sms == 0 {
            return 1.0;
        }
        let (s, t) = (&self.source.device, &self.target.device);
        let tgt_held = self.target.comm_sms.unwrap_or(held_sms);
        let left = |sms: u32, held: u32| (sms.saturating_sub(held).max(1)) as f64 / sms.max(1) as f64;
        let r = left(s.sms, held_sms) / left(t.sms, tgt_held);
        1.0 - overlap + overlap * r
    }

    /// model(target) / model(source) from the parent op's shapes.
    fn shape_ratio(&self, op: &GpuOp) -> Option<f64> {
        let cost_op = shape_op(op)?;
        let s = op_cost(&self.source.device, &cost_op).ok()?;
        let t = op_cost(&self.target.device, &cost_op).ok()?;
        (s.time_s > 0.0 && t.time_s.is_finite()).then(|| t.time_s / s.time_s)
    }
}

/// The number format a kernel name implies.
fn dtype_of_name(name: &str) -> Dtype {
    let n = name.to_ascii_lowercase();
    if n.contains("fp8") || n.contains("e4m3") || n.contains("e5m2") {
        Dtype::Fp8
    } else if n.contains("sgemm") || n.contains("f32f32") || n.contains("fp32") {
        Dtype::Fp32
    } else {
        Dtype::Bf16
    }
}

fn dtype_of_type(t: Option<&String>) -> Dtype {
    let t = t.map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    if t.contains("float8") || t.contains("fp8") {
        Dtype::Fp8
    } else if t.contains("half") && !t.contains("bfloat") {
        Dtype::Fp16
    } else if t == "float" || t.contains("float32") {
        Dtype::Fp32
    } else {
        Dtype::Bf16
    }
}

fn positive(v: i64) -> Option<u64> {
    (v > 0).then_some(v as u64)
}

/// The cost-model op of a GPU op whose parent CPU op recorded its inputs,
/// if the parent is one the models know and its class matches.
pub fn shape_op(op: &GpuOp) -> Option<Op> {
    let (name, inputs) = op.parent.as_ref()?;
    let d = &inputs.dims;
    let dtype = dtype_of_type(inputs.types.first());
    let base = name.rsplit("::").next().unwrap_or(name);
    let gemm = |a: &[i64], b: &[i64], dtype: Dtype| -> Option<Op> {
        match (a.len(), b.len()) {
            (2, 2) => Some(Op::Gemm(GemmShape::plain(positive(a[0])?, positive(b[1])?, positive(a[1])?, dtype))),
            (3, 3) => {
                let mut s = GemmShape::plain(positive(a[1])?, positive(b[2])?, positive(a[2])?, dtype);
                s.groups = positive(a[0])?;
                Some(Op::Gemm(s))
            }
            _ => None,
        }
    };
    match (op.class, base) {
        (KernelClass::Gemm | KernelClass::GroupedGemm, "mm") => gemm(d.first()?, d.get(1)?, dtype),
        (KernelClass::Gemm | KernelClass::GroupedGemm, "_scaled_mm") => gemm(d.first()?, d.get(1)?, Dtype::Fp8),
        (KernelClass::Gemm | KernelClass::GroupedGemm, "addmm" | "baddbmm") => {
            gemm(d.get(1)?, d.get(2)?, dtype_of_type(inputs.types.get(1)))
        }
        (KernelClass::Gemm | KernelClass::GroupedGemm, "bmm") => gemm(d.first()?, d.get(1)?, dtype),
        (KernelClass::Gemm, "linear" | "matmul") => {
            let (a, w) = (d.first()?, d.get(1)?);
            let k = positive(*a.last()?)?;
            let m: i64 = a[..a.len().saturating_sub(1)].iter().product();
            let n = if base == "linear" { *w.first()? } else { *w.last()? };
            if base == "matmul" && w.len() != 2 {
                return None;
            }
            Some(Op::Gemm(GemmShape::plain(positive(m)?, positive(n)?, k, dtype)))
        }
        (KernelClass::Attention, b) if b.contains("attention") => {
            let (q, k, v) = (d.first()?, d.get(1)?, d.get(2)?);
            if q.len() != 4 || k.len() != 4 || v.len() != 4 {
                return None;
            }
            // SDPA ops take [batch, heads, seq, dim]; the flash ops [batch, seq, heads, dim].
            let bhsd = b.starts_with("_scaled_dot_product") || b == "scaled_dot_product_attention";
            let (h, s) = if bhsd { (1, 2) } else { (2, 1) };
            let heads = positive(q[h])?;
            let kv_heads = positive(k[h])?;
            if heads % kv_heads != 0 {
                return None;
            }
            Some(Op::Attention(AttentionShape {
                batch: positive(q[0])?,
                q_len: positive(q[s])?,
                kv_len: positive(k[s])?,
                heads,
                kv_heads,
                qk_dim: positive(q[3])?,
                v_dim: positive(v[3])?,
                causal: false,
                dtype,
                pass: if b.contains("backward") { Pass::Backward } else { Pass::Forward },
            }))
        }
        (KernelClass::Norm, b) if b.contains("norm") => {
            let x = d.first()?;
            let hidden = positive(*x.last()?)?;
            let tokens: i64 = x[..x.len().saturating_sub(1)].iter().product();
            Some(Op::Norm {
                tokens: positive(tokens)?,
                hidden,
                dtype,
                pass: if b.contains("backward") { Pass::Backward } else { Pass::Forward },
            })
        }
        _ => None,
    }
}
