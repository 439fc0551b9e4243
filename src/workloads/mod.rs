//! The micro-workloads a scenario can name in `[workload] kind = ...`: what
//! each reads from the file, how it is checked, lowered, run and measured.

pub mod collective;
pub mod gemm;
pub mod grpo;
pub mod inference;
pub mod local;
pub mod moe_comm;
pub mod op;
pub mod pipeline;
pub mod power;
pub mod registry;
pub mod replay;
pub mod roofline;
pub mod serving;
pub mod traces;
pub mod training;

use std::fmt;

use moesim_models::{Cluster, DeviceSpec, ModelError};
use moesim_sim::{EngineOptions, Observer, Platform, RunResult, SimTime, TaskGraph};
use moesim_topologies::{ClusterSpec, ConfigProblem};
use serde_json::{Map, Value};

use crate::setup::{ParallelTable, Setup};

/// Draws a workload's chart (PNG and SVG) with the caption that names its
/// device, topology, model and plan.
pub fn draw(
    setup: &Setup,
    chart: moesim_reports::plot::XyChart,
) -> Result<moesim_reports::plot::RenderedFigure, RunFailure> {
    let chart = chart.with_caption(crate::provenance::caption(setup));
    moesim_reports::plot::render(&chart).map_err(|e| RunFailure::Failed(format!("drawing {}: {e}", chart.name)))
}

/// The figures of a run whose workload drew none of its own (collectives,
/// MoE dispatch and combine, inference iterations, single ops, Chakra
/// replays): the link utilisation over time when links carried traffic,
/// and a timeline of what each rank computed and communicated (at most 32
/// ranks, the first by id).
pub fn default_figures(
    setup: &Setup,
    kind: &str,
    outcome: &Outcome,
) -> Result<Vec<moesim_reports::plot::RenderedFigure>, RunFailure> {
    let mut out = Vec::new();
    let (graph, result, platform) = (&outcome.graph, &outcome.result, &outcome.platform);
    if graph.task_count() == 0 {
        return Ok(out);
    }
    // Physical links only: the engine records no series for the per-GPU SM
    // send and receive links that bound DeepEP's kernels (a modelling
    // construct).
    let series = &result.link_series;
    if series.iter().any(|s| !s.is_empty()) {
        let links: Vec<(String, f64)> = platform.links.iter().map(|l| (l.name.clone(), l.bytes_per_s)).collect();
        let bytes: Vec<f64> = result.links.iter().map(|l| l.bytes).collect();
        let used = series.iter().filter(|s| !s.is_empty()).count();
        let title = format!(
            "{}: link utilisation over {:.1} us ({used} physical links carried traffic)",
            setup.name,
            result.end.as_us_f64()
        );
        let chart = moesim_reports::activity::link_utilisation(&links, series, &bytes, result.end.as_ps(), 4, &title);
        out.push(draw(setup, chart)?);
    }
    let mut ranks: Vec<u32> = graph.streams().iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let total = ranks.len();
    ranks.truncate(32);
    let rows: Vec<(u32, String)> = ranks.iter().map(|&r| (r, format!("rank {r}"))).collect();
    let shown = if total > rows.len() { format!(", ranks 0.. of {total}") } else { String::new() };
    let title = format!("{} ({kind}): what each rank ran, {:.1} us{shown}", setup.name, result.end.as_us_f64());
    let chart = moesim_reports::activity::timeline(graph, result, &rows, &title);
    out.push(draw(setup, chart)?);
    Ok(out)
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
    pub parallel: Option<&'a ParallelTable>,
}

impl Context<'_> {
    /// The topology as far as the workload checks are concerned.
    pub fn topology_state(&self) -> TopologyState<'_> {
        match (self.topology, self.topology_given) {
            (Some(t), _) => TopologyState::Resolved(t),
            (None, true) => TopologyState::Broken,
            (None, false) => TopologyState::Missing,
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Record per-link rate series (for trace counter tracks).
    pub record_link_series: bool,
    /// Draw the workload's figures (PNG + SVG) for `--out`.
    pub figures: bool,
    /// Refuse a run whose estimated memory exceeds this many bytes
    /// (`None`: no limit).
    pub max_memory_bytes: Option<f64>,
    /// Where a workload streams a large file during the run (beside `--out`,
    /// so it moves into place without a copy; `None`: the system's temporary
    /// folder). See [`SpooledFile`].
    pub spool_dir: Option<std::path::PathBuf>,
    /// Relative tolerance on flows' finish times (0: exact), set by a
    /// workload's `flow_finish_tolerance` key.
    pub flow_finish_tolerance: f64,
}

