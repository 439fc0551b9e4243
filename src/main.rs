//! The `moesim` command line: argument parsing and dispatch. Each command's
//! arguments, work and rendering live in `moesim::commands`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moesim::commands;
use moesim::commands::catalog::{HardwareCommand, ModelsCommand, ScenariosCommand};

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
    /// List the built-in scenarios, or print one (`moesim scenarios show NAME`).
    Scenarios {
        #[command(subcommand)]
        command: Option<ScenariosCommand>,
    },
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
    Validate(commands::validate::ValidateArgs),
    /// One self-contained HTML page of one or more --out folders (side by side): summary,
    /// provenance, plots, notes and the validation cases of the mechanisms used.
    Report(commands::report::ReportArgs),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let result = match Cli::parse().command {
        Command::Run(args) => commands::run::execute(args),
        Command::Scenarios { command } => commands::catalog::scenarios(command),
        Command::Topology(args) => commands::topology::execute(args),
        Command::Hardware { command } => commands::catalog::hardware(command),
        Command::Models { command } => commands::catalog::models(command),
        Command::Plan(args) => commands::plan::execute(args),
        Command::Sweep(args) => commands::sweep::execute(args),
        Command::Replay(args) => commands::replay::execute(args),
        Command::Validate(args) => commands::validate::execute(args),
        Command::Report(args) => commands::report::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// A closed stdout (`moesim scenarios | head -1`) ends the program quietly,
/// as it does `cat`, instead of a panic in `println!`: Rust ignores SIGPIPE
/// by default, so put back the default action.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; setting a
    // signal's disposition to the default is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
