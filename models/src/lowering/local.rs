//! Local deployment: one machine with a GPU (or an edge SoC) and a host of
//! CPU sockets with large DRAM, lowered into one small engine graph of a
//! prompt's prefill followed by one decode step.
//!
//! The platform holds the GPU (its memory bandwidth at the streaming
//! efficiency), one compute device per CPU socket, one link per socket's
//! DRAM (the sustained read bandwidth the CPU kernels reach), the socket
//! link (UPI, both directions), PCIe both directions and the pageable
//! staging copy. What runs where is the runtime's placement
//! ([`RuntimeSpec`], presets in `presets/runtimes/`):
//!
//! - `experts-on-cpu` (KTransformers): attention, shared experts, dense
//!   layers and the head on the GPU; per MoE layer the hidden state crosses
//!   PCIe, every socket computes its share of the routed experts (a compute
//!   kernel beside the DRAM reads of the weights it touches: a roofline the
//!   engine resolves), the result crosses back, and the GPU's shared expert
//!   overlaps the CPU's routed experts.
//! - `layers` (llama.cpp): whole layers on the CPU but the last
//!   `gpu_layers`; a prompt batch may run on the GPU with each CPU-resident
//!   weight copied over PCIe from pageable memory first.
//! - `device`: everything on the `[hardware]` device.
//! - `experts-streamed`: the routed experts in host memory; per MoE layer
//!   the experts the pass routes to are copied from socket 0's DRAM over
//!   PCIe (pinned) while the shared expert runs, then run on the GPU.
//!
//! NUMA: with `replicated` weights each socket reads its own copy; with
//! `one-node` every read comes from socket 0's DRAM and socket 1's share
//! also crosses UPI. Weights are quantised (`bits` per weight, Q4_K = 4.5).

use moesim_sim::{
    DeviceId, DeviceResource, Flow, Kernel, LinkId, LinkKind, LinkResource, Platform, SimDuration, StreamId, TaskClass,
    TaskGraph, TaskId, UnitDemand,
};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hardware::device::DeviceSpec;
use crate::hardware::host::HostSpec;
use crate::transformer::model::{AttentionKind, ModelConfig};

/// Where a runtime puts the model's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Routed experts on the CPU; attention, shared experts, dense layers,
    /// head and KV cache on the GPU (KTransformers).
    ExpertsOnCpu,
    /// Whole layers on the CPU but the last `gpu_layers` (llama.cpp).
    Layers,
    /// Everything on the device.
    Device,
    /// Routed experts in host memory, the ones a pass routes to copied
    /// over PCIe (pinned) and run on the GPU; the rest on the GPU.
    ExpertsStreamed,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::ExpertsOnCpu => "experts-on-cpu",
            Placement::Layers => "layers",
            Placement::Device => "device",
            Placement::ExpertsStreamed => "experts-streamed",
        }
    }
}

impl NumaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NumaPolicy::Replicated => "replicated",
            NumaPolicy::OneNode => "one-node",
        }
    }
}

/// Where the CPU-resident weights live across sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NumaPolicy {
    /// Every socket holds a copy and reads it locally.
    Replicated,
    /// One copy in socket 0's DRAM; the other sockets read it over UPI.
    OneNode,
}

/// An inference runtime's placement and what its CPU kernels sustain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub name: String,
    #[serde(default)]
    pub product: String,
    pub placement: Placement,
    pub numa: NumaPolicy,
    /// CPU matrix work on the AMX tiles rather than the AVX-512 units.
    pub amx: bool,
    /// Share of a socket's sustained DRAM bandwidth its weight reads reach.
    pub cpu_bandwidth_fraction: f64,
    /// Share of a socket's INT8 peak its matrix kernels reach.
    pub cpu_compute_fraction: f64,
    /// Kernels one layer's GPU side launches (each costs the device's launch overhead).
    pub gpu_kernels_per_layer: u32,
    /// Fixed cost of one GPU -> CPU -> GPU hand-off, us.
    pub handoff_us: f64,
    /// A prompt batch runs CPU-resident layers on the GPU, their weights
    /// copied over PCIe from pageable memory first.
    pub prefill_weights_streamed: bool,
    /// Share of each socket's CPU-kernel rate (its DRAM reads and its
    /// matrix throughput) kept when the runtime's one thread pool spans
    /// more than one socket; 1: the sockets scale perfectly.
    #[serde(default = "one")]
    pub spanning_pool_fraction: f64,
}

fn one() -> f64 {
    1.0
}

