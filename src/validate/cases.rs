//! Reading case files: the embedded `validation/*.toml` and a user's own
//! (`moesim validate --cases`). A file is parsed strictly (unknown keys are
//! errors) and checked whole, every problem a [`Diagnostic`] at its
//! file:line:col; [`check_scenarios`] then loads each case's scenario with its
//! overrides, before anything runs.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Case, CaseOrigin, Status};
use crate::diagnostics::{Diagnostic, Location, Source};
use crate::{builtin, load_scenario, AppError, ScenarioRef};

/// `(file name, TOML text)` of the built-in case files, in table order:
/// `moesim validate` lists their cases file after file.
pub const FILES: &[(&str, &str)] = &[
    ("deepep-normal.toml", include_str!("../../validation/deepep-normal.toml")),
    ("nccl.toml", include_str!("../../validation/nccl.toml")),
    ("deepgemm.toml", include_str!("../../validation/deepgemm.toml")),
    ("flashmla.toml", include_str!("../../validation/flashmla.toml")),
    ("deepseek-v3-training.toml", include_str!("../../validation/deepseek-v3-training.toml")),
    ("deepep-low-latency.toml", include_str!("../../validation/deepep-low-latency.toml")),
    ("lmsys-sglang.toml", include_str!("../../validation/lmsys-sglang.toml")),
    ("deepseek-v3-day6.toml", include_str!("../../validation/deepseek-v3-day6.toml")),
    ("replay.toml", include_str!("../../validation/replay.toml")),
    ("kv-cache.toml", include_str!("../../validation/kv-cache.toml")),
    ("dense-training.toml", include_str!("../../validation/dense-training.toml")),
    ("local.toml", include_str!("../../validation/local.toml")),
    ("rl-post-training.toml", include_str!("../../validation/rl-post-training.toml")),
    ("chakra.toml", include_str!("../../validation/chakra.toml")),
];

/// A case file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Texts the cases cite by key.
    sources: Option<BTreeMap<String, String>>,
    /// Known-gap reasons the cases cite by key.
    reasons: Option<BTreeMap<String, String>>,
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

/// A `[[case]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    source: Spanned<String>,
    scenario: Spanned<String>,
    sets: Option<Spanned<Vec<String>>>,
    metric: Spanned<String>,
    unit: String,
    published: Spanned<f64>,
    tolerance: Spanned<f64>,
    status: Option<Spanned<Status>>,
    reason: Option<Spanned<String>>,
    conditions: Option<String>,
    baseline: Option<Spanned<Vec<String>>>,
    data: Option<Spanned<Vec<String>>>,
}

/// Every built-in case, in table order.
pub fn builtin_cases() -> Result<Vec<Case>, Vec<Diagnostic>> {
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in FILES {
        match parse_case_file(&format!("validation/{name}"), text, None, true) {
            Ok(c) => cases.extend(c),
            Err(p) => problems.extend(p),
        }
    }
    problems.extend(check_unique(&cases));
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

/// The cases of user files, in the order given: a file, or every `*.toml`
/// of a directory sorted by name.
pub fn load_case_files(paths: &[PathBuf]) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let files = match case_files(path) {
            Ok(f) => f,
            Err(d) => {
                problems.push(d);
                continue;
            }
        };
        for file in files {
            let origin = file.display().to_string();
            let text = match crate::files::read_text(&file, crate::files::MAX_CONFIG_BYTES) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(plain(&origin, e));
                    continue;
                }
            };
            let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
            match parse_case_file(&origin, &text, Some(&folder), false) {
                Ok(c) if c.is_empty() => problems.push(plain(&origin, "no [[case]] tables")),
                Ok(c) => cases.extend(c),
                Err(p) => problems.extend(p),
            }
        }
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

fn case_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let origin = path.display().to_string();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| plain(&origin, format!("cannot read the folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(plain(&origin, "no *.toml case files in this folder"));
        }
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(plain(&origin, "no such file or folder"))
    }
}

fn plain(origin: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic { origin: origin.to_owned(), location: Location::Unknown, key: None, message: message.into() }
}

