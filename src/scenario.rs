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
/// reads it with its kind's own schema). Its JSON Schema (`moesim keys`)
/// describes the tables read as raw TOML by what reads them
/// (`crate::keys`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    /// The scenario's name, as outputs report it.
    name: String,
    /// Seed of every random stream (routing, arrivals, ...): same seed, same bytes.
    #[serde(default = "default_seed")]
    seed: u64,
    #[schemars(with = "crate::keys::HardwareKeys")]
    hardware: toml::Table,
    /// The cluster: a preset (`moesim topology`) with any of its keys overridden.
    topology: Option<TopologyConfig>,
    /// `preset = NAME` (or a path) plus any of the model's keys overridden.
    #[schemars(with = "Option<crate::keys::ModelKeys>")]
    model: Option<toml::Table>,
    /// How the model is split over the GPUs.
    parallel: Option<ParallelTable>,
    #[allow(dead_code)] // present and a table; its keys are the kind's
    #[schemars(with = "crate::keys::WorkloadKeys")]
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
    /// Parses and resolves a scenario source, reporting every problem at
    /// once: a value of the wrong type or an unknown key is reported and
    /// parsing goes on without it ([`decode_all`]); the setting and the
    /// workload are decoded apart, so problems in either are reported
    /// together with the other's.
    pub fn parse(source: Source) -> Result<Scenario, Vec<Diagnostic>> {
        // A syntax error stops everything: nothing after it can be located.
        if let Err(e) = source.text.parse::<toml::Table>() {
            return Err(vec![source.toml_error(e.span(), e.message())]);
        }
        let mut problems = Vec::new();
        let registered = match toml::from_str::<KindProbe>(&source.text) {
            Err(e) => {
                problems.push(source.toml_error(e.span(), e.message()));
                None
            }
            Ok(KindProbe { workload: Some(KindOnly { kind: Some(kind) }) }) => {
                let found = registry::find(kind.get_ref());
                if found.is_none() {
                    problems.push(Diagnostic {
                        origin: source.origin.clone(),
                        location: source.locate_offset(kind.span().start),
                        key: Some("workload.kind".into()),
                        message: format!(
                            "expected one of {}, found \"{}\"",
                            registry::names().join(", "),
                            kind.get_ref()
                        ),
                    });
                }
                found
            }
            Ok(_) => {
                let what = format!("expected a [workload] table with `kind` = one of {}", registry::names().join(", "));
                problems.push(source.at_key("workload.kind", what));
                None
            }
        };
        let file = decode_all(&source, toml::from_str::<ScenarioFile>, &mut problems);
        let workload = registered.and_then(|k| decode_all(&source, k.parse, &mut problems));
        // The tables decoded without a removed value are resolved (their
        // problems are their own); the workload is checked against them
        // only when nothing was removed (a removed value would be replaced
        // by its default and the checks could blame it).
        let Some((file, file_whole)) = file else { return Err(problems) };

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
        let Some((workload, true)) = workload.filter(|_| file_whole) else { return Err(problems) };
        let cx = Context {
            device: device.as_ref(),
            topology: topology.as_ref(),
            topology_given: file.topology.is_some(),
            model: model.as_ref(),
            model_given: file.model.is_some(),
            parallel: file.parallel.as_ref(),
        };
        for p in crate::workloads::problems(workload.as_ref(), cx) {
            let d = source.at_key(&p.key, p.message);
            if !problems.contains(&d) {
                problems.push(d);
            }
        }
        let Some(device) = device.filter(|_| problems.is_empty()) else { return Err(problems) };
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

/// Decodes `source` with `decode`; on a value of the wrong type or an
/// unknown key, reports it and decodes again without that value (up to 64
/// times), so that one pass reports each. Returns the value and whether
/// it is whole (nothing had to be removed). A key found missing because it
/// was removed is not reported again.
fn decode_all<T>(
    source: &Source,
    decode: impl Fn(&str) -> Result<T, toml::de::Error>,
    problems: &mut Vec<Diagnostic>,
) -> Option<(T, bool)> {
    let mut current = source.clone();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..64 {
        let e = match decode(&current.text) {
            Ok(v) => return Some((v, removed.is_empty())),
            Err(e) => e,
        };
        let echo = removed.iter().any(|k| {
            let leaf = k.rsplit('.').next().unwrap_or(k);
            e.message().contains(&format!("missing field `{leaf}`"))
        });
        if echo {
            return None;
        }
        let d = current.toml_error(e.span(), e.message());
        let key = d.key.clone();
        if !problems.contains(&d) {
            problems.push(d);
        }
        match key.and_then(|k| current.without_key(&k).map(|next| (k, next))) {
            Some((k, next)) => {
                removed.push(k);
                current = next;
            }
            None => return None,
        }
    }
    None
}

impl Scenario {
    /// Runs the scenario's workload to completion.
    pub fn run(&self, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let mut outcome = crate::workloads::power::run(self.workload.as_ref(), &self.setup, options, observer)?;
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
