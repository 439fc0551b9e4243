//! Kernel classes from a GPU event's name (and kind): what a kernel is
//! decides how a what-if re-costs it and whether it counts as compute or
//! communication in the overlap figures.
//!
//! The rules are substring tests on the lower-cased (demangled) name, most
//! specific first: DeepEP (`deep_ep`, `dpsk::ep`), NCCL, grouped and plain
//! GEMMs (DeepGEMM, cuBLAS, CUTLASS, nvjet), attention (flash, fmha), then
//! the memory-bound families (norm, cast, reduction, elementwise).

use serde::Serialize;

use super::kineto::EventKind;

/// What a GPU op is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelClass {
    Gemm,
    GroupedGemm,
    Attention,
    Norm,
    Cast,
    Reduction,
    Elementwise,
    /// DeepEP normal (high-throughput) dispatch, combine and their notify
    /// and layout kernels.
    DeepEpNormal,
    /// DeepEP low-latency (decode) dispatch and combine.
    DeepEpLowLatency,
    /// NCCL collectives (all-reduce, all-gather, reduce-scatter, all-to-all).
    NcclCollective,
    NcclSendRecv,
    Memcpy,
    Memset,
    /// A kernel no rule recognises (kept at its measured time in what-ifs).
    Other,
}

impl KernelClass {
    pub const ALL: [KernelClass; 14] = [
        KernelClass::Gemm,
        KernelClass::GroupedGemm,
        KernelClass::Attention,
        KernelClass::Norm,
        KernelClass::Cast,
        KernelClass::Reduction,
        KernelClass::Elementwise,
        KernelClass::DeepEpNormal,
        KernelClass::DeepEpLowLatency,
        KernelClass::NcclCollective,
        KernelClass::NcclSendRecv,
        KernelClass::Memcpy,
        KernelClass::Memset,
        KernelClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KernelClass::Gemm => "gemm",
            KernelClass::GroupedGemm => "grouped-gemm",
            KernelClass::Attention => "attention",
            KernelClass::Norm => "norm",
            KernelClass::Cast => "cast",
            KernelClass::Reduction => "reduction",
            KernelClass::Elementwise => "elementwise",
            KernelClass::DeepEpNormal => "deepep-normal",
            KernelClass::DeepEpLowLatency => "deepep-low-latency",
            KernelClass::NcclCollective => "nccl-collective",
            KernelClass::NcclSendRecv => "nccl-send-recv",
            KernelClass::Memcpy => "memcpy",
            KernelClass::Memset => "memset",
            KernelClass::Other => "other",
        }
    }

    /// Communication kernels (counted as communication in overlap figures).
    pub fn is_comm(self) -> bool {
        matches!(
            self,
            KernelClass::DeepEpNormal
                | KernelClass::DeepEpLowLatency
                | KernelClass::NcclCollective
                | KernelClass::NcclSendRecv
        )
    }

    /// DeepEP kernels.
    pub fn is_deepep(self) -> bool {
        matches!(self, KernelClass::DeepEpNormal | KernelClass::DeepEpLowLatency)
    }

    /// Tensor-core arithmetic (compute-bound by default).
    pub fn is_tensor(self) -> bool {
        matches!(self, KernelClass::Gemm | KernelClass::GroupedGemm | KernelClass::Attention)
    }

    /// The engine's statistics class.
    pub fn task_class(self) -> moesim_sim::TaskClass {
        use moesim_sim::TaskClass;
        if self.is_comm() {
            TaskClass::Communication
        } else if matches!(self, KernelClass::Memcpy | KernelClass::Memset) {
            TaskClass::Memory
        } else {
            TaskClass::Compute
        }
    }
}

