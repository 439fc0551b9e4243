//! One iteration of an inference deployment unit lowered to the engine's
//! `TaskGraph`: a prefill unit (DeepEP normal kernels that hold SMs) or a
//! decode unit (low-latency kernels that hold none), with attention and the
//! shared expert data-parallel over the unit's GPUs and the routed experts
//! (plus redundant copies) expert-parallel over the same GPUs — DeepSeek's
//! online deployment (open-infra-index, day 6).
//!
//! Every GPU of a unit runs the same shapes on its own requests, so one
//! representative rank is simulated: the *critical* rank of the unit's
//! sampled routing (the one whose all-to-all takes longest on its own
//! links), with the expert rows of the unit's most loaded rank, its
//! all-to-alls lowered as mirrors over the real routes
//! ([`Exchange::lower_mirror`](crate::network::moe_comm::Exchange::lower_mirror)).
//!
//! Two micro-batches overlap one's computation with the other's dispatch
//! and combine. Each micro-batch's layers become a chain of compute
//! segments separated by its all-to-alls; the compute stream alternates the
//! two chains' segments, so an all-to-all runs beside the other micro-batch's
//! next segment. Prefill: a MoE layer is `attention → dispatch → shared +
//! routed experts → combine`. Decode: attention is split in two steps
//! (before and from the core attention), and micro-batch B trails A by one
//! segment, so each all-to-all runs beside half of the other's attention —
//! the 5-stage pipeline (attention-0, attention-1, dispatch, MoE, combine).
//!
//! Redundant experts: `routed + redundant` expert slots are spread evenly
//! over the ranks; `Balanced` placement replicates the most loaded experts
//! of a sampled routing and packs the replicas onto ranks greedily (what
//! DeepSeek's EPLB does with served statistics), `Contiguous` keeps expert e
//! in slot e and puts the replicas of the hottest experts in the extra
//! slots. A token's copy for a replicated expert goes to its replicas in
//! turn.

use moesim_sim::{SimDuration, StreamId, TaskGraph, TaskId};

use crate::error::ModelError;
use crate::hardware::device::{DeviceSpec, Dtype};
use crate::lowering::emit::{Emitter, LaunchGaps, RankStreams};
use crate::network::cluster::Cluster;
use crate::network::moe_comm::{CommKernel, EpTraffic, Exchange, ForSource, LowLatencyTraffic, MoeKernel};
use crate::transformer::layers::{AttentionKernel, Block, EpComm, Item, LayerContext, PassMode, Recompute, Unit};
use crate::transformer::model::{FfnKind, ModelConfig};
use crate::transformer::parallel::CpComm;
use crate::transformer::routing::MoePhase;
use crate::transformer::routing::{RoutingSpec, Skew, TokenRouter};

/// How expert slots are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpertPlacement {
    /// Replicate the most loaded experts and pack replicas onto ranks by
    /// load (EPLB-like).
    #[default]
    Balanced,
    /// Expert e in slot e; the extra slots hold replicas of the most loaded.
    Contiguous,
}

/// A deployment unit: `gpus` GPUs whose attention is data-parallel (in
/// groups of `tp`) and whose routed experts are expert-parallel over all
/// of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeploymentUnit {
    pub gpus: u32,
    /// Tensor parallelism of attention and dense layers (1 for DeepSeek).
    pub tp: u32,
    /// Extra expert slots holding replicas (DeepSeek: 32).
    pub redundant_experts: u32,
    pub placement: ExpertPlacement,
    /// SMs the normal (prefill) all-to-all kernels hold while they run.
    pub comm_sms: u32,
}

/// What one iteration computes on every GPU of the unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IterationPhase {
    /// Prompts of `prompt_len` tokens of which the first `cached_len` hit
    /// the prefix cache; about `tokens_per_gpu` new tokens per GPU.
    Prefill { tokens_per_gpu: u64, prompt_len: u64, cached_len: u64 },
    /// `batch_per_gpu` sequences with `context_len` tokens cached each;
    /// with `mtp_acceptance`, each also verifies one MTP draft token (and
    /// the MTP module drafts the next), accepted with that probability.
    Decode { batch_per_gpu: u64, context_len: u64, mtp_acceptance: Option<f64> },
}

/// Everything an iteration needs besides the cluster.
#[derive(Debug, Clone)]
pub struct IterationSpec {
    pub model: ModelConfig,
    pub unit: DeploymentUnit,
    pub phase: IterationPhase,
    /// Number format of the linear layers' GEMMs and weights.
    pub linear_dtype: Dtype,
    pub skew: Skew,
    /// 2 overlaps one micro-batch's computation with the other's all-to-all.
    pub micro_batches: u32,
    /// The unit's mean tokens per GPU over the simulated GPU's, in (0, 1]:
    /// below 1 the other GPUs carry fewer tokens, so the routed tokens (the
    /// expert GEMM rows and the all-to-all traffic) are sampled at this share
    /// of the simulated GPU's tokens while its own attention and dense
    /// layers keep its full batch. 1 for a single iteration.
    pub moe_fill: f64,
}

/// One micro-batch's shape on one GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicroBatch {
    pub sequences: u64,
    /// New tokens per sequence.
    pub seq_len: u64,
    pub mode: PassMode,
}

impl MicroBatch {
    pub fn tokens(&self) -> u64 {
        self.sequences * self.seq_len
    }
}

