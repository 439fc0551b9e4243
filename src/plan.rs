//! Capacity search for `moesim plan`: the fewest nodes (prefill units +
//! decode units) of a serving scenario that meet p99 TTFT and TPOT targets
//! at a request rate, with every point it simulated (the frontier).
//!
//! TTFT is set by the prefill units (the first token comes out of prefill)
//! and TPOT by the decode units, so each count is searched on its own:
//! decode units first, with prefill units to spare so decode sees the whole
//! load (doubling, then bisection), then prefill units with that decode
//! count; the pair is checked together and the side that still misses grows
//! one unit at a time. When doubling a count no longer improves its p99 by
//! 2 %, more units cannot help: the target is out of reach and the best
//! point found is reported. Every point reuses the same memoised iteration
//! times, so only the request-level model runs again.

pub mod report;
pub mod training;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::setup::Setup;
use crate::workloads::serving::{EngineIterationTimes, ServingWorkload};
use crate::AppError;
use moesim_models::serving::IterationTimes;

/// What to find.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanTarget {
    pub rate_per_s: f64,
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    /// Seconds of arrivals simulated per point.
    pub duration_s: f64,
    /// Most units of either kind tried.
    pub max_units: u32,
    /// Refuse a search whose requests would need more memory than this.
    pub max_memory_bytes: Option<f64>,
}

/// One simulated deployment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlanPoint {
    pub prefill_units: u32,
    pub decode_units: u32,
    pub nodes: u32,
    pub ttft_p99_ms: f64,
    pub tpot_p99_ms: f64,
    pub output_tokens_per_s_per_node: f64,
    pub meets: bool,
}

/// The search's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Every point simulated, in order.
    pub explored: Vec<PlanPoint>,
    /// The fewest-node point meeting both targets, if any.
    pub best: Option<PlanPoint>,
    /// When none meets them: the explored point closest to meeting them
    /// (smallest worst ratio of p99 to target), and why.
    pub closest: Option<PlanPoint>,
    pub verdict: String,
}

struct Search<'a> {
    scenario: &'a Setup,
    workload: ServingWorkload,
    requests: Vec<moesim_models::serving::Request>,
    times: EngineIterationTimes,
    target: PlanTarget,
    nodes_per: (u32, u32),
    explored: Vec<PlanPoint>,
}

