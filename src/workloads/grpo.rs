//! `kind = "grpo"`: one iteration of GRPO post-training (DeepSeek-R1,
//! DeepSeek-V3's RL stage): `prompts` x `samples_per_prompt` generations on
//! the serving model, the reference (and old-policy) log-probabilities, the
//! policy update, and moving the new weights to the rollout engine.
//!
//! Every phase reuses an existing cost model, none is a closed form:
//! - rollout: the request-level serving model ([`moesim_models::serving`])
//!   with every sample arriving at once, its iteration times from
//!   engine-simulated prefill and decode iterations of the rollout unit
//!   ([`EngineIterationTimes`]), so the batch shrinks as samples finish and
//!   the longest generation is the straggler;
//! - scoring: forward passes over every sample's prompt and response, as
//!   prefill iterations of the same unit;
//! - update: `optimizer_steps` training steps lowered by
//!   [`moesim_models::lowering::training`] under `[parallel]`, simulated;
//! - sync: the weights in the rollout engine's layout (bytes from
//!   [`inference_memory`]) over the modelled network: an all-gather inside
//!   the GPUs that hold one copy when colocated, point-to-point sends from
//!   the training pool to every rollout GPU when disaggregated.
//!
//! ```toml
//! [parallel]               # the policy update's plan
//! pp = 16
//! ep = 64
//! [workload]
//! kind = "grpo"
//! placement = "colocated"  # or "disaggregated" with rollout_gpus = 512
//! prompts = 512
//! samples_per_prompt = 16
//! prompt_len = 512
//! response_len_mean = 4000.0
//! response_len_sigma = 0.8
//! response_len_max = 16384
//! [workload.rollout]
//! gpus = 32                # one inference unit (its expert-parallel group)
//! max_batch_per_gpu = 64
//! ```

use moesim_models::hardware::device::Dtype;
use moesim_models::lowering::inference::inference_memory;
use moesim_models::lowering::training::{lower_training, training_memory, RankMode, TrainingSpec};
use moesim_models::network::collectives::{self, CollectiveOp, CollectiveSpec};
use moesim_models::serving::{lognormal_lengths, quantile, IterationTimes, PrefillChunking, Request};
use moesim_models::transformer::layers::Recompute;
use moesim_models::transformer::routing::Skew;
use moesim_models::Cluster;
use moesim_sim::{EngineOptions, Observer, TaskGraph};
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::inference::PlacementName;
use super::serving::{unit_cluster, DecodeUnitTable, EngineIterationTimes, PrefillUnitTable, ServingWorkload};
use super::training::{RecomputeKey, TrainingWorkload};
use super::{
    build_cluster, check_price_and_precision, check_skew, cluster_gpus, model_failure, num, problem, simulate, Context,
    Footprint, Outcome, RunFailure, RunOptions, TopologyState, Workload, BYTES_PER_TASK,
};
use crate::setup::Setup;

fn one_u32() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn fp8() -> Dtype {
    Dtype::Fp8
}
fn bf16() -> Dtype {
    Dtype::Bf16
}
fn sigma() -> f64 {
    0.6
}
fn yes() -> bool {
    true
}
fn prefill_tokens() -> u64 {
    16384
}
fn comm_sms() -> u32 {
    24
}
fn step_cpu_ms() -> f64 {
    // vLLM's per-step host time, serial with the GPU when async scheduling
    // is off (its default through v0.10, the version NeMo RL v0.4 pins):
    // "each highlighted redbox is about 4ms of GPU bubble ... incurred on
    // every decode" (vllm-project/vllm#6854, multi-step scheduling RFC;
    // 5-13 ms over its cases; 5-6 ms at batch 256 in #10634).
    4.0
}

/// Where the reference and old-policy log-probabilities are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogprobLayout {
    /// By the training model in its own layout ([parallel]), a forward-only
    /// pass at the simulated update's rate (NeMo RL, verl and OpenRLHF
    /// compute them with the training engine).
    #[default]
    Training,
    /// As prefill iterations of the rollout unit.
    Rollout,
}

/// Where rollout and training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RlPlacement {
    /// The same GPUs generate, then train (verl's hybrid engine, NeMo RL's
    /// default): the weights are resharded into the inference layout after
    /// every update.
    #[default]
    Colocated,
    /// A rollout pool (`rollout_gpus`) and a training pool (the rest): the
    /// new weights are sent from the training to the rollout GPUs.
    Disaggregated,
}

impl RlPlacement {
    fn as_str(self) -> &'static str {
        match self {
            RlPlacement::Colocated => "colocated",
            RlPlacement::Disaggregated => "disaggregated",
        }
    }
}

