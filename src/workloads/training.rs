//! `kind = "training"`: one training step of a model (`[model]`) under a
//! parallel plan (`[parallel]`) on a cluster, simulated end to end, with the
//! figures a capacity planner asks for: step time, throughput, MFU, where
//! the time went (compute, communication, exposed communication, bubbles),
//! memory per GPU against HBM, GPU-hours and cost per trillion tokens.

use moesim_models::hardware::device::Dtype;
use moesim_models::hardware::variability;
use moesim_models::lowering::training::{
    check_stage_layers, first_last_fewer, lower_training, training_memory, OpKind, RankMode, RoutingDraw,
    TrainingLowering, TrainingSpec, DEEPEP_LATENESS,
};
use moesim_models::transformer::layers::{AttentionKernel, Recompute};
use moesim_models::transformer::parallel::ParallelPlan;
use moesim_models::transformer::routing::Skew;
use moesim_models::transformer::schedule::ScheduleKind;
use moesim_models::DeviceSpec;
use moesim_reports::plot::RenderedFigure;
use moesim_sim::analysis::{rank_activity, rank_intervals};
use moesim_sim::{Observer, TaskGraph};
use moesim_topologies::{ClusterSpec, ConfigProblem};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    build_cluster, check_price_and_precision, check_skew, cluster_gpus, model_failure, num, problem, simulate, Context,
    Footprint, Outcome, RunFailure, RunOptions, TopologyState, Workload, BYTES_PER_FLOW, BYTES_PER_TASK,
};
use crate::setup::{ParallelTable, Setup};

/// Which ranks to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SimulateRanks {
    /// One rank per pipeline device (see the notes of a run).
    #[default]
    Representative,
    All,
}

/// How often routing is drawn (`[workload] routing_draw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingDrawKey {
    /// Once per (pipeline device, micro-batch): micro-batches differ in
    /// routing imbalance.
    #[default]
    PerMicroBatch,
    /// Once per pipeline device, reused by every micro-batch (for comparison).
    PerDevice,
}

impl RoutingDrawKey {
    pub fn resolve(self) -> RoutingDraw {
        match self {
            RoutingDrawKey::PerMicroBatch => RoutingDraw::PerMicroBatch,
            RoutingDrawKey::PerDevice => RoutingDraw::PerDevice,
        }
    }
}

/// One GPU slower than the rest (`[workload] slow_gpus`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowGpu {
    /// The GPU's global rank (0 .. the cluster's GPUs).
    pub rank: u32,
    /// Its speed as a fraction of the device's (0 < factor <= 1; 0.8: 20 % slow).
    pub factor: f64,
}

/// All-to-all flows per (simulated rank, MoE unit, micro-batch) and per
/// peer a rank's DeepEP kernel reaches (NVLink copies to its node's other
/// group members, one RDMA stream per other node of the group): dispatch
/// and combine, forward and backward. Measured on every-rank cuts of the
/// default step: 106,240 flows at 32 GPUs (EP 8 in a node: 7 peers),
/// 983,040 at 256 (EP 16 over 2 nodes: 8 peers).
const FLOWS_PER_PEER: f64 = 4.0;

/// Peak memory per estimated task of an every-rank step, all in: the
/// graph's 16-byte task record, the engine's 25 bytes (span, pending count,
/// stream successor, state), the lowering's per-op and per-kernel records
/// kept for the metrics, and the rest of the run spread over its tasks.
/// Fitted with [`BYTES_PER_RANK_FLOW`] on every-rank cuts of
/// `deepseek-v3-pretrain-2048xh800` (peak RSS, no `--out`): 260.0 MB at 256
/// GPUs (4.063e6 tasks and 9.667e5 flows estimated), 518.2 MB at 512
/// (8.126e6, 2.417e6), 1,058.2 MB at 1,024 (1.625e7, 6.767e6): about 55
/// bytes a task, 24 a flow and 13 MB besides. With the route tables the
/// estimate errs high by 1.06x / 1.09x / 1.13x; the 2,048-GPU default
/// step (1.219e8 tasks, 5.075e7 flows) comes to 8.4 GiB.
const BYTES_PER_RANK_TASK: f64 = 60.0;
/// Peak memory per estimated all-to-all flow of an every-rank step: the
/// graph's 16-byte flow, the flow solver's run slot and the owner lookup
/// (routes are interned, few beside the flows); fitted with
/// [`BYTES_PER_RANK_TASK`].
const BYTES_PER_RANK_FLOW: f64 = 32.0;

/// Largest launch gap a class may be given, us (a kernel launch takes a few
/// microseconds; a millisecond is a stalled host, not a launch).
const MAX_LAUNCH_GAP_US: f64 = 1000.0;
/// Largest `ep_lateness`: a rank behind by its whole computation since the
/// previous exchange per scale.
const MAX_EP_LATENESS: f64 = 1.0;
/// Most `workload.flow_finish_tolerance`: a tenth of a flow's duration.
const MAX_FLOW_FINISH_TOLERANCE: f64 = 0.1;

/// `[workload] recompute` as written: a flag (the old form) or a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RecomputeKey {
    Flag(bool),
    Name(Recompute),
}

impl Default for RecomputeKey {
    fn default() -> Self {
        RecomputeKey::Flag(true)
    }
}

impl RecomputeKey {
    pub fn resolve(self) -> Recompute {
        match self {
            RecomputeKey::Flag(true) => Recompute::NormsAndUpProjections,
            RecomputeKey::Flag(false) => Recompute::None,
            RecomputeKey::Name(r) => r,
        }
    }
}

