//! Op cost models: what one kernel costs on one device, alone.
//!
//! Every workload (a GEMM micro-benchmark, a training step, a decode
//! iteration) asks [`op_cost`] for each kernel it lowers and turns the answer
//! into an engine [`Kernel`] with [`OpCost::kernel`]. The engine then shares
//! the device's SMs and HBM among kernels running at once, so the cost here
//! is the kernel *alone*: arithmetic time on every SM, bytes to and from HBM,
//! and how many SMs (CTAs) it can use at most.
//!
//! The model today is a roofline over tensor compute and HBM plus launch
//! overhead; the memory-hierarchy work refines it (tiling, L2, wave
//! quantisation) behind this same interface.

use moesim_sim::{DeviceId, Kernel, SimDuration, UnitDemand};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hardware::{DeviceSpec, Dtype};

/// Which resource bounds an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Hbm,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Hbm => "hbm",
        }
    }
}

/// Grouped-GEMM layouts (DeepGEMM's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
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

/// The cost of one op on one device, alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpCost {
    pub flops: f64,
    pub hbm_bytes: f64,
    /// Arithmetic time on every SM at the op's rate, seconds.
    pub compute_s: f64,
    /// HBM time at full bandwidth, seconds.
    pub hbm_s: f64,
    /// Launch overhead, seconds.
    pub overhead_s: f64,
    /// max(compute, hbm) + overhead, seconds.
    pub time_s: f64,
    pub bound: Bound,
    /// The most SMs the kernel can use (its CTA count, at most the device's).
    pub max_units: u32,
}

impl OpCost {
    fn new(device: &DeviceSpec, flops: f64, flops_per_s: f64, hbm_bytes: f64, max_units: u32) -> OpCost {
        let compute_s = flops / flops_per_s;
        let hbm_s = hbm_bytes / device.hbm_bytes_per_s();
        let overhead_s = device.launch_overhead_us * 1e-6;
        let bound = if compute_s >= hbm_s { Bound::Compute } else { Bound::Hbm };
        OpCost {
            flops,
            hbm_bytes,
            compute_s,
            hbm_s,
            overhead_s,
            time_s: compute_s.max(hbm_s) + overhead_s,
            bound,
            max_units: max_units.clamp(1, device.sms),
        }
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

/// The cost of `op` on `device`.
pub fn op_cost(device: &DeviceSpec, op: &Op) -> Result<OpCost, ModelError> {
    match op {
        Op::Gemm(shape) => gemm_cost(device, shape),
        Op::Attention(a) => attention_cost(device, a),
        Op::Norm { tokens, hidden, dtype, pass } => {
            at_least_one(&[("tokens", *tokens), ("hidden", *hidden)])?;
            let elems = (*tokens * *hidden) as f64;
            // Forward reads x and writes y; backward reads x and dy, writes dx.
            let (rw, flops) = match pass {
                Pass::Forward => (2.0, 4.0 * elems),
                Pass::Backward => (3.0, 8.0 * elems),
            };
            Ok(OpCost::new(device, flops, device.fp32_tflops * 1e12, rw * elems * dtype.bytes(), device.sms))
        }
        Op::Elementwise { read_bytes, write_bytes, flops } => {
            for (k, v) in [("read_bytes", *read_bytes), ("write_bytes", *write_bytes), ("flops", *flops)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ModelError::invalid(k, format!("expected a non-negative number, found {v}")));
                }
            }
            Ok(OpCost::new(device, *flops, device.fp32_tflops * 1e12, read_bytes + write_bytes, device.sms))
        }
    }
}

/// Roofline cost of a GEMM: every operand read once from HBM, the output
/// written once (in BF16 for FP8/BF16 inputs, in the input type otherwise),
/// compute at the dtype's dense tensor rate on all SMs, plus launch overhead.
pub fn gemm_cost(device: &DeviceSpec, shape: &GemmShape) -> Result<OpCost, ModelError> {
    at_least_one(&[
        ("workload.m", shape.m),
        ("workload.n", shape.n),
        ("workload.k", shape.k),
        ("workload.groups", shape.groups),
    ])?;
    let (m, n, k, g) = (shape.m as f64, shape.n as f64, shape.k as f64, shape.groups as f64);
    let in_bytes = shape.dtype.bytes();
    let out_bytes = match shape.dtype {
        Dtype::Fp8 | Dtype::Bf16 => 2.0,
        other => other.bytes(),
    };
    let flops = 2.0 * m * n * k * g;
    let hbm_bytes = g * ((m * k + k * n) * in_bytes + m * n * out_bytes);
    OpCost::new_checked(device, flops, shape.dtype, hbm_bytes, device.sms)
}

