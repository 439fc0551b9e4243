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

/// The scenario a command names, or the built-in default.
pub(crate) fn scenario_ref(arg: Option<String>) -> Result<ScenarioRef, AppError> {
    match arg {
        Some(a) => ScenarioRef::parse(&a),
        None => Ok(ScenarioRef::Builtin(builtin::DEFAULT_SCENARIO)),
    }
}
