//! `moesim topology`: a scenario's cluster described (GPUs, switches, links,
//! injection and bisection bandwidth), optionally written as Graphviz DOT.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{scenario_ref, Format};
use crate::{load_scenario, AppError};

/// Arguments of `moesim topology`.
#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// A scenario: a path or a built-in name (`moesim scenarios`); default: the built-in default.
    pub scenario: Option<String>,
    /// Write the cluster as a Graphviz DOT file.
    #[arg(long)]
    pub dot: Option<PathBuf>,
    /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16 (repeatable;
    /// `moesim keys` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print text or one JSON object (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `moesim topology`.
pub fn execute(args: TopologyArgs) -> Result<ExitCode, AppError> {
    let TopologyArgs { scenario, dot, sets, format } = args;
    let sets = &sets[..];
    let scenario = load_scenario(&scenario_ref(scenario)?, sets)?.setup;
    let Some(spec) = &scenario.topology else {
        return Err(AppError::Input(vec![scenario.source.at_key("topology", "the scenario has no [topology] table")]));
    };
    let topology = moesim_topologies::build(spec)
        .map_err(|e| AppError::Input(vec![scenario.source.at_key("topology", e.to_string())]))?;
    let s = topology.summary_with_cut();
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
            for t in &s.tiers {
                println!("    tier {:<19} {} switches", t.tier, t.switches);
            }
            println!("  directed links           {}", s.directed_links);
            println!("  nvlink per gpu           {:.1} GB/s per direction (nominal)", s.gpu_nvlink_bytes_per_s / 1e9);
            println!(
                "  network per gpu          {:.1} Gb/s per direction (nominal)",
                s.gpu_network_bytes_per_s * 8.0 / 1e9
            );
            println!(
                "  bisection                {:.1} Tb/s per direction (nominal){}",
                s.bisection_bytes_per_s * 8.0 / 1e12,
                if s.tiers.is_empty() { "" } else { ", max-flow from the first half of the ranks to the second" }
            );
            for class in &s.link_classes {
                println!("  link rate                {}", class.describe());
            }
            if let Some(p) = &dot {
                println!("  wrote {}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