/// What the lowering produced besides the tasks.
#[derive(Debug, Clone)]
pub struct IterationLowering {
    /// The simulated (critical) rank.
    pub rank: u32,
    pub micro_batches: Vec<MicroBatch>,
    /// Expert slots per GPU (routed + redundant, over the unit).
    pub slots_per_gpu: u32,
    /// Sequences each GPU serves: a tensor-parallel group of `tp` GPUs
    /// serves its micro-batches' sequences together, so `1 / tp` of them.
    pub sequences_per_gpu: f64,
    /// Tokens each GPU computes (queries), likewise `1 / tp` of its group's.
    pub new_tokens_per_gpu: f64,
    /// Prompt tokens each GPU serves, cache hits included (prefill).
    pub input_tokens_per_gpu: f64,
    /// Output tokens each GPU produces per iteration, accepted drafts
    /// counted at their expected rate (decode).
    pub output_tokens_per_gpu: f64,
    /// Expert rows per MoE layer: the simulated rank's (the unit's most
    /// loaded) and the unit's mean, summed over micro-batches.
    pub expert_rows: (u64, f64),
    pub notes: Vec<String>,
}

impl IterationSpec {
    /// Expert-parallel group size: every GPU of the unit.
    pub fn ep(&self) -> u32 {
        self.unit.gpus
    }

    /// Routed expert slots per GPU (routed + redundant over the unit).
    pub fn slots_per_gpu(&self) -> u32 {
        self.model.moe.as_ref().map_or(0, |m| (m.routed_experts + self.unit.redundant_experts) / self.unit.gpus.max(1))
    }

    /// The kernel family of the all-to-alls.
    pub fn kernel(&self) -> MoeKernel {
        match self.phase {
            IterationPhase::Prefill { .. } => MoeKernel::Normal,
            IterationPhase::Decode { .. } => MoeKernel::LowLatency,
        }
    }

    /// Every impossible value, keys as the scenario spells them.
    pub fn problems(&self, cluster_gpus: u32) -> Vec<moesim_topologies::ConfigProblem> {
        let mut out = Vec::new();
        let mut bad =
            |key: &str, message: String| out.push(moesim_topologies::ConfigProblem { key: key.into(), message });
        let u = &self.unit;
        if !(self.moe_fill > 0.0 && self.moe_fill <= 1.0) {
            bad("workload.moe_fill", format!("expected a share in (0, 1], found {}", self.moe_fill));
        }
        if u.gpus == 0 {
            bad("workload.gpus", "expected an integer >= 1, found 0".into());
        } else if u.gpus > cluster_gpus {
            bad("workload.gpus", format!("expected at most the topology's {cluster_gpus} GPUs, found {}", u.gpus));
        }
        if u.tp == 0 || (u.gpus > 0 && !u.gpus.is_multiple_of(u.tp)) {
            bad("workload.tp", format!("expected a divisor of the unit's {} GPUs, found {}", u.gpus, u.tp));
        }
        if u.tp > 0 && !self.model.attention.heads.is_multiple_of(u.tp) {
            bad(
                "workload.tp",
                format!(
                    "expected a divisor of the model's {} attention heads, found {}",
                    self.model.attention.heads, u.tp
                ),
            );
        }
        if let Some(m) = &self.model.moe {
            let slots = m.routed_experts + u.redundant_experts;
            if u.gpus > 0 && !slots.is_multiple_of(u.gpus) {
                bad(
                    "workload.redundant_experts",
                    format!(
                        "routed + redundant experts ({} + {}) must spread evenly over the unit's {} GPUs",
                        m.routed_experts, u.redundant_experts, u.gpus
                    ),
                );
            }
        }
        if self.micro_batches == 0 || self.micro_batches > 2 {
            bad("workload.micro_batches", format!("expected 1 or 2, found {}", self.micro_batches));
        }
        let max = self.model.max_context;
        match self.phase {
            IterationPhase::Prefill { tokens_per_gpu, prompt_len, cached_len } => {
                if tokens_per_gpu == 0 {
                    bad("workload.tokens_per_gpu", "expected an integer >= 1, found 0".into());
                }
                if prompt_len == 0 {
                    bad("workload.prompt_len", "expected an integer >= 1, found 0".into());
                }
                if prompt_len > max {
                    bad(
                        "workload.prompt_len",
                        format!("expected at most the model's context of {max} tokens, found {prompt_len}"),
                    );
                }
                if prompt_len > 0 && cached_len >= prompt_len {
                    bad(
                        "workload.cache_hit_ratio",
                        format!(
                            "leaves no new token of the {prompt_len}-token prompt to compute ({cached_len} cached)"
                        ),
                    );
                }
            }
            IterationPhase::Decode { batch_per_gpu, context_len, mtp_acceptance } => {
                if batch_per_gpu == 0 {
                    bad("workload.batch_per_gpu", "expected an integer >= 1, found 0".into());
                }
                let drafts = u64::from(mtp_acceptance.is_some());
                if context_len + 1 + drafts > max {
                    bad(
                        "workload.context_len",
                        format!(
                            "expected at most the model's context of {max} tokens less the {} new, found {context_len}",
                            1 + drafts
                        ),
                    );
                }
                if let Some(p) = mtp_acceptance {
                    if !(0.0..=1.0).contains(&p) {
                        bad("workload.mtp_acceptance", format!("expected a probability in [0, 1], found {p}"));
                    }
                    if self.model.mtp_modules == 0 {
                        bad("workload.mtp_acceptance", "the model has no MTP module to draft with".into());
                    }
                }
            }
        }
        out
    }

