//! The `moesim` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use moesim::commands::Format;
use moesim::workloads::RunOptions;
use moesim::{builtin, load_scenario, run_scenario_observed, AppError, ScenarioRef};
use moesim_models::{DeviceSpec, ModelConfig};
use moesim_sim::{Observer, SimTime};

#[derive(Parser)]
#[command(
    name = "moesim",
    version,
    about = "Discrete-event simulator of GPU/NPU clusters running Mixture-of-Experts models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (a path or a built-in name; default: the built-in default).
    Run {
        scenario: Option<String>,
        /// Write summary.json, summary.md, timeline.csv, resources.csv and trace.json here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List the built-in scenarios.
    Scenarios,
    /// Describe a scenario's cluster: GPUs, switches, links, injection and bisection bandwidth.
    Topology {
        scenario: Option<String>,
        /// Write the cluster as a Graphviz DOT file.
        #[arg(long)]
        dot: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Device presets.
    Hardware {
        #[command(subcommand)]
        command: HardwareCommand,
    },
    /// Model presets.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Find the fewest nodes (prefill + decode units) of a serving scenario meeting p99 latency targets.
    Plan {
        /// A serving scenario (a path or a built-in name).
        scenario: String,
        /// Requests per second (Poisson arrivals; a trace's lengths are kept).
        #[arg(long)]
        rate: f64,
        #[arg(long = "ttft-p99-ms")]
        ttft_p99_ms: f64,
        #[arg(long = "tpot-p99-ms")]
        tpot_p99_ms: f64,
        /// Seconds of arrivals simulated per configuration (default: the scenario's, at most 600).
        #[arg(long = "duration-s")]
        duration_s: Option<f64>,
        /// Most units of either kind to try.
        #[arg(long = "max-units", default_value_t = 256)]
        max_units: u32,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run a scenario at every combination of values of one or more keys (a what-if grid): a table,
    /// and with --out sweep.csv and a chart per metric.
    Sweep {
        scenario: Option<String>,
        /// A key to vary and its values; repeat for a grid. The first is the charts' x axis.
        #[arg(long = "vary", value_name = "KEY=V1,V2,...", required = true)]
        varies: Vec<String>,
        /// Metrics to show and chart (default: the workload's headline metrics).
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// Write sweep.csv (every metric of every point) and sweep_METRIC.png/.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Compare the model with published figures; exits non-zero if a case fails.
    Validate(moesim::commands::validate::ValidateArgs),
}

#[derive(Subcommand)]
enum HardwareCommand {
    /// List the device presets.
    List,
    /// Show a preset's values and their sources.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List the model presets with their parameter counts.
    List,
    /// Show a preset's values, sources and derived counts.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { scenario, out, format, sets } => cmd_run(scenario, out, format, &sets),
        Command::Scenarios => cmd_scenarios(),
        Command::Topology { scenario, dot, sets, format } => cmd_topology(scenario, dot, &sets, format),
        Command::Hardware { command: HardwareCommand::List } => cmd_hardware_list(),
        Command::Hardware { command: HardwareCommand::Show { name, format } } => cmd_hardware_show(&name, format),
        Command::Models { command: ModelsCommand::List } => cmd_models_list(),
        Command::Models { command: ModelsCommand::Show { name, format } } => cmd_models_show(&name, format),
        Command::Plan { scenario, rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units, sets, format } => {
            cmd_plan(&scenario, rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units, &sets, format)
        }
        Command::Sweep { scenario, varies, metrics, out, sets, format } => {
            cmd_sweep(scenario, &varies, &metrics, out, &sets, format)
        }
        Command::Validate(args) => moesim::commands::validate::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn scenario_ref(arg: Option<String>) -> Result<ScenarioRef, AppError> {
    match arg {
        Some(a) => ScenarioRef::parse(&a),
        None => Ok(ScenarioRef::Builtin(builtin::DEFAULT_SCENARIO)),
    }
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

fn cmd_run(
    scenario: Option<String>,
    out: Option<PathBuf>,
    format: Format,
    sets: &[String],
) -> Result<ExitCode, AppError> {
    let scenario = scenario_ref(scenario)?;
    let started = Instant::now();
    let options = RunOptions { record_link_series: out.is_some(), figures: out.is_some() };
    let mut progress = Progress::new();
    let run = run_scenario_observed(&scenario, sets, &options, &mut progress);
    progress.finish();
    let (summary, outcome) = run?;
    let wall_s = started.elapsed().as_secs_f64();
    let mut written = Vec::new();
    if let Some(dir) = &out {
        written = moesim::output::write_dir(dir, &summary, &outcome).map_err(AppError::Failed)?;
    }
    let mut printed: Map<String, Value> = summary.clone();
    printed.insert("wall_s".into(), moesim::workloads::num(wall_s));
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
                if k == "scenario" || k == "notes" {
                    continue;
                }
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                let _ = writeln!(w, "  {k:<24} {shown}");
            }
            for note in &outcome.notes {
                let _ = writeln!(w, "  note: {note}");
            }
            for p in &written {
                let _ = writeln!(w, "  wrote {}", p.display());
            }
            let events_per_s = outcome.result.events as f64 / wall_s.max(1e-9);
            let _ = writeln!(
                w,
                "  ({} events in {:.3} s wall, {:.3e} events/s)",
                outcome.result.events, wall_s, events_per_s
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_sweep(
    scenario: Option<String>,
    varies: &[String],
    metrics: &[String],
    out: Option<PathBuf>,
    sets: &[String],
    format: Format,
) -> Result<ExitCode, AppError> {
    use moesim::sweep;
    let scenario = scenario_ref(scenario)?;
    let varies = varies.iter().map(|v| sweep::parse_vary(v)).collect::<Result<Vec<_>, _>>()?;
    sweep::check(&varies)?;
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
    let table = sweep::run_sweep(&scenario, sets, &varies, &|| {
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
    if let Some(dir) = &out {
        let mut csv = Vec::new();
        moesim_reports::sweep::write_csv(&mut csv, &table).map_err(|e| AppError::Failed(e.to_string()))?;
        let mut files = vec![("sweep.csv".to_owned(), csv)];
        let name = match &scenario {
            ScenarioRef::Builtin(n) => n.to_string(),
            ScenarioRef::Path(p) => p.display().to_string(),
        };
        for m in &shown {
            if let Some(chart) = moesim_reports::sweep::chart(&table, m, &format!("{name}: {m}")) {
                let fig = moesim_reports::plot::render(&chart).map_err(|e| AppError::Failed(e.to_string()))?;
                files.push((fig.png_name(), fig.png.clone()));
                files.push((fig.svg_name(), fig.svg.clone()));
            }
        }
        written = moesim::output::write_files(dir, &files).map_err(AppError::Failed)?;
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match format {
        Format::Json => {
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
            doc.insert("shown".into(), Value::from(shown.clone()));
            doc.insert("points".into(), Value::from(points));
            serde_json::to_writer(&mut w, &doc).map_err(|e| AppError::Failed(e.to_string()))?;
            let _ = writeln!(w);
        }
        Format::Text => {
            let header: Vec<String> = table.keys.iter().chain(&shown).cloned().collect();
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
            let line = |row: &[String]| {
                row.iter().zip(&widths).map(|(v, w)| format!("{v:>w$}")).collect::<Vec<_>>().join("  ")
            };
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
            for p in &written {
                let _ = writeln!(w, "  wrote {}", p.display());
            }
            let _ = writeln!(w, "  ({} points in {:.2} s wall)", table.rows.len(), started.elapsed().as_secs_f64());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_scenarios() -> Result<ExitCode, AppError> {
    for (name, text) in builtin::SCENARIOS {
        let default = if *name == builtin::DEFAULT_SCENARIO { " (default)" } else { "" };
        println!("{name}{default}\n    {}", builtin::description(text));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_topology(
    scenario: Option<String>,
    dot: Option<PathBuf>,
    sets: &[String],
    format: Format,
) -> Result<ExitCode, AppError> {
    let scenario = load_scenario(&scenario_ref(scenario)?, sets)?;
    let Some(spec) = &scenario.topology else {
        return Err(AppError::Input(vec![scenario.source.at_key("topology", "the scenario has no [topology] table")]));
    };
    let topology = moesim_topologies::build(spec)
        .map_err(|e| AppError::Input(vec![scenario.source.at_key("topology", e.to_string())]))?;
    let s = topology.summary();
    if let Some(path) = &dot {
        std::fs::write(path, moesim_topologies::dot::to_dot(&topology))
            .map_err(|e| AppError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string(&s).map_err(|e| AppError::Failed(e.to_string()))?),
        Format::Text => {
            println!("topology {} ({} device)", s.name, scenario.device.name);
            println!("  nodes                    {}", s.nodes);
            println!("  gpus                     {} ({} per node)", s.gpus, s.gpus_per_node);
            println!("  nics                     {}", s.nics);
            println!("  switches                 {}", s.switches);
            println!("  directed links           {}", s.directed_links);
            println!("  nvlink per gpu           {:.1} GB/s per direction (nominal)", s.gpu_nvlink_bytes_per_s / 1e9);
            println!(
                "  network per gpu          {:.1} Gb/s per direction (nominal)",
                s.gpu_network_bytes_per_s * 8.0 / 1e9
            );
            println!(
                "  bisection                {:.1} Tb/s per direction (nominal)",
                s.bisection_bytes_per_s * 8.0 / 1e12
            );
            if let Some(p) = &dot {
                println!("  wrote {}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_hardware_list() -> Result<ExitCode, AppError> {
    for name in DeviceSpec::preset_names() {
        let d = DeviceSpec::preset(name).map_err(|e| AppError::Failed(e.to_string()))?;
        println!(
            "{name:<8} {:<28} {:>3} SMs  {:>6.0} BF16 / {:>6} FP8 TFLOP/s  {:>5.0} GiB HBM at {:.2} TB/s",
            d.product,
            d.sms,
            d.bf16_tflops,
            d.fp8_tflops.map_or("-".to_owned(), |v| format!("{v:.0}")),
            d.hbm_gib,
            d.hbm_tb_per_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_hardware_show(name: &str, format: Format) -> Result<ExitCode, AppError> {
    let input_error = |e: moesim_models::ModelError| {
        AppError::Input(vec![moesim::diagnostics::Source::new("hardware show", "").plain(e.to_string())])
    };
    match format {
        Format::Text => print!("{}", DeviceSpec::preset_text(name).map_err(input_error)?),
        Format::Json => {
            let d = DeviceSpec::preset(name).map_err(input_error)?;
            println!("{}", serde_json::to_string(&d).map_err(|e| AppError::Failed(e.to_string()))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_models_list() -> Result<ExitCode, AppError> {
    for name in ModelConfig::preset_names() {
        let m = ModelConfig::preset(name).map_err(|e| AppError::Failed(e.to_string()))?;
        let p = m.params();
        println!(
            "{name:<18} {:<18} {:>3} layers  {:>7.1}B total  {:>6.1}B active  {:>8.0} KV bytes/token (BF16)",
            m.product,
            m.layers,
            p.total / 1e9,
            p.active / 1e9,
            m.kv_cache_bytes_per_token(2.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_models_show(name: &str, format: Format) -> Result<ExitCode, AppError> {
    let input_error = |e: moesim_models::ModelError| {
        AppError::Input(vec![moesim::diagnostics::Source::new("models show", "").plain(e.to_string())])
    };
    let m = ModelConfig::preset(name).map_err(input_error)?;
    let derived = moesim::workloads::model_summary(&m);
    match format {
        Format::Text => {
            print!("{}", ModelConfig::preset_text(name).map_err(input_error)?);
            println!("\n# derived");
            for (k, v) in &derived {
                println!("# {k:<36} {v}");
            }
        }
        Format::Json => {
            let mut obj = match serde_json::to_value(&m).map_err(|e| AppError::Failed(e.to_string()))? {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            obj.extend(derived);
            println!("{}", Value::Object(obj));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn cmd_plan(
    scenario: &str,
    rate: f64,
    ttft_p99_ms: f64,
    tpot_p99_ms: f64,
    duration_s: Option<f64>,
    max_units: u32,
    sets: &[String],
    format: Format,
) -> Result<ExitCode, AppError> {
    let scenario = load_scenario(&ScenarioRef::parse(scenario)?, sets)?;
    let scenario_duration = match &scenario.workload {
        moesim::workloads::Workload::Serving(w) => w.duration_s,
        _ => None,
    };
    let duration_s = duration_s.unwrap_or(scenario_duration.unwrap_or(600.0).min(600.0));
    let started = Instant::now();
    let target = moesim::plan::PlanTarget { rate_per_s: rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units };
    let plan = moesim::plan::plan(&scenario, &target)?;
    match format {
        Format::Json => {
            println!("{}", serde_json::to_string(&plan).map_err(|e| AppError::Failed(e.to_string()))?)
        }
        Format::Text => {
            println!(
                "plan {}: {rate} requests/s for {duration_s} s, p99 TTFT <= {ttft_p99_ms} ms, p99 TPOT <= {tpot_p99_ms} ms",
                scenario.name
            );
            println!(
                "  {:>7} {:>6} {:>6} {:>14} {:>14} {:>22}  meets",
                "prefill", "decode", "nodes", "ttft_p99_ms", "tpot_p99_ms", "output_tok_per_s_node"
            );
            for p in &plan.explored {
                println!(
                    "  {:>7} {:>6} {:>6} {:>14.1} {:>14.2} {:>22.0}  {}",
                    p.prefill_units,
                    p.decode_units,
                    p.nodes,
                    p.ttft_p99_ms,
                    p.tpot_p99_ms,
                    p.output_tokens_per_s_per_node,
                    if p.meets { "yes" } else { "no" }
                );
            }
            println!("{}", plan.verdict);
            println!("  ({} configurations in {:.1} s wall)", plan.explored.len(), started.elapsed().as_secs_f64());
        }
    }
    Ok(if plan.best.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