/// Roofline cost of fused attention: Q, K, V read once and O written once
/// (forward); backward also reads O and dO and writes dQ, dK, dV, and does
/// 2.5x the forward arithmetic (the score matrix is recomputed).
pub fn attention_cost(device: &DeviceSpec, a: &AttentionShape) -> Result<OpCost, ModelError> {
    at_least_one(&[
        ("batch", a.batch),
        ("q_len", a.q_len),
        ("kv_len", a.kv_len),
        ("heads", a.heads),
        ("kv_heads", a.kv_heads),
        ("qk_dim", a.qk_dim),
        ("v_dim", a.v_dim),
    ])?;
    let (b, q, kv, h, hk) = (a.batch as f64, a.q_len as f64, a.kv_len as f64, a.heads as f64, a.kv_heads as f64);
    let (dqk, dv) = (a.qk_dim as f64, a.v_dim as f64);
    // Keys each query sees on average.
    let seen = if a.causal { (kv - q).max(0.0) + (q + 1.0) / 2.0 } else { kv };
    let fwd_flops = 2.0 * b * h * q * seen * (dqk + dv);
    let e = a.dtype.bytes();
    let q_bytes = b * q * h * dqk * e;
    let kv_bytes = b * kv * hk * (dqk + dv) * e;
    let o_bytes = b * q * h * dv * e;
    let (flops, bytes) = match a.pass {
        Pass::Forward => (fwd_flops, q_bytes + kv_bytes + o_bytes),
        Pass::Backward => (2.5 * fwd_flops, 2.0 * (q_bytes + kv_bytes) + 2.0 * o_bytes),
    };
    OpCost::new_checked(device, flops, a.dtype, bytes, device.sms)
}

impl OpCost {
    fn new_checked(
        device: &DeviceSpec,
        flops: f64,
        dtype: Dtype,
        hbm_bytes: f64,
        max_units: u32,
    ) -> Result<OpCost, ModelError> {
        Ok(OpCost::new(device, flops, device.tensor_flops_per_s(dtype)?, hbm_bytes, max_units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_fp8_gemm_is_compute_bound_and_skinny_is_hbm_bound() {
        let h800 = DeviceSpec::preset("h800").unwrap();
        let big = gemm_cost(&h800, &GemmShape::plain(4096, 7168, 16384, Dtype::Fp8)).unwrap();
        assert_eq!(big.bound, Bound::Compute);
        let flops = 2.0 * 4096.0 * 7168.0 * 16384.0;
        assert!((big.time_s - (flops / 1979e12 + 4e-6)).abs() < 1e-12);
        let skinny = gemm_cost(&h800, &GemmShape::plain(64, 2112, 7168, Dtype::Fp8)).unwrap();
        assert_eq!(skinny.bound, Bound::Hbm);
        // bytes: 64*7168 + 7168*2112 (fp8) + 64*2112*2 (bf16 out)
        assert_eq!(skinny.hbm_bytes, (64.0 * 7168.0 + 7168.0 * 2112.0) + 64.0 * 2112.0 * 2.0);
    }

    #[test]
    fn zero_dimensions_and_missing_fp8_are_errors() {
        let mut d = DeviceSpec::preset("h800").unwrap();
        let e = gemm_cost(&d, &GemmShape::plain(0, 1, 1, Dtype::Bf16)).unwrap_err();
        assert!(e.to_string().contains("workload.m"), "{e}");
        d.fp8_tflops = None;
        let e = gemm_cost(&d, &GemmShape::plain(1, 1, 1, Dtype::Fp8)).unwrap_err();
        assert!(e.to_string().contains("no FP8"), "{e}");
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
    }
}
