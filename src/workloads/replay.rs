//! `kind = "replay"`: real traces (one Kineto JSON file per rank, plain or
//! gzip) rebuilt and re-run (`crate::replay`), on the trace's own device or
//! a what-if: `[hardware] device` is the target, `[topology]` (if any) gives
//! the target's NVLink and InfiniBand rates, `[parallel] comm_sms` (if any)
//! the SMs DeepEP kernels hold. The source device is the one the trace
//! names in `deviceProperties`, or `workload.source_device`.
//!
//! Metrics: `trace_span_ms` (measured GPU span, longest rank), `span_ms`
//! (simulated), `kernels`, `unplaced_kernels`, the shares of GPU time
//! re-costed by shape, by class or kept, and compute / communication /
//! overlap / DeepEP figures for the trace (`trace_*`) and the replay.
//! `--out` adds `kernel_classes.csv` and `replay_vs_trace.png/.svg`.

use std::path::{Path, PathBuf};

use moesim_models::DeviceSpec;
use moesim_sim::{EngineOptions, Observer};
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::Value;

use super::{problem, Context, Outcome, RunFailure, RunOptions, Workload};
use crate::diagnostics::{Diagnostic, Location};
use crate::replay::recost::{Hardware, WhatIf};
use crate::replay::{self, ReplayError, ReplayFailure};
use crate::setup::{ParallelTable, Setup};

/// The `[workload]` table of a replay.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayWorkload {
    pub kind: String,
    /// One trace per rank (paths relative to the scenario file).
    pub traces: Vec<String>,
    /// The device the traces ran on, when `deviceProperties` does not name a
    /// preset (a preset name or a device file).
    pub source_device: Option<String>,
    /// Keep the waits before ops that no edge explains (measured delays);
    /// `false` replays the reconstructed graph alone (how much of the trace
    /// the graph explains).
    #[serde(default = "yes")]
    pub keep_unexplained_waits: bool,
    /// Chakra traces: the algorithm their collectives run with on the
    /// cluster (`ring` or `direct`).
    #[serde(default = "ring")]
    pub algorithm: String,
    /// Chakra traces: each collective split into this many pieces run one
    /// after another (ASTRA-sim's `preferred-dataset-splits` with one chunk
    /// in flight).
    #[serde(default = "one")]
    pub collective_chunks: u32,
}

