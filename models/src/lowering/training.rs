//! One training step of a (MoE) transformer lowered to the engine's
//! `TaskGraph`: a pipeline schedule (1F1B, ZB1P, DualPipe, DualPipeV) whose
//! chunks are the stages' layers as kernels ([`crate::transformer::layers`]), DeepEP-style
//! expert-parallel all-to-alls that hold SMs while they run, pipeline sends
//! between stages, tensor-parallel all-reduces, and the data-parallel
//! gradient reduce-scatter, optimizer step and parameter all-gather of ZeRO.
//!
//! Each rank has five streams: `compute` (kernels), `ep` (all-to-all),
//! `pp` (pipeline sends), `tp` (tensor-parallel all-reduce) and `dp`
//! (gradient synchronisation and the optimizer). DualPipe's overlapped
//! forward+backward chunk interleaves the two chunks' layers the way the
//! DeepSeek-V3 report draws it (Figure 4), so one chunk's all-to-all runs
//! beside the other's computation; every overlap and slowdown then comes out
//! of the engine (kernels beside a communication kernel get fewer SMs).
//!
//! Two ways to choose the ranks that are simulated:
//! - `All`: every rank, every all-to-all over all its EP group's members.
//! - `Representative`: one rank per pipeline device. Data-parallel replicas
//!   run the same schedule on the same shapes, so they are alike up to their
//!   routing; the representative is the *critical* rank of its EP group (the
//!   one whose all-to-all takes longest on its own links) and its expert
//!   GEMMs get the rows of the group's most loaded rank, because every
//!   all-to-all waits for the slowest member. Its all-to-alls are lowered as
//!   mirrors (its sends and receptions over the real routes, see
//!   [`Exchange::lower_mirror`](crate::network::moe_comm::Exchange::lower_mirror)); its data-parallel rings as the ring's
//!   inter-node edge. A test checks this against `All` on small clusters.
//!
//! Routing ([`RoutingDraw`]) is drawn per (pipeline device, micro-batch) by
//! default: each micro-batch's exchanges and expert GEMMs on a device use
//! that micro-batch's traffic, and in representative mode the simulated
//! rank carries, per micro-batch, the load of that micro-batch's critical
//! member ([`EpTraffic::relabelled`] puts it on the simulated rank's own
//! links). A micro-batch's group routing is `ep` source routings (one per
//! member, `sequences x seq_len` tokens each) taken without replacement from
//! a pool of `ep x max(devices, 8)` drawn from the seed, so each micro-batch
//! is an exact draw of the gate and the pool costs what one draw per device
//! cost ([`sample_routing`]). `per-device` reuses one draw per device for
//! every micro-batch (the earlier model, kept for comparison). Either way a
//! draw is reused by every MoE layer of the device's stages.
//!
//! Before each EP exchange DeepEP's notify kernel holds a barrier with the
//! group ([`TrainingSpec::ep_lateness`], default [`DEEPEP_LATENESS`]): each
//! rank is behind by |z| times a share of the computation it ran since its
//! previous exchange, and the notify, a communication task on the `ep`
//! stream after the rank's computation, waits for the latest. `All` draws
//! each rank's z and joins the group's notifies in a barrier;
//! `Representative` is a typical rank and waits the expected latest
//! ([`latest_beyond_typical`]).

use std::collections::BTreeMap;
use std::rc::Rc;

use moesim_sim::{DeviceId, Flow, Kernel, SimDuration, StreamId, TaskClass, TaskGraph, TaskId, TaskKind};

use crate::error::ModelError;
use crate::hardware::device::Dtype;
use crate::hardware::ops::{op_cost, Op};
use crate::hardware::variability::{lateness_beyond_typical, latest_beyond_typical};
use crate::lowering::emit::{Emitter, LaunchGaps, RankStreams};
use crate::network::cluster::Cluster;
use crate::network::collectives::{join_all, member_load, CollectiveOp, CollectiveSpec, MemberLoad};
use crate::network::moe_comm::{CommKernel, EpTraffic, Exchange, SourceCounts};
use crate::transformer::layers::{AttentionKernel, Block, EpComm, Item, LayerContext, PassMode, Recompute, Unit};
use crate::transformer::model::{FfnKind, ModelConfig};
use crate::transformer::parallel::ParallelPlan;
use crate::transformer::routing::MoePhase;
use crate::transformer::routing::{RoutingSpec, Skew, TokenRouter};
use crate::transformer::schedule::{self, ChunkRef, OpPart, PipeOp, PipelineSchedule};

/// Which ranks to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankMode {
    Representative,
    All,
}

/// How often the MoE routing of a pipeline device's EP group is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingDraw {
    /// Once per (device, micro-batch): micro-batches differ in imbalance.
    #[default]
    PerMicroBatch,
    /// Once per device, reused for every micro-batch.
    PerDevice,
}

/// Source routings in the per-micro-batch pool: `ep` per pipeline device,
/// and at least this many groups' worth, so that even a one-device step
/// has micro-batches that differ in more than the order of their members.
const MIN_POOL_GROUPS: u32 = 8;

/// Everything a training step needs besides the cluster.
#[derive(Debug, Clone)]
pub struct TrainingSpec {
    pub model: ModelConfig,
    pub plan: ParallelPlan,
    pub seq_len: u64,
    /// Sequences per step.
    pub global_batch: u64,
    /// Number format of the linear layers (FP8 or BF16).
    pub linear_dtype: Dtype,
    pub skew: Skew,
    /// What the backward pass recomputes.
    pub recompute: Recompute,
    /// Fused (Flash) attention or materialised scores.
    pub attention_kernel: AttentionKernel,
    /// Transformer layers of each model stage (pipeline stage, or model
    /// chunk under interleaving), in order; `None`: split by cost
    /// ([`partition`]). Checked by [`check_stage_layers`].
    pub stage_layers: Option<Vec<u32>>,
    pub mode: RankMode,
    /// Routing drawn per micro-batch or once per device.
    pub routing_draw: RoutingDraw,
    /// Gap on the compute stream before a kernel of each class
    /// ([`KernelKind`](crate::transformer::layers::KernelKind) order), microseconds; `None`: the device's
    /// `launch_overhead_us`.
    pub launch_gaps_us: [Option<f64>; 4],
    /// How far behind ranks reach a DeepEP normal exchange, as the scale of
    /// a half-normal share of the computation since their previous one (0:
    /// all together); the exchange's notify barrier waits for the group's
    /// latest ([`DEEPEP_LATENESS`]).
    pub ep_lateness: f64,
}

/// The default of `ep_lateness`, measured on DeepSeek's profile
/// (profile-data `train.json`, H800, EP64, one F&B chunk pair; `moesim
/// calibrate` prints it). A DeepEP notify kernel's barrier holds until
/// every rank of the group has arrived and finished its previous exchange
/// (DeepEP issue #94, the maintainer's answer). On the profiled rank, whose
/// routing is balanced, the 16 notify kernels hold the communication stream
/// 32.6 ms while its computation streams run 124.3 ms (their union): 0.262
/// of the computation, spent waiting for the latest of 64 ranks. With each
/// rank behind by |z| scales s of its computation (z a standard normal),
/// the latest arrives E[(max of 64 |z| - E|z|)+] = 1.798 scales after a
/// typical rank such as the profiled one: s = 0.262 / 1.798.
pub const DEEPEP_LATENESS: f64 = 0.146;

/// Why `stage_layers` does not fit `stages` model stages of `layers` layers.
pub fn check_stage_layers(counts: &[u32], stages: u32, layers: u32) -> Result<(), String> {
    if counts.len() != stages as usize {
        return Err(format!(
            "{} counts for {stages} model stages (pp x virtual_stages): give one layer count per stage",
            counts.len()
        ));
    }
    if let Some(i) = counts.iter().position(|&c| c == 0) {
        return Err(format!("stage {i} has no layer: every stage needs at least one"));
    }
    let sum: u64 = counts.iter().map(|&c| c as u64).sum();
    if sum != layers as u64 {
        return Err(format!("the counts add up to {sum} layers, the model has {layers}"));
    }
    Ok(())
}

/// Llama 3's layout (arXiv 2407.21783 §3.3.2: "we reduce one Transformer
/// layer each from the first and the last stages"): the first and last of
/// `stages` model stages get `fewer` layers less than the others, which
/// share the rest evenly. Why not, if the layers do not split that way.
pub fn first_last_fewer(layers: u32, stages: u32, fewer: u32) -> Result<Vec<u32>, String> {
    if stages < 2 {
        return Err(format!("needs at least 2 model stages (pp x virtual_stages), not {stages}"));
    }
    let total = layers as u64 + 2 * fewer as u64;
    if !total.is_multiple_of(stages as u64) || total / (stages as u64) <= fewer as u64 {
        return Err(format!(
            "{layers} layers + 2 x {fewer} do not split evenly into {stages} model stages with layers on the first and last"
        ));
    }
    let each = (total / stages as u64) as u32;
    let mut v = vec![each; stages as usize];
    v[0] -= fewer;
    v[stages as usize - 1] -= fewer;
    Ok(v)
}

impl TrainingSpec {
    /// Tokens of each sequence one rank computes: the whole sequence, or
    /// its `1 / cp` share under context parallelism.
    pub fn local_seq_len(&self) -> u64 {
        self.seq_len / self.plan.cp.max(1) as u64
    }

