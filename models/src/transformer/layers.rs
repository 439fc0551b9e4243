//! The kernels of one pipeline unit (embedding, a transformer layer, an MTP
//! module, the output head) for one micro-batch on one rank, forward and
//! backward, costed by the op models.
//!
//! A unit's pass is a [`Block`] with a fixed shape that the lowering can
//! interleave with another block (DualPipe's overlapped forward + backward):
//!
//! ```text
//! pre ─► comm_a ─┬─► side ─► mid ─► comm_b ─► post          compute waits:
//!                │          (waits comm_a)    (waits comm_b)  mid for comm_a,
//!                └──────────────────────────────────────┘    post for comm_b
//! ```
//!
//! Forward MoE layer: pre = attention, norm, gate; comm_a = dispatch; side =
//! shared expert; mid = routed experts; comm_b = combine; post = weighted sum.
//! Backward MoE layer: pre = weighted-sum backward; comm_a = combine backward
//! (gradients to the experts, FP8 like the dispatch); side = shared expert
//! backward; mid = routed experts backward; comm_b = dispatch backward (BF16
//! like the combine); post = gate, norm and attention backward (with the
//! recomputation DeepSeek-V3 does: RMSNorm and MLA up-projections). The
//! weight-gradient GEMMs (W) are kept apart in `weight_mid` (experts) and
//! `weight_post` (the rest) so zero-bubble schedules can move them.
//!
//! Tensor parallelism splits attention heads, dense FFNs, shared experts and
//! the vocabulary; routed experts are split by expert parallelism only. A
//! tensor-parallel all-reduce is an inline item the next kernel waits for.

use moesim_sim::TaskClass;

use crate::error::ModelError;
use crate::hardware::device::{DeviceSpec, Dtype};
use crate::hardware::ops::gemm_kernels::GemmKernels;
use crate::hardware::ops::{op_cost_with, AttentionShape, GemmLayout, GemmShape, Op, OpCost, OpOptions, Pass};
use crate::transformer::model::{AttentionKind, FfnActivation, FfnKind, ModelConfig};
use crate::transformer::parallel::CpComm;
use crate::transformer::routing::MoePhase;

/// A piece of the model a pipeline stage can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Embedding,
    /// Transformer layer `i` (0-based).
    Layer(u32),
    /// Multi-token-prediction module `i` (one layer plus its projection and
    /// the shared head).
    Mtp(u32),
    Head,
}

impl Unit {
    pub fn label(self) -> String {
        match self {
            Unit::Embedding => "embed".into(),
            Unit::Layer(i) => format!("L{i}"),
            Unit::Mtp(i) => format!("MTP{i}"),
            Unit::Head => "head".into(),
        }
    }
}

/// One kernel with its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelItem {
    pub label: String,
    pub op: Op,
    pub cost: OpCost,
    pub class: TaskClass,
}

/// What a kernel is, in the classes a profile's kernels fall into: the
/// classes launch gaps are given per (`[workload] launch_gaps_us`) and the
/// calibration against DeepSeek's profile compares (`moesim calibrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelKind {
    /// Plain and grouped GEMMs (DeepGEMM, cuBLAS).
    Gemm,
    /// Fused attention (FlashAttention, FlashMLA).
    Attention,
    /// Norms and FP8 casts (quantisation): memory-bound passes with a name.
    CastOrNorm,
    /// Every other memory-bound pass (activations, residual adds, the
    /// router's passes, permutes, gradient accumulation).
    Other,
}

impl KernelKind {
    pub const ALL: [KernelKind; 4] =
        [KernelKind::Gemm, KernelKind::Attention, KernelKind::CastOrNorm, KernelKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            KernelKind::Gemm => "gemm",
            KernelKind::Attention => "attention",
            KernelKind::CastOrNorm => "cast-norm",
            KernelKind::Other => "other",
        }
    }
}

impl KernelItem {
    /// The kernel's class: from its op, casts by their name (a cast is an
    /// elementwise pass labelled `... cast`).
    pub fn kind(&self) -> KernelKind {
        match &self.op {
            Op::Gemm(_) => KernelKind::Gemm,
            Op::Attention(_) => KernelKind::Attention,
            Op::Norm { .. } => KernelKind::CastOrNorm,
            Op::Elementwise { .. } if self.label.contains(" cast") => KernelKind::CastOrNorm,
            Op::Elementwise { .. } => KernelKind::Other,
        }
    }
}

/// A step of a block's compute sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Kernel(Box<KernelItem>),
    /// A blocking all-reduce over the tensor-parallel group, bytes per rank.
    TpAllReduce {
        label: String,
        bytes: f64,
    },
    /// A blocking all-gather (or reduce-scatter: the same bytes on the
    /// wire) over the context-parallel group; `bytes` is the whole gathered
    /// buffer of one rank.
    CpCollective {
        label: String,
        bytes: f64,
    },
    /// One ring-attention transfer: the key/value chunk in hand (`bytes`)
    /// to the context-parallel successor, beside the computation. The first
    /// of a run waits for the items before it; later ones follow the
    /// previous transfer (the chunk received is the one forwarded).
    CpSend {
        label: String,
        bytes: f64,
        first: bool,
    },
    /// The computation waits for the oldest outstanding [`Item::CpSend`]
    /// (the chunk the next attention step reads).
    CpWait {
        label: String,
    },
}

impl Item {
    /// The item's label (a kernel's or a transfer's).
    pub fn label_mut(&mut self) -> &mut String {
        match self {
            Item::Kernel(k) => &mut k.label,
            Item::TpAllReduce { label, .. }
            | Item::CpCollective { label, .. }
            | Item::CpSend { label, .. }
            | Item::CpWait { label } => label,
        }
    }
}

/// An expert-parallel all-to-all of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpComm {
    /// Which DeepEP kernel shape it has (a backward combine is dispatch-shaped).
    pub phase: MoePhase,
    /// Payload bytes per token copy.
    pub bytes_per_token: f64,
}

/// One pass of one unit for one micro-batch (see the module doc).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    pub unit: Option<Unit>,
    pub pre: Vec<Item>,
    pub comm_a: Option<EpComm>,
    pub side: Vec<Item>,
    pub mid: Vec<Item>,
    pub comm_b: Option<EpComm>,
    pub post: Vec<Item>,
    /// Weight-gradient kernels of the expert part (backward only).
    pub weight_mid: Vec<Item>,
    /// Weight-gradient kernels of the rest (backward only).
    pub weight_post: Vec<Item>,
}

impl Block {
    /// Every item in issue order of a non-overlapped pass (W included).
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.pre
            .iter()
            .chain(&self.side)
            .chain(&self.mid)
            .chain(&self.post)
            .chain(&self.weight_mid)
            .chain(&self.weight_post)
    }

    /// The kernels among the items.
    pub fn kernels(&self) -> impl Iterator<Item = &KernelItem> {
        self.items().filter_map(|i| match i {
            Item::Kernel(k) => Some(k.as_ref()),
            _ => None,
        })
    }

    /// Sum of the kernels' solo times (launch overhead included), seconds.
    pub fn kernel_time_s(&self) -> f64 {
        self.kernels().map(|k| k.cost.time_s).sum()
    }

    /// Sum of the kernels' FLOPs.
    pub fn flops(&self) -> f64 {
        self.kernels().map(|k| k.cost.flops).sum()
    }
}

/// The items of one unit's blocks that depend on its expert rows
/// ([`LayerContext::expert_items`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpertItems {
    /// The forward block's `mid`.
    pub forward_mid: Vec<Item>,
    /// The backward block's `mid`.
    pub backward_mid: Vec<Item>,
    /// The routed experts' weight gradients: the tail of the backward
    /// block's `weight_mid`.
    pub backward_weight: Vec<Item>,
}

/// What a forward pass computes, which sets the attention's queries and
/// keys, how routed experts are laid out and what the head does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassMode {
    /// Training: the `seq_len` tokens of each sequence attend causally to
    /// each other; the head computes the loss over every token.
    #[default]
    Training,
    /// Prefill of the last `seq_len` tokens of each prompt after `cached`
    /// tokens found in the prefix cache: queries are the new tokens, keys
    /// the whole prompt (causal); MLA up-projects the cached latents for
    /// the prefix; the head computes the logits of each prompt's last token.
    Prefill { cached: u64 },
    /// Decode: `seq_len` new tokens per sequence (1, or 1 + the MTP draft
    /// being verified) over a KV cache of `context` tokens. MLA runs
    /// absorbed (one latent KV head, 576/512; the query and output
    /// up-projections become per-head batched GEMMs), routed experts are
    /// masked grouped GEMMs fed by the low-latency dispatch (no permute),
    /// and the head computes the logits of every new token.
    Decode { context: u64 },
}