/// `[workload.rollout]`: the inference unit that generates.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutUnitTable {
    /// GPUs of one inference unit (its expert-parallel group); the rollout
    /// GPUs are split into units of this size.
    pub gpus: u32,
    /// Tensor-parallel degree of attention inside the unit.
    #[serde(default = "one_u32")]
    pub tp: u32,
    /// Most samples a GPU decodes at once (KV capacity may bound it lower).
    pub max_batch_per_gpu: u64,
    /// New tokens a GPU takes per prefill iteration (prompts, and the
    /// scoring passes).
    #[serde(default = "prefill_tokens")]
    pub prefill_tokens_per_gpu: u64,
    /// Redundant expert copies added to the routed experts (load balancing).
    #[serde(default)]
    pub redundant_experts: u32,
    /// How experts are laid out over the unit: "balanced" or "contiguous".
    #[serde(default)]
    pub placement: PlacementName,
    /// Multi-token prediction: the share of draft tokens accepted (none: no MTP).
    pub mtp_acceptance: Option<f64>,
    /// Micro-batches an iteration is split into to overlap compute with the all-to-all.
    #[serde(default = "two")]
    pub micro_batches: u32,
    /// SMs the prefill all-to-all kernels hold.
    #[serde(default = "comm_sms")]
    pub comm_sms: u32,
    /// Number format of the rollout's linear layers: "fp8" or "bf16".
    #[serde(default = "fp8")]
    pub precision: Dtype,
    /// Host time each engine step adds, serial with the GPU (scheduling,
    /// input preparation, sampling, output processing), ms; default 4
    /// (vLLM without async scheduling, vllm-project/vllm#6854); 0: none.
    #[serde(default = "step_cpu_ms")]
    pub step_cpu_ms: f64,
}

/// The `[workload]` table of a GRPO iteration.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpoWorkload {
    pub kind: String,
    /// "colocated" (the same GPUs generate and train) or "disaggregated"
    /// (a rollout pool of `rollout_gpus` and a training pool of the rest).
    #[serde(default)]
    pub placement: RlPlacement,
    /// Disaggregated: GPUs of the rollout pool (ranks after the training
    /// pool's); the training pool is the cluster's other GPUs.
    pub rollout_gpus: Option<u32>,
    /// Prompts per iteration.
    pub prompts: u64,
    /// Samples generated per prompt (GRPO's group size G).
    pub samples_per_prompt: u32,
    /// Tokens per prompt.
    pub prompt_len: u64,
    /// Mean generated tokens per sample (before the cap).
    pub response_len_mean: f64,
    /// Shape of the log-normal generation lengths: the standard deviation
    /// of their logarithm (0: every sample alike).
    #[serde(default = "sigma")]
    pub response_len_sigma: f64,
    /// Most tokens a sample generates (the rollout's max_new_tokens); a
    /// longer draw stops here.
    pub response_len_max: u64,
    /// `[workload.rollout]`: the inference unit that generates.
    pub rollout: RolloutUnitTable,
    /// Optimizer steps per iteration: the samples are split into this many
    /// mini-batches, one training step each.
    #[serde(default = "one_u32")]
    pub optimizer_steps: u32,
    /// Number format of the update's linear layers: "bf16" or "fp8".
    #[serde(default = "bf16")]
    pub train_precision: Dtype,
    /// What the update's backward pass recomputes (as `training`'s
    /// `recompute`).
    #[serde(default)]
    pub recompute: RecomputeKey,
    /// Recompute the old policy's log-probabilities with a forward pass of
    /// the training model (verl, OpenRLHF and NeMo RL do) rather than take
    /// the rollout engine's.
    #[serde(default = "yes")]
    pub recompute_old_log_probs: bool,
    /// A learned reward model of the policy's size scores every sample (one
    /// more forward pass); false: rule-based rewards (DeepSeek-R1's accuracy
    /// and format rewards), whose cost is not modelled.
    #[serde(default)]
    pub reward_model: bool,
    /// Where the reference and old-policy log-probabilities are computed:
    /// "training" (the training layout, a forward-only pass at the
    /// update's rate) or "rollout" (prefill iterations of the rollout unit).
    #[serde(default)]
    pub logprob_layout: LogprobLayout,
    /// The phases hand the GPUs over through host memory, as NeMo RL does:
    /// the policy weights out and back around the reference pass, with the
    /// reference weights in; colocated also the training state offloaded
    /// while vLLM generates and reloaded for the log-probabilities and the
    /// update, and vLLM's weights slept to host and woken for the refit;
    /// false: everything stays resident.
    #[serde(default = "yes")]
    pub host_offload: bool,
    /// One GPU's copy rate to and from host memory, GB/s; default: the
    /// topology's PCIe rate times its efficiency.
    pub host_copy_gb_per_s: Option<f64>,
    /// Partial rollouts (Kimi k1.5): tokens a sample generates per
    /// iteration before it is carried into the next; default: the mean
    /// response length, rounded up.
    pub partial_rollout_tokens: Option<u64>,
    /// Zipf exponent of expert popularity (0: balanced routing).
    #[serde(default)]
    pub skew: f64,
    /// Price of one GPU-hour, USD; default: the device preset's.
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
}