    /// What every block of a rank of this step shares.
    pub fn layer_context<'a>(&'a self, cluster: &'a Cluster) -> LayerContext<'a> {
        let plan = &self.plan;
        LayerContext {
            model: &self.model,
            device: &cluster.device,
            sequences: plan.micro_batch as u64,
            seq_len: self.local_seq_len(),
            mode: PassMode::Training,
            tp: plan.tp,
            cp: plan.cp,
            cp_comm: plan.cp_comm,
            experts_per_rank: self.model.moe.as_ref().map_or(1, |m| m.routed_experts / plan.ep),
            linear_dtype: self.linear_dtype,
            recompute: self.recompute,
            attention_kernel: self.attention_kernel,
            sequence_parallel: plan.sequence_parallel,
            compute_sms: compute_sms(self, cluster),
            gemm_kernels: plan.gemm_kernels,
        }
    }
}

/// One simulated rank.
#[derive(Debug, Clone)]
pub struct SimRank {
    /// Global rank (= engine device index).
    pub rank: u32,
    /// Pipeline device.
    pub device: u32,
    /// Index inside the device's ranks (`i * tp + t`).
    pub local: u32,
    pub compute: StreamId,
    pub ep: StreamId,
    pub tp: StreamId,
    /// Ring-attention and K/V gathers (the `tp` stream without context parallelism).
    pub cp: StreamId,
    pub dp: StreamId,
}

/// What the lowering produced besides the tasks.
#[derive(Debug, Clone)]
pub struct TrainingLowering {
    pub schedule: PipelineSchedule,
    /// Units of each model stage.
    pub stage_units: Vec<Vec<Unit>>,
    pub ranks: Vec<SimRank>,
    pub microbatches: u32,
    /// Per device: the expert rows (token copies) of the group's most loaded
    /// rank per MoE layer, averaged over micro-batches (rounded), and the mean
    /// over the group.
    pub expert_rows: Vec<(u64, f64)>,
    /// Tokens per step.
    pub tokens: f64,
    /// Every op of every simulated rank: what it is, its first task (a
    /// marker) and its last compute task, for per-op timings.
    pub ops: Vec<OpSpan>,
    /// The kernels of the overlapped (F&B) ops by class (indexed by
    /// [`KernelKind`](crate::transformer::layers::KernelKind) as in its `ALL`), for the per-class
    /// calibration against a profile's chunk pair.
    pub overlapped_kernels: [KernelClassRecord; 4],
    pub notes: Vec<String>,
}

/// The kernel tasks of one class, in emission order, and the sum of their
/// times alone (4 bytes a kernel instead of a record each: every rank's
/// overlapped kernels are kept through the engine run).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KernelClassRecord {
    pub tasks: Vec<TaskId>,
    /// The kernels alone on their SMs, seconds (what a kernel benchmark
    /// reports), summed in emission order.
    pub standalone_s: f64,
}

/// Which kind of pipeline op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Forward,
    Backward,
    Weight,
    Overlapped,
}

/// The tasks delimiting one op on one simulated rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpSpan {
    pub rank: u32,
    pub kind: OpKind,
    pub first: TaskId,
    pub last: TaskId,
}

/// Contiguous split of `costs` into `parts` non-empty ranges minimising the
/// largest sum (linear partition by dynamic programming); returns the start
/// of each range.
pub fn partition(costs: &[f64], parts: usize) -> Vec<usize> {
    let n = costs.len();
    assert!(parts >= 1 && parts <= n, "1 <= parts <= items");
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + costs[i];
    }
    // best[k][i]: the smallest max over splitting the first i items in k parts.
    let inf = f64::INFINITY;
    let mut best = vec![vec![inf; n + 1]; parts + 1];
    let mut cut = vec![vec![0usize; n + 1]; parts + 1];
    best[0][0] = 0.0;
    for k in 1..=parts {
        for i in k..=n {
            for j in (k - 1)..i {
                let v = best[k - 1][j].max(prefix[i] - prefix[j]);
                if v < best[k][i] - 1e-12 {
                    best[k][i] = v;
                    cut[k][i] = j;
                }
            }
        }
    }
    let mut starts = vec![0; parts];
    let mut i = n;
    for k in (1..=parts).rev() {
        starts[k - 1] = cut[k][i];
        i = cut[k][i];
    }
    starts
}

/// Splits the model's units over `stages` pipeline stages, balancing the
/// estimated forward+backward time of each unit.
/// The units of each of `stages` model stages, cut where the slowest stage
/// (forward + backward kernel time at `rows` expert rows) is fastest.
pub fn split_stages(
    model: &ModelConfig,
    ctx: &LayerContext,
    stages: u32,
    rows: u64,
) -> Result<Vec<Vec<Unit>>, ModelError> {
    let mut units = vec![Unit::Embedding];
    units.extend((0..model.layers).map(Unit::Layer));
    units.push(Unit::Head);
    units.extend((0..model.mtp_modules).map(Unit::Mtp));
    let mut costs = Vec::with_capacity(units.len());
    for &u in &units {
        costs.push(ctx.forward(u, rows)?.kernel_time_s() + ctx.backward(u, rows)?.kernel_time_s());
    }
    // Embedding and head ride with their neighbours; only layers may start a stage
    // after the first, and the head and MTP modules stay on the last stage.
    let layer_costs: Vec<f64> = (0..model.layers as usize).map(|i| costs[i + 1]).collect();
    let mut weighted = layer_costs.clone();
    weighted[0] += costs[0];
    let tail: f64 = costs[model.layers as usize + 1..].iter().sum();
    *weighted.last_mut().expect("a layer") += tail;
    let starts = partition(&weighted, stages as usize);
    let mut out = Vec::with_capacity(stages as usize);
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(model.layers as usize);
        let mut stage: Vec<Unit> = (s..end).map(|i| Unit::Layer(i as u32)).collect();
        if k == 0 {
            stage.insert(0, Unit::Embedding);
        }
        if k + 1 == stages as usize {
            stage.push(Unit::Head);
            stage.extend((0..model.mtp_modules).map(Unit::Mtp));
        }
        out.push(stage);
    }
    Ok(out)
}

/// Stages of the given layer counts (`stage_layers`), the embedding on the
/// first, the head and MTP modules on the last.
fn fixed_stages(model: &ModelConfig, counts: &[u32], stages: u32) -> Result<Vec<Vec<Unit>>, ModelError> {
    check_stage_layers(counts, stages, model.layers).map_err(|m| ModelError::invalid("parallel.stage_layers", m))?;
    let mut out = Vec::with_capacity(counts.len());
    let mut start = 0u32;
    for (k, &c) in counts.iter().enumerate() {
        let mut stage: Vec<Unit> = (start..start + c).map(Unit::Layer).collect();
        start += c;
        if k == 0 {
            stage.insert(0, Unit::Embedding);
        }
        if k + 1 == counts.len() {
            stage.push(Unit::Head);
            stage.extend((0..model.mtp_modules).map(Unit::Mtp));
        }
        out.push(stage);
    }
    Ok(out)
}

/// A compute or communication step of one op, in issue order.
enum Step<'b> {
    Compute { items: &'b [Item], wait: Option<usize> },
    Ep { slot: usize, comm: EpComm, micro: u32 },
}

/// One block as the steps read it: the parts a stage's blocks share for
/// every expert-row count, and the expert parts of this one.
#[derive(Clone, Copy)]
struct BlockView<'b> {
    pre: &'b [Item],
    comm_a: Option<EpComm>,
    side: &'b [Item],
    mid: &'b [Item],
    comm_b: Option<EpComm>,
    post: &'b [Item],
    weight_mid: &'b [Item],
    weight_post: &'b [Item],
}

/// Issue order of one block alone (`weight`: include its W kernels) of
/// micro-batch `micro`.
fn sequential<'b>(block: BlockView<'b>, weight: bool, slot: usize, micro: u32, steps: &mut Vec<Step<'b>>) {
    let (a, b) = (slot, slot + 1);
    steps.push(Step::Compute { items: block.pre, wait: None });
    if let Some(c) = block.comm_a {
        steps.push(Step::Ep { slot: a, comm: c, micro });
    }
    steps.push(Step::Compute { items: block.side, wait: None });
    steps.push(Step::Compute { items: block.mid, wait: block.comm_a.map(|_| a) });
    if let Some(c) = block.comm_b {
        steps.push(Step::Ep { slot: b, comm: c, micro });
    }
    steps.push(Step::Compute { items: block.post, wait: block.comm_b.map(|_| b) });
    if weight {
        steps.push(Step::Compute { items: block.weight_mid, wait: None });
        steps.push(Step::Compute { items: block.weight_post, wait: None });
    }
}

