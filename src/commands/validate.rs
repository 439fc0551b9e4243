//! `moesim validate`: the model against every published figure it has (the
//! built-in cases of `validation/*.toml`, then the user's `--cases`), as a
//! table or JSON; exit 0 when every counted case passes, 1 when one fails, 2
//! for bad case files.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Format;
use crate::validate::{self, Case, CaseResult};
use crate::AppError;

#[derive(clap::Args)]
pub struct ValidateArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Add your own cases after the built-in ones: a TOML file of [[case]] tables, or a folder (every
    /// *.toml in it, by name). Repeatable.
    #[arg(long = "cases", value_name = "FILE_OR_DIR")]
    pub cases: Vec<PathBuf>,
}

/// Loads and checks every case, runs them and prints the table.
pub fn execute(args: ValidateArgs) -> Result<ExitCode, AppError> {
    let builtin = validate::builtin_cases().map_err(AppError::Input)?;
    let user = validate::load_case_files(&args.cases).map_err(AppError::Input)?;
    let all: Vec<Case> = builtin.iter().chain(&user).cloned().collect();
    let mut problems = validate::check_unique(&all);
    problems.extend(validate::check_scenarios(&user));
    if !problems.is_empty() {
        return Err(AppError::Input(problems));
    }
    // The user's cases run first so that a metric their runs lack is
    // reported before the built-in table runs.
    let user_results = validate::run_cases(&user);
    let problems = validate::metric_problems(&user, &user_results);
    if !problems.is_empty() {
        return Err(AppError::Input(problems));
    }
    let mut results: Vec<CaseResult> = validate::run_cases(&builtin);
    results.extend(user_results);
    render(&results, args.format)
}

fn render(results: &[CaseResult], format: Format) -> Result<ExitCode, AppError> {
    let all_pass = results.iter().all(|r| r.pass || r.known_gap.is_some() || r.skipped.is_some());
    match format {
        Format::Json => println!("{}", serde_json::to_string(results).map_err(|e| AppError::Failed(e.to_string()))?),
        Format::Text => {
            println!(
                "{:<42} {:>10} {:>10} {:>8} {:>6} {:<6} {:<4}  source",
                "case", "published", "simulated", "error", "tol", "fitted", "pass"
            );
            for r in results {
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