/// The GPU pools of an iteration.
#[derive(Debug, Clone, Copy)]
struct Pools {
    /// Ranks `0..training` train (and score).
    training: u32,
    /// GPUs that generate: all of them colocated, ranks
    /// `training..training + rollout` disaggregated.
    rollout: u32,
    /// All GPUs of the job.
    total: u32,
}

impl GrpoWorkload {
    fn samples(&self) -> u64 {
        self.prompts * self.samples_per_prompt as u64
    }

    fn pools(&self, gpus: u64) -> Pools {
        let gpus = gpus.min(u32::MAX as u64) as u32;
        match (self.placement, self.rollout_gpus) {
            (RlPlacement::Disaggregated, Some(r)) => {
                Pools { training: gpus.saturating_sub(r), rollout: r.min(gpus), total: gpus }
            }
            _ => Pools { training: gpus, rollout: gpus, total: gpus },
        }
    }

    /// The serving workload the rollout runs as: one prefill unit and the
    /// rollout GPUs' decode units, every sample arriving at once.
    fn serving(&self, pools: Pools) -> ServingWorkload {
        let r = &self.rollout;
        ServingWorkload {
            kind: "serving".into(),
            arrivals: None,
            rate_per_s: None,
            duration_s: None,
            trace: None,
            trace_format: None,
            time_scale: 1.0,
            input_scale: 1.0,
            output_scale: 1.0,
            input_len: Some(self.prompt_len),
            output_len: None,
            cache_hit_ratio: 0.0,
            prefix_cache_gib: None,
            prefill_units: 1,
            decode_units: (pools.rollout / r.gpus.max(1)).max(1),
            prefill: PrefillUnitTable {
                gpus: r.gpus,
                tp: r.tp,
                tokens_per_gpu: r.prefill_tokens_per_gpu,
                chunking: PrefillChunking::Tokens,
                context_parallel: 1,
                redundant_experts: r.redundant_experts,
                placement: r.placement,
                comm_sms: r.comm_sms,
                deepep_rdma: Default::default(),
                micro_batches: r.micro_batches,
            },
            decode: DecodeUnitTable {
                gpus: r.gpus,
                tp: r.tp,
                max_batch_per_gpu: r.max_batch_per_gpu,
                redundant_experts: r.redundant_experts,
                placement: r.placement,
                mtp_acceptance: r.mtp_acceptance,
                micro_batches: r.micro_batches,
            },
            ttft_slo_ms: None,
            tpot_slo_ms: None,
            precision: r.precision,
            skew: self.skew,
            hbm_utilization: 0.9,
            usd_per_gpu_hour: self.usd_per_gpu_hour,
        }
    }

    /// The partial-rollout budget, tokens per sample per iteration.
    fn partial_budget(&self) -> u64 {
        self.partial_rollout_tokens.unwrap_or(self.response_len_mean.ceil().max(1.0) as u64)
    }

    /// The rollout's requests: `samples_per_prompt` per prompt, all at time
    /// 0; a prompt's first sample computes its prefill, the others find it
    /// in the prefix cache (one prefill, G forks, as vLLM's `n` does).
    fn requests(&self, lengths: &[u64]) -> Vec<Request> {
        lengths
            .iter()
            .enumerate()
            .map(|(i, &l)| Request {
                arrival_s: 0.0,
                input_len: self.prompt_len,
                output_len: l,
                cached_len: if (i as u64).is_multiple_of(self.samples_per_prompt as u64) {
                    0
                } else {
                    self.prompt_len - 1
                },
            })
            .collect()
    }

    /// The same samples under partial rollouts in steady state: each
    /// iteration generates one `budget`-token segment of every unfinished
    /// chain, so its work is every segment of one iteration's draw; a
    /// continued segment re-computes its context's KV (prompt and the
    /// tokens generated before) in prefill.
    fn partial_requests(&self, lengths: &[u64], budget: u64) -> Vec<Request> {
        let mut out = Vec::new();
        for (i, &l) in lengths.iter().enumerate() {
            let mut done = 0;
            while done < l {
                let seg = budget.min(l - done);
                let first = done == 0;
                out.push(Request {
                    arrival_s: 0.0,
                    input_len: self.prompt_len + done,
                    output_len: seg,
                    cached_len: if first && !(i as u64).is_multiple_of(self.samples_per_prompt as u64) {
                        self.prompt_len - 1
                    } else {
                        0
                    },
                });
                done += seg;
            }
        }
        out
    }