/// What the backward pass recomputes instead of storing (Korthikanti et
/// al. 2022, "Reducing Activation Recomputation in Large Transformer
/// Models", §4-5; DeepSeek-V3 §3.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Recompute {
    /// Store every activation the backward pass reads.
    #[default]
    None,
    /// Korthikanti's selective recomputation: the attention core (scores,
    /// softmax, dropout) is recomputed, nothing else. Fused attention
    /// ([`AttentionKernel::Flash`]) never materialises the scores and
    /// recomputes them in its backward anyway, so there this stores and
    /// costs what `None` does; with [`AttentionKernel::Materialized`] the
    /// scores are not stored and their GEMM, softmax and dropout run again
    /// in the backward pass.
    Selective,
    /// Keep each layer's input only and run the layer's forward again in
    /// the backward pass.
    Full,
    /// DeepSeek-V3's recipe (§3.3.2-3, `recompute = true`): RMSNorm and the
    /// MLA up-projections recomputed, linear inputs cached in FP8 under FP8
    /// training, SwiGLU outputs recomputed from their cached inputs.
    NormsAndUpProjections,
}

impl Recompute {
    pub fn as_str(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
            Recompute::NormsAndUpProjections => "norms-and-up-projections",
        }
    }
}

/// How attention is computed (`[workload] attention_kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKernel {
    /// One fused kernel (FlashAttention, FlashMLA, 2022 on): the scores
    /// stay in shared memory and registers, never in HBM.
    #[default]
    Flash,
    /// The scores materialised in HBM, as Megatron-LM did before
    /// FlashAttention (Narayanan et al. SC'21 §4.2; Korthikanti et al. 2022
    /// Table 2's `5as/h` term): a batched QK^T GEMM writes `b x heads x s^2`
    /// BF16 scores, a fused scale-mask-softmax reads and writes them, a
    /// dropout reads them and writes its output and a one-byte mask (when
    /// the model has dropout), and a batched GEMM multiplies them by V. The
    /// backward pass reads and writes the same `s^2` tensors again, and
    /// selective recomputation re-runs the score GEMM, softmax and dropout.
    Materialized,
}

impl AttentionKernel {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionKernel::Flash => "flash",
            AttentionKernel::Materialized => "materialized",
        }
    }
}

/// What every block of one rank shares.
#[derive(Debug, Clone)]
pub struct LayerContext<'a> {
    pub model: &'a ModelConfig,
    pub device: &'a DeviceSpec,
    /// Sequences per micro-batch on this rank.
    pub sequences: u64,
    /// Tokens per sequence computed by this pass (queries).
    pub seq_len: u64,
    /// Training, prefill (with a prefix-cache hit) or decode.
    pub mode: PassMode,
    pub tp: u32,
    /// Context-parallel ranks sharing each sequence (training only):
    /// `seq_len` is then this rank's share of the sequence.
    pub cp: u32,
    /// How the context-parallel ranks exchange keys and values.
    pub cp_comm: CpComm,
    /// Routed experts hosted by each rank (expert parallelism).
    pub experts_per_rank: u32,
    /// Number format of the linear layers' GEMMs (FP8 with fine-grained
    /// scaling in DeepSeek-V3; BF16 otherwise). Attention, norms, the gate,
    /// the embedding and the head stay in BF16.
    pub linear_dtype: Dtype,
    /// What the backward pass recomputes.
    pub recompute: Recompute,
    /// Fused (Flash) attention or materialised scores (training only).
    pub attention_kernel: AttentionKernel,
    /// Megatron's sequence parallelism with TP (Korthikanti §4.2.2): the
    /// norms, dropouts and residual adds run on `1 / tp` of the tokens; the
    /// all-reduces become reduce-scatter + all-gather (the same bytes).
    pub sequence_parallel: bool,
    /// Which FP8 GEMM kernels run (DeepGEMM, or DeepSeek's internal ones V3
    /// was trained with).
    pub gemm_kernels: GemmKernels,
    /// SMs the GEMMs are launched on (DeepSeek-V3 launches its GEMMs on the
    /// 112 SMs DeepEP leaves free); `None`: the whole device. Other kernels
    /// always launch over the whole device.
    pub compute_sms: Option<u32>,
}

/// Builds items with labels `"{unit} {name}"` and costs them.
struct Builder<'c, 'a> {
    ctx: &'c LayerContext<'a>,
    prefix: String,
    pass: &'static str,
}

impl Builder<'_, '_> {
    fn kernel(&self, name: &str, op: Op) -> Result<Item, ModelError> {
        // Only the GEMMs are launched on the SMs communication leaves
        // (DeepSeek's GEMM library takes 112 CTAs); every other kernel's grid
        // covers the device (the profile's casts, norms, elementwise and
        // attention kernels launch thousands of CTAs), so it runs on whatever
        // SMs are free when it runs.
        let sms = if matches!(op, Op::Gemm(_)) { self.ctx.compute_sms } else { None };
        let mut cost = op_cost_with(self.ctx.device, &op, &OpOptions { sms, tile: None })?;
        if let Op::Gemm(shape) = &op {
            cost = cost.slowed(self.ctx.gemm_kernels.slowdown(shape));
        }
        Ok(Item::Kernel(Box::new(KernelItem {
            label: format!("{} {name} {}", self.prefix, self.pass),
            op,
            cost,
            class: TaskClass::Compute,
        })))
    }

    fn gemm(&self, name: &str, m: u64, n: u64, k: u64, dtype: Dtype) -> Result<Item, ModelError> {
        self.kernel(name, Op::Gemm(GemmShape::plain(m, n, k, dtype)))
    }

    /// Quantises a `rows x cols` BF16 tensor to FP8 with one FP32 scale per
    /// 128 values (DeepSeek-V3's fine-grained scaling), optionally writing it
    /// transposed for a weight-gradient GEMM: a memory-bound pass.
    fn cast(&self, name: &str, rows: u64, cols: u64) -> Result<Item, ModelError> {
        let elems = (rows * cols) as f64;
        self.elementwise(name, 2.0 * elems, elems * (1.0 + 4.0 / 128.0), 2.0 * elems)
    }

    /// A linear layer's kernels: the FP8 GEMM is preceded by the cast of the
    /// operand that is not FP8 yet (`cast_rows x cast_cols`), if any.
    fn linear(
        &self,
        name: &str,
        (m, n, k): (u64, u64, u64),
        dtype: Dtype,
        cast: Option<(u64, u64)>,
    ) -> Result<Vec<Item>, ModelError> {
        let mut v = Vec::with_capacity(2);
        if let (Dtype::Fp8, Some((rows, cols))) = (dtype, cast) {
            v.push(self.cast(&format!("{name} cast"), rows, cols)?);
        }
        v.push(self.gemm(name, m, n, k, dtype)?);
        Ok(v)
    }

    fn grouped(&self, name: &str, groups: u64, m: u64, n: u64, k: u64) -> Result<Item, ModelError> {
        // Decode feeds the experts from the low-latency dispatch's
        // expert-major buffer: masked groups (DeepGEMM's decode layout).
        let layout = match self.ctx.mode {
            PassMode::Decode { .. } => GemmLayout::Masked,
            _ => GemmLayout::Contiguous,
        };
        let shape = GemmShape { m, n, k, groups, layout, dtype: self.ctx.linear_dtype };
        self.kernel(name, Op::Gemm(shape))
    }

    /// A batched BF16 GEMM: `groups` products of `m x k` by `k x n`, each
    /// with its own weights (absorbed MLA's per-head projections).
    fn batched(&self, name: &str, groups: u64, m: u64, n: u64, k: u64) -> Result<Item, ModelError> {
        let shape = GemmShape { m, n, k, groups, layout: GemmLayout::Contiguous, dtype: Dtype::Bf16 };
        self.kernel(name, Op::Gemm(shape))
    }

    /// Input-gradient kernels of a linear `y = x W` (`x: t x k`, `W: k x n`):
    /// the per-token cast of dy, then dx = dy W^T.
    fn dgrad(&self, name: &str, (t, k, n): (u64, u64, u64), dtype: Dtype) -> Result<Vec<Item>, ModelError> {
        self.linear(&format!("{name} dgrad"), (t, k, n), dtype, Some((t, n)))
    }

