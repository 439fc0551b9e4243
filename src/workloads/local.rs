//! `kind = "local"`: a model deployed on one machine, the local-LLM way: a
//! consumer GPU (or an edge SoC) beside a host of CPU sockets with large
//! DRAM. A runtime preset (`ktransformers-v0.2`, `llama.cpp`,
//! `all-on-device`) says what runs where; a host preset (`xeon-gold-6454s`)
//! says what the CPUs, DRAM, UPI and PCIe can do. One prompt's prefill and
//! one decode step run through the engine (GPU, one device per socket,
//! DRAM, UPI and PCIe links), so the CPU's routed experts overlap the GPU's
//! shared expert rather than being summed; the metrics are prompt and
//! decode tokens/s and whether the weights fit.
//!
//! Why a kind and not a key of `prefill`/`decode`: those lower a
//! deployment unit of a cluster (`[topology]`, `[parallel]`); a local
//! machine has neither, but a host tier and a runtime's placement instead.

use moesim_models::hardware::host::HostSpec;
use moesim_models::lowering::local::{LocalSetup, RuntimeSpec};
use moesim_sim::Observer;
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{model_failure, num, positive_time, problem, simulate, Context, Outcome, RunFailure, RunOptions, Workload};
use crate::setup::Setup;

fn one() -> u32 {
    1
}

fn q4_k() -> f64 {
    4.5
}

fn bf16_bytes() -> f64 {
    2.0
}

/// The `[workload]` table of a local deployment.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalWorkload {
    pub kind: String,
    /// The runtime preset: what runs where and what its CPU kernels sustain
    /// (`ktransformers-v0.2`, `llama.cpp`, `all-on-device`, `expert-streaming`).
    pub runtime: String,
    /// The host preset (CPU sockets, DRAM, UPI, PCIe), e.g.
    /// `xeon-gold-6454s`; not needed by `all-on-device`.
    pub host: Option<String>,
    /// CPU sockets used, 1 to the host's.
    #[serde(default = "one")]
    pub sockets: u32,
    /// Tokens of the prompt (prefill); decode runs one token at this context.
    pub prompt_tokens: u64,
    /// Experts per token (default: the model's top-k).
    pub experts_per_token: Option<u32>,
    /// Bits per weight of the routed experts (Q4_K: 4.5; Q8_0: 8.5; BF16: 16).
    #[serde(default = "q4_k")]
    pub expert_bits_per_weight: f64,
    /// Bits per weight of every other weight (attention, shared experts,
    /// dense layers, head).
    #[serde(default = "q4_k")]
    pub weight_bits_per_weight: f64,
    /// Bytes per cached KV value (2: BF16).
    #[serde(default = "bf16_bytes")]
    pub kv_bytes_per_value: f64,
    /// Layers kept on the GPU under the `layers` placement (llama.cpp's
    /// `--n-gpu-layers`, the last layers).
    #[serde(default)]
    pub gpu_layers: u32,
}

impl LocalWorkload {
    fn resolve(&self) -> (Result<RuntimeSpec, String>, Option<Result<HostSpec, String>>) {
        let runtime = RuntimeSpec::preset(&self.runtime).map_err(|e| e.to_string());
        let host = self.host.as_ref().map(|h| HostSpec::preset(h).map_err(|e| e.to_string()));
        (runtime, host)
    }
}

impl Workload for LocalWorkload {
    fn kind_name(&self) -> &str {
        "local"
    }

