//! The `moesim` command line: argument parsing and dispatch. Each command's
//! arguments, work and rendering live in `moesim::commands`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moesim::commands::catalog::{HardwareCommand, ModelsCommand};
use moesim::commands::{self, Format};
use moesim::validate::{self, CaseResult};
use moesim::AppError;

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
    Run(commands::run::RunArgs),
    /// List the built-in scenarios.
    Scenarios,
    /// Describe a scenario's cluster: GPUs, switches, links, injection and bisection bandwidth.
    Topology(commands::topology::TopologyArgs),
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
    Plan(commands::plan::PlanArgs),
    /// Replay real traces (Kineto JSON per rank, plain or .gz) on their own hardware or a what-if
    /// (--set hardware.device=h200, --set topology.ib_gbit_per_s=800, --set parallel.comm_sms=24).
    Replay(commands::replay::ReplayArgs),
    /// Run a scenario at every combination of values of one or more keys (a what-if grid): a table,
    /// and with --out sweep.csv and a chart per metric.
    Sweep(commands::sweep::SweepArgs),
    /// Compare the model with published figures; exits non-zero if a case fails.
    Validate {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => commands::run::execute(args),
        Command::Scenarios => commands::catalog::scenarios(),
        Command::Topology(args) => commands::topology::execute(args),
        Command::Hardware { command } => commands::catalog::hardware(command),
        Command::Models { command } => commands::catalog::models(command),
        Command::Plan(args) => commands::plan::execute(args),
        Command::Sweep(args) => commands::sweep::execute(args),
        Command::Replay(args) => commands::replay::execute(args),
        Command::Validate { format } => cmd_validate(format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn cmd_validate(format: Format) -> Result<ExitCode, AppError> {
    let results: Vec<CaseResult> = validate::run_cases(validate::cases());
    let all_pass = results.iter().all(|r| r.pass || r.known_gap.is_some() || r.skipped.is_some());
    match format {
        Format::Json => println!("{}", serde_json::to_string(&results).map_err(|e| AppError::Failed(e.to_string()))?),
        Format::Text => {
            println!(
                "{:<42} {:>10} {:>10} {:>8} {:>6} {:<6} {:<4}  source",
                "case", "published", "simulated", "error", "tol", "fitted", "pass"
            );
            for r in &results {
                // Ratios and small figures with three decimals.
                let value = |v: f64| if v.abs() < 10.0 { format!("{v:.3}") } else { format!("{v:.1}") };
                let sim = r.simulated.map_or("-".to_owned(), value);
                let err = r.error_pct.map_or("-".to_owned(), |v| format!("{v:+.1}%"));
                println!(
                    "{:<42} {:>10} {:>10} {:>8} {:>5.0}% {:<6} {:<4}  {}",
                    r.case,
                    format!("{} {}", value(r.published), r.unit),
                    sim,
                    err,
                    r.tolerance_pct,
                    if r.fitted { "yes" } else { "no" },
                    match (r.pass, &r.known_gap, &r.skipped) {
                        (true, _, _) => "ok",
                        (false, _, Some(_)) => "skip",
                        (false, Some(_), None) => "GAP",
                        (false, None, None) => "FAIL",
                    },
                    r.source
                );
                if let Some(f) = &r.failure {
                    println!("    failed: {f}");
                }
                if let Some(why) = &r.skipped {
                    println!("    skipped: {why}");
                }
                if let (false, Some(gap)) = (r.pass, &r.known_gap) {
                    println!("    known gap: {gap}");
                }
            }
            let passed = results.iter().filter(|r| r.pass).count();
            let gaps = results.iter().filter(|r| !r.pass && r.known_gap.is_some()).count();
            let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
            print!("{passed} of {} cases within tolerance; {gaps} known gaps (not counted)", results.len());
            println!("{}", if skipped > 0 { format!("; {skipped} skipped without their data") } else { String::new() });
        }
    }
    Ok(if all_pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