/// Parses and checks one case file. `folder` is where a user file lies
/// (scenario and data paths are looked up there first); `None` for an
/// embedded one.
pub fn parse_case_file(
    origin: &str,
    text: &str,
    folder: Option<&Path>,
    builtin: bool,
) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let source = Source::new(origin, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| vec![source.toml_error(e.span(), e.message())])?;
    let at = |span: Range<usize>| source.locate_offset(span.start);
    let mut problems = Vec::new();
    let mut cases = Vec::new();
    for raw_case in raw.case {
        let header = at(raw_case.span());
        let (line, col) = match header {
            Location::File { line, col } => (line, col),
            _ => (0, 0),
        };
        let c = raw_case.into_inner();
        let mut keys: Vec<(&'static str, Location)> = vec![
            ("name", at(c.name.span())),
            ("source", at(c.source.span())),
            ("scenario", at(c.scenario.span())),
            ("metric", at(c.metric.span())),
            ("published", at(c.published.span())),
            ("tolerance", at(c.tolerance.span())),
        ];
        let optional = [
            ("sets", c.sets.as_ref().map(Spanned::span)),
            ("status", c.status.as_ref().map(Spanned::span)),
            ("reason", c.reason.as_ref().map(Spanned::span)),
            ("baseline", c.baseline.as_ref().map(Spanned::span)),
            ("data", c.data.as_ref().map(Spanned::span)),
        ];
        keys.extend(optional.into_iter().filter_map(|(k, s)| s.map(|s| (k, at(s)))));
        let name = c.name.get_ref().clone();
        let problem = |key: &'static str, message: String| {
            let location = keys.iter().find(|(k, _)| *k == key).map_or(Location::Unknown, |(_, l)| l.clone());
            Diagnostic { origin: origin.to_owned(), location, key: Some(key.to_owned()), message }
        };
        let mut case_problems = Vec::new();
        if name.trim().is_empty() {
            case_problems.push(problem("name", "expected a case name, found an empty string".into()));
        }
        let cited = |table: &Option<BTreeMap<String, String>>, value: &str, what: &str| match table {
            None => Ok(value.to_owned()),
            Some(t) => t.get(value).cloned().ok_or_else(|| {
                let keys: Vec<&str> = t.keys().map(String::as_str).collect();
                format!("expected a key of this file's [{what}] table ({}), found `{value}`", keys.join(", "))
            }),
        };
        let source_text = cited(&raw.sources, c.source.get_ref(), "sources")
            .map_err(|m| case_problems.push(problem("source", m)))
            .unwrap_or_default();
        let status = c.status.as_ref().map_or(Status::Ok, |s| *s.get_ref());
        let reason = match (&c.reason, status) {
            (Some(r), Status::KnownGap) => {
                cited(&raw.reasons, r.get_ref(), "reasons").map_err(|m| case_problems.push(problem("reason", m))).ok()
            }
            (None, Status::KnownGap) => {
                case_problems
                    .push(problem("status", "a known gap needs a `reason`: the mechanism the model lacks".into()));
                None
            }
            (Some(_), _) => {
                case_problems.push(problem("reason", "only a known gap (status = \"known-gap\") has a reason".into()));
                None
            }
            (None, _) => None,
        };
        let published = *c.published.get_ref();
        if !published.is_finite() || published == 0.0 {
            case_problems.push(problem("published", format!("expected a finite, non-zero number, found {published}")));
        }
        let tolerance = *c.tolerance.get_ref();
        if !tolerance.is_finite() || tolerance <= 0.0 {
            case_problems.push(problem(
                "tolerance",
                format!("expected a positive relative error (e.g. 0.15 for 15 %), found {tolerance}"),
            ));
        }
        let scenario = c.scenario.get_ref().clone();
        let scenario_ref =
            resolve_scenario(&scenario, folder).map_err(|m| case_problems.push(problem("scenario", m))).ok();
        let data =
            c.data.map(Spanned::into_inner).unwrap_or_default().iter().map(|d| resolve_file(d, folder)).collect();
        if !case_problems.is_empty() {
            problems.extend(case_problems);
            continue;
        }
        cases.push(Case {
            name,
            source: source_text,
            scenario,
            scenario_ref: scenario_ref.expect("checked"),
            sets: c.sets.map(Spanned::into_inner).unwrap_or_default(),
            metric: c.metric.into_inner(),
            unit: c.unit,
            published,
            tolerance,
            status,
            reason,
            conditions: c.conditions,
            baseline: c.baseline.map(Spanned::into_inner),
            data,
            origin: CaseOrigin { file: origin.to_owned(), builtin, line, col, keys },
        });
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