    fn train_spec(&self, setup: &Setup, pools: Pools, lengths: &[u64]) -> Result<TrainingSpec, RunFailure> {
        let missing = |key: &str| RunFailure::Input(vec![setup.source.at_key(key, "missing")]);
        let model = setup.model.clone().ok_or_else(|| missing("model"))?;
        let table = setup.parallel.as_ref().ok_or_else(|| missing("parallel"))?;
        let plan = TrainingWorkload::plan(table, pools.training as u64);
        let stage_layers = TrainingWorkload::stage_layers(table, &plan, model.layers)
            .map_err(|(key, m)| RunFailure::Input(vec![setup.source.at_key(key, m)]))?;
        let mean_len = self.prompt_len as f64 + lengths.iter().sum::<u64>() as f64 / lengths.len().max(1) as f64;
        Ok(TrainingSpec {
            model,
            plan,
            stage_layers,
            // Each sample is one training sequence, at the mean length.
            seq_len: mean_len.round().max(1.0) as u64,
            global_batch: self.samples().div_ceil(self.optimizer_steps.max(1) as u64),
            linear_dtype: self.train_precision,
            skew: Skew::from_exponent(self.skew),
            recompute: self.recompute.resolve(),
            attention_kernel: Default::default(),
            mode: RankMode::Representative,
            routing_draw: Default::default(),
            launch_gaps_us: [None; 4],
            ep_lateness: moesim_models::lowering::training::DEEPEP_LATENESS,
        })
    }
}

/// The time of one lowered collective (or set of transfers) on `cluster`.
fn collective_time_s(cluster: &Cluster, specs: &[CollectiveSpec]) -> Result<f64, moesim_models::ModelError> {
    let mut graph = TaskGraph::new();
    let mut streams = std::collections::BTreeMap::new();
    for spec in specs {
        let algorithm = collectives::algorithm(collectives::choose(cluster, spec))?;
        let s: Vec<_> =
            spec.group.iter().map(|&r| *streams.entry(r).or_insert_with(|| graph.add_stream(r, "sync"))).collect();
        let after = vec![None; s.len()];
        algorithm.lower(cluster, spec, &mut graph, &s, &after)?;
    }
    let r = moesim_sim::run(&cluster.platform, &graph, &EngineOptions::default(), &mut moesim_sim::Quiet)
        .map_err(|e| moesim_models::ModelError::Unsupported(super::explain(&e)))?;
    Ok(r.end.as_secs_f64())
}

impl Workload for GrpoWorkload {
    fn kind_name(&self) -> &str {
        "grpo"
    }

