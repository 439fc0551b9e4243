//! Where a run's files came from: the moesim version and git commit (embedded
//! by `build.rs`), the scenario and its `--set` overrides, the seed, and the
//! names of the device, topology, model and parallel plan (`summary.json`'s
//! `provenance` object, and a caption on every plot); and
//! `scenario.resolved.toml`, the scenario with every preset and override
//! written out in full, so that `moesim run scenario.resolved.toml` gives
//! the same results without the presets or the overrides.

use std::path::{Path, PathBuf};

use moesim_models::{DeviceSpec, ModelConfig};
use serde_json::{Map, Value};

use crate::setup::{Setup, INLINE};

/// The moesim version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit moesim was built from (`git rev-parse HEAD` at build
/// time), or `unknown` when it was built outside a git checkout.
pub const GIT_COMMIT: &str = env!("MOESIM_GIT_COMMIT");

/// The file every `--out` holds beside `summary.json`.
pub const RESOLVED_FILE: &str = "scenario.resolved.toml";

/// The device's name.
pub fn device_name(setup: &Setup) -> String {
    setup.device.name.clone()
}

/// The topology: its preset and shape, e.g. `h800-cluster (2 nodes x 8
/// GPUs)`, or `none`.
pub fn topology_name(setup: &Setup) -> String {
    setup.topology.as_ref().map_or_else(
        || "none".to_owned(),
        |t| {
            let nodes = if t.nodes == 1 { "1 node".to_owned() } else { format!("{} nodes", t.nodes) };
            format!("{} ({nodes} x {} GPUs)", t.name, t.gpus_per_node)
        },
    )
}

/// The model's name, or `none`.
pub fn model_name(setup: &Setup) -> String {
    setup.model.as_ref().map_or_else(|| "none".to_owned(), |m| m.name.clone())
}

/// The parallel plan, e.g. `tp1 pp16 ep64 dp128 zero1 dualpipe`, or `none`.
pub fn plan_name(setup: &Setup) -> String {
    let Some(p) = &setup.parallel else { return "none".to_owned() };
    let gpus = setup.topology.as_ref().map(|t| u64::from(t.nodes) * u64::from(t.gpus_per_node));
    let split = (u64::from(p.tp) * u64::from(p.cp) * u64::from(p.pp)).max(1);
    let dp = match (p.dp, gpus) {
        (Some(dp), _) => dp.to_string(),
        (None, Some(g)) if g % split == 0 => (g / split).to_string(),
        _ => "auto".to_owned(),
    };
    let cp = if p.cp > 1 { format!(" cp{} {}", p.cp, p.cp_comm.as_str()) } else { String::new() };
    let mut s = format!("tp{}{cp} pp{} ep{} dp{dp} zero{}", p.tp, p.pp, p.ep, p.zero);
    if let Some(k) = p.schedule {
        s.push(' ');
        s.push_str(k.as_str());
    }
    if p.virtual_stages > 1 {
        s.push_str(&format!(" v{}", p.virtual_stages));
    }
    if p.sequence_parallel {
        s.push_str(" sp");
    }
    s
}

/// One line naming device, topology, model and plan, for plot captions.
pub fn caption(setup: &Setup) -> String {
    format!(
        "device {} | topology {} | model {} | plan {}",
        device_name(setup),
        topology_name(setup),
        model_name(setup),
        plan_name(setup)
    )
}

/// `summary.json`'s `provenance` object.
pub fn summary_object(setup: &Setup) -> Value {
    let mut m = Map::new();
    m.insert("moesim_version".into(), Value::from(VERSION));
    m.insert("git_commit".into(), Value::from(GIT_COMMIT));
    m.insert("scenario_origin".into(), Value::from(setup.source.origin.clone()));
    let sets: Vec<Value> = setup.source.overrides().iter().map(|(k, v)| Value::from(format!("{k}={v}"))).collect();
    m.insert("overrides".into(), Value::from(sets));
    m.insert("seed".into(), Value::from(setup.seed));
    m.insert("device".into(), Value::from(device_name(setup)));
    m.insert("topology".into(), Value::from(topology_name(setup)));
    m.insert("model".into(), Value::from(model_name(setup)));
    m.insert("plan".into(), Value::from(plan_name(setup)));
    m.insert("resolved_scenario".into(), Value::from(RESOLVED_FILE));
    Value::Object(m)
}