/// Issue order of a forward block `f` (of micro-batch `micros.0`)
/// overlapped with a backward block `b` (of `micros.1`) (DeepSeek-V3 Figure
/// 4): each one's all-to-all runs beside the other's computation; comm order
/// combine(B), dispatch(F), dispatch(B), combine(F).
fn interleaved<'b>(
    f: BlockView<'b>,
    b: BlockView<'b>,
    b_weight: bool,
    slot: usize,
    micros: (u32, u32),
    steps: &mut Vec<Step<'b>>,
) {
    let (f_micro, b_micro) = micros;
    let (fa, fb, ba, bb) = (slot, slot + 1, slot + 2, slot + 3);
    steps.push(Step::Compute { items: b.pre, wait: None });
    if let Some(c) = b.comm_a {
        steps.push(Step::Ep { slot: ba, comm: c, micro: b_micro });
    }
    steps.push(Step::Compute { items: f.pre, wait: None });
    if let Some(c) = f.comm_a {
        steps.push(Step::Ep { slot: fa, comm: c, micro: f_micro });
    }
    steps.push(Step::Compute { items: b.side, wait: None });
    steps.push(Step::Compute { items: b.mid, wait: b.comm_a.map(|_| ba) });
    if let Some(c) = b.comm_b {
        steps.push(Step::Ep { slot: bb, comm: c, micro: b_micro });
    }
    if b_weight {
        steps.push(Step::Compute { items: b.weight_mid, wait: None });
    }
    steps.push(Step::Compute { items: f.side, wait: None });
    steps.push(Step::Compute { items: f.mid, wait: f.comm_a.map(|_| fa) });
    if let Some(c) = f.comm_b {
        steps.push(Step::Ep { slot: fb, comm: c, micro: f_micro });
    }
    steps.push(Step::Compute { items: b.post, wait: b.comm_b.map(|_| bb) });
    if b_weight {
        steps.push(Step::Compute { items: b.weight_post, wait: None });
    }
    steps.push(Step::Compute { items: f.post, wait: f.comm_b.map(|_| fb) });
}

/// Per simulated rank, what the emitter tracks.
struct RankState {
    last_compute: Option<TaskId>,
    slots: Vec<Option<TaskId>>,
    /// Standalone time of the computation the rank was given since its
    /// last EP exchange, seconds, and how many exchanges it has run.
    work_since_ep_s: f64,
    ep_exchanges: u32,
}

/// Blocks of one stage: forward and backward of each unit.
struct Blocks {
    forward: Vec<Block>,
    /// In backward order (last unit first).
    backward: Vec<Block>,
}

/// The expert parts of one unit for one expert-row count
/// ([`LayerContext::expert_items`]): the forward `mid`, the backward `mid`
/// and the whole backward `weight_mid` (the shared expert's weight
/// gradients, then the routed experts').
struct ExpertParts {
    forward_mid: Vec<Item>,
    backward_mid: Vec<Item>,
    backward_weight_mid: Vec<Item>,
}

/// Blocks of one stage for one rank and expert-row count: the stage's
/// shared blocks, with the expert parts of these rows beside them where
/// they differ (`None` for a unit without routed experts, or when `base`
/// was built for these rows alone).
struct StageBlocks {
    base: Rc<Blocks>,
    /// Per unit in forward order; shared by every rank and row count with
    /// the same expert shape ([`LayerContext::expert_shape`]).
    experts: SharedExperts,
}

/// The expert parts of a stage's units (forward order) for one expert shape.
type SharedExperts = Rc<Vec<Option<ExpertParts>>>;

impl StageBlocks {
    fn forward(&self) -> impl Iterator<Item = BlockView<'_>> {
        self.base.forward.iter().zip(self.experts.iter()).map(|(b, e)| {
            let mut v = view(b);
            if let Some(e) = e {
                v.mid = &e.forward_mid;
            }
            v
        })
    }

    /// In backward order (last unit first).
    fn backward(&self) -> impl Iterator<Item = BlockView<'_>> {
        self.base.backward.iter().zip(self.experts.iter().rev()).map(|(b, e)| {
            let mut v = view(b);
            if let Some(e) = e {
                v.mid = &e.backward_mid;
                v.weight_mid = &e.backward_weight_mid;
            }
            v
        })
    }
}

fn view(b: &Block) -> BlockView<'_> {
    BlockView {
        pre: &b.pre,
        comm_a: b.comm_a,
        side: &b.side,
        mid: &b.mid,
        comm_b: b.comm_b,
        post: &b.post,
        weight_mid: &b.weight_mid,
        weight_post: &b.weight_post,
    }
}

/// A stage's blocks built once and shared by every rank and expert-row
/// count, with how many of each backward block's `weight_mid` items are
/// the shared expert's (the rest are the routed experts', rebuilt per row
/// count).
struct SharedStage {
    blocks: Rc<Blocks>,
    shared_weight: Vec<usize>,
}

struct Lowerer<'a> {
    cluster: &'a Cluster,
    spec: &'a TrainingSpec,
    plan: &'a ParallelPlan,
    graph: &'a mut TaskGraph,
    ranks: Vec<SimRank>,
    /// Per device: indices into `ranks`.
    device_ranks: Vec<Vec<usize>>,
    /// The EP traffic of each device's group(s) per draw, and which member
    /// the representative is.
    routing: Routing,
    /// Per simulated rank: blocks by (stage, expert rows), built lazily.
    blocks: Vec<BTreeMap<(u32, u64), StageBlocks>>,
    /// Per stage: the blocks every rank and row count shares, once built;
    /// never with full recomputation, whose backward `pre` holds the
    /// forward's expert kernels.
    shared: Vec<Option<SharedStage>>,
    /// The expert parts of each stage by (stage, expert shape `(g, m)`),
    /// shared by every rank and micro-batch whose rows give that shape.
    experts: BTreeMap<(u32, (u64, u64)), SharedExperts>,
    stage_units: Vec<Vec<Unit>>,
    /// Per simulated rank and draw: expert rows per MoE layer.
    rows: Vec<Vec<u64>>,
    state: Vec<RankState>,
    /// The run's seed (each member's lateness draw, every-rank runs).
    seed: u64,
    activation_bytes: f64,
    /// Gap before each kernel on a stream, by its class.
    launch_gaps: LaunchGaps,
    /// Whether the op being emitted records its kernels, and the records.
    recording: bool,
    overlapped_kernels: [KernelClassRecord; 4],
}

impl<'a> Lowerer<'a> {
    /// Expert rows of simulated rank `r` in micro-batch `micro`.
    fn rows_of(&self, r: usize, micro: u32) -> u64 {
        let rows = &self.rows[r];
        rows[(micro as usize).min(rows.len() - 1)]
    }

    fn stage_blocks(&mut self, r: usize, stage: u32, rows: u64) -> Result<(), ModelError> {
        if self.blocks[r].contains_key(&(stage, rows)) {
            return Ok(());
        }
        let (spec, cluster) = (self.spec, self.cluster);
        let ctx = spec.layer_context(cluster);
        let units = &self.stage_units[stage as usize];
        let build = |rows: u64| -> Result<Blocks, ModelError> {
            let mut forward = Vec::with_capacity(units.len());
            let mut backward = Vec::with_capacity(units.len());
            for &u in units {
                forward.push(ctx.forward(u, rows)?);
            }
            for &u in units.iter().rev() {
                backward.push(ctx.backward(u, rows)?);
            }
            Ok(Blocks { forward, backward })
        };
        if ctx.recompute == Recompute::Full {
            let experts = Rc::new(units.iter().map(|_| None).collect());
            let blocks = StageBlocks { base: Rc::new(build(rows)?), experts };
            self.blocks[r].insert((stage, rows), blocks);
            return Ok(());
        }
        let shared = match &self.shared[stage as usize] {
            Some(s) => s,
            None => {
                let blocks = build(rows)?;
                let mut shared_weight = Vec::with_capacity(units.len());
                for (i, &u) in units.iter().enumerate() {
                    let own = ctx.expert_items(u, rows)?.backward_weight.len();
                    shared_weight.push(blocks.backward[units.len() - 1 - i].weight_mid.len() - own);
                }
                self.shared[stage as usize].insert(SharedStage { blocks: Rc::new(blocks), shared_weight })
            }
        };
        let key = (stage, ctx.expert_shape(rows));
        if let Some(experts) = self.experts.get(&key) {
            let blocks = StageBlocks { base: Rc::clone(&shared.blocks), experts: Rc::clone(experts) };
            self.blocks[r].insert((stage, rows), blocks);
            return Ok(());
        }
        let n = units.len();
        let mut experts = Vec::with_capacity(n);
        for (i, &u) in units.iter().enumerate() {
            if !ctx.has_routed_experts(u) {
                experts.push(None);
                continue;
            }
            let items = ctx.expert_items(u, rows)?;
            let base_weight = &shared.blocks.backward[n - 1 - i].weight_mid;
            let mut backward_weight_mid = Vec::with_capacity(shared.shared_weight[i] + items.backward_weight.len());
            backward_weight_mid.extend_from_slice(&base_weight[..shared.shared_weight[i]]);
            backward_weight_mid.extend(items.backward_weight);
            experts.push(Some(ExpertParts {
                forward_mid: items.forward_mid,
                backward_mid: items.backward_mid,
                backward_weight_mid,
            }));
        }
        let experts = Rc::new(experts);
        self.experts.insert(key, Rc::clone(&experts));
        let blocks = StageBlocks { base: Rc::clone(&shared.blocks), experts };
        self.blocks[r].insert((stage, rows), blocks);
        Ok(())
    }