    /// Weight-gradient kernels: per-channel casts with transpose of x and dy,
    /// then dW = x^T dy.
    fn wgrad(&self, name: &str, (t, k, n): (u64, u64, u64), dtype: Dtype) -> Result<Vec<Item>, ModelError> {
        let mut v = Vec::with_capacity(3);
        if dtype == Dtype::Fp8 {
            v.push(self.cast(&format!("{name} wgrad x cast"), t, k)?);
            v.push(self.cast(&format!("{name} wgrad dy cast"), t, n)?);
        }
        v.push(self.gemm(&format!("{name} wgrad"), k, n, t, dtype)?);
        v.push(self.grad_accumulate(name, (k * n) as f64)?);
        Ok(v)
    }

    /// Adds a micro-batch's weight gradient (`weights` values, FP32) into
    /// the FP32 gradient kept across micro-batches (DeepSeek-V3 §3.3: FP32
    /// gradients for batch-size accumulation): reads both, writes one.
    fn grad_accumulate(&self, name: &str, weights: f64) -> Result<Item, ModelError> {
        self.elementwise(&format!("{name} grad accumulate"), 8.0 * weights, 4.0 * weights, weights)
    }

    /// Grouped expert GEMMs: forward, input gradient and weight gradient of
    /// `groups` experts with `m` rows each.
    fn grouped_pass(
        &self,
        name: &str,
        pass: &str,
        groups: u64,
        (m, k, n): (u64, u64, u64),
    ) -> Result<Vec<Item>, ModelError> {
        let fp8 = self.ctx.linear_dtype == Dtype::Fp8;
        let rows = m * groups;
        let mut v = Vec::new();
        match pass {
            "fwd" => v.push(self.grouped(name, groups, m, n, k)?),
            "dgrad" => {
                if fp8 {
                    v.push(self.cast(&format!("{name} dgrad cast"), rows, n)?);
                }
                v.push(self.grouped(&format!("{name} dgrad"), groups, m, k, n)?);
            }
            _ => {
                if fp8 {
                    v.push(self.cast(&format!("{name} wgrad x cast"), rows, k)?);
                    v.push(self.cast(&format!("{name} wgrad dy cast"), rows, n)?);
                }
                v.push(self.grouped(&format!("{name} wgrad"), groups, k, n, m)?);
                v.push(self.grad_accumulate(name, (groups * k * n) as f64)?);
            }
        }
        Ok(v)
    }

    fn norm(&self, name: &str, tokens: u64, hidden: u64, pass: Pass) -> Result<Item, ModelError> {
        self.kernel(name, Op::Norm { tokens, hidden, dtype: Dtype::Bf16, pass })
    }

    fn elementwise(&self, name: &str, read: f64, write: f64, flops: f64) -> Result<Item, ModelError> {
        self.kernel(name, Op::Elementwise { read_bytes: read, write_bytes: write, flops })
    }

    fn all_reduce(&self, name: &str, bytes: f64) -> Option<Item> {
        (self.ctx.tp > 1).then(|| Item::TpAllReduce { label: format!("{} {name} {}", self.prefix, self.pass), bytes })
    }
}

/// A linear layer `y = x W` with `x: tokens x k`, `W: k x n`.
#[derive(Debug, Clone, Copy)]
struct Linear {
    name: &'static str,
    k: u64,
    n: u64,
    dtype: Dtype,
}

impl<'a> LayerContext<'a> {
    fn tokens(&self) -> u64 {
        self.sequences * self.seq_len
    }

    /// Tokens the norms and residual adds of this rank run on: `1 / tp` of
    /// them under sequence parallelism.
    fn sp_tokens(&self) -> u64 {
        self.sp_of(self.tokens())
    }

    /// `t` tokens' share of this rank under sequence parallelism.
    fn sp_of(&self, t: u64) -> u64 {
        if self.sequence_parallel && self.tp > 1 {
            t.div_ceil(self.tp as u64)
        } else {
            t
        }
    }

    /// `sp_tokens / tokens`.
    fn sp_share(&self) -> f64 {
        self.sp_tokens() as f64 / self.tokens().max(1) as f64
    }

    /// Experts of this rank that receive at least one of `rows` (token,
    /// expert) pairs, which are all a grouped GEMM reads weights for (an
    /// empty group is skipped: DeepGEMM's masked layout, or no rows in the
    /// contiguous one): the expected count when the rows fall uniformly on
    /// the rank's `g` experts, `g (1 - (1 - 1/g)^rows)`, rounded up so a
    /// sampled routing's spread is not undercounted. Equals `g` once every
    /// expert is all but sure to get a row (training and prefill batches).
    pub fn active_experts(&self, rows: u64) -> u64 {
        let g = self.experts_per_rank.max(1) as u64;
        if rows >= 64 * g {
            return g;
        }
        let gf = g as f64;
        let expected = gf * (1.0 - (1.0 - 1.0 / gf).powf(rows as f64));
        ((expected - 1e-9).ceil() as u64).clamp(1, g.min(rows.max(1)))
    }

    /// Queries per sequence of the attention (the tokens this pass computes).
    pub fn q_len(&self) -> u64 {
        self.seq_len
    }

    /// Keys per sequence the attention reads: the sequence itself in
    /// training, the cached prefix plus the new tokens in prefill and decode.
    pub fn kv_len(&self) -> u64 {
        match self.mode {
            PassMode::Training => self.seq_len * self.cp.max(1) as u64,
            PassMode::Prefill { cached } => cached + self.seq_len,
            PassMode::Decode { context } => context + self.seq_len,
        }
    }

    /// Whether MLA runs absorbed over the latent cache (decode).
    fn absorbed_mla(&self) -> bool {
        matches!(self.mode, PassMode::Decode { .. }) && self.model.attention.kind == AttentionKind::Mla
    }

    /// Tokens whose logits the head computes.
    fn head_tokens(&self) -> u64 {
        match self.mode {
            PassMode::Prefill { .. } => self.sequences,
            _ => self.tokens(),
        }
    }

    fn builder(&self, unit: Unit, pass: &'static str) -> Builder<'_, 'a> {
        Builder { ctx: self, prefix: unit.label(), pass }
    }

    /// The attention block's projections on this rank (split by TP).
    fn attention_linears(&self) -> Vec<Linear> {
        let tp = self.tp as u64;
        let d = self.linear_dtype;
        self.model
            .attention_projections()
            .into_iter()
            .map(|(name, k, n)| match name {
                // Column-parallel over heads.
                "q_b_proj" | "q_proj" | "kv_b_proj" | "qkv_proj" => Linear { name, k, n: n / tp, dtype: d },
                // Row-parallel over heads.
                "o_proj" => Linear { name, k: k / tp, n, dtype: d },
                // The down-projections into the latents are replicated.
                _ => Linear { name, k, n, dtype: d },
            })
            // Absorbed MLA folds kv_b_proj into per-head batched GEMMs.
            .filter(|l| !(self.absorbed_mla() && l.name == "kv_b_proj"))
            .collect()
    }

    fn attention_shape(&self, pass: Pass) -> AttentionShape {
        let a = &self.model.attention;
        let (qk, v) = self.model.attention_head_dims();
        let heads = (a.heads / self.tp).max(1) as u64;
        let kv_heads = match a.kind {
            AttentionKind::Mla => heads,
            AttentionKind::Gqa => (a.kv_heads / self.tp).max(1) as u64,
        };
        let (kv_heads, qk, v) = if self.absorbed_mla() {
            // One latent KV head: keys are the latent plus the RoPE key,
            // values the latent (FlashMLA's 576/512).
            (1, (a.kv_lora_rank + a.qk_rope_head_dim) as u64, a.kv_lora_rank as u64)
        } else {
            (kv_heads, qk as u64, v as u64)
        };
        AttentionShape {
            batch: self.sequences,
            q_len: self.q_len(),
            kv_len: self.kv_len(),
            heads,
            kv_heads,
            qk_dim: qk,
            v_dim: v,
            causal: true,
            dtype: Dtype::Bf16,
            pass,
        }
    }

    /// Whether this pass materialises the attention scores (training only;
    /// prefill and decode always run fused kernels).
    fn materialized(&self) -> bool {
        self.attention_kernel == AttentionKernel::Materialized && self.mode == PassMode::Training
    }

