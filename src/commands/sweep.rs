//! `moesim sweep`: a what-if grid over one or more keys (`--vary`) or a
//! sweep file, run in parallel, rendered as a table or JSON and, with
//! `--out`, a resumable `results.jsonl`, `sweep.csv` and a chart per metric;
//! `--shard I/N` runs one slice and `--emit slurm|k8s` prints the job that
//! runs them all.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use moesim_sim::{Observer, SimTime};
use rayon::prelude::*;
use serde_json::{Map, Value};

use super::{scenario_ref, Format, Limits};
use crate::sweep;
use crate::sweep::file::{is_sweep_file, SweepDef};
use crate::sweep::results::{self, ResultsLog};
use crate::sweep::shard::Shard;
use crate::workloads::RunOptions;
use crate::AppError;
use moesim_reports::sweep::SweepTable;

/// Arguments of `moesim sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// A scenario (a path or a built-in name) varied with --vary, or a sweep file (TOML with
    /// [[grid]] / [[zip]] axes; see the README).
    pub scenario: Option<String>,
    /// A key to vary and its values; repeat for a grid. The first is the charts' x axis.
    #[arg(long = "vary", value_name = "KEY=V1,V2,...")]
    pub varies: Vec<String>,
    /// Metrics to show and chart (default: the sweep file's, else the workload's headline metrics).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Write results.jsonl (one line per finished point: a rerun resumes), sweep.csv and
    /// sweep_METRIC.png/.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a scenario key at every point, by its dotted path, e.g. --set topology.nodes=16.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
    /// Run only the I-th of N interleaved slices of the points (0 <= I < N). Default: the
    /// scheduler's, from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, or from
    /// JOB_COMPLETION_INDEX and MOESIM_SHARDS (Kubernetes).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Print, instead of running, a job that runs the sweep file's shards: an sbatch job-array
    /// script (slurm) or a Kubernetes Indexed Job manifest in JSON (k8s).
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Shards (array tasks, pods) of --emit (default: one per point, at most 16).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Container image of --emit k8s (one with `moesim` on its PATH).
    #[arg(long)]
    pub image: Option<String>,
    /// PersistentVolumeClaim of --emit k8s, mounted at /results: it holds the sweep file (and any
    /// scenario file it names) and receives each shard's results.
    #[arg(long, default_value = "moesim-results")]
    pub claim: String,
    #[command(flatten)]
    pub limits: Limits,
}

/// What `--emit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    Slurm,
    K8s,
}

fn input(place: &str, m: String) -> AppError {
    AppError::Input(vec![crate::diagnostics::Source::new(place, "").plain(m)])
}

/// The sweep a command line defines: a sweep file, or a scenario and
/// `--vary` axes, with the command line's overrides, metrics and folder.
fn definition(args: &SweepArgs) -> Result<SweepDef, AppError> {
    let as_file = args.scenario.as_deref().map(std::path::Path::new).filter(|p| p.is_file() && is_sweep_file(p));
    let mut def = match as_file {
        Some(path) => {
            if !args.varies.is_empty() {
                return Err(input(
                    "--vary",
                    format!(
                        "{} is a sweep file: give its axes there ([[grid]] / [[zip]]), not with --vary",
                        path.display()
                    ),
                ));
            }
            let mut d = sweep::file::load(path)?;
            d.sets.extend(args.sets.iter().cloned());
            d
        }
        None => {
            let scenario = scenario_ref(args.scenario.clone())?;
            // Every bad --vary (and --max-memory-gib) at once.
            let mut problems = Vec::new();
            let mut varies = Vec::new();
            for v in &args.varies {
                match sweep::parse_vary(v) {
                    Ok(v) => varies.push(v),
                    Err(AppError::Input(d)) => problems.extend(d),
                    Err(e) => return Err(e),
                }
            }
            if let Err(AppError::Input(d)) = args.limits.max_memory_bytes() {
                problems.extend(d);
            }
            if !problems.is_empty() {
                return Err(AppError::Input(problems));
            }
            SweepDef::from_varies(scenario, &args.sets, &varies)?
        }
    };
    if !args.metrics.is_empty() {
        def.metrics = args.metrics.clone();
    }
    if args.out.is_some() {
        def.out = args.out.clone();
    }
    Ok(def)
}

