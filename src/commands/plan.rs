//! `moesim plan`: the fewest nodes of a serving deployment (prefill + decode
//! units) that meet p99 latency targets at a request rate, with every
//! configuration explored.

use std::process::ExitCode;
use std::time::Instant;

use super::{Format, Limits};
use crate::{load_scenario, AppError, ScenarioRef};

/// Arguments of `moesim plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// A serving scenario (a path or a built-in name).
    pub scenario: String,
    /// Requests per second (Poisson arrivals; a trace's lengths are kept).
    #[arg(long)]
    pub rate: f64,
    /// Target p99 time to first token, ms.
    #[arg(long = "ttft-p99-ms")]
    pub ttft_p99_ms: f64,
    /// Target p99 time per output token, ms.
    #[arg(long = "tpot-p99-ms")]
    pub tpot_p99_ms: f64,
    /// Seconds of arrivals simulated per configuration (default: the scenario's, at most 600).
    #[arg(long = "duration-s")]
    pub duration_s: Option<f64>,
    /// Most units of either kind to try.
    #[arg(long = "max-units", default_value_t = 256)]
    pub max_units: u32,
    /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16 (repeatable;
    /// `moesim keys` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print text or one JSON object (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub limits: Limits,
}

/// Runs `moesim plan`.
pub fn execute(args: PlanArgs) -> Result<ExitCode, AppError> {
    let PlanArgs { scenario, rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units, sets, format, limits } = args;
    let (scenario, sets) = (&scenario[..], &sets[..]);
    // The arguments' problems and the scenario's (with its --sets) at once.
    let mut problems = crate::plan::argument_problems(rate, ttft_p99_ms, tpot_p99_ms, duration_s, max_units);
    if let Err(AppError::Input(d)) = limits.max_memory_bytes() {
        problems.extend(d);
    }
    let scenario = match ScenarioRef::parse(scenario).and_then(|r| load_scenario(&r, sets)) {
        Ok(s) if problems.is_empty() => s,
        Ok(_) => return Err(AppError::Input(problems)),
        Err(AppError::Input(d)) => {
            problems.extend(d);
            return Err(AppError::Input(problems));
        }
        Err(e) => return Err(e),
    };
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