const RUNTIMES: &[(&str, &str)] = &[
    ("all-on-device", include_str!("../../presets/runtimes/all-on-device.toml")),
    ("ktransformers-v0.2", include_str!("../../presets/runtimes/ktransformers-v0.2.toml")),
    ("expert-streaming", include_str!("../../presets/runtimes/expert-streaming.toml")),
    ("llama.cpp", include_str!("../../presets/runtimes/llama.cpp.toml")),
];

impl RuntimeSpec {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        RUNTIMES.iter().map(|(n, _)| *n).collect()
    }

    /// Parses and checks an embedded preset.
    pub fn preset(name: &str) -> Result<RuntimeSpec, ModelError> {
        let text =
            RUNTIMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ModelError::UnknownPreset {
                what: "runtime",
                name: name.to_owned(),
                known: Self::preset_names().iter().map(|s| s.to_string()).collect(),
            })?;
        let bad = |message: String| ModelError::BadPreset { name: name.to_owned(), message };
        let spec: RuntimeSpec = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for (key, v) in [
            ("cpu_bandwidth_fraction", spec.cpu_bandwidth_fraction),
            ("cpu_compute_fraction", spec.cpu_compute_fraction),
            ("spanning_pool_fraction", spec.spanning_pool_fraction),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(bad(format!("{key}: expected a fraction in (0, 1], found {v}")));
            }
        }
        if !(spec.handoff_us >= 0.0 && spec.handoff_us < 1e6) {
            return Err(bad(format!("handoff_us: expected 0 to 1e6 us, found {}", spec.handoff_us)));
        }
        Ok(spec)
    }
}

/// What one local deployment runs.
#[derive(Debug, Clone)]
pub struct LocalSetup<'a> {
    pub model: &'a ModelConfig,
    pub device: &'a DeviceSpec,
    /// `None` for the `device` placement.
    pub host: Option<&'a HostSpec>,
    pub runtime: &'a RuntimeSpec,
    /// Sockets used (1..=host.sockets).
    pub sockets: u32,
    pub prompt_tokens: u64,
    /// Experts per token (the model's top-k unless overridden).
    pub topk: u32,
    /// Bits per weight of the routed experts (Q4_K: 4.5).
    pub expert_bits: f64,
    /// Bits per weight of every other weight.
    pub other_bits: f64,
    /// Bytes per cached KV value.
    pub kv_bytes_per_value: f64,
    /// Layers on the GPU under the `layers` placement (the last ones).
    pub gpu_layers: u32,
}

/// Bytes and FLOPs of the model's parts, per pass of `t` tokens.
#[derive(Debug, Clone, Copy)]
struct LayerWork {
    /// Attention (projections, router gate, norms) weight bytes and FLOPs.
    attn_bytes: f64,
    attn_flops: f64,
    /// KV cache bytes read.
    kv_bytes: f64,
    shared_bytes: f64,
    shared_flops: f64,
    /// Routed expert weight bytes touched and FLOPs.
    routed_bytes: f64,
    routed_flops: f64,
    dense_bytes: f64,
    dense_flops: f64,
}

/// Memory a deployment needs where.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalMemory {
    /// Weights and KV cache on the GPU (device), bytes.
    pub gpu_bytes: f64,
    /// Weights in host DRAM per socket that holds a copy, bytes.
    pub host_bytes_per_socket: f64,
    /// The device's capacity, bytes.
    pub gpu_capacity_bytes: f64,
    /// One socket's DRAM, bytes (0 without a host).
    pub host_capacity_bytes_per_socket: f64,
}

impl LocalMemory {
    pub fn fits(&self) -> bool {
        self.gpu_bytes <= self.gpu_capacity_bytes
            && (self.host_bytes_per_socket == 0.0 || self.host_bytes_per_socket <= self.host_capacity_bytes_per_socket)
    }
}

/// The graph of one prompt's prefill then one decode step, and where each ends.
#[derive(Debug)]
pub struct LocalGraph {
    pub platform: Platform,
    pub graph: TaskGraph,
    /// The task that ends the prefill.
    pub prefill_end: TaskId,
    /// Bytes of weights the CPU reads per decoded token.
    pub cpu_bytes_per_token: f64,
    /// Bytes the GPU reads per decoded token (weights and KV).
    pub gpu_bytes_per_token: f64,
    pub memory: LocalMemory,
}

