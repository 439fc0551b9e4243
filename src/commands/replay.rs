//! `moesim replay TRACE...`: replays real traces (one Kineto JSON file per
//! rank, plain or gzip) without a scenario file. The command builds the
//! scenario in memory (`[workload] kind = "replay"`, the device the trace
//! names in `deviceProperties`, else H100, on the `h800-cluster` topology
//! with the device's link rates), then `--set` overrides it exactly as for
//! `moesim run` (`--set hardware.device=h200`, `--set
//! topology.ib_gbit_per_s=800`, `--set parallel.comm_sms=24`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::RunOutput;
use crate::diagnostics::Source;
use crate::replay::{device_preset_of, kineto};
use crate::AppError;

/// The device assumed when a trace does not name one with a preset.
pub const DEFAULT_DEVICE: &str = "h100";

/// Arguments of `moesim replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Trace files, one per rank (Kineto JSON, plain or .gz; or Chakra ET, name.<rank>.et).
    #[arg(required = true)]
    pub traces: Vec<PathBuf>,
    // `--out` adds kernel_classes.csv and replay_vs_trace.png/.svg to a run's files;
    // `--set` overrides the scenario built for the traces (e.g. hardware.device=h200).
    #[command(flatten)]
    pub output: RunOutput,
}

/// The scenario `moesim replay` runs for `traces`, and a note on its device.
pub fn scenario_text(traces: &[PathBuf]) -> (String, String) {
    let traced = traces.first().and_then(|t| kineto::sniff_device_name(t));
    let preset = traced.as_deref().and_then(device_preset_of);
    let note = match (&traced, preset) {
        (Some(name), Some(p)) => format!("device {p} (the trace's {name})"),
        (Some(name), None) => format!("device {DEFAULT_DEVICE} (default: the trace's {name} has no preset)"),
        (None, _) => format!("device {DEFAULT_DEVICE} (default: the trace names no device)"),
    };
    let quoted: Vec<String> = traces.iter().map(|t| toml_string(&t.display().to_string())).collect();
    let stem = traces.first().and_then(|t| t.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = format!(
        "name = {}\n\n[hardware]\ndevice = \"{}\"\n\n[topology]\npreset = \"h800-cluster\"\n\n[workload]\nkind = \"replay\"\ntraces = [{}]\n",
        toml_string(&format!("replay {stem}")),
        preset.unwrap_or(DEFAULT_DEVICE),
        quoted.join(", ")
    );
    (text, note)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Runs `moesim replay`.
pub fn execute(args: ReplayArgs) -> Result<ExitCode, AppError> {
    let ReplayArgs { traces, output } = args;
    let (out_dir, options, window) = output.prepare()?;
    let started = Instant::now();
    let (text, device_note) = scenario_text(&traces);
    let (mut summary, mut outcome) =
        crate::run_source(Source::new("moesim replay", text), &output.sets, &options, &mut moesim_sim::Quiet)?;
    let note = format!("scenario built for the traces: {device_note}");
    if let Some(serde_json::Value::Array(notes)) = summary.get_mut("notes") {
        notes.insert(0, serde_json::Value::from(note.clone()));
    }
    outcome.notes.insert(0, note);
    let wall_s = started.elapsed().as_secs_f64();
    let mut written = Vec::new();
    if let Some(dir) = &out_dir {
        written = dir.write_run(&mut summary, &mut outcome, window).map_err(AppError::Failed)?;
    }
    super::run::print_outcome(output.format, &summary, &outcome, &written, wall_s)?;
    Ok(ExitCode::SUCCESS)
}
