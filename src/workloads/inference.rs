//! `kind = "prefill"` and `kind = "decode"`: one iteration of an inference
//! deployment unit (`[model]` on the GPUs `[parallel]` names: attention and
//! shared experts data-parallel, routed experts expert-parallel over the
//! unit), simulated end to end on one representative rank, with the figures
//! a capacity planner asks for: iteration time, tokens per second per GPU
//! and per node, where the time went, memory per GPU against HBM, cost.
//!
//! ```toml
//! [parallel]
//! ep = 32                   # the unit's GPUs (routed experts over all of them)
//! tp = 1                    # attention tensor parallelism (dp = ep / tp)
//! comm_sms = 20             # SMs the prefill all-to-all kernels hold
//!
//! [workload]
//! kind = "prefill"
//! tokens_per_gpu = 16384    # new tokens per GPU per iteration (two micro-batches)
//! prompt_len = 4400
//! cache_hit_ratio = 0.563   # share of each prompt found in the prefix cache
//! redundant_experts = 32
//! # kind = "decode": batch_per_gpu, context_len, mtp_acceptance = 0.85
//! ```

use moesim_models::hardware::device::Dtype;
use moesim_models::lowering::inference::{
    inference_memory, kv_bytes_per_token, kv_capacity_tokens, lower_iteration, DeploymentUnit, ExpertPlacement,
    IterationLowering, IterationPhase, IterationSpec,
};
use moesim_models::transformer::routing::Skew;
use moesim_models::{DeviceSpec, ModelConfig};
use moesim_sim::analysis::rank_activity;
use moesim_sim::{Observer, RunResult, TaskGraph};
use moesim_topologies::{ClusterSpec, ConfigProblem};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    build_cluster, check_price_and_precision, check_skew, cluster_gpus, model_failure, num, problem, simulate, Context,
    Outcome, RunFailure, RunOptions, TopologyState, Workload,
};
use crate::setup::{ParallelTable, Setup};

fn two() -> u32 {
    2
}
fn fp8() -> Dtype {
    Dtype::Fp8
}

/// Expert placement as the file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementName {
    #[default]
    Balanced,
    Contiguous,
}

impl PlacementName {
    pub fn placement(self) -> ExpertPlacement {
        match self {
            PlacementName::Balanced => ExpertPlacement::Balanced,
            PlacementName::Contiguous => ExpertPlacement::Contiguous,
        }
    }
}

/// The `[workload]` table of a prefill iteration.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefillWorkload {
    pub kind: String,
    /// New (computed) tokens per GPU per iteration, over all micro-batches
    /// (per tensor-parallel group when `tp > 1`, as `batch_per_gpu`).
    pub tokens_per_gpu: u64,
    /// Tokens per prompt.
    pub prompt_len: u64,
    /// Share of each prompt's tokens found in the prefix (KV) cache.
    #[serde(default)]
    pub cache_hit_ratio: f64,
    // The keys both iterations share (see [`UnitKeys`]; written out
    // because `deny_unknown_fields` does not work with `flatten`).
    /// Extra expert slots holding replicas of loaded experts (DeepSeek: 32).
    #[serde(default)]
    pub redundant_experts: u32,
    #[serde(default)]
    pub placement: PlacementName,
    /// 2: one micro-batch's computation hides the other's all-to-all.
    #[serde(default = "two")]
    pub micro_batches: u32,
    /// Number format of the linear layers: "fp8" or "bf16".
    #[serde(default = "fp8")]
    pub precision: Dtype,
    /// Zipf exponent of expert popularity; 0 = balanced routing.
    #[serde(default)]
    pub skew: f64,
    /// Price of one GPU-hour, USD; default: the device preset's.
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
}