    /// Emits `steps` for every simulated rank of `device` (in lockstep, so
    /// all-to-alls of `All` mode can join their group).
    fn emit(&mut self, device: u32, steps_of: &[Vec<Step>]) -> Result<(), ModelError> {
        let members = self.device_ranks[device as usize].clone();
        for (s, step) in steps_of[0].iter().enumerate() {
            if let Step::Ep { slot, comm, micro } = step {
                self.emit_ep(device, &members, *slot, *comm, *micro);
                continue;
            }
            for (k, &r) in members.iter().enumerate() {
                let Step::Compute { items, wait } = &steps_of[k][s] else { unreachable!("steps align") };
                let wait = wait.and_then(|w| self.state[r].slots.get(w).copied().flatten());
                let rank = self.rank_streams(r);
                let recording = self.recording;
                let emitter = self.emitter();
                let records = &mut self.overlapped_kernels;
                let RankState { last_compute, work_since_ep_s, .. } = &mut self.state[r];
                emitter.compute_recorded(self.graph, rank, items, wait, last_compute, &mut |task, k| {
                    *work_since_ep_s += k.cost.kernel_s;
                    if recording {
                        let class = &mut records[k.kind() as usize];
                        class.tasks.push(task);
                        class.standalone_s += k.cost.kernel_s;
                    }
                });
            }
        }
        Ok(())
    }

    fn emitter(&self) -> Emitter<'a> {
        Emitter { cluster: self.cluster, tp: self.plan.tp, cp: self.plan.cp, launch_gaps: self.launch_gaps }
    }

    fn rank_streams(&self, r: usize) -> RankStreams {
        let rank = &self.ranks[r];
        RankStreams { rank: rank.rank, compute: rank.compute, tp: rank.tp, cp: rank.cp }
    }

    fn emit_ep(&mut self, device: u32, members: &[usize], slot: usize, comm: EpComm, micro: u32) {
        let label = match comm.phase {
            MoePhase::Dispatch => "ep dispatch",
            MoePhase::Combine => "ep combine",
        };
        let traffic = self.routing.traffic(device, micro);
        let rep_member = self.routing.rep_member[device as usize];
        let ep = self.plan.ep as usize;
        match self.spec.mode {
            RankMode::Representative => {
                let r = members[0];
                let group_first = self.ranks[r].rank - rep_member as u32;
                let stream = self.ranks[r].ep;
                // The notify barrier: the group's latest member arrives
                // E[(max of ep |z| - E|z|)+] scales of the work since the
                // previous exchange after this typical one.
                let share = self.spec.ep_lateness * latest_beyond_typical(ep as u32);
                let start = notify(self.graph, &mut self.state[r], stream, share);
                let kernel = CommKernel::normal(comm.phase, comm.bytes_per_token, comm_sms(self.spec, self.cluster));
                let t = traffic.lower_mirror(
                    self.cluster,
                    &kernel.in_group(group_first),
                    rep_member,
                    label,
                    self.graph,
                    stream,
                );
                // After the rank's computation: its notify (which waits for
                // it) or, without one, the exchange itself.
                if let (None, Some(a)) = (start, self.state[r].last_compute) {
                    self.graph.add_dep(a, t);
                }
                set_slot(&mut self.state[r], slot, t);
            }
            RankMode::All => {
                // Members are the device's ranks in order; EP groups tile them.
                for group in members.chunks(ep) {
                    let streams: Vec<StreamId> = group.iter().map(|&r| self.ranks[r].ep).collect();
                    // Each member arrives late by its own draw of the work
                    // since the previous exchange; the barrier waits for all.
                    // A member without a notify (no lateness drawn) joins
                    // the barrier straight after its computation.
                    let mut arrivals = Vec::with_capacity(group.len());
                    for &r in group {
                        let (rank, k) = (self.ranks[r].rank, self.state[r].ep_exchanges);
                        let share = self.spec.ep_lateness * lateness_beyond_typical(self.seed, rank, k);
                        let n = notify(self.graph, &mut self.state[r], self.ranks[r].ep, share);
                        arrivals.extend(n.or(self.state[r].last_compute));
                    }
                    let barrier = self.graph.add_delay(streams[0], "ep group barrier", SimDuration::ZERO);
                    for &a in &arrivals {
                        self.graph.add_dep(a, barrier);
                    }
                    let first = self.ranks[group[0]].rank;
                    let kernel =
                        CommKernel::normal(comm.phase, comm.bytes_per_token, comm_sms(self.spec, self.cluster));
                    let sends = traffic.lower_all(
                        self.cluster,
                        &kernel.in_group(first),
                        label,
                        self.graph,
                        &streams,
                        Some(barrier),
                    );
                    let joins = join_all(self.graph, &streams, &sends, label);
                    for (k, &r) in group.iter().enumerate() {
                        set_slot(&mut self.state[r], slot, joins[k]);
                    }
                }
            }
        }
    }
}

/// A rank's DeepEP notify before its next exchange on `stream`, after the
/// rank's computation: a communication of `share` times the computation the
/// rank ran since its previous exchange (the group's latest member that far
/// behind it). Resets that count. `None` when ranks are not late.
fn notify(graph: &mut TaskGraph, state: &mut RankState, stream: StreamId, share: f64) -> Option<TaskId> {
    let work_s = std::mem::take(&mut state.work_since_ep_s);
    state.ep_exchanges += 1;
    if share <= 0.0 {
        return None;
    }
    let label = graph.label("ep notify");
    let wait = SimDuration::from_secs_f64(share * work_s);
    let n = graph.add_task(stream, label, TaskClass::Communication, TaskKind::Delay(wait));
    if let Some(a) = state.last_compute {
        graph.add_dep(a, n);
    }
    Some(n)
}

fn set_slot(state: &mut RankState, slot: usize, t: TaskId) {
    if state.slots.len() <= slot {
        state.slots.resize(slot + 1, None);
    }
    state.slots[slot] = Some(t);
}

/// The routing of every device's EP group, per draw.
struct Routing {
    /// `traffic[device][draw]`: one draw per micro-batch, or a single one.
    traffic: Vec<Vec<EpTraffic>>,
    /// Per device: the member the representative is. With a draw per
    /// micro-batch, each draw is relabelled so that its critical member is
    /// this one ([`EpTraffic::relabelled`]).
    rep_member: Vec<usize>,
    /// Per device and draw: the group's most loaded member's expert rows.
    max_rows: Vec<Vec<u64>>,
}

impl Routing {
    /// The traffic micro-batch `micro` of `device` exchanges.
    fn traffic(&self, device: u32, micro: u32) -> &EpTraffic {
        let t = &self.traffic[device as usize];
        &t[(micro as usize).min(t.len() - 1)]
    }
}

/// Samples the routing of every device's EP group: one group routing per
/// device ([`RoutingDraw::PerDevice`]: member `src` of device `d` draws
/// stream `d * ep * 1_000_003 + src`), or one per (device, micro-batch)
/// assembled from a pool of source routings drawn the same way for `ep x
/// max(devices, 8)` (device, member) pairs: micro-batch `m` of device `d`
/// takes `ep` distinct pool entries, chosen by stream
/// ("moe-routing-microbatch", `d * microbatches + m`), as its members'
/// routings. Each is an exact draw of the gate (a token's experts do not
/// depend on its source rank); two micro-batches share a member's routing
/// with probability `ep / pool` per member. The pool is drawn on rayon's
/// threads and kept in entry order, so the result does not depend on them.
#[allow(clippy::too_many_arguments)]
fn sample_routing(
    spec: &TrainingSpec,
    plan: &ParallelPlan,
    gpus_per_node: u32,
    devices: u32,
    microbatches: u32,
    seed: u64,
    nvlink_bytes_per_s: f64,
    network_bytes_per_s: f64,
) -> Result<Routing, ModelError> {
    use rand::Rng;
    use rayon::prelude::*;
    let ep = plan.ep.max(1);
    let per_micro = spec.routing_draw == RoutingDraw::PerMicroBatch && spec.model.moe.is_some();
    let groups = if per_micro { devices.max(MIN_POOL_GROUPS) } else { devices };
    let pool: Vec<SourceCounts> = match &spec.model.moe {
        None => (0..groups as u64 * ep as u64).map(|_| SourceCounts::count(ep, gpus_per_node, ep, |_| {})).collect(),
        Some(moe) => {
            let g = gpus_per_node.min(ep).max(1);
            let tokens = u32::try_from(plan.micro_batch as u64 * spec.local_seq_len()).map_err(|_| {
                ModelError::invalid("workload.seq_len", "micro_batch x seq_len must be below 2^32 tokens")
            })?;
            let router = TokenRouter::new(RoutingSpec::model_gate(moe, ep, gpus_per_node, tokens, spec.skew), seed)?;
            (0..groups as u64 * ep as u64)
                .into_par_iter()
                .map(|k| {
                    let (group, src) = (k / ep as u64, k % ep as u64);
                    let stream = group * ep as u64 * 1_000_003 + src;
                    SourceCounts::count(ep, g, moe.routed_experts, |f| router.for_each_token_in(stream, f))
                })
                .collect()
        }
    };
    let mut traffic = Vec::with_capacity(devices as usize);
    for d in 0..devices as usize {
        if per_micro {
            let mut index: Vec<usize> = (0..pool.len()).collect();
            let mut draws = Vec::with_capacity(microbatches as usize);
            for m in 0..microbatches as u64 {
                // The first `ep` places of a seeded shuffle of the pool.
                let mut r = crate::rng::stream(seed, "moe-routing-microbatch", d as u64 * microbatches as u64 + m);
                for i in 0..ep as usize {
                    let j = r.gen_range(i..index.len());
                    index.swap(i, j);
                }
                let members: Vec<&SourceCounts> = index[..ep as usize].iter().map(|&k| &pool[k]).collect();
                draws.push(EpTraffic::from_sources(ep, gpus_per_node, &members));
            }
            traffic.push(draws);
        } else {
            let members: Vec<&SourceCounts> = pool[d * ep as usize..(d + 1) * ep as usize].iter().collect();
            traffic.push(vec![EpTraffic::from_sources(ep, gpus_per_node, &members)]);
        }
    }
    let max_rows: Vec<Vec<u64>> =
        traffic.iter().map(|ts| ts.iter().map(|t| t.rows.iter().copied().max().unwrap_or(0)).collect()).collect();
    let mut rep_member = Vec::with_capacity(devices as usize);
    for ts in &mut traffic {
        let rep = ts[0].critical_rank(nvlink_bytes_per_s, network_bytes_per_s);
        if spec.mode == RankMode::Representative {
            for t in ts.iter_mut().skip(1) {
                let critical = t.critical_rank(nvlink_bytes_per_s, network_bytes_per_s);
                if critical != rep {
                    *t = t.relabelled(critical, rep);
                }
            }
        }
        rep_member.push(rep);
    }
    Ok(Routing { traffic, rep_member, max_rows })
}