    /// The micro-batches of one GPU.
    pub fn micro_batches(&self) -> Vec<MicroBatch> {
        let n = self.micro_batches.max(1) as u64;
        match self.phase {
            IterationPhase::Prefill { tokens_per_gpu, prompt_len, cached_len } => {
                let q = prompt_len.saturating_sub(cached_len).max(1);
                let per_mb = tokens_per_gpu.div_ceil(n).max(1);
                if q <= per_mb {
                    let seqs = (per_mb / q).max(1);
                    (0..n)
                        .map(|_| MicroBatch {
                            sequences: seqs,
                            seq_len: q,
                            mode: PassMode::Prefill { cached: cached_len },
                        })
                        .collect()
                } else {
                    // One prompt longer than a micro-batch: its new tokens in
                    // consecutive chunks, each attending to the ones before.
                    let chunk = q.div_ceil(n);
                    (0..n)
                        .filter(|i| i * chunk < q)
                        .map(|i| MicroBatch {
                            sequences: 1,
                            seq_len: chunk.min(q - i * chunk),
                            mode: PassMode::Prefill { cached: cached_len + i * chunk },
                        })
                        .collect()
                }
            }
            IterationPhase::Decode { batch_per_gpu, context_len, mtp_acceptance } => {
                let n = n.min(batch_per_gpu.max(1));
                let seq_len = 1 + u64::from(mtp_acceptance.is_some());
                (0..n)
                    .map(|i| MicroBatch {
                        sequences: batch_per_gpu / n + u64::from(i < batch_per_gpu % n),
                        seq_len,
                        mode: PassMode::Decode { context: context_len },
                    })
                    .collect()
            }
        }
    }
}

/// Which expert slots each logical expert occupies (slot s is on rank
/// s / slots_per_rank).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertLayout {
    pub slots: u32,
    pub replicas: Vec<Vec<u32>>,
}

impl ExpertLayout {
    /// Places `experts` logical experts with the given loads into
    /// `experts + redundant` slots over `ranks` ranks.
    pub fn place(placement: ExpertPlacement, loads: &[u64], redundant: u32, ranks: u32) -> ExpertLayout {
        let experts = loads.len();
        let slots = experts as u32 + redundant;
        let per_rank = (slots / ranks.max(1)).max(1) as usize;
        // Extra replicas to the experts with the largest load per replica.
        let mut count = vec![1u32; experts];
        for _ in 0..redundant {
            let best = (0..experts)
                .max_by(|&a, &b| {
                    let (la, lb) = (loads[a] as f64 / count[a] as f64, loads[b] as f64 / count[b] as f64);
                    la.total_cmp(&lb).then(b.cmp(&a))
                })
                .expect("at least one expert");
            count[best] += 1;
        }
        let mut replicas = vec![Vec::new(); experts];
        match placement {
            ExpertPlacement::Contiguous => {
                for (e, r) in replicas.iter_mut().enumerate() {
                    r.push(e as u32);
                }
                let mut next = experts as u32;
                // Hottest first (ties by index).
                let mut order: Vec<usize> = (0..experts).filter(|&e| count[e] > 1).collect();
                order.sort_by(|&a, &b| loads[b].cmp(&loads[a]).then(a.cmp(&b)));
                for e in order {
                    for _ in 1..count[e] {
                        replicas[e].push(next);
                        next += 1;
                    }
                }
            }
            ExpertPlacement::Balanced => {
                // Heaviest replica first onto the least loaded rank with a free slot.
                let mut items: Vec<(f64, usize)> =
                    (0..experts).flat_map(|e| (0..count[e]).map(move |_| (0.0, e))).collect();
                for it in items.iter_mut() {
                    it.0 = loads[it.1] as f64 / count[it.1] as f64;
                }
                items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut rank_load = vec![0.0f64; ranks as usize];
                let mut used = vec![0usize; ranks as usize];
                for (load, e) in items {
                    let r = (0..ranks as usize)
                        .filter(|&r| used[r] < per_rank)
                        .min_by(|&a, &b| rank_load[a].total_cmp(&rank_load[b]).then(a.cmp(&b)))
                        .expect("slots cover the replicas");
                    replicas[e].push((r * per_rank + used[r]) as u32);
                    used[r] += 1;
                    rank_load[r] += load;
                }
            }
        }
        ExpertLayout { slots, replicas }
    }

    /// A routing in slot ids: each token's logical experts mapped to one of
    /// their replicas in turn, ascending.
    pub fn map<'a>(&'a self, mut inner: impl ForSource + 'a) -> impl ForSource + 'a {
        let mut turn = vec![0u32; self.replicas.len()];
        let mut buf: Vec<u32> = Vec::new();
        move |src: u32, f: &mut dyn FnMut(&[u32])| {
            inner(src, &mut |experts: &[u32]| {
                buf.clear();
                for &e in experts {
                    let r = &self.replicas[e as usize];
                    buf.push(r[(turn[e as usize] as usize) % r.len()]);
                    turn[e as usize] += 1;
                }
                buf.sort_unstable();
                f(&buf);
            })
        }
    }
}

/// One micro-batch's all-to-all traffic.
#[derive(Debug, Clone)]
enum Traffic {
    Normal(EpTraffic),
    LowLatency(LowLatencyTraffic),
}

impl Traffic {
    fn rows(&self) -> &[u64] {
        match self {
            Traffic::Normal(t) => &t.rows,
            Traffic::LowLatency(t) => &t.rows,
        }
    }
}