/// The `[workload]` table of a training step.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingWorkload {
    pub kind: String,
    /// Tokens per sequence.
    pub seq_len: u64,
    /// Sequences per step.
    pub global_batch: u64,
    /// Number format of the linear layers: "fp8" (DeepSeek-V3's fine-grained
    /// FP8) or "bf16".
    pub precision: Dtype,
    /// Zipf exponent of expert popularity; 0 = balanced routing.
    #[serde(default)]
    pub skew: f64,
    /// What the backward pass recomputes: "none", "selective" (Korthikanti's
    /// attention core: what fused attention does anyway), "full" (each
    /// layer's forward again), or `true` (the default: DeepSeek-V3's recipe,
    /// RMSNorm and MLA up-projections, also "norms-and-up-projections"),
    /// `false` = "none".
    #[serde(default)]
    pub recompute: RecomputeKey,
    /// How attention is computed: "flash" (the default: one fused kernel,
    /// FlashAttention and after, 2022 on) or "materialized" (the scores
    /// written to HBM by a batched GEMM, then a softmax and a dropout pass,
    /// as Megatron-LM did before FlashAttention; their activation memory
    /// too). Training only.
    #[serde(default)]
    pub attention_kernel: AttentionKernel,
    #[serde(default)]
    pub simulate: SimulateRanks,
    /// How often the MoE routing of a pipeline device's EP group is drawn:
    /// "per-micro-batch" (the default: each micro-batch its own draw, so
    /// its exchanges and expert GEMMs carry its own imbalance; the
    /// representative rank takes each micro-batch's critical member's load)
    /// or "per-device" (one draw reused by every micro-batch, the earlier
    /// model, for comparison). Either way a draw serves all the device's MoE
    /// layers.
    #[serde(default)]
    pub routing_draw: RoutingDrawKey,
    /// GPUs slower than the rest, as `[{ rank = 5, factor = 0.8 }]`: GPU
    /// `rank` runs its kernels (arithmetic and memory) at `factor` of the
    /// device's speed. Needs `simulate = "all"` (a representative rank
    /// stands for its peers, so one slow peer cannot be represented).
    #[serde(default)]
    pub slow_gpus: Vec<SlowGpu>,
    /// Spread of the GPUs' speeds (GPU-to-GPU variability): GPU `r` runs its
    /// kernels (arithmetic and memory) at min(1, 1 + spread x z_r) of the
    /// device's speed, z_r a standard normal drawn per GPU (random stream
    /// "gpu-speed", index r), so the preset is the median GPU and a GPU
    /// never runs above it (its boost clock is the ceiling; variability
    /// shows as GPUs running below it). 0 (default): every GPU alike.
    /// Multiplies `slow_gpus`. With representative ranks each runs at its
    /// pipeline device's slowest GPU's speed.
    #[serde(default)]
    pub gpu_speed_spread: f64,
    /// Relative tolerance on flows' finish times, an approximation for
    /// every-rank runs: when a flow finishes, the flows due within this
    /// fraction of their own duration after it finish with it (their last
    /// bytes unsent), so the flow solver re-fills once per group instead of
    /// once per flow (`FlowSolver::set_finish_tolerance`). 0 (default):
    /// exact. The error it causes on the step is measured in the README.
    #[serde(default)]
    pub flow_finish_tolerance: f64,
    /// Price of one GPU-hour, USD; default: the device preset's (H800: 2,
    /// as the DeepSeek-V3 report assumes).
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
    /// The gap on the compute stream before a kernel of each class (launch
    /// and CPU time between back-to-back kernels); a class left out takes
    /// the device's `launch_overhead_us`.
    #[serde(default)]
    pub launch_gaps: LaunchGapsTable,
    /// How far apart the ranks of an EP group reach a DeepEP normal
    /// dispatch or combine: each rank is behind by |z| x this share of the
    /// computation it ran since its previous exchange (z a standard normal),
    /// and the exchange's notify kernel waits for the group's latest (its
    /// barrier holds until every rank has arrived); the wait is EP
    /// communication time, holding no SMs. A representative rank is a
    /// typical one and waits E[(max of ep |z| - E|z|)+] x this share of its
    /// computation; every-rank runs draw each rank's z (random stream
    /// "ep-lateness"). Default 0.146, measured on DeepSeek's profile
    /// (`moesim calibrate`: its notify kernels last 0.262 of its
    /// computation, what 64 ranks behind by half-normal shares of scale
    /// 0.146 give); 0: every rank arrives together.
    #[serde(default = "default_ep_lateness")]
    pub ep_lateness: f64,
}

fn default_ep_lateness() -> f64 {
    DEEPEP_LATENESS
}

/// `[workload.launch_gaps]`: the gap before each kernel of a class on the
/// compute stream. Measured on DeepSeek's profile (profile-data
/// `train.json`, H800, one F&B chunk pair): the gaps between consecutive
/// kernels of the compute stream that no cross-stream wait explains have a
/// median of 2 us before every class (`moesim calibrate` prints the
/// distributions), the H800 preset's `launch_overhead_us`; so the defaults
/// are the device's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchGapsTable {
    /// Before a GEMM (plain or grouped), microseconds; default: the
    /// device's `launch_overhead_us` (DeepSeek's profile: median 2 us).
    pub gemm_us: Option<f64>,
    /// Before a fused attention kernel, microseconds; default: the device's
    /// `launch_overhead_us` (DeepSeek's profile: median 2 us).
    pub attention_us: Option<f64>,
    /// Before a norm or an FP8 cast, microseconds; default: the device's
    /// `launch_overhead_us` (DeepSeek's profile: median 2 us).
    pub cast_norm_us: Option<f64>,
    /// Before any other memory-bound pass (activations, adds, router
    /// passes, permutes), microseconds; default: the device's
    /// `launch_overhead_us` (DeepSeek's profile: median 2 us).
    pub other_us: Option<f64>,
}

impl LaunchGapsTable {
    /// The gaps in the models' `KernelKind` order, microseconds (`None`:
    /// the device's launch overhead).
    pub fn gaps_us(&self) -> [Option<f64>; 4] {
        self.entries().map(|(_, v)| v)
    }

    /// In the models' `KernelKind` order, with the key of each.
    fn entries(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("workload.launch_gaps.gemm_us", self.gemm_us),
            ("workload.launch_gaps.attention_us", self.attention_us),
            ("workload.launch_gaps.cast_norm_us", self.cast_norm_us),
            ("workload.launch_gaps.other_us", self.other_us),
        ]
    }
}

impl TrainingWorkload {
    /// Resolves `[parallel]` against the cluster (dp fills it by default).
    pub fn plan(table: &ParallelTable, gpus: u64) -> ParallelPlan {
        let split = table.tp as u64 * table.cp as u64 * table.pp as u64;
        let dp = table.dp.unwrap_or_else(|| gpus.checked_div(split).unwrap_or(0) as u32);
        ParallelPlan {
            tp: table.tp,
            cp: table.cp,
            cp_comm: table.cp_comm,
            pp: table.pp,
            dp,
            ep: table.ep,
            zero: table.zero,
            schedule: table.schedule.unwrap_or(ScheduleKind::OneFOneB),
            virtual_stages: table.virtual_stages,
            sequence_parallel: table.sequence_parallel,
            micro_batch: table.micro_batch,
            comm_sms: table.comm_sms,
            deepep_rdma: table.deepep_rdma,
            gemm_kernels: table.gemm_kernels,
        }
    }

