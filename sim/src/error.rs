//! Errors the engine returns for graphs or platforms it cannot run.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum SimError {
    /// A dependency names a task that does not exist.
    #[error("task `{task}` depends on task #{missing}, which does not exist (the graph has {len} tasks)")]
    DanglingDependency { task: String, missing: u32, len: usize },
    /// The dependencies (explicit plus stream order) form a cycle.
    #[error("the task graph has a cycle through {count} tasks, e.g. {}", examples.join(" -> "))]
    Cycle { count: usize, examples: Vec<String> },
    /// A task names a device, link or path that is not in the platform/graph.
    #[error("task `{task}` refers to {what}, which does not exist")]
    UnknownResource { task: String, what: String },
    /// A resource with an impossible capacity.
    #[error("bad resource: {0}")]
    BadResource(String),
    /// A task with an impossible parameter (negative bytes, NaN work, ...).
    #[error("task `{task}`: {problem}")]
    BadTask { task: String, problem: String },
    /// An event fell past the end of simulated time (about 213.5 days of
    /// picoseconds): some duration or latency is absurdly large.
    #[error("simulated time passed its range of {:.0} s (about 213 days) at task `{example}`: a duration, latency or size is far too large", crate::SimTime::RANGE_S)]
    TimeOverflow { example: String },
    /// The run stopped with tasks that can never start or finish;
    /// `waiting_on` names the resource a started task never got through
    /// (its device or its slowest link) and `resource_kind` its kind
    /// (`device`, or a link kind such as `infiniband`), for the caller to
    /// name the setting behind it.
    #[error("the run stalled at {at_us:.3} us with {unfinished} unfinished tasks, e.g. `{example}`, waiting on {waiting_on}")]
    Stalled { at_us: f64, unfinished: usize, example: String, waiting_on: String, resource_kind: Option<&'static str> },
}