fn ring() -> String {
    "ring".into()
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl ReplayWorkload {
    /// The trace paths, found as [`crate::files::data_path`] says (beside
    /// the scenario when it is a file, `$MOESIM_DATA` for the shared data).
    fn paths(&self, origin: &str) -> Vec<PathBuf> {
        let base = Path::new(origin).parent().filter(|p| !p.as_os_str().is_empty() && p.is_dir());
        self.traces.iter().map(|t| crate::files::data_path(t, base)).collect()
    }
}

pub(crate) fn replay_diagnostic(e: ReplayError) -> Diagnostic {
    Diagnostic { origin: e.origin, location: Location::Unknown, key: None, message: e.message }
}

impl Workload for ReplayWorkload {
    fn kind_name(&self) -> &str {
        "replay"
    }

    fn uses_model(&self) -> bool {
        // Reads `[parallel] comm_sms`; a `[model]` is flagged in `problems`.
        true
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.traces.is_empty() {
            out.push(problem("workload.traces", "expected one trace file per rank, found none".into()));
        }
        if cx.model_given {
            out.push(problem("model", "not used by kind \"replay\" (the traces are the model); remove it".into()));
        }
        if moesim_models::network::collectives::algorithm(&self.algorithm).is_err() {
            out.push(problem(
                "workload.algorithm",
                format!(
                    "expected one of {}, found \"{}\"",
                    moesim_models::network::collectives::ALGORITHMS.join(", "),
                    self.algorithm
                ),
            ));
        }
        if !(1..=1024).contains(&self.collective_chunks) {
            out.push(problem(
                "workload.collective_chunks",
                format!("expected an integer from 1 to 1024, found {}", self.collective_chunks),
            ));
        }
        let chakra = self.traces.iter().filter(|t| t.ends_with(".et")).count();
        if chakra > 0 && chakra < self.traces.len() {
            out.push(problem(
                "workload.traces",
                "expected all Kineto traces or all Chakra traces (.et), found a mix".into(),
            ));
        }
        if let Some(name) = &self.source_device {
            if DeviceSpec::preset(name).is_err() && !Path::new(name).exists() {
                out.push(problem(
                    "workload.source_device",
                    format!(
                        "expected a preset ({}) or a device file, found \"{name}\"",
                        DeviceSpec::preset_names().join(", ")
                    ),
                ));
            }
        }
        out
    }

    fn sm_driven_all_to_all(&self, parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        parallel.map(|p| ("parallel.comm_sms", p.comm_sms))
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let paths = self.paths(&setup.source.origin);
        if paths.iter().any(|p| p.extension().is_some_and(|e| e == "et")) {
            return self.run_chakra(&paths, setup, options, observer);
        }
        let mut ranks = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            ranks.push(replay::import(p, i as u32).map_err(|e| RunFailure::Input(vec![replay_diagnostic(e)]))?);
        }
        if !self.keep_unexplained_waits {
            for r in &mut ranks {
                for op in &mut r.ops {
                    op.residual_wait_ns = 0;
                }
                r.stats.residual_waits = 0;
                r.stats.residual_wait_ns = 0;
            }
        }
        let mut seen: Vec<u32> = ranks.iter().map(|r| r.rank).collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != ranks.len() {
            // Traces that do not say distinct ranks take their file order.
            for (i, r) in ranks.iter_mut().enumerate() {
                r.rank = i as u32;
            }
        }
        let mut notes = Vec::new();
        let traced = ranks.iter().find_map(|r| r.device_name.clone());
        let source = match &self.source_device {
            Some(name) => Some(load_device(name, setup)?),
            None => traced.as_deref().and_then(replay::device_preset_of).and_then(|p| DeviceSpec::preset(p).ok()),
        };
        let source = match source {
            Some(d) => d,
            None => {
                notes.push(format!(
                    "the trace's device ({}) has no preset: replayed with measured times; set workload.source_device \
                     to re-cost it for a what-if",
                    traced.as_deref().unwrap_or("not named")
                ));
                setup.device.clone()
            }
        };
        let target = &setup.device;
        let src = Hardware {
            nic_bytes_per_s: source.nic_gbit_per_s * 1e9 / 8.0,
            nvlink_bytes_per_s: source.nvlink_gb_per_s * 1e9,
            device: source,
            comm_sms: None,
        };
        let tgt = Hardware {
            device: target.clone(),
            nic_bytes_per_s: setup.topology.as_ref().map_or(target.nic_gbit_per_s * 1e9 / 8.0, |t| t.ib_bytes_per_s),
            nvlink_bytes_per_s: setup.topology.as_ref().map_or(target.nvlink_gb_per_s * 1e9, |t| t.nvlink_bytes_per_s),
            comm_sms: setup.parallel.as_ref().map(|p| p.comm_sms),
        };
        let whatif = WhatIf { source: src, target: tgt };
        let network = if whatif.is_identity() { None } else { network_model(setup, &whatif)? };
        let engine = EngineOptions { record_link_series: options.record_link_series, ..EngineOptions::default() };
        let run = replay::replay(&ranks, &whatif, network.as_ref(), &engine, observer).map_err(|f| match f {
            ReplayFailure::Input(e) => RunFailure::Input(vec![replay_diagnostic(e)]),
            ReplayFailure::Failed(m) => RunFailure::Failed(m),
        })?;
        notes.extend(run.notes);
        let mut metrics = run.metrics;
        for v in metrics.values_mut() {
            round_numbers(v);
        }
        metrics.insert("traces".into(), Value::from(paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()));
        let mut files = Vec::new();
        let mut figures = Vec::new();
        if options.figures {
            let mut csv = String::from("class,kernels,measured_ms,simulated_ms\n");
            for (class, row) in &run.classes {
                csv.push_str(&format!(
                    "{},{},{:.6},{:.6}\n",
                    class.as_str(),
                    row.kernels,
                    row.measured_ns as f64 / 1e6,
                    row.simulated_ns as f64 / 1e6
                ));
            }
            files.push(("kernel_classes.csv".to_owned(), csv.into_bytes().into()));
            let lanes: Vec<moesim_reports::replay::LaneData> = run
                .lanes
                .into_iter()
                .map(|l| moesim_reports::replay::LaneData { label: l.label, intervals: l.intervals })
                .collect();
            let title = format!(
                "{}: trace on {} vs replay on {}",
                setup.name, whatif.source.device.name, whatif.target.device.name
            );
            let chart = moesim_reports::replay::lanes(&lanes, &title);
            figures.push(super::draw(setup, chart)?);
        }
        Ok(Outcome {
            job_gpus: None,
            metrics,
            notes,
            graph: run.lowered.graph,
            platform: run.lowered.platform,
            result: run.result,
            figures,
            files,
        })
    }
}