impl RunOptions {
    /// The engine's options for this run.
    pub fn engine(&self) -> EngineOptions {
        EngineOptions {
            record_link_series: self.record_link_series,
            flow_finish_tolerance: self.flow_finish_tolerance,
            ..EngineOptions::default()
        }
    }
}

/// A further `--out` file: its bytes, or a file a workload streamed to disk
/// during the run ([`SpooledFile`]), moved into the output folder.
#[derive(Debug)]
pub enum OutFile {
    Bytes(Vec<u8>),
    Spooled(SpooledFile),
}

impl From<Vec<u8>> for OutFile {
    fn from(bytes: Vec<u8>) -> OutFile {
        OutFile::Bytes(bytes)
    }
}

/// A file written during a run, removed when dropped unless it was moved
/// into an output folder first ([`SpooledFile::move_to`]).
#[derive(Debug)]
pub struct SpooledFile {
    path: std::path::PathBuf,
}

impl SpooledFile {
    /// Creates `name` (with the process id) in `dir` (created if need be) or
    /// in the system's temporary folder.
    pub fn create(dir: Option<&std::path::Path>, name: &str) -> std::io::Result<(SpooledFile, std::fs::File)> {
        let dir = dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.{name}", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Ok((SpooledFile { path }, file))
    }

    /// Moves the file to `to` (renamed, or copied across file systems).
    pub fn move_to(self, to: &std::path::Path) -> std::io::Result<()> {
        if std::fs::rename(&self.path, to).is_err() {
            std::fs::copy(&self.path, to)?;
        }
        Ok(())
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            // Only when empty: a spool folder beside `--out` holds nothing else.
            let _ = std::fs::remove_dir(dir);
        }
    }
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
    /// Further files for `--out` (`(name, bytes or a spooled file)`, e.g. a
    /// per-request CSV).
    pub files: Vec<(String, OutFile)>,
    /// The GPUs of the job, ranks `0..n` (`None`: every device of the
    /// platform): a GPU of the job without tasks is mirrored by a simulated
    /// one; one outside it is not simulated. Set by [`Workload::job_gpus`].
    pub job_gpus: Option<u32>,
}

/// Why a run did not produce an outcome.
#[derive(Debug)]
pub enum RunFailure {
    /// A problem with the input, located in the scenario.
    Input(Vec<crate::diagnostics::Diagnostic>),
    /// The simulation itself failed.
    Failed(String),
}

/// A parsed `[workload]` table: one kind's checks, run and name. Each kind
/// implements it in its own file and is registered by one line in
/// [`registry::KINDS`].
pub trait Workload: fmt::Debug + Send + Sync {
    /// The `kind` as written (`"collective"`, `"moe-dispatch"`, ...).
    fn kind_name(&self) -> &str;

    /// Problems found without building anything, keys relative to the file
    /// (`workload.ranks`); the checks every kind shares are added by
    /// [`problems`].
    fn problems(&self, cx: Context) -> Vec<ConfigProblem>;

    /// Runs the workload to completion on the scenario's setting.
    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure>;

    /// How many GPUs (ranks `0..n`) the job spans, when fewer than the
    /// cluster's: the others are idle, not mirrored (`resources.csv`).
    fn job_gpus(&self) -> Option<u32> {
        None
    }

    /// Whether the workload reads `[model]` and `[parallel]`.
    fn uses_model(&self) -> bool {
        false
    }

    /// The key and value of the SMs an SM-driven (DeepEP normal) all-to-all
    /// of this workload holds, if it runs one.
    fn sm_driven_all_to_all(&self, _parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        None
    }