/// The routing of one micro-batch over the unit, in slots.
fn sample_traffic(
    spec: &IterationSpec,
    cluster: &Cluster,
    tokens: u64,
    layout: &ExpertLayout,
    router_seed: u64,
    stream_base: u64,
) -> Result<Traffic, ModelError> {
    let ep = spec.ep();
    let g = cluster.topology.gpus_per_node.min(ep).max(1);
    if spec.model.moe.is_none() {
        return Ok(Traffic::Normal(EpTraffic::count(ep, g, ep, |_, _| {})));
    }
    let router = router_for(spec, cluster, tokens, router_seed)?;
    let route = |src: u32, f: &mut dyn FnMut(&[u32])| router.for_each_token_in(stream_base + src as u64, f);
    Ok(match spec.kernel() {
        MoeKernel::Normal => Traffic::Normal(EpTraffic::count(ep, g, layout.slots, layout.map(route))),
        MoeKernel::LowLatency => Traffic::LowLatency(LowLatencyTraffic::count(ep, layout.slots, layout.map(route))),
    })
}

/// The gate of the model over the unit (see [`RoutingSpec::model_gate`]).
fn router_for(spec: &IterationSpec, cluster: &Cluster, tokens: u64, seed: u64) -> Result<TokenRouter, ModelError> {
    let moe = spec.model.moe.as_ref().expect("a MoE model");
    let tokens = u32::try_from(tokens)
        .map_err(|_| ModelError::invalid("workload", "a micro-batch must have fewer than 2^32 tokens"))?;
    TokenRouter::new(RoutingSpec::model_gate(moe, spec.ep(), cluster.topology.gpus_per_node, tokens, spec.skew), seed)
}

/// The expert layout of the unit: loads from a sampled routing of the
/// first micro-batch's tokens (the "served statistics" EPLB balances).
/// Tokens per rank whose routing sets the expert layout's loads.
const LAYOUT_TOKENS: u64 = 4096;

fn expert_layout(spec: &IterationSpec, cluster: &Cluster, tokens: u64, seed: u64) -> Result<ExpertLayout, ModelError> {
    let Some(moe) = &spec.model.moe else {
        return Ok(ExpertLayout { slots: spec.ep(), replicas: Vec::new() });
    };
    let mut loads = vec![0u64; moe.routed_experts as usize];
    if spec.unit.redundant_experts > 0 || spec.unit.placement == ExpertPlacement::Balanced {
        let router = router_for(spec, cluster, tokens, seed)?;
        for src in 0..spec.ep() {
            router.for_each_token_in(7_000_000_000 + src as u64, |es| {
                for &e in es {
                    loads[e as usize] += 1;
                }
            });
        }
    }
    Ok(ExpertLayout::place(spec.unit.placement, &loads, spec.unit.redundant_experts, spec.ep()))
}

/// A piece of a micro-batch's chain: compute parts (each after an optional
/// wait on one of the micro-batch's all-to-alls), then an all-to-all.
#[derive(Default)]
struct Segment<'b> {
    parts: Vec<(&'b [Item], Option<usize>)>,
    issue: Option<(usize, EpComm)>,
}

fn push_part<'b>(segs: &mut [Segment<'b>], items: &'b [Item], wait: Option<usize>) {
    if !items.is_empty() || wait.is_some() {
        segs.last_mut().expect("one").parts.push((items, wait));
    }
}

/// The chain of segments of one micro-batch's blocks, and the block of each
/// of its all-to-alls. `split`: cut a MoE layer's attention before its core
/// attention kernel (decode).
fn chain(blocks: &[Block], split: bool) -> (Vec<Segment<'_>>, Vec<usize>) {
    let mut segs = vec![Segment::default()];
    let mut comm_block = Vec::new();
    let push = push_part;
    for (bi, b) in blocks.iter().enumerate() {
        let cut = if split && b.comm_a.is_some() {
            b.pre.iter().position(|i| matches!(i, Item::Kernel(k) if k.label.ends_with("attention fwd")))
        } else {
            None
        };
        match cut {
            Some(c) => {
                push(&mut segs, &b.pre[..c], None);
                segs.push(Segment::default());
                push(&mut segs, &b.pre[c..], None);
            }
            None => push(&mut segs, &b.pre, None),
        }
        if let Some(c) = b.comm_a {
            let a = comm_block.len();
            comm_block.push(bi);
            segs.last_mut().expect("one").issue = Some((a, c));
            segs.push(Segment::default());
            push(&mut segs, &b.side, None);
            push(&mut segs, &b.mid, Some(a));
            if let Some(c2) = b.comm_b {
                let k = comm_block.len();
                comm_block.push(bi);
                segs.last_mut().expect("one").issue = Some((k, c2));
                segs.push(Segment::default());
                push(&mut segs, &b.post, Some(k));
            } else {
                push(&mut segs, &b.post, None);
            }
        } else {
            push(&mut segs, &b.side, None);
            push(&mut segs, &b.mid, None);
            push(&mut segs, &b.post, None);
        }
    }
    (segs, comm_block)
}

/// Sampled routings kept across iterations of one unit (same model, unit,
/// skew, seed and cluster): the expert layout and each micro-batch's
/// traffic by its token count, so iterations that differ only in context
/// length or layer count sample once.
#[derive(Debug, Clone, Default)]
pub struct RoutingCache {
    layouts: std::collections::BTreeMap<u64, ExpertLayout>,
    traffic: std::collections::BTreeMap<(u64, u64), Traffic>,
}

/// Lowers one iteration of the unit into `graph` (one representative rank).
pub fn lower_iteration(
    cluster: &Cluster,
    spec: &IterationSpec,
    seed: u64,
    graph: &mut TaskGraph,
) -> Result<IterationLowering, ModelError> {
    lower_iteration_cached(cluster, spec, seed, graph, &mut RoutingCache::default())
}

