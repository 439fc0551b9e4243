//! `moesim report RUN_DIR... -o report.html`: one self-contained HTML page
//! (inline SVG and CSS, no script, nothing fetched) of one or more `--out`
//! folders: each run's summary, provenance, plots, notes (its assumptions)
//! and resolved scenario, and the validation cases of the mechanisms it used
//! (the built-in cases whose scenario runs the same `[workload] kind`). With
//! several folders the runs sit side by side, after a table comparing their
//! summaries; `--validate` also runs those cases and shows simulated against
//! published.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::diagnostics::Source;
use crate::validate::{builtin_cases, run_cases, Case, Status};
use crate::{files, AppError};

/// Arguments of `moesim report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Folders written by `moesim run --out` (or `replay --out`); several are compared side by side.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
    /// Also run the matching validation cases and show simulated against published (slower).
    #[arg(long)]
    pub validate: bool,
}

/// The validation cases shown for one workload kind, and their results
/// when `--validate` ran them.
type KindCases<'a> = (String, Vec<&'a Case>, Option<Vec<crate::validate::CaseResult>>);

/// One run folder, read.
struct RunDir {
    dir: PathBuf,
    summary: Map<String, Value>,
    resolved: Option<String>,
    /// `(file name, SVG text)`, by name.
    svgs: Vec<(String, String)>,
}

fn input_error(origin: &Path, message: impl Into<String>) -> AppError {
    AppError::Input(vec![Source::new(origin.display().to_string(), "").plain(message.into())])
}

