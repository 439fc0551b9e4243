//! `kind = "pipeline"`: a synthetic pipeline-parallel schedule (1F1B, ZB1P,
//! DualPipe, DualPipeV) with given op times, run through the engine: one
//! stream per device, each op a fixed delay, each transfer between devices a
//! dependency that takes no time. Reports the step time, the bubble of each
//! device (step time minus its busy time), parameter copies and peak
//! activations, beside the DualPipe README table's closed form.

use moesim_models::transformer::schedule::{self, OpDurations, PipelineSchedule, ScheduleKind};
use moesim_sim::{EngineOptions, Observer, Platform, RunResult, SimDuration, SimError, TaskGraph, TaskId};
use moesim_topologies::{ConfigProblem, Plausible};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    model_failure, num, problem, Context, Footprint, Outcome, RunFailure, RunOptions, Workload, BYTES_PER_TASK,
};
use crate::setup::Setup;

/// A plausible op time: up to a day.
const OP_TIME_US: Plausible = Plausible::new(1e-6, 8.64e10, "us");

/// The `[workload]` table of a synthetic pipeline.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineWorkload {
    pub kind: String,
    /// Model stages (PP).
    pub stages: u32,
    /// Micro-batches per step.
    pub microbatches: u32,
    /// A forward chunk (F), microseconds.
    pub forward_us: f64,
    /// A full backward chunk (B: input and weight gradients), microseconds.
    pub backward_us: f64,
    /// The weight-gradient part of B (W), microseconds; a split-off B takes
    /// `backward_us - weight_us`.
    pub weight_us: f64,
    /// A forward and a backward chunk overlapped (F&B), microseconds.
    pub overlapped_us: f64,
    pub schedule: ScheduleKind,
}

impl PipelineWorkload {
    /// The op times, rounded to picoseconds.
    pub fn durations(&self) -> OpDurations {
        OpDurations {
            forward: SimDuration::from_us_f64(self.forward_us),
            backward: SimDuration::from_us_f64(self.backward_us),
            weight: SimDuration::from_us_f64(self.weight_us),
            overlapped: SimDuration::from_us_f64(self.overlapped_us),
        }
    }
}

impl Workload for PipelineWorkload {
    fn kind_name(&self) -> &str {
        "pipeline"
    }

    fn problems(&self, _cx: Context) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Err(moesim_models::ModelError::Invalid { problems }) =
            schedule::check_sizes(self.schedule, self.stages, self.microbatches)
        {
            out.extend(problems);
        }
        for (key, v) in [
            ("workload.forward_us", self.forward_us),
            ("workload.backward_us", self.backward_us),
            ("workload.overlapped_us", self.overlapped_us),
        ] {
            if !(v.is_finite() && v > 0.0) {
                out.push(problem(key, format!("expected a positive time in microseconds, found {v}")));
            } else {
                out.extend(OP_TIME_US.problem(key, v));
            }
        }
        if let Some(p) = OP_TIME_US.problem("workload.weight_us", self.weight_us).filter(|_| self.weight_us > 0.0) {
            out.push(p);
        } else if !(self.weight_us.is_finite() && self.weight_us >= 0.0) {
            out.push(problem(
                "workload.weight_us",
                format!("expected a time >= 0 in microseconds, found {}", self.weight_us),
            ));
        } else if self.weight_us > self.backward_us {
            out.push(problem(
                "workload.weight_us",
                format!(
                    "expected at most backward_us ({}): W is a part of the full backward, found {}",
                    self.backward_us, self.weight_us
                ),
            ));
        }
        out
    }

    fn footprint(&self, _setup: &Setup) -> Option<Footprint> {
        let tasks = 4.0 * self.microbatches as f64 * self.stages as f64;
        Some(Footprint {
            bytes: tasks * BYTES_PER_TASK,
            key: "workload.microbatches".into(),
            what: format!("{tasks:.3e} tasks"),
        })
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let schedule =
            schedule::build(self.schedule, self.stages, self.microbatches).map_err(|e| model_failure(setup, e))?;
        let durations = self.durations();
        let run = run_schedule(&schedule, &durations, options, observer)
            .map_err(|e| RunFailure::Failed(super::explain(&e)))?;
        let us = |ps: u64| num(ps as f64 / 1e6);
        let mut metrics = Map::new();
        metrics.insert("schedule".into(), Value::from(self.schedule.as_str()));
        metrics.insert("stages".into(), Value::from(schedule.stages));
        metrics.insert("devices".into(), Value::from(schedule.devices));
        metrics.insert("microbatches".into(), Value::from(schedule.microbatches));
        metrics.insert("step_time_us".into(), us(run.step_ps));
        metrics.insert("bubble_us".into(), us(run.bubble_ps.iter().copied().max().unwrap_or(0)));
        metrics.insert(
            "bubble_us_per_device".into(),
            Value::from(run.bubble_ps.iter().map(|&b| us(b)).collect::<Vec<_>>()),
        );
        metrics.insert("readme_bubble_us".into(), num(schedule.readme_bubble_ps(&durations) as f64 / 1e6));
        metrics.insert("parameter_copies".into(), Value::from(schedule.parameter_copies()));
        let peaks = schedule.peak_activation_microbatches();
        metrics.insert("activation_microbatches".into(), Value::from(peaks.iter().copied().max().unwrap_or(0)));
        metrics.insert("activation_microbatches_per_device".into(), Value::from(peaks));
        let notes = vec![
            "bubble = step time minus the device's busy time; bubble_us is the largest over devices".to_owned(),
            "transfers between devices take no time; DualPipe/DualPipeV send and wait where the reference \
             commits its p2p batches"
                .to_owned(),
            "activations in stage-micro-batches, held from a chunk's F to its W (when split off) or its B".to_owned(),
            format!(
                "readme_bubble_us: the deepseek-ai/DualPipe README closed form; {}",
                readme_validity(self.schedule)
            ),
        ];
        let mut figures = Vec::new();
        if options.figures {
            let title = format!(
                "{} schedule, {} stages on {} devices, {} micro-batches: step {:.1} us",
                self.schedule.as_str(),
                schedule.stages,
                schedule.devices,
                schedule.microbatches,
                run.step_ps as f64 / 1e6
            );
            let (rows, bars) = moesim_reports::activity::pipeline_bars(&run.graph, &run.result);
            let chart = moesim_reports::activity::pipeline_gantt(&rows, &bars, run.result.end.as_ps(), &title);
            figures.push(super::draw(setup, chart)?);
        }
        Ok(Outcome {
            job_gpus: None,
            metrics,
            notes,
            graph: run.graph,
            platform: Platform::default(),
            result: run.result,
            figures,
            files: Vec::new(),
        })
    }
}

