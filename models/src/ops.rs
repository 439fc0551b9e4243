//! Op cost models. For now a roofline over tensor compute and HBM with launch
//! overhead; the memory-hierarchy work refines this with tiling and L2.

use serde::Serialize;

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

/// A GEMM (or grouped GEMM: `groups` independent m x n x k products sharing n, k).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmShape {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub groups: u64,
    pub dtype: Dtype,
}

/// The cost of one op on one device, alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpCost {
    pub flops: f64,
    pub hbm_bytes: f64,
    /// Arithmetic time at the dtype's tensor rate on all SMs, seconds.
    pub compute_s: f64,
    /// HBM time at full bandwidth, seconds.
    pub hbm_s: f64,
    /// Launch overhead, seconds.
    pub overhead_s: f64,
    /// max(compute, hbm) + overhead, seconds.
    pub time_s: f64,
    pub bound: Bound,
}

/// Roofline cost of a GEMM: every operand read once from HBM, the output
/// written once (in BF16 for FP8/BF16 inputs, in the input type otherwise),
/// compute at the dtype's dense tensor rate on all SMs, plus launch overhead.
pub fn gemm_cost(device: &DeviceSpec, shape: &GemmShape) -> Result<OpCost, ModelError> {
    for (key, v) in
        [("workload.m", shape.m), ("workload.n", shape.n), ("workload.k", shape.k), ("workload.groups", shape.groups)]
    {
        if v == 0 {
            return Err(ModelError::invalid(key, "expected an integer >= 1, found 0"));
        }
    }
    let (m, n, k, g) = (shape.m as f64, shape.n as f64, shape.k as f64, shape.groups as f64);
    let in_bytes = shape.dtype.bytes();
    let out_bytes = match shape.dtype {
        Dtype::Fp8 | Dtype::Bf16 => 2.0,
        other => other.bytes(),
    };
    let flops = 2.0 * m * n * k * g;
    let hbm_bytes = g * ((m * k + k * n) * in_bytes + m * n * out_bytes);
    let compute_s = flops / device.tensor_flops_per_s(shape.dtype)?;
    let hbm_s = hbm_bytes / device.hbm_bytes_per_s();
    let overhead_s = device.launch_overhead_us * 1e-6;
    let bound = if compute_s >= hbm_s { Bound::Compute } else { Bound::Hbm };
    Ok(OpCost { flops, hbm_bytes, compute_s, hbm_s, overhead_s, time_s: compute_s.max(hbm_s) + overhead_s, bound })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_fp8_gemm_is_compute_bound_and_skinny_is_hbm_bound() {
        let h800 = DeviceSpec::preset("h800").unwrap();
        let big = gemm_cost(&h800, &GemmShape { m: 4096, n: 7168, k: 16384, groups: 1, dtype: Dtype::Fp8 }).unwrap();
        assert_eq!(big.bound, Bound::Compute);
        let flops = 2.0 * 4096.0 * 7168.0 * 16384.0;
        assert!((big.time_s - (flops / 1979e12 + 4e-6)).abs() < 1e-12);
        let skinny = gemm_cost(&h800, &GemmShape { m: 64, n: 2112, k: 7168, groups: 1, dtype: Dtype::Fp8 }).unwrap();
        assert_eq!(skinny.bound, Bound::Hbm);
        // bytes: 64*7168 + 7168*2112 (fp8) + 64*2112*2 (bf16 out)
        assert_eq!(skinny.hbm_bytes, (64.0 * 7168.0 + 7168.0 * 2112.0) + 64.0 * 2112.0 * 2.0);
    }

    #[test]
    fn zero_dimensions_and_missing_fp8_are_errors() {
        let mut d = DeviceSpec::preset("h800").unwrap();
        let e = gemm_cost(&d, &GemmShape { m: 0, n: 1, k: 1, groups: 1, dtype: Dtype::Bf16 }).unwrap_err();
        assert!(e.to_string().contains("workload.m"), "{e}");
        d.fp8_tflops = None;
        let e = gemm_cost(&d, &GemmShape { m: 1, n: 1, k: 1, groups: 1, dtype: Dtype::Fp8 }).unwrap_err();
        assert!(e.to_string().contains("no FP8"), "{e}");
    }
}
