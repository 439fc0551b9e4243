//! `kind = "gemm"`: one (grouped) GEMM on one device, through the engine, with
//! the roofline's verdict on what bounds it.

use moesim_models::hardware::Dtype;
use moesim_models::ops::{gemm_cost, GemmLayout, GemmShape};
use moesim_models::DeviceSpec;
use moesim_sim::{DeviceResource, Kernel, Observer, Platform, SimDuration, TaskClass, TaskGraph, UnitDemand};
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{model_failure, num, positive_time, problem, simulate, Outcome, RunFailure, RunOptions};
use crate::scenario::Scenario;

fn one() -> u64 {
    1
}

/// The `[workload]` table of a GEMM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmWorkload {
    pub kind: String,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    #[serde(default = "one")]
    pub groups: u64,
    #[serde(default)]
    pub layout: GemmLayout,
    pub dtype: Dtype,
}

impl GemmWorkload {
    pub fn problems(&self, device: Option<&DeviceSpec>) -> Vec<ConfigProblem> {
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
        out
    }

    pub fn run(
        &self,
        scenario: &Scenario,
        options: &RunOptions,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, RunFailure> {
        let device = &scenario.device;
        let shape =
            GemmShape { m: self.m, n: self.n, k: self.k, groups: self.groups, layout: self.layout, dtype: self.dtype };
        let cost = gemm_cost(device, &shape).map_err(|e| model_failure(scenario, e))?;
        let mut platform = Platform::default();
        let dev = platform.add_device(DeviceResource {
            name: device.name.clone(),
            units: device.sms,
            mem_bytes_per_s: device.hbm_bytes_per_s(),
        });
        let mut graph = TaskGraph::new();
        let stream = graph.add_stream(0, "compute");
        graph.add_delay(stream, "launch", SimDuration::from_secs_f64(cost.overhead_s));
        let label = format!("gemm {}x{}x{} x{} {}", self.m, self.n, self.k, self.groups, self.dtype.as_str());
        graph.add_kernel(
            stream,
            &label,
            TaskClass::Compute,
            Kernel {
                device: dev,
                compute: SimDuration::from_secs_f64(cost.compute_s),
                mem_bytes: cost.hbm_bytes,
                units: UnitDemand::Share { max_units: device.sms },
            },
        );
        let (platform, graph, result) = simulate(platform, graph, options, observer)?;
        let time_s = positive_time(result.end);
        let mut metrics = Map::new();
        metrics.insert("device".into(), Value::from(device.name.clone()));
        metrics.insert("dtype".into(), Value::from(self.dtype.as_str()));
        metrics.insert("flops".into(), num(cost.flops));
        metrics.insert("hbm_bytes".into(), num(cost.hbm_bytes));
        metrics.insert("compute_us".into(), num(cost.compute_s * 1e6));
        metrics.insert("hbm_us".into(), num(cost.hbm_s * 1e6));
        metrics.insert("time_us".into(), num(time_s * 1e6));
        metrics.insert("tflops".into(), num(cost.flops / time_s / 1e12));
        metrics.insert("bound".into(), Value::from(cost.bound.as_str()));
        let mut notes =
            vec!["roofline over tensor compute and HBM; the memory-hierarchy model (tiling, L2) is not in yet"
                .to_owned()];
        if self.layout == GemmLayout::Masked {
            notes.push("masked layout is costed like contiguous until the memory-hierarchy model lands".into());
        }
        Ok(Outcome { metrics, notes, graph, platform, result })
    }
}