impl ReplayWorkload {
    /// Chakra traces: compute for its recorded time, collectives on the
    /// cluster's network (`crate::replay::chakra`).
    fn run_chakra(
        &self,
        paths: &[PathBuf],
        setup: &Setup,
        options: &RunOptions,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, RunFailure> {
        use crate::replay::chakra;
        let input = |e: ReplayError| RunFailure::Input(vec![replay_diagnostic(e)]);
        let mut traces = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            traces.push(chakra::read(p, i as u32).map_err(input)?);
        }
        let mut seen: Vec<u32> = traces.iter().map(|t| t.rank).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut notes = Vec::new();
        if seen.len() != traces.len() {
            notes.push("the trace file names do not give distinct ranks (name.<rank>.et): ranks in file order".into());
            for (i, t) in traces.iter_mut().enumerate() {
                t.rank = i as u32;
            }
        }
        traces.sort_by_key(|t| t.rank);
        let cluster = super::build_cluster(setup)?;
        // A Chakra trace's collectives run as ASTRA-sim runs them, without
        // NCCL's kernel launch latency.
        let algorithm = moesim_models::network::collectives::algorithm_without_launch_latency(&self.algorithm)
            .map_err(|e| super::model_failure(setup, e))?;
        let mut graph = moesim_sim::TaskGraph::new();
        let stats =
            chakra::lower(&traces, &cluster, algorithm.as_ref(), self.collective_chunks, &mut graph).map_err(input)?;
        let (platform, graph, result) = super::simulate(cluster.platform, graph, options, observer)?;
        let dangling: usize = traces.iter().map(|t| t.dangling.len()).sum();
        for t in &traces {
            for (node, dep) in t.dangling.iter().take(20) {
                notes.push(format!(
                    "{}: node id {node} depends on node id {dep}, which is not in the file (ignored)",
                    t.path
                ));
            }
            if t.dangling.len() > 20 {
                notes.push(format!(
                    "{}: {} more dependencies on node ids not in the file",
                    t.path,
                    t.dangling.len() - 20
                ));
            }
        }
        notes.push(format!(
            "Chakra: compute and measured communication nodes run for their recorded duration (integer µs in the \
             trace), compute one at a time per rank; {} collective(s) on the network with the {} algorithm, each in {} \
             piece(s) one after another; data_deps order the nodes, ctrl_deps ({}) are not followed (in PyTorch-converted \
             traces they name a node's parent operator)",
            stats.network_collectives,
            algorithm.name(),
            self.collective_chunks,
            traces.iter().map(|t| t.ctrl_deps).sum::<u64>()
        ));
        notes.extend(stats.measured_comm_why.iter().cloned());
        let mut metrics = serde_json::Map::new();
        metrics.insert("ranks".into(), Value::from(traces.len()));
        metrics.insert("span_us".into(), super::num(result.end.as_ps() as f64 / 1e6));
        metrics.insert("nodes".into(), Value::from(stats.nodes));
        metrics.insert("compute_nodes".into(), Value::from(stats.compute_nodes));
        metrics.insert("network_collectives".into(), Value::from(stats.network_collectives));
        metrics.insert("measured_comm_nodes".into(), Value::from(stats.measured_comm_nodes));
        metrics.insert("dangling_deps".into(), Value::from(dangling));
        metrics.insert("traces".into(), Value::from(paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()));
        Ok(Outcome { metrics, notes, graph, platform, result, figures: Vec::new(), files: Vec::new(), job_gpus: None })
    }
}

/// Rounds every float in `v` to 9 significant digits (stable text).
fn round_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => *v = super::num(n.as_f64().unwrap_or(0.0)),
        Value::Object(m) => m.values_mut().for_each(round_numbers),
        Value::Array(a) => a.iter_mut().for_each(round_numbers),
        _ => {}
    }
}

/// The source and target clusters NCCL collectives are re-timed on: the
/// scenario's topology with the traced device's link rates and with the
/// target's. `None` without a `[topology]` or with a written-out one (its
/// links carry their own rates, so the traced network is not known).
fn network_model(setup: &Setup, whatif: &WhatIf) -> Result<Option<replay::network::NetworkModel>, RunFailure> {
    let Some(spec) = setup.topology.as_ref().filter(|t| t.explicit.is_none()) else { return Ok(None) };
    let mut source_spec = spec.clone();
    source_spec.nvlink_bytes_per_s = whatif.source.nvlink_bytes_per_s;
    source_spec.ib_bytes_per_s = whatif.source.nic_bytes_per_s;
    let build = |s: &moesim_topologies::ClusterSpec| {
        moesim_topologies::build(s).map_err(|e| RunFailure::Input(vec![setup.source.at_key("topology", e.to_string())]))
    };
    let source = moesim_models::Cluster::new(build(&source_spec)?, whatif.source.device.clone(), setup.seed);
    let target = moesim_models::Cluster::new(build(spec)?, whatif.target.device.clone(), setup.seed);
    Ok(Some(replay::network::NetworkModel::new(source, target)))
}

fn load_device(name: &str, setup: &Setup) -> Result<DeviceSpec, RunFailure> {
    if let Ok(d) = DeviceSpec::preset(name) {
        return Ok(d);
    }
    let text = std::fs::read_to_string(name)
        .map_err(|e| RunFailure::Input(vec![setup.source.at_key("workload.source_device", format!("{name}: {e}"))]))?;
    toml::from_str(&text)
        .map_err(|e| RunFailure::Input(vec![setup.source.at_key("workload.source_device", format!("{name}: {e}"))]))
}
