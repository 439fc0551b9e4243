//! What a workload runs on: the `[hardware]`, `[topology]`, `[model]` and
//! `[parallel]` tables of a scenario resolved (device preset merged with
//! overrides, topology resolved against the device, model preset merged with
//! overrides) into a [`Setup`], every problem located in the scenario's
//! source. The `[workload]` table is not read here: `scenario.rs` hands it
//! to the workload registry (`workloads::registry`).

use moesim_models::hardware::ops::gemm_kernels::GemmKernels;
use moesim_models::network::moe_comm::DeepEpRdma;
use moesim_models::transformer::parallel::CpComm;
use moesim_models::transformer::schedule::ScheduleKind;
use moesim_models::{DeviceSpec, ModelConfig, ModelError};
use moesim_topologies::{ClusterSpec, ConfigProblem, LinkDefaults, TopologyConfig, TopologyError};
use serde::Deserialize;

use std::path::{Path, PathBuf};

use crate::diagnostics::{Diagnostic, Source};
use crate::files::{read_text, MAX_CONFIG_BYTES};

/// A scenario's resolved, checked setting: everything but its workload.
#[derive(Debug, Clone)]
pub struct Setup {
    pub name: String,
    pub seed: u64,
    pub device: DeviceSpec,
    /// The cluster, when the scenario has a `[topology]` table.
    pub topology: Option<ClusterSpec>,
    /// The `[model]` table resolved (preset merged with overrides), if any.
    pub model: Option<ModelConfig>,
    pub parallel: Option<ParallelTable>,
    /// Where it came from, for locating later problems.
    pub source: Source,
    /// The tables the setting was resolved from (presets merged with
    /// overrides), for `scenario.resolved.toml`.
    pub resolved: ResolvedTables,
}

/// The `[hardware]`, `[topology]` and `[model]` tables with their presets
/// merged in: what `scenario.resolved.toml` writes out in full.
#[derive(Debug, Clone, Default)]
pub struct ResolvedTables {
    /// `hardware.device` as written (a preset name or a path).
    pub device_given: String,
    /// Every key of the device: its preset's (or file's) with the
    /// scenario's overrides.
    pub device: toml::Table,
    /// The topology table over its preset, the device's link rates filled in
    /// where neither sets them.
    pub topology: Option<moesim_topologies::TopologyConfig>,
    /// `model.preset` as written.
    pub model_given: Option<String>,
    /// Every key of the model: its preset's with the overrides.
    pub model: Option<toml::Table>,
}

/// The `hardware.device` / `model.preset` value that takes no preset: the
/// table itself holds every key (`scenario.resolved.toml` writes it when the
/// device or model came from a file).
pub const INLINE: &str = "inline";

impl Setup {
    /// Locates a model error's problems in this scenario's source.
    pub fn diagnose(&self, err: &ModelError) -> Vec<Diagnostic> {
        model_error_diagnostics(&self.source, err, "")
    }
}

fn one() -> u32 {
    1
}
fn default_comm_sms() -> u32 {
    20
}