/// The class of a GPU op of `kind` named `name`.
pub fn classify(kind: EventKind, name: &str) -> KernelClass {
    match kind {
        EventKind::Memcpy => return KernelClass::Memcpy,
        EventKind::Memset => return KernelClass::Memset,
        _ => {}
    }
    let n = name.to_ascii_lowercase();
    let has = |s: &str| n.contains(s);
    if has("deep_ep") || has("deepep") || has("dpsk::ep") {
        return if has("low_latency") || has("internode_ll") || has("::ll::") {
            KernelClass::DeepEpLowLatency
        } else {
            KernelClass::DeepEpNormal
        };
    }
    if has("nccl") {
        return if has("sendrecv") || has("send") || has("recv") {
            KernelClass::NcclSendRecv
        } else {
            KernelClass::NcclCollective
        };
    }
    if has("grouped_gemm") || has("m_grouped") || has("groupedgemm") || has("grouped_mm") || has("moe_gemm") {
        // DeepGEMM's layout helpers (transposes) are memory passes.
        return if has("transpose") { KernelClass::Elementwise } else { KernelClass::GroupedGemm };
    }
    if has("flash") || has("fmha") || has("attention") || has("attn") || (has("mla") && has("kernel")) {
        return KernelClass::Attention;
    }
    if has("gemm")
        || has("cublas")
        || has("cutlass")
        || has("nvjet")
        || has("sgemm")
        || has("hgemm")
        || has("xmma")
        || has("_mma")
        || has("wgmma")
        || has("matmul")
    {
        return KernelClass::Gemm;
    }
    if has("norm") {
        return KernelClass::Norm;
    }
    if has("cast") || has("fp8") || has("quant") {
        return KernelClass::Cast;
    }
    if has("reduce") || has("sum_functor") || has("topk") || has("softmax") || has("sort") || has("scan") {
        return KernelClass::Reduction;
    }
    if has("elementwise")
        || has("copy")
        || has("fill")
        || has("transpose")
        || has("gather")
        || has("scatter")
        || has("index")
        || has("swiglu")
        || has("silu")
        || has("gelu")
        || has("rotary")
        || has("add")
        || has("mul")
        || has("cat")
        || has("expand")
        || has("expert")
        || has("mapping")
        || has("indices")
        || has("permute")
        || has("unique")
    {
        return KernelClass::Elementwise;
    }
    KernelClass::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_real_traces() {
        let k = EventKind::Kernel;
        assert_eq!(
            classify(k, "void dpsk::ep::internode::dispatch<false, 8, true, 8>(int)"),
            KernelClass::DeepEpNormal
        );
        assert_eq!(classify(k, "void deep_ep::internode_ll::dispatch<false, 8>(void*)"), KernelClass::DeepEpLowLatency);
        assert_eq!(
            classify(k, "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)"),
            KernelClass::NcclCollective
        );
        assert_eq!(classify(k, "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(x)"), KernelClass::NcclSendRecv);
        assert_eq!(
            classify(k, "void cutlass::device_kernel<dpsk::grouped_gemm::cuda::m_grouped_fp8_ptp128c::GemmKernel>"),
            KernelClass::GroupedGemm
        );
        assert_eq!(
            classify(k, "void dpsk::grouped_gemm::cuda::utils::transpose<512, 128, 4, 4>"),
            KernelClass::Elementwise
        );
        assert_eq!(classify(k, "ampere_sgemm_128x64_nn"), KernelClass::Gemm);
        assert_eq!(classify(k, "nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTT"), KernelClass::Gemm);
        assert_eq!(classify(k, "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits>"), KernelClass::Attention);
        assert_eq!(
            classify(k, "void cuda::per_token_cast_to_fp8_with_channels<__nv_bfloat16, 128>"),
            KernelClass::Cast
        );
        assert_eq!(classify(k, "void at::native::reduce_kernel<512, 1>"), KernelClass::Reduction);
        assert_eq!(classify(k, "void at::native::vectorized_elementwise_kernel<4>"), KernelClass::Elementwise);
        assert_eq!(classify(EventKind::Memcpy, "Memcpy DtoH (Device -> Pageable)"), KernelClass::Memcpy);
        assert_eq!(classify(k, "mystery"), KernelClass::Other);
    }
}