    /// The attention core's kernels with materialised scores (Megatron-LM
    /// before FlashAttention, [`AttentionKernel::Materialized`]), with
    /// `E = b x heads x s_q x s_kv` BF16 scores on this rank, every one
    /// computed (the causal mask is applied, not skipped):
    ///
    /// - forward (`core`): batched QK^T GEMM writing `2E` bytes; fused
    ///   scale-mask-softmax reading `2E`, writing `2E`; dropout (if the model
    ///   has dropout) reading `2E`, writing `2E` and its `E` mask; then the
    ///   batched scores x V GEMM. `recompute_only` stops before the last GEMM
    ///   (selective recomputation needs only the probabilities back).
    /// - backward: dV = P^T dO and dP = dO V^T (writing `2E`); dropout's
    ///   backward reading `2E` and the `E` mask, writing `2E`; softmax's
    ///   backward reading the gradient and the probabilities (`4E`), writing
    ///   `2E`; dQ = dS K and dK = dS^T Q.
    ///
    /// Every GEMM goes through the GEMM cost model (its output and operand
    /// traffic included) and every element-wise pass through the streaming
    /// (HBM) one.
    fn materialized_attention(&self, b: &Builder, pass: Pass, recompute_only: bool) -> Result<Vec<Item>, ModelError> {
        let shape = self.attention_shape(pass);
        let groups = shape.batch * shape.heads;
        let (sq, skv, qk, v) = (shape.q_len, shape.kv_len, shape.qk_dim, shape.v_dim);
        let e = (groups * sq * skv) as f64;
        let bmm = |name: &str, m: u64, n: u64, k: u64| {
            let shape = GemmShape { m, n, k, groups, layout: GemmLayout::Masked, dtype: Dtype::Bf16 };
            b.kernel(name, Op::Gemm(shape))
        };
        let dropout = self.model.dropout;
        let mut v_items = Vec::new();
        match pass {
            Pass::Forward => {
                v_items.push(bmm("attention scores", sq, skv, qk)?);
                v_items.push(b.elementwise("attention softmax", 2.0 * e, 2.0 * e, 5.0 * e)?);
                if dropout {
                    v_items.push(b.elementwise("attention dropout", 2.0 * e, 3.0 * e, 2.0 * e)?);
                }
                if !recompute_only {
                    v_items.push(bmm("attention values", sq, v, skv)?);
                }
            }
            Pass::Backward => {
                v_items.push(bmm("attention dv", skv, v, sq)?);
                v_items.push(bmm("attention dp", sq, skv, v)?);
                if dropout {
                    v_items.push(b.elementwise("attention dropout", 3.0 * e, 2.0 * e, e)?);
                }
                v_items.push(b.elementwise("attention softmax", 4.0 * e, 2.0 * e, 3.0 * e)?);
                v_items.push(bmm("attention dq", sq, qk, skv)?);
                v_items.push(bmm("attention dk", skv, qk, sq)?);
            }
        }
        Ok(v_items)
    }

    /// The attention core of a pass: one fused kernel, or the materialised
    /// kernels ([`Self::materialized_attention`]).
    fn attention_core(&self, b: &Builder, pass: Pass) -> Result<Vec<Item>, ModelError> {
        if self.cp > 1 && self.mode == PassMode::Training {
            self.context_parallel_attention(b, pass)
        } else if self.materialized() {
            self.materialized_attention(b, pass, false)
        } else {
            Ok(vec![b.kernel("attention", Op::Attention(self.attention_shape(pass)))?])
        }
    }

    /// Fused attention split over `cp` context-parallel ranks. Each rank
    /// holds two chunks of every sequence (chunk `c` and `2 cp - 1 - c` of
    /// `2 cp`: the load balancing of Megatron-LM and Llama 3), so its causal
    /// work is `1 / cp` of the whole: `s_l x s / 2` query-key pairs for its
    /// `s_l = s / cp` queries.
    ///
    /// - [`CpComm::AllGather`]: keys and values all-gathered first
    ///   (blocking), attention as one block of `s_l` queries over `s / 2`
    ///   keys (the same pairs); the backward gathers them again and
    ///   reduce-scatters their gradients.
    /// - [`CpComm::Ring`]: `cp` steps: the causal diagonal block (`s_l` x
    ///   `s_l`, half of it computed) on the local chunk, then `cp - 1`
    ///   half blocks (`s_l` x `s_l / 2`) on the chunks arriving from the ring
    ///   predecessor; each chunk travels while the previous step computes.
    ///   The backward passes keys and values and their gradients (twice the
    ///   bytes) the same way.
    fn context_parallel_attention(&self, b: &Builder, pass: Pass) -> Result<Vec<Item>, ModelError> {
        if self.materialized() {
            return Err(ModelError::invalid(
                "parallel.cp",
                "context parallelism runs fused attention: expected workload.attention_kernel = \"flash\"",
            ));
        }
        let cp = self.cp as u64;
        let shape = self.attention_shape(pass);
        let local = self.seq_len;
        let chunk_bytes = |tokens: u64| {
            (self.sequences * tokens) as f64 * shape.kv_heads as f64 * (shape.qk_dim + shape.v_dim) as f64 * 2.0
        };
        let label = |what: &str| format!("{} cp {what} {}", b.prefix, b.pass);
        let mut out = Vec::new();
        match self.cp_comm {
            CpComm::AllGather => {
                let gathered = chunk_bytes(local * cp);
                out.push(Item::CpCollective { label: label("all-gather kv"), bytes: gathered });
                let block = AttentionShape { q_len: local, kv_len: local * cp / 2, causal: false, ..shape };
                out.push(b.kernel("attention", Op::Attention(block))?);
                if pass == Pass::Backward {
                    out.push(Item::CpCollective { label: label("reduce-scatter dkv"), bytes: gathered });
                }
            }
            CpComm::Ring => {
                let per_step = chunk_bytes(local) * if pass == Pass::Backward { 2.0 } else { 1.0 };
                for step in 0..cp {
                    if step + 1 < cp {
                        out.push(Item::CpSend { label: label("ring send"), bytes: per_step, first: step == 0 });
                    }
                    let block = if step == 0 {
                        AttentionShape { q_len: local, kv_len: local, causal: true, ..shape }
                    } else {
                        out.push(Item::CpWait { label: label("ring wait") });
                        AttentionShape { q_len: local, kv_len: local.div_ceil(2), causal: false, ..shape }
                    };
                    out.push(b.kernel("attention", Op::Attention(block))?);
                }
                if pass == Pass::Backward {
                    // The gradients of the last chunk go home.
                    out.push(Item::CpSend { label: label("ring send dkv"), bytes: chunk_bytes(local), first: true });
                    out.push(Item::CpWait { label: label("ring wait") });
                }
            }
        }
        Ok(out)
    }

    /// Bytes of one token's hidden state in BF16.
    fn hidden_bytes(&self) -> f64 {
        self.model.hidden as f64 * 2.0
    }

    /// Payload bytes per token copy of the dispatch (and of the backward
    /// combine): FP8 with one FP32 scale per 128 values, or BF16.
    pub fn dispatch_bytes_per_token(&self) -> f64 {
        let h = self.model.hidden as f64;
        match self.linear_dtype {
            Dtype::Fp8 => h * (1.0 + 4.0 / 128.0),
            _ => h * 2.0,
        }
    }

    /// Forward pass of `unit`. `expert_rows` is the (token, expert) pairs
    /// this rank's routed experts receive (MoE layers only).
    pub fn forward(&self, unit: Unit, expert_rows: u64) -> Result<Block, ModelError> {
        let b = self.builder(unit, "fwd");
        let t = self.tokens();
        let hb = self.hidden_bytes();
        let h = self.model.hidden as u64;
        let mut block = Block { unit: Some(unit), ..Default::default() };
        match unit {
            Unit::Embedding => {
                block.pre.push(b.elementwise("embedding", t as f64 * hb, t as f64 * hb, 0.0)?);
            }
            Unit::Head => {
                block.pre.extend(self.head_forward(&b)?);
            }
            Unit::Layer(i) => self.layer_forward(&b, self.model.ffn_kind(i), expert_rows, &mut block)?,
            Unit::Mtp(_) => {
                // Embedding of the shifted tokens, two norms, the 2h -> h projection.
                block.pre.push(b.elementwise("mtp embedding", t as f64 * hb, t as f64 * hb, 0.0)?);
                block.pre.push(b.norm("mtp norms", 2 * t, h, Pass::Forward)?);
                block.pre.extend(b.linear("eh_proj", (t, h, 2 * h), self.linear_dtype, Some((t, 2 * h)))?);
                let kind = if self.model.moe.is_some() { FfnKind::Moe } else { FfnKind::Dense };
                self.layer_forward(&b, kind, expert_rows, &mut block)?;
                block.post.extend(self.head_forward(&b)?);
            }
        }
        Ok(block)
    }

