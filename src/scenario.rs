//! The scenario file: parsed strictly as written (`ScenarioFile`, unknown keys
//! rejected, every error with its line and column), then resolved into a
//! `Scenario` (device preset merged with overrides, topology resolved against
//! the device, workload checked), reporting every problem at once.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use moesim_models::transformer::schedule::ScheduleKind;
use moesim_models::{DeviceSpec, ModelConfig, ModelError};
use moesim_topologies::{ClusterSpec, ConfigProblem, LinkDefaults, TopologyConfig, TopologyError};

use crate::diagnostics::{Diagnostic, Source};
use crate::workloads::{Workload, WorkloadKind};

fn default_seed() -> u64 {
    1
}

/// A scenario file as written, for one workload type `W`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile<W> {
    name: String,
    #[serde(default = "default_seed")]
    seed: u64,
    hardware: toml::Table,
    topology: Option<TopologyConfig>,
    /// `preset = NAME` (or a path) plus any of the model's keys overridden.
    model: Option<toml::Table>,
    parallel: Option<ParallelTable>,
    workload: W,
}

fn one() -> u32 {
    1
}
fn default_comm_sms() -> u32 {
    20
}

/// The `[parallel]` table as written; `dp` defaults to what fills the
/// cluster. Resolved against the cluster by the workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelTable {
    #[serde(default = "one")]
    pub tp: u32,
    #[serde(default = "one")]
    pub pp: u32,
    pub dp: Option<u32>,
    #[serde(default = "one")]
    pub ep: u32,
    #[serde(default = "one")]
    pub zero: u32,
    #[serde(default)]
    pub schedule: Option<ScheduleKind>,
    #[serde(default = "one")]
    pub micro_batch: u32,
    /// SMs each expert-parallel communication kernel holds (DeepSeek-V3: 20 of 132).
    #[serde(default = "default_comm_sms")]
    pub comm_sms: u32,
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

/// A resolved, checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub device: DeviceSpec,
    /// The cluster, when the scenario has a `[topology]` table.
    pub topology: Option<ClusterSpec>,
    /// The `[model]` table resolved (preset merged with overrides), if any.
    pub model: Option<ModelConfig>,
    pub parallel: Option<ParallelTable>,
    pub workload: Workload,
    /// Where it came from, for locating later problems.
    pub source: Source,
}

impl Scenario {
    /// Parses and resolves a scenario source.
    pub fn parse(source: Source) -> Result<Scenario, Vec<Diagnostic>> {
        let probe: KindProbe =
            toml::from_str(&source.text).map_err(|e| vec![source.toml_error(e.span(), e.message())])?;
        let Some(KindOnly { kind: Some(kind) }) = probe.workload else {
            let what = format!("expected a [workload] table with `kind` = one of {}", WorkloadKind::names().join(", "));
            return Err(vec![source.at_key("workload.kind", what)]);
        };
        let Some(kind) = WorkloadKind::from_name(kind.get_ref()) else {
            let d = Diagnostic {
                origin: source.origin.clone(),
                location: source.locate_offset(kind.span().start),
                key: Some("workload.kind".into()),
                message: format!("expected one of {}, found \"{}\"", WorkloadKind::names().join(", "), kind.get_ref()),
            };
            return Err(vec![d]);
        };
        match kind {
            WorkloadKind::Collective => Self::parse_as(source, Workload::Collective),
            WorkloadKind::MoeDispatch | WorkloadKind::MoeCombine => Self::parse_as(source, Workload::MoeComm),
            WorkloadKind::Gemm => Self::parse_as(source, Workload::Gemm),
            WorkloadKind::Pipeline => Self::parse_as(source, Workload::Pipeline),
            WorkloadKind::Training => Self::parse_as(source, Workload::Training),
            WorkloadKind::Op => Self::parse_as(source, Workload::Op),
            WorkloadKind::Prefill => Self::parse_as(source, |w| {
                Workload::Iteration(crate::workloads::inference::IterationWorkload::Prefill(w))
            }),
            WorkloadKind::Decode => Self::parse_as(source, |w| {
                Workload::Iteration(crate::workloads::inference::IterationWorkload::Decode(w))
            }),
            WorkloadKind::Serving => Self::parse_as(source, |w| Workload::Serving(Box::new(w))),
        }
    }