impl LocalSetup<'_> {
    /// The runtime's spanning-pool share when its threads span sockets.
    fn pool_fraction(&self) -> f64 {
        if self.sockets > 1 {
            self.runtime.spanning_pool_fraction
        } else {
            1.0
        }
    }

    fn layer_work(&self, t: f64, context: f64) -> LayerWork {
        let m = self.model;
        let h = m.hidden as f64;
        let ob = self.other_bits / 8.0;
        let eb = self.expert_bits / 8.0;
        let a = &m.attention;
        let attn_params = m.attention_params() + m.moe.as_ref().map_or(0.0, |x| x.routed_experts as f64 * h);
        let (qk, v, kv_per_token) = match a.kind {
            AttentionKind::Mla => (
                (a.qk_nope_head_dim + a.qk_rope_head_dim) as f64,
                a.v_head_dim as f64,
                (a.kv_lora_rank + a.qk_rope_head_dim) as f64,
            ),
            AttentionKind::Gqa => (a.head_dim as f64, a.head_dim as f64, 2.0 * (a.kv_heads * a.head_dim) as f64),
        };
        // Causal: the t new tokens see on average context - t/2 positions.
        let seen = (context - t / 2.0).max(1.0);
        let score_flops = 2.0 * a.heads as f64 * t * seen * (qk + v);
        let (shared_params, routed_params, routed_flops) = match &m.moe {
            Some(x) => {
                let expert = m.ffn_params(x.expert_intermediate);
                let n = x.routed_experts as f64;
                let touched = n * (1.0 - (1.0 - self.topk as f64 / n).powf(t));
                (x.shared_experts as f64 * expert, touched * expert, 2.0 * t * self.topk as f64 * expert)
            }
            None => (0.0, 0.0, 0.0),
        };
        let dense = m.ffn_params(m.ffn.dense_intermediate);
        LayerWork {
            attn_bytes: attn_params * ob,
            attn_flops: 2.0 * t * attn_params + score_flops,
            kv_bytes: context * kv_per_token * self.kv_bytes_per_value,
            shared_bytes: shared_params * ob,
            shared_flops: 2.0 * t * shared_params,
            routed_bytes: routed_params * eb,
            routed_flops,
            dense_bytes: dense * ob,
            dense_flops: 2.0 * t * dense,
        }
    }

    /// What the deployment holds where, with `context` cached tokens.
    pub fn memory(&self, context: f64) -> LocalMemory {
        let m = self.model;
        let p = m.params();
        let ob = self.other_bits / 8.0;
        let eb = self.expert_bits / 8.0;
        let routed = p.routed_experts * eb;
        let rest = (p.total - p.routed_experts - p.embedding) * ob + p.embedding * ob;
        let kv = context * m.kv_cache_bytes_per_token(self.kv_bytes_per_value);
        let gpu_capacity_bytes = self.device.hbm_gib * (1u64 << 30) as f64;
        let host_cap = self.host.map_or(0.0, |h| h.socket_memory_bytes());
        let (gpu_bytes, host_total) = match self.runtime.placement {
            Placement::Device => (routed + rest + kv, 0.0),
            Placement::ExpertsOnCpu | Placement::ExpertsStreamed => {
                (rest - p.embedding * ob + kv, routed + p.embedding * ob)
            }
            Placement::Layers => {
                let frac = self.gpu_layers.min(m.layers) as f64 / m.layers as f64;
                ((routed + rest) * frac + kv, (routed + rest) * (1.0 - frac))
            }
        };
        // Replicated: every socket holds a copy; one-node: socket 0 holds it all.
        let host_bytes_per_socket = host_total;
        LocalMemory { gpu_bytes, host_bytes_per_socket, gpu_capacity_bytes, host_capacity_bytes_per_socket: host_cap }
    }

    /// Lowers the prompt's prefill and one decode step (at the prompt's
    /// context) into one graph.
    pub fn lower(&self) -> Result<LocalGraph, ModelError> {
        let needs_host = self.runtime.placement != Placement::Device;
        let host = match (self.host, needs_host) {
            (Some(h), _) => Some(h),
            (None, false) => None,
            (None, true) => {
                return Err(ModelError::invalid(
                    "host",
                    format!("runtime `{}` runs on a host's CPUs: name one with `host`", self.runtime.name),
                ))
            }
        };
        if let Some(h) = host {
            if self.sockets == 0 || self.sockets > h.sockets {
                return Err(ModelError::invalid(
                    "sockets",
                    format!("expected 1 to the host's {} sockets, found {}", h.sockets, self.sockets),
                ));
            }
        }
        let mut b = Builder::new(self, host);
        let t = self.prompt_tokens as f64;
        let decode_work = self.layer_work(1.0, t + 1.0);
        let prefill_end = b.pass(t, t, true);
        b.pass(1.0, t + 1.0, false);
        let m = self.model;
        let moe_layers = m.moe_layers() as f64;
        let dense_layers = (m.layers - m.moe_layers()) as f64;
        let head_bytes = m.params().head * self.other_bits / 8.0;
        let per_layer_gpu = decode_work.attn_bytes + decode_work.kv_bytes;
        let (cpu_bytes_per_token, gpu_bytes_per_token) = match self.runtime.placement {
            Placement::ExpertsOnCpu => (
                moe_layers * decode_work.routed_bytes,
                m.layers as f64 * per_layer_gpu
                    + moe_layers * decode_work.shared_bytes
                    + dense_layers * decode_work.dense_bytes
                    + head_bytes,
            ),
            Placement::Device | Placement::ExpertsStreamed => (
                0.0,
                m.layers as f64 * per_layer_gpu
                    + moe_layers * (decode_work.shared_bytes + decode_work.routed_bytes)
                    + dense_layers * decode_work.dense_bytes
                    + head_bytes,
            ),
            Placement::Layers => {
                let all = m.layers as f64 * per_layer_gpu
                    + moe_layers * (decode_work.shared_bytes + decode_work.routed_bytes)
                    + dense_layers * decode_work.dense_bytes;
                let frac = self.gpu_layers.min(m.layers) as f64 / m.layers as f64;
                (all * (1.0 - frac), all * frac + head_bytes)
            }
        };
        let memory = self.memory(t + 1.0);
        Ok(LocalGraph {
            platform: b.platform,
            graph: b.graph,
            prefill_end,
            cpu_bytes_per_token,
            gpu_bytes_per_token,
            memory,
        })
    }
}

