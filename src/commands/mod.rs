//! One file per `moesim` command: its clap arguments, what it runs and how it
//! renders. `src/main.rs` only parses the command line and dispatches here.

pub mod catalog;
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
