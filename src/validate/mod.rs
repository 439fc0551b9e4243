//! The validation table: every modelled figure with a published counterpart,
//! shared by `moesim validate` and the test suite. The cases are data: TOML
//! files in `validation/`, embedded in the binary ([`cases`]), to which
//! `moesim validate --cases` adds a user's own. A case runs a scenario with
//! overrides through the same path as `moesim run` ([`run`]) and compares one
//! metric with the published value.
//!
//! A case file holds `[[case]]` tables, each with these keys:
//!
//! | key | | |
//! |---|---|---|
//! | `name` | required | unique across every file |
//! | `source` | required | where the figure is published; in a file with a `[sources]` table, a key of it |
//! | `scenario` | required | a built-in scenario, or a path (relative to the case file's folder, then to the working directory) |
//! | `sets` | optional | `KEY=VALUE` overrides of the scenario, as `--set` |
//! | `metric` | required | a metric of the run's summary (`moesim run --format json`) |
//! | `unit` | required | the published figure's unit, for the table |
//! | `published` | required | the published figure: finite, not 0 |
//! | `tolerance` | required | the relative error allowed, e.g. 0.15 |
//! | `status` | optional | `"ok"` (default), `"fitted"` (a calibration constant was fitted on it), `"known-gap"` |
//! | `reason` | known gaps | the mechanism the model lacks; in a file with a `[reasons]` table, a key of it |
//! | `conditions` | optional | free text: the conditions measured under |
//! | `baseline` | optional | for a ratio: the overrides of the run the metric is divided by (same scenario) |
//! | `data` | optional | files the run reads (a trace); a case whose data is missing is skipped, not failed |
//!
//! A known gap is shown, not counted against the exit status, and tested to
//! still miss (so a fix gets it promoted to a real case).

mod cases;
mod run;

use std::path::PathBuf;

use crate::diagnostics::{Diagnostic, Location};
use crate::ScenarioRef;

pub use cases::{builtin_cases, check_scenarios, check_unique, load_case_files, parse_case_file, FILES};
pub use run::{metric_problems, run_case, run_cases, CaseResult};

/// One published figure and how to reproduce it.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Where the figure is published (a `[sources]` key resolved to its text).
    pub source: String,
    /// The scenario as written: a built-in name or a path.
    pub scenario: String,
    /// What `scenario` resolved to.
    pub scenario_ref: ScenarioRef,
    /// `--set` overrides applied to it.
    pub sets: Vec<String>,
    /// Metric of the run's summary to compare.
    pub metric: String,
    pub unit: String,
    pub published: f64,
    /// Allowed relative error, e.g. 0.15.
    pub tolerance: f64,
    pub status: Status,
    /// Why a known gap misses (a `[reasons]` key resolved to its text).
    pub reason: Option<String>,
    /// The conditions the figure was measured under.
    pub conditions: Option<String>,
    /// For a ratio: the overrides of the run the metric is divided by (the
    /// same scenario), e.g. an ablation's "without".
    pub baseline: Option<Vec<String>>,
    /// Data files the runs read, resolved (beside the case file, else as
    /// written: relative to the working directory).
    pub data: Vec<PathBuf>,
    /// Where the case is written.
    pub origin: CaseOrigin,
}

/// A case's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Compared and counted.
    Ok,
    /// A calibration constant was fitted on this case (at most one per mechanism).
    Fitted,
    /// A mechanism the model lacks: shown, not counted, tested to still miss.
    KnownGap,
}

/// Where a case is written: for error messages.
#[derive(Debug, Clone)]
pub struct CaseOrigin {
    /// `validation/NAME.toml` for a built-in file, else the path as given.
    pub file: String,
    /// Whether the file is one of the embedded [`FILES`].
    pub builtin: bool,
    /// 1-based line and column of the case's `[[case]]` header.
    pub line: usize,
    pub col: usize,
    /// Where each key's value sits.
    keys: Vec<(&'static str, Location)>,
}

impl Case {
    /// Whether a calibration constant was fitted on this case.
    pub fn fitted(&self) -> bool {
        self.status == Status::Fitted
    }

    /// The reason of a known gap.
    pub fn known_gap(&self) -> Option<&str> {
        match self.status {
            Status::KnownGap => self.reason.as_deref(),
            _ => None,
        }
    }

    /// A problem with one of the case's keys, at that key's value (or at the
    /// `[[case]]` header when the key is absent).
    pub fn diagnostic(&self, key: &'static str, message: impl Into<String>) -> Diagnostic {
        let o = &self.origin;
        let location = o
            .keys
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Location::File { line: o.line, col: o.col }, |(_, l)| l.clone());
        Diagnostic { origin: o.file.clone(), location, key: Some(key.to_owned()), message: message.into() }
    }
}

impl std::fmt::Display for CaseOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}