/// Lowers one training step into `graph`.
pub fn lower_training(
    cluster: &Cluster,
    spec: &TrainingSpec,
    seed: u64,
    graph: &mut TaskGraph,
) -> Result<TrainingLowering, ModelError> {
    let plan = &spec.plan;
    let gpus_per_node = cluster.topology.gpus_per_node;
    let problems = plan.problems(cluster.gpu_count() as u64, gpus_per_node, &spec.model, spec.global_batch);
    if !problems.is_empty() {
        return Err(ModelError::Invalid { problems });
    }
    let microbatches = plan.microbatches(spec.global_batch).map_err(|p| ModelError::Invalid { problems: vec![p] })?;
    let sched = match plan.schedule {
        schedule::ScheduleKind::Interleaved1F1B => {
            schedule::build_interleaved(plan.pp, plan.virtual_stages.max(1), microbatches)?
        }
        kind => schedule::build(kind, plan.stages(), microbatches)?,
    };
    let devices = sched.devices;
    if spec.mode == RankMode::All {
        // Every rank's every all-to-all crosses the same routes again.
        graph.intern_paths();
    }

    // Routing per device and the representative member of each.
    let nv = cluster.topology.summary().gpu_nvlink_bytes_per_s.max(1.0);
    let ib = cluster.topology.summary().gpu_network_bytes_per_s.max(1.0);
    let routing = sample_routing(spec, plan, gpus_per_node, devices, microbatches, seed, nv, ib)?;

    // Simulated ranks.
    let mut ranks = Vec::new();
    let mut device_ranks = vec![Vec::new(); devices as usize];
    let mut rows = Vec::new();
    let mut expert_rows = Vec::new();
    for d in 0..devices {
        let draws = &routing.traffic[d as usize];
        let max_rows = &routing.max_rows[d as usize];
        let mean_of_max = max_rows.iter().sum::<u64>() as f64 / max_rows.len().max(1) as f64;
        let t = &draws[0];
        let mean_rows = t.rows.iter().sum::<u64>() as f64 / t.rows.len().max(1) as f64;
        expert_rows.push((mean_of_max.round() as u64, mean_rows));
        let locals: Vec<u32> = match spec.mode {
            RankMode::Representative => vec![routing.rep_member[d as usize] as u32],
            RankMode::All => (0..plan.ranks_per_device()).collect(),
        };
        for local in locals {
            let rank = d * plan.ranks_per_device() + local;
            let stream = |name: &str, g: &mut TaskGraph| g.add_stream(rank, name);
            let sim = SimRank {
                rank,
                device: d,
                local,
                compute: stream("compute", graph),
                ep: stream("ep", graph),
                tp: stream("tp", graph),
                cp: StreamId(0),
                dp: stream("dp", graph),
            };
            let sim = SimRank { cp: if plan.cp > 1 { stream("cp", graph) } else { sim.tp }, ..sim };
            device_ranks[d as usize].push(ranks.len());
            rows.push(match spec.mode {
                RankMode::Representative => max_rows.clone(),
                RankMode::All => draws.iter().map(|t| t.rows[(local % plan.ep) as usize]).collect(),
            });
            ranks.push(sim);
        }
    }

    let ctx_template = spec.layer_context(cluster);
    let balanced_rows =
        spec.model.moe.as_ref().map_or(0, |m| plan.micro_batch as u64 * spec.local_seq_len() * m.topk as u64);
    let stage_units = match &spec.stage_layers {
        Some(counts) => fixed_stages(&spec.model, counts, sched.stages)?,
        None => split_stages(&spec.model, &ctx_template, sched.stages, balanced_rows)?,
    };
    let n_ranks = ranks.len();
    let mut low = Lowerer {
        cluster,
        spec,
        plan,
        graph,
        ranks,
        device_ranks,
        routing,
        blocks: (0..n_ranks).map(|_| BTreeMap::new()).collect(),
        shared: (0..sched.stages).map(|_| None).collect(),
        experts: BTreeMap::new(),
        stage_units: stage_units.clone(),
        rows,
        state: (0..n_ranks)
            .map(|_| RankState { last_compute: None, slots: Vec::new(), work_since_ep_s: 0.0, ep_exchanges: 0 })
            .collect(),
        seed,
        activation_bytes: plan.micro_batch as f64 * spec.local_seq_len() as f64 * spec.model.hidden as f64 * 2.0,
        launch_gaps: LaunchGaps::per_kind(|k| {
            SimDuration::from_us_f64(spec.launch_gaps_us[k as usize].unwrap_or(cluster.device.launch_overhead_us))
        }),
        recording: false,
        overlapped_kernels: Default::default(),
    };

    // Per device and op: the op's first and last compute task per member.
    let mut op_first: Vec<Vec<Vec<TaskId>>> = vec![Vec::new(); devices as usize];
    let mut op_last: Vec<Vec<Vec<TaskId>>> = vec![Vec::new(); devices as usize];
    // Last op touching each stage's gradients, per device.
    let mut last_grad_op: Vec<Vec<(u32, usize)>> = vec![Vec::new(); devices as usize];
    let mut op_spans = Vec::new();
    // Blocks a rank keeps between ops: one per stage it holds, and the
    // two an overlapped op uses.
    let kept_blocks = sched.stages.div_ceil(devices.max(1)) as usize + 2;
    for d in 0..devices {
        let members = low.device_ranks[d as usize].clone();
        for (idx, op) in sched.ops[d as usize].iter().enumerate() {
            let chunks_used: Vec<ChunkRef> = match op {
                PipeOp::F(c) | PipeOp::B(c) | PipeOp::W(c) => vec![*c],
                PipeOp::FB { f, b } => vec![*f, *b],
            };
            for &r in &members {
                // Blocks of other draws are not needed again (a per-device
                // draw keeps its stages' blocks for the whole step).
                if low.blocks[r].len() > kept_blocks {
                    let keep: Vec<(u32, u64)> =
                        chunks_used.iter().map(|c| (c.stage, low.rows_of(r, c.microbatch))).collect();
                    low.blocks[r].retain(|key, _| keep.contains(key));
                }
                for c in &chunks_used {
                    low.stage_blocks(r, c.stage, low.rows_of(r, c.microbatch))?;
                }
            }
            match op {
                PipeOp::B(c) | PipeOp::W(c) => note_grad(&mut last_grad_op[d as usize], c.stage, idx),
                PipeOp::FB { b, .. } => note_grad(&mut last_grad_op[d as usize], b.stage, idx),
                PipeOp::F(_) => {}
            }
            // Marker so every op has a first task on each member.
            let mut firsts = Vec::with_capacity(members.len());
            for &r in &members {
                let m = low.graph.add_delay(low.ranks[r].compute, &op.label(), SimDuration::ZERO);
                low.state[r].last_compute = Some(m);
                low.state[r].slots.clear();
                firsts.push(m);
            }
            // The blocks are read by the steps while the emitter writes the graph.
            let all_blocks = std::mem::take(&mut low.blocks);
            let steps_of: Vec<Vec<Step>> = members
                .iter()
                .map(|&r| {
                    let mut steps = Vec::new();
                    let blocks_of = |c: &ChunkRef| {
                        all_blocks[r].get(&(c.stage, low.rows_of(r, c.microbatch))).expect("built above")
                    };
                    match op {
                        PipeOp::F(c) => {
                            for (i, b) in blocks_of(c).forward().enumerate() {
                                sequential(b, false, 4 * i, c.microbatch, &mut steps);
                            }
                        }
                        PipeOp::B(c) => {
                            let w = sched.backward_includes_weight(*c);
                            for (i, b) in blocks_of(c).backward().enumerate() {
                                sequential(b, w, 4 * i, c.microbatch, &mut steps);
                            }
                        }
                        PipeOp::W(c) => {
                            for b in blocks_of(c).backward() {
                                steps.push(Step::Compute { items: b.weight_mid, wait: None });
                                steps.push(Step::Compute { items: b.weight_post, wait: None });
                            }
                        }
                        PipeOp::FB { f, b } => {
                            let w = sched.backward_includes_weight(*b);
                            let fs: Vec<BlockView> = blocks_of(f).forward().collect();
                            let bs: Vec<BlockView> = blocks_of(b).backward().collect();
                            let n = fs.len().max(bs.len());
                            let micros = (f.microbatch, b.microbatch);
                            for i in 0..n {
                                match (fs.get(i).copied(), bs.get(i).copied()) {
                                    (Some(fb), Some(bb)) => interleaved(fb, bb, w, 4 * i, micros, &mut steps),
                                    (Some(fb), None) => sequential(fb, false, 4 * i, f.microbatch, &mut steps),
                                    (None, Some(bb)) => sequential(bb, w, 4 * i + 2, b.microbatch, &mut steps),
                                    (None, None) => {}
                                }
                            }
                        }
                    }
                    steps
                })
                .collect();
            low.recording = matches!(op, PipeOp::FB { .. });
            low.emit(d, &steps_of)?;
            drop(steps_of);
            low.blocks = all_blocks;
            let lasts: Vec<TaskId> =
                members.iter().map(|&r| low.state[r].last_compute.expect("a marker at least")).collect();
            let kind = match op {
                PipeOp::F(_) => OpKind::Forward,
                PipeOp::B(_) => OpKind::Backward,
                PipeOp::W(_) => OpKind::Weight,
                PipeOp::FB { .. } => OpKind::Overlapped,
            };
            for (k, &r) in members.iter().enumerate() {
                op_spans.push(OpSpan { rank: low.ranks[r].rank, kind, first: firsts[k], last: lasts[k] });
            }
            op_first[d as usize].push(firsts);
            op_last[d as usize].push(lasts);
        }
    }

    // Pipeline sends between devices: one stream per (sender, receiver) pair,
    // sends in the order the sender produces them.
    let mut transfers = sched.transfers().to_vec();
    transfers.sort_by_key(|t| (t.producer.device, t.sent_after, t.consumer.device, t.awaited_before));
    let mut pp_streams: std::collections::BTreeMap<(u32, u32), StreamId> = std::collections::BTreeMap::new();
    for t in &transfers {
        let (pd, cd) = (t.producer.device as usize, t.consumer.device as usize);
        let bytes = low.activation_bytes / plan.tp as f64;
        let forward = matches!(
            (sched.op(t.producer), t.producer.part),
            (Some(PipeOp::F(_)), _) | (Some(PipeOp::FB { .. }), OpPart::Forward)
        );
        let label = if forward { "pp send activations" } else { "pp send gradients" };
        let (pm, cm) = (low.device_ranks[pd].clone(), low.device_ranks[cd].clone());
        for (k, (&pr, &cr)) in pm.iter().zip(cm.iter()).enumerate() {
            let from = low.ranks[pr].rank;
            let to = low.ranks[cr].rank;
            let mut scratch = Vec::new();
            // A representative sends for its EP group: every member sends to
            // its counterpart at once (their sends share the fabric), and the
            // group's next exchange waits for the last of them.
            let (first_from, first_to, senders) = match spec.mode {
                RankMode::All => (from, to, 1),
                RankMode::Representative => {
                    (from - low.routing.rep_member[pd] as u32, to - low.routing.rep_member[cd] as u32, plan.ep)
                }
            };
            let flows: Vec<Flow> = (0..senders)
                .map(|m| {
                    let (path, charge) =
                        cluster.add_nccl_route(low.graph, first_from + m, first_to + m, 0, &mut scratch);
                    Flow { path, bytes: bytes * charge }
                })
                .collect();
            let stream = *pp_streams.entry((from, to)).or_insert_with(|| low.graph.add_stream(from, "pp"));
            let send = low.graph.add_comm(stream, label, flows, None);
            low.graph.add_dep(op_last[pd][t.sent_after as usize][k], send);
            low.graph.add_dep(send, op_first[cd][t.awaited_before as usize][k]);
        }
    }

    // Data-parallel gradient synchronisation and the optimizer, per stage
    // held, after the last op producing its gradients.
    let mut notes = Vec::new();
    for d in 0..devices {
        for &(stage, idx) in &last_grad_op[d as usize].clone() {
            let members = low.device_ranks[d as usize].clone();
            for (k, &r) in members.iter().enumerate() {
                let after = op_last[d as usize][idx][k];
                grad_sync(&mut low, r, stage, after, &sched)?;
            }
        }
    }
    if spec.mode == RankMode::Representative {
        notes.push(format!(
            "representative ranks: {} simulated of {} (one per pipeline device, the critical rank of its {}-rank EP group; expert GEMMs take the group's most loaded rank's rows; its pipeline sends carry the group's; data-parallel replicas are alike up to routing)",
            low.ranks.len(),
            cluster.gpu_count(),
            plan.ep
        ));
    }
    notes.push(match (spec.routing_draw, spec.mode) {
        (RoutingDraw::PerDevice, _) => {
            "routing sampled once per pipeline device and reused for its MoE layers and micro-batches".into()
        }
        (RoutingDraw::PerMicroBatch, RankMode::Representative) => "routing drawn per (pipeline device, micro-batch) and reused for the device's MoE layers; per micro-batch the representative carries that micro-batch's critical member's exchange (relabelled onto its own links) and its group's most loaded rank's expert rows".into(),
        (RoutingDraw::PerMicroBatch, RankMode::All) => {
            "routing drawn per (pipeline device, micro-batch) and reused for the device's MoE layers".into()
        }
    });
    let tokens = spec.global_batch as f64 * spec.seq_len as f64;
    if spec.mode == RankMode::All {
        // The arenas grew by doubling: give the slack back before the engine allocates.
        low.graph.shrink_to_fit();
    }
    Ok(TrainingLowering {
        schedule: sched,
        stage_units,
        ranks: low.ranks,
        microbatches,
        expert_rows,
        tokens,
        ops: op_spans,
        overlapped_kernels: low.overlapped_kernels,
        notes,
    })
}