    fn head_forward(&self, b: &Builder) -> Result<Vec<Item>, ModelError> {
        let t = self.head_tokens();
        let h = self.model.hidden as u64;
        let v = (self.model.vocab / self.tp) as u64;
        let logits = t as f64 * v as f64;
        let last = match self.mode {
            // Softmax cross-entropy over the BF16 logits (read once, FP32 math).
            PassMode::Training => {
                b.elementwise("cross_entropy", logits * 2.0, t as f64 * 4.0, 5.0 * t as f64 * v as f64)?
            }
            // Softmax and sampling of the next token (read once, FP32 math).
            _ => b.elementwise("sampling", logits * 2.0, t as f64 * 8.0, 5.0 * logits)?,
        };
        Ok(vec![b.norm("final_norm", self.sp_of(t), h, Pass::Forward)?, b.gemm("lm_head", t, v, h, Dtype::Bf16)?, last])
    }

    fn attention_forward(&self, b: &Builder, out: &mut Vec<Item>) -> Result<(), ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let a = &self.model.attention;
        out.push(b.norm("attn_norm", self.sp_tokens(), h, Pass::Forward)?);
        let heads = (a.heads / self.tp).max(1) as u64;
        for lin in self.attention_linears() {
            if lin.name == "o_proj" {
                let shape = self.attention_shape(Pass::Forward);
                if a.qk_rope_head_dim > 0 || a.kind == AttentionKind::Gqa {
                    let rope = self.rope_bytes();
                    out.push(b.elementwise("rope", rope, rope, 0.0)?);
                }
                if self.mode != PassMode::Training {
                    // The new tokens' keys and values (MLA: latent + RoPE key) into the paged cache.
                    let cached = self.model.kv_cache_bytes_per_token(2.0) / self.model.layers as f64;
                    let bytes = t as f64 * cached / self.tp as f64;
                    out.push(b.elementwise("kv cache append", bytes, bytes, 0.0)?);
                }
                if self.absorbed_mla() {
                    // q_nope (128 per head) into the latent space (512) with W_UK, per head.
                    let (nope, rank) = (a.qk_nope_head_dim as u64, a.kv_lora_rank as u64);
                    out.push(b.batched("q absorb", heads, t, rank, nope)?);
                    out.push(b.kernel("attention", Op::Attention(shape))?);
                    // The latent output back to the value dimension with W_UV, per head.
                    out.push(b.batched("v absorb", heads, t, a.v_head_dim as u64, rank)?);
                } else {
                    if let Some(bytes) = self.qk_assembly_bytes() {
                        out.push(b.elementwise("qk assemble", bytes, bytes, 0.0)?);
                    }
                    out.extend(self.attention_core(b, Pass::Forward)?);
                }
            }
            if let (PassMode::Prefill { cached }, "kv_b_proj") = (self.mode, lin.name) {
                if cached > 0 {
                    // Keys and values of the cached prefix, up-projected from its latents.
                    let tc = self.sequences * cached;
                    out.extend(b.linear("kv_b_proj cached", (tc, lin.n, lin.k), lin.dtype, Some((tc, lin.k)))?);
                }
            }
            out.extend(b.linear(lin.name, (t, lin.n, lin.k), lin.dtype, Some((t, lin.k)))?);
            match lin.name {
                "q_a_proj" => out.push(b.norm("q_a_norm", t, a.q_lora_rank as u64, Pass::Forward)?),
                "kv_a_proj" => out.push(b.norm("kv_a_norm", t, a.kv_lora_rank as u64, Pass::Forward)?),
                _ => {}
            }
        }
        out.extend(b.all_reduce("attn all-reduce", t as f64 * self.hidden_bytes()));
        let hb = t as f64 * self.hidden_bytes();
        let (hb, t) = (hb * self.sp_share(), t as f64 * self.sp_share());
        out.push(b.elementwise("attn residual", 2.0 * hb, hb, t * h as f64)?);
        Ok(())
    }

    /// MLA keeps the RoPE part of q and k apart from the rest; fused
    /// attention wants whole heads, so q and k are assembled (copied) into
    /// `heads x (nope + rope)` tensors: the bytes read (= written) by that copy.
    fn qk_assembly_bytes(&self) -> Option<f64> {
        let a = &self.model.attention;
        (a.kind == AttentionKind::Mla).then(|| {
            let heads = (a.heads / self.tp).max(1) as f64;
            2.0 * self.tokens() as f64 * heads * (a.qk_nope_head_dim + a.qk_rope_head_dim) as f64 * 2.0
        })
    }

    /// Bytes of the query and key parts RoPE rotates, per pass.
    fn rope_bytes(&self) -> f64 {
        let a = &self.model.attention;
        let t = self.tokens() as f64;
        let heads = (a.heads / self.tp).max(1) as f64;
        match a.kind {
            AttentionKind::Mla => t * (heads + 1.0) * a.qk_rope_head_dim as f64 * 2.0,
            AttentionKind::Gqa => t * (heads + (a.kv_heads / self.tp).max(1) as f64) * a.head_dim as f64 * 2.0,
        }
    }

    fn layer_forward(&self, b: &Builder, kind: FfnKind, rows: u64, block: &mut Block) -> Result<(), ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let hb = t as f64 * self.hidden_bytes();
        let tp = self.tp as u64;
        self.attention_forward(b, &mut block.pre)?;
        block.pre.push(b.norm("ffn_norm", self.sp_tokens(), h, Pass::Forward)?);
        match (kind, &self.model.moe) {
            (FfnKind::Moe, Some(moe)) => {
                let e = moe.routed_experts as u64;
                block.pre.extend(self.router_forward(b, e, moe.topk as u64)?);
                block.comm_a =
                    Some(EpComm { phase: MoePhase::Dispatch, bytes_per_token: self.dispatch_bytes_per_token() });
                if moe.shared_experts > 0 {
                    let inter = moe.shared_experts as u64 * moe.expert_intermediate as u64 / tp;
                    block.side.extend(self.ffn_forward(b, "shared", t, inter)?);
                }
                self.experts_forward(b, moe.expert_intermediate as u64, rows, &mut block.mid)?;
                block.comm_b = Some(EpComm { phase: MoePhase::Combine, bytes_per_token: self.hidden_bytes() });
                // Combined routed output + shared expert + residual.
                block.post.push(b.elementwise("moe sum", 3.0 * hb, hb, 2.0 * t as f64 * h as f64)?);
            }
            _ => {
                let inter = self.model.ffn.dense_intermediate as u64 / tp;
                block.pre.extend(self.ffn_forward(b, "ffn", t, inter)?);
                let (hb, t) = (hb * self.sp_share(), t as f64 * self.sp_share());
                block.pre.push(b.elementwise("ffn residual", 2.0 * hb, hb, t * h as f64)?);
            }
        }
        Ok(())
    }

    /// The routed experts' forward kernels for `rows` received (token,
    /// expert) pairs, appended to `mid`: received tokens into
    /// expert-contiguous order, the two GEMMs (SwiGLU fused with the cast of
    /// its output), then the outputs back into the combine's send order. The
    /// low-latency kernels of decode receive and send in expert-major order:
    /// no permutes. Nothing for no rows.
    fn experts_forward(&self, b: &Builder, inter: u64, rows: u64, mid: &mut Vec<Item>) -> Result<(), ModelError> {
        let Some(ExpertDims { g, m, h, rows, hf }) = self.expert_dims(rows) else {
            return Ok(());
        };
        let act = if self.linear_dtype == Dtype::Fp8 { 1.0 + 4.0 / 128.0 } else { 2.0 };
        let permute = !matches!(self.mode, PassMode::Decode { .. });
        if permute {
            mid.push(b.elementwise("experts permute", rows * hf * act, rows * hf * act, 0.0)?);
        }
        mid.extend(b.grouped_pass("experts gate_up", "fwd", g, (m, h, 2 * inter))?);
        mid.push(b.elementwise(
            "experts swiglu",
            rows * 2.0 * inter as f64 * 2.0,
            rows * inter as f64 * act,
            4.0 * rows * inter as f64,
        )?);
        mid.extend(b.grouped_pass("experts down", "fwd", g, (m, inter, h))?);
        if permute {
            mid.push(b.elementwise("experts unpermute", rows * hf * 2.0, rows * hf * 2.0, rows * hf)?);
        }
        Ok(())
    }

    /// The routed experts' backward kernels for `rows` received pairs: input
    /// gradients appended to `mid`, weight gradients to `weight`.
    fn experts_backward(
        &self,
        b: &Builder,
        inter: u64,
        rows: u64,
        mid: &mut Vec<Item>,
        weight: &mut Vec<Item>,
    ) -> Result<(), ModelError> {
        let Some(ExpertDims { g, m, h, rows, hf }) = self.expert_dims(rows) else {
            return Ok(());
        };
        mid.push(b.elementwise("experts permute", rows * hf * 2.0, rows * hf * 2.0, 0.0)?);
        mid.extend(b.grouped_pass("experts down", "dgrad", g, (m, inter, h))?);
        mid.push(b.elementwise(
            "experts swiglu",
            rows * 3.0 * inter as f64 * 2.0,
            rows * 2.0 * inter as f64 * 2.0,
            8.0 * rows * inter as f64,
        )?);
        mid.extend(b.grouped_pass("experts gate_up", "dgrad", g, (m, h, 2 * inter))?);
        mid.push(b.elementwise("experts unpermute", rows * hf * 2.0, rows * hf * 2.0, rows * hf)?);
        weight.extend(b.grouped_pass("experts down", "wgrad", g, (m, inter, h))?);
        weight.extend(b.grouped_pass("experts gate_up", "wgrad", g, (m, h, 2 * inter))?);
        Ok(())
    }

    /// The sizes both expert passes use for `rows` received pairs; `None`
    /// for no rows (the passes then add no kernels).
    fn expert_dims(&self, rows: u64) -> Option<ExpertDims> {
        if rows == 0 {
            return None;
        }
        let h = self.model.hidden as u64;
        let (g, m) = self.expert_shape(rows);
        Some(ExpertDims { g, m, h, rows: (m * g) as f64, hf: h as f64 })
    }

    /// The grouped GEMMs' shape for `rows` received (token, expert) pairs:
    /// active experts `g` and rows per expert `m` (`rows` rounded up to
    /// `g x m`); `(1, 0)` for no rows. The expert kernels depend on the rows
    /// only through it ([`Self::expert_items`] of two row counts with the
    /// same shape are equal).
    pub fn expert_shape(&self, rows: u64) -> (u64, u64) {
        let g = self.active_experts(rows);
        (g, rows.div_ceil(g))
    }

    /// Whether `unit`'s blocks hold routed experts, whose kernels are the
    /// only ones that depend on the expert rows (see [`Self::expert_items`]).
    pub fn has_routed_experts(&self, unit: Unit) -> bool {
        match unit {
            Unit::Layer(i) => self.model.ffn_kind(i) == FfnKind::Moe,
            Unit::Mtp(_) => self.model.moe.is_some(),
            Unit::Embedding | Unit::Head => false,
        }
    }

    /// The items of `unit`'s blocks that depend on the expert rows, exactly
    /// as [`Self::forward`] and [`Self::backward`] build them: the forward
    /// block's `mid`, the backward block's `mid` and the routed experts'
    /// weight gradients (the tail of the backward `weight_mid`, after the
    /// shared expert's). Every other item of a block is the same for any
    /// rows, unless the backward pass recomputes the whole forward
    /// ([`Recompute::Full`]), whose recomputed `mid` lands in `pre`.
    pub fn expert_items(&self, unit: Unit, rows: u64) -> Result<ExpertItems, ModelError> {
        let mut out = ExpertItems::default();
        if let (true, Some(moe)) = (self.has_routed_experts(unit), &self.model.moe) {
            let inter = moe.expert_intermediate as u64;
            self.experts_forward(&self.builder(unit, "fwd"), inter, rows, &mut out.forward_mid)?;
            let b = self.builder(unit, "bwd");
            self.experts_backward(&b, inter, rows, &mut out.backward_mid, &mut out.backward_weight)?;
        }
        Ok(out)
    }

    /// The gate: BF16 GEMM to FP32 scores, sigmoid and bias, the group
    /// top-k (groups by their best experts, then experts), and the
    /// load-balance statistics — each a pass over the `tokens x experts`
    /// FP32 scores (DeepSeek's profile shows this as a string of small kernels).
    fn router_forward(&self, b: &Builder, experts: u64, topk: u64) -> Result<Vec<Item>, ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let scores = t as f64 * experts as f64 * 4.0;
        let picks = t as f64 * topk as f64 * 8.0;
        let sort_flops = t as f64 * experts as f64 * (experts as f64).log2();
        Ok(vec![
            b.gemm("gate", t, experts, h, Dtype::Bf16)?,
            b.elementwise("router scores", scores, 2.0 * scores, 4.0 * t as f64 * experts as f64)?,
            b.elementwise("router group topk", scores, picks, sort_flops)?,
            b.elementwise("router topk", scores, picks, sort_flops)?,
            b.elementwise("router balance stats", scores + picks, scores, t as f64 * experts as f64)?,
        ])
    }

    /// SwiGLU FFN (dense or shared expert) on `t` tokens, intermediate `inter` per rank.
    fn ffn_forward(&self, b: &Builder, name: &str, t: u64, inter: u64) -> Result<Vec<Item>, ModelError> {
        let h = self.model.hidden as u64;
        let d = self.linear_dtype;
        let v = if self.model.ffn.activation == FfnActivation::Gelu {
            let mut v = b.linear(&format!("{name} up"), (t, inter, h), d, Some((t, h)))?;
            v.push(b.elementwise(
                &format!("{name} gelu"),
                (t * inter) as f64 * 2.0,
                (t * inter) as f64 * 2.0,
                8.0 * (t * inter) as f64,
            )?);
            v
        } else {
            let mut v = b.linear(&format!("{name} gate_up"), (t, 2 * inter, h), d, Some((t, h)))?;
            v.push(b.elementwise(
                &format!("{name} swiglu"),
                (t * 2 * inter) as f64 * 2.0,
                (t * inter) as f64 * 2.0,
                4.0 * (t * inter) as f64,
            )?);
            v
        };
        let mut v = v;
        v.extend(b.linear(&format!("{name} down"), (t, h, inter), d, Some((t, inter)))?);
        v.extend(b.all_reduce(&format!("{name} all-reduce"), t as f64 * self.hidden_bytes()));
        Ok(v)
    }

    /// Backward pass of `unit` (input gradients in the block's main parts,
    /// weight gradients in `weight_mid` / `weight_post`).
    pub fn backward(&self, unit: Unit, expert_rows: u64) -> Result<Block, ModelError> {
        let b = self.builder(unit, "bwd");
        let t = self.tokens();
        let hb = t as f64 * self.hidden_bytes();
        let h = self.model.hidden as u64;
        let mut block = Block { unit: Some(unit), ..Default::default() };
        match unit {
            Unit::Embedding => {
                block.weight_post.push(b.elementwise("embedding grad", hb, 2.0 * hb, t as f64 * h as f64)?);
            }
            Unit::Head => self.head_backward(&b, &mut block.post, &mut block.weight_post)?,
            Unit::Layer(i) => {
                self.layer_backward(&b, self.model.ffn_kind(i), expert_rows, &mut block)?;
                self.full_recompute(unit, expert_rows, &mut block)?;
            }
            Unit::Mtp(_) => {
                let mut head_w = Vec::new();
                self.head_backward(&b, &mut block.pre, &mut head_w)?;
                let kind = if self.model.moe.is_some() { FfnKind::Moe } else { FfnKind::Dense };
                self.layer_backward(&b, kind, expert_rows, &mut block)?;
                block.post.extend(b.dgrad("eh_proj", (t, 2 * h, h), self.linear_dtype)?);
                block.post.push(b.norm("mtp norms", 2 * t, h, Pass::Backward)?);
                block.weight_post.extend(b.wgrad("eh_proj", (t, 2 * h, h), self.linear_dtype)?);
                block.weight_post.extend(head_w);
            }
        }
        Ok(block)
    }

    /// Full recomputation: the layer's forward kernels (TP all-reduces
    /// included) run again before its backward. A MoE layer's all-to-alls
    /// are not repeated (their outputs are kept), so this is a lower bound
    /// there.
    fn full_recompute(&self, unit: Unit, expert_rows: u64, block: &mut Block) -> Result<(), ModelError> {
        if self.recompute != Recompute::Full {
            return Ok(());
        }
        let f = self.forward(unit, expert_rows)?;
        let again: Vec<Item> = f
            .pre
            .into_iter()
            .chain(f.side)
            .chain(f.mid)
            .chain(f.post)
            .map(|mut i| {
                let label = i.label_mut();
                *label = label.replace(" fwd", " recompute");
                i
            })
            .collect();
        block.pre.splice(0..0, again);
        Ok(())
    }

    fn head_backward(&self, b: &Builder, input: &mut Vec<Item>, weight: &mut Vec<Item>) -> Result<(), ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let v = (self.model.vocab / self.tp) as u64;
        let logits = t as f64 * v as f64 * 2.0;
        input.push(b.elementwise("cross_entropy", logits, logits, 5.0 * t as f64 * v as f64)?);
        input.push(b.gemm("lm_head dgrad", t, h, v, Dtype::Bf16)?);
        input.push(b.norm("final_norm", self.sp_of(t), h, Pass::Backward)?);
        weight.push(b.gemm("lm_head wgrad", h, v, t, Dtype::Bf16)?);
        Ok(())
    }

    fn layer_backward(&self, b: &Builder, kind: FfnKind, rows: u64, block: &mut Block) -> Result<(), ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let hb = t as f64 * self.hidden_bytes();
        let tp = self.tp as u64;
        match (kind, &self.model.moe) {
            (FfnKind::Moe, Some(moe)) => {
                block.pre.push(b.elementwise("moe sum", hb, 2.0 * hb, t as f64 * h as f64)?);
                block.comm_a =
                    Some(EpComm { phase: MoePhase::Dispatch, bytes_per_token: self.dispatch_bytes_per_token() });
                if moe.shared_experts > 0 {
                    let inter = moe.shared_experts as u64 * moe.expert_intermediate as u64 / tp;
                    let (input, weight) = self.ffn_backward(b, "shared", t, inter)?;
                    block.side.extend(input);
                    block.weight_mid.extend(weight);
                }
                let inter = moe.expert_intermediate as u64;
                self.experts_backward(b, inter, rows, &mut block.mid, &mut block.weight_mid)?;
                block.comm_b = Some(EpComm { phase: MoePhase::Combine, bytes_per_token: self.hidden_bytes() });
                let e = moe.routed_experts as u64;
                let scores = t as f64 * e as f64 * 4.0;
                block.post.push(b.elementwise("router scores", 2.0 * scores, scores, 4.0 * t as f64 * e as f64)?);
                block.post.push(b.gemm("gate dgrad", t, h, e, Dtype::Bf16)?);
                block.weight_post.push(b.gemm("gate wgrad", h, e, t, Dtype::Bf16)?);
            }
            _ => {
                let inter = self.model.ffn.dense_intermediate as u64 / tp;
                let (input, weight) = self.ffn_backward(b, "ffn", t, inter)?;
                block.post.extend(input);
                block.weight_post.extend(weight);
            }
        }
        if self.recompute == Recompute::NormsAndUpProjections {
            block.post.push(b.norm("ffn_norm recompute", self.sp_tokens(), h, Pass::Forward)?);
        }
        block.post.push(b.norm("ffn_norm", self.sp_tokens(), h, Pass::Backward)?);
        self.attention_backward(b, &mut block.post, &mut block.weight_post)
    }

    fn ffn_backward(&self, b: &Builder, name: &str, t: u64, inter: u64) -> Result<(Vec<Item>, Vec<Item>), ModelError> {
        let h = self.model.hidden as u64;
        let d = self.linear_dtype;
        let gelu = self.model.ffn.activation == FfnActivation::Gelu;
        let (first, width) = if gelu { ("up", inter) } else { ("gate_up", 2 * inter) };
        let mut input = b.dgrad(&format!("{name} down"), (t, inter, h), d)?;
        if gelu {
            input.push(b.elementwise(
                &format!("{name} gelu"),
                (t * 2 * inter) as f64 * 2.0,
                (t * inter) as f64 * 2.0,
                10.0 * (t * inter) as f64,
            )?);
        } else {
            input.push(b.elementwise(
                &format!("{name} swiglu"),
                (t * 3 * inter) as f64 * 2.0,
                (t * 2 * inter) as f64 * 2.0,
                8.0 * (t * inter) as f64,
            )?);
        }
        input.extend(b.dgrad(&format!("{name} {first}"), (t, h, width), d)?);
        input.extend(b.all_reduce(&format!("{name} all-reduce"), t as f64 * self.hidden_bytes()));
        let mut weight = b.wgrad(&format!("{name} down"), (t, inter, h), d)?;
        weight.extend(b.wgrad(&format!("{name} {first}"), (t, h, width), d)?);
        Ok((input, weight))
    }

    fn attention_backward(&self, b: &Builder, input: &mut Vec<Item>, weight: &mut Vec<Item>) -> Result<(), ModelError> {
        let t = self.tokens();
        let h = self.model.hidden as u64;
        let a = &self.model.attention;
        let hb = t as f64 * self.hidden_bytes();
        let sp = self.sp_share();
        input.push(b.elementwise("attn residual", hb * sp, 2.0 * hb * sp, t as f64 * h as f64 * sp)?);
        let linears = self.attention_linears();
        if self.recompute == Recompute::NormsAndUpProjections {
            // DeepSeek-V3 §3.3.3: RMSNorm and the MLA up-projections are
            // recomputed in the backward pass instead of stored.
            input.push(b.norm("attn_norm recompute", self.sp_tokens(), h, Pass::Forward)?);
            for lin in &linears {
                match lin.name {
                    "q_b_proj" | "kv_b_proj" => input.extend(b.linear(
                        &format!("{} recompute", lin.name),
                        (t, lin.n, lin.k),
                        lin.dtype,
                        Some((t, lin.k)),
                    )?),
                    "q_a_proj" => input.push(b.norm("q_a_norm recompute", t, a.q_lora_rank as u64, Pass::Forward)?),
                    "kv_a_proj" => {
                        input.push(b.norm("kv_a_norm recompute", t, a.kv_lora_rank as u64, Pass::Forward)?)
                    }
                    _ => {}
                }
            }
        }
        for lin in linears.iter().rev() {
            input.extend(b.dgrad(lin.name, (t, lin.k, lin.n), lin.dtype)?);
            weight.extend(b.wgrad(lin.name, (t, lin.k, lin.n), lin.dtype)?);
            match lin.name {
                "o_proj" => {
                    if let Some(bytes) = self.qk_assembly_bytes() {
                        // The recomputed q, k assembled again, then dq, dk split back.
                        input.push(b.elementwise("qk assemble recompute", bytes, bytes, 0.0)?);
                        input.extend(self.attention_core(b, Pass::Backward)?);
                        input.push(b.elementwise("dqk split", bytes, bytes, 0.0)?);
                    } else {
                        if self.materialized() && self.recompute == Recompute::Selective {
                            // Korthikanti's selective recomputation: the
                            // scores, softmax and dropout again, not stored.
                            let again = self.materialized_attention(b, Pass::Forward, true)?;
                            input.extend(again.into_iter().map(|mut i| {
                                if let Item::Kernel(k) = &mut i {
                                    k.label = k.label.replace(" bwd", " recompute bwd");
                                }
                                i
                            }));
                        }
                        input.extend(self.attention_core(b, Pass::Backward)?);
                    }
                    let rope = self.rope_bytes();
                    input.push(b.elementwise("rope", rope, rope, 0.0)?);
                }
                "q_a_proj" => input.push(b.norm("q_a_norm", t, a.q_lora_rank as u64, Pass::Backward)?),
                "kv_a_proj" => input.push(b.norm("kv_a_norm", t, a.kv_lora_rank as u64, Pass::Backward)?),
                _ => {}
            }
        }
        input.extend(b.all_reduce("attn all-reduce", hb));
        input.push(b.norm("attn_norm", self.sp_tokens(), h, Pass::Backward)?);
        Ok(())
    }
}

