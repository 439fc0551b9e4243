//! `moesim keys [KIND]`: every scenario key with its type, unit, default and
//! meaning (the workload keys of one kind with KIND), or `--schema`: the
//! JSON Schema of the scenario format, for editors. Both from `crate::keys`.

use std::process::ExitCode;

use super::Format;
use crate::diagnostics::Source;
use crate::workloads::registry;
use crate::AppError;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// List only this workload kind's `[workload]` keys (collective, serving, ...); default: every kind.
    pub kind: Option<String>,
    /// Print the JSON Schema of the scenario file format instead (for editors: see the README).
    #[arg(long, conflicts_with = "kind")]
    pub schema: bool,
    /// Print a table (text) or one JSON array of keys (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Prints the keys or the schema.
pub fn execute(args: KeysArgs) -> Result<ExitCode, AppError> {
    if args.schema {
        let text = serde_json::to_string_pretty(&crate::keys::scenario_schema())
            .map_err(|e| AppError::Failed(e.to_string()))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(kind) = args.kind.as_deref().filter(|k| registry::find(k).is_none()) {
        return Err(AppError::Input(vec![Source::new("moesim keys", "")
            .plain(format!("expected a workload kind ({}), found \"{kind}\"", registry::names().join(", ")))]));
    }
    let keys = crate::keys::keys(args.kind.as_deref());
    match args.format {
        Format::Text => print!("{}", crate::keys::render(&keys)),
        Format::Json => {
            println!("{}", serde_json::to_string(&keys).map_err(|e| AppError::Failed(e.to_string()))?)
        }
    }
    Ok(ExitCode::SUCCESS)
}
