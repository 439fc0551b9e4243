//! `kind = "gemm"`: one (grouped) GEMM on one device, through the engine,
//! with the tiled cost model's verdict: bytes per memory tier, the binding
//! tier or unit, kernel time and TFLOP/s; `--out` adds a roofline plot.
//! [`run_op`] is shared with `kind = "op"`.

use moesim_models::hardware::device::Dtype;
use moesim_models::hardware::ops::{op_cost_with, GemmLayout, GemmShape, Op, OpCost, OpOptions};
use moesim_models::DeviceSpec;
use moesim_sim::{DeviceResource, Observer, Platform, SimDuration, TaskClass, TaskGraph};
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{model_failure, num, positive_time, problem, simulate, Context, Outcome, RunFailure, RunOptions, Workload};
use crate::setup::Setup;

fn one() -> u64 {
    1
}

/// The `[workload]` table of a GEMM.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GemmWorkload {
    pub kind: String,
    /// Rows of the output (tokens), per group.
    pub m: u64,
    /// Columns of the output.
    pub n: u64,
    /// Reduction dimension.
    pub k: u64,
    /// GEMMs in the grouped call (experts); 1 for a plain GEMM.
    #[serde(default = "one")]
    pub groups: u64,
    #[serde(default)]
    pub layout: GemmLayout,
    pub dtype: Dtype,
    /// SMs (AI cores) the kernel is launched on (default: all), e.g. 112
    /// when a communication kernel holds 20 of 132.
    pub sms: Option<u32>,
    /// A tile `[m, n, k]` instead of the automatic choice.
    pub tile: Option<[u32; 3]>,
}

/// Problems with the shared `sms` / `tile` keys.
pub(crate) fn option_problems(
    sms: Option<u32>,
    tile: Option<[u32; 3]>,
    device: Option<&DeviceSpec>,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if let Some(s) = sms {
        if s == 0 {
            out.push(problem("workload.sms", "expected an integer >= 1, found 0".into()));
        } else if let Some(d) = device {
            if s > d.sms {
                out.push(problem("workload.sms", format!("expected at most the device's {} SMs, found {s}", d.sms)));
            }
        }
    }
    if let Some(t) = tile {
        if t.contains(&0) {
            out.push(problem("workload.tile", format!("expected three integers >= 1, found {t:?}")));
        }
    }
    out
}

impl Workload for GemmWorkload {
    fn kind_name(&self) -> &str {
        "gemm"
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let device = cx.device;
        let mut out = Vec::new();
        for (key, v) in
            [("workload.m", self.m), ("workload.n", self.n), ("workload.k", self.k), ("workload.groups", self.groups)]
        {
            if v == 0 {
                out.push(problem(key, "expected an integer >= 1, found 0".into()));
            }
        }
        if let Some(Err(e)) = device.map(|d| d.tensor_flops_per_s(self.dtype)) {
            out.push(problem("workload.dtype", e.to_string()));
        }
        out.extend(option_problems(self.sms, self.tile, device));
        out
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let shape =
            GemmShape { m: self.m, n: self.n, k: self.k, groups: self.groups, layout: self.layout, dtype: self.dtype };
        let label = format!(
            "gemm {}x{}x{} x{} {} {}",
            self.m,
            self.n,
            self.k,
            self.groups,
            match self.layout {
                GemmLayout::Contiguous => "contiguous",
                GemmLayout::Masked => "masked",
            },
            self.dtype.as_str()
        );
        let mut outcome =
            run_op(setup, &Op::Gemm(shape), &OpOptions { sms: self.sms, tile: self.tile }, &label, options, observer)?;
        outcome.metrics.insert("dtype".into(), Value::from(self.dtype.as_str()));
        Ok(outcome)
    }
}

/// Runs one op on one device through the engine and reports the cost
/// model's tiers, tiling and bound; with `--out`, a roofline plot.
pub(crate) fn run_op(
    setup: &Setup,
    op: &Op,
    op_options: &OpOptions,
    label: &str,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Outcome, RunFailure> {
    let device = &setup.device;
    let cost = op_cost_with(device, op, op_options).map_err(|e| model_failure(setup, e))?;
    let mut platform = Platform::default();
    let dev = platform.add_device(DeviceResource {
        name: device.name.clone(),
        units: device.sms,
        mem_bytes_per_s: device.hbm_bytes_per_s(),
    });
    let mut graph = TaskGraph::new();
    let stream = graph.add_stream(0, "compute");
    graph.add_delay(stream, "launch", SimDuration::from_secs_f64(cost.overhead_s));
    graph.add_kernel(stream, label, TaskClass::Compute, cost.kernel(dev));
    let (platform, graph, result) = simulate(platform, graph, options, observer)?;
    let time_s = positive_time(result.end);
    let kernel_s = (time_s - cost.overhead_s).max(1e-15);
    let metrics = op_metrics(device, &cost, time_s, kernel_s);
    let mut notes = vec![format!(
        "tiled cost model: {} tiles of {}x{}x{} in {} waves on {} CTAs; tflops and *_gb_per_s are over the kernel \
         time (launch excluded), as kernel benchmarks report them",
        cost.tile.tiles, cost.tile.tile_m, cost.tile.tile_n, cost.tile.tile_k, cost.tile.waves, cost.max_units
    )];
    if let Ok(l2) = device.effective_l2() {
        if device.l2_rebuild_technology.is_some() {
            notes.push(format!(
                "L2 rebuilt in {} in the same area: {:.1} MiB{}",
                l2.technology,
                l2.bytes / 1048576.0,
                l2.latency_ns.map_or(String::new(), |l| format!(", hit latency {l:.0} ns"))
            ));
        }
    }
    let figures =
        if options.figures { vec![crate::workloads::roofline::figure(setup, op, &cost, label)?] } else { Vec::new() };
    Ok(Outcome { metrics, notes, graph, platform, result, figures, files: Vec::new(), job_gpus: None })
}

/// The metrics of one costed op (keys with units).
fn op_metrics(device: &DeviceSpec, cost: &OpCost, time_s: f64, kernel_s: f64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("device".into(), Value::from(device.name.clone()));
    m.insert("flops".into(), num(cost.flops));
    for (name, bytes) in cost.tiers.rows() {
        m.insert(name.into(), num(bytes));
    }
    m.insert("bound".into(), Value::from(cost.bound.as_str()));
    m.insert("tile".into(), Value::from(format!("{}x{}x{}", cost.tile.tile_m, cost.tile.tile_n, cost.tile.tile_k)));
    m.insert("tiles".into(), Value::from(cost.tile.tiles));
    m.insert("waves".into(), Value::from(cost.tile.waves));
    m.insert("ctas".into(), Value::from(cost.max_units));
    m.insert("hbm_us".into(), num(cost.hbm_s * 1e6));
    m.insert("kernel_us".into(), num(kernel_s * 1e6));
    m.insert("launch_us".into(), num(cost.overhead_s * 1e6));
    m.insert("time_us".into(), num(time_s * 1e6));
    m.insert("tflops".into(), num(cost.flops / kernel_s / 1e12));
    m.insert("hbm_gb_per_s".into(), num(cost.hbm_bytes / kernel_s / 1e9));
    m.insert("arithmetic_intensity_flop_per_byte".into(), num(cost.flops / cost.hbm_bytes.max(1.0)));
    m
}