/// The `[workload]` table of a decode iteration.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeWorkload {
    pub kind: String,
    /// Sequences per GPU, or per tensor-parallel group when `tp > 1` (the
    /// group's GPUs serve one batch together: per-GPU throughput counts it
    /// once over the group).
    pub batch_per_gpu: u64,
    /// Tokens already in each sequence's KV cache.
    pub context_len: u64,
    /// With MTP speculative decoding: the probability the draft token is
    /// accepted (DeepSeek-V3: 0.85–0.90).
    pub mtp_acceptance: Option<f64>,
    // The keys both iterations share (see [`UnitKeys`]; written out
    // because `deny_unknown_fields` does not work with `flatten`).
    /// Extra expert slots holding replicas of loaded experts (DeepSeek: 32).
    #[serde(default)]
    pub redundant_experts: u32,
    #[serde(default)]
    pub placement: PlacementName,
    /// 2: one micro-batch's computation hides the other's all-to-all.
    #[serde(default = "two")]
    pub micro_batches: u32,
    /// Number format of the linear layers: "fp8" or "bf16".
    #[serde(default = "fp8")]
    pub precision: Dtype,
    /// Zipf exponent of expert popularity; 0 = balanced routing.
    #[serde(default)]
    pub skew: f64,
    /// Price of one GPU-hour, USD; default: the device preset's.
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
}

/// Keys both iterations share.
#[derive(Debug, Clone)]
pub struct UnitKeys {
    pub redundant_experts: u32,
    pub placement: PlacementName,
    pub micro_batches: u32,
    pub precision: Dtype,
    pub skew: f64,
    pub usd_per_gpu_hour: Option<f64>,
}

macro_rules! unit_keys {
    ($w:expr) => {
        UnitKeys {
            redundant_experts: $w.redundant_experts,
            placement: $w.placement,
            micro_batches: $w.micro_batches,
            precision: $w.precision,
            skew: $w.skew,
            usd_per_gpu_hour: $w.usd_per_gpu_hour,
        }
    };
}

/// Either iteration.
#[derive(Debug, Clone)]
pub enum IterationWorkload {
    Prefill(PrefillWorkload),
    Decode(DecodeWorkload),
}

/// The unit's GPUs and tensor parallelism from `[parallel]` (all of the
/// topology's GPUs when it is absent).
pub fn unit_gpus(parallel: Option<&ParallelTable>, gpus: u64) -> (u32, u32) {
    match parallel {
        None => (gpus as u32, 1),
        Some(p) if p.ep > 1 => (p.ep, p.tp),
        Some(p) => (p.dp.map_or(gpus as u32, |dp| dp * p.tp), p.tp),
    }
}

/// Problems of `[parallel]` for an inference unit.
pub fn parallel_problems(parallel: Option<&ParallelTable>, out: &mut Vec<ConfigProblem>) {
    let Some(p) = parallel else { return };
    if p.pp != 1 {
        out.push(problem(
            "parallel.pp",
            format!("an inference unit has no pipeline stages: expected 1, found {}", p.pp),
        ));
    }
    if p.schedule.is_some() {
        out.push(problem("parallel.schedule", "a pipeline schedule is for training; remove it".into()));
    }
    if p.virtual_stages != 1 {
        out.push(problem(
            "parallel.virtual_stages",
            format!("an inference unit has no pipeline stages: expected 1, found {}", p.virtual_stages),
        ));
    }
    if p.micro_batch != 1 {
        out.push(problem(
            "parallel.micro_batch",
            format!("not used by inference (see workload.micro_batches); expected 1, found {}", p.micro_batch),
        ));
    }
    if let (true, Some(dp)) = (p.ep > 1, p.dp) {
        if dp * p.tp != p.ep {
            out.push(problem(
                "parallel.dp",
                format!(
                    "attention is data-parallel over the unit: expected ep / tp = {}, found {dp}",
                    p.ep / p.tp.max(1)
                ),
            ));
        }
    }
}

impl UnitKeys {
    fn problems(&self, device: Option<&DeviceSpec>, out: &mut Vec<ConfigProblem>) {
        check_skew(self.skew, out);
        check_price_and_precision(self.usd_per_gpu_hour, self.precision, device, out);
    }

