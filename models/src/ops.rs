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

/// Roofline cost of a GEMM.
pub fn gemm_cost(device: &DeviceSpec, shape: &GemmShape) -> Result<OpCost, ModelError> {
    let _ = (device, shape);
    todo!()
}
