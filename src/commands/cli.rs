//! The command line as clap sees it: every command, its help and examples.
//! `src/main.rs` parses it and calls [`dispatch`]; the tests walk
//! [`Cli::command`] (every argument has help, every example runs) and
//! `moesim completions SHELL` prints completions from it.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use super::catalog::{HardwareCommand, ModelsCommand, ScenariosCommand};
use crate::AppError;

/// moesim's command line.
#[derive(Parser)]
#[command(
    name = "moesim",
    version,
    about = "Discrete-event simulator of GPU/NPU clusters running Mixture-of-Experts models",
    after_help = "Examples:\n  moesim scenarios\n  moesim run allreduce-8xh800 --set workload.bytes=1048576\n  moesim keys collective\n  moesim completions bash"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a scenario (a path or a built-in name; default: the built-in default).
    #[command(
        after_help = "Examples:\n  moesim run allreduce-8xh800\n  moesim run allreduce-8xh800 --set workload.bytes=1048576 --format json\n  moesim run allreduce-8xh800 --set hardware.nvlink_gb_per_s=900 --set workload.algorithm=tree"
    )]
    Run(super::run::RunArgs),
    /// List the built-in scenarios, or print one (`moesim scenarios show NAME`).
    #[command(after_help = "Examples:\n  moesim scenarios\n  moesim scenarios show allreduce-8xh800")]
    Scenarios {
        #[command(subcommand)]
        command: Option<ScenariosCommand>,
    },
    /// List every scenario key with its type, unit, default and meaning, or print the JSON Schema of
    /// the scenario format (--schema).
    #[command(after_help = "Examples:\n  moesim keys\n  moesim keys serving\n  moesim keys --schema")]
    Keys(super::keys::KeysArgs),
    /// Describe a scenario's cluster: GPUs, switches, links, injection and bisection bandwidth.
    #[command(
        after_help = "Examples:\n  moesim topology allreduce-8xh800\n  moesim topology deepep-dispatch-ep64 --set topology.nodes=16 --format json"
    )]
    Topology(super::topology::TopologyArgs),
    /// Device presets.
    #[command(after_help = "Examples:\n  moesim hardware list\n  moesim hardware show h800")]
    Hardware {
        #[command(subcommand)]
        command: HardwareCommand,
    },
    /// Model presets.
    #[command(after_help = "Examples:\n  moesim models list\n  moesim models show deepseek-v3")]
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Serving: the fewest nodes (prefill + decode units) meeting p99 latency targets. Training
    /// (`moesim plan TRAINING-SCENARIO --tokens N`): the plans (nodes x TP x PP x EP x DP x schedule x
    /// micro-batch x recompute x ZeRO) that fit, ranked by time to train and cost, with the frontier.
    #[command(
        after_help = "Example:\n  moesim plan deepseek-v3-serving-h800 --rate 50 --ttft-p99-ms 2000 --tpot-p99-ms 50 --duration-s 30"
    )]
    Plan(super::plan::PlanArgs),
    /// Replay real traces (Kineto JSON per rank, plain or .gz) on their own hardware or a what-if
    /// (--set hardware.device=h200, --set topology.ib_gbit_per_s=800, --set parallel.comm_sms=24).
    #[command(
        after_help = "Examples (from the project root, the real traces in ../shared/data):\n  moesim replay ../shared/data/deepseek-ai+profile-data/train.json\n  moesim replay ../shared/data/deepseek-ai+profile-data/train.json --set hardware.device=h200"
    )]
    Replay(super::replay::ReplayArgs),
    /// DeepSeek's profile of a training F&B chunk pair (profile-data train.json) against the model's
    /// chunk pair, kernel class by kernel class (measured, standalone model, in-situ model), and the
    /// profile's gaps between kernels by class.
    #[command(after_help = "Example (from the project root, the real traces in ../shared/data):\n  moesim calibrate")]
    Calibrate(super::calibrate::CalibrateArgs),
    /// Run a scenario at every combination of values of one or more keys (a what-if grid): a table,
    /// and with --out sweep.csv and a chart per metric.
    #[command(
        after_help = "Example:\n  moesim sweep allreduce-8xh800 --vary workload.bytes=1048576,16777216 --metric busbw_gb_per_s"
    )]
    Sweep(super::sweep::SweepArgs),
    /// Join the folders of a sharded sweep into the unsharded sweep's folder, byte for byte.
    Merge(super::merge::MergeArgs),
    /// Compare the model with published figures; exits non-zero if a case fails.
    Validate(super::validate::ValidateArgs),
    /// One self-contained HTML page of one or more --out folders (side by side): summary,
    /// provenance, plots, notes and the validation cases of the mechanisms used.
    #[command(
        after_help = "Examples:\n  moesim run allreduce-8xh800 --out a\n  moesim report a -o report.html\n  moesim run allreduce-8xh800 --set workload.bytes=1048576 --out b\n  moesim report a b -o compare.html"
    )]
    Report(super::report::ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Examples:\n  moesim completions bash\n  moesim completions zsh\n  moesim completions fish\nSave the output where your shell looks: bash ~/.local/share/bash-completion/completions/moesim,\nzsh a file _moesim in a folder of $fpath, fish ~/.config/fish/completions/moesim.fish."
    )]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs a parsed command.
pub fn dispatch(command: Command) -> Result<ExitCode, AppError> {
    match command {
        Command::Run(args) => super::run::execute(args),
        Command::Scenarios { command } => super::catalog::scenarios(command),
        Command::Keys(args) => super::keys::execute(args),
        Command::Topology(args) => super::topology::execute(args),
        Command::Hardware { command } => super::catalog::hardware(command),
        Command::Models { command } => super::catalog::models(command),
        Command::Plan(args) => super::plan::execute(args),
        Command::Sweep(args) => super::sweep::execute(args),
        Command::Replay(args) => super::replay::execute(args),
        Command::Calibrate(args) => super::calibrate::execute(args),
        Command::Merge(args) => super::merge::execute(args),
        Command::Validate(args) => super::validate::execute(args),
        Command::Report(args) => super::report::execute(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "moesim", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