    fn unit(&self, gpus: u32, tp: u32, comm_sms: u32) -> DeploymentUnit {
        DeploymentUnit {
            gpus,
            tp,
            redundant_experts: self.redundant_experts,
            placement: self.placement.placement(),
            comm_sms,
        }
    }
}

impl IterationWorkload {
    fn keys(&self) -> UnitKeys {
        match self {
            IterationWorkload::Prefill(w) => unit_keys!(w),
            IterationWorkload::Decode(w) => unit_keys!(w),
        }
    }

    pub fn phase(&self) -> IterationPhase {
        match self {
            IterationWorkload::Prefill(w) => IterationPhase::Prefill {
                tokens_per_gpu: w.tokens_per_gpu,
                prompt_len: w.prompt_len,
                cached_len: (w.prompt_len as f64 * w.cache_hit_ratio).round() as u64,
            },
            IterationWorkload::Decode(w) => IterationPhase::Decode {
                batch_per_gpu: w.batch_per_gpu,
                context_len: w.context_len,
                mtp_acceptance: w.mtp_acceptance,
            },
        }
    }

    /// The iteration's spec on a cluster of `gpus` GPUs.
    pub fn spec(&self, model: &ModelConfig, parallel: Option<&ParallelTable>, gpus: u64) -> IterationSpec {
        let (unit_gpus, tp) = unit_gpus(parallel, gpus);
        let keys = self.keys();
        IterationSpec {
            model: model.clone(),
            unit: keys.unit(unit_gpus, tp, parallel.map_or(20, |p| p.comm_sms)),
            phase: self.phase(),
            linear_dtype: keys.precision,
            skew: Skew::from_exponent(keys.skew),
            micro_batches: keys.micro_batches,
            moe_fill: 1.0,
        }
    }
}

impl Workload for IterationWorkload {
    fn kind_name(&self) -> &str {
        match self {
            IterationWorkload::Prefill(_) => "prefill",
            IterationWorkload::Decode(_) => "decode",
        }
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let (device, topology, model, model_given, parallel) =
            (cx.device, cx.topology_state(), cx.model, cx.model_given, cx.parallel);
        let mut out = Vec::new();
        self.keys().problems(device, &mut out);
        if let IterationWorkload::Prefill(w) = self {
            if !(w.cache_hit_ratio.is_finite() && (0.0..1.0).contains(&w.cache_hit_ratio)) {
                out.push(problem(
                    "workload.cache_hit_ratio",
                    format!("expected a share in [0, 1), found {}", w.cache_hit_ratio),
                ));
            }
        }
        if !model_given {
            out.push(problem(
                "model",
                "an inference iteration needs a [model] table, e.g. preset = \"deepseek-v3\"".into(),
            ));
        }
        parallel_problems(parallel, &mut out);
        match topology {
            TopologyState::Missing => {
                out.push(problem("topology", "an inference iteration needs a [topology] table".into()))
            }
            TopologyState::Resolved(t) => {
                if let Some(m) = model {
                    let gpus = cluster_gpus(t);
                    let spec = self.spec(m, parallel, gpus);
                    for p in spec.problems(gpus as u32) {
                        // Unit keys live in [parallel].
                        let key = match p.key.as_str() {
                            "workload.gpus" => {
                                if parallel.is_some_and(|p| p.ep > 1) { "parallel.ep" } else { "parallel.dp" }
                                    .to_owned()
                            }
                            "workload.tp" => "parallel.tp".to_owned(),
                            _ => p.key,
                        };
                        out.push(problem(&key, p.message));
                    }
                }
            }
            TopologyState::Broken => {}
        }
        out
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let cluster = build_cluster(setup)?;
        let cluster_spec = setup.topology.as_ref().expect("build_cluster checked it");
        let model = setup.model.as_ref().ok_or_else(|| {
            RunFailure::Input(vec![setup.source.at_key("model", "an inference iteration needs a [model] table")])
        })?;
        let spec = self.spec(model, setup.parallel.as_ref(), cluster_gpus(cluster_spec));
        let mut cluster = cluster;
        let rdma = setup.parallel.as_ref().map(|p| p.deepep_rdma).unwrap_or_default();
        rdma.cap_normal_kernels(&mut cluster, spec.unit.comm_sms);
        cluster.share_memory_with_comm();
        let mut graph = TaskGraph::new();
        let low = lower_iteration(&cluster, &spec, setup.seed, &mut graph).map_err(|e| model_failure(setup, e))?;
        let (platform, graph, result) = simulate(cluster.platform.clone(), graph, options, observer)?;
        let (metrics, mut notes) = iteration_metrics(
            &spec,
            &cluster.device,
            cluster_spec,
            &low,
            &graph,
            &result,
            self.keys().usd_per_gpu_hour,
        );
        notes.extend(low.notes.clone());
        Ok(Outcome { metrics, notes, graph, platform, result, figures: Vec::new(), files: Vec::new(), job_gpus: None })
    }