    /// `[parallel] stage_layers` or `first_last_stage_layers_fewer`,
    /// checked against the model's layers and the schedule's model stages;
    /// the key and the problem otherwise.
    pub(crate) fn stage_layers(
        table: &ParallelTable,
        plan: &ParallelPlan,
        layers: u32,
    ) -> Result<Option<Vec<u32>>, (&'static str, String)> {
        const COUNTS: &str = "parallel.stage_layers";
        const FEWER: &str = "parallel.first_last_stage_layers_fewer";
        let uneven =
            matches!(plan.schedule, ScheduleKind::OneFOneB | ScheduleKind::Interleaved1F1B | ScheduleKind::Zb1p);
        let stages = plan.stages();
        match (&table.stage_layers, table.first_last_stage_layers_fewer) {
            (Some(_), Some(_)) => Err((FEWER, format!("expected one of {COUNTS} and {FEWER}, found both"))),
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) if !uneven => {
                let key = if table.stage_layers.is_some() { COUNTS } else { FEWER };
                Err((
                    key,
                    format!("expected a 1f1b, interleaved-1f1b or zb1p schedule, found {}", plan.schedule.as_str()),
                ))
            }
            (Some(counts), None) => check_stage_layers(counts, stages, layers)
                .map(|()| Some(counts.clone()))
                .map_err(|m| (COUNTS, format!("expected {stages} layer counts adding up to {layers}: {m}"))),
            (None, Some(0)) => Ok(None),
            (None, Some(fewer)) => first_last_fewer(layers, stages, fewer).map(Some).map_err(|m| (FEWER, m)),
        }
    }

    /// `gpu_speed_spread` in [0, [`variability::MAX_SPREAD`]]; `slow_gpus`:
    /// each rank in the cluster, once, each factor in (0, 1], and every rank
    /// simulated.
    fn slow_gpu_problems(&self, topology: &TopologyState, out: &mut Vec<ConfigProblem>) {
        let spread = self.gpu_speed_spread;
        if !(spread.is_finite() && (0.0..=variability::MAX_SPREAD).contains(&spread)) {
            out.push(problem(
                "workload.gpu_speed_spread",
                format!("expected a spread of GPU speeds in [0, {}] (0.02: a standard deviation of 2 % of the device's speed), found {spread}", variability::MAX_SPREAD),
            ));
        }
        if self.slow_gpus.is_empty() {
            return;
        }
        if self.simulate != SimulateRanks::All {
            out.push(problem(
                "workload.slow_gpus",
                "expected workload.simulate = \"all\": representative ranks stand for their peers (one per pipeline device), so a single slow GPU cannot be represented".into(),
            ));
        }
        let gpus = match topology {
            TopologyState::Resolved(t) => Some(cluster_gpus(t)),
            _ => None,
        };
        for (i, g) in self.slow_gpus.iter().enumerate() {
            if let Some(n) = gpus.filter(|&n| g.rank as u64 >= n) {
                out.push(problem(
                    &format!("workload.slow_gpus[{i}].rank"),
                    format!("expected a GPU rank below the cluster's {n} GPUs, found {}", g.rank),
                ));
            }
            if self.slow_gpus[..i].iter().any(|o| o.rank == g.rank) {
                out.push(problem(
                    &format!("workload.slow_gpus[{i}].rank"),
                    format!("rank {} is listed twice: give each slow GPU once", g.rank),
                ));
            }
            if !(g.factor.is_finite() && g.factor > 0.0 && g.factor <= 1.0) {
                out.push(problem(
                    &format!("workload.slow_gpus[{i}].factor"),
                    format!("expected a speed fraction in (0, 1] (0.8: 20 % slow), found {}", g.factor),
                ));
            }
        }
    }

    fn spec(&self, setup: &Setup, cluster_spec: &ClusterSpec) -> Result<TrainingSpec, RunFailure> {
        let missing = |key: &str| RunFailure::Input(vec![setup.source.at_key(key, "missing")]);
        let model = setup.model.clone().ok_or_else(|| missing("model"))?;
        let table = setup.parallel.as_ref().ok_or_else(|| missing("parallel"))?;
        let plan = Self::plan(table, cluster_gpus(cluster_spec));
        let stage_layers = Self::stage_layers(table, &plan, model.layers)
            .map_err(|(key, m)| RunFailure::Input(vec![setup.source.at_key(key, m)]))?;
        Ok(TrainingSpec {
            model,
            plan,
            stage_layers,
            seq_len: self.seq_len,
            global_batch: self.global_batch,
            linear_dtype: self.precision,
            skew: Skew::from_exponent(self.skew),
            recompute: self.recompute.resolve(),
            attention_kernel: self.attention_kernel,
            mode: match self.simulate {
                SimulateRanks::Representative => RankMode::Representative,
                SimulateRanks::All => RankMode::All,
            },
            routing_draw: self.routing_draw.resolve(),
            launch_gaps_us: self.launch_gaps.gaps_us(),
            ep_lateness: self.ep_lateness,
        })
    }

    fn metrics(
        &self,
        spec: &TrainingSpec,
        device: &DeviceSpec,
        low: &TrainingLowering,
        graph: &TaskGraph,
        result: &moesim_sim::RunResult,
        memory: &moesim_models::lowering::training::MemoryBreakdown,
    ) -> Map<String, Value> {
        let plan = &spec.plan;
        let step_s = result.end.as_secs_f64().max(1e-12);
        let gpus = plan.world() as f64;
        let tokens_per_s = low.tokens / step_s;
        let per_gpu = tokens_per_s / gpus;
        let flops_per_token = spec.model.training_flops_per_token(spec.seq_len);
        let intervals = rank_intervals(graph, result);
        let activity: Vec<_> = intervals.iter().map(|r| r.activity()).collect();
        let n = activity.len().max(1) as f64;
        let mean = |f: &dyn Fn(&moesim_sim::analysis::RankActivity) -> u64| {
            activity.iter().map(|a| f(a) as f64).sum::<f64>() / n / 1e12
        };
        let compute_s = mean(&|a| a.compute_ps);
        let comm_s = mean(&|a| a.comm_ps);
        let exposed_s = mean(&|a| a.exposed_comm_ps());
        let idle_s = activity.iter().map(|a| step_s - a.busy_ps as f64 / 1e12).sum::<f64>() / n;
        let stream_s = |name: &str, exposed: bool| {
            activity
                .iter()
                .flat_map(|a| a.comm_by_stream.iter().filter(|c| c.name == name))
                .map(|c| if exposed { c.exposed_ps } else { c.busy_ps } as f64)
                .sum::<f64>()
                / n
                / 1e12
        };
        let ep_s = stream_s("ep", false);
        let ep_exposed_s = stream_s("ep", true);
        // Mean wall time of each kind of op: from its start to its last kernel's end.
        let op_ms = |kind: OpKind| {
            let spans: Vec<f64> = low
                .ops
                .iter()
                .filter(|o| o.kind == kind)
                .map(|o| {
                    (result.spans[o.last.0 as usize].end - result.spans[o.first.0 as usize].start).as_secs_f64() * 1e3
                })
                .collect();
            (!spans.is_empty()).then(|| spans.iter().sum::<f64>() / spans.len() as f64)
        };
        let gpu_hours = gpus / tokens_per_s * 1e12 / 3600.0;
        let hbm = device.hbm_bytes();
        let gib = (1u64 << 30) as f64;
        let mut m = Map::new();
        m.insert("model".into(), Value::from(spec.model.name.clone()));
        m.insert("device".into(), Value::from(device.name.clone()));
        m.insert("gpus".into(), num(gpus));
        m.insert("schedule".into(), Value::from(plan.schedule.as_str()));
        m.insert("tp".into(), Value::from(plan.tp));
        m.insert("pp".into(), Value::from(plan.pp));
        m.insert("dp".into(), Value::from(plan.dp));
        m.insert("cp".into(), Value::from(plan.cp));
        m.insert("ep".into(), Value::from(plan.ep));
        m.insert("microbatches".into(), Value::from(low.microbatches));
        m.insert("simulated_ranks".into(), Value::from(low.ranks.len()));
        m.insert("step_time_s".into(), num(step_s));
        m.insert("tokens_per_s".into(), num(tokens_per_s));
        m.insert("tokens_per_s_per_gpu".into(), num(per_gpu));
        m.insert("model_tflops_per_gpu".into(), num(flops_per_token * per_gpu / 1e12));
        m.insert("training_gflop_per_token".into(), num(flops_per_token / 1e9));
        // Megatron-LM's count (Narayanan et al. 2021 eq. 3; Korthikanti et
        // al. 2022 §6 "hardware FLOPs"): attention over all `seq_len` keys
        // (no causal halving), the logits GEMM counted even with tied
        // embeddings, and the forward work the backward pass recomputes.
        let hardware_flops_per_token = megatron_hardware_flops_per_token(&spec.model, spec.seq_len, spec.recompute);
        m.insert("hardware_tflops_per_gpu".into(), num(hardware_flops_per_token * per_gpu / 1e12));
        m.insert("hfu_bf16_peak".into(), num(hardware_flops_per_token * per_gpu / (device.bf16_tflops * 1e12)));
        // MFU names its peak: against BF16 as dense-model reports quote it,
        // and against the dense peak of the linear layers' own format where
        // the device has units for it (`mfu_fp8_peak` for FP8 training; FP8
        // emulated at the BF16 rate has no FP8 peak).
        m.insert("mfu_bf16_peak".into(), num(flops_per_token * per_gpu / (device.bf16_tflops * 1e12)));
        let dtype = spec.linear_dtype;
        let native = !(dtype == moesim_models::Dtype::Fp8 && device.fp8_tflops.is_none());
        if let (true, Ok(peak)) = (native && dtype.as_str() != "bf16", device.tensor_flops_per_s(dtype)) {
            m.insert(format!("mfu_{}_peak", dtype.as_str()), num(flops_per_token * per_gpu / peak));
        }
        m.insert("compute_s".into(), num(compute_s));
        m.insert("comm_s".into(), num(comm_s));
        m.insert("ep_comm_s".into(), num(ep_s));
        m.insert("ep_exposed_s".into(), num(ep_exposed_s));
        m.insert("ep_hidden_fraction".into(), num(if ep_s > 0.0 { 1.0 - ep_exposed_s / ep_s } else { 0.0 }));
        m.insert("pp_comm_s".into(), num(stream_s("pp", false)));
        m.insert("dp_comm_s".into(), num(stream_s("dp", false)));
        m.insert("exposed_comm_s".into(), num(exposed_s));
        m.insert("overlap_fraction".into(), num(if comm_s > 0.0 { 1.0 - exposed_s / comm_s } else { 0.0 }));
        m.insert("compute_to_ep_comm_ratio".into(), num(if ep_s > 0.0 { compute_s / ep_s } else { 0.0 }));
        for (key, kind) in [
            ("forward_chunk_ms", OpKind::Forward),
            ("backward_chunk_ms", OpKind::Backward),
            ("weight_chunk_ms", OpKind::Weight),
            ("overlapped_chunk_ms", OpKind::Overlapped),
        ] {
            if let Some(v) = op_ms(kind) {
                m.insert(key.into(), num(v));
            }
        }
        // DeepSeek's overlap figure: per steady-state F&B chunk pair, the
        // share of the EP all-to-all's time that runs under computation.
        let chunk_pairs: Vec<Window> = low
            .ops
            .iter()
            .filter(|o| o.kind == OpKind::Overlapped)
            .map(|o| {
                (o.rank, result.spans[o.first.0 as usize].start.as_ps(), result.spans[o.last.0 as usize].end.as_ps())
            })
            .collect();
        // And over the whole step of every simulated rank, the same way.
        let steps: Vec<Window> = low.ranks.iter().map(|r| (r.rank, 0, result.end.as_ps())).collect();
        if let Some(v) = ep_hidden(&intervals, &chunk_pairs) {
            m.insert("ep_hidden_fraction_chunk_pair".into(), num(v));
        }
        if let Some(v) = ep_hidden(&intervals, &steps) {
            m.insert("ep_hidden_fraction_step".into(), num(v));
        }
        if spec.model.moe.is_some() {
            // Expert rows per MoE layer and micro-batch on the busiest rank of
            // each EP group (averaged over its draws: one per micro-batch by
            // default), the largest over devices, against the group mean:
            // the routing imbalance.
            let max_rows = low.expert_rows.iter().map(|r| r.0).max().unwrap_or(0);
            let mean_rows = low.expert_rows.iter().map(|r| r.1).sum::<f64>() / low.expert_rows.len().max(1) as f64;
            m.insert("expert_rows_per_layer_max".into(), Value::from(max_rows));
            m.insert("expert_rows_per_layer_mean".into(), num(mean_rows));
        }
        m.insert("bubble_s".into(), num(idle_s));
        m.insert("bubble_fraction".into(), num(idle_s / step_s));
        m.insert("memory_gib_per_gpu".into(), num(memory.total() / gib));
        m.insert("memory_weights_gib".into(), num(memory.weights / gib));
        m.insert("memory_gradients_gib".into(), num(memory.gradients / gib));
        m.insert("memory_optimizer_gib".into(), num(memory.optimizer / gib));
        m.insert("memory_activations_gib".into(), num(memory.activations / gib));
        m.insert("memory_comm_buffers_gib".into(), num(memory.comm_buffers / gib));
        m.insert("hbm_gib".into(), num(hbm / gib));
        m.insert("fits".into(), Value::from(memory.total() <= hbm));
        m.insert("gpu_hours_per_trillion_tokens".into(), num(gpu_hours));
        let price = device.price_per_gpu_hour(self.usd_per_gpu_hour);
        m.insert("usd_per_gpu_hour".into(), num(price));
        m.insert("cost_usd_per_trillion_tokens".into(), num(gpu_hours * price));
        m
    }
}