/// Prints the `--emit` job of a sweep file.
fn emit(args: &SweepArgs, def: &SweepDef, kind: Emit) -> Result<ExitCode, AppError> {
    let Some(file) = &def.file else {
        return Err(input("--emit", "expected a sweep file (the jobs read it), found a scenario with --vary".into()));
    };
    let shards = args.shards.unwrap_or(def.points.len().min(16));
    if shards == 0 || shards > def.points.len() {
        return Err(input("--shards", format!("expected 1 to {} (the points), found {shards}", def.points.len())));
    }
    let stem = file.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    let name: String = format!("moesim-{stem}")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_end_matches('-').to_owned();
    match kind {
        Emit::Slurm => {
            let Some(out) = &def.out else {
                return Err(input(
                    "--out",
                    "--emit slurm needs the folder the shards write under (--out or out =)".into(),
                ));
            };
            let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let bin = std::env::current_exe().map_err(|e| AppError::Failed(e.to_string()))?;
            print!("{}", sweep::shard::slurm_script(&bin, &abs(file), &abs(out), shards, &name));
        }
        Emit::K8s => {
            let Some(image) = &args.image else {
                return Err(input("--image", "--emit k8s needs the container image to run (--image NAME:TAG)".into()));
            };
            let file_name = file.file_name().map_or("sweep.toml".into(), |s| s.to_string_lossy().into_owned());
            let job = sweep::shard::k8s_job(image, &args.claim, &file_name, shards, &name);
            let text = serde_json::to_string_pretty(&job).map_err(|e| AppError::Failed(e.to_string()))?;
            println!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A point's results line and the input error that kept it from running, or
/// the sweep's failure.
type PointResult = Result<(Map<String, Value>, Option<AppError>), AppError>;

/// Progress within one point (a bar per running point, under the sweep's).
struct PointProgress {
    bar: Option<ProgressBar>,
}

impl Observer for PointProgress {
    fn progress(&mut self, finished: usize, total: usize, _now: SimTime) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(finished as u64);
        }
    }
}

/// Runs `moesim sweep`.
pub fn execute(args: SweepArgs) -> Result<ExitCode, AppError> {
    let def = definition(&args)?;
    if let Some(kind) = args.emit {
        return emit(&args, &def, kind);
    }
    let shard = match &args.shard {
        Some(s) => Some(Shard::parse("--shard", s)?),
        None => Shard::from_env(|k| std::env::var(k).ok())?,
    };
    let header = def.header();
    let log = def.out.as_deref().map(|d| ResultsLog::open(d, &def, args.force)).transpose()?;
    let (log, mut done) = match log {
        Some((l, d)) => (Some(l), d),
        None => (None, BTreeMap::new()),
    };
    let pending: Vec<usize> =
        (0..def.points.len()).filter(|&i| shard.is_none_or(|s| s.owns(i)) && !done.contains_key(&i)).collect();
    let terminal = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let bar = terminal.then(|| {
        let b = multi.add(ProgressBar::new(pending.len() as u64));
        b.set_style(
            ProgressStyle::with_template("{spinner} sweeping [{bar:30}] {pos}/{len} points ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    let started = Instant::now();
    let options = RunOptions { max_memory_bytes: Some(args.limits.max_memory_bytes()?), ..RunOptions::default() };
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, PointResult)> = pending
        .par_iter()
        .map(|&i| {
            let mut observer = PointProgress {
                bar: terminal.then(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(
                        ProgressStyle::with_template("  point {prefix}: [{bar:30}] {pos}/{len} tasks")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    b.set_prefix(i.to_string());
                    b
                }),
            };
            let r = sweep::run_point(&def, i, &options, &mut observer);
            if let Some(b) = observer.bar {
                b.finish_and_clear();
                multi.remove(&b);
            }
            let r = r.and_then(|(line, e)| {
                if let Some(log) = &log {
                    log.append(&line)?;
                }
                Ok((line, e))
            });
            let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            match &bar {
                Some(b) => b.inc(1),
                None if log.is_some() => eprintln!("point {i} done ({n} of {} to run)", pending.len()),
                None => {}
            }
            (i, r)
        })
        .collect();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut first_errors = BTreeMap::new();
    for (i, r) in results {
        let (line, e) = r?;
        done.insert(i, line);
        if let Some(e) = e {
            first_errors.insert(i, e);
        }
    }
    let complete = done.len() == def.points.len();
    let table = results::table(&def.keys, &done);
    if complete && table.rows.iter().all(|r| r.error.is_some()) {
        // No point could run: every distinct input problem of the points run
        // now, at once; else the first error.
        let mut problems = Vec::new();
        for e in first_errors.values() {
            if let AppError::Input(ds) = e {
                for d in ds {
                    if !problems.contains(d) {
                        problems.push(d.clone());
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(AppError::Input(problems));
        }
        return Err(match first_errors.into_iter().next() {
            Some((0, e)) => e,
            _ => input(&def.label, table.rows[0].error.clone().unwrap_or_default()),
        });
    }
    let shown = if table.rows.iter().any(|r| r.error.is_none()) {
        sweep::shown_metrics(&table, &def.metrics)?
    } else {
        Vec::new()
    };
    let written = match &def.out {
        Some(dir) => results::finish(dir, &header, &def.label, &done, complete.then_some((&table, &shown[..])))?,
        None => Vec::new(),
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match args.format {
        Format::Json => render_json(&mut w, &table, &shown)?,
        Format::Text => render_text(&mut w, &table, &shown, &written, started.elapsed().as_secs_f64()),
    }
    if let Some(s) = shard {
        let mine = (0..def.points.len()).filter(|&i| s.owns(i)).count();
        eprintln!(
            "shard {}/{}: {} of the sweep's {} points are this shard's, {} run now; `moesim merge` joins the shards' folders",
            s.index,
            s.count,
            mine,
            def.points.len(),
            pending.len()
        );
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