/// Builds the platform and the per-layer tasks.
struct Builder<'a, 's> {
    s: &'s LocalSetup<'a>,
    host: Option<&'s HostSpec>,
    platform: Platform,
    graph: TaskGraph,
    gpu: DeviceId,
    sockets: Vec<DeviceId>,
    dram: Vec<LinkId>,
    upi_to0: Option<LinkId>,
    h2d: Option<LinkId>,
    d2h: Option<LinkId>,
    pageable: Option<LinkId>,
    gpu_stream: StreamId,
    copy_stream: StreamId,
    cpu_streams: Vec<(StreamId, StreamId)>,
    join_stream: StreamId,
    /// The last task the next one depends on.
    last: Option<TaskId>,
}

impl<'a, 's> Builder<'a, 's> {
    fn new(s: &'s LocalSetup<'a>, host: Option<&'s HostSpec>) -> Self {
        let mut platform = Platform::default();
        let d = s.device;
        let gpu = platform.add_device(DeviceResource {
            name: d.name.clone(),
            units: d.sms,
            mem_bytes_per_s: d.hbm_bytes_per_s() * d.stream_hbm_efficiency,
        });
        let mut graph = TaskGraph::new();
        let gpu_stream = graph.add_stream(0, "gpu");
        let copy_stream = graph.add_stream(0, "pcie");
        let join_stream = graph.add_stream(0, "host");
        let mut b = Builder {
            s,
            host,
            platform,
            graph,
            gpu,
            sockets: Vec::new(),
            dram: Vec::new(),
            upi_to0: None,
            h2d: None,
            d2h: None,
            pageable: None,
            gpu_stream,
            copy_stream,
            cpu_streams: Vec::new(),
            join_stream,
            last: None,
        };
        if let Some(h) = host {
            let link = |name: String, kind, gb_per_s: f64| LinkResource {
                name,
                kind: LinkKind::Physical(kind),
                bytes_per_s: gb_per_s * 1e9,
                latency: SimDuration::ZERO,
            };
            for i in 0..s.sockets {
                b.sockets.push(b.platform.add_device(DeviceResource {
                    name: format!("{} socket {i}", h.name),
                    units: h.cores_per_socket,
                    mem_bytes_per_s: h.socket_stream_bytes_per_s(),
                }));
                let bw = h.socket_stream_bytes_per_s() * s.runtime.cpu_bandwidth_fraction * s.pool_fraction() / 1e9;
                b.dram.push(b.platform.add_link(link(format!("socket {i} DRAM"), "dram", bw)));
                let compute = b.graph.add_stream(i + 1, &format!("cpu socket {i}"));
                let reads = b.graph.add_stream(i + 1, &format!("cpu socket {i} reads"));
                b.cpu_streams.push((compute, reads));
            }
            if s.sockets > 1 {
                b.upi_to0 = Some(b.platform.add_link(link("UPI to socket 0".into(), "upi", h.upi_gb_per_s)));
            }
            b.h2d = Some(b.platform.add_link(link("PCIe host to GPU".into(), "pcie", h.pcie_gb_per_s)));
            b.d2h = Some(b.platform.add_link(link("PCIe GPU to host".into(), "pcie", h.pcie_gb_per_s)));
            b.pageable =
                Some(b.platform.add_link(link("pageable staging copy".into(), "memcpy", h.pageable_copy_gb_per_s)));
        }
        b
    }