impl Workload for TrainingWorkload {
    fn kind_name(&self) -> &str {
        "training"
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let (device, topology, model, model_given, parallel) =
            (cx.device, cx.topology_state(), cx.model, cx.model_given, cx.parallel);
        let mut out = Vec::new();
        if self.seq_len == 0 {
            out.push(problem("workload.seq_len", "expected an integer >= 1, found 0".into()));
        }
        if self.global_batch == 0 {
            out.push(problem("workload.global_batch", "expected an integer >= 1, found 0".into()));
        }
        check_skew(self.skew, &mut out);
        self.slow_gpu_problems(&topology, &mut out);
        let tol = self.flow_finish_tolerance;
        if !(tol.is_finite() && (0.0..=MAX_FLOW_FINISH_TOLERANCE).contains(&tol)) {
            out.push(problem(
                "workload.flow_finish_tolerance",
                format!("expected a fraction of a flow's duration in [0, {MAX_FLOW_FINISH_TOLERANCE}] (0: exact; 0.01: a flow may finish 1 % of its duration early), found {tol}"),
            ));
        }
        check_price_and_precision(self.usd_per_gpu_hour, self.precision, device, &mut out);
        let l = self.ep_lateness;
        if !(l.is_finite() && (0.0..=MAX_EP_LATENESS).contains(&l)) {
            out.push(problem(
                "workload.ep_lateness",
                format!("expected a share of the computation between exchanges from 0 to {MAX_EP_LATENESS} (0: ranks arrive together; DeepSeek's profile: {DEEPEP_LATENESS}), found {l}"),
            ));
        }
        for (key, gap) in self.launch_gaps.entries() {
            if let Some(g) = gap.filter(|g| !(g.is_finite() && (0.0..=MAX_LAUNCH_GAP_US).contains(g))) {
                out.push(problem(key, format!("expected a gap from 0 to {MAX_LAUNCH_GAP_US} us, found {g}")));
            }
        }
        if let (Some(d), Some(t)) = (device, parallel) {
            if d.comm_uses_compute_units && t.comm_sms >= d.sms {
                out.push(problem(
                    "parallel.comm_sms",
                    format!(
                        "expected fewer than the device's {} SMs (the rest run the computation), found {}",
                        d.sms, t.comm_sms
                    ),
                ));
            }
        }
        if !model_given {
            out.push(problem("model", "a training step needs a [model] table, e.g. preset = \"deepseek-v3\"".into()));
        }
        if let Some(m) = model {
            if self.seq_len > m.max_context {
                out.push(problem(
                    "workload.seq_len",
                    format!("expected at most the model's context of {} tokens, found {}", m.max_context, self.seq_len),
                ));
            }
        }
        let Some(table) = parallel else {
            out.push(problem("parallel", "a training step needs a [parallel] table, e.g. pp = 16, ep = 64".into()));
            return out;
        };
        match topology {
            TopologyState::Missing => out.push(problem("topology", "a training step needs a [topology] table".into())),
            TopologyState::Resolved(t) => {
                if let Some(m) = model {
                    let plan = Self::plan(table, cluster_gpus(t));
                    out.extend(plan.problems(cluster_gpus(t), t.gpus_per_node, m, self.global_batch));
                    let halves = 2 * plan.cp as u64;
                    if plan.cp > 1 && self.seq_len > 0 && !self.seq_len.is_multiple_of(halves) {
                        out.push(problem(
                            "workload.seq_len",
                            format!(
                                "context parallelism cuts each sequence into 2 x cp = {halves} chunks: expected a multiple of {halves}, found {}",
                                self.seq_len
                            ),
                        ));
                    }
                }
            }
            TopologyState::Broken => {}
        }
        out
    }