    /// The memory the run will need, estimated from its keys before anything
    /// is allocated (beyond the topology's route tables, which
    /// [`footprints`] adds for every kind); `None` where it is small.
    fn footprint(&self, _setup: &Setup) -> Option<Footprint> {
        None
    }

    /// The serving workload, if this is one (`moesim plan` searches only
    /// serving deployments).
    fn as_serving(&self) -> Option<&serving::ServingWorkload> {
        None
    }
}

/// A run's memory estimated before anything is allocated, and the key that
/// drives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    pub bytes: f64,
    /// The key a user would change to shrink it (`workload.rate_per_s`).
    pub key: String,
    /// What is counted (`6.2e6 requests`).
    pub what: String,
}

/// Engine memory per task (graph, span, events), measured on the default
/// training step: 940,626 tasks in 146 MB.
pub const BYTES_PER_TASK: f64 = 160.0;
/// Memory per flow (its route, the graph's flow, the flow solver's state
/// with its copy of the route in run order), measured on the multi-plane
/// fat-tree all-to-all: peak RSS 2,048 -> 4,096 ranks (4.19M -> 16.8M
/// flows) 0.57 -> 2.26 GB, less the route tables' growth, is 125 bytes per
/// flow.
pub const BYTES_PER_FLOW: f64 = 125.0;
/// Memory per weighted flow of a direct exchange grouped by node pair
/// (`workload.flow_grouping = "node-pair"`: shorter routes, no NVLink hops,
/// a weight each), measured on the multi-plane fat-tree all-to-all: peak
/// RSS over flows is 118 / 108 / 105 bytes at 4,096 / 8,192 / 16,384 GPUs
/// (2.15M / 8.50M / 33.8M flows), route tables included (the estimate adds
/// them again: it errs high).
pub const BYTES_PER_GROUPED_FLOW: f64 = 120.0;
/// Route-table memory per pair of GPUs, measured on an 8,192-GPU
/// `h800-cluster`: 585 MB.
pub const BYTES_PER_GPU_PAIR: f64 = 9.0;

/// Everything a run is estimated to need: the topology's route tables and
/// the workload's own footprint.
pub fn footprints(workload: &dyn Workload, setup: &Setup) -> Vec<Footprint> {
    let mut out = Vec::new();
    if let Some(t) = &setup.topology {
        let gpus = cluster_gpus(t) as f64;
        out.push(Footprint {
            bytes: gpus * gpus * BYTES_PER_GPU_PAIR,
            key: "topology.nodes".into(),
            what: format!("route tables of {gpus} GPUs"),
        });
    }
    out.extend(workload.footprint(setup));
    out
}

/// An input error if the estimated memory exceeds `limit_bytes`, naming the
/// key that drives the largest part.
pub fn check_memory(workload: &dyn Workload, setup: &Setup, limit_bytes: f64) -> Result<(), RunFailure> {
    let parts = footprints(workload, setup);
    let total: f64 = parts.iter().map(|f| f.bytes).sum();
    if total <= limit_bytes {
        return Ok(());
    }
    let top = parts.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes)).expect("a total above the limit has parts");
    Err(RunFailure::Input(vec![setup.source.at_key(
        &top.key,
        format!(
            "the run would need about {:.1} GiB ({}: {:.1} GiB), more than the {:.1} GiB allowed (--max-memory-gib); \
             shrink {} or raise the limit",
            total / GIB,
            top.what,
            top.bytes / GIB,
            limit_bytes / GIB,
            top.key
        ),
    )]))
}

const GIB: f64 = (1u64 << 30) as f64;

/// The default memory limit: half the machine's memory (`/proc/meminfo`),
/// else 8 GiB.
pub fn default_memory_limit_bytes() -> f64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    });
    total_kib.map_or(8.0 * GIB, |k| k * 1024.0 / 2.0)
}