    fn after(&mut self, task: TaskId) -> TaskId {
        if let Some(l) = self.last {
            self.graph.add_dep(l, task);
        }
        self.last = Some(task);
        task
    }

    /// A GPU kernel of `flops` and `bytes`, with `kernels` launches.
    fn gpu(&mut self, label: &str, flops: f64, bytes: f64, kernels: f64) -> TaskId {
        let d = self.s.device;
        let compute = flops / (d.bf16_tflops * 1e12) + kernels * d.launch_overhead_us * 1e-6;
        let k = Kernel {
            device: self.gpu,
            compute: SimDuration::from_secs_f64(compute),
            mem_bytes: bytes,
            units: UnitDemand::Share { max_units: d.sms },
        };
        self.graph.add_kernel(self.gpu_stream, label, TaskClass::Compute, k)
    }

    /// A copy of `bytes` over `links`, on the copy stream.
    fn copy(&mut self, label: &str, links: &[LinkId], bytes: f64) -> TaskId {
        let path = self.graph.add_path(links);
        self.graph.add_comm(self.copy_stream, label, [Flow { path, bytes }], None)
    }

    /// CPU work split evenly over the sockets: per socket a compute kernel
    /// beside its weight reads, joined on the host stream. Returns the join.
    fn cpu(&mut self, label: &str, flops: f64, bytes: f64, before: TaskId) -> TaskId {
        let h = self.host.expect("CPU work needs a host");
        let n = self.sockets.len() as f64;
        let rate =
            h.socket_int8_ops_per_s(self.s.runtime.amx) * self.s.runtime.cpu_compute_fraction * self.s.pool_fraction();
        let join = self.graph.add_delay(self.join_stream, &format!("{label} join"), SimDuration::ZERO);
        for i in 0..self.sockets.len() {
            let (cs, rs) = self.cpu_streams[i];
            let k = Kernel {
                device: self.sockets[i],
                compute: SimDuration::from_secs_f64(flops / n / rate),
                mem_bytes: 0.0,
                units: UnitDemand::Share { max_units: h.cores_per_socket },
            };
            let c = self.graph.add_kernel(cs, label, TaskClass::Compute, k);
            let links: Vec<LinkId> = match (self.s.runtime.numa, i) {
                (NumaPolicy::Replicated, _) | (NumaPolicy::OneNode, 0) => vec![self.dram[i]],
                (NumaPolicy::OneNode, _) => vec![self.dram[0], self.upi_to0.expect("a second socket has UPI")],
            };
            let path = self.graph.add_path(&links);
            let r = self.graph.add_comm(rs, &format!("{label} weights"), [Flow { path, bytes: bytes / n }], None);
            for t in [c, r] {
                self.graph.add_dep(before, t);
                self.graph.add_dep(t, join);
            }
        }
        join
    }