    fn footprint(&self, setup: &Setup) -> Option<Footprint> {
        // Tasks grow as micro-batches x layers: about 128 per layer and
        // micro-batch on the representative ranks (the default step: 940,626
        // tasks for 120 micro-batches of 61 layers), times the ranks of a
        // stage when every rank is simulated (every-rank cuts of the default
        // step: 516,496 tasks at 32 GPUs, estimated 507,904; 4,148,896 at
        // 256, estimated 4,063,232). Every rank's all-to-alls add their
        // flows ([`FLOWS_PER_PEER`]); the representative's mirrors are few
        // beside its tasks. Every rank's step is costed at its own bytes
        // per task and flow ([`BYTES_PER_RANK_TASK`]); the representative's
        // at the engine's generic ones.
        let (model, table, topology) = (setup.model.as_ref()?, setup.parallel.as_ref()?, setup.topology.as_ref()?);
        let plan = Self::plan(table, cluster_gpus(topology));
        let replicas = (plan.dp as u64 * plan.micro_batch as u64).max(1);
        let microbatches = self.global_batch.div_ceil(replicas) as f64;
        let ranks = match self.simulate {
            SimulateRanks::All => plan.ranks_per_device().max(1) as f64,
            SimulateRanks::Representative => 1.0,
        };
        let tasks = 128.0 * microbatches * (model.layers as f64 + 1.0) * ranks;
        let flows = match (self.simulate, &model.moe) {
            (SimulateRanks::All, Some(_)) if plan.ep > 1 => {
                let gpn = topology.gpus_per_node.max(1) as f64;
                let ep = plan.ep as f64;
                let peers = (ep.min(gpn) - 1.0) + ((ep / gpn).ceil() - 1.0);
                let moe_units = (model.moe_layers() + model.mtp_modules) as f64;
                FLOWS_PER_PEER * peers * moe_units * microbatches * ranks
            }
            _ => 0.0,
        };
        let what = if flows > 0.0 {
            format!("{tasks:.3e} tasks and {flows:.3e} all-to-all flows of {ranks} simulated ranks per pipeline device")
        } else {
            format!("{tasks:.3e} tasks")
        };
        let (per_task, per_flow) = match self.simulate {
            SimulateRanks::All => (BYTES_PER_RANK_TASK, BYTES_PER_RANK_FLOW),
            SimulateRanks::Representative => (BYTES_PER_TASK, BYTES_PER_FLOW),
        };
        Some(Footprint { bytes: tasks * per_task + flows * per_flow, key: "workload.global_batch".into(), what })
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        self.execute(setup, options, observer).map(|(outcome, _)| outcome)
    }

