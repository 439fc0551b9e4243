//! The micro-workloads a scenario can name in `[workload] kind = ...`: what
//! each reads from the file, how it is checked, lowered, run and measured.

pub mod collective;
pub mod gemm;
pub mod inference;
pub mod moe_comm;
pub mod op;
pub mod pipeline;
pub mod roofline;
pub mod serving;
pub mod traces;
pub mod training;

use moesim_models::{Cluster, DeviceSpec, ModelError};
use moesim_sim::{EngineOptions, Observer, Platform, RunResult, SimTime, TaskGraph};
use moesim_topologies::{ClusterSpec, ConfigProblem};
use serde_json::{Map, Value};

use crate::scenario::Scenario;

/// The `kind` names a scenario may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Collective,
    MoeDispatch,
    MoeCombine,
    Gemm,
    Pipeline,
    Training,
    Op,
    Prefill,
    Decode,
    Serving,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 10] = [
        WorkloadKind::Collective,
        WorkloadKind::MoeDispatch,
        WorkloadKind::MoeCombine,
        WorkloadKind::Gemm,
        WorkloadKind::Pipeline,
        WorkloadKind::Training,
        WorkloadKind::Op,
        WorkloadKind::Prefill,
        WorkloadKind::Decode,
        WorkloadKind::Serving,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Collective => "collective",
            WorkloadKind::MoeDispatch => "moe-dispatch",
            WorkloadKind::MoeCombine => "moe-combine",
            WorkloadKind::Gemm => "gemm",
            WorkloadKind::Pipeline => "pipeline",
            WorkloadKind::Training => "training",
            WorkloadKind::Op => "op",
            WorkloadKind::Prefill => "prefill",
            WorkloadKind::Decode => "decode",
            WorkloadKind::Serving => "serving",
        }
    }
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.name()).collect()
    }
    pub fn from_name(s: &str) -> Option<WorkloadKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A parsed `[workload]` table.
#[derive(Debug, Clone)]
pub enum Workload {
    Collective(collective::CollectiveWorkload),
    MoeComm(moe_comm::MoeCommWorkload),
    Gemm(gemm::GemmWorkload),
    Pipeline(pipeline::PipelineWorkload),
    Training(training::TrainingWorkload),
    Op(op::OpWorkload),
    Iteration(inference::IterationWorkload),
    Serving(Box<serving::ServingWorkload>),
}

/// What the scenario resolved besides the workload, for the workload's checks.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `None` when the `[hardware]` table had problems (already reported).
    pub device: Option<&'a DeviceSpec>,
    pub topology: Option<&'a ClusterSpec>,
    /// The file has a `[topology]` table (which may have failed to resolve).
    pub topology_given: bool,
    pub model: Option<&'a moesim_models::ModelConfig>,
    pub model_given: bool,
    pub parallel: Option<&'a crate::scenario::ParallelTable>,
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Record per-link rate series (for trace counter tracks).
    pub record_link_series: bool,
    /// Draw the workload's figures (PNG + SVG) for `--out`.
    pub figures: bool,
}