/// [`lower_iteration`] reusing the routings in `cache` (which must only
/// ever see this unit's spec up to its shapes and layer count, the same
/// seed and the same cluster).
pub fn lower_iteration_cached(
    cluster: &Cluster,
    spec: &IterationSpec,
    seed: u64,
    graph: &mut TaskGraph,
    cache: &mut RoutingCache,
) -> Result<IterationLowering, ModelError> {
    let problems = spec.problems(cluster.gpu_count());
    if !problems.is_empty() {
        return Err(ModelError::Invalid { problems });
    }
    let model = &spec.model;
    let device = &cluster.device;
    let mbs = spec.micro_batches();
    let ep = spec.ep();
    let decode = matches!(spec.phase, IterationPhase::Decode { .. });
    let mtp = matches!(spec.phase, IterationPhase::Decode { mtp_acceptance: Some(_), .. });
    let kernel = spec.kernel();
    // The computation keeps off the SMs DeepEP holds only where the two are
    // laid out to run side by side (two micro-batches). With one, only the
    // shared expert meets the dispatch, and the kernels get the whole GPU.
    let holds = spec.micro_batches > 1
        && kernel == MoeKernel::Normal
        && model.moe.is_some()
        && ep > 1
        && spec.unit.comm_sms > 0;
    let compute_sms = holds.then(|| device.sms.saturating_sub(spec.unit.comm_sms).max(1));
    let layout_tokens = mbs[0].tokens().min(LAYOUT_TOKENS);
    if let std::collections::btree_map::Entry::Vacant(e) = cache.layouts.entry(layout_tokens) {
        e.insert(expert_layout(spec, cluster, layout_tokens, seed)?);
    }
    let layout = &cache.layouts[&layout_tokens];

    // Traffic per micro-batch: the main layers' tokens, and the MTP
    // module's (one draft per sequence) in decode.
    let mut traffic = Vec::with_capacity(mbs.len());
    let mut mtp_traffic = Vec::new();
    let sampled = |tokens: u64, base: u64, cache_traffic: &mut std::collections::BTreeMap<(u64, u64), Traffic>| {
        if let Some(t) = cache_traffic.get(&(tokens, base)) {
            return Ok(t.clone());
        }
        let t = sample_traffic(spec, cluster, tokens, layout, seed, base)?;
        cache_traffic.insert((tokens, base), t.clone());
        Ok::<Traffic, ModelError>(t)
    };
    // A tensor-parallel group holds its tokens once (attention splits the
    // heads), and each member dispatches its 1/tp share of them.
    let tp = spec.unit.tp.max(1) as u64;
    let routed = |tokens: u64| ((tokens.div_ceil(tp) as f64 * spec.moe_fill).round() as u64).max(1);
    for (i, mb) in mbs.iter().enumerate() {
        let base = (i as u64 * 2) * ep as u64 * 1_000_003;
        traffic.push(sampled(routed(mb.tokens()), base, &mut cache.traffic)?);
        if mtp {
            let base = (i as u64 * 2 + 1) * ep as u64 * 1_000_003;
            mtp_traffic.push(sampled(routed(mb.sequences), base, &mut cache.traffic)?);
        }
    }
    let g = cluster.topology.gpus_per_node.min(ep).max(1);
    let nv = cluster.topology.summary().gpu_nvlink_bytes_per_s.max(1.0);
    let ib = cluster.topology.summary().gpu_network_bytes_per_s.max(1.0);
    let rep = match &traffic[0] {
        Traffic::Normal(t) => t.critical_rank(nv, ib),
        Traffic::LowLatency(t) => t.critical_rank(g, nv, ib),
    };
    let rank = rep as u32;
    let max_rows = |t: &Traffic| t.rows().iter().copied().max().unwrap_or(0);
    let mean_rows = |t: &Traffic| t.rows().iter().sum::<u64>() as f64 / t.rows().len().max(1) as f64;

    // Blocks of each micro-batch.
    let slots = spec.slots_per_gpu().max(1);
    let ctx_of = |mb: &MicroBatch, seq_len: u64| LayerContext {
        model,
        device,
        sequences: mb.sequences,
        seq_len,
        mode: mb.mode,
        tp: spec.unit.tp,
        cp: 1,
        cp_comm: CpComm::Ring,
        experts_per_rank: slots,
        linear_dtype: spec.linear_dtype,
        recompute: Recompute::None,
        attention_kernel: AttentionKernel::Flash,
        sequence_parallel: false,
        compute_sms,
        gemm_kernels: Default::default(),
    };
    let mut blocks_of = Vec::with_capacity(mbs.len());
    for (i, mb) in mbs.iter().enumerate() {
        let ctx = ctx_of(mb, mb.seq_len);
        let rows = if model.moe.is_some() { max_rows(&traffic[i]) } else { 0 };
        let mut blocks = vec![ctx.forward(Unit::Embedding, 0)?];
        for l in 0..model.layers {
            let r = if model.ffn_kind(l) == FfnKind::Moe { rows } else { 0 };
            blocks.push(ctx.forward(Unit::Layer(l), r)?);
        }
        blocks.push(ctx.forward(Unit::Head, 0)?);
        if mtp {
            let draft = ctx_of(mb, 1);
            let r = if model.moe.is_some() { max_rows(&mtp_traffic[i]) } else { 0 };
            for m in 0..model.mtp_modules {
                blocks.push(draft.forward(Unit::Mtp(m), r)?);
            }
        }
        blocks_of.push(blocks);
    }

    // Streams of the simulated rank and the emitter.
    let (compute, tp_stream) = (graph.add_stream(rank, "compute"), graph.add_stream(rank, "tp"));
    let streams = RankStreams { rank, compute, tp: tp_stream, cp: tp_stream };
    let ep_stream = graph.add_stream(rank, "ep");
    let emitter = Emitter {
        cluster,
        tp: spec.unit.tp,
        cp: 1,
        launch_gaps: LaunchGaps::uniform(SimDuration::from_us_f64(device.launch_overhead_us)),
    };
    let chains: Vec<(Vec<Segment>, Vec<usize>)> = blocks_of.iter().map(|b| chain(b, decode)).collect();
    let lead = usize::from(decode && chains.len() > 1);
    let longest = chains.iter().map(|c| c.0.len()).max().unwrap_or(0);
    let mut comm_tasks: Vec<Vec<Option<TaskId>>> = chains.iter().map(|c| vec![None; c.1.len()]).collect();
    let mut last: Option<TaskId> = None;
    let low = Lowered { cluster, spec, graph, emitter, streams, ep_stream, rep, kernel };
    let mut low = low;
    for step in 0..longest + lead {
        for (m, (segs, comm_block)) in chains.iter().enumerate() {
            let Some(i) = step.checked_sub(if m == 0 { 0 } else { lead }) else { continue };
            let Some(seg) = segs.get(i) else { continue };
            for &(items, wait) in &seg.parts {
                let w = wait.and_then(|k| comm_tasks[m][k]);
                low.emitter.compute(low.graph, low.streams, items, w, &mut last);
            }
            if let Some((k, comm)) = seg.issue {
                // The MTP module's all-to-alls carry its own (smaller) traffic.
                let unit = blocks_of[m][comm_block[k]].unit;
                let t = match unit {
                    Some(Unit::Mtp(_)) => &mtp_traffic[m],
                    _ => &traffic[m],
                };
                let task = low.all_to_all(t, comm, last);
                comm_tasks[m][k] = Some(task);
            }
        }
    }

    // A prompt chunked over the micro-batches counts once.
    let chunked = mbs.len() > 1 && mbs[1].mode != mbs[0].mode;
    let sequences: u64 = if chunked { 1 } else { mbs.iter().map(|m| m.sequences).sum() };
    let new_tokens: u64 = mbs.iter().map(MicroBatch::tokens).sum();
    // Per GPU: the tensor-parallel group's figures over its `tp` members.
    let per_gpu = |v: f64| v / tp as f64;
    let (input, output) = match spec.phase {
        IterationPhase::Prefill { prompt_len, .. } => (sequences as f64 * prompt_len as f64, sequences as f64),
        IterationPhase::Decode { mtp_acceptance, .. } => {
            (0.0, sequences as f64 * (1.0 + mtp_acceptance.unwrap_or(0.0)))
        }
    };
    let (input, output) = (per_gpu(input), per_gpu(output));
    let rows_max: u64 = traffic.iter().map(max_rows).sum();
    let rows_mean: f64 = traffic.iter().map(mean_rows).sum();
    let mut notes = vec![format!(
        "representative rank: rank {rank} simulated of the unit's {ep} (the critical rank of the sampled routing; its expert GEMMs take the unit's most loaded rank's rows; every GPU runs the same shapes on its own requests)"
    )];
    if model.moe.is_some() {
        notes.push(format!(
            "{} expert slots per GPU ({} routed + {} redundant over {ep} GPUs, {} placement); routing sampled once per micro-batch and reused for every MoE layer",
            slots,
            model.moe.as_ref().map_or(0, |m| m.routed_experts),
            spec.unit.redundant_experts,
            match spec.unit.placement {
                ExpertPlacement::Balanced => "balanced",
                ExpertPlacement::Contiguous => "contiguous",
            }
        ));
    }
    Ok(IterationLowering {
        rank,
        micro_batches: mbs,
        slots_per_gpu: slots,
        sequences_per_gpu: per_gpu(sequences as f64),
        new_tokens_per_gpu: per_gpu(new_tokens as f64),
        input_tokens_per_gpu: input,
        output_tokens_per_gpu: output,
        expert_rows: (rows_max, rows_mean),
        notes,
    })
}