    fn parse_as<W: DeserializeOwned>(source: Source, wrap: fn(W) -> Workload) -> Result<Scenario, Vec<Diagnostic>> {
        let file: ScenarioFile<W> =
            toml::from_str(&source.text).map_err(|e| vec![source.toml_error(e.span(), e.message())])?;
        let mut problems = Vec::new();
        let device = resolve_device(&source, &file.hardware, &mut problems);
        // Check the topology even when the device is broken (with neutral
        // link rates) so every problem is reported at once.
        let topology = file.topology.as_ref().and_then(|t| {
            let defaults = device.as_ref().map_or(LinkDefaults { nvlink_gb_per_s: 1.0, nic_gbit_per_s: 1.0 }, |d| {
                LinkDefaults { nvlink_gb_per_s: d.nvlink_gb_per_s, nic_gbit_per_s: d.nic_gbit_per_s }
            });
            resolve_topology(&source, t, defaults, &mut problems)
        });
        let model = file.model.as_ref().and_then(|t| resolve_model(&source, t, &mut problems));
        let workload = wrap(file.workload);
        let cx = crate::workloads::Context {
            device: device.as_ref(),
            topology: topology.as_ref(),
            topology_given: file.topology.is_some(),
            model: model.as_ref(),
            model_given: file.model.is_some(),
            parallel: file.parallel.as_ref(),
        };
        for p in workload.problems(cx) {
            problems.push(source.at_key(&p.key, p.message));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Scenario {
            name: file.name,
            seed: file.seed,
            device: device.expect("no problems means a device"),
            topology,
            model,
            parallel: file.parallel,
            workload,
            source,
        })
    }

    /// Locates a model error's problems in this scenario's source.
    pub fn diagnose(&self, err: &ModelError) -> Vec<Diagnostic> {
        model_error_diagnostics(&self.source, err, "")
    }
}

/// Turns a model error into located diagnostics; `prefix` is prepended to
/// problem keys (e.g. `hardware.`).
pub fn model_error_diagnostics(source: &Source, err: &ModelError, prefix: &str) -> Vec<Diagnostic> {
    match err {
        ModelError::Invalid { problems } => {
            problems.iter().map(|p| source.at_key(&format!("{prefix}{}", p.key), p.message.clone())).collect()
        }
        other => vec![source.plain(other.to_string())],
    }
}

fn push_problems(source: &Source, prefix: &str, problems: &[ConfigProblem], out: &mut Vec<Diagnostic>) {
    for p in problems {
        out.push(source.at_key(&format!("{prefix}{}", p.key), p.message.clone()));
    }
}

/// The `[hardware]` table: a `device` preset name (or a path to a device
/// file), with any of the device's keys overridden beside it.
fn resolve_device(source: &Source, table: &toml::Table, out: &mut Vec<Diagnostic>) -> Option<DeviceSpec> {
    let Some(name) = table.get("device") else {
        out.push(source.at_key(
            "hardware.device",
            format!("missing; expected a preset name ({}) or a path", DeviceSpec::preset_names().join(", ")),
        ));
        return None;
    };
    let Some(name) = name.as_str() else {
        out.push(source.at_key("hardware.device", format!("expected a preset name or a path, found {name}")));
        return None;
    };
    let text = match DeviceSpec::preset_text(name) {
        Ok(t) => t.to_owned(),
        Err(e) => match read_device_file(source, name) {
            Some(t) => t,
            None => {
                out.push(source.at_key("hardware.device", e.to_string()));
                return None;
            }
        },
    };
    let mut merged: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            out.push(source.at_key("hardware.device", format!("device file {name}: {}", e.message().trim())));
            return None;
        }
    };
    let known: Vec<String> = DeviceSpec::KEYS.iter().map(|k| k.to_string()).collect();
    let mut ok = true;
    for (k, v) in table {
        if k == "device" {
            continue;
        }
        if !known.contains(k) {
            let mut names: Vec<&str> = known.iter().map(String::as_str).filter(|k| *k != "name").collect();
            names.sort_unstable();
            names.dedup();
            out.push(source.at_key(
                &format!("hardware.{k}"),
                format!("unknown key; expected one of device, {}", names.join(", ")),
            ));
            ok = false;
            continue;
        }
        merge_value(&mut merged, k, v);
    }
    if !ok {
        return None;
    }
    let device: DeviceSpec = match toml::Value::Table(merged).try_into() {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            // Name the offending key when the message does.
            let key = nested_key_named(table, &msg, "hardware")
                .or_else(|| table.keys().find(|k| msg.contains(k.as_str())).map(|k| format!("hardware.{k}")))
                .unwrap_or_else(|| "hardware".to_owned());
            out.push(source.at_key(&key, msg));
            return None;
        }
    };
    let problems = device.problems();
    if !problems.is_empty() {
        push_problems(source, "hardware.", &problems, out);
        return None;
    }
    Some(device)
}