    fn uses_model(&self) -> bool {
        true
    }

    fn sm_driven_all_to_all(&self, parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        parallel.filter(|p| p.ep > 1).map(|p| ("parallel.comm_sms", p.comm_sms))
    }
}

impl TrainingWorkload {
    /// Runs the step; with the run, its per-class times per F&B chunk pair
    /// ([`chunk_pair_classes`]: empty without overlapped ops), which `moesim
    /// calibrate` sets beside DeepSeek's profile.
    pub fn run_with_classes(
        &self,
        setup: &Setup,
        options: &RunOptions,
    ) -> Result<(Outcome, Vec<ChunkPairClass>), RunFailure> {
        self.execute(setup, options, &mut moesim_sim::Quiet)
    }

    fn execute(
        &self,
        setup: &Setup,
        options: &RunOptions,
        observer: &mut dyn Observer,
    ) -> Result<(Outcome, Vec<ChunkPairClass>), RunFailure> {
        let mut cluster = build_cluster(setup)?;
        let cluster_spec = setup.topology.as_ref().expect("build_cluster checked it");
        let spec = self.spec(setup, cluster_spec)?;
        spec.plan.deepep_rdma.cap_normal_kernels(&mut cluster, spec.plan.comm_sms);
        cluster.share_memory_with_comm();
        let mut graph = TaskGraph::new();
        let low = lower_training(&cluster, &spec, setup.seed, &mut graph).map_err(|e| model_failure(setup, e))?;
        release_freed_heap();
        let memory = training_memory(&spec, &cluster, &low);
        let mut platform = cluster.platform.clone();
        let mut slow_notes = Vec::new();
        if self.gpu_speed_spread > 0.0 || !self.slow_gpus.is_empty() {
            let gpus = cluster_gpus(cluster_spec) as u32;
            let mut speeds = vec![1.0; platform.devices.len()];
            if self.gpu_speed_spread > 0.0 {
                let drawn: Vec<f64> =
                    (0..gpus).map(|r| variability::gpu_speed(setup.seed, r, self.gpu_speed_spread)).collect();
                if self.simulate == SimulateRanks::All {
                    for (r, &speed) in drawn.iter().enumerate() {
                        speeds[cluster.device_of(r as u32).0 as usize] = speed;
                    }
                } else {
                    // A representative stands for its pipeline device: its EP
                    // groups and gradient reduction wait for the slowest GPU.
                    let per_device = spec.plan.ranks_per_device() as usize;
                    for rank in &low.ranks {
                        let first = rank.device as usize * per_device;
                        let slowest = drawn[first..first + per_device].iter().cloned().fold(1.0, f64::min);
                        speeds[cluster.device_of(rank.rank).0 as usize] = slowest;
                    }
                }
                slow_notes.push(spread_note(self.gpu_speed_spread, &drawn));
                if self.simulate != SimulateRanks::All {
                    slow_notes.push("each representative rank runs at its pipeline device's slowest GPU's speed: its EP groups and gradient reduction wait for that GPU (within 0.3 % of simulating every rank on deepseek-v3-chunk-256xh800 at spreads of 1-3 %)".into());
                }
            }
            for g in &self.slow_gpus {
                speeds[cluster.device_of(g.rank).0 as usize] *= g.factor;
            }
            let kernels = graph.slow_devices_kernels(&speeds);
            for (d, &speed) in speeds.iter().enumerate() {
                if speed != 1.0 {
                    platform.slow_device(moesim_sim::DeviceId(d as u32), speed);
                }
            }
            for g in &self.slow_gpus {
                let d = cluster.device_of(g.rank).0 as usize;
                slow_notes.push(format!(
                    "GPU {} runs at {:.0} % of the device's speed ({} kernels slowed, its memory bandwidth too)",
                    g.rank,
                    speeds[d] * 100.0,
                    kernels[d]
                ));
            }
        }
        let options = &RunOptions { flow_finish_tolerance: self.flow_finish_tolerance, ..options.clone() };
        let (platform, graph, result) = simulate(platform, graph, options, observer)?;
        let metrics = self.metrics(&spec, &cluster.device, &low, &graph, &result, &memory);
        let figures = if options.figures { figures(setup, &spec, &low, &graph, &result)? } else { Vec::new() };
        let mut notes = low.notes.clone();
        notes.extend(slow_notes);
        if self.flow_finish_tolerance > 0.0 {
            notes.push(format!(
                "flow_finish_tolerance = {}: an approximation; flows due within {} % of their duration after a completion finished with it ({} of {} flows finished early)",
                self.flow_finish_tolerance,
                self.flow_finish_tolerance * 100.0,
                result.flows_finished_early,
                result.flows_started
            ));
        }
        notes.extend(cluster.device.price_note(self.usd_per_gpu_hour));
        if spec.linear_dtype == Dtype::Fp8 && cluster.device.fp8_tflops.is_none() {
            notes.push(format!(
                "{} has no FP8 tensor units: FP8 GEMMs run at the BF16 rate (hardware.fp8_emulation = bf16)",
                cluster.device.name
            ));
        }
        if !cluster.device.comm_uses_compute_units && spec.plan.comm_sms > 0 {
            notes.push(format!(
                "{} runs communication on copy engines: comm_sms = {} holds no compute units",
                cluster.device.name, spec.plan.comm_sms
            ));
        }
        if spec.model.moe.is_none() && spec.plan.ep > 1 {
            notes.push("the model has no experts; ep is ignored".into());
        }
        if !metrics["fits"].as_bool().unwrap_or(true) {
            notes.push(format!(
                "does not fit: {:.1} GiB per GPU needed of {:.1} GiB HBM (weights {:.1}, gradients {:.1}, optimizer {:.1}, activations {:.1}, buffers {:.1} GiB)",
                metrics["memory_gib_per_gpu"].as_f64().unwrap_or(0.0),
                metrics["hbm_gib"].as_f64().unwrap_or(0.0),
                metrics["memory_weights_gib"].as_f64().unwrap_or(0.0),
                metrics["memory_gradients_gib"].as_f64().unwrap_or(0.0),
                metrics["memory_optimizer_gib"].as_f64().unwrap_or(0.0),
                metrics["memory_activations_gib"].as_f64().unwrap_or(0.0),
                metrics["memory_comm_buffers_gib"].as_f64().unwrap_or(0.0),
            ));
        }
        let classes = chunk_pair_classes(&graph, &result, &low);
        Ok((Outcome { metrics, notes, graph, platform, result, figures, files: Vec::new(), job_gpus: None }, classes))
    }
}