/// The `[parallel]` table as written; `dp` defaults to what fills the
/// cluster. Resolved against the cluster by the workload.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParallelTable {
    /// Tensor-parallel degree (attention and dense layers split over this many GPUs).
    #[serde(default = "one")]
    pub tp: u32,
    /// Context-parallel degree: each sequence split over this many GPUs (training; the sequence length must be a multiple of 2 x cp).
    #[serde(default = "one")]
    pub cp: u32,
    /// How context-parallel GPUs exchange keys and values: "ring" (ring attention, Megatron-LM / Transformer Engine) or "all-gather" (Llama 3).
    #[serde(default)]
    pub cp_comm: CpComm,
    /// Pipeline-parallel degree (stages).
    #[serde(default = "one")]
    pub pp: u32,
    /// Data-parallel degree (model replicas).
    pub dp: Option<u32>,
    /// Expert-parallel degree (routed experts spread over this many GPUs).
    #[serde(default = "one")]
    pub ep: u32,
    /// ZeRO stage: 0 none, 1 optimizer states, 2 plus gradients, 3 plus parameters (FSDP) sharded over data parallelism.
    #[serde(default = "one")]
    pub zero: u32,
    #[serde(default)]
    pub schedule: Option<ScheduleKind>,
    /// Model chunks per pipeline device (`schedule = "interleaved-1f1b"`).
    #[serde(default = "one")]
    pub virtual_stages: u32,
    /// Megatron sequence parallelism beside TP (Korthikanti et al. 2022).
    #[serde(default)]
    pub sequence_parallel: bool,
    /// Sequences per micro-batch.
    #[serde(default = "one")]
    pub micro_batch: u32,
    /// SMs each expert-parallel communication kernel holds (DeepSeek-V3: 20 of 132).
    #[serde(default = "default_comm_sms")]
    pub comm_sms: u32,
    /// How DeepEP's normal kernels drive RDMA: "ibgda" (default: GPU-initiated, a queue pair per channel, DeepEP since 2025-04; the links bound them) or "ibrc" (NVSHMEM's IBRC, DeepEP as first released in 2025-02 and as DeepSeek trained V3: every (token, node) copy, the rank's own node's included, goes through the kernels' channels at 46/24 GB/s per SM, below the InfiniBand line rate).
    #[serde(default)]
    pub deepep_rdma: DeepEpRdma,
    /// Which FP8 GEMM kernels run: "deepgemm" (default: DeepGEMM, as the GEMM cost model is validated) or "deepseek-internal" (DeepSeek's CUTLASS 3.6-based kernels V3 was trained with: DeepGEMM's time x DeepGEMM's published speedup over them for the nearest benchmarked shape, DeepGEMM README 2025-02-25).
    #[serde(default)]
    pub gemm_kernels: GemmKernels,
    /// Transformer layers of each model stage (pp x virtual_stages counts,
    /// adding up to the model's layers); default: stages balanced by cost.
    #[serde(default)]
    pub stage_layers: Option<Vec<u32>>,
    /// Llama 3's shorthand: this many layers fewer on the first and last
    /// model stages (for the embedding and the output head), the rest even.
    #[serde(default)]
    pub first_last_stage_layers_fewer: Option<u32>,
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
pub(crate) fn resolve_device(
    source: &Source,
    table: &toml::Table,
    out: &mut Vec<Diagnostic>,
) -> Option<(DeviceSpec, toml::Table)> {
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
    let mut merged = preset_table::<DeviceSpec>(source, "hardware.device", name, DeviceSpec::preset_text(name), out)?;
    let preset = merged.clone();
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
    let device: DeviceSpec = match toml::Value::Table(merged.clone()).try_into() {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            // Each override the device refuses on its own, at its line or
            // its --set; else the key the message names.
            let mut over = table.clone();
            over.remove("device");
            let blamed = blame::<DeviceSpec>(&preset, &over, "hardware");
            if !blamed.is_empty() {
                out.extend(blamed.into_iter().map(|(key, msg)| source.at_key(&key, msg)));
                return None;
            }
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
    Some((device, merged))
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

/// The overridden values (dotted keys under `prefix`) that `T` refuses
/// when each alone is merged into `preset`, with why: every bad override
/// at once, each located at its own line or `--set`.
fn blame<T: serde::de::DeserializeOwned>(
    preset: &toml::Table,
    overrides: &toml::Table,
    prefix: &str,
) -> Vec<(String, String)> {
    fn leaves(t: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, toml::Value)>) {
        for (k, v) in t {
            path.push(k.clone());
            match v {
                toml::Value::Table(inner) => leaves(inner, path, out),
                _ => out.push((path.clone(), v.clone())),
            }
            path.pop();
        }
    }
    let mut all = Vec::new();
    leaves(overrides, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter_map(|(path, value)| {
            let one =
                path.iter().rev().fold(value, |v, k| toml::Value::Table(toml::Table::from_iter([(k.clone(), v)])));
            let mut merged = preset.clone();
            if let toml::Value::Table(one) = one {
                for (k, v) in &one {
                    merge_value(&mut merged, k, v);
                }
            }
            let err = toml::Value::Table(merged).try_into::<T>().err()?;
            Some((format!("{prefix}.{}", path.join(".")), err.message().trim().to_owned()))
        })
        .collect()
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
pub(crate) fn resolve_model(
    source: &Source,
    table: &toml::Table,
    out: &mut Vec<Diagnostic>,
) -> Option<(ModelConfig, toml::Table)> {
    let names = ModelConfig::preset_names().join(", ");
    let Some(name) = table.get("preset") else {
        out.push(source.at_key("model.preset", format!("missing; expected a preset name ({names}) or a path")));
        return None;
    };
    let Some(name) = name.as_str() else {
        out.push(source.at_key("model.preset", format!("expected a preset name ({names}) or a path, found {name}")));
        return None;
    };
    let mut merged = preset_table::<ModelConfig>(source, "model.preset", name, ModelConfig::preset_text(name), out)?;
    let preset = merged.clone();
    let mut over = table.clone();
    over.remove("preset");
    for (k, v) in &over {
        merge_value(&mut merged, k, v);
    }
    let model: ModelConfig = match toml::Value::Table(merged.clone()).try_into() {
        Ok(m) => m,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            let blamed = blame::<ModelConfig>(&preset, &over, "model");
            if !blamed.is_empty() {
                out.extend(blamed.into_iter().map(|(key, msg)| source.at_key(&key, msg)));
                return None;
            }
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
    Some((model, merged))
}

/// The table of the preset `name` (`preset`: its embedded text, or why
/// there is none) or, for a name ending in `.toml`, of that file (beside the
/// scenario, else relative to the working directory); for [`INLINE`], an
/// empty table (the scenario's table holds every key). Problems go to `out`
/// at `key`; a syntax error in the file is located in that file.
fn preset_table<T: serde::de::DeserializeOwned>(
    source: &Source,
    key: &str,
    name: &str,
    preset: Result<&str, ModelError>,
    out: &mut Vec<Diagnostic>,
) -> Option<toml::Table> {
    if name == INLINE {
        return Some(toml::Table::new());
    }
    let (origin, text) = match preset {
        Ok(text) => (format!("preset {name}"), text.to_owned()),
        Err(e) if !name.ends_with(".toml") => {
            out.push(source.at_key(key, e.to_string()));
            return None;
        }
        Err(_) => {
            let base = Path::new(&source.origin).parent().map(Path::to_path_buf).unwrap_or_default();
            let beside = base.join(name);
            let path = if beside.exists() || !Path::new(name).exists() { beside } else { PathBuf::from(name) };
            match read_text(&path, MAX_CONFIG_BYTES) {
                Ok(text) => (path.display().to_string(), text),
                Err(e) => {
                    out.push(source.at_key(key, format!("{}: {e}", path.display())));
                    return None;
                }
            }
        }
    };
    let table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            out.push(Source::new(origin, text.as_str()).toml_error(e.span(), e.message()));
            return None;
        }
    };
    // A user's device or model file: its own problems (a value of the wrong
    // type, an unknown or missing key), located in that file, not blamed on
    // the scenario's overrides.
    if preset.is_err() {
        if let Err(e) = toml::from_str::<T>(&text) {
            out.push(Source::new(origin, text.as_str()).toml_error(e.span(), e.message()));
            return None;
        }
    }
    Some(table)
}

pub(crate) fn resolve_topology(
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