/// The routed experts' sizes for one pass ([`LayerContext::expert_dims`]):
/// active experts `g`, rows per expert `m`, hidden size `h`, the padded
/// rows `g x m` and `h` as floats.
struct ExpertDims {
    g: u64,
    m: u64,
    h: u64,
    rows: f64,
    hf: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(model: &'a ModelConfig, device: &'a DeviceSpec) -> LayerContext<'a> {
        LayerContext {
            model,
            device,
            sequences: 1,
            seq_len: 4096,
            mode: PassMode::Training,
            tp: 1,
            cp: 1,
            cp_comm: CpComm::Ring,
            experts_per_rank: 4,
            linear_dtype: Dtype::Fp8,
            recompute: Recompute::NormsAndUpProjections,
            attention_kernel: AttentionKernel::Flash,
            sequence_parallel: false,
            compute_sms: None,
            gemm_kernels: GemmKernels::Deepgemm,
        }
    }

    #[test]
    fn only_the_gemms_launch_on_the_sms_communication_leaves() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        let c = LayerContext { compute_sms: Some(112), ..ctx(&m, &d) };
        let f = c.forward(Unit::Layer(3), 8 * 4096).unwrap();
        let (mut gemms, mut others) = (0, 0);
        for item in f.items() {
            if let Item::Kernel(k) = item {
                if matches!(k.op, Op::Gemm(_)) {
                    assert!(k.cost.max_units <= 112, "{}", k.label);
                    gemms += 1;
                } else {
                    assert_eq!(k.cost.max_units, 132, "{}", k.label);
                    others += 1;
                }
            }
        }
        assert!(gemms > 5 && others > 5, "{gemms} GEMMs, {others} others");
    }

    #[test]
    fn moe_layer_forward_has_the_deepseek_shape_and_flops() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        let c = ctx(&m, &d);
        // Balanced EP64: every rank receives 8 x 4096 (token, expert) pairs.
        let f = c.forward(Unit::Layer(3), 8 * 4096).unwrap();
        assert_eq!(f.comm_a.unwrap().phase, MoePhase::Dispatch);
        assert_eq!(f.comm_b.unwrap().phase, MoePhase::Combine);
        assert_eq!(f.comm_a.unwrap().bytes_per_token, 7168.0 * (1.0 + 4.0 / 128.0));
        // Matmul FLOPs: 2 x tokens x (attention projections + gate + 9 experts)
        // plus causal attention scores.
        let t = 4096.0;
        let proj = 187_105_280.0;
        let experts = 9.0 * 3.0 * 7168.0 * 2048.0;
        let gate = 256.0 * 7168.0;
        let attn = 2.0 * 128.0 * 320.0 * t * (t + 1.0) / 2.0;
        let gemm_flops: f64 = f
            .items()
            .filter_map(|i| match i {
                Item::Kernel(k) if matches!(k.op, Op::Gemm(_) | Op::Attention(_)) => Some(k.cost.flops),
                _ => None,
            })
            .sum();
        let want = 2.0 * t * (proj + experts + gate) + attn;
        assert!((gemm_flops / want - 1.0).abs() < 1e-9, "{gemm_flops:.6e} vs {want:.6e}");
    }

    #[test]
    fn backward_does_twice_the_linear_work_plus_recomputation() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        let c = ctx(&m, &d);
        let linear = |b: &Block| -> f64 {
            b.items()
                .filter_map(|i| match i {
                    Item::Kernel(k) if matches!(k.op, Op::Gemm(_)) && !k.label.contains("recompute") => {
                        Some(k.cost.flops)
                    }
                    _ => None,
                })
                .sum()
        };
        let f = c.forward(Unit::Layer(10), 8 * 4096).unwrap();
        let b = c.backward(Unit::Layer(10), 8 * 4096).unwrap();
        assert!((linear(&b) / linear(&f) - 2.0).abs() < 1e-9);
        assert!(b.items().any(|i| matches!(i, Item::Kernel(k) if k.label == "L10 kv_b_proj recompute bwd")));
        assert!(!b.weight_mid.is_empty() && !b.weight_post.is_empty());
        let no_recompute =
            LayerContext { recompute: Recompute::None, ..c.clone() }.backward(Unit::Layer(10), 8 * 4096).unwrap();
        assert!(no_recompute.flops() < b.flops());
    }

    #[test]
    fn dense_layers_and_head_have_no_all_to_all() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        let c = ctx(&m, &d);
        for unit in [Unit::Embedding, Unit::Layer(0), Unit::Head] {
            let f = c.forward(unit, 0).unwrap();
            assert!(f.comm_a.is_none() && f.comm_b.is_none(), "{unit:?}");
        }
        assert!(c.forward(Unit::Mtp(0), 8 * 4096).unwrap().comm_a.is_some());
    }

    #[test]
    fn tensor_parallelism_splits_heads_and_adds_all_reduces() {
        let m = ModelConfig::preset("llama-3.1-405b").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        let c = LayerContext { tp: 8, linear_dtype: Dtype::Bf16, ..ctx(&m, &d) };
        let f = c.forward(Unit::Layer(0), 0).unwrap();
        let all_reduces = f.items().filter(|i| matches!(i, Item::TpAllReduce { .. })).count();
        assert_eq!(all_reduces, 2);
        let one = LayerContext { tp: 1, ..c.clone() }.forward(Unit::Layer(0), 0).unwrap();
        assert!((one.flops() / f.flops() - 8.0).abs() < 0.05, "{}", one.flops() / f.flops());
    }

    /// Regression (issue 13): a grouped expert GEMM charged the weights of
    /// every expert slot of the rank, also those no token reached this
    /// iteration, which dominated small-batch decode on few GPUs.
    #[test]
    fn idle_experts_are_not_charged_their_weights() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        let d = DeviceSpec::preset("h800").unwrap();
        // Decode on 8 GPUs: 32 experts per GPU; one token (8 rows) reaches at
        // most 8 of them.
        let c = LayerContext {
            sequences: 1,
            seq_len: 1,
            mode: PassMode::Decode { context: 1000 },
            experts_per_rank: 32,
            ..ctx(&m, &d)
        };
        let gate_up = |rows: u64| {
            let f = c.forward(Unit::Layer(3), rows).unwrap();
            let k = f.kernels().find(|k| k.label.contains("experts gate_up")).unwrap();
            match &k.op {
                Op::Gemm(g) => (g.groups, k.cost.hbm_bytes),
                _ => unreachable!(),
            }
        };
        let (groups, bytes) = gate_up(8);
        assert!(groups <= 8, "{groups} groups for 8 rows");
        // Expected non-empty experts of 32 for 8 uniform rows: 32 (1 - (31/32)^8) = 7.2 -> 8.
        assert_eq!(groups, 8);
        let weights = 8.0 * 7168.0 * 2.0 * 2048.0; // FP8: one byte per weight
        assert!(bytes < 1.5 * weights, "{bytes:.3e} bytes for {weights:.3e} of weights");
        // Many rows reach every expert.
        assert_eq!(gate_up(4096).0, 32);
        assert_eq!(c.active_experts(1), 1);
        assert_eq!(c.active_experts(32), 21); // 32 (1 - (31/32)^32) = 20.6
    }

    /// Element-wise HBM bytes (read + written) of a block's attention kernels.
    fn score_bytes(b: &Block) -> f64 {
        b.kernels()
            .filter(|k| k.label.contains(" attention "))
            .map(|k| match k.op {
                Op::Elementwise { read_bytes, write_bytes, .. } => read_bytes + write_bytes,
                _ => 0.0,
            })
            .sum()
    }

    #[test]
    fn materialized_attention_moves_the_scores_through_hbm() {
        let m = ModelConfig::preset("gpt-1.7b").unwrap();
        let d = DeviceSpec::preset("a100").unwrap();
        let flash =
            LayerContext { tp: 2, seq_len: 2048, linear_dtype: Dtype::Bf16, recompute: Recompute::None, ..ctx(&m, &d) };
        let mat = LayerContext { attention_kernel: AttentionKernel::Materialized, ..flash.clone() };
        // 12 heads per rank, 2,048 x 2,048 scores each, BF16.
        let e = 12.0 * 2048.0 * 2048.0;
        let (ff, mf) = (flash.forward(Unit::Layer(0), 0).unwrap(), mat.forward(Unit::Layer(0), 0).unwrap());
        let (fb, mb) = (flash.backward(Unit::Layer(0), 0).unwrap(), mat.backward(Unit::Layer(0), 0).unwrap());
        assert_eq!(score_bytes(&ff), 0.0);
        // Softmax 2E + 2E, dropout 2E + 2E output + E mask.
        assert_eq!(score_bytes(&mf), 9.0 * e);
        // Dropout 3E + 2E, softmax 4E + 2E.
        assert_eq!(score_bytes(&mb), 11.0 * e);
        // The score passes take at least their bytes at the HBM peak on top
        // of what the fused kernel took (the GEMMs' own score traffic too).
        let at_peak = 9.0 * e / d.hbm_bytes_per_s();
        assert!(mf.kernel_time_s() - ff.kernel_time_s() > at_peak, "{} {}", mf.kernel_time_s(), ff.kernel_time_s());
        assert!(mb.kernel_time_s() - fb.kernel_time_s() > 11.0 * e / d.hbm_bytes_per_s());
        // The same FLOPs up to the causal half the fused kernel skips.
        assert!(mf.flops() > ff.flops());
        // Selective recomputation runs the scores, softmax and dropout again.
        let sel = LayerContext { recompute: Recompute::Selective, ..mat.clone() }.backward(Unit::Layer(0), 0).unwrap();
        assert_eq!(score_bytes(&sel), 20.0 * e);
        assert!(
            sel.kernels().any(|k| k.label == "L0 attention scores recompute bwd"),
            "{:?}",
            sel.kernels().map(|k| k.label.clone()).collect::<Vec<_>>()
        );
        // Prefill keeps the fused kernel.
        let prefill = LayerContext { mode: PassMode::Prefill { cached: 0 }, ..mat.clone() };
        assert_eq!(score_bytes(&prefill.forward(Unit::Layer(0), 0).unwrap()), 0.0);
    }
}