    fn uses_model(&self) -> bool {
        true
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let positive = |key: &str, v: u64, out: &mut Vec<ConfigProblem>| {
            if v == 0 {
                out.push(problem(key, "expected an integer >= 1, found 0".into()));
            }
        };
        positive("workload.prompts", self.prompts, &mut out);
        positive("workload.samples_per_prompt", self.samples_per_prompt as u64, &mut out);
        positive("workload.prompt_len", self.prompt_len, &mut out);
        positive("workload.response_len_max", self.response_len_max, &mut out);
        positive("workload.optimizer_steps", self.optimizer_steps as u64, &mut out);
        positive("workload.rollout.gpus", self.rollout.gpus as u64, &mut out);
        positive("workload.rollout.max_batch_per_gpu", self.rollout.max_batch_per_gpu, &mut out);
        positive("workload.rollout.prefill_tokens_per_gpu", self.rollout.prefill_tokens_per_gpu, &mut out);
        if self.partial_rollout_tokens == Some(0) {
            out.push(problem("workload.partial_rollout_tokens", "expected an integer >= 1, found 0".into()));
        }
        if !(self.response_len_mean.is_finite() && self.response_len_mean >= 1.0) {
            out.push(problem(
                "workload.response_len_mean",
                format!("expected a number of tokens >= 1, found {}", self.response_len_mean),
            ));
        }
        if !(self.response_len_sigma.is_finite() && (0.0..=4.0).contains(&self.response_len_sigma)) {
            out.push(problem(
                "workload.response_len_sigma",
                format!("expected a log-normal shape in [0, 4], found {}", self.response_len_sigma),
            ));
        }
        if let Some(a) = self.rollout.mtp_acceptance.filter(|a| !(a.is_finite() && (0.0..=1.0).contains(a))) {
            out.push(problem("workload.rollout.mtp_acceptance", format!("expected a share in [0, 1], found {a}")));
        }
        if self.optimizer_steps as u64 > self.samples().max(1) {
            out.push(problem(
                "workload.optimizer_steps",
                format!("expected at most the iteration's {} samples, found {}", self.samples(), self.optimizer_steps),
            ));
        }
        let ms = self.rollout.step_cpu_ms;
        if !(ms.is_finite() && (0.0..=1000.0).contains(&ms)) {
            out.push(problem("workload.rollout.step_cpu_ms", format!("expected 0 to 1000 ms, found {ms}")));
        }
        if let Some(g) = self.host_copy_gb_per_s.filter(|g| !(g.is_finite() && *g > 0.0 && *g <= 1e4)) {
            out.push(problem("workload.host_copy_gb_per_s", format!("expected a rate in (0, 10000] GB/s, found {g}")));
        }
        check_skew(self.skew, &mut out);
        check_price_and_precision(self.usd_per_gpu_hour, self.rollout.precision, cx.device, &mut out);
        if !cx.model_given {
            out.push(problem("model", "a GRPO iteration needs a [model] table, e.g. preset = \"deepseek-v3\"".into()));
        }
        if let Some(m) = cx.model {
            let len = self.prompt_len + self.response_len_max;
            if len > m.max_context {
                out.push(problem(
                    "workload.response_len_max",
                    format!(
                        "prompt_len + response_len_max = {len} exceeds the model's context of {} tokens",
                        m.max_context
                    ),
                ));
            }
        }
        match (self.placement, self.rollout_gpus) {
            (RlPlacement::Colocated, Some(_)) => out.push(problem(
                "workload.rollout_gpus",
                "colocated rollout runs on every GPU; remove it or set placement = \"disaggregated\"".into(),
            )),
            (RlPlacement::Disaggregated, None) => out.push(problem(
                "workload.rollout_gpus",
                "disaggregated placement needs the rollout pool's GPUs (the rest train)".into(),
            )),
            _ => {}
        }
        let Some(table) = cx.parallel else {
            out.push(problem("parallel", "a GRPO iteration needs a [parallel] table for its update".into()));
            return out;
        };
        match cx.topology_state() {
            TopologyState::Missing => out.push(problem("topology", "a GRPO iteration needs a [topology] table".into())),
            TopologyState::Resolved(t) => {
                let gpus = cluster_gpus(t);
                let pools = self.pools(gpus);
                if let Some(r) = self.rollout_gpus {
                    if r == 0 || r as u64 >= gpus {
                        out.push(problem(
                            "workload.rollout_gpus",
                            format!(
                                "expected between 1 and {} (the cluster's {gpus} GPUs less at least one to train)",
                                gpus.saturating_sub(1)
                            ),
                        ));
                        return out;
                    }
                }
                let unit = self.rollout.gpus;
                if unit > 0 && (pools.rollout < unit || !pools.rollout.is_multiple_of(unit)) {
                    out.push(problem(
                        "workload.rollout.gpus",
                        format!("expected a divisor of the {} rollout GPUs, found {unit}", pools.rollout),
                    ));
                }
                if let Some(m) = cx.model {
                    let plan = TrainingWorkload::plan(table, pools.training as u64);
                    let global = self.samples().div_ceil(self.optimizer_steps.max(1) as u64);
                    out.extend(plan.problems(pools.training as u64, t.gpus_per_node, m, global));
                    if unit > 0 && pools.rollout >= unit {
                        let sw = self.serving(pools);
                        for p in sw.decode_spec(m, 1, 1).problems(gpus as u32) {
                            let key = match p.key.as_str() {
                                "workload.gpus" => "workload.rollout.gpus".to_owned(),
                                "workload.tp" => "workload.rollout.tp".to_owned(),
                                "workload.redundant_experts" => "workload.rollout.redundant_experts".to_owned(),
                                "workload.micro_batches" => "workload.rollout.micro_batches".to_owned(),
                                _ => p.key,
                            };
                            out.push(problem(&key, p.message));
                        }
                    }
                }
            }
            TopologyState::Broken => {}
        }
        out
    }

