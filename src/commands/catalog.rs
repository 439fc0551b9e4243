//! The catalogues: `moesim scenarios`, `moesim hardware list|show` and
//! `moesim models list|show` (the embedded presets and what they imply).

use std::process::ExitCode;

use moesim_models::{DeviceSpec, ModelConfig};
use serde_json::{Map, Value};

use super::Format;
use crate::{builtin, AppError};

/// `moesim scenarios ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ScenariosCommand {
    /// List the built-in scenarios with their descriptions (the default).
    List,
    /// Print a built-in scenario file as written: a starting point for your own.
    Show {
        /// A built-in scenario's name (`moesim scenarios` lists them).
        name: String,
    },
}

/// `moesim hardware ...`.
#[derive(Debug, clap::Subcommand)]
pub enum HardwareCommand {
    /// List the device presets.
    List,
    /// Show a preset's values and their sources.
    Show {
        /// A device preset's name (`moesim hardware list`).
        name: String,
        /// Print text or one JSON object (json).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// `moesim models ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List the model presets with their parameter counts.
    List,
    /// Show a preset's values, sources and derived counts.
    Show {
        /// A model preset's name (`moesim models list`).
        name: String,
        /// Print text or one JSON object (json).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// Runs `moesim hardware ...`.
pub fn hardware(command: HardwareCommand) -> Result<ExitCode, AppError> {
    match command {
        HardwareCommand::List => hardware_list(),
        HardwareCommand::Show { name, format } => hardware_show(&name, format),
    }
}

/// Runs `moesim models ...`.
pub fn models(command: ModelsCommand) -> Result<ExitCode, AppError> {
    match command {
        ModelsCommand::List => models_list(),
        ModelsCommand::Show { name, format } => models_show(&name, format),
    }
}

/// Runs `moesim scenarios ...`.
pub fn scenarios(command: Option<ScenariosCommand>) -> Result<ExitCode, AppError> {
    match command {
        None | Some(ScenariosCommand::List) => scenarios_list(),
        Some(ScenariosCommand::Show { name }) => scenarios_show(&name),
    }
}

/// `moesim scenarios show NAME`: the built-in file as written.
pub fn scenarios_show(name: &str) -> Result<ExitCode, AppError> {
    match crate::ScenarioRef::parse(name)? {
        crate::ScenarioRef::Builtin(n) => {
            print!("{}", builtin::scenario(n).expect("a parsed built-in exists"));
            Ok(ExitCode::SUCCESS)
        }
        crate::ScenarioRef::Path(_) => {
            Err(AppError::Input(vec![crate::diagnostics::Source::new("scenarios show", "")
                .plain(format!("{name} is a file, not a built-in; `moesim scenarios` lists them"))]))
        }
    }
}

/// `moesim scenarios`: every built-in scenario with its description.
pub fn scenarios_list() -> Result<ExitCode, AppError> {
    for (name, text) in builtin::SCENARIOS {
        let default = if *name == builtin::DEFAULT_SCENARIO { " (default)" } else { "" };
        println!("{name}{default}\n    {}", builtin::description(text));
    }
    Ok(ExitCode::SUCCESS)
}

/// `moesim hardware list`: one line per device preset.
pub fn hardware_list() -> Result<ExitCode, AppError> {
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

/// `moesim hardware show NAME`: a preset as written (with sources) or as JSON.
pub fn hardware_show(name: &str, format: Format) -> Result<ExitCode, AppError> {
    let input_error = |e: moesim_models::ModelError| {
        AppError::Input(vec![crate::diagnostics::Source::new("hardware show", "").plain(e.to_string())])
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

/// `moesim models list`: one line per model preset with its parameter counts.
pub fn models_list() -> Result<ExitCode, AppError> {
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

/// `moesim models show NAME`: a preset as written plus its derived counts.
pub fn models_show(name: &str, format: Format) -> Result<ExitCode, AppError> {
    let input_error = |e: moesim_models::ModelError| {
        AppError::Input(vec![crate::diagnostics::Source::new("models show", "").plain(e.to_string())])
    };
    let m = ModelConfig::preset(name).map_err(input_error)?;
    let derived = crate::workloads::model_summary(&m);
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
