//! `moesim sweep`: a what-if grid over one or more keys, run in parallel,
//! rendered as a table or JSON and, with `--out`, `sweep.csv` and a chart per
//! metric.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use super::{scenario_ref, Format, Limits};
use crate::output::OutDir;
use crate::sweep;
use crate::workloads::RunOptions;
use crate::{AppError, ScenarioRef};
use moesim_reports::sweep::SweepTable;

/// Arguments of `moesim sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// A scenario: a path or a built-in name (`moesim scenarios`); default: the built-in default.
    pub scenario: Option<String>,
    /// A key to vary and its values; repeat for a grid. The first is the charts' x axis.
    #[arg(long = "vary", value_name = "KEY=V1,V2,...", required = true)]
    pub varies: Vec<String>,
    /// Metrics to show and chart (default: the workload's headline metrics).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Write sweep.csv (every metric of every point) and sweep_METRIC.png/.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16 (repeatable;
    /// `moesim keys` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print text or one JSON object (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: Limits,
}

/// Runs `moesim sweep`.
pub fn execute(args: SweepArgs) -> Result<ExitCode, AppError> {
    let SweepArgs { scenario, varies, metrics, out, sets, format, force, limits } = args;
    let (varies, metrics, sets) = (&varies[..], &metrics[..], &sets[..]);
    let scenario = scenario_ref(scenario)?;
    // Every bad --vary (and --max-memory-gib) at once.
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for v in varies {
        match sweep::parse_vary(v) {
            Ok(v) => parsed.push(v),
            Err(AppError::Input(d)) => problems.extend(d),
            Err(e) => return Err(e),
        }
    }
    if let Err(AppError::Input(d)) = limits.max_memory_bytes() {
        problems.extend(d);
    }
    if problems.is_empty() {
        sweep::check(&parsed)?;
    } else {
        return Err(AppError::Input(problems));
    }
    let varies = parsed;
    let out_dir = out.as_deref().map(|d| OutDir::prepare(d, force)).transpose()?;
    let n = sweep::points(&varies).len();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(n as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} sweeping [{bar:30}] {pos}/{len} points ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    let started = Instant::now();
    let options = RunOptions { max_memory_bytes: Some(limits.max_memory_bytes()?), ..RunOptions::default() };
    let table = sweep::run_sweep(&scenario, sets, &varies, &options, &|| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let table = table?;
    let shown = sweep::shown_metrics(&table, metrics)?;
    let mut written = Vec::new();
    if let Some(dir) = &out_dir {
        let mut csv = Vec::new();
        moesim_reports::sweep::write_csv(&mut csv, &table).map_err(|e| AppError::Failed(e.to_string()))?;
        let mut files = vec![("sweep.csv".to_owned(), csv)];
        let name = match &scenario {
            ScenarioRef::Builtin(n) => n.to_string(),
            ScenarioRef::Path(p) => p.display().to_string(),
        };
        // The base scenario (before the varied keys): its resolved file, and
        // the caption of every chart.
        let varied: Vec<String> = varies.iter().map(|v| v.key.clone()).collect();
        let mut caption = format!("varied: {}", varied.join(", "));
        if let Ok(base) = crate::load_scenario(&scenario, sets) {
            let resolved = crate::provenance::resolved_toml(&base.setup).map_err(AppError::Failed)?;
            files.push((crate::provenance::RESOLVED_FILE.to_owned(), resolved.into_bytes()));
            caption = format!("{} | {caption}", crate::provenance::caption(&base.setup));
        }
        for m in &shown {
            if let Some(chart) = moesim_reports::sweep::chart(&table, m, &format!("{name}: {m}")) {
                let chart = chart.with_caption(caption.clone());
                let fig = moesim_reports::plot::render(&chart).map_err(|e| AppError::Failed(e.to_string()))?;
                files.push((fig.png_name(), fig.png.clone()));
                files.push((fig.svg_name(), fig.svg.clone()));
            }
        }
        written = dir.write_files(&files).map_err(AppError::Failed)?;
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match format {
        Format::Json => render_json(&mut w, &table, &shown)?,
        Format::Text => render_text(&mut w, &table, &shown, &written, started.elapsed().as_secs_f64()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The sweep as one JSON document: the varied keys, the shown metrics, and
/// every point's values, metrics and error.
fn render_json(w: &mut impl Write, table: &SweepTable, shown: &[String]) -> Result<(), AppError> {
    let points: Vec<Value> = table
        .rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (k, v) in table.keys.iter().zip(&r.values) {
                m.insert(k.clone(), Value::from(v.clone()));
            }
            for (k, v) in table.metrics.iter().zip(&r.metrics) {
                m.insert(k.clone(), v.clone().unwrap_or(Value::Null));
            }
            if let Some(e) = &r.error {
                m.insert("error".into(), Value::from(e.clone()));
            }
            Value::Object(m)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("varied".into(), Value::from(table.keys.clone()));
    doc.insert("shown".into(), Value::from(shown.to_vec()));
    doc.insert("points".into(), Value::from(points));
    serde_json::to_writer(&mut *w, &doc).map_err(|e| AppError::Failed(e.to_string()))?;
    let _ = writeln!(w);
    Ok(())
}

/// The sweep as an aligned table, invalid points with their reason.
fn render_text(w: &mut impl Write, table: &SweepTable, shown: &[String], written: &[PathBuf], wall_s: f64) {
    let header: Vec<String> = table.keys.iter().chain(shown).cloned().collect();
    let cells: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| {
            let metric = |m: &String| {
                let i = table.metrics.iter().position(|x| x == m).expect("shown metrics are reported");
                match &r.metrics[i] {
                    Some(Value::Number(x)) => x.as_f64().map_or_else(|| x.to_string(), |f| format!("{f:.4}")),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "-".into(),
                }
            };
            r.values.iter().cloned().chain(shown.iter().map(metric)).collect()
        })
        .collect();
    let errors: Vec<(usize, &String)> =
        table.rows.iter().enumerate().filter_map(|(i, r)| r.error.as_ref().map(|e| (i, e))).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| cells.iter().map(|row| row[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |row: &[String]| row.iter().zip(&widths).map(|(v, w)| format!("{v:>w$}")).collect::<Vec<_>>().join("  ");
    let _ = writeln!(w, "{}", line(&header));
    for (i, row) in cells.iter().enumerate() {
        match errors.iter().find(|(j, _)| *j == i) {
            Some((_, e)) => {
                let keys = line(&row[..table.keys.len()]);
                let _ = writeln!(w, "{keys}  invalid: {e}");
            }
            None => {
                let _ = writeln!(w, "{}", line(row));
            }
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(w, "  {} of {} points invalid (see above)", errors.len(), cells.len());
    }
    for p in written {
        let _ = writeln!(w, "  wrote {}", p.display());
    }
    let _ = writeln!(w, "  ({} points in {:.2} s wall)", table.rows.len(), wall_s);
}