/// `scenario.resolved.toml`: the scenario with its presets and overrides
/// resolved. Device and model keep their preset's name when it is built in
/// (every key is written beside it, so the preset's values are not used);
/// one read from a file becomes `inline`. Trace paths in `[workload]`
/// become absolute, so the file runs from any folder.
pub fn resolved_toml(setup: &Setup) -> Result<String, String> {
    let r = &setup.resolved;
    let mut doc = toml::Table::new();
    doc.insert("name".into(), setup.name.clone().into());
    doc.insert("seed".into(), toml::Value::Integer(setup.seed as i64));

    let mut hw = toml::Table::new();
    let builtin_device = DeviceSpec::preset_text(&r.device_given).is_ok();
    hw.insert("device".into(), if builtin_device { r.device_given.clone() } else { INLINE.to_owned() }.into());
    for (k, v) in &r.device {
        hw.insert(k.clone(), v.clone());
    }
    doc.insert("hardware".into(), hw.into());

    if let Some(t) = &r.topology {
        let mut tt = toml::Table::new();
        let mut put = |k: &str, v: Option<toml::Value>| {
            if let Some(v) = v {
                tt.insert(k.to_owned(), v);
            }
        };
        let int = |v: Option<u32>| v.map(|v| toml::Value::Integer(i64::from(v)));
        let float = |v: Option<f64>| v.map(toml::Value::Float);
        put("preset", t.preset.clone().map(toml::Value::String));
        put("kind", t.kind.map(|k| toml::Value::String(k.as_str().to_owned())));
        put("nodes", int(t.nodes));
        put("gpus_per_node", int(t.gpus_per_node));
        put("nvlink_gb_per_s", float(t.nvlink_gb_per_s));
        put("nvlink_efficiency", float(t.nvlink_efficiency));
        put("nvlink_latency_ns", float(t.nvlink_latency_ns));
        put("nvls_efficiency", float(t.nvls_efficiency));
        put("nccl_nvlink_efficiency", float(t.nccl_nvlink_efficiency));
        put("nvls_chunk_overhead_ns", float(t.nvls_chunk_overhead_ns));
        put("nccl_version", t.nccl_version.clone().map(toml::Value::String));
        put("pcie_gb_per_s", float(t.pcie_gb_per_s));
        put("pcie_latency_ns", float(t.pcie_latency_ns));
        put("pcie_efficiency", float(t.pcie_efficiency));
        put("ib_gbit_per_s", float(t.ib_gbit_per_s));
        put("ib_efficiency", float(t.ib_efficiency));
        put("ib_latency_ns", float(t.ib_latency_ns));
        put("switch_radix", int(t.switch_radix));
        put("k", int(t.k));
        doc.insert("topology".into(), tt.into());
    }

    if let (Some(model), Some(given)) = (&r.model, &r.model_given) {
        let mut mt = toml::Table::new();
        let builtin = ModelConfig::preset_text(given).is_ok();
        mt.insert("preset".into(), if builtin { given.clone() } else { INLINE.to_owned() }.into());
        for (k, v) in model {
            mt.insert(k.clone(), v.clone());
        }
        doc.insert("model".into(), mt.into());
    }

    if let Some(p) = &setup.parallel {
        let mut pt = toml::Table::new();
        let int = |v: u32| toml::Value::Integer(i64::from(v));
        pt.insert("tp".into(), int(p.tp));
        pt.insert("cp".into(), int(p.cp));
        pt.insert("cp_comm".into(), p.cp_comm.as_str().into());
        pt.insert("pp".into(), int(p.pp));
        if let Some(dp) = p.dp {
            pt.insert("dp".into(), int(dp));
        }
        pt.insert("ep".into(), int(p.ep));
        pt.insert("zero".into(), int(p.zero));
        if let Some(k) = p.schedule {
            pt.insert("schedule".into(), k.as_str().into());
        }
        pt.insert("virtual_stages".into(), int(p.virtual_stages));
        pt.insert("sequence_parallel".into(), p.sequence_parallel.into());
        pt.insert("micro_batch".into(), int(p.micro_batch));
        pt.insert("comm_sms".into(), int(p.comm_sms));
        pt.insert("deepep_rdma".into(), p.deepep_rdma.as_str().into());
        pt.insert("gemm_kernels".into(), p.gemm_kernels.as_str().into());
        if let Some(counts) = &p.stage_layers {
            pt.insert("stage_layers".into(), counts.iter().map(|&c| int(c)).collect::<Vec<_>>().into());
        }
        if let Some(n) = p.first_last_stage_layers_fewer {
            pt.insert("first_last_stage_layers_fewer".into(), int(n));
        }
        doc.insert("parallel".into(), pt.into());
    }

    let file: toml::Table = toml::from_str(&setup.source.text).map_err(|e| format!("re-reading the scenario: {e}"))?;
    if let Some(toml::Value::Table(mut w)) = file.get("workload").cloned() {
        let base =
            Path::new(&setup.source.origin).parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf);
        for key in ["trace", "traces"] {
            match w.get_mut(key) {
                Some(toml::Value::String(s)) => *s = absolute(base.as_deref(), s),
                Some(toml::Value::Array(items)) => {
                    for item in items {
                        if let toml::Value::String(s) = item {
                            *s = absolute(base.as_deref(), s);
                        }
                    }
                }
                _ => {}
            }
        }
        doc.insert("workload".into(), w.into());
    }

    let body = toml::to_string(&doc).map_err(|e| format!("writing {RESOLVED_FILE}: {e}"))?;
    let sets: Vec<String> = setup.source.overrides().iter().map(|(k, v)| format!("--set {k}={v}")).collect();
    let mut header = format!(
        "# {RESOLVED_FILE}: written by moesim {VERSION} (commit {GIT_COMMIT}).\n# The scenario {}{} with every preset and \
         override resolved: `moesim run {RESOLVED_FILE}` reproduces the run.\n",
        setup.source.origin,
        if sets.is_empty() { String::new() } else { format!(" {}", sets.join(" ")) }
    );
    header.push_str(&format!(
        "# `device = \"{INLINE}\"` / `preset = \"{INLINE}\"` take no preset: the table holds every key.\n\n"
    ));
    Ok(header + &body)
}

/// A trace path as the workload would find it (beside the scenario file if
/// it is there, else relative to the working folder), made absolute.
fn absolute(base: Option<&Path>, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_owned();
    }
    let beside: Option<PathBuf> = base.map(|b| b.join(p)).filter(|b| b.exists());
    let chosen = beside.unwrap_or_else(|| p.to_path_buf());
    std::path::absolute(&chosen).map_or_else(|_| path.to_owned(), |a| a.display().to_string())
}
