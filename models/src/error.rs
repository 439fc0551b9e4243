//! Errors of the model layer.

use moesim_topologies::ConfigProblem;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error("unknown device preset `{name}`; known presets: {}", known.join(", "))]
    UnknownDevice { name: String, known: Vec<String> },
    #[error("unknown {what} preset `{name}`; known presets: {}", known.join(", "))]
    UnknownPreset { what: &'static str, name: String, known: Vec<String> },
    #[error("embedded preset {name} is broken: {message}")]
    BadPreset { name: String, message: String },
    /// Values that parse but are impossible; `key` is relative to the table
    /// the caller names (e.g. `hardware`, `workload`).
    #[error("{}", problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid { problems: Vec<ConfigProblem> },
    #[error("{0}")]
    Unsupported(String),
}

impl ModelError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::Invalid { problems: vec![ConfigProblem { key: key.into(), message: message.into() }] }
    }
}
