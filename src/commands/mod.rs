//! One file per `moesim` command: its clap arguments, what it runs and how it
//! renders. `src/main.rs` only parses the command line and dispatches here.

pub mod catalog;
pub mod cli;
pub mod keys;
pub mod merge;
pub mod plan;
pub mod replay;
pub mod run;
pub mod sweep;
pub mod topology;
pub mod validate;

use crate::{builtin, AppError, ScenarioRef};

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What the commands that run one scenario (`run`, `replay`) share: where
/// to write, how to print, overrides and limits.
#[derive(Debug, clap::Args)]
pub struct RunOutput {
    /// Write summary.json, summary.md, timeline.csv, resources.csv, trace.json and the
    /// workload's plots and tables here (replacing an earlier moesim output as a whole).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Print text or one JSON object (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16 (repeatable;
    /// `moesim keys` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: Limits,
}

impl RunOutput {
    /// The checked `--out` folder and the run's options, before anything
    /// runs.
    pub fn prepare(&self) -> Result<(Option<crate::output::OutDir>, crate::workloads::RunOptions), AppError> {
        let out = self.out.as_deref().map(|d| crate::output::OutDir::prepare(d, self.force)).transpose()?;
        let options = crate::workloads::RunOptions {
            record_link_series: out.is_some(),
            figures: out.is_some(),
            max_memory_bytes: Some(self.limits.max_memory_bytes()?),
        };
        Ok((out, options))
    }
}

/// Resource limits shared by the commands that run simulations.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Refuse a run whose memory, estimated before it starts, exceeds this
    /// many GiB (default: half the machine's memory).
    #[arg(long = "max-memory-gib", value_name = "GIB")]
    pub max_memory_gib: Option<f64>,
}

impl Limits {
    /// The memory limit in bytes, or an input error for a bad value.
    pub fn max_memory_bytes(&self) -> Result<f64, AppError> {
        match self.max_memory_gib {
            None => Ok(crate::workloads::default_memory_limit_bytes()),
            Some(g) if g.is_finite() && g > 0.0 => Ok(g * (1u64 << 30) as f64),
            Some(g) => Err(AppError::Input(vec![crate::diagnostics::Source::new("--max-memory-gib", "")
                .plain(format!("expected a positive number of GiB, found {g}"))])),
        }
    }
}

/// The scenario a command names, or the built-in default.
pub(crate) fn scenario_ref(arg: Option<String>) -> Result<ScenarioRef, AppError> {
    match arg {
        Some(a) => ScenarioRef::parse(&a),
        None => Ok(ScenarioRef::Builtin(builtin::DEFAULT_SCENARIO)),
    }
}
