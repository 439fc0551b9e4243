//! `moesim plan`: the fewest nodes of a serving deployment (prefill + decode
//! units) that meet p99 latency targets at a request rate, with every
//! configuration explored; for a training scenario, the plans (nodes and
//! parallelism) that train `--tokens` tokens fastest and cheapest
//! (`crate::plan::training`).

use std::process::ExitCode;
use std::time::Instant;

use super::{Format, Limits};
use crate::{load_scenario, AppError, ScenarioRef};

/// Arguments of `moesim plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// A serving or training scenario (a path or a built-in name).
    pub scenario: String,
    /// Requests per second (Poisson arrivals; a trace's lengths are kept). Serving.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Target p99 time to first token, ms. Serving.
    #[arg(long = "ttft-p99-ms")]
    pub ttft_p99_ms: Option<f64>,
    /// Target p99 time per output token, ms. Serving.
    #[arg(long = "tpot-p99-ms")]
    pub tpot_p99_ms: Option<f64>,
    /// Tokens to train on (e.g. 14.8e12). Training.
    #[arg(long)]
    pub tokens: Option<f64>,
    /// Most GPUs a training plan may use (default: the scenario's cluster); the search tries
    /// that many nodes, half and a quarter.
    #[arg(long = "max-gpus")]
    pub max_gpus: Option<u64>,
    /// Longest acceptable time to train, days: the best plan is then the cheapest meeting it
    /// (otherwise the fastest). Training.
    #[arg(long = "deadline-days")]
    pub deadline_days: Option<f64>,
    /// Training: write plan_frontier.png/.svg, plans.csv and plan_best.toml here.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
    /// Seconds of arrivals simulated per configuration (default: the scenario's, at most 600).
    #[arg(long = "duration-s")]
    pub duration_s: Option<f64>,
    /// Most units of either kind to try.
    #[arg(long = "max-units", default_value_t = 256)]
    pub max_units: u32,
    /// Override a scenario key by its dotted path, e.g. --set workload.input_len=2048.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub limits: Limits,
}

/// Runs `moesim plan`.
pub fn execute(args: PlanArgs) -> Result<ExitCode, AppError> {
    let reference = ScenarioRef::parse(&args.scenario)?;
    // The arguments' problems and the scenario's (with its --sets) at once.
    let mut problems =
        crate::plan::argument_problems(args.rate, args.ttft_p99_ms, args.tpot_p99_ms, args.duration_s, args.max_units);
    if let Err(AppError::Input(d)) = args.limits.max_memory_bytes() {
        problems.extend(d);
    }
    let scenario = match load_scenario(&reference, &args.sets) {
        Ok(s) if problems.is_empty() => s,
        Ok(_) => return Err(AppError::Input(problems)),
        Err(AppError::Input(d)) => {
            problems.extend(d);
            return Err(AppError::Input(problems));
        }
        Err(e) => return Err(e),
    };
    if scenario.workload.kind_name() == "training" {
        return execute_training(args, &reference, &scenario);
    }
    let PlanArgs { rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units, format, limits, .. } = args;
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| {
            AppError::Input(vec![scenario
                .setup
                .source
                .plain(format!("{name}: a serving plan needs --rate, --ttft-p99-ms and --tpot-p99-ms"))])
        })
    };
    let (rate, ttft_p99_ms, tpot_p99_ms) =
        (need(rate, "--rate")?, need(ttft_p99_ms, "--ttft-p99-ms")?, need(tpot_p99_ms, "--tpot-p99-ms")?);
    let scenario_duration = crate::plan::serving_workload(&scenario).ok().and_then(|w| w.duration_s);
    let duration_s = duration_s.unwrap_or(scenario_duration.unwrap_or(600.0).min(600.0));
    let started = Instant::now();
    let target = crate::plan::PlanTarget {
        rate_per_s: rate,
        ttft_p99_ms,
        tpot_p99_ms,
        duration_s,
        max_units,
        max_memory_bytes: Some(limits.max_memory_bytes()?),
    };
    let plan = crate::plan::plan(&scenario, &target)?;
    match format {
        Format::Json => {
            println!("{}", serde_json::to_string(&plan).map_err(|e| AppError::Failed(e.to_string()))?)
        }
        Format::Text => {
            println!(
                "plan {}: {rate} requests/s for {duration_s} s, p99 TTFT <= {ttft_p99_ms} ms, p99 TPOT <= {tpot_p99_ms} ms",
                scenario.setup.name
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

/// `moesim plan` on a training scenario (`base`: it loaded, its --sets applied).
fn execute_training(args: PlanArgs, scenario: &ScenarioRef, base: &crate::Scenario) -> Result<ExitCode, AppError> {
    let source = scenario.load()?;
    let Some(tokens) = args.tokens else {
        return Err(AppError::Input(vec![source
            .plain("a training plan needs --tokens N, the tokens to train on (e.g. --tokens 14.8e12)".to_string())]));
    };
    let out = args.out.as_deref().map(|d| crate::output::OutDir::prepare(d, args.force)).transpose()?;
    let target = crate::plan::training::TrainingTarget {
        tokens,
        max_gpus: args.max_gpus,
        deadline_days: args.deadline_days,
        max_memory_bytes: Some(args.limits.max_memory_bytes()?),
    };
    let started = Instant::now();
    let plan = crate::plan::training::plan(&source, &args.sets, &target)?;
    let wall = started.elapsed().as_secs_f64();
    let title = match scenario {
        ScenarioRef::Builtin(n) => n.to_string(),
        ScenarioRef::Path(p) => p.display().to_string(),
    };
    let mut written = Vec::new();
    if let Some(dir) = &out {
        let fail = |e: String| AppError::Failed(e);
        // Provenance: the searched scenario resolved (its --sets applied) and
        // its names in the frontier's caption.
        let fig = crate::plan::report::frontier_figure(
            &plan,
            &format!("{title}: time to train {tokens:.3e} tokens against cost"),
            &crate::provenance::caption(&base.setup),
        )
        .map_err(|e| fail(e.to_string()))?;
        let resolved = crate::provenance::resolved_toml(&base.setup).map_err(fail)?;
        let mut files = vec![
            (fig.png_name(), fig.png.clone()),
            (fig.svg_name(), fig.svg.clone()),
            ("plans.csv".to_owned(), crate::plan::report::csv(&plan).into_bytes()),
            (crate::provenance::RESOLVED_FILE.to_owned(), resolved.into_bytes()),
        ];
        if let Some(text) = &plan.best_scenario {
            files.push(("plan_best.toml".to_owned(), text.clone().into_bytes()));
        }
        written = dir.write_files(&files).map_err(fail)?;
    }
    match args.format {
        Format::Json => println!("{}", crate::plan::report::json(&plan)),
        Format::Text => {
            print!("{}", crate::plan::report::text(&plan, &title, wall));
            for p in written {
                println!("  wrote {}", p.display());
            }
        }
    }
    Ok(if plan.best.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