/// Hands the heap the lowering freed (its blocks, steps and routing, in
/// many small pieces) back to the system before the engine allocates: on
/// glibc freed pieces stay resident otherwise (31 MB of the 256-GPU
/// every-rank cut's 152 MB after lowering). Changes no result.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's heap to the
    // system; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A rank and a time window on it, ps.
type Window = (u32, u64, u64);

/// Over `windows` (each on its rank): the time of the rank's `ep` stream
/// under its compute kernels over the `ep` stream's time (unions, clipped to
/// the window), summed over the windows; None without EP time in them.
/// DeepSeek's overlap figure: the EP all-to-all's time hidden under
/// computation. `intervals` are [`rank_intervals`]'s, sorted by rank.
fn ep_hidden(intervals: &[moesim_sim::analysis::RankIntervals], windows: &[Window]) -> Option<f64> {
    use moesim_sim::analysis::{length_within, overlap_within};
    let (mut ep_ps, mut hidden_ps) = (0u64, 0u64);
    for &(rank, lo, hi) in windows {
        let Ok(r) = intervals.binary_search_by_key(&rank, |r| r.rank) else { continue };
        let Some(ep) = intervals[r].comm_by_stream.get("ep") else { continue };
        ep_ps += length_within(ep, lo, hi);
        hidden_ps += overlap_within(ep, &intervals[r].compute, lo, hi);
    }
    (ep_ps > 0).then(|| hidden_ps as f64 / ep_ps as f64)
}

/// One row of the per-class calibration of a F&B chunk pair: the mean over
/// the run's overlapped (F&B) ops of the summed time of its kernels of the
/// class, in the run beside everything else (`in_situ_ms`) and each alone on
/// its SMs (`standalone_ms`; `None` for DeepEP, whose standalone time is a
/// run of its own, `moesim calibrate`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPairClass {
    pub class: &'static str,
    pub kernels_per_pair: f64,
    pub in_situ_ms: f64,
    pub standalone_ms: Option<f64>,
}

/// The classes of [`chunk_pair_classes`]: the model's kernel kinds, then
/// the EP exchanges by direction (the backward pass's combine-backward
/// moves tokens' gradients to the experts, a dispatch; its
/// dispatch-backward a combine, as DeepEP runs them), then the notify
/// barriers before them (`workload.ep_lateness`).
pub const CHUNK_PAIR_CLASSES: [&str; 7] =
    ["gemm", "attention", "cast-norm", "other", "deepep-dispatch", "deepep-combine", "deepep-notify"];

/// Per class, kernels and time per F&B chunk pair of a training run (empty
/// without overlapped ops).
pub fn chunk_pair_classes(
    graph: &TaskGraph,
    result: &moesim_sim::RunResult,
    low: &TrainingLowering,
) -> Vec<ChunkPairClass> {
    let windows: Vec<_> = low.ops.iter().filter(|o| o.kind == OpKind::Overlapped).collect();
    if windows.is_empty() {
        return Vec::new();
    }
    let n = windows.len() as f64;
    // (kernels, in situ ps, standalone s) per class.
    let mut sums = [(0u64, 0u64, 0.0f64); CHUNK_PAIR_CLASSES.len()];
    for (i, class) in low.overlapped_kernels.iter().enumerate() {
        sums[i].0 = class.tasks.len() as u64;
        sums[i].1 = class
            .tasks
            .iter()
            .map(|t| (result.spans[t.0 as usize].end - result.spans[t.0 as usize].start).as_ps())
            .sum();
        sums[i].2 = class.standalone_s;
    }
    // The DeepEP kernels: each task of a rank's `ep` stream counts once per
    // window of its rank whose task range holds it (one pass over the
    // windows' tasks; in every-rank mode a window's range interleaves its
    // EP group's ranks).
    use std::collections::HashMap;
    let mut ranges: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
    for o in &windows {
        ranges.entry(o.rank).or_default().push((o.first.0, o.last.0));
    }
    for r in ranges.values_mut() {
        r.sort_unstable();
    }
    // Per stream: its rank's window ranges if it is an `ep` stream, and
    // whether they are disjoint.
    type Ranges<'a> = Option<(&'a [(u32, u32)], bool)>;
    let stream_ranges: Vec<Ranges> = graph
        .streams()
        .iter()
        .map(|s| {
            let r = ranges.get(&s.rank).filter(|_| graph.label_str(s.name) == "ep")?;
            Some((r.as_slice(), r.windows(2).all(|w| w[0].1 < w[1].0)))
        })
        .collect();
    let mut label_class: HashMap<moesim_sim::LabelId, Option<usize>> = HashMap::new();
    let lo = windows.iter().map(|o| o.first.0).min().unwrap_or(0);
    let hi = windows.iter().map(|o| o.last.0).max().unwrap_or(0);
    for id in lo..=hi {
        let task = moesim_sim::TaskId(id);
        let Some((r, disjoint)) = stream_ranges[graph.task_stream(task).0 as usize] else { continue };
        let k = r.partition_point(|w| w.0 <= id);
        let holding =
            if disjoint { usize::from(k > 0 && r[k - 1].1 >= id) } else { r[..k].iter().filter(|w| w.1 >= id).count() };
        if holding == 0 {
            continue;
        }
        let label = graph.task_label(task);
        let class = *label_class.entry(label).or_insert_with(|| {
            let label = graph.label_str(label);
            if label.contains("dispatch") {
                Some(4)
            } else if label.contains("combine") {
                Some(5)
            } else if label.contains("notify") {
                Some(6)
            } else {
                None
            }
        });
        let Some(i) = class else { continue };
        let span = result.spans[id as usize];
        sums[i].0 += holding as u64;
        sums[i].1 += holding as u64 * (span.end - span.start).as_ps();
    }
    CHUNK_PAIR_CLASSES
        .iter()
        .zip(sums)
        .enumerate()
        .map(|(i, (&class, (kernels, ps, alone_s)))| ChunkPairClass {
            class,
            kernels_per_pair: kernels as f64 / n,
            in_situ_ms: ps as f64 / 1e9 / n,
            standalone_ms: (i < 4).then(|| alone_s * 1e3 / n),
        })
        .collect()
}

