//! `moesim validate`: the model against every published figure it has (the
//! built-in cases of `validation/*.toml`, then the user's `--cases`), as a
//! table or JSON; exit 0 when every counted case passes, 1 when one fails
//! (or was skipped for want of its data, unless `--allow-skip`), 2 for bad
//! case files.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Format;
use crate::validate::{self, Case, CaseResult};
use crate::AppError;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  moesim validate\n  moesim validate --format json --allow-skip\nCases that replay real traces look for them in $MOESIM_DATA (the shared/data folder), else beside\nthe source tree moesim was built from; without them they are skipped, and the exit status is 1\nunless --allow-skip."
)]
pub struct ValidateArgs {
    /// Print a table (text) or one JSON array of rows (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 0 even when cases were skipped because their data (a real trace) was not found; by
    /// default a skipped case makes the exit status 1. The data is looked up in $MOESIM_DATA.
    #[arg(long)]
    pub allow_skip: bool,
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
    render(&results, args.format, args.allow_skip)
}

fn render(results: &[CaseResult], format: Format, allow_skip: bool) -> Result<ExitCode, AppError> {
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    let all_pass = passes(results, allow_skip);
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
            print!("{passed} of {} cases within tolerance; {gaps} known gaps (not counted)", results.len());
            println!("{}", if skipped > 0 { format!("; {skipped} skipped without their data") } else { String::new() });
            if skipped > 0 && !allow_skip {
                println!(
                    "exit status 1: cases were skipped; set {}=DIR to the data folder, or pass --allow-skip",
                    crate::files::DATA_ENV
                );
            }
        }
    }
    Ok(if all_pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Whether `moesim validate` exits 0: every counted case passes, and no
/// case was skipped for want of its data unless `allow_skip`.
fn passes(results: &[CaseResult], allow_skip: bool) -> bool {
    results.iter().all(|r| r.pass || r.known_gap.is_some() || (allow_skip && r.skipped.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pass: bool, gap: bool, skipped: bool) -> CaseResult {
        CaseResult {
            case: "c".into(),
            source: "s".into(),
            metric: "m".into(),
            unit: "u".into(),
            published: 1.0,
            simulated: None,
            error_pct: None,
            tolerance_pct: 5.0,
            fitted: false,
            pass,
            known_gap: gap.then(|| "why".into()),
            failure: None,
            skipped: skipped.then(|| "absent.csv not found".into()),
            missing_metric: None,
        }
    }

    #[test]
    fn a_skipped_case_fails_the_run_unless_skips_are_allowed() {
        let ok_gap = [row(true, false, false), row(false, true, false)];
        assert!(passes(&ok_gap, false));
        let with_skip = [row(true, false, false), row(false, false, true)];
        assert!(!passes(&with_skip, false));
        assert!(passes(&with_skip, true));
        assert!(!passes(&[row(false, false, false), row(false, false, true)], true));
    }
}