    fn uses_model(&self) -> bool {
        true
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let (runtime, host) = self.resolve();
        if let Err(e) = &runtime {
            out.push(problem("workload.runtime", e.clone()));
        }
        match &host {
            Some(Err(e)) => out.push(problem("workload.host", e.clone())),
            Some(Ok(h)) => {
                if self.sockets == 0 || self.sockets > h.sockets {
                    out.push(problem(
                        "workload.sockets",
                        format!("expected 1 to the host's {} sockets, found {}", h.sockets, self.sockets),
                    ));
                }
            }
            None => {
                if runtime.as_ref().is_ok_and(|r| r.placement != moesim_models::lowering::local::Placement::Device) {
                    out.push(problem(
                        "workload.host",
                        format!(
                            "runtime `{}` runs on a host's CPUs: name one, e.g. host = \"xeon-gold-6454s\"",
                            self.runtime
                        ),
                    ));
                }
            }
        }
        if !(1..=10_000_000).contains(&self.prompt_tokens) {
            out.push(problem(
                "workload.prompt_tokens",
                format!("expected an integer in [1, 10000000], found {}", self.prompt_tokens),
            ));
        }
        for (key, v) in [
            ("workload.expert_bits_per_weight", self.expert_bits_per_weight),
            ("workload.weight_bits_per_weight", self.weight_bits_per_weight),
        ] {
            if !(v.is_finite() && (1.0..=32.0).contains(&v)) {
                out.push(problem(key, format!("expected 1 to 32 bits per weight, found {v}")));
            }
        }
        if !(self.kv_bytes_per_value.is_finite() && (0.125..=4.0).contains(&self.kv_bytes_per_value)) {
            out.push(problem(
                "workload.kv_bytes_per_value",
                format!("expected 0.125 to 4 bytes, found {}", self.kv_bytes_per_value),
            ));
        }
        if !cx.model_given {
            out.push(problem(
                "model",
                "a local deployment needs a [model] table, e.g. preset = \"deepseek-v3\"".into(),
            ));
        }
        if let Some(m) = cx.model {
            if let (Some(k), Some(moe)) = (self.experts_per_token, &m.moe) {
                if k == 0 || k > moe.routed_experts {
                    out.push(problem(
                        "workload.experts_per_token",
                        format!("expected 1 to the model's {} routed experts, found {k}", moe.routed_experts),
                    ));
                }
            }
            if self.gpu_layers > m.layers {
                out.push(problem(
                    "workload.gpu_layers",
                    format!("expected at most the model's {} layers, found {}", m.layers, self.gpu_layers),
                ));
            }
        }
        out
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let model = setup.model.as_ref().ok_or_else(|| {
            RunFailure::Input(vec![setup.source.at_key("model", "a local deployment needs a [model] table")])
        })?;
        let (runtime, host) = self.resolve();
        let input = |key: &str, e: String| RunFailure::Input(vec![setup.source.at_key(key, &e)]);
        let runtime = runtime.map_err(|e| input("workload.runtime", e))?;
        let host = host.transpose().map_err(|e| input("workload.host", e))?;
        let topk = self.experts_per_token.or(model.moe.as_ref().map(|m| m.topk)).unwrap_or(0);
        let local = LocalSetup {
            model,
            device: &setup.device,
            host: host.as_ref(),
            runtime: &runtime,
            sockets: self.sockets,
            prompt_tokens: self.prompt_tokens,
            topk,
            expert_bits: self.expert_bits_per_weight,
            other_bits: self.weight_bits_per_weight,
            kv_bytes_per_value: self.kv_bytes_per_value,
            gpu_layers: self.gpu_layers,
        };
        let low = local.lower().map_err(|e| model_failure(setup, e))?;
        let (platform, graph, result) = simulate(low.platform, low.graph, options, observer)?;
        let total_s = positive_time(result.end);
        let prefill_s = result.spans[low.prefill_end.0 as usize].end.as_secs_f64().max(1e-12);
        let decode_s = (total_s - prefill_s).max(1e-12);
        let mem = low.memory;
        let mut m = Map::new();
        m.insert("runtime".into(), Value::from(runtime.name.clone()));
        m.insert("device".into(), Value::from(setup.device.name.clone()));
        m.insert("host".into(), host.as_ref().map_or(Value::Null, |h| Value::from(h.name.clone())));
        m.insert("sockets".into(), Value::from(if host.is_some() { self.sockets } else { 0 }));
        m.insert("experts_per_token".into(), Value::from(topk));
        m.insert("prompt_tokens".into(), Value::from(self.prompt_tokens));
        m.insert("prefill_s".into(), num(prefill_s));
        m.insert("prefill_tokens_per_s".into(), num(self.prompt_tokens as f64 / prefill_s));
        m.insert("decode_step_ms".into(), num(decode_s * 1e3));
        m.insert("decode_tokens_per_s".into(), num(1.0 / decode_s));
        m.insert("cpu_weight_bytes_per_token".into(), num(low.cpu_bytes_per_token));
        m.insert("cpu_weight_gb_per_s".into(), num(low.cpu_bytes_per_token / decode_s / 1e9));
        m.insert("gpu_bytes_per_token".into(), num(low.gpu_bytes_per_token));
        m.insert("gpu_memory_bytes".into(), num(mem.gpu_bytes));
        m.insert("gpu_capacity_bytes".into(), num(mem.gpu_capacity_bytes));
        m.insert("host_memory_bytes_per_socket".into(), num(mem.host_bytes_per_socket));
        m.insert("host_capacity_bytes_per_socket".into(), num(mem.host_capacity_bytes_per_socket));
        m.insert("fits".into(), Value::from(mem.fits()));
        let mut notes = vec![match &host {
            Some(h) => format!(
                "runtime {}: {} placement on {} and {} socket(s) of {}, {} weights across sockets; decode is one step \
                 at the prompt's context",
                runtime.name,
                runtime.placement.as_str(),
                setup.device.name,
                self.sockets,
                h.name,
                runtime.numa.as_str()
            ),
            None => format!(
                "runtime {}: every layer on {}; decode is one step at the prompt's context",
                runtime.name, setup.device.name
            ),
        }];
        if !mem.fits() {
            let gib = 1073741824.0;
            let mut why = format!(
                "does not fit: {:.1} GiB on the device of {:.1} GiB",
                mem.gpu_bytes / gib,
                mem.gpu_capacity_bytes / gib
            );
            if host.is_some() {
                why += &format!(
                    ", {:.1} GiB per socket of {:.1} GiB",
                    mem.host_bytes_per_socket / gib,
                    mem.host_capacity_bytes_per_socket / gib
                );
            }
            notes.push(why + "; the speeds are those it would have");
        }
        Ok(Outcome {
            metrics: m,
            notes,
            graph,
            platform,
            result,
            figures: Vec::new(),
            files: Vec::new(),
            job_gpus: None,
        })
    }
}