    /// One pass of `t` tokens at `context`; returns its last task.
    fn pass(&mut self, t: f64, context: f64, prefill: bool) -> TaskId {
        let s = self.s;
        let m = s.model;
        let rt = s.runtime;
        let w = s.layer_work(t, context);
        let kernels = rt.gpu_kernels_per_layer as f64;
        let hidden_bytes = t * m.hidden as f64 * 2.0;
        let phase = if prefill { "prefill" } else { "decode" };
        let cpu_from = match rt.placement {
            Placement::Layers => m.layers - s.gpu_layers.min(m.layers),
            _ => 0,
        };
        for l in 0..m.layers {
            let moe = l >= m.ffn.dense_layers && m.moe.is_some();
            let (ffn_bytes, ffn_flops) = if moe {
                (w.shared_bytes + w.routed_bytes, w.shared_flops + w.routed_flops)
            } else {
                (w.dense_bytes, w.dense_flops)
            };
            let name = format!("{phase} layer {l}");
            match rt.placement {
                Placement::Device => {
                    let k = self.gpu(&name, w.attn_flops + ffn_flops, w.attn_bytes + w.kv_bytes + ffn_bytes, kernels);
                    self.after(k);
                }
                Placement::ExpertsOnCpu | Placement::ExpertsStreamed => {
                    let attn = self.gpu(&format!("{name} attention"), w.attn_flops, w.attn_bytes + w.kv_bytes, kernels);
                    self.after(attn);
                    if !moe {
                        let k = self.gpu(&format!("{name} dense FFN"), w.dense_flops, w.dense_bytes, 0.0);
                        self.after(k);
                        continue;
                    }
                    let shared = self.gpu(&format!("{name} shared expert"), w.shared_flops, w.shared_bytes, 0.0);
                    self.graph.add_dep(attn, shared);
                    let h2d = self.h2d.expect("host");
                    if rt.placement == Placement::ExpertsStreamed {
                        // The router's choice is known after attention: the
                        // experts it picked cross PCIe from socket 0's DRAM
                        // while the shared expert runs, then run on the GPU.
                        let copy =
                            self.copy(&format!("{name} routed experts to GPU"), &[self.dram[0], h2d], w.routed_bytes);
                        self.graph.add_dep(attn, copy);
                        let routed = self.gpu(&format!("{name} routed experts"), w.routed_flops, w.routed_bytes, 0.0);
                        self.graph.add_dep(shared, routed);
                        self.graph.add_dep(copy, routed);
                        self.last = Some(routed);
                        continue;
                    }
                    let d2h = self.d2h.expect("host");
                    let down = self.copy(&format!("{name} hidden to host"), &[d2h], hidden_bytes);
                    self.graph.add_dep(attn, down);
                    let handoff = self.graph.add_delay(
                        self.join_stream,
                        &format!("{name} hand-off"),
                        SimDuration::from_secs_f64(rt.handoff_us * 1e-6),
                    );
                    self.graph.add_dep(down, handoff);
                    let join = self.cpu(&format!("{name} routed experts"), w.routed_flops, w.routed_bytes, handoff);
                    let up = self.copy(&format!("{name} expert output to GPU"), &[h2d], hidden_bytes);
                    self.graph.add_dep(join, up);
                    let merge = self.graph.add_delay(self.gpu_stream, &format!("{name} merge"), SimDuration::ZERO);
                    self.graph.add_dep(shared, merge);
                    self.graph.add_dep(up, merge);
                    self.last = Some(merge);
                }
                Placement::Layers => {
                    let (flops, bytes) = (w.attn_flops + ffn_flops, w.attn_bytes + ffn_bytes);
                    if l >= cpu_from {
                        let k = self.gpu(&name, flops, bytes + w.kv_bytes, kernels);
                        self.after(k);
                    } else if prefill && rt.prefill_weights_streamed && t >= 32.0 {
                        let links = [self.pageable.expect("host"), self.h2d.expect("host")];
                        let copy = self.copy(&format!("{name} weights to GPU"), &links, bytes);
                        self.after(copy);
                        let k = self.gpu(&name, flops, bytes + w.kv_bytes, kernels);
                        self.after(k);
                    } else {
                        let start = self.graph.add_delay(self.join_stream, &name, SimDuration::ZERO);
                        self.after(start);
                        let join = self.cpu(&name, flops, bytes + w.kv_bytes, start);
                        self.last = Some(join);
                    }
                }
            }
        }
        // The head: logits of the last token only, on the CPU when the
        // `layers` placement keeps no layer on the GPU.
        let head = m.params().head;
        let (flops, bytes) = (2.0 * head, head * s.other_bits / 8.0);
        if rt.placement == Placement::Layers && s.gpu_layers == 0 {
            let start = self.graph.add_delay(self.join_stream, &format!("{phase} head"), SimDuration::ZERO);
            self.after(start);
            let join = self.cpu(&format!("{phase} head"), flops, bytes, start);
            self.last = Some(join);
            join
        } else {
            let k = self.gpu(&format!("{phase} head"), flops, bytes, 1.0);
            self.after(k)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_preset_parses_and_an_unknown_one_names_them() {
        for name in RuntimeSpec::preset_names() {
            assert_eq!(RuntimeSpec::preset(name).unwrap().name, name);
        }
        let e = RuntimeSpec::preset("vllm").unwrap_err().to_string();
        assert!(e.contains("ktransformers-v0.2") && e.contains("llama.cpp"), "{e}");
    }
}