fn note_grad(v: &mut Vec<(u32, usize)>, stage: u32, idx: usize) {
    match v.iter_mut().find(|(s, _)| *s == stage) {
        Some(e) => e.1 = e.1.max(idx),
        None => v.push((stage, idx)),
    }
}

/// Parameters of one stage on one rank: (dense, expert), split by TP and EP.
pub fn stage_params(model: &ModelConfig, plan: &ParallelPlan, units: &[Unit]) -> (f64, f64) {
    let h = model.hidden as f64;
    let tp = plan.tp as f64;
    let mut dense = 0.0;
    let mut expert = 0.0;
    let layer = |kind: FfnKind, dense: &mut f64, expert: &mut f64| {
        *dense += model.attention_params() / tp;
        match (kind, &model.moe) {
            (FfnKind::Moe, Some(m)) => {
                *dense += m.shared_experts as f64 * model.ffn_params(m.expert_intermediate) / tp
                    + m.routed_experts as f64 * h;
                *expert += m.routed_experts as f64 * model.ffn_params(m.expert_intermediate) / plan.ep as f64;
            }
            _ => *dense += model.ffn_params(model.ffn.dense_intermediate) / tp,
        }
    };
    for &u in units {
        match u {
            Unit::Embedding => dense += model.params().embedding / tp,
            Unit::Head => dense += model.params().head / tp + h,
            Unit::Layer(i) => layer(model.ffn_kind(i), &mut dense, &mut expert),
            Unit::Mtp(_) => {
                layer(if model.moe.is_some() { FfnKind::Moe } else { FfnKind::Dense }, &mut dense, &mut expert);
                dense += 2.0 * h * h + 2.0 * h;
            }
        }
    }
    (dense, expert)
}