/// A finished run: the workload's metrics and everything the reports need.
pub struct Outcome {
    /// Workload metrics, keys with units (`time_us`, `busbw_gb_per_s`, ...).
    pub metrics: Map<String, Value>,
    /// Assumptions worth printing (e.g. representative ranks).
    pub notes: Vec<String>,
    pub graph: TaskGraph,
    pub platform: Platform,
    pub result: RunResult,
    /// Plots to write beside the other outputs (`NAME.png`, `NAME.svg`).
    pub figures: Vec<moesim_reports::plot::RenderedFigure>,
    /// Further files for `--out` (`(name, bytes)`, e.g. a per-request CSV).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why a run did not produce an outcome.
#[derive(Debug)]
pub enum RunFailure {
    /// A problem with the input, located in the scenario.
    Input(Vec<crate::diagnostics::Diagnostic>),
    /// The simulation itself failed.
    Failed(String),
}

impl Workload {
    /// Problems found without building anything, keys relative to the file.
    /// `device` is `None` when the `[hardware]` table had problems (already
    /// reported); `topology` is the resolved cluster; `topology_given` says whether the
    /// file has a `[topology]` table (which may have failed to resolve).
    pub fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let device = cx.device;
        let topology = match (cx.topology, cx.topology_given) {
            (Some(t), _) => TopologyState::Resolved(t),
            (None, true) => TopologyState::Broken,
            (None, false) => TopologyState::Missing,
        };
        let mut out = match self {
            Workload::Collective(w) => w.problems(topology),
            Workload::MoeComm(w) => w.problems(topology),
            Workload::Gemm(w) => w.problems(device),
            Workload::Pipeline(w) => w.problems(),
            Workload::Training(w) => w.problems(device, topology, cx.model, cx.model_given, cx.parallel),
            Workload::Op(w) => w.problems(device),
            Workload::Iteration(w) => w.problems(device, topology, cx.model, cx.model_given, cx.parallel),
            Workload::Serving(w) => w.problems(device, topology, cx.model, cx.model_given, cx.parallel.is_some()),
        };
        if let (Some(d), Some((key, sms))) = (device, self.sm_driven_all_to_all(cx.parallel)) {
            if d.comm_uses_compute_units && sms == 0 {
                out.push(problem(
                    key,
                    format!(
                        "expected at least 1: DeepEP's normal all-to-all kernels run on {}'s SMs (DeepSeek-V3 gave them 20)",
                        d.name
                    ),
                ));
            }
        }
        if !self.uses_model() {
            if cx.model_given {
                out.push(problem(
                    "model",
                    format!("not used by kind \"{}\"; remove the [model] table", self.kind_name()),
                ));
            }
            if cx.parallel.is_some() {
                out.push(problem(
                    "parallel",
                    format!("not used by kind \"{}\"; remove the [parallel] table", self.kind_name()),
                ));
            }
        }
        out
    }

    /// The key and value of the SMs an SM-driven (DeepEP normal) all-to-all
    /// of this workload holds, if it runs one.
    fn sm_driven_all_to_all(&self, parallel: Option<&crate::scenario::ParallelTable>) -> Option<(&'static str, u32)> {
        match self {
            Workload::MoeComm(w) if w.kernel == moe_comm::KernelName::Normal => Some(("workload.comm_sms", w.comm_sms)),
            Workload::Training(_) | Workload::Iteration(inference::IterationWorkload::Prefill(_)) => {
                parallel.filter(|p| p.ep > 1).map(|p| ("parallel.comm_sms", p.comm_sms))
            }
            Workload::Serving(w) => Some(("workload.prefill.comm_sms", w.prefill.comm_sms)),
            _ => None,
        }
    }

    /// Whether the workload reads `[model]` and `[parallel]`.
    pub fn uses_model(&self) -> bool {
        matches!(self, Workload::Training(_) | Workload::Iteration(_) | Workload::Serving(_))
    }

    pub fn kind_name(&self) -> &str {
        match self {
            Workload::Collective(_) => "collective",
            Workload::MoeComm(w) => &w.kind,
            Workload::Gemm(_) => "gemm",
            Workload::Pipeline(_) => "pipeline",
            Workload::Training(_) => "training",
            Workload::Op(_) => "op",
            Workload::Iteration(inference::IterationWorkload::Prefill(_)) => "prefill",
            Workload::Iteration(inference::IterationWorkload::Decode(_)) => "decode",
            Workload::Serving(_) => "serving",
        }
    }
}

/// Builds the scenario's cluster (it must have a topology).
pub fn build_cluster(scenario: &Scenario) -> Result<Cluster, RunFailure> {
    let Some(spec) = &scenario.topology else {
        return Err(RunFailure::Input(vec![scenario
            .source
            .at_key("topology", "this workload needs a [topology] table, e.g. preset = \"h800-cluster\"")]));
    };
    let topology = moesim_topologies::build(spec)
        .map_err(|e| RunFailure::Input(vec![scenario.source.at_key("topology", e.to_string())]))?;
    Ok(Cluster::new(topology, scenario.device.clone(), scenario.seed))
}

/// Runs a scenario's workload to completion.
pub fn run(scenario: &Scenario, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
    match &scenario.workload {
        Workload::Collective(w) => w.run(scenario, options, observer),
        Workload::MoeComm(w) => w.run(scenario, options, observer),
        Workload::Gemm(w) => w.run(scenario, options, observer),
        Workload::Pipeline(w) => w.run(scenario, options, observer),
        Workload::Training(w) => w.run(scenario, options, observer),
        Workload::Op(w) => w.run(scenario, options, observer),
        Workload::Iteration(w) => w.run(scenario, options, observer),
        Workload::Serving(w) => w.run(scenario, options, observer),
    }
}