/// A workload's problems: its own, then the checks every kind shares (SMs
/// for an SM-driven all-to-all, no `[model]`/`[parallel]` where unused).
pub fn problems(workload: &dyn Workload, cx: Context) -> Vec<ConfigProblem> {
    let mut out = workload.problems(cx);
    if let (Some(d), Some((key, sms))) = (cx.device, workload.sm_driven_all_to_all(cx.parallel)) {
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
    if !workload.uses_model() {
        if cx.model_given {
            out.push(problem(
                "model",
                format!("not used by kind \"{}\"; remove the [model] table", workload.kind_name()),
            ));
        }
        if cx.parallel.is_some() {
            out.push(problem(
                "parallel",
                format!("not used by kind \"{}\"; remove the [parallel] table", workload.kind_name()),
            ));
        }
    }
    out
}

/// Builds the scenario's cluster (it must have a topology).
pub fn build_cluster(setup: &Setup) -> Result<Cluster, RunFailure> {
    let Some(spec) = &setup.topology else {
        return Err(RunFailure::Input(vec![setup
            .source
            .at_key("topology", "this workload needs a [topology] table, e.g. preset = \"h800-cluster\"")]));
    };
    let topology = moesim_topologies::build(spec)
        .map_err(|e| RunFailure::Input(vec![setup.source.at_key("topology", e.to_string())]))?;
    Ok(Cluster::new(topology, setup.device.clone(), setup.seed))
}

/// Runs a lowered graph on a platform.
pub fn simulate(
    platform: Platform,
    graph: TaskGraph,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<(Platform, TaskGraph, RunResult), RunFailure> {
    let engine = options.engine();
    let result = moesim_sim::run(&platform, &graph, &engine, observer).map_err(|e| RunFailure::Failed(explain(&e)))?;
    Ok((platform, graph, result))
}

/// An engine error in words, with the scenario keys that set the resource
/// a stalled run waits on.
pub(crate) fn explain(e: &moesim_sim::SimError) -> String {
    let keys = match e {
        moesim_sim::SimError::Stalled { resource_kind: Some(kind), .. } => match *kind {
            "nvlink" => "topology.nvlink_gb_per_s and topology.nvlink_efficiency",
            "infiniband" => "topology.ib_gbit_per_s and topology.ib_efficiency",
            "pcie" => "topology.pcie_gb_per_s and topology.pcie_efficiency",
            "sm-port" => "parallel.comm_sms (workload.comm_sms for an exchange) and hardware.comm_gb_per_s_per_sm",
            "device" => "hardware.hbm_tb_per_s and the hardware's compute rates",
            _ => "",
        },
        _ => "",
    };
    if keys.is_empty() {
        e.to_string()
    } else {
        format!("{e}; its rate is set by {keys}")
    }
}

pub(crate) fn model_failure(setup: &Setup, err: ModelError) -> RunFailure {
    RunFailure::Input(setup.diagnose(&err))
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
    usd_per_gpu_hour: Option<f64>,
    precision: moesim_models::Dtype,
    device: Option<&DeviceSpec>,
    out: &mut Vec<ConfigProblem>,
) {
    if let Some(usd) = usd_per_gpu_hour.filter(|u| !(u.is_finite() && *u >= 0.0)) {
        out.push(problem("workload.usd_per_gpu_hour", format!("expected a price >= 0, found {usd}")));
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
    if v == 0.0 {
        return Value::from(0.0); // never `-0.0`
    }
    if !v.is_finite() {
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

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn numbers_are_rounded_and_never_negative_zero() {
        assert_eq!(num(-0.0).to_string(), "0.0");
        assert_eq!(num(0.0).to_string(), "0.0");
        assert_eq!(num(1.234567891234).to_string(), "1.23456789");
        assert_eq!(num(-1e-310).to_string(), "0");
        assert_eq!(num(42.0).to_string(), "42");
    }
}

#[cfg(test)]
mod stall_tests {
    use moesim_sim::SimError;

    #[test]
    fn a_stall_names_the_keys_that_set_the_resource_it_waits_on() {
        let stall = |kind| SimError::Stalled {
            at_us: 1.0,
            unfinished: 1,
            example: "send".into(),
            waiting_on: "link `a->b`".into(),
            resource_kind: kind,
        };
        assert!(super::explain(&stall(Some("infiniband")))
            .ends_with("set by topology.ib_gbit_per_s and topology.ib_efficiency"));
        assert!(super::explain(&stall(Some("sm-port"))).contains("parallel.comm_sms"));
        assert_eq!(super::explain(&stall(None)), stall(None).to_string());
    }
}