/// The lowering's state for one simulated rank.
struct Lowered<'a, 'g> {
    cluster: &'a Cluster,
    spec: &'a IterationSpec,
    graph: &'g mut TaskGraph,
    emitter: Emitter<'a>,
    streams: RankStreams,
    ep_stream: StreamId,
    rep: usize,
    kernel: MoeKernel,
}

impl Lowered<'_, '_> {
    /// One dispatch or combine of the representative rank after `after`.
    fn all_to_all(&mut self, traffic: &Traffic, comm: EpComm, after: Option<TaskId>) -> TaskId {
        let label = match (comm.phase, self.kernel) {
            (MoePhase::Dispatch, MoeKernel::Normal) => "ep dispatch",
            (MoePhase::Combine, MoeKernel::Normal) => "ep combine",
            (MoePhase::Dispatch, MoeKernel::LowLatency) => "ep dispatch (low latency)",
            (MoePhase::Combine, MoeKernel::LowLatency) => "ep combine (low latency)",
        };
        let t = match traffic {
            Traffic::Normal(t) => {
                let kernel = CommKernel::normal(comm.phase, comm.bytes_per_token, self.spec.unit.comm_sms);
                t.lower_mirror(self.cluster, &kernel, self.rep, label, self.graph, self.ep_stream)
            }
            Traffic::LowLatency(t) => {
                // DeepEP's low-latency messages: the dispatch adds a 16-byte header.
                let bytes = match comm.phase {
                    MoePhase::Dispatch => comm.bytes_per_token + 16.0,
                    MoePhase::Combine => comm.bytes_per_token,
                };
                let kernel = CommKernel::low_latency(self.cluster, comm.phase, bytes);
                t.lower_mirror(self.cluster, &kernel, self.rep, label, self.graph, self.ep_stream)
            }
        };
        if let Some(a) = after {
            self.graph.add_dep(a, t);
        }
        t
    }
}