/// The timeline of one rank per pipeline device and the stacked breakdown
/// of their time.
fn figures(
    setup: &Setup,
    spec: &TrainingSpec,
    low: &TrainingLowering,
    graph: &TaskGraph,
    result: &moesim_sim::RunResult,
) -> Result<Vec<RenderedFigure>, RunFailure> {
    let sched = &low.schedule;
    let mut rows: Vec<(u32, String)> = Vec::new();
    for d in 0..sched.devices {
        let Some(r) = low.ranks.iter().find(|r| r.device == d) else { continue };
        let stages: Vec<String> = (0..sched.stages)
            .filter(|&s| sched.device_of_stage[s as usize].contains(&d))
            .map(|s| s.to_string())
            .collect();
        rows.push((r.rank, format!("stage {} (rank {})", stages.join("+"), r.rank)));
    }
    let step = result.end.as_secs_f64();
    let title = format!(
        "{} on {} GPUs, {} PP{} EP{}: one rank per pipeline device, step {:.2} s",
        spec.model.name,
        spec.plan.world(),
        spec.plan.schedule.as_str(),
        spec.plan.pp,
        spec.plan.ep,
        step
    );
    let timeline = moesim_reports::activity::timeline(graph, result, &rows, &title);
    let activity: Vec<_> =
        rank_activity(graph, result).into_iter().filter(|a| rows.iter().any(|(r, _)| *r == a.rank)).collect();
    // Short bar labels: the stages each device holds.
    let labels: Vec<String> = activity
        .iter()
        .map(|a| {
            rows.iter().find(|(r, _)| *r == a.rank).map_or(String::new(), |(_, l)| {
                l.trim_start_matches("stage ").split(' ').next().unwrap_or("").to_owned()
            })
        })
        .collect();
    let breakdown = moesim_reports::activity::breakdown(
        &activity,
        &labels,
        step,
        &format!("Where each pipeline device's {step:.2} s step goes (bars: the stages a device holds)"),
    );
    // The schedule as the step ran it: each pipeline op of each device's
    // rank, from its first task's start to its last task's end.
    let bars: Vec<moesim_reports::activity::GanttBar> = low
        .ops
        .iter()
        .filter_map(|op| {
            let row = rows.iter().position(|(r, _)| *r == op.rank)?;
            let label = match op.kind {
                OpKind::Forward => "F",
                OpKind::Backward => "B",
                OpKind::Weight => "W",
                OpKind::Overlapped => "F+B",
            };
            Some(moesim_reports::activity::GanttBar {
                row,
                start_ps: result.spans[op.first.0 as usize].start.as_ps(),
                end_ps: result.spans[op.last.0 as usize].end.as_ps(),
                label: label.to_owned(),
            })
        })
        .collect();
    let gantt_rows: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect();
    let gantt = moesim_reports::activity::pipeline_gantt(
        &gantt_rows,
        &bars,
        result.end.as_ps(),
        &format!("{} schedule as the step ran it: F, B and W per pipeline device", spec.plan.schedule.as_str()),
    );
    Ok(vec![super::draw(setup, timeline)?, super::draw(setup, breakdown)?, super::draw(setup, gantt)?])
}

/// Training FLOPs per token as Megatron-LM counts them (Narayanan et al.,
/// SC'21, eq. 3: `96 B s l h^2 (1 + s/6h + V/16lh)` per iteration under full
/// recomputation): the layers' GEMMs, attention scores and weighted values
/// over all `seq_len` keys (no causal halving), the logits GEMM (also with
/// tied embeddings) in forward and backward, plus the forward work the
/// backward pass recomputes: the layers again under full recomputation
/// (not the logits), the attention core under selective (Korthikanti et al.
/// 2022's hardware FLOPs), nothing otherwise (DeepSeek's recipe recomputes
/// norms and up-projections, not counted).
pub fn megatron_hardware_flops_per_token(
    model: &moesim_models::ModelConfig,
    seq_len: u64,
    recompute: Recompute,
) -> f64 {
    let p = model.params();
    let logits = 2.0 * model.vocab as f64 * model.hidden as f64;
    let layers = model.matmul_flops_per_token() - 2.0 * p.head;
    let attention = model.attention_flops_per_token(seq_len as f64);
    let recomputed = match recompute {
        Recompute::Full => layers + attention,
        Recompute::Selective => attention,
        Recompute::None | Recompute::NormsAndUpProjections => 0.0,
    };
    3.0 * (layers + attention + logits) + recomputed
}

/// The run's note on the drawn GPU speeds: the slowest GPU, the median and
/// how many run below 99 % and 97 % of the device's speed.
fn spread_note(spread: f64, speeds: &[f64]) -> String {
    let (slowest, min) =
        speeds.iter().enumerate().fold((0, 1.0), |(i, m), (r, &s)| if s < m { (r, s) } else { (i, m) });
    let mut sorted = speeds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let below = |x: f64| speeds.iter().filter(|&&s| s < x).count();
    format!(
        "GPU speeds drawn with spread {:.1} % (min(1, 1 + spread x z), z standard normal per GPU): slowest GPU {slowest} at {:.1} %, median {:.1} %, {} of {} GPUs below 99 % and {} below 97 % of the device's speed",
        spread * 100.0,
        min * 100.0,
        median * 100.0,
        below(0.99),
        speeds.len(),
        below(0.97)
    )
}

#[cfg(test)]
mod megatron_flops_tests {
    use super::*;
    use moesim_models::ModelConfig;

    /// Narayanan et al. (SC'21) eq. 3 per token under full recomputation:
    /// 96 l h^2 (1 + s/6h + V/16lh); without recomputation the 96 is 72 and
    /// the logits term V/12lh (Korthikanti et al. 2022 §6 "model FLOPs").
    #[test]
    fn hardware_flops_follow_narayanan_eq3() {
        for name in ["gpt-1.7b", "gpt-175b", "gpt-1t"] {
            let m = ModelConfig::preset(name).unwrap();
            let (l, h, v, s) = (m.layers as f64, m.hidden as f64, m.vocab as f64, 2048.0);
            let full = 96.0 * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h));
            let none = 72.0 * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h));
            // Biases and LayerNorm parameters (13h per layer) are counted
            // here and not in eq. 3: within 0.1 %.
            let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-3;
            let got_full = megatron_hardware_flops_per_token(&m, 2048, Recompute::Full);
            let got_none = megatron_hardware_flops_per_token(&m, 2048, Recompute::None);
            assert!(close(got_full, full), "{name} full: {got_full} vs {full}");
            assert!(close(got_none, none), "{name} none: {got_none} vs {none}");
            let selective = megatron_hardware_flops_per_token(&m, 2048, Recompute::Selective);
            assert!(close(selective - got_none, 4.0 * l * h * s), "{name}: selective adds QK^T and AV once");
        }
    }
}