/// The dotted path of a key inside a nested table of `table` that an error
/// message names as `` `key` `` (e.g. `hardware.buffers.l1kib`).
fn nested_key_named(table: &toml::Table, msg: &str, prefix: &str) -> Option<String> {
    for (k, v) in table {
        if let toml::Value::Table(inner) = v {
            let path = format!("{prefix}.{k}");
            if let Some(found) = inner.keys().find(|ik| msg.contains(&format!("`{ik}`"))) {
                return Some(format!("{path}.{found}"));
            }
            if let Some(deeper) = nested_key_named(inner, msg, &path) {
                return Some(deeper);
            }
        }
    }
    None
}

/// Sets `key` in `table`, merging nested tables (`hardware.buffers.l1_kib`
/// overrides one buffer and keeps the preset's others).
fn merge_value(table: &mut toml::Table, key: &str, value: &toml::Value) {
    match (table.get_mut(key), value) {
        (Some(toml::Value::Table(into)), toml::Value::Table(from)) => {
            for (k, v) in from {
                merge_value(into, k, v);
            }
        }
        _ => {
            table.insert(key.to_owned(), value.clone());
        }
    }
}

/// The `[model]` table: a `preset` name (or a path to a model file) with any
/// of the model's keys overridden beside it (`[model.moe] topk = 4`).
fn resolve_model(source: &Source, table: &toml::Table, out: &mut Vec<Diagnostic>) -> Option<ModelConfig> {
    let names = ModelConfig::preset_names().join(", ");
    let Some(name) = table.get("preset") else {
        out.push(source.at_key("model.preset", format!("missing; expected a preset name ({names}) or a path")));
        return None;
    };
    let Some(name) = name.as_str() else {
        out.push(source.at_key("model.preset", format!("expected a preset name ({names}) or a path, found {name}")));
        return None;
    };
    let text = match ModelConfig::preset_text(name) {
        Ok(t) => t.to_owned(),
        Err(e) => match read_device_file(source, name) {
            Some(t) => t,
            None => {
                out.push(source.at_key("model.preset", e.to_string()));
                return None;
            }
        },
    };
    let mut merged: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            out.push(source.at_key("model.preset", format!("model file {name}: {}", e.message().trim())));
            return None;
        }
    };
    let mut over = table.clone();
    over.remove("preset");
    for (k, v) in &over {
        merge_value(&mut merged, k, v);
    }
    let model: ModelConfig = match toml::Value::Table(merged).try_into() {
        Ok(m) => m,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            let key = nested_key_named(&over, &msg, "model")
                .or_else(|| over.keys().find(|k| msg.contains(k.as_str())).map(|k| format!("model.{k}")))
                .unwrap_or_else(|| "model".to_owned());
            out.push(source.at_key(&key, msg));
            return None;
        }
    };
    let problems = model.problems();
    if !problems.is_empty() {
        push_problems(source, "model.", &problems, out);
        return None;
    }
    Some(model)
}

fn read_device_file(source: &Source, name: &str) -> Option<String> {
    if !name.ends_with(".toml") {
        return None;
    }
    let base = std::path::Path::new(&source.origin).parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let path = base.join(name);
    std::fs::read_to_string(&path).or_else(|_| std::fs::read_to_string(name)).ok()
}

fn resolve_topology(
    source: &Source,
    config: &TopologyConfig,
    defaults: LinkDefaults,
    out: &mut Vec<Diagnostic>,
) -> Option<ClusterSpec> {
    match config.resolve(defaults) {
        Ok(spec) => Some(spec),
        Err(TopologyError::Invalid { problems }) => {
            push_problems(source, "topology.", &problems, out);
            None
        }
        Err(e @ TopologyError::UnknownPreset { .. }) => {
            out.push(source.at_key("topology.preset", e.to_string()));
            None
        }
        Err(e) => {
            out.push(source.at_key("topology", e.to_string()));
            None
        }
    }
}