/// Memory per GPU of an iteration, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct InferenceMemory {
    pub weights: f64,
    pub kv_cache: f64,
    pub activations: f64,
    pub comm_buffers: f64,
}

impl InferenceMemory {
    pub fn total(&self) -> f64 {
        self.weights + self.kv_cache + self.activations + self.comm_buffers
    }
}

/// Bytes per weight of the linear layers: FP8 with one FP32 scale per
/// 128 x 128 block, or BF16.
fn linear_bytes(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Fp8 => 1.0 + 4.0 / (128.0 * 128.0),
        other => other.bytes(),
    }
}

/// Weights per GPU: attention, dense FFNs and shared experts replicated on
/// every tensor-parallel group (split by `tp`), `slots_per_gpu` routed
/// experts per MoE layer, the embedding and head (BF16), norms and gates
/// (BF16), and the MTP modules when drafting.
pub fn weights_per_gpu(model: &ModelConfig, unit: &DeploymentUnit, slots_per_gpu: u32, dtype: Dtype, mtp: bool) -> f64 {
    let lb = linear_bytes(dtype);
    let tp = unit.tp.max(1) as f64;
    let h = model.hidden as f64;
    let p = model.params();
    let layer = |kind: FfnKind| -> f64 {
        let attn = model.attention_params() / tp * lb;
        let ffn = match (kind, &model.moe) {
            (FfnKind::Moe, Some(m)) => {
                m.shared_experts as f64 * model.ffn_params(m.expert_intermediate) / tp * lb
                    + slots_per_gpu as f64 * model.ffn_params(m.expert_intermediate) * lb
                    + m.routed_experts as f64 * h * 2.0
            }
            _ => model.ffn_params(model.ffn.dense_intermediate) / tp * lb,
        };
        attn + ffn
    };
    let mut total: f64 = (0..model.layers).map(|l| layer(model.ffn_kind(l))).sum();
    total += (p.embedding + p.head) / tp * 2.0 + h * 2.0;
    if mtp {
        let kind = if model.moe.is_some() { FfnKind::Moe } else { FfnKind::Dense };
        total += model.mtp_modules as f64 * (layer(kind) + 2.0 * h * h * lb + 2.0 * h * 2.0);
    }
    total
}

/// The DeepEP buffers of the unit's all-to-all kernels per GPU: 1 GB of
/// NVLink and 1 GB of RDMA buffer for the normal kernels (DeepEP's
/// defaults), and for the low-latency kernels double-buffered receive
/// slots for every (expert slot, token) pair of both directions.
pub fn comm_buffer_bytes(spec: &IterationSpec, tokens_per_micro_batch: u64) -> f64 {
    let Some(_) = &spec.model.moe else { return 0.0 };
    match spec.kernel() {
        MoeKernel::Normal => 2e9,
        MoeKernel::LowLatency => {
            let h = spec.model.hidden as f64;
            let per_token = h * (1.0 + 4.0 / 128.0) + 16.0 + h * 2.0;
            let slots = spec.slots_per_gpu() as f64 * spec.ep() as f64;
            2.0 * slots * tokens_per_micro_batch as f64 * per_token
        }
    }
}

/// Memory per GPU: weights, the KV cache of the sequences the iteration
/// holds (prompts in prefill, the decode batch with its context), working
/// activations of the micro-batches and the all-to-all buffers.
pub fn inference_memory(spec: &IterationSpec) -> InferenceMemory {
    let model = &spec.model;
    let mbs = spec.micro_batches();
    let mtp = matches!(spec.phase, IterationPhase::Decode { mtp_acceptance: Some(_), .. });
    let weights = weights_per_gpu(model, &spec.unit, spec.slots_per_gpu(), spec.linear_dtype, mtp);
    let kv_per_token = kv_bytes_per_token(model, spec.unit.tp, mtp);
    let kv_tokens: f64 = match spec.phase {
        IterationPhase::Prefill { .. } => {
            mbs.iter().map(|m| m.sequences as f64 * (m.seq_len + cached_of(m)) as f64).fold(0.0, f64::max)
                * mbs.len() as f64
        }
        IterationPhase::Decode { batch_per_gpu, context_len, .. } => {
            batch_per_gpu as f64 * (context_len + mbs.first().map_or(1, |m| m.seq_len)) as f64
        }
    };
    let h = model.hidden as f64;
    let act: f64 = mbs
        .iter()
        .map(|m| {
            let t = m.tokens() as f64;
            let rows = match &model.moe {
                Some(moe) => t * moe.topk as f64,
                None => 0.0,
            };
            let inter = model.moe.as_ref().map_or(model.ffn.dense_intermediate as f64 / spec.unit.tp as f64, |moe| {
                moe.expert_intermediate as f64
            });
            // Residual, normed input, attention and MoE outputs (BF16), the
            // received expert rows (FP8) with their SwiGLU intermediate and
            // outputs (BF16).
            t * h * 2.0 * 4.0 + rows * (h * 1.03 + 2.0 * inter * 2.0 + h * 2.0)
        })
        .sum();
    let logits =
        mbs.iter().map(|m| m.sequences as f64 * m.seq_len as f64).fold(0.0, f64::max) * model.vocab as f64 * 4.0
            / spec.unit.tp as f64;
    InferenceMemory {
        weights,
        kv_cache: kv_tokens * kv_per_token,
        activations: act + logits,
        comm_buffers: comm_buffer_bytes(spec, mbs.iter().map(MicroBatch::tokens).max().unwrap_or(0)),
    }
}