fn read_run(dir: &Path) -> Result<RunDir, AppError> {
    if !dir.is_dir() {
        return Err(input_error(dir, "expected a folder written by `moesim run --out`"));
    }
    let summary_path = dir.join("summary.json");
    let text = files::read_text(&summary_path, files::MAX_CONFIG_BYTES).map_err(|e| {
        input_error(&summary_path, format!("{e}; expected a folder written by `moesim run --out` (a sweep's has none)"))
    })?;
    let summary: Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| input_error(&summary_path, format!("expected a moesim summary (a JSON object): {e}")))?;
    let resolved = files::read_text(&dir.join(crate::provenance::RESOLVED_FILE), files::MAX_CONFIG_BYTES).ok();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| input_error(dir, format!("cannot read: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .collect();
    names.sort();
    let mut svgs = Vec::new();
    for p in names {
        let svg = files::read_text(&p, 64 << 20).map_err(|e| input_error(&p, e))?;
        let Some(at) = svg.find("<svg") else { return Err(input_error(&p, "expected an SVG file")) };
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        svgs.push((name, svg[at..].to_owned()));
    }
    Ok(RunDir { dir: dir.to_path_buf(), summary, resolved, svgs })
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A summary value as table text.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The scalar keys of a summary (not notes, provenance or nested tables).
fn scalar_rows(summary: &Map<String, Value>) -> Vec<(&String, &Value)> {
    summary.iter().filter(|(k, v)| k.as_str() != "notes" && !v.is_object() && !v.is_array()).collect()
}

/// The validation cases whose scenario runs `kind`, with their scenario's name.
fn cases_of_kind<'a>(cases: &'a [Case], kind: &str) -> Vec<&'a Case> {
    cases
        .iter()
        .filter(|c| {
            c.scenario_ref
                .load()
                .ok()
                .and_then(|s| s.text.parse::<toml::Table>().ok())
                .is_some_and(|t| t.get("workload").and_then(|w| w.get("kind")).and_then(|k| k.as_str()) == Some(kind))
        })
        .collect()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:2400px}\
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}\
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.runs{display:grid;gap:1.5em}.run{min-width:0}\
figure{margin:.5em 0 1.5em 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:.8em}\
.pass{color:#060}.fail{color:#a00}";

/// Writes the page for `runs`; `validation` holds the cases shown per kind
/// and, with `--validate`, their results.
fn render(runs: &[RunDir], validation: &[KindCases<'_>]) -> String {
    let mut h = String::new();
    let names: Vec<String> = runs
        .iter()
        .map(|r| r.summary.get("scenario").map(shown).unwrap_or_else(|| r.dir.display().to_string()))
        .collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>moesim report: {}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>moesim report</h1>\n",
        esc(&names.join(" vs "))
    );
    let _ = writeln!(
        h,
        "<p>{} run{} from {}. Every figure is a simulation; the assumptions each run made are its notes, and the \
         validation section shows how the mechanisms it used compare with published measurements.</p>",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        runs.iter()
            .map(|r| format!("<code>{}</code>", esc(&r.dir.display().to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if runs.len() > 1 {
        h.push_str("<h2>Comparison</h2>\n<table>\n<tr><th>key</th>");
        for n in &names {
            let _ = write!(h, "<th>{}</th>", esc(n));
        }
        h.push_str("</tr>\n");
        let mut keys: Vec<String> = Vec::new();
        for r in runs {
            for p in ["device", "topology", "model", "plan", "overrides"] {
                let k = format!("provenance.{p}");
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for (k, _) in scalar_rows(&r.summary) {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        for k in &keys {
            let _ = write!(h, "<tr><th>{}</th>", esc(k));
            for r in runs {
                let v = match k.strip_prefix("provenance.") {
                    Some(p) => r.summary.get("provenance").and_then(|o| o.get(p)),
                    None => r.summary.get(k),
                };
                let class = if v.is_some_and(Value::is_number) { " class=\"num\"" } else { "" };
                let _ = write!(h, "<td{class}>{}</td>", esc(&v.map(shown).unwrap_or_default()));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }

    let _ = writeln!(h, "<div class=\"runs\" style=\"grid-template-columns:repeat({},minmax(0,1fr))\">", runs.len());
    for (r, name) in runs.iter().zip(&names) {
        let _ = writeln!(h, "<section class=\"run\">\n<h2>{}</h2>", esc(name));
        h.push_str("<h3>Provenance</h3>\n<table>\n");
        if let Some(Value::Object(p)) = r.summary.get("provenance") {
            for (k, v) in p {
                let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&shown(v)));
            }
        } else {
            h.push_str("<tr><td>none recorded (a folder written before moesim recorded provenance)</td></tr>\n");
        }
        h.push_str("</table>\n<h3>Summary</h3>\n<table>\n");
        for (k, v) in scalar_rows(&r.summary) {
            let class = if v.is_number() { " class=\"num\"" } else { "" };
            let _ = writeln!(h, "<tr><th>{}</th><td{class}>{}</td></tr>", esc(k), esc(&shown(v)));
        }
        if let Some(Value::Object(w)) = r.summary.get("trace_window") {
            for (k, v) in w {
                let _ =
                    writeln!(h, "<tr><th>trace_window.{}</th><td class=\"num\">{}</td></tr>", esc(k), esc(&shown(v)));
            }
        }
        h.push_str("</table>\n");
        if !r.svgs.is_empty() {
            h.push_str("<h3>Plots</h3>\n");
            for (file, svg) in &r.svgs {
                let _ = writeln!(h, "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>", esc(file));
            }
        }
        h.push_str("<h3>Notes and assumptions</h3>\n<ul>\n");
        for note in r.summary.get("notes").and_then(Value::as_array).into_iter().flatten() {
            let _ = writeln!(h, "<li>{}</li>", esc(&shown(note)));
        }
        h.push_str("</ul>\n");
        if let Some(text) = &r.resolved {
            let _ = writeln!(
                h,
                "<details>\n<summary>Scenario as run ({})</summary>\n<pre>{}</pre>\n</details>",
                crate::provenance::RESOLVED_FILE,
                esc(text)
            );
        }
        h.push_str("</section>\n");
    }
    h.push_str("</div>\n<h2>Validation</h2>\n");
    for (kind, cases, results) in validation {
        let _ = writeln!(
            h,
            "<h3>Cases of kind <code>{}</code></h3>\n<p>The built-in validation cases (validation/*.toml) whose scenario \
             runs the same workload kind, and so the same mechanisms, as {}. {}</p>",
            esc(kind),
            if runs.len() == 1 { "this run" } else { "a run above" },
            if results.is_some() {
                "Simulated values are from this moesim, run now."
            } else {
                "Published values and tolerances; `moesim report --validate` (or `moesim validate`) runs them."
            }
        );
        if cases.is_empty() {
            h.push_str("<p>No validation case exercises this kind yet: its figures are not checked against a measurement.</p>\n");
            continue;
        }
        h.push_str("<table>\n<tr><th>case</th><th>metric</th><th>published</th>");
        if results.is_some() {
            h.push_str("<th>simulated</th><th>error</th>");
        }
        h.push_str("<th>tolerance</th><th>status</th><th>source</th></tr>\n");
        for (i, c) in cases.iter().enumerate() {
            let status = match c.status {
                Status::Ok => "compared".to_owned(),
                Status::Fitted => "fitted (a constant was calibrated on it)".to_owned(),
                Status::KnownGap => format!("known gap: {}", c.reason.as_deref().unwrap_or("")),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{} {}</td>",
                esc(&c.name),
                esc(&c.metric),
                c.published,
                esc(&c.unit)
            );
            if let Some(res) = results.as_ref().and_then(|r| r.get(i)) {
                let sim = res.simulated.map_or_else(
                    || res.skipped.clone().or_else(|| res.failure.clone()).unwrap_or_default(),
                    |v| format!("{v:.4}"),
                );
                let err = res.error_pct.map_or(String::new(), |e| format!("{e:+.1} %"));
                let class = if res.pass { "pass" } else { "fail" };
                let _ = write!(h, "<td class=\"num\">{}</td><td class=\"num {class}\">{}</td>", esc(&sim), esc(&err));
            }
            let _ = writeln!(
                h,
                "<td class=\"num\">{:.0} %</td><td>{}</td><td>{}</td></tr>",
                c.tolerance * 100.0,
                esc(&status),
                esc(&c.source)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(
        h,
        "<p><small>Written by moesim {} (commit {}).</small></p>\n</body>\n</html>",
        crate::provenance::VERSION,
        crate::provenance::GIT_COMMIT
    );
    h
}

/// Runs `moesim report`.
pub fn execute(args: ReportArgs) -> Result<ExitCode, AppError> {
    let runs = args.runs.iter().map(|d| read_run(d)).collect::<Result<Vec<_>, _>>()?;
    let cases = builtin_cases().map_err(AppError::Input)?;
    let mut kinds: Vec<String> = Vec::new();
    for r in &runs {
        if let Some(k) = r.summary.get("workload").and_then(Value::as_str) {
            if !kinds.iter().any(|x| x == k) {
                kinds.push(k.to_owned());
            }
        }
    }
    let validation: Vec<_> = kinds
        .into_iter()
        .map(|k| {
            let of_kind = cases_of_kind(&cases, &k);
            let results = args.validate.then(|| run_cases(of_kind.iter().copied()));
            (k, of_kind, results)
        })
        .collect();
    let html = render(&runs, &validation);
    std::fs::write(&args.output, html)
        .map_err(|e| AppError::Failed(format!("cannot write {}: {e}", args.output.display())))?;
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