    fn uses_model(&self) -> bool {
        true
    }

    fn sm_driven_all_to_all(&self, parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        match self {
            IterationWorkload::Prefill(_) => parallel.filter(|p| p.ep > 1).map(|p| ("parallel.comm_sms", p.comm_sms)),
            IterationWorkload::Decode(_) => None,
        }
    }
}

/// The metrics of one simulated iteration (and warnings for the notes).
pub fn iteration_metrics(
    spec: &IterationSpec,
    device: &DeviceSpec,
    cluster: &ClusterSpec,
    low: &IterationLowering,
    graph: &TaskGraph,
    result: &RunResult,
    usd_per_gpu_hour: Option<f64>,
) -> (Map<String, Value>, Vec<String>) {
    let price_note = device.price_note(usd_per_gpu_hour);
    let usd_per_gpu_hour = device.price_per_gpu_hour(usd_per_gpu_hour);
    let t = result.end.as_secs_f64().max(1e-12);
    let activity = rank_activity(graph, result);
    let rep = activity.iter().find(|a| a.rank == low.rank);
    let ms = |ps: u64| ps as f64 / 1e9;
    let comm_ms = rep.map_or(0.0, |a| ms(a.comm_ps));
    let exposed_ms = rep.map_or(0.0, |a| ms(a.exposed_comm_ps()));
    let compute_ms = rep.map_or(0.0, |a| ms(a.compute_ps));
    // The topology's node is the NVLink scale-up domain; a server is what
    // the device ships in (8 GPUs on HGX, 4 in a GB200 NVL72 tray).
    let domain = cluster.gpus_per_node as f64;
    let gpn = (device.server_gpus() as f64).min(domain);
    let memory = inference_memory(spec);
    let gib = (1u64 << 30) as f64;
    let hbm = device.hbm_bytes();
    let mut notes: Vec<String> = price_note.into_iter().collect();
    let mut m = Map::new();
    m.insert("model".into(), Value::from(spec.model.name.clone()));
    m.insert("device".into(), Value::from(device.name.clone()));
    m.insert("gpus".into(), Value::from(spec.unit.gpus));
    m.insert("nodes".into(), num((spec.unit.gpus as f64 / gpn).ceil()));
    m.insert("server_gpus".into(), num(gpn));
    m.insert("scale_up_domain_gpus".into(), num(domain));
    m.insert("ep".into(), Value::from(spec.ep()));
    m.insert("tp".into(), Value::from(spec.unit.tp));
    m.insert("expert_slots_per_gpu".into(), Value::from(low.slots_per_gpu));
    m.insert("micro_batches".into(), Value::from(low.micro_batches.len()));
    m.insert("simulated_rank".into(), Value::from(low.rank));
    m.insert("iteration_time_ms".into(), num(t * 1e3));
    m.insert("sequences_per_gpu".into(), num(low.sequences_per_gpu));
    m.insert("new_tokens_per_gpu".into(), num(low.new_tokens_per_gpu));
    let mtp = matches!(spec.phase, IterationPhase::Decode { mtp_acceptance: Some(_), .. });
    let tokens_per_gpu = match spec.phase {
        IterationPhase::Prefill { prompt_len, cached_len, .. } => {
            m.insert("prompt_len".into(), Value::from(prompt_len));
            m.insert("cached_tokens_per_prompt".into(), Value::from(cached_len));
            m.insert("computed_tokens_per_s_per_gpu".into(), num(low.new_tokens_per_gpu / t));
            low.input_tokens_per_gpu
        }
        IterationPhase::Decode { context_len, mtp_acceptance, .. } => {
            m.insert("context_len".into(), Value::from(context_len));
            m.insert("tpot_ms".into(), num(t * 1e3 / (1.0 + mtp_acceptance.unwrap_or(0.0))));
            m.insert("output_tokens_per_iteration_per_gpu".into(), num(low.output_tokens_per_gpu));
            low.output_tokens_per_gpu
        }
    };
    m.insert("tokens_per_s_per_gpu".into(), num(tokens_per_gpu / t));
    // "node" = server, as DeepSeek quotes "per H800 node" (kept for 8-GPU servers).
    m.insert("tokens_per_s_per_node".into(), num(tokens_per_gpu / t * gpn));
    m.insert("tokens_per_s_per_server".into(), num(tokens_per_gpu / t * gpn));
    m.insert("tokens_per_s_per_scale_up_domain".into(), num(tokens_per_gpu / t * domain));
    m.insert("compute_time_ms".into(), num(compute_ms));
    m.insert("comm_time_ms".into(), num(comm_ms));
    m.insert("exposed_comm_ms".into(), num(exposed_ms));
    m.insert("expert_rows_per_layer_max".into(), Value::from(low.expert_rows.0));
    m.insert("expert_rows_per_layer_mean".into(), num(low.expert_rows.1));
    m.insert("memory_gib_per_gpu".into(), num(memory.total() / gib));
    m.insert("memory_weights_gib".into(), num(memory.weights / gib));
    m.insert("memory_kv_cache_gib".into(), num(memory.kv_cache / gib));
    m.insert("memory_activations_gib".into(), num(memory.activations / gib));
    m.insert("memory_comm_buffers_gib".into(), num(memory.comm_buffers / gib));
    m.insert("hbm_gib".into(), num(hbm / gib));
    m.insert("kv_cache_bytes_per_token".into(), num(spec.model.kv_cache_bytes_per_token(2.0)));
    m.insert("kv_cache_bytes_per_token_per_gpu".into(), num(kv_bytes_per_token(&spec.model, spec.unit.tp, mtp)));
    m.insert("kv_capacity_tokens_per_gpu".into(), num(kv_capacity_tokens(spec, device, 0.0).floor()));
    let fits = memory.total() <= hbm;
    m.insert("fits".into(), Value::from(fits));
    if !fits {
        notes.push(format!(
            "warning: does not fit: {:.1} GiB per GPU needed ({:.1} weights, {:.1} KV cache, {:.1} activations, {:.1} buffers) of {:.1} GiB HBM; the KV cache holds at most {:.0} tokens per GPU",
            memory.total() / gib,
            memory.weights / gib,
            memory.kv_cache / gib,
            memory.activations / gib,
            memory.comm_buffers / gib,
            hbm / gib,
            kv_capacity_tokens(spec, device, 0.0).floor()
        ));
    }
    let gpu_hours_per_million = 1e6 / (tokens_per_gpu / t) / 3600.0;
    let what = if matches!(spec.phase, IterationPhase::Prefill { .. }) { "input" } else { "output" };
    m.insert(format!("gpu_hours_per_million_{what}_tokens"), num(gpu_hours_per_million));
    m.insert("usd_per_gpu_hour".into(), num(usd_per_gpu_hour));
    m.insert(format!("usd_per_million_{what}_tokens"), num(gpu_hours_per_million * usd_per_gpu_hour));
    (m, notes)
}
