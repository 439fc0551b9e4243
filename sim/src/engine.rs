//! The discrete-event executor: runs a `TaskGraph` on a `Platform`.

use crate::error::SimError;
use crate::graph::TaskGraph;
use crate::platform::Platform;
use crate::result::{EngineOptions, Observer, RunResult};

/// Runs `graph` on `platform` to completion.
pub fn run(
    platform: &Platform,
    graph: &TaskGraph,
    options: &EngineOptions,
    observer: &mut dyn Observer,
) -> Result<RunResult, SimError> {
    platform.validate()?;
    graph.validate(platform)?;
    let _ = (options, observer);
    todo!("engine")
}