impl Search<'_> {
    /// Prefill and decode units that carry twice the offered load at full
    /// batch (from the iteration times), at least one each.
    fn spare_units(&mut self) -> (u32, u32) {
        let n = self.requests.len().max(1) as f64;
        let span = self.target.duration_s;
        let mean = |f: &dyn Fn(&moesim_models::serving::Request) -> f64| self.requests.iter().map(f).sum::<f64>() / n;
        let new = mean(&|r| (r.input_len - r.cached_len) as f64);
        let keys = mean(&|r| r.cached_len as f64 + (r.input_len - r.cached_len) as f64 / 2.0);
        let out = mean(&|r| r.output_len as f64);
        let ctx = mean(&|r| r.input_len as f64 + r.output_len as f64 / 2.0);
        let w = &self.workload;
        let tokens = w.prefill.tokens_per_gpu;
        let prefill_rate = w.prefill.gpus as f64 * tokens as f64 / self.times.prefill_s(tokens, keys, 1.0).max(1e-9);
        let cap = self.times.config.kv_capacity_tokens_per_gpu as f64 / (ctx + out / 2.0).max(1.0);
        let batch = (w.decode.max_batch_per_gpu as f64).min(cap).max(1.0).floor() as u64;
        let per_iter = 1.0 + w.decode.mtp_acceptance.unwrap_or(0.0);
        let decode_rate = w.decode.gpus as f64 * batch as f64 * per_iter / self.times.decode_s(batch, ctx).max(1e-9);
        let load = n / span;
        let units = |need: f64, rate: f64| ((2.0 * need / rate).ceil() as u32).clamp(1, self.target.max_units);
        (units(load * new, prefill_rate), units(load * out, decode_rate))
    }

    fn eval(&mut self, p: u32, d: u32) -> Result<PlanPoint, AppError> {
        if let Some(pt) = self.explored.iter().find(|x| x.prefill_units == p && x.decode_units == d) {
            return Ok(*pt);
        }
        let report =
            self.workload.serve(self.scenario, &self.requests, &mut self.times, p, d).map_err(AppError::from)?;
        let get = |k: &str| report.metrics.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let (ttft, tpot) = (get("ttft_p99_ms"), get("tpot_p99_ms"));
        let tpot = if tpot.is_nan() { 0.0 } else { tpot };
        let pt = PlanPoint {
            prefill_units: p,
            decode_units: d,
            nodes: p * self.nodes_per.0 + d * self.nodes_per.1,
            ttft_p99_ms: ttft,
            tpot_p99_ms: tpot,
            output_tokens_per_s_per_node: get("output_tokens_per_s_per_node"),
            meets: ttft <= self.target.ttft_p99_ms && tpot <= self.target.tpot_p99_ms,
        };
        self.explored.push(pt);
        Ok(pt)
    }

    /// The fewest units `n` for which `ok(eval(n))`, varying one side with
    /// the other fixed; `None` if doubling stops helping first.
    fn fewest(
        &mut self,
        eval: &dyn Fn(&mut Self, u32) -> Result<PlanPoint, AppError>,
        metric: fn(&PlanPoint) -> f64,
        goal: f64,
    ) -> Result<Option<u32>, AppError> {
        let mut lo = 0; // known to miss (0 = none tried)
        let mut n = 1;
        let mut last = f64::INFINITY;
        loop {
            let pt = eval(self, n)?;
            let v = metric(&pt);
            if v <= goal {
                break;
            }
            if n >= self.target.max_units || (last.is_finite() && v > 0.98 * last) {
                return Ok(None);
            }
            last = v;
            lo = n;
            n = (n * 2).min(self.target.max_units);
        }
        let mut hi = n;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if metric(&eval(self, mid)?) <= goal {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(Some(hi))
    }
}

/// The serving workload of a scenario, or an error naming its kind.
pub fn serving_workload(scenario: &Scenario) -> Result<&ServingWorkload, AppError> {
    scenario.workload.as_serving().ok_or_else(|| {
        AppError::Input(vec![scenario.setup.source.at_key(
            "workload.kind",
            format!(
                "moesim plan needs a serving scenario (kind = \"serving\"), found \"{}\"",
                scenario.workload.kind_name()
            ),
        )])
    })
}

/// Every bad `moesim plan` argument at once (the duration only when given).
pub fn argument_problems(
    rate_per_s: Option<f64>,
    ttft_p99_ms: Option<f64>,
    tpot_p99_ms: Option<f64>,
    duration_s: Option<f64>,
    max_units: u32,
) -> Vec<crate::diagnostics::Diagnostic> {
    let args = crate::diagnostics::Source::new("moesim plan", "");
    let mut out: Vec<_> = [
        ("--rate", rate_per_s),
        ("--ttft-p99-ms", ttft_p99_ms),
        ("--tpot-p99-ms", tpot_p99_ms),
        ("--duration-s", duration_s),
    ]
    .into_iter()
    .filter_map(|(name, v)| {
        let v = v?;
        (!(v.is_finite() && v > 0.0)).then(|| args.plain(format!("{name}: expected a positive number, found {v}")))
    })
    .collect();
    if max_units == 0 {
        out.push(args.plain("--max-units: expected at least 1 unit of each kind, found 0"));
    }
    out
}