/// A built-in scenario name, else a file beside the case file, else one
/// relative to the working directory.
fn resolve_scenario(scenario: &str, folder: Option<&Path>) -> Result<ScenarioRef, String> {
    if let Some((name, _)) = builtin::SCENARIOS.iter().find(|(n, _)| *n == scenario) {
        return Ok(ScenarioRef::Builtin(name));
    }
    let path = Path::new(scenario);
    let beside = folder.filter(|_| path.is_relative()).map(|f| f.join(path));
    if let Some(b) = beside.filter(|b| b.is_file()) {
        return Ok(ScenarioRef::Path(b));
    }
    if path.is_file() {
        return Ok(ScenarioRef::Path(path.to_path_buf()));
    }
    let names: Vec<&str> = builtin::SCENARIOS.iter().map(|(n, _)| *n).collect();
    let looked = match folder {
        Some(f) if path.is_relative() && !f.as_os_str().is_empty() => {
            format!("{} and the working directory", f.display())
        }
        _ => "the working directory".to_owned(),
    };
    Err(format!(
        "`{scenario}` is neither a built-in scenario nor a file (looked in {looked}); built-ins: {}",
        names.join(", ")
    ))
}

/// A data path, found as [`crate::files::data_path`] says (beside the case
/// file first).
fn resolve_file(path: &str, folder: Option<&Path>) -> PathBuf {
    crate::files::data_path(path, folder)
}

/// Names used twice (across all the files given), at the later use.
pub fn check_unique(cases: &[Case]) -> Vec<Diagnostic> {
    let mut seen: BTreeMap<&str, &Case> = BTreeMap::new();
    let mut problems = Vec::new();
    for case in cases {
        match seen.get(case.name.as_str()) {
            Some(first) => problems.push(case.diagnostic(
                "name",
                format!("case `{}` is already defined at {}; names must be unique", case.name, first.origin),
            )),
            None => {
                seen.insert(&case.name, case);
            }
        }
    }
    problems
}

/// Loads every case's scenario with its overrides (and its baseline's), as
/// a run would, so that a bad override is reported at the case's `sets` (or
/// `baseline`) line before anything runs. Cases whose data is missing are
/// left to be skipped.
pub fn check_scenarios(cases: &[Case]) -> Vec<Diagnostic> {
    // Loads already made, and whether the scenario alone loads.
    let mut checked: Vec<(String, Vec<String>)> = Vec::new();
    let mut scenarios: Vec<(String, bool)> = Vec::new();
    let mut problems = Vec::new();
    for case in cases.iter().filter(|c| c.data.iter().all(|d| d.exists())) {
        let scenario_key = super::run::scenario_key(&case.scenario_ref);
        let loads = match scenarios.iter().find(|(k, _)| *k == scenario_key) {
            Some((_, loads)) => *loads,
            None => {
                let result = load_scenario(&case.scenario_ref, &[]);
                let loads = result.is_ok();
                if let Err(e) = result {
                    problems.push(case.diagnostic("scenario", format!("case `{}`: {}", case.name, inner(e))));
                }
                scenarios.push((scenario_key.clone(), loads));
                loads
            }
        };
        if !loads {
            continue;
        }
        for (key, sets) in [("sets", Some(&case.sets)), ("baseline", case.baseline.as_ref())] {
            let Some(sets) = sets.filter(|s| !s.is_empty()) else { continue };
            let run = (scenario_key.clone(), sets.clone());
            if checked.contains(&run) {
                continue;
            }
            checked.push(run);
            if let Err(e) = load_scenario(&case.scenario_ref, sets) {
                problems.push(case.diagnostic(key, format!("case `{}`: {}", case.name, inner(e))));
            }
        }
    }
    problems
}