/// Runs a lowered graph on a platform.
pub fn simulate(
    platform: Platform,
    graph: TaskGraph,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<(Platform, TaskGraph, RunResult), RunFailure> {
    let engine = EngineOptions { record_link_series: options.record_link_series };
    let result =
        moesim_sim::run(&platform, &graph, &engine, observer).map_err(|e| RunFailure::Failed(e.to_string()))?;
    Ok((platform, graph, result))
}

pub(crate) fn model_failure(scenario: &Scenario, err: ModelError) -> RunFailure {
    RunFailure::Input(scenario.diagnose(&err))
}

pub(crate) fn positive_time(end: SimTime) -> f64 {
    end.as_secs_f64().max(1e-12)
}

pub(crate) fn problem(key: &str, message: String) -> ConfigProblem {
    ConfigProblem { key: key.to_owned(), message }
}

/// Checks a routing `workload.skew` (a Zipf exponent, 0 = balanced).
pub(crate) fn check_skew(skew: f64, out: &mut Vec<ConfigProblem>) {
    if !(skew.is_finite() && skew >= 0.0) {
        out.push(problem("workload.skew", format!("expected a Zipf exponent >= 0, found {skew}")));
    }
}

/// Checks the keys every model workload prices and runs with: the price
/// per GPU-hour and a number format the device can run.
pub(crate) fn check_price_and_precision(
    usd_per_gpu_hour: f64,
    precision: moesim_models::Dtype,
    device: Option<&DeviceSpec>,
    out: &mut Vec<ConfigProblem>,
) {
    if !(usd_per_gpu_hour.is_finite() && usd_per_gpu_hour >= 0.0) {
        out.push(problem("workload.usd_per_gpu_hour", format!("expected a price >= 0, found {usd_per_gpu_hour}")));
    }
    if let Some(Err(e)) = device.map(|d| d.tensor_flops_per_s(precision)) {
        out.push(problem("workload.precision", e.to_string()));
    }
}

/// The GPUs a resolved topology has.
pub(crate) fn cluster_gpus(spec: &ClusterSpec) -> u64 {
    spec.nodes as u64 * spec.gpus_per_node as u64
}

/// The scenario's topology as far as the workload checks are concerned.
#[derive(Debug, Clone, Copy)]
pub enum TopologyState<'a> {
    Resolved(&'a ClusterSpec),
    /// The table is there but has problems of its own (already reported).
    Broken,
    Missing,
}

/// A problem if `ranks` does not fit the topology (or there is none).
pub(crate) fn check_ranks(ranks: u32, topology: TopologyState, out: &mut Vec<ConfigProblem>) {
    match topology {
        TopologyState::Missing => out.push(problem("topology", "this workload needs a [topology] table".into())),
        TopologyState::Resolved(t) if ranks as u64 > cluster_gpus(t) => out.push(problem(
            "workload.ranks",
            format!(
                "expected at most {} (the topology's GPUs: {} nodes x {}), found {ranks}",
                cluster_gpus(t),
                t.nodes,
                t.gpus_per_node
            ),
        )),
        _ => {}
    }
}

/// Derived counts of a model (parameters, KV cache, FLOPs), keys with units.
pub fn model_summary(m: &moesim_models::ModelConfig) -> Map<String, Value> {
    let p = m.params();
    let mut out = Map::new();
    out.insert("total_params".into(), num(p.total));
    out.insert("active_params".into(), num(p.active));
    out.insert("active_params_incl_embedding".into(), num(p.active_incl_embedding));
    out.insert("routed_expert_params".into(), num(p.routed_experts));
    out.insert("mtp_params".into(), num(p.mtp));
    out.insert("kv_cache_bytes_per_token".into(), num(m.kv_cache_bytes_per_token(2.0)));
    out.insert("training_flops_per_token_seq4096".into(), num(m.training_flops_per_token(4096)));
    out
}

/// A JSON number rounded to 9 significant digits (stable, readable text).
pub fn num(v: f64) -> Value {
    if v == 0.0 || !v.is_finite() {
        return Value::from(v);
    }
    let digits = 9 - (v.abs().log10().floor() as i32) - 1;
    let f = 10f64.powi(digits.clamp(-300, 300));
    let rounded = (v * f).round() / f;
    if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
        Value::from(rounded as i64)
    } else {
        Value::from(rounded)
    }
}
