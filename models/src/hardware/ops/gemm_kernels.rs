//! Which FP8 GEMM kernels a run launches (`[parallel] gemm_kernels`).
//!
//! The GEMM cost model is fitted to and validated on DeepGEMM's published
//! figures (`validation/deepgemm.toml`). DeepSeek trained V3 with its own
//! earlier kernels: the profile's GEMMs (profile-data `train.json`,
//! 2025-02-27) are `cutlass::device_kernel<dpsk::grouped_gemm::...>`, "our
//! internally and carefully optimized implementation based on CUTLASS 3.6"
//! that DeepGEMM's first README (a6d97a1, 2025-02-25, H800, NVCC 12.8)
//! compares against: for every shape it benchmarks it gives DeepGEMM's
//! speedup over that implementation. An internal kernel here takes the
//! DeepGEMM model's time times the speedup of the nearest published shape of
//! its layout (nearest in log M, N, K: the README's rows are the shapes
//! DeepSeek-V3 runs). Nothing is fitted: the speedups are the README's,
//! rounded to 0.1x as it prints them.

use serde::Deserialize;

use super::{GemmLayout, GemmShape};
use crate::hardware::device::Dtype;

/// The FP8 GEMM kernels a run launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GemmKernels {
    /// DeepGEMM (open-sourced 2025-02-25): the cost model as validated.
    #[default]
    Deepgemm,
    /// DeepSeek's internal CUTLASS 3.6-based kernels, which V3 was trained
    /// with and DeepGEMM's first README measures itself against.
    DeepseekInternal,
}

/// DeepGEMM's first README, normal GEMMs: (M, N, K, speedup over the
/// internal implementation).
const NORMAL: [(f64, f64, f64, f64); 18] = [
    (64.0, 2112.0, 7168.0, 2.7),
    (64.0, 24576.0, 1536.0, 1.7),
    (64.0, 32768.0, 512.0, 1.8),
    (64.0, 7168.0, 16384.0, 1.4),
    (64.0, 4096.0, 7168.0, 1.4),
    (64.0, 7168.0, 2048.0, 1.7),
    (128.0, 2112.0, 7168.0, 2.4),
    (128.0, 24576.0, 1536.0, 1.6),
    (128.0, 32768.0, 512.0, 1.5),
    (128.0, 7168.0, 16384.0, 1.4),
    (128.0, 4096.0, 7168.0, 2.0),
    (128.0, 7168.0, 2048.0, 1.7),
    (4096.0, 2112.0, 7168.0, 1.1),
    (4096.0, 24576.0, 1536.0, 1.0),
    (4096.0, 32768.0, 512.0, 1.0),
    (4096.0, 7168.0, 16384.0, 1.2),
    (4096.0, 4096.0, 7168.0, 1.1),
    (4096.0, 7168.0, 2048.0, 1.1),
];

/// The same README, grouped GEMMs in the contiguous layout: (M per group,
/// N, K, speedup; 4 or 8 groups).
const CONTIGUOUS: [(f64, f64, f64, f64); 4] = [
    (8192.0, 4096.0, 7168.0, 1.2),
    (8192.0, 7168.0, 2048.0, 1.2),
    (4096.0, 4096.0, 7168.0, 1.2),
    (4096.0, 7168.0, 2048.0, 1.1),
];

/// The same README, grouped GEMMs in the masked layout: (M per group, N, K,
/// speedup; 1, 2 or 4 groups).
const MASKED: [(f64, f64, f64, f64); 6] = [
    (1024.0, 4096.0, 7168.0, 1.2),
    (1024.0, 7168.0, 2048.0, 1.2),
    (512.0, 4096.0, 7168.0, 1.2),
    (512.0, 7168.0, 2048.0, 1.2),
    (256.0, 4096.0, 7168.0, 1.1),
    (256.0, 7168.0, 2048.0, 1.2),
];

impl GemmKernels {
    /// The scenario's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            GemmKernels::Deepgemm => "deepgemm",
            GemmKernels::DeepseekInternal => "deepseek-internal",
        }
    }

    /// How many times DeepGEMM's time these kernels take for `shape`: 1 for
    /// DeepGEMM and for GEMMs not in FP8; for the internal kernels the
    /// published speedup of the nearest benchmarked shape of the layout
    /// (plain GEMMs by M, N, K; grouped ones by M per group, N, K).
    pub fn slowdown(self, shape: &GemmShape) -> f64 {
        if self == GemmKernels::Deepgemm || shape.dtype != Dtype::Fp8 {
            return 1.0;
        }
        let table: &[(f64, f64, f64, f64)] = match (shape.groups > 1, shape.layout) {
            (false, _) => &NORMAL,
            (true, GemmLayout::Contiguous) => &CONTIGUOUS,
            (true, GemmLayout::Masked) => &MASKED,
        };
        let (m, n, k) = (shape.m.max(1) as f64, shape.n.max(1) as f64, shape.k.max(1) as f64);
        let distance = |&(tm, tn, tk, _): &(f64, f64, f64, f64)| -> f64 {
            (m / tm).ln().powi(2) + (n / tn).ln().powi(2) + (k / tk).ln().powi(2)
        };
        table.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))).map_or(1.0, |row| row.3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_kernels_take_the_speedup_of_the_nearest_published_shape() {
        let fp8 = |m, n, k| GemmShape::plain(m, n, k, Dtype::Fp8);
        let internal = GemmKernels::DeepseekInternal;
        // Published shapes give their own speedup.
        assert_eq!(internal.slowdown(&fp8(4096, 7168, 16384)), 1.2);
        assert_eq!(internal.slowdown(&fp8(64, 2112, 7168)), 2.7);
        // A training projection: 4,096 tokens x 7,168 -> 1,536 (q_a_proj) is
        // nearest to 4096 x 2112 x 7168.
        assert_eq!(internal.slowdown(&fp8(4096, 1536, 7168)), 1.1);
        // Expert GEMMs of EP64 training: 4 groups of 8,192 rows.
        let experts = GemmShape { groups: 4, ..fp8(8192, 4096, 7168) };
        assert_eq!(internal.slowdown(&experts), 1.2);
        let masked = GemmShape { groups: 4, layout: GemmLayout::Masked, ..fp8(256, 4096, 7168) };
        assert_eq!(internal.slowdown(&masked), 1.1);
        // DeepGEMM itself, and BF16 GEMMs, are not slowed.
        assert_eq!(GemmKernels::Deepgemm.slowdown(&experts), 1.0);
        assert_eq!(internal.slowdown(&GemmShape::plain(4096, 7168, 16384, Dtype::Bf16)), 1.0);
    }
}
