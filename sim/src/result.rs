//! What a run records: per-task spans, per-device and per-link statistics,
//! and (on request) each link's throughput over time.

use crate::series::LINK_SERIES_BUDGET_BYTES;
use crate::time::SimTime;

/// When a task started and finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskSpan {
    pub start: SimTime,
    pub end: SimTime,
}

/// Per-device totals over a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DeviceStats {
    /// Time during which at least one kernel (or unit hold) was active.
    pub busy_ps: u64,
    /// Integral of units in use over time, in unit-picoseconds.
    pub unit_ps: f64,
    /// Bytes moved to and from device memory.
    pub mem_bytes: f64,
}

/// Per-link totals over a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkStats {
    /// Time during which at least one flow crossed the link.
    pub busy_ps: u64,
    /// Bytes carried.
    pub bytes: f64,
    /// Highest aggregate rate seen, in bytes per second.
    pub peak_bytes_per_s: f64,
}

/// A link's aggregate rate from `time` until the next sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    pub time: SimTime,
    pub bytes_per_s: f64,
}

/// Options for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineOptions {
    /// Record each physical link's aggregate rate over time (for counter
    /// tracks and plots): every change while the history fits
    /// `link_series_budget_bytes`, coarser past it (see [`crate::series`]).
    pub record_link_series: bool,
    /// Bytes the recorded series may take in all before they are coarsened
    /// (default [`LINK_SERIES_BUDGET_BYTES`]).
    pub link_series_budget_bytes: u64,
    /// Relative tolerance on flows' finish times (0: exact); see
    /// `FlowSolver::set_finish_tolerance`.
    pub flow_finish_tolerance: f64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            record_link_series: false,
            link_series_budget_bytes: LINK_SERIES_BUDGET_BYTES,
            flow_finish_tolerance: 0.0,
        }
    }
}

/// Everything a run produced. Vectors are indexed by `TaskId`, `DeviceId` and
/// `LinkId`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunResult {
    /// When the last task finished.
    pub end: SimTime,
    /// Events the engine processed.
    pub events: u64,
    /// Flows started (one event can finish millions of them).
    pub flows_started: u64,
    /// Rate recomputations of the flow solver (one per touched component
    /// and timestamp).
    pub flow_recomputes: u64,
    /// Flows given a rate by those recomputations, in all (a flow re-rated
    /// several times counts each time): the solver's work.
    pub flows_rerated: u64,
    /// Flows that finished early under `EngineOptions::flow_finish_tolerance`
    /// (0 when exact).
    pub flows_finished_early: u64,
    pub spans: Vec<TaskSpan>,
    pub devices: Vec<DeviceStats>,
    pub links: Vec<LinkStats>,
    /// Per link, empty unless `record_link_series` was set and the link is
    /// physical; exact while the run's history fits its budget, else
    /// time-averaged bins (see [`crate::series`]).
    pub link_series: Vec<Vec<LinkSample>>,
}

/// Told about progress every so often during a long run.
pub trait Observer {
    fn progress(&mut self, _finished_tasks: usize, _total_tasks: usize, _now: SimTime) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}