/// Runs the capacity search on a `kind = "serving"` scenario.
pub fn plan(scenario: &Scenario, target: &PlanTarget) -> Result<Plan, AppError> {
    let w = serving_workload(scenario)?;
    let scenario = &scenario.setup;
    let bad = |m: String| AppError::Input(vec![scenario.source.plain(m)]);
    for (name, v) in [
        ("--rate", target.rate_per_s),
        ("--ttft-p99-ms", target.ttft_p99_ms),
        ("--tpot-p99-ms", target.tpot_p99_ms),
        ("--duration-s", target.duration_s),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(bad(format!("{name}: expected a positive number, found {v}")));
        }
    }
    if target.max_units == 0 {
        return Err(bad("--max-units: expected at least 1 unit of each kind, found 0".into()));
    }
    let mut workload = w.clone();
    workload.arrivals = Some(crate::workloads::serving::Arrivals::Poisson);
    workload.rate_per_s = Some(target.rate_per_s);
    workload.duration_s = Some(target.duration_s);
    workload.ttft_slo_ms = Some(target.ttft_p99_ms);
    workload.tpot_slo_ms = Some(target.tpot_p99_ms);
    if let Some(limit) = target.max_memory_bytes {
        crate::workloads::check_memory(&workload, scenario, limit).map_err(|e| match AppError::from(e) {
            AppError::Input(mut ds) => {
                for d in &mut ds {
                    d.message = d.message.replace("workload.rate_per_s", "--rate");
                    d.key = Some("--rate".into());
                }
                AppError::Input(ds)
            }
            other => other,
        })?;
    }
    let requests = workload.requests(scenario).map_err(AppError::from)?;
    if requests.is_empty() {
        return Err(bad(format!("no request arrives in {} s at {} per second", target.duration_s, target.rate_per_s)));
    }
    let times = EngineIterationTimes::new(&workload, scenario).map_err(AppError::from)?;
    let gpn = scenario.topology.as_ref().map_or(8, |t| t.gpus_per_node);
    let nodes_per = (workload.prefill.gpus.div_ceil(gpn), workload.decode.gpus.div_ceil(gpn));
    let mut s = Search { scenario, workload, requests, times, target: *target, nodes_per, explored: Vec::new() };

    // Units to spare on the other side while one side is searched: twice
    // the load over one unit's capacity at full batch.
    let (p_spare, _) = s.spare_units();
    let d = s.fewest(&|s, d| s.eval(p_spare, d), |pt| pt.tpot_p99_ms, target.tpot_p99_ms)?;
    let mut best = None;
    if let Some(d) = d {
        if let Some(mut p) = s.fewest(&|s, p| s.eval(p, d), |pt| pt.ttft_p99_ms, target.ttft_p99_ms)? {
            let mut d = d;
            // Check the pair; grow the side that misses.
            for _ in 0..2 * target.max_units {
                let pt = s.eval(p, d)?;
                if pt.meets {
                    best = Some(pt);
                    break;
                }
                if pt.ttft_p99_ms > target.ttft_p99_ms && p < target.max_units {
                    p += 1;
                } else if pt.tpot_p99_ms > target.tpot_p99_ms && d < target.max_units {
                    d += 1;
                } else {
                    break;
                }
            }
        }
    }
    // A cheaper point explored on the way that meets both wins.
    if let Some(b) = s.explored.iter().filter(|x| x.meets).min_by_key(|x| (x.nodes, x.decode_units)) {
        best = Some(*b);
    }
    let (closest, verdict) = match best {
        Some(b) => (
            None,
            format!(
                "{} nodes: {} prefill + {} decode units meet p99 TTFT {} ms and TPOT {} ms at {} requests/s",
                b.nodes, b.prefill_units, b.decode_units, target.ttft_p99_ms, target.tpot_p99_ms, target.rate_per_s
            ),
        ),
        None => {
            let worst = |x: &PlanPoint| (x.ttft_p99_ms / target.ttft_p99_ms).max(x.tpot_p99_ms / target.tpot_p99_ms);
            let c = s.explored.iter().copied().min_by(|a, b| worst(a).total_cmp(&worst(b)).then(a.nodes.cmp(&b.nodes)));
            let why = match c {
                Some(c) => format!(
                    "no configuration meets the targets: adding units stops helping; the best found, {} prefill + {} decode units ({} nodes), reaches p99 TTFT {:.1} ms and TPOT {:.1} ms",
                    c.prefill_units, c.decode_units, c.nodes, c.ttft_p99_ms, c.tpot_p99_ms
                ),
                None => "no configuration was simulated".into(),
            };
            (c, why)
        }
    };
    Ok(Plan { explored: s.explored, best, closest, verdict })
}