/// The problems of a failed load, on one line.
fn inner(e: AppError) -> String {
    match e {
        AppError::Input(ds) => ds.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        AppError::Failed(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = "[[case]]\nname = \"c\"\nsource = \"s\"\nscenario = \"gemm-h800\"\nmetric = \"tflops\"\nunit = \"TFLOP/s\"\npublished = 100.0\ntolerance = 0.1\n";

    fn problems(text: &str) -> Vec<String> {
        parse_case_file("f.toml", text, None, false).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_minimal_case_is_ok_with_its_origin() {
        let text = format!("# a comment\n\n{CASE}");
        let cases = parse_case_file("f.toml", &text, None, false).unwrap();
        let c = &cases[0];
        assert_eq!((c.origin.line, c.origin.col, c.status), (3, 1, Status::Ok));
        assert!(c.sets.is_empty() && c.baseline.is_none() && c.data.is_empty() && c.known_gap().is_none());
        assert_eq!(c.origin.to_string(), "f.toml:3");
        assert_eq!(c.diagnostic("metric", "m").to_string(), "f.toml:7:10: metric: m");
        assert_eq!(c.diagnostic("sets", "m").to_string(), "f.toml:3:1: sets: m", "absent keys point at [[case]]");
    }

    #[test]
    fn sources_and_reasons_are_cited_by_key_in_a_file_that_has_them() {
        let text = format!(
            "[sources]\ns = \"the paper\"\n[reasons]\nr = \"no NVLS\"\n\n{CASE}status = \"known-gap\"\nreason = \"r\"\n"
        );
        let c = &parse_case_file("f.toml", &text, None, false).unwrap()[0];
        assert_eq!((c.source.as_str(), c.known_gap()), ("the paper", Some("no NVLS")));
        let p = problems(&format!("[sources]\nt = \"x\"\n{CASE}"));
        assert_eq!(p, ["f.toml:5:10: source: expected a key of this file's [sources] table (t), found `s`"]);
    }

    #[test]
    fn impossible_values_are_reported_together_at_their_lines() {
        let text = CASE.replace("100.0", "0.0").replace("0.1\n", "-0.1\n") + "status = \"fitted\"\nreason = \"x\"\n";
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].starts_with("f.toml:10:10: reason: only a known gap"), "{p:#?}");
        assert!(p[1].starts_with("f.toml:7:13: published: expected a finite, non-zero number, found 0"), "{p:#?}");
        assert!(p[2].starts_with("f.toml:8:13: tolerance: expected a positive relative error"), "{p:#?}");
        let p = problems(&CASE.replace("0.1\n", "inf\n"));
        assert!(p[0].contains("tolerance") && p[0].contains("inf"), "{p:#?}");
        let p = problems(&format!("{CASE}status = \"known-gap\"\n"));
        assert!(p[0].starts_with("f.toml:9:10: status: a known gap needs a `reason`"), "{p:#?}");
    }

    #[test]
    fn a_second_case_missing_a_field_is_named_at_its_header() {
        let p = problems(&format!("{CASE}\n{}", CASE.replace("unit = \"TFLOP/s\"\n", "")));
        assert_eq!(p, ["f.toml:10:1: case: missing field `unit`"]);
    }

    #[test]
    fn names_repeated_across_files_are_reported_at_the_second() {
        let mut cases = parse_case_file("a.toml", CASE, None, false).unwrap();
        cases.extend(parse_case_file("b.toml", &format!("\n{CASE}"), None, false).unwrap());
        let p: Vec<String> = check_unique(&cases).iter().map(ToString::to_string).collect();
        assert_eq!(p, ["b.toml:3:8: name: case `c` is already defined at a.toml:1; names must be unique"]);
    }

    #[test]
    fn overrides_a_scenario_rejects_point_at_the_sets_line() {
        let text = CASE.replace("metric =", "sets = [\"workload.m=64\", \"workload.nope=1\"]\nmetric =");
        let cases = parse_case_file("f.toml", &text, None, false).unwrap();
        let p: Vec<String> = check_scenarios(&cases).iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with("f.toml:5:8: sets: case `c`: builtin:gemm-h800: --set workload.nope=1:"), "{p:#?}");
    }
}