fn cached_of(m: &MicroBatch) -> u64 {
    match m.mode {
        PassMode::Prefill { cached } => cached,
        PassMode::Decode { context } => context,
        PassMode::Training => 0,
    }
}

/// KV-cache bytes per token on one GPU (BF16; split over the attention's
/// tensor-parallel group for GQA, replicated latents for MLA), the MTP
/// module's layer included when it drafts.
pub fn kv_bytes_per_token(model: &ModelConfig, tp: u32, mtp: bool) -> f64 {
    let per_layer = model.kv_cache_bytes_per_token(2.0) / model.layers as f64;
    let layers = model.layers as f64 + if mtp { model.mtp_modules as f64 } else { 0.0 };
    let split = match model.attention.kind {
        crate::transformer::model::AttentionKind::Mla => 1.0,
        crate::transformer::model::AttentionKind::Gqa => (tp.min(model.attention.kv_heads)).max(1) as f64,
    };
    per_layer * layers / split
}

/// Tokens of KV cache that fit on one GPU beside the weights, buffers and
/// activations of `spec` (its own KV excluded), at `reserve` of HBM kept
/// free (allocator slack, CUDA graphs, the runtime).
pub fn kv_capacity_tokens(spec: &IterationSpec, device: &DeviceSpec, reserve: f64) -> f64 {
    let m = inference_memory(spec);
    let mtp = matches!(spec.phase, IterationPhase::Decode { mtp_acceptance: Some(_), .. });
    let free = device.hbm_bytes() * (1.0 - reserve) - m.weights - m.activations - m.comm_buffers;
    (free / kv_bytes_per_token(&spec.model, spec.unit.tp, mtp)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_placement_replicates_the_hottest_and_fills_every_slot() {
        // 8 experts, expert 0 2.9 times as loaded; 4 redundant slots over 4
        // ranks: two more copies of expert 0 (290 -> 145 -> 96.7 per copy),
        // then one each of experts 1 and 2 (ties go to the lower index).
        let loads = [290, 100, 100, 100, 100, 100, 100, 100];
        let l = ExpertLayout::place(ExpertPlacement::Balanced, &loads, 4, 4);
        assert_eq!(l.slots, 12);
        let copies: Vec<usize> = l.replicas.iter().map(Vec::len).collect();
        assert_eq!(copies, vec![3, 2, 2, 1, 1, 1, 1, 1], "{l:?}");
        let mut all: Vec<u32> = l.replicas.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<u32>>());
        // Per rank load: 3 slots each, loads as even as the replicas allow.
        let mut rank_load = [0.0f64; 4];
        for (e, r) in l.replicas.iter().enumerate() {
            for &s in r {
                rank_load[(s / 3) as usize] += loads[e] as f64 / r.len() as f64;
            }
        }
        let (lo, hi) = rank_load.iter().fold((f64::MAX, 0.0f64), |a, &x| (a.0.min(x), a.1.max(x)));
        assert!(hi - lo <= 100.0 + 1e-9, "{rank_load:?}");
        let c = ExpertLayout::place(ExpertPlacement::Contiguous, &loads, 4, 4);
        assert_eq!(c.replicas[0], vec![0, 8, 9]);
        assert_eq!(c.replicas[1], vec![1, 10]);
    }

    #[test]
    fn replicas_share_a_hot_experts_copies_in_turn() {
        let loads = [10, 1];
        let l = ExpertLayout::place(ExpertPlacement::Contiguous, &loads, 2, 2);
        let mut seen = vec![0u32; 4];
        let mut f = l.map(|_: u32, f: &mut dyn FnMut(&[u32])| {
            for _ in 0..6 {
                f(&[0]);
            }
        });
        f(0, &mut |slots: &[u32]| seen[slots[0] as usize] += 1);
        assert_eq!(seen, vec![2, 0, 2, 2]);
    }

    #[test]
    fn deepseek_v3_decode_unit_holds_two_routed_and_one_shared_expert_per_gpu() {
        let model = ModelConfig::preset("deepseek-v3").unwrap();
        let unit = DeploymentUnit {
            gpus: 144,
            tp: 1,
            redundant_experts: 32,
            placement: ExpertPlacement::Balanced,
            comm_sms: 0,
        };
        let spec = IterationSpec {
            model,
            unit,
            phase: IterationPhase::Decode { batch_per_gpu: 128, context_len: 4096, mtp_acceptance: None },
            linear_dtype: Dtype::Fp8,
            skew: Skew::Balanced,
            micro_batches: 2,
            moe_fill: 1.0,
        };
        assert_eq!(spec.slots_per_gpu(), 2);
        assert_eq!(spec.micro_batches().len(), 2);
        assert_eq!(spec.micro_batches()[0].sequences, 64);
        // KV: 128 x 4097 tokens x 70,272 B.
        let m = inference_memory(&spec);
        assert_eq!(m.kv_cache, 128.0 * 4097.0 * 70_272.0);
    }
}
