//! The validation table: every modelled figure with a published counterpart,
//! shared by `moesim validate` and the test suite. A case runs a built-in
//! scenario with overrides through the same path as `moesim run` and compares
//! one metric with the published value.

use serde::Serialize;

use crate::{run_scenario, ScenarioRef};

/// One published figure and how to reproduce it.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub source: &'static str,
    /// Built-in scenario to start from.
    pub scenario: &'static str,
    /// `--set` overrides applied to it.
    pub sets: &'static [&'static str],
    /// Metric of the run's JSON to compare.
    pub metric: &'static str,
    pub unit: &'static str,
    pub published: f64,
    /// Allowed relative error, e.g. 0.15.
    pub tolerance: f64,
    /// Whether a calibration constant was fitted on this case.
    pub fitted: bool,
}

/// A case's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub source: String,
    pub metric: String,
    pub unit: String,
    pub published: f64,
    pub simulated: Option<f64>,
    pub error_pct: Option<f64>,
    pub tolerance_pct: f64,
    pub fitted: bool,
    pub pass: bool,
    /// Why it could not be computed.
    pub failure: Option<String>,
}

const DEEPEP: &str =
    "DeepEP README (normal kernels, H800 + CX7 400 Gb/s, 4096 tokens, hidden 7168, top-8 of 256, top-4 groups, 20 SMs)";

/// Every case, in table order.
pub const CASES: &[Case] = &[
    Case {
        name: "deepep-normal-ep8-dispatch-nvlink",
        source: DEEPEP,
        scenario: "deepep-dispatch-ep8",
        sets: &[],
        metric: "nvlink_gb_per_s",
        unit: "GB/s",
        published: 153.0,
        tolerance: 0.15,
        fitted: true,
    },
    Case {
        name: "deepep-normal-ep8-combine-nvlink",
        source: DEEPEP,
        scenario: "deepep-dispatch-ep8",
        sets: &["workload.kind=moe-combine"],
        metric: "nvlink_gb_per_s",
        unit: "GB/s",
        published: 158.0,
        tolerance: 0.15,
        fitted: false,
    },
    Case {
        name: "deepep-normal-ep16-dispatch-rdma",
        source: DEEPEP,
        scenario: "deepep-dispatch-ep64",
        sets: &["topology.nodes=2", "workload.ranks=16"],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 43.0,
        tolerance: 0.15,
        fitted: false,
    },
    Case {
        name: "deepep-normal-ep16-combine-rdma",
        source: DEEPEP,
        scenario: "deepep-combine-ep64",
        sets: &["topology.nodes=2", "workload.ranks=16"],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 43.0,
        tolerance: 0.15,
        fitted: false,
    },
    Case {
        name: "deepep-normal-ep32-dispatch-rdma",
        source: DEEPEP,
        scenario: "deepep-dispatch-ep64",
        sets: &["topology.nodes=4", "workload.ranks=32"],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 58.0,
        tolerance: 0.15,
        fitted: false,
    },
    Case {
        name: "deepep-normal-ep32-combine-rdma",
        source: DEEPEP,
        scenario: "deepep-combine-ep64",
        sets: &["topology.nodes=4", "workload.ranks=32"],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 57.0,
        tolerance: 0.15,
        fitted: false,
    },
    Case {
        name: "deepep-normal-ep64-dispatch-rdma",
        source: DEEPEP,
        scenario: "deepep-dispatch-ep64",
        sets: &[],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 51.0,
        tolerance: 0.15,
        fitted: true,
    },
    Case {
        name: "deepep-normal-ep64-combine-rdma",
        source: DEEPEP,
        scenario: "deepep-combine-ep64",
        sets: &[],
        metric: "rdma_gb_per_s",
        unit: "GB/s",
        published: 50.0,
        tolerance: 0.15,
        fitted: false,
    },
];

/// Runs one case.
pub fn run_case(case: &Case) -> CaseResult {
    let sets: Vec<String> = case.sets.iter().map(|s| s.to_string()).collect();
    let simulated = run_scenario(&ScenarioRef::Builtin(case.scenario), &sets, &Default::default())
        .map_err(|e| e.to_string())
        .and_then(|(summary, _)| {
            summary
                .get(case.metric)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| format!("the run has no metric `{}`", case.metric))
        });
    let (simulated, failure) = match simulated {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let error_pct = simulated.map(|s| (s - case.published) / case.published * 100.0);
    let pass = error_pct.is_some_and(|e| e.abs() <= case.tolerance * 100.0);
    CaseResult {
        case: case.name.into(),
        source: case.source.into(),
        metric: case.metric.into(),
        unit: case.unit.into(),
        published: case.published,
        simulated,
        error_pct,
        tolerance_pct: case.tolerance * 100.0,
        fitted: case.fitted,
        pass,
        failure,
    }
}