/// Reduce-scatter (or all-reduce) of one stage's gradients over its
/// data-parallel group, the optimizer step on the local shard, and the
/// all-gather of the updated parameters.
fn grad_sync(
    low: &mut Lowerer,
    r: usize,
    stage: u32,
    after: TaskId,
    sched: &PipelineSchedule,
) -> Result<(), ModelError> {
    let plan = low.plan;
    let (dense, expert) = stage_params(&low.spec.model, plan, &low.stage_units[stage as usize]);
    // DualPipe keeps two copies of each stage: both reduce together.
    let copies = if sched.kind == schedule::ScheduleKind::DualPipe { 2.0 } else { 1.0 };
    // Context-parallel ranks hold the same parameters: they reduce with the replicas.
    let dp_group = plan.grad_replicas() as f64 * copies;
    let edp_group = plan.expert_dp() as f64 * copies;
    let grad_bytes = 4.0; // FP32 gradients (DeepSeek-V3 §3.3)
    let param_bytes = 2.0; // BF16 working weights
    let rank = low.ranks[r].rank;
    let device = low.ranks[r].device;
    let rpd = plan.ranks_per_device();
    let base = device * rpd;
    let local = rank - base;
    // The groups on this pipeline device: the replicas of this tensor rank
    // (data- and context-parallel) for the dense parameters, the ranks
    // holding the same experts (`ep` apart) for the expert parameters.
    // DualPipe's second copy of the stage (on another device) reduces with
    // them; the groups listed here pick NCCL's algorithm and the route.
    let dense_group: Vec<u32> = (0..plan.grad_replicas()).map(|j| base + j * plan.tp + local % plan.tp).collect();
    let expert_group: Vec<u32> = (0..plan.expert_dp()).map(|k| base + local % plan.ep + k * plan.ep).collect();
    let stream = low.ranks[r].dp;
    // Every member (simulated or not) puts the same load on its links; with
    // all ranks simulated these flows are the whole collective.
    let collective = |low: &mut Lowerer,
                      label: &str,
                      (op, group, members): (CollectiveOp, f64, &[u32]),
                      bytes: f64,
                      after: TaskId|
     -> Result<TaskId, ModelError> {
        if group <= 1.0 || bytes <= 0.0 || members.len() < 2 {
            return Ok(after);
        }
        let spec = CollectiveSpec { op, group: members.to_vec(), bytes };
        let me = members.iter().position(|&m| m == rank).unwrap_or(0);
        let load = member_load(low.cluster, &spec, me);
        // The n-member share of the bytes for the whole group (DualPipe's two copies).
        let share = (group - 1.0) / group / ((members.len() as f64 - 1.0) / members.len() as f64);
        let emitter = low.emitter();
        let load = MemberLoad { bytes: load.bytes * share, ..load };
        Ok(emitter.mirror_ring(low.graph, stream, rank, label, &load, Some(after)))
    };
    let dense_rs = (CollectiveOp::ReduceScatter, dp_group, dense_group.as_slice());
    let expert_rs = (CollectiveOp::ReduceScatter, edp_group, expert_group.as_slice());
    let dense_ag = (CollectiveOp::AllGather, dp_group, dense_group.as_slice());
    let expert_ag = (CollectiveOp::AllGather, edp_group, expert_group.as_slice());
    let zero = plan.zero;
    let rs = collective(low, "dp reduce-scatter grads", dense_rs, dense * grad_bytes, after)?;
    let rs = collective(low, "edp reduce-scatter grads", expert_rs, expert * grad_bytes, rs)?;
    // ZeRO-0 all-reduces gradients: the second half of the ring.
    let rs = if zero == 0 {
        let a = collective(low, "dp all-gather grads", dense_ag, dense * grad_bytes, rs)?;
        collective(low, "edp all-gather grads", expert_ag, expert * grad_bytes, a)?
    } else {
        rs
    };
    // AdamW on the local shard: FP32 master, BF16 moments (DeepSeek-V3 §3.3).
    let shard = if zero >= 1 { dense / dp_group + expert / edp_group } else { dense + expert };
    let opt = op_cost(
        &low.cluster.device,
        &Op::Elementwise { read_bytes: shard * 12.0, write_bytes: shard * 10.0, flops: shard * 12.0 },
    )?;
    let k: Kernel = opt.kernel(DeviceId(rank));
    let t = low.graph.add_kernel(stream, "optimizer step", TaskClass::Compute, k);
    low.graph.add_dep(rs, t);
    if zero >= 1 {
        let a = collective(low, "dp all-gather params", dense_ag, dense * param_bytes, t)?;
        let a = collective(low, "edp all-gather params", expert_ag, expert * param_bytes, a)?;
        if zero >= 3 {
            // ZeRO-3 / FSDP gathers each layer's parameters again for the
            // backward (the gather above stands for the forward's): one more
            // all-gather per step, here after the first (the per-layer
            // prefetch beside the computation is not modelled).
            let a = collective(low, "dp all-gather params (backward)", dense_ag, dense * param_bytes, a)?;
            collective(low, "edp all-gather params (backward)", expert_ag, expert * param_bytes, a)?;
        }
    }
    Ok(())
}

/// SMs the computation kernels are launched on: what the all-to-all kernels
/// leave free when they hold some (DeepSeek-V3: 132 - 20 = 112, as its
/// profile shows), else the whole device.
fn compute_sms(spec: &TrainingSpec, cluster: &Cluster) -> Option<u32> {
    let held = comm_sms(spec, cluster);
    let holds = spec.model.moe.is_some() && spec.plan.ep > 1 && held > 0;
    holds.then(|| cluster.device.sms.saturating_sub(held).max(1))
}

/// SMs an expert-parallel communication kernel holds: the plan's
/// `comm_sms`, or none on devices whose communication runs on copy engines.
pub fn comm_sms(spec: &TrainingSpec, cluster: &Cluster) -> u32 {
    if cluster.device.comm_uses_compute_units {
        spec.plan.comm_sms
    } else {
        0
    }
}

/// Memory per GPU, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct MemoryBreakdown {
    pub weights: f64,
    pub gradients: f64,
    pub optimizer: f64,
    pub activations: f64,
    pub comm_buffers: f64,
}

impl MemoryBreakdown {
    pub fn total(&self) -> f64 {
        self.weights + self.gradients + self.optimizer + self.activations + self.comm_buffers
    }
}

/// How a layer's activations are kept, for [`layer_activation_bytes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationPolicy {
    pub tp: u32,
    /// Megatron sequence parallelism: the replicated parts (norm and block
    /// inputs, dropout masks) split over the TP group.
    pub sequence_parallel: bool,
    pub recompute: Recompute,
    /// Bytes per element of a cached linear input: 1 + 4/128 under FP8
    /// training (DeepSeek-V3 §3.3.2: FP8 with one scale per 128), else 2.
    pub linear_input_bytes: f64,
    /// `Some(s)`: attention materialises its `s x s` scores (no fused
    /// kernel), for Korthikanti's unfused figures; `None`: fused attention
    /// (FlashAttention, FlashMLA), which keeps only the FP32 softmax
    /// statistics ([`AttentionKernel`]).
    pub unfused_scores_seq_len: Option<u64>,
}

/// Activation bytes one transformer layer keeps per token for its backward
/// pass, following Korthikanti et al. 2022 ("Reducing Activation
/// Recomputation in Large Transformer Models", §4, Table 2), term by term:
///
/// - attention: the norm's input (2h), the norm's output = the QKV input
///   (2h), q, k, v (2 per element, GQA's K and V at their own width), the
///   scores (2 a s, plus 1 a s mask and 2 a s dropout output with dropout)
///   or, fused, the FP32 softmax statistics (4 a), the output projection's
///   input (2h) and the dropout mask (h);
/// - FFN: the norm's input (2h), the block input (2h), GeLU's input and
///   output (2 x 2i) or SwiGLU's gate and up outputs (2 x 2i) and product
///   (2i), the dropout mask (h);
/// - with TP the heads and the intermediate split over `tp`; the rest (10 of
///   GPT's 34 sbh) is replicated unless sequence parallelism splits it too;
/// - full recomputation keeps only the layer input (2h, split under SP).
///
/// GPT-3's blocks give Table 2: `34 + 5as/h`; with TP `10 + 24/t + 5as/(ht)`;
/// with SP `34/t + 5as/(ht)`; fused or selective `34/t`; full `2`.
///
/// DeepSeek-V3's recipe ([`Recompute::NormsAndUpProjections`]) recomputes
/// the RMSNorms and MLA up-projections (no norm output, no q, k, v stored;
/// the compressed latents kept), caches linear inputs in FP8 and recomputes
/// SwiGLU outputs from their cached inputs (§3.3.2-3).
pub fn layer_activation_bytes(model: &ModelConfig, kind: FfnKind, p: &ActivationPolicy) -> f64 {
    use crate::transformer::model::{AttentionKind, FfnActivation};
    let h = model.hidden as f64;
    let t = p.tp.max(1) as f64;
    let sp = if p.sequence_parallel { t } else { 1.0 };
    let lin = p.linear_input_bytes;
    let a = &model.attention;
    let deepseek = p.recompute == Recompute::NormsAndUpProjections;
    if p.recompute == Recompute::Full {
        return 2.0 * h / sp;
    }
    let dropout = if model.dropout { h / sp } else { 0.0 };
    let heads = (a.heads as f64 / t).max(1.0);
    let (qk, v) = model.attention_head_dims();
    let (qk, v) = (qk as f64, v as f64);
    let attention = {
        let input = 2.0 * h / sp;
        let norm_out = if deepseek { 0.0 } else { lin * h / sp };
        let latents = match a.kind {
            AttentionKind::Mla => (a.q_lora_rank + a.kv_lora_rank + a.qk_rope_head_dim) as f64 * 2.0,
            AttentionKind::Gqa => 0.0,
        };
        let kv_heads = match a.kind {
            AttentionKind::Mla => heads,
            AttentionKind::Gqa => (a.kv_heads as f64 / t).max(1.0),
        };
        let qkv = match a.kind {
            AttentionKind::Mla if deepseek => 0.0,
            _ => 2.0 * (heads * qk + kv_heads * (qk + v)),
        };
        let scores = match (p.unfused_scores_seq_len, p.recompute) {
            // Selective recomputation runs the attention core again.
            (Some(_), Recompute::Selective) => 0.0,
            // Softmax output (2), its dropout mask (1) and output (2) per score.
            (Some(s), _) => heads * s as f64 * if model.dropout { 5.0 } else { 2.0 },
            (None, _) => heads * 4.0,
        };
        let out = heads * v * lin;
        input + norm_out + latents + qkv + scores + out + dropout
    };
    // An FFN's intermediate activations, intermediate `inter` per TP rank.
    let inner = |inter: f64| match model.ffn.activation {
        FfnActivation::Gelu => inter * 2.0 + inter * lin,
        FfnActivation::Swiglu if deepseek => 2.0 * inter * lin,
        FfnActivation::Swiglu => 2.0 * inter * 2.0 + inter * lin,
    };
    // ... with its input.
    let ffn_block = |inter: f64| h * lin + inner(inter);
    let ffn = match (kind, &model.moe) {
        (FfnKind::Moe, Some(m)) => {
            let inter = m.expert_intermediate as f64;
            let shared = m.shared_experts as f64 * ffn_block(inter) / t;
            let routed = m.topk as f64 * ffn_block(inter);
            // The norm's input, the router's FP32 scores and the combined output.
            (2.0 * h + m.routed_experts as f64 * 4.0 + 2.0 * h) / sp + shared + routed
        }
        _ => {
            let inter = model.ffn.dense_intermediate as f64 / t;
            // The norm's input and the block's input (replicated without SP).
            2.0 * h / sp + h * lin / sp + inner(inter) + dropout
        }
    };
    attention + ffn
}