    fn footprint(&self, setup: &Setup) -> Option<Footprint> {
        // The update step dominates (as `training`'s estimate); the
        // rollout's requests are small beside it.
        let (model, table, topology) = (setup.model.as_ref()?, setup.parallel.as_ref()?, setup.topology.as_ref()?);
        let pools = self.pools(cluster_gpus(topology));
        let plan = TrainingWorkload::plan(table, pools.training as u64);
        let replicas = (plan.dp as u64 * plan.micro_batch as u64).max(1);
        let global = self.samples().div_ceil(self.optimizer_steps.max(1) as u64);
        let tasks = 128.0 * global.div_ceil(replicas) as f64 * (model.layers as f64 + 1.0);
        Some(Footprint {
            bytes: tasks * BYTES_PER_TASK + self.samples() as f64 * 512.0,
            key: "workload.prompts".into(),
            what: format!("{tasks:.3e} tasks"),
        })
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let input = |key: &str, m: String| RunFailure::Input(vec![setup.source.at_key(key, m)]);
        let cluster = build_cluster(setup)?;
        let topology = setup.topology.as_ref().expect("build_cluster checked it");
        let model = setup.model.clone().ok_or_else(|| input("model", "missing".into()))?;
        let pools = self.pools(cluster_gpus(topology));
        let device = setup.device.clone();
        let peak = device.bf16_tflops * 1e12;
        let mut notes = Vec::new();

        // Rollout.
        let n = self.samples() as usize;
        let lengths =
            lognormal_lengths(n, self.response_len_mean, self.response_len_sigma, self.response_len_max, setup.seed)
                .ok_or_else(|| input("workload.response_len_mean", "no log-normal with this mean and shape".into()))?;
        let sw = self.serving(pools);
        let mut times = EngineIterationTimes::new(&sw, setup)?;
        times.step_cpu_s = self.rollout.step_cpu_ms * 1e-3;
        let decode_units = sw.decode_units;
        let mut rollout = sw.serve(setup, &self.requests(&lengths), &mut times, 1, decode_units)?;
        let rollout_s = rollout.totals.makespan_s;
        let t90 = rollout.stats.finish_s.quantile(0.9);
        let t50 = rollout.stats.finish_s.quantile(0.5);
        let generated: f64 = lengths.iter().map(|&l| l as f64).sum();
        let seq_tokens: Vec<f64> = lengths.iter().map(|&l| (l + self.prompt_len) as f64).collect();
        let total_tokens: f64 = seq_tokens.iter().sum();
        let budget = self.partial_budget();
        let partial = sw.serve(setup, &self.partial_requests(&lengths, budget), &mut times, 1, decode_units)?;
        let partial_rollout_s = partial.totals.makespan_s;
        // The scoring passes are not the rollout engine's steps.
        times.step_cpu_s = 0.0;
        notes.extend(rollout.notes.iter().filter(|n| n.starts_with("iteration times")).cloned());
        notes.push(format!(
            "rollout: {n} samples arrive at once on {} decode units of {} GPUs (one prefill unit of the same size computes the prompts, each prompt once for its {} samples); lengths log-normal, mean {}, sigma {}, cut at {}; every engine step adds {} ms of host time",
            decode_units, self.rollout.gpus, self.samples_per_prompt, self.response_len_mean, self.response_len_sigma, self.response_len_max, self.rollout.step_cpu_ms
        ));

        // Update: one simulated training step, times the optimizer steps.
        let spec = self.train_spec(setup, pools, &lengths)?;
        // The training pool is ranks 0..training: its own nodes when the
        // rollout GPUs are apart.
        let mut train_cluster = if pools.training < pools.total {
            unit_cluster(topology, &device, pools.training, setup.seed)
                .map_err(|e| input("workload.rollout_gpus", e))?
        } else {
            build_cluster(setup)?
        };
        spec.plan.deepep_rdma.cap_normal_kernels(&mut train_cluster, spec.plan.comm_sms);
        let mut graph = TaskGraph::new();
        let low = lower_training(&train_cluster, &spec, setup.seed, &mut graph).map_err(|e| model_failure(setup, e))?;
        let memory = training_memory(&spec, &train_cluster, &low);
        let (platform, graph, result) = simulate(train_cluster.platform.clone(), graph, options, observer)?;
        let step_s = result.end.as_secs_f64();
        let update_s = step_s * self.optimizer_steps as f64;
        notes.extend(low.notes.iter().cloned());
        notes.push(format!(
            "update: {} training step(s) of {} sequences of {} tokens (each sample one sequence at the mean length) on {} GPUs; trace and timeline files hold the first step",
            self.optimizer_steps, spec.global_batch, spec.seq_len, pools.training
        ));

        // Scoring: forward passes over every sample (prompt + response),
        // in the training layout at the update's rate or as prefill
        // iterations of the rollout unit.
        let passes = 1 + self.recompute_old_log_probs as u32 + self.reward_model as u32;
        let pass_s = match self.logprob_layout {
            LogprobLayout::Training => {
                // A forward pass is a third of a step's work (backward =
                // 2 forwards), a quarter with full recomputation.
                let forwards = if spec.recompute == Recompute::Full { 4.0 } else { 3.0 };
                let step_tokens = (spec.global_batch * spec.seq_len).max(1) as f64;
                let pass_s = step_s / forwards * total_tokens / step_tokens;
                notes.push(format!(
                    "scoring: {passes} forward pass(es) (reference{}{}) over {total_tokens:.0} tokens in the training layout on {} GPUs, each 1/{forwards:.0} of a simulated update step per {step_tokens:.0} tokens",
                    if self.recompute_old_log_probs { ", old policy" } else { "" },
                    if self.reward_model { ", reward model" } else { "" },
                    pools.training
                ));
                pass_s
            }
            LogprobLayout::Rollout => {
                // Tokens per GPU, or per tensor-parallel group when tp > 1
                // (as the prefill iteration counts them).
                let groups = (pools.training / self.rollout.tp.max(1)).max(1);
                let share = (total_tokens / groups as f64).ceil() as u64;
                let iterations = share.div_ceil(self.rollout.prefill_tokens_per_gpu).max(1);
                let tokens_per_gpu = share.div_ceil(iterations).max(1);
                let keys_per_token = seq_tokens.iter().map(|s| s * s / 2.0).sum::<f64>() / total_tokens.max(1.0);
                let iterations = iterations as f64;
                let pass_s = iterations * times.prefill_s(tokens_per_gpu, keys_per_token, 1.0);
                if let Some(e) = times.error.take() {
                    return Err(e);
                }
                notes.push(format!(
                    "scoring: {passes} forward pass(es) (reference{}{}) over {total_tokens:.0} tokens on {} GPUs, as {iterations:.0} prefill iterations of {tokens_per_gpu} tokens per GPU (per tensor-parallel group) in the rollout unit's layout",
                    if self.recompute_old_log_probs { ", old policy" } else { "" },
                    if self.reward_model { ", reward model" } else { "" },
                    pools.training
                ));
                pass_s
            }
        };
        let scoring_s = passes as f64 * pass_s;

        // Sync: the weights in the rollout layout, over the network.
        let decode_spec = sw.decode_spec(&model, 1, 1);
        let weights_per_gpu = inference_memory(&decode_spec).weights;
        let sync_s = match self.placement {
            RlPlacement::Colocated => {
                // Every GPU gathers its rollout-layout weights from the GPUs
                // that together hold one copy in the training layout.
                let group = self.rollout.gpus.max(spec.plan.tp * spec.plan.pp).min(pools.total);
                if group > 1 {
                    let s = CollectiveSpec {
                        op: CollectiveOp::AllGather,
                        group: (0..group).collect(),
                        bytes: weights_per_gpu,
                    };
                    notes.push(format!(
                        "sync (colocated): an all-gather of each GPU's {:.1} GiB of rollout-layout weights over {group} GPUs (one group simulated; the others run alike on their own GPUs)",
                        weights_per_gpu / (1u64 << 30) as f64
                    ));
                    collective_time_s(&cluster, &[s]).map_err(|e| model_failure(setup, e))?
                } else {
                    0.0
                }
            }
            RlPlacement::Disaggregated => {
                let specs: Vec<CollectiveSpec> = (0..pools.rollout)
                    .map(|i| CollectiveSpec {
                        op: CollectiveOp::SendRecv,
                        group: vec![i % pools.training.max(1), pools.training + i],
                        bytes: weights_per_gpu,
                    })
                    .collect();
                notes.push(format!(
                    "sync (disaggregated): each of the {} rollout GPUs receives its {:.1} GiB of weights from a training GPU, all at once over the modelled fabric",
                    pools.rollout,
                    weights_per_gpu / (1u64 << 30) as f64
                ));
                collective_time_s(&cluster, &specs).map_err(|e| model_failure(setup, e))?
            }
        };

        // The hand-over through host memory: per GPU, the training state
        // (weights, gradients, optimizer state) out before the rollout and
        // back for the log-probabilities and the update (colocated), the
        // policy weights out and back around the reference pass with the
        // reference weights in, and vLLM's weights slept to host after the
        // rollout and woken before the refit (colocated).
        let (offload_bytes, offload_s) = if self.host_offload {
            let rate = self
                .host_copy_gb_per_s
                .map(|g| g * 1e9)
                .unwrap_or(topology.pcie_bytes_per_s * topology.pcie_efficiency);
            let state = memory.weights + memory.gradients + memory.optimizer;
            let bytes = 3.0 * memory.weights
                + match self.placement {
                    RlPlacement::Colocated => 2.0 * state + 2.0 * weights_per_gpu,
                    RlPlacement::Disaggregated => 0.0,
                };
            notes.push(format!(
                "host offload: {:.1} GiB per GPU to and from host memory at {:.1} GB/s ({})",
                bytes / (1u64 << 30) as f64,
                rate / 1e9,
                match self.placement {
                    RlPlacement::Colocated => "training state out and in, policy and reference weights swapped, the rollout's weights slept and woken",
                    RlPlacement::Disaggregated => "policy and reference weights swapped",
                }
            ));
            (bytes, bytes / rate.max(1.0))
        } else {
            (0.0, 0.0)
        };
        let iteration_s = rollout_s + scoring_s + update_s + sync_s + offload_s;
        let forward = model.matmul_flops_per_token();
        let gib = (1u64 << 30) as f64;
        let mut m = Map::new();
        m.insert("model".into(), Value::from(model.name.clone()));
        m.insert("device".into(), Value::from(device.name.clone()));
        m.insert("placement".into(), Value::from(self.placement.as_str()));
        m.insert("gpus".into(), Value::from(pools.total));
        m.insert("rollout_gpus".into(), Value::from(pools.rollout));
        m.insert("training_gpus".into(), Value::from(pools.training));
        m.insert("samples".into(), Value::from(n));
        m.insert("iteration_time_s".into(), num(iteration_s));
        m.insert("rollout_s".into(), num(rollout_s));
        m.insert("scoring_s".into(), num(scoring_s));
        m.insert("update_s".into(), num(update_s));
        m.insert("sync_s".into(), num(sync_s));
        m.insert("offload_s".into(), num(offload_s));
        m.insert("offload_bytes_per_gpu".into(), num(offload_bytes));
        if self.placement == RlPlacement::Disaggregated {
            // One-step off-policy: iteration k+1's rollout runs during
            // iteration k's scoring and update.
            m.insert(
                "one_step_off_policy_iteration_time_s".into(),
                num(rollout_s.max(scoring_s + update_s + offload_s) + sync_s),
            );
        }
        m.insert("train_step_s".into(), num(step_s));
        m.insert("generated_tokens".into(), num(generated));
        m.insert("total_tokens".into(), num(total_tokens));
        m.insert("generated_tokens_per_s".into(), num(generated / iteration_s));
        m.insert("tokens_per_s_per_gpu".into(), num(total_tokens / iteration_s / pools.total as f64));
        m.insert("rollout_tokens_per_s_per_gpu".into(), num(generated / rollout_s / pools.rollout as f64));
        let mut l: Vec<f64> = lengths.iter().map(|&x| x as f64).collect();
        m.insert("response_len_mean_tokens".into(), num(generated / n.max(1) as f64));
        m.insert("response_len_p50_tokens".into(), num(quantile(&mut l, 0.5)));
        m.insert("response_len_p90_tokens".into(), num(quantile(&mut l, 0.9)));
        m.insert("response_len_max_tokens".into(), num(quantile(&mut l, 1.0)));
        m.insert("samples_at_cap".into(), Value::from(lengths.iter().filter(|&&x| x == self.response_len_max).count()));
        // The straggler tail: from the 90th percentile finish to the last.
        m.insert("rollout_p50_finish_s".into(), num(t50));
        m.insert("rollout_p90_finish_s".into(), num(t90));
        m.insert("rollout_tail_s".into(), num(rollout_s - t90));
        m.insert("rollout_tail_fraction".into(), num((rollout_s - t90) / rollout_s.max(1e-12)));
        let r = &rollout.totals;
        m.insert(
            "rollout_mean_batch_per_gpu".into(),
            num(if r.decode_busy_s > 0.0 { r.decode_batch_seconds / r.decode_busy_s } else { 0.0 }),
        );
        m.insert("partial_rollout_tokens".into(), Value::from(budget));
        m.insert("partial_rollout_s".into(), num(partial_rollout_s));
        m.insert("partial_rollout_saving_s".into(), num(rollout_s - partial_rollout_s));
        m.insert("partial_iteration_time_s".into(), num(iteration_s - rollout_s + partial_rollout_s));
        // Utilisation per phase: model FLOPs over the phase's GPUs' BF16 peak.
        let mfu = |flops: f64, gpus: u32, s: f64| flops / (gpus as f64 * s.max(1e-12) * peak);
        m.insert("rollout_mfu_bf16_peak".into(), num(mfu(forward * generated, pools.rollout, rollout_s)));
        m.insert(
            "scoring_mfu_bf16_peak".into(),
            num(mfu(passes as f64 * forward * total_tokens, pools.training, scoring_s)),
        );
        m.insert(
            "update_mfu_bf16_peak".into(),
            num(mfu(model.training_flops_per_token(spec.seq_len) * total_tokens, pools.training, update_s)),
        );
        // The share of the iteration each pool is busy.
        let (rollout_busy, training_busy) = match self.placement {
            RlPlacement::Colocated => {
                let b = (rollout_s + scoring_s + update_s + offload_s) / iteration_s;
                (b, b)
            }
            RlPlacement::Disaggregated => (rollout_s / iteration_s, (scoring_s + update_s + offload_s) / iteration_s),
        };
        m.insert("rollout_gpus_busy_fraction".into(), num(rollout_busy));
        m.insert("training_gpus_busy_fraction".into(), num(training_busy));
        m.insert("sync_weights_gib_per_gpu".into(), num(weights_per_gpu / gib));
        m.insert("train_memory_gib_per_gpu".into(), num(memory.total() / gib));
        m.insert("hbm_gib".into(), num(device.hbm_bytes() / gib));
        let fits = memory.total() <= device.hbm_bytes();
        m.insert("train_fits".into(), Value::from(fits));
        if !fits {
            notes.push(format!(
                "warning: the update does not fit: {:.1} GiB per GPU needed of {:.1} GiB HBM",
                memory.total() / gib,
                device.hbm_bytes() / gib
            ));
        }
        let price = device.price_per_gpu_hour(self.usd_per_gpu_hour);
        let gpu_hours = pools.total as f64 * iteration_s / 3600.0;
        m.insert("gpu_hours_per_iteration".into(), num(gpu_hours));
        m.insert("usd_per_iteration".into(), num(gpu_hours * price));
        notes.extend(device.price_note(self.usd_per_gpu_hour));
        notes.push("phases run one after another (on-policy GRPO); the colocated switch is the weight reshard and the host offload, not the KV cache's reallocation or the refit's per-tensor loading".into());
        Ok(Outcome {
            metrics: m,
            notes,
            graph,
            platform,
            result,
            figures: Vec::new(),
            files: Vec::new(),
            job_gpus: None,
        })
    }
}