/// Where the README closed form is exact for this schedule (found by running
/// it; `tests/pipeline.rs` checks each statement).
pub fn readme_validity(kind: ScheduleKind) -> &'static str {
    match kind {
        ScheduleKind::OneFOneB => "1F1B matches it for any F and B and any number of micro-batches",
        ScheduleKind::Interleaved1F1B => {
            "here with one model chunk per device, i.e. 1F1B (virtual_stages is a key of a training step's \
             [parallel]); it matches the 1F1B closed form"
        }
        ScheduleKind::Zb1p => {
            "ZB1P matches it when W <= F, W <= B-W and microbatches >= stages; otherwise (microbatches >= stages) \
             the bubble is (PP-1) x max(F+B-2W, F, B-W): a W longer than the gap it fills delays the next pass"
        }
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => {
            "DualPipe matches it on its middle devices (the largest bubble) at W = F, B = 2F and B <= F&B <= F+B; \
             the other devices run fewer overlapped pairs, so their bubble is smaller by (F+B-F&B) per pair; \
             other ratios of F, B and W depart from it"
        }
    }
}

/// A schedule run through the engine.
pub struct ScheduleRun {
    pub graph: TaskGraph,
    pub result: RunResult,
    /// `tasks[device][op index]`.
    pub tasks: Vec<Vec<TaskId>>,
    /// When the last op ended, picoseconds.
    pub step_ps: u64,
    /// Per device: step time minus the sum of its op times, picoseconds.
    pub bubble_ps: Vec<u64>,
}

/// Lowers `schedule` with fixed op times and runs it on an empty platform.
pub fn run_schedule(
    schedule: &PipelineSchedule,
    durations: &OpDurations,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<ScheduleRun, SimError> {
    let mut graph = TaskGraph::new();
    let tasks = schedule.lower_delays(durations, &mut graph);
    let engine = EngineOptions { record_link_series: options.record_link_series, ..EngineOptions::default() };
    let result = moesim_sim::run(&Platform::default(), &graph, &engine, observer)?;
    let step_ps = result.end.as_ps();
    let bubble_ps = schedule.busy(durations).iter().map(|b| step_ps.saturating_sub(b.as_ps())).collect();
    Ok(ScheduleRun { graph, result, tasks, step_ps, bubble_ps })
}