/// Activation bytes one unit keeps per token for its backward pass (see
/// [`layer_activation_bytes`], the scores stored when the context
/// materialises them).
pub fn activation_bytes_per_token(model: &ModelConfig, unit: Unit, ctx: &LayerContext) -> f64 {
    let h = model.hidden as f64;
    let t = ctx.tp.max(1) as f64;
    let sp = if ctx.sequence_parallel { t } else { 1.0 };
    let policy = ActivationPolicy {
        tp: ctx.tp,
        sequence_parallel: ctx.sequence_parallel,
        recompute: ctx.recompute,
        linear_input_bytes: if ctx.linear_dtype == Dtype::Fp8 { 1.0 + 4.0 / 128.0 } else { 2.0 },
        unfused_scores_seq_len: (ctx.attention_kernel == AttentionKernel::Materialized).then_some(ctx.seq_len),
    };
    let moe_kind = if model.moe.is_some() { FfnKind::Moe } else { FfnKind::Dense };
    match unit {
        Unit::Embedding => 0.0,
        Unit::Head => h * 2.0 / sp,
        Unit::Layer(i) => layer_activation_bytes(model, model.ffn_kind(i), &policy),
        Unit::Mtp(_) => layer_activation_bytes(model, moe_kind, &policy) + 3.0 * h * 2.0 / sp,
    }
}

/// Memory per GPU of the busiest pipeline device: BF16 weights of the stages
/// it holds (sharded under ZeRO-3, plus two gathered layers), FP32 gradients
/// (sharded under ZeRO-2), FP32 master weights and BF16 AdamW moments
/// (sharded under ZeRO-1, DeepSeek-V3 §3.3), activations of the
/// micro-batches the schedule keeps in flight, and DeepEP's buffers.
pub fn training_memory(spec: &TrainingSpec, cluster: &Cluster, low: &TrainingLowering) -> MemoryBreakdown {
    schedule_memory(spec, cluster, &low.schedule, &low.stage_units)
}

/// [`training_memory`] from the schedule and the stages' units alone (what a
/// plan search checks before lowering anything).
pub fn schedule_memory(
    spec: &TrainingSpec,
    cluster: &Cluster,
    sched: &schedule::PipelineSchedule,
    stage_units: &[Vec<Unit>],
) -> MemoryBreakdown {
    let plan = &spec.plan;
    let ctx = spec.layer_context(cluster);
    let tokens = plan.micro_batch as f64 * spec.local_seq_len() as f64;
    let peak = sched.peak_activation_microbatches();
    let copies = if sched.kind == schedule::ScheduleKind::DualPipe { 2.0 } else { 1.0 };
    let mut worst = MemoryBreakdown::default();
    for d in 0..sched.devices {
        let stages: Vec<u32> = (0..sched.stages).filter(|&s| sched.device_of_stage[s as usize].contains(&d)).collect();
        let (mut dense, mut expert, mut act, mut largest) = (0.0, 0.0, 0.0f64, 0.0f64);
        for &s in &stages {
            let units = &stage_units[s as usize];
            let (de, ex) = stage_params(&spec.model, plan, units);
            dense += de;
            expert += ex;
            for &u in units {
                let (a, b) = stage_params(&spec.model, plan, &[u]);
                largest = largest.max(a + b);
            }
            let per_token: f64 = units.iter().map(|&u| activation_bytes_per_token(&spec.model, u, &ctx)).sum();
            act = act.max(per_token * tokens);
        }
        let params = dense + expert;
        let (dp_group, edp_group) = (plan.grad_replicas() as f64 * copies, plan.expert_dp() as f64 * copies);
        let shard = |zero_at: u32| if plan.zero >= zero_at { dense / dp_group + expert / edp_group } else { params };
        let m = MemoryBreakdown {
            // ZeRO-3: the local shard and two gathered units (the one
            // computing and the one prefetched).
            weights: if plan.zero >= 3 { shard(3) * 2.0 + 2.0 * largest * 2.0 } else { params * 2.0 },
            gradients: shard(2) * 4.0,
            optimizer: shard(1) * 8.0,
            activations: act * peak.get(d as usize).copied().unwrap_or(0) as f64,
            // DeepEP's default normal-kernel buffers: 1 GB NVLink + 1 GB RDMA.
            comm_buffers: if spec.model.moe.is_some() && plan.ep > 1 { 2e9 } else { 0.0 },
        };
        if m.total() > worst.total() {
            worst = m;
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_minimises_the_largest_part() {
        assert_eq!(partition(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 2]);
        assert_eq!(partition(&[4.0, 1.0, 1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert_eq!(partition(&[1.0; 5], 5), vec![0, 1, 2, 3, 4]);
    }

    /// GPT-3-style model of Korthikanti et al. 2022, Table 3 (MHA, GeLU FFN
    /// of 4h, dropout, sequence 2048, vocabulary 51200).
    fn gpt(layers: u32, hidden: u32, heads: u32) -> ModelConfig {
        let text = format!(
            "name = \"gpt\"\nproduct = \"gpt\"\nlayers = {layers}\nhidden = {hidden}\nvocab = 51200\n\
             tie_embeddings = true\nmax_context = 2048\ndropout = true\n[attention]\nkind = \"gqa\"\n\
             heads = {heads}\nkv_heads = {heads}\nhead_dim = {}\n[ffn]\ndense_layers = {layers}\n\
             dense_intermediate = {}\nactivation = \"gelu\"\n",
            hidden / heads,
            4 * hidden
        );
        let m: ModelConfig = toml::from_str(&text).unwrap();
        assert!(m.problems().is_empty());
        m
    }

    /// Korthikanti et al. 2022, Table 2: activation bytes per layer over
    /// `s b h` for each technique, on the paper's four models (Table 3: 22B,
    /// 175B, 530B, 1T at TP8, sequence 2048).
    #[test]
    fn activations_match_korthikanti_table_2() {
        for (layers, h, a) in [(48, 6144, 64), (96, 12288, 96), (105, 20480, 128), (128, 25600, 160)] {
            let m = gpt(layers, h, a);
            let (s, t) = (2048.0, 8.0);
            let (hf, af) = (h as f64, a as f64);
            let bytes = |tp: u32, sequence_parallel: bool, recompute: Recompute| {
                let p = ActivationPolicy {
                    tp,
                    sequence_parallel,
                    recompute,
                    linear_input_bytes: 2.0,
                    unfused_scores_seq_len: Some(2048),
                };
                layer_activation_bytes(&m, FfnKind::Dense, &p) / hf
            };
            let close = |got: f64, want: f64, what: &str| {
                assert!((got / want - 1.0).abs() < 1e-9, "{layers} layers, {what}: {got} vs Table 2's {want}");
            };
            let scores = 5.0 * af * s / hf;
            close(bytes(1, false, Recompute::None), 34.0 + scores, "no parallelism");
            close(bytes(8, false, Recompute::None), 10.0 + 24.0 / t + scores / t, "tensor parallel");
            close(bytes(8, true, Recompute::None), 34.0 / t + scores / t, "tensor + sequence parallel");
            close(bytes(8, false, Recompute::Selective), 10.0 + 24.0 / t, "tensor parallel + selective");
            close(bytes(8, true, Recompute::Selective), 34.0 / t, "tensor + sequence parallel + selective");
            close(bytes(8, false, Recompute::Full), 2.0, "full recompute");
            // "reduces activation memory by 5x" (abstract): TP8 baseline over TP + SP + selective.
            let ratio = bytes(8, false, Recompute::None) / bytes(8, true, Recompute::Selective);
            assert!(ratio > 4.5, "{layers} layers: {ratio:.1}x");
        }
    }

    /// `[workload] attention_kernel = "materialized"` stores Table 2's
    /// `5as/(ht)` scores per layer; fused attention only its FP32 softmax
    /// statistics (4 bytes per head).
    #[test]
    fn materialized_attention_stores_the_scores() {
        let m = gpt(4, 6144, 64);
        let d = crate::DeviceSpec::preset("a100").unwrap();
        let flash = LayerContext {
            model: &m,
            device: &d,
            sequences: 1,
            seq_len: 2048,
            mode: PassMode::Training,
            tp: 8,
            cp: 1,
            cp_comm: crate::transformer::parallel::CpComm::Ring,
            experts_per_rank: 1,
            linear_dtype: Dtype::Bf16,
            recompute: Recompute::None,
            attention_kernel: AttentionKernel::Flash,
            sequence_parallel: true,
            compute_sms: None,
            gemm_kernels: Default::default(),
        };
        let mat = LayerContext { attention_kernel: AttentionKernel::Materialized, ..flash.clone() };
        let (h, a, s, t) = (6144.0, 64.0, 2048.0, 8.0);
        let per_h = |c: &LayerContext| activation_bytes_per_token(&m, Unit::Layer(0), c) / h;
        assert!((per_h(&mat) / (34.0 / t + 5.0 * a * s / (h * t)) - 1.0).abs() < 1e-9, "{}", per_h(&mat));
        assert!(((per_h(&mat) - per_h(&flash)) * h / (5.0 * a * s / t - 4.0 * a / t) - 1.0).abs() < 1e-9);
        let selective = LayerContext { recompute: Recompute::Selective, ..mat.clone() };
        assert!((per_h(&selective) / (34.0 / t) - 1.0).abs() < 1e-9);
    }
}
