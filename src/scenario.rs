//! The scenario file: parsed strictly as written (unknown keys rejected, every
//! error with its line and column), then resolved into a `Scenario`: the
//! setting (`setup.rs`: device, topology, model, parallel plan) and the
//! workload, whose `[workload]` table the registry (`workloads::registry`)
//! parses by its `kind`. Every problem is reported at once.

use serde::de::IgnoredAny;
use serde::Deserialize;

use moesim_sim::Observer;
use moesim_topologies::{LinkDefaults, TopologyConfig};

use crate::diagnostics::{Diagnostic, Source};
use crate::setup::{resolve_device, resolve_model, resolve_topology, ParallelTable, ResolvedTables, Setup};
use crate::workloads::{registry, Context, Outcome, RunFailure, RunOptions, Workload};

fn default_seed() -> u64 {
    1
}

/// A scenario file as written, the `[workload]` table aside (the registry
/// reads it with its kind's own schema).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default = "default_seed")]
    seed: u64,
    hardware: toml::Table,
    topology: Option<TopologyConfig>,
    /// `preset = NAME` (or a path) plus any of the model's keys overridden.
    model: Option<toml::Table>,
    parallel: Option<ParallelTable>,
    #[allow(dead_code)] // present and a table; its keys are the kind's
    workload: IgnoredAny,
}

/// Just enough of a file to learn which workload it holds.
#[derive(Debug, Deserialize)]
struct KindProbe {
    workload: Option<KindOnly>,
}
#[derive(Debug, Deserialize)]
struct KindOnly {
    kind: Option<toml::Spanned<String>>,
}

/// A resolved, checked scenario: its setting and its workload.
#[derive(Debug)]
pub struct Scenario {
    pub setup: Setup,
    pub workload: Box<dyn Workload>,
}

impl Scenario {
    /// Parses and resolves a scenario source.
    pub fn parse(source: Source) -> Result<Scenario, Vec<Diagnostic>> {
        let toml_error = |e: toml::de::Error| vec![source.toml_error(e.span(), e.message())];
        let probe: KindProbe = toml::from_str(&source.text).map_err(toml_error)?;
        let Some(KindOnly { kind: Some(kind) }) = probe.workload else {
            let what = format!("expected a [workload] table with `kind` = one of {}", registry::names().join(", "));
            return Err(vec![source.at_key("workload.kind", what)]);
        };
        let Some(registered) = registry::find(kind.get_ref()) else {
            let d = Diagnostic {
                origin: source.origin.clone(),
                location: source.locate_offset(kind.span().start),
                key: Some("workload.kind".into()),
                message: format!("expected one of {}, found \"{}\"", registry::names().join(", "), kind.get_ref()),
            };
            return Err(vec![d]);
        };
        let file: ScenarioFile = toml::from_str(&source.text).map_err(toml_error)?;
        let workload = (registered.parse)(&source.text).map_err(toml_error)?;

        let mut problems = Vec::new();
        let (device, device_table) = resolve_device(&source, &file.hardware, &mut problems).unzip();
        // Check the topology even when the device is broken (with neutral
        // link rates) so every problem is reported at once.
        let topology = file.topology.as_ref().and_then(|t| {
            let defaults = device.as_ref().map_or(LinkDefaults { nvlink_gb_per_s: 1.0, nic_gbit_per_s: 1.0 }, |d| {
                LinkDefaults { nvlink_gb_per_s: d.nvlink_gb_per_s, nic_gbit_per_s: d.nic_gbit_per_s }
            });
            resolve_topology(&source, t, defaults, &mut problems)
        });
        let (model, model_table) = file.model.as_ref().and_then(|t| resolve_model(&source, t, &mut problems)).unzip();
        let cx = Context {
            device: device.as_ref(),
            topology: topology.as_ref(),
            topology_given: file.topology.is_some(),
            model: model.as_ref(),
            model_given: file.model.is_some(),
            parallel: file.parallel.as_ref(),
        };
        for p in crate::workloads::problems(workload.as_ref(), cx) {
            problems.push(source.at_key(&p.key, p.message));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let device = device.expect("no problems means a device");
        let resolved = ResolvedTables {
            device_given: file.hardware.get("device").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
            device: device_table.unwrap_or_default(),
            topology: file.topology.as_ref().map(|t| {
                let mut merged = t
                    .preset
                    .as_deref()
                    .and_then(|p| TopologyConfig::preset(p).ok())
                    .map_or(t.clone(), |p| t.overlay(&p));
                merged.nvlink_gb_per_s = merged.nvlink_gb_per_s.or(Some(device.nvlink_gb_per_s));
                merged.ib_gbit_per_s = merged.ib_gbit_per_s.or(Some(device.nic_gbit_per_s));
                merged
            }),
            model_given: file.model.as_ref().and_then(|m| m.get("preset")).and_then(|v| v.as_str()).map(str::to_owned),
            model: model_table,
        };
        let setup = Setup {
            name: file.name,
            seed: file.seed,
            device,
            topology,
            model,
            parallel: file.parallel,
            source,
            resolved,
        };
        Ok(Scenario { setup, workload })
    }
}

impl Scenario {
    /// Runs the scenario's workload to completion.
    pub fn run(&self, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let mut outcome = self.workload.run(&self.setup, options, observer)?;
        outcome.job_gpus = self.workload.job_gpus();
        if options.figures && outcome.figures.is_empty() {
            outcome.figures = crate::workloads::default_figures(&self.setup, self.workload.kind_name(), &outcome)?;
        }
        // Every run says what rate each link class ran at, and where it came from.
        if let Some(spec) = &self.setup.topology {
            let mut notes: Vec<String> =
                spec.used_link_classes().map(|c| format!("link rate: {}", c.describe())).collect();
            notes.append(&mut outcome.notes);
            outcome.notes = notes;
        }
        Ok(outcome)
    }
}
