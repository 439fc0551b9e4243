//! Running cases: each distinct (scenario, overrides) is simulated once, the
//! case's metric (or a ratio of two runs' metric) compared with the published
//! figure.

use serde::Serialize;

use super::Case;
use crate::diagnostics::Diagnostic;
use crate::{run_scenario, ScenarioRef};

/// A case's outcome (one row of `moesim validate`).
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub source: String,
    pub metric: String,
    pub unit: String,
    pub published: f64,
    pub simulated: Option<f64>,
    pub error_pct: Option<f64>,
    pub tolerance_pct: f64,
    pub fitted: bool,
    pub pass: bool,
    pub known_gap: Option<String>,
    /// Why it could not be computed.
    pub failure: Option<String>,
    /// Why it was not run: the real data it replays was not found (the
    /// exit status is 1 unless `moesim validate --allow-skip`).
    pub skipped: Option<String>,
    /// The run has no such metric: the numeric metrics it does report.
    #[serde(skip)]
    pub missing_metric: Option<Vec<String>>,
}

/// A run's summary, or why there is none.
type Summary = Result<serde_json::Map<String, serde_json::Value>, String>;

/// How runs of the same scenario are recognised.
pub(super) fn scenario_key(scenario: &ScenarioRef) -> String {
    match scenario {
        ScenarioRef::Builtin(name) => format!("builtin:{name}"),
        ScenarioRef::Path(p) => p.display().to_string(),
    }
}

/// Runs cases, simulating each distinct (scenario, overrides) once.
pub fn run_cases<'a>(cases: impl IntoIterator<Item = &'a Case>) -> Vec<CaseResult> {
    let mut cache: Vec<((String, Vec<String>), Summary)> = Vec::new();
    let mut run = |scenario: &ScenarioRef, sets: &[String]| -> Summary {
        let key = (scenario_key(scenario), sets.to_vec());
        if let Some((_, summary)) = cache.iter().find(|(k, _)| *k == key) {
            return summary.clone();
        }
        let summary = summarise(scenario, sets);
        cache.push((key, summary.clone()));
        summary
    };
    cases
        .into_iter()
        .map(|case| {
            if missing_data(case).is_some() {
                let not_run: Summary = Err("not run".into());
                return compare(case, &not_run, case.baseline.as_ref().map(|_| &not_run));
            }
            let summary = run(&case.scenario_ref, &case.sets);
            let baseline = case.baseline.as_ref().map(|b| run(&case.scenario_ref, b));
            compare(case, &summary, baseline.as_ref())
        })
        .collect()
}

/// Runs one case.
pub fn run_case(case: &Case) -> CaseResult {
    run_cases([case]).remove(0)
}

/// The first data file of the case that is not there.
fn missing_data(case: &Case) -> Option<&std::path::Path> {
    case.data.iter().find(|f| !f.exists()).map(|f| f.as_path())
}

fn summarise(scenario: &ScenarioRef, sets: &[String]) -> Summary {
    run_scenario(scenario, sets, &Default::default()).map(|(summary, _)| summary).map_err(|e| e.to_string())
}

fn compare(case: &Case, summary: &Summary, baseline: Option<&Summary>) -> CaseResult {
    let skipped = missing_data(case).map(|f| {
        if case.origin.builtin {
            format!(
                "{} not found: set {}=DIR to the folder holding the real data (shared/data beside the checkout)",
                f.display(),
                crate::files::DATA_ENV
            )
        } else {
            format!("{} not found (named in the case's `data`)", f.display())
        }
    });
    let mut missing_metric = None;
    let mut metric = |summary: &Summary| {
        summary.clone().and_then(|summary| match summary.get(&case.metric).and_then(|v| v.as_f64()) {
            Some(v) => Ok(v),
            None => {
                let numeric = summary.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()).collect();
                missing_metric = Some(numeric);
                Err(format!("the run has no metric `{}`", case.metric))
            }
        })
    };
    // A ratio divides by the baseline run's value of the same metric.
    let simulated = match baseline {
        None => metric(summary),
        Some(b) => metric(summary).and_then(|v| metric(b).map(|base| v / base)),
    };
    let (simulated, failure) = match simulated {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let error_pct = simulated.map(|s| (s - case.published) / case.published * 100.0);
    let pass = error_pct.is_some_and(|e| e.abs() <= case.tolerance * 100.0);
    CaseResult {
        case: case.name.clone(),
        source: case.source.clone(),
        metric: case.metric.clone(),
        unit: case.unit.clone(),
        published: case.published,
        simulated,
        error_pct,
        tolerance_pct: case.tolerance * 100.0,
        fitted: case.fitted(),
        pass,
        known_gap: case.known_gap().map(str::to_owned),
        failure: if skipped.is_some() { None } else { failure },
        skipped,
        missing_metric,
    }
}

/// A diagnostic at the `metric` line of every case whose run lacks its
/// metric (`results` in the order of `cases`).
pub fn metric_problems(cases: &[Case], results: &[CaseResult]) -> Vec<Diagnostic> {
    cases
        .iter()
        .zip(results)
        .filter_map(|(case, r)| {
            let reported = r.missing_metric.as_ref()?;
            Some(case.diagnostic(
                "metric",
                format!(
                    "case `{}`: the run of {} has no metric `{}`; its metrics: {}",
                    case.name,
                    case.scenario,
                    case.metric,
                    reported.join(", ")
                ),
            ))
        })
        .collect()
}
