//! `moesim run`: one scenario, its summary printed (text or JSON) and, with
//! `--out`, every report file written; a progress bar on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use moesim_sim::{Observer, SimTime};
use serde_json::{Map, Value};

use super::{scenario_ref, Format, RunOutput};
use crate::{run_scenario_observed, AppError};

/// Arguments of `moesim run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario: a path or a built-in name (`moesim scenarios`); default: the built-in default.
    pub scenario: Option<String>,
    #[command(flatten)]
    pub output: RunOutput,
}

/// Runs `moesim run`.
pub fn execute(args: RunArgs) -> Result<ExitCode, AppError> {
    let RunArgs { scenario, output } = args;
    let scenario = scenario_ref(scenario)?;
    let (out_dir, options, window) = output.prepare()?;
    let started = Instant::now();
    let mut progress = Progress::new();
    let run = run_scenario_observed(&scenario, &output.sets, &options, &mut progress);
    progress.finish();
    let (mut summary, mut outcome) = run?;
    let wall_s = started.elapsed().as_secs_f64();
    let mut written = Vec::new();
    if let Some(dir) = &out_dir {
        written = dir.write_run(&mut summary, &mut outcome, window).map_err(AppError::Failed)?;
    }
    print_outcome(output.format, &summary, &outcome, &written, wall_s)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a finished run's summary (text or JSON), its notes and the files
/// written, with the wall-clock figures (stdout only).
pub(crate) fn print_outcome(
    format: Format,
    summary: &Map<String, Value>,
    outcome: &crate::workloads::Outcome,
    written: &[PathBuf],
    wall_s: f64,
) -> Result<(), AppError> {
    let mut printed: Map<String, Value> = summary.clone();
    printed.insert("wall_s".into(), crate::workloads::num(wall_s));
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer(&mut w, &printed).map_err(|e| AppError::Failed(e.to_string()))?;
            let _ = writeln!(w);
        }
        Format::Text => {
            let _ = writeln!(w, "scenario {}", printed["scenario"].as_str().unwrap_or(""));
            for (k, v) in &printed {
                // Provenance (with the build's commit) is in summary.json and --format json.
                if k == "scenario" || k == "notes" || k == "provenance" {
                    continue;
                }
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                let _ = writeln!(w, "  {k:<24} {shown}");
            }
            for note in printed.get("notes").and_then(Value::as_array).into_iter().flatten() {
                let _ = writeln!(w, "  note: {}", note.as_str().unwrap_or_default());
            }
            for p in written {
                let _ = writeln!(w, "  wrote {}", p.display());
            }
            let r = &outcome.result;
            let per_s = |n: u64| n as f64 / wall_s.max(1e-9);
            let _ = writeln!(w, "  ({} events in {:.3} s wall, {:.3e} events/s)", r.events, wall_s, per_s(r.events));
            if r.flows_started > 0 {
                // One event can finish millions of flows: the solver's work
                // beside the event rate.
                let _ = writeln!(
                    w,
                    "  ({} flows, {} rate recomputations, {} flows re-rated in {:.3} s wall: {:.3e} flows/s, \
                     {:.3e} recomputations/s, {:.3e} flows re-rated/s)",
                    r.flows_started,
                    r.flow_recomputes,
                    r.flows_rerated,
                    wall_s,
                    per_s(r.flows_started),
                    per_s(r.flow_recomputes),
                    per_s(r.flows_rerated)
                );
                if r.flows_finished_early > 0 {
                    let _ = writeln!(
                        w,
                        "  ({} flows finished early under workload.flow_finish_tolerance)",
                        r.flows_finished_early
                    );
                }
            }
        }
    }
    Ok(())
}

/// A progress bar on stderr for long runs (hidden when stderr is not a terminal).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} simulating [{bar:30}] {pos}/{len} tasks, t = {msg} ({elapsed})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        });
        Progress { bar }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn progress(&mut self, finished: usize, total: usize, now: SimTime) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(finished as u64);
            b.set_message(format!("{:.1} us", now.as_us_f64()));
        }
    }
}
