//! moesim: a discrete-event simulator of GPU/NPU clusters running
//! Mixture-of-Experts models. This crate glues the engine (`moesim-sim`), the
//! cluster graphs (`moesim-topologies`), the hardware and workload models
//! (`moesim-models`) and the writers (`moesim-reports`) behind the scenario
//! file and the `moesim` CLI. Only this crate reads files, prints or exits.

pub mod builtin;
pub mod commands;
pub mod diagnostics;
pub mod files;
pub mod fuzzing;
pub mod keys;
pub mod output;
pub mod plan;
pub mod provenance;
pub mod replay;
pub mod scenario;
pub mod setup;
pub mod sweep;
pub mod validate;
pub mod workloads;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use diagnostics::{Diagnostic, Source};
use moesim_sim::Observer;
use scenario::Scenario;
use workloads::{Outcome, RunFailure, RunOptions};

/// A scenario named on the command line: a path or a built-in name.
#[derive(Debug, Clone)]
pub enum ScenarioRef {
    Path(PathBuf),
    Builtin(&'static str),
}

impl ScenarioRef {
    /// A path if such a file exists, else a built-in name, else an error
    /// listing the built-ins.
    pub fn parse(arg: &str) -> Result<ScenarioRef, AppError> {
        let path = Path::new(arg);
        if path.exists() {
            return Ok(ScenarioRef::Path(path.to_path_buf()));
        }
        if let Some((name, _)) = builtin::SCENARIOS.iter().find(|(n, _)| *n == arg) {
            return Ok(ScenarioRef::Builtin(name));
        }
        let names: Vec<&str> = builtin::SCENARIOS.iter().map(|(n, _)| *n).collect();
        Err(AppError::Input(vec![Diagnostic {
            origin: arg.to_owned(),
            location: diagnostics::Location::Unknown,
            key: None,
            message: format!("no such file, and not a built-in scenario; built-ins: {}", names.join(", ")),
        }]))
    }

    /// Reads the scenario's text.
    pub fn load(&self) -> Result<Source, AppError> {
        match self {
            ScenarioRef::Builtin(name) => {
                Ok(Source::new(format!("builtin:{name}"), builtin::scenario(name).expect("known built-in")))
            }
            ScenarioRef::Path(p) => {
                let origin = p.display().to_string();
                let text = files::read_text(p, files::MAX_CONFIG_BYTES)
                    .map_err(|e| AppError::Input(vec![Source::new(origin.clone(), "").plain(e)]))?;
                Ok(Source::new(origin, text))
            }
        }
    }
}

/// A failure the CLI reports: bad input (exit 2) or a failed run (exit 1).
#[derive(Debug)]
pub enum AppError {
    Input(Vec<Diagnostic>),
    Failed(String),
}

impl AppError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Input(_) => 2,
            AppError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Input(ds) => {
                for (i, d) in ds.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "error: {d}")?;
                }
                Ok(())
            }
            AppError::Failed(m) => write!(f, "error: the run failed: {m}"),
        }
    }
}

impl std::error::Error for AppError {}

impl From<RunFailure> for AppError {
    fn from(f: RunFailure) -> Self {
        match f {
            RunFailure::Input(d) => AppError::Input(d),
            RunFailure::Failed(m) => AppError::Failed(m),
        }
    }
}

/// Loads a scenario with overrides and resolves it.
pub fn load_scenario(scenario: &ScenarioRef, sets: &[String]) -> Result<Scenario, AppError> {
    load_source(scenario.load()?, sets)
}

/// Applies overrides to a scenario source and resolves it (every problem
/// of the file and its overrides at once, each at its line or `--set`).
pub fn load_source(base: Source, sets: &[String]) -> Result<Scenario, AppError> {
    let source = base.with_overrides(sets).map_err(AppError::Input)?;
    Scenario::parse(source).map_err(AppError::Input)
}

/// Loads, runs and summarises a scenario (quietly).
pub fn run_scenario(
    scenario: &ScenarioRef,
    sets: &[String],
    options: &RunOptions,
) -> Result<(Map<String, Value>, Outcome), AppError> {
    run_scenario_observed(scenario, sets, options, &mut moesim_sim::Quiet)
}

/// As [`run_scenario`], telling `observer` about progress.
pub fn run_scenario_observed(
    scenario: &ScenarioRef,
    sets: &[String],
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<(Map<String, Value>, Outcome), AppError> {
    run_source(scenario.load()?, sets, options, observer)
}

/// Applies overrides to a scenario source (a file's or one built in memory,
/// as `moesim replay` does), resolves it, checks its memory, runs it and
/// summarises it.
pub fn run_source(
    source: Source,
    sets: &[String],
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<(Map<String, Value>, Outcome), AppError> {
    let scenario = load_source(source, sets)?;
    if let Some(limit) = options.max_memory_bytes {
        workloads::check_memory(scenario.workload.as_ref(), &scenario.setup, limit)?;
    }
    let mut outcome = scenario.run(options, observer)?;
    if options.figures {
        let resolved = provenance::resolved_toml(&scenario.setup).map_err(AppError::Failed)?;
        outcome.files.insert(0, (provenance::RESOLVED_FILE.to_owned(), resolved.into_bytes().into()));
    }
    let summary = output::summary(&scenario.setup, scenario.workload.kind_name(), &outcome);
    Ok((summary, outcome))
}
