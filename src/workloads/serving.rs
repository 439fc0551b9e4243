//! `kind = "serving"`: request-level serving of a model (`[model]`) on
//! disaggregated prefill and decode units (`[workload.prefill]`,
//! `[workload.decode]`), with arrivals from a Poisson process or a trace
//! file (Azure CSV, Mooncake JSON lines). The request-level model is
//! [`moesim_models::serving`]; each unit iteration's time comes from the
//! engine-simulated iteration ([`moesim_models::lowering::inference`]) on a grid of
//! batch sizes and context lengths, memoised and interpolated
//! ([`EngineIterationTimes`]).
//!
//! ```toml
//! [workload]
//! kind = "serving"
//! arrivals = "poisson"           # or "trace" (the default when `trace` is set)
//! rate_per_s = 200.0
//! duration_s = 3600.0
//! input_len = 4096               # without a trace: every request alike
//! output_len = 1024
//! cache_hit_ratio = 0.563        # share of a prompt in the prefix cache (traces with block ids use those)
//! # prefix_cache_gib = 1024      # with block ids: an LRU cache of this much KV (unbounded when absent)
//! # trace = "../shared/data/kvcache-ai+Mooncake/FAST25-release/traces/conversation_trace.jsonl"
//! prefill_units = 4
//! decode_units = 1
//! ttft_slo_ms = 2000.0
//! tpot_slo_ms = 50.0
//! [workload.prefill]
//! gpus = 32
//! tokens_per_gpu = 16384
//! chunking = "tokens"           # or "time": no GPU longer than a budget of fresh tokens
//! context_parallel = 1          # a long prompt spreads over up to this many GPUs
//! redundant_experts = 32
//! [workload.decode]
//! gpus = 144
//! max_batch_per_gpu = 128
//! redundant_experts = 32
//! mtp_acceptance = 0.85
//! ```

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use moesim_models::hardware::device::Dtype;
use moesim_models::lowering::inference::{
    kv_bytes_per_token, kv_capacity_tokens, lower_iteration_cached, DeploymentUnit, IterationPhase, IterationSpec,
    RoutingCache,
};
use moesim_models::network::moe_comm::DeepEpRdma;
use moesim_models::serving::{
    arrival, serve_arrivals, serve_stream, unservable, Arrival, IterationTimes, PoissonArrivals, PrefillChunking,
    Quantiles, Request, RequestOutcome, ServingConfig, ServingTotals, EXACT_VALUES, SKETCH_RELATIVE_ERROR,
};
use moesim_models::transformer::routing::Skew;
use moesim_models::{Cluster, DeviceSpec, ModelConfig};
use moesim_reports::plot::{color, Axis, LegendPosition, RenderedFigure, Series, SeriesStyle, XyChart};
use moesim_sim::{EngineOptions, Observer, Platform, RunResult, SimTime, TaskGraph};
use moesim_topologies::{ClusterSpec, ConfigProblem};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::inference::PlacementName;
use super::traces::{read_trace, Trace, TraceFormat};
use super::{
    check_price_and_precision, check_skew, num, problem, Context, Footprint, OutFile, Outcome, RunFailure, RunOptions,
    SpooledFile, TopologyState, Workload,
};
use crate::setup::{ParallelTable, Setup};

fn one_u32() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn fp8() -> Dtype {
    Dtype::Fp8
}
fn unit_scale() -> f64 {
    1.0
}
fn hbm_use() -> f64 {
    0.9
}
fn comm_sms() -> u32 {
    24
}

/// Where arrivals come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// A Poisson process at `rate_per_s`.
    Poisson,
    /// The trace's timestamps (times `time_scale`).
    Trace,
}

/// `[workload.prefill]`: one prefill unit.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefillUnitTable {
    /// GPUs of one unit (its expert-parallel group).
    pub gpus: u32,
    /// Tensor-parallel degree of attention inside the unit.
    #[serde(default = "one_u32")]
    pub tp: u32,
    /// New tokens a GPU takes per iteration.
    pub tokens_per_gpu: u64,
    /// "tokens" (the default: chunks of `tokens_per_gpu`) or "time" (a GPU
    /// also takes no longer than `tokens_per_gpu` fresh tokens would).
    #[serde(default)]
    pub chunking: PrefillChunking,
    /// Most GPUs one long prompt's piece spreads over (context
    /// parallelism); 1: every request on one GPU.
    #[serde(default = "one_u32")]
    pub context_parallel: u32,
    /// Redundant expert copies added to the routed experts (load balancing).
    #[serde(default)]
    pub redundant_experts: u32,
    #[serde(default)]
    pub placement: PlacementName,
    /// SMs the all-to-all kernels hold (DeepSeek's prefill: 24 of 132).
    #[serde(default = "comm_sms")]
    pub comm_sms: u32,
    /// How the all-to-all kernels drive RDMA: "ibgda" (default, DeepEP since 2025-04) or "ibrc" (DeepEP as first released, 2025-02: its channels bound every (token, node) copy at 46/24 GB/s per SM).
    #[serde(default)]
    pub deepep_rdma: DeepEpRdma,
    /// Micro-batches an iteration is split into to overlap compute with the all-to-all.
    #[serde(default = "two")]
    pub micro_batches: u32,
}

/// `[workload.decode]`: one decode unit.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeUnitTable {
    /// GPUs of one unit (its expert-parallel group).
    pub gpus: u32,
    /// Tensor-parallel degree of attention inside the unit.
    #[serde(default = "one_u32")]
    pub tp: u32,
    /// Most sequences a GPU runs at once (KV capacity may bound it lower).
    pub max_batch_per_gpu: u64,
    /// Redundant expert copies added to the routed experts (load balancing).
    #[serde(default)]
    pub redundant_experts: u32,
    #[serde(default)]
    pub placement: PlacementName,
    /// Multi-token prediction: the share of draft tokens accepted (none: no MTP).
    pub mtp_acceptance: Option<f64>,
    /// Micro-batches an iteration is split into to overlap compute with the all-to-all.
    #[serde(default = "two")]
    pub micro_batches: u32,
}

/// The `[workload]` table of a serving run.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingWorkload {
    pub kind: String,
    pub arrivals: Option<Arrivals>,
    /// Mean requests per second (Poisson arrivals).
    pub rate_per_s: Option<f64>,
    /// Poisson: how long arrivals come; trace: where the trace is cut.
    pub duration_s: Option<f64>,
    /// A trace file (Azure CSV or Mooncake JSON lines), relative to the
    /// scenario file or the working directory.
    pub trace: Option<String>,
    pub trace_format: Option<TraceFormat>,
    /// Trace timestamps are multiplied by this (0.1 = ten times the rate).
    #[serde(default = "unit_scale")]
    pub time_scale: f64,
    /// A trace's prompt lengths (and prefix hits) are multiplied by this,
    /// rounded, at least one token: the trace's shape at another mean.
    #[serde(default = "unit_scale")]
    pub input_scale: f64,
    /// A trace's output lengths are multiplied by this (likewise).
    #[serde(default = "unit_scale")]
    pub output_scale: f64,
    /// Prompt tokens per request (without a trace).
    pub input_len: Option<u64>,
    /// Output tokens per request (without a trace).
    pub output_len: Option<u64>,
    /// Share of each prompt found in the prefix cache (without block ids).
    #[serde(default)]
    pub cache_hit_ratio: f64,
    /// Capacity of the prefix cache for traces with block ids, GiB of KV
    /// (the model's bytes per token); least recently used blocks are
    /// evicted. Unbounded when absent.
    pub prefix_cache_gib: Option<f64>,
    /// Prefill units (each `prefill.gpus` GPUs).
    pub prefill_units: u32,
    /// Decode units (each `decode.gpus` GPUs).
    pub decode_units: u32,
    pub prefill: PrefillUnitTable,
    pub decode: DecodeUnitTable,
    /// Time-to-first-token target for `slo_attainment`, ms.
    pub ttft_slo_ms: Option<f64>,
    /// Time-per-output-token target for `slo_attainment`, ms.
    pub tpot_slo_ms: Option<f64>,
    #[serde(default = "fp8")]
    pub precision: Dtype,
    /// Zipf exponent of expert popularity (0: balanced routing).
    #[serde(default)]
    pub skew: f64,
    /// Share of HBM the weights, buffers and KV cache may use.
    #[serde(default = "hbm_use")]
    pub hbm_utilization: f64,
    /// Price of one GPU-hour, USD; default: the device preset's.
    #[serde(default)]
    pub usd_per_gpu_hour: Option<f64>,
}

/// Derived per-request figures and run totals.
pub struct ServingReport {
    pub metrics: Map<String, Value>,
    pub notes: Vec<String>,
    pub totals: ServingTotals,
    /// What the figures are drawn from.
    pub stats: ServingStats,
}

/// Sums over the served requests, in arrival order (each sum in the same
/// order as a pass over them all would take), and the requests left out.
#[derive(Debug, Default)]
struct RequestMix {
    count: u64,
    input: f64,
    cached: f64,
    output: f64,
    /// New (not cached) prompt tokens, and keys they attend to: `n (c + n/2)`.
    new: f64,
    keys: f64,
    /// Mean decode context summed: `input + output / 2`.
    kv: f64,
    /// KV a request reserves summed: `input + output`.
    reserved: f64,
    bad: u64,
    first_bad: Option<(usize, String)>,
    /// The first arrival past half the clock's range.
    late: Option<f64>,
}

impl RequestMix {
    fn add(&mut self, q: &Request) {
        let n = q.input_len.saturating_sub(q.cached_len) as f64;
        self.count += 1;
        self.input += q.input_len as f64;
        self.cached += q.cached_len as f64;
        self.output += q.output_len as f64;
        self.new += n;
        self.keys += n * (q.cached_len as f64 + n / 2.0);
        self.kv += q.input_len as f64 + q.output_len as f64 / 2.0;
        self.reserved += q.input_len.saturating_add(q.output_len) as f64;
    }
}

/// Why request `r` cannot be served ([`unservable`] for one request).
fn unservable_one(config: &ServingConfig, r: &Request, max_context: u64) -> Option<String> {
    unservable(config, std::slice::from_ref(r), max_context).pop().map(|u| u.message)
}

/// What a run keeps of its outcomes, each added once as it is handed on:
/// latency quantiles (exact, then a sketch), SLO attainment, the units'
/// busy intervals for the timeline (merged as they come, so bounded), and
/// the rows of `requests.csv` written out.
pub struct ServingStats {
    pub ttft: Quantiles,
    pub tpot: Quantiles,
    /// When each request finished, seconds (an RL rollout's straggler tail).
    pub finish_s: Quantiles,
    slo_met: u64,
    ttft_slo_ms: Option<f64>,
    tpot_slo_ms: Option<f64>,
    /// Busy intervals per timeline row (`None`: no timeline is drawn).
    pub timeline: Option<TimelineSpans>,
}

impl ServingStats {
    fn new(w: &ServingWorkload, config: &ServingConfig, timeline: bool) -> ServingStats {
        ServingStats {
            ttft: Quantiles::default(),
            tpot: Quantiles::default(),
            finish_s: Quantiles::default(),
            slo_met: 0,
            ttft_slo_ms: w.ttft_slo_ms,
            tpot_slo_ms: w.tpot_slo_ms,
            timeline: timeline.then(|| TimelineSpans::new(config.prefill_units, config.decode_units)),
        }
    }

    fn add(&mut self, o: &RequestOutcome) {
        let ttft = o.ttft_s() * 1e3;
        let tpot = o.tpot_s().map(|t| t * 1e3);
        self.ttft.push(ttft);
        self.finish_s.push(o.finish_s);
        if let Some(t) = tpot {
            self.tpot.push(t);
        }
        if self.ttft_slo_ms.is_none_or(|s| ttft <= s) && self.tpot_slo_ms.is_none_or(|s| tpot.is_none_or(|t| t <= s)) {
            self.slo_met += 1;
        }
        if let Some(t) = &mut self.timeline {
            t.add(o);
        }
    }
}

/// The busy intervals of the timeline's rows (the first [`TIMELINE_UNITS`]
/// prefill, then decode units), merged as they come: a row whose list
/// doubles is merged at a pixel of the time seen so far (end / 2000), which
/// is never more than the final pixel, so the final merge draws the same
/// intervals as merging them all at the end, from a list that stays a few
/// thousand long.
pub struct TimelineSpans {
    prefill_units: u32,
    decode_units: u32,
    rows: Vec<Vec<(f64, f64)>>,
    /// Per row, the length at which it is merged next.
    limits: Vec<usize>,
    /// The latest end seen.
    end: f64,
}

/// Intervals a timeline row holds before it is first merged.
const SPANS_BEFORE_MERGE: usize = 8192;

impl TimelineSpans {
    fn new(prefill_units: u32, decode_units: u32) -> TimelineSpans {
        let n = (prefill_units.min(TIMELINE_UNITS) + decode_units.min(TIMELINE_UNITS)) as usize;
        TimelineSpans {
            prefill_units,
            decode_units,
            rows: vec![Vec::new(); n],
            limits: vec![SPANS_BEFORE_MERGE; n],
            end: 0.0,
        }
    }

    fn add(&mut self, o: &RequestOutcome) {
        let (np, nd) = (self.prefill_units.min(TIMELINE_UNITS), self.decode_units.min(TIMELINE_UNITS));
        if o.prefill_unit < np && o.first_token_s > o.prefill_start_s {
            self.push(o.prefill_unit as usize, (o.prefill_start_s, o.first_token_s));
        }
        if o.decode_unit < nd && o.finish_s > o.decode_join_s {
            self.push((np + o.decode_unit) as usize, (o.decode_join_s, o.finish_s));
        }
    }

    fn push(&mut self, row: usize, span: (f64, f64)) {
        self.end = self.end.max(span.1);
        self.rows[row].push(span);
        if self.rows[row].len() >= self.limits[row] {
            merge_spans(&mut self.rows[row], self.end / 2000.0);
            self.limits[row] = (2 * self.rows[row].len()).max(SPANS_BEFORE_MERGE);
        }
    }
}

/// Sorts `spans` by start and merges those closer than `min_gap`.
fn merge_spans(spans: &mut Vec<(f64, f64)>, min_gap: f64) {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(spans.len());
    for &(a, b) in spans.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 + min_gap => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *spans = merged;
}

impl ServingWorkload {
    fn arrivals(&self) -> Arrivals {
        self.arrivals.unwrap_or(if self.trace.is_some() { Arrivals::Trace } else { Arrivals::Poisson })
    }

    fn skew(&self) -> Skew {
        Skew::from_exponent(self.skew)
    }

    /// A prefill iteration of `new_tokens` per GPU on prompts of `prompt_len`.
    pub fn prefill_spec(&self, model: &ModelConfig, new_tokens: u64, prompt_len: u64) -> IterationSpec {
        let p = &self.prefill;
        let q = new_tokens.min(prompt_len).max(1);
        IterationSpec {
            model: model.clone(),
            unit: DeploymentUnit {
                gpus: p.gpus,
                tp: p.tp,
                redundant_experts: p.redundant_experts,
                placement: p.placement.placement(),
                comm_sms: p.comm_sms,
            },
            phase: IterationPhase::Prefill { tokens_per_gpu: new_tokens, prompt_len, cached_len: prompt_len - q },
            linear_dtype: self.precision,
            skew: self.skew(),
            micro_batches: p.micro_batches,
            moe_fill: 1.0,
        }
    }

    /// A decode iteration of `batch` sequences per GPU at `context`.
    pub fn decode_spec(&self, model: &ModelConfig, batch: u64, context: u64) -> IterationSpec {
        let d = &self.decode;
        IterationSpec {
            model: model.clone(),
            unit: DeploymentUnit {
                gpus: d.gpus,
                tp: d.tp,
                redundant_experts: d.redundant_experts,
                placement: d.placement.placement(),
                comm_sms: 0,
            },
            phase: IterationPhase::Decode {
                batch_per_gpu: batch,
                context_len: context,
                mtp_acceptance: d.mtp_acceptance,
            },
            linear_dtype: self.precision,
            skew: self.skew(),
            micro_batches: d.micro_batches,
            moe_fill: 1.0,
        }
    }

    /// The requests (sorted by arrival), read or drawn, all in memory (the
    /// capacity search serves them many times; a run streams them instead,
    /// see [`ServingWorkload::request_stream`]).
    pub fn requests(&self, setup: &Setup) -> Result<Vec<Request>, RunFailure> {
        let (trace, capacity) = self.load_trace(setup)?;
        Ok(self.requests_from(trace.as_ref(), capacity, setup.seed))
    }

    /// The trace (if any) and the prefix cache's capacity in blocks.
    fn load_trace(&self, setup: &Setup) -> Result<(Option<Trace>, Option<NonZeroUsize>), RunFailure> {
        let trace = match &self.trace {
            Some(path) => Some(
                read_trace(&resolve_path(&setup.source.origin, path), self.trace_format)
                    .map_err(|d| RunFailure::Input(vec![d]))?,
            ),
            None => None,
        };
        let with_blocks = trace.as_ref().is_some_and(Trace::has_block_ids);
        let capacity = match (self.prefix_cache_gib, &trace) {
            (None, _) => None,
            (Some(_), Some(t)) if !with_blocks => {
                return Err(input_error(
                    setup,
                    "workload.prefix_cache_gib",
                    format!("{} has no block ids to cache; use cache_hit_ratio", t.origin),
                ))
            }
            (Some(_), None) => {
                return Err(input_error(
                    setup,
                    "workload.prefix_cache_gib",
                    "needs a trace with block ids (Mooncake JSON lines); use cache_hit_ratio".into(),
                ))
            }
            (Some(gib), Some(t)) => {
                let model = setup.model.as_ref().ok_or_else(|| input_error(setup, "model", "missing".into()))?;
                let block_bytes = t.block_tokens as f64 * kv_bytes_per_token(model, 1, false);
                let blocks = (gib * (1u64 << 30) as f64 / block_bytes).floor();
                Some(NonZeroUsize::new(blocks.min(usize::MAX as f64) as usize).ok_or_else(|| {
                    input_error(
                        setup,
                        "workload.prefix_cache_gib",
                        format!(
                            "{gib} GiB holds no {}-token block of {:.1} MiB",
                            t.block_tokens,
                            block_bytes / (1u64 << 20) as f64
                        ),
                    )
                })?)
            }
        };
        Ok((trace, capacity))
    }

    /// The requests from a parsed trace (or none), the prefix cache's
    /// capacity in blocks (`None`: unbounded) and the seed.
    pub fn requests_from(&self, trace: Option<&Trace>, cache_blocks: Option<NonZeroUsize>, seed: u64) -> Vec<Request> {
        self.request_stream(trace, cache_blocks, seed).collect()
    }

    /// The requests of [`ServingWorkload::requests_from`], one at a time
    /// (Poisson arrivals drawn as they are needed).
    pub fn request_stream<'t>(
        &'t self,
        trace: Option<&'t Trace>,
        cache_blocks: Option<NonZeroUsize>,
        seed: u64,
    ) -> Box<dyn Iterator<Item = Request> + Send + 't> {
        let cached_of = move |input: u64, blocks: Option<u64>| {
            blocks.unwrap_or_else(|| (input as f64 * self.cache_hit_ratio).round() as u64).min(input.saturating_sub(1))
        };
        let with_blocks = trace.is_some_and(Trace::has_block_ids);
        let cached: Vec<u64> = trace.map(|t| t.cached_tokens(cache_blocks)).unwrap_or_default();
        let length = move |i: usize| -> (u64, u64, u64) {
            match trace {
                Some(t) => {
                    let k = i % t.rows.len();
                    let r = &t.rows[k];
                    let scale = |n: u64, by: f64| ((n as f64 * by).round() as u64).max(1);
                    let input = scale(r.input_len, self.input_scale);
                    let hit = with_blocks.then(|| (cached[k] as f64 * self.input_scale).round() as u64);
                    (input, scale(r.output_len, self.output_scale), cached_of(input, hit))
                }
                None => {
                    let (i, o) = (self.input_len.unwrap_or(1), self.output_len.unwrap_or(1));
                    (i, o, cached_of(i, None))
                }
            }
        };
        match (self.arrivals(), trace) {
            (Arrivals::Trace, Some(t)) => {
                let end = self.duration_s.unwrap_or(f64::INFINITY);
                Box::new(
                    t.rows
                        .iter()
                        .enumerate()
                        .map(move |(i, r)| (i, r.timestamp_s * self.time_scale))
                        .take_while(move |&(_, at)| at <= end)
                        .map(move |(i, at)| {
                            let (input_len, output_len, cached_len) = length(i);
                            Request { arrival_s: at, input_len, output_len, cached_len }
                        }),
                )
            }
            _ => {
                let times = PoissonArrivals::new(self.rate_per_s.unwrap_or(1.0), self.duration_s.unwrap_or(0.0), seed);
                Box::new(times.enumerate().map(move |(i, t)| {
                    let (input_len, output_len, cached_len) = length(i);
                    Request { arrival_s: t, input_len, output_len, cached_len }
                }))
            }
        }
    }

    /// Serves `requests` on `prefill_units` + `decode_units` units (the
    /// capacity search calls this with other unit counts).
    pub fn serve(
        &self,
        setup: &Setup,
        requests: &[Request],
        times: &mut EngineIterationTimes,
        prefill_units: u32,
        decode_units: u32,
    ) -> Result<ServingReport, RunFailure> {
        self.serve_stream(setup, &mut requests.iter().copied(), times, prefill_units, decode_units, None, false)
    }

    /// Serves the requests `source` yields (sorted by arrival), streaming:
    /// each outcome, once handed on, goes to the figures' and metrics'
    /// accumulators ([`ServingStats`]) and, with `csv`, a row of
    /// `requests.csv`; nothing grows with the number of requests.
    #[allow(clippy::too_many_arguments)]
    pub fn serve_stream(
        &self,
        setup: &Setup,
        source: &mut (dyn Iterator<Item = Request> + Send),
        times: &mut EngineIterationTimes,
        prefill_units: u32,
        decode_units: u32,
        csv: Option<&mut (dyn std::io::Write + Send)>,
        timeline: bool,
    ) -> Result<ServingReport, RunFailure> {
        let config = ServingConfig { prefill_units, decode_units, ..times.config.clone() };
        let model = times.model.clone();
        let mut notes = Vec::new();
        let mut mix = RequestMix::default();
        // Unservable requests are left out as they come; an arrival past half
        // the clock's range ends the stream (an input error below).
        let mut index = 0usize;
        let mut filtered = source.filter(|r| {
            let i = index;
            index += 1;
            if mix.late.is_some() {
                return false;
            }
            if let Some(message) = unservable_one(&config, r, model.max_context) {
                mix.bad += 1;
                mix.first_bad.get_or_insert((i, message));
                return false;
            }
            if r.arrival_s >= 0.5 * SimTime::RANGE_S {
                mix.late = Some(r.arrival_s);
                return false;
            }
            mix.add(r);
            true
        });
        let stats = ServingStats::new(self, &config, timeline);
        let csv = csv.map(RequestsCsv::new);
        let (totals, mut stats, csv) = serve_and_record(&config, &mut filtered, times, stats, csv);
        drop(filtered);
        let total = index;
        if let Some(e) = csv.and_then(RequestsCsv::finish) {
            return Err(RunFailure::Failed(format!("writing requests.csv: {e}")));
        }
        if let Some(e) = times.error.take() {
            return Err(e);
        }
        if let Some((i, message)) = &mix.first_bad {
            notes.push(format!(
                "warning: {} of {} requests cannot be served and are left out; the first: request {i}: {message}",
                mix.bad, total
            ));
        }
        // Past the engine's clock range times saturate: an arrival there, or
        // a backlog that runs past it, is an input error, not a result.
        let key = if self.arrivals() == Arrivals::Trace { "workload.trace" } else { "workload.duration_s" };
        if let Some(late) = mix.late {
            return Err(RunFailure::Input(vec![setup.source.at_key(
                key,
                format!(
                    "a request arrives at {late:.3e} s, beyond half the simulator's time range ({:.3e} s, about 213 days); simulate a shorter span",
                    SimTime::RANGE_S
                ),
            )]));
        }
        if totals.requests == 0 {
            return Err(RunFailure::Input(vec![setup.source.at_key(
                "workload",
                format!(
                    "no request can be served ({}{})",
                    mix.first_bad.as_ref().map_or_else(|| "no arrivals".to_owned(), |b| b.1.clone()),
                    if total == 0 { "; raise rate_per_s or duration_s" } else { "" }
                ),
            )]));
        }
        if totals.arrivals_cut {
            return Err(input_error(
                setup,
                key,
                format!("more than {} requests; simulate a shorter span or a lower rate", u32::MAX),
            ));
        }
        if totals.time_overflow {
            return Err(RunFailure::Input(vec![setup.source.at_key(
                key,
                format!(
                    "the requests keep the deployment busy past the simulator's time range ({:.3e} s, about 213 days); simulate a shorter span or add units",
                    SimTime::RANGE_S
                ),
            )]));
        }
        let metrics = self.metrics(&config, &mix, &totals, &mut stats, times, setup.topology.as_ref());
        notes.push(format!(
            "iteration times interpolated between {} prefill and {} decode iterations simulated on the engine (representative rank, {} MoE layers extrapolated from runs of {} and {})",
            times.prefill_points(),
            times.decode_points(),
            model.moe_layers(),
            SAMPLE_LAYERS.0,
            SAMPLE_LAYERS.1
        ));
        notes.push("decode admission reserves a request's whole KV (prompt + output); prefill KV moves to decode after the prefill iteration, one transfer at a time per NIC".into());
        if !stats.ttft.is_exact() || !stats.tpot.is_exact() {
            notes.push(format!(
                "TTFT and TPOT percentiles from a log-bucketed sketch (more than {} requests), each within {} % of the exact nearest-rank value; means and SLO attainment are exact; requests.csv holds every request's exact times",
                EXACT_VALUES,
                SKETCH_RELATIVE_ERROR * 100.0
            ));
        }
        Ok(ServingReport { metrics, notes, totals, stats })
    }

    fn metrics(
        &self,
        config: &ServingConfig,
        mix: &RequestMix,
        r: &ServingTotals,
        stats: &mut ServingStats,
        times: &mut EngineIterationTimes,
        topology: Option<&ClusterSpec>,
    ) -> Map<String, Value> {
        // "Node" figures are per server (8 GPUs on HGX; the topology's node
        // is the NVLink scale-up domain, which can be larger).
        let device = &times.decode_cluster.device;
        let domain = topology.map_or(8, |t| t.gpus_per_node);
        let gpn = device.server_gpus().min(domain) as f64;
        let price = device.price_per_gpu_hour(self.usd_per_gpu_hour);
        let prefill_gpus = config.prefill_units as f64 * config.prefill_gpus_per_unit as f64;
        let decode_gpus = config.decode_units as f64 * config.decode_gpus_per_unit as f64;
        let (prefill_nodes, decode_nodes) = ((prefill_gpus / gpn).ceil(), (decode_gpus / gpn).ceil());
        let span = r.makespan_s.max(1e-9);
        let (input, cached, output) = (mix.input, mix.cached, mix.output);
        let mut m = Map::new();
        m.insert("model".into(), Value::from(times.model.name.clone()));
        m.insert("requests".into(), Value::from(r.requests));
        m.insert("prefill_units".into(), Value::from(config.prefill_units));
        m.insert("decode_units".into(), Value::from(config.decode_units));
        m.insert("prefill_nodes".into(), num(prefill_nodes));
        m.insert("decode_nodes".into(), num(decode_nodes));
        m.insert("nodes".into(), num(prefill_nodes + decode_nodes));
        m.insert("makespan_s".into(), num(r.makespan_s));
        for (name, v) in [("ttft", &mut stats.ttft), ("tpot", &mut stats.tpot)] {
            m.insert(format!("{name}_mean_ms"), num(v.mean()));
            for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
                m.insert(format!("{name}_{label}_ms"), num(v.quantile(q)));
            }
        }
        if self.ttft_slo_ms.is_some() || self.tpot_slo_ms.is_some() {
            m.insert("slo_attainment".into(), num(stats.slo_met as f64 / r.requests.max(1) as f64));
        }
        if let Some(s) = self.ttft_slo_ms {
            m.insert("ttft_slo_ms".into(), num(s));
        }
        if let Some(s) = self.tpot_slo_ms {
            m.insert("tpot_slo_ms".into(), num(s));
        }
        m.insert("input_tokens".into(), num(input));
        m.insert("output_tokens".into(), num(output));
        m.insert("cached_input_fraction".into(), num(cached / input.max(1.0)));
        m.insert("input_tokens_per_s_per_prefill_node".into(), num(input / span / prefill_nodes));
        m.insert("output_tokens_per_s_per_decode_node".into(), num(output / span / decode_nodes));
        m.insert("input_tokens_per_s_per_node".into(), num(input / span / (prefill_nodes + decode_nodes)));
        m.insert("output_tokens_per_s_per_node".into(), num(output / span / (prefill_nodes + decode_nodes)));
        // Capacity is what a unit sustains with full batches at this run's
        // mix; utilisation is the load over it. Neither depends on how many
        // units share the load. Busy fractions (time with an iteration
        // running) say how often a unit is occupied, not how much it does.
        let capacity = full_batch_capacity(config, mix, times);
        let prefill_nodes_per_unit = prefill_nodes / config.prefill_units.max(1) as f64;
        let decode_nodes_per_unit = decode_nodes / config.decode_units.max(1) as f64;
        let prefill_capacity = capacity.prefill_input_tokens_per_s_per_unit / prefill_nodes_per_unit;
        let decode_capacity = capacity.decode_output_tokens_per_s_per_unit / decode_nodes_per_unit;
        m.insert("prefill_capacity_input_tokens_per_s_per_node".into(), num(prefill_capacity));
        m.insert("prefill_utilization".into(), num(input / span / prefill_nodes / prefill_capacity.max(1e-12)));
        m.insert(
            "prefill_busy_input_tokens_per_s_per_node".into(),
            num(input / r.prefill_busy_s.max(1e-12) / prefill_nodes_per_unit),
        );
        m.insert("prefill_busy_fraction".into(), num(r.prefill_busy_s / (span * config.prefill_units as f64)));
        m.insert("decode_capacity_output_tokens_per_s_per_node".into(), num(decode_capacity));
        m.insert("decode_capacity_batch_per_gpu".into(), Value::from(capacity.decode_batch_per_gpu));
        m.insert("decode_utilization".into(), num(output / span / decode_nodes / decode_capacity.max(1e-12)));
        m.insert("decode_busy_fraction".into(), num(r.decode_busy_s / (span * config.decode_units as f64)));
        m.insert("decode_mean_batch_per_gpu".into(), num(r.decode_batch_seconds / r.decode_busy_s.max(1e-12)));
        m.insert("kv_capacity_tokens_per_decode_gpu".into(), Value::from(config.kv_capacity_tokens_per_gpu));
        let gpu_hours = (prefill_gpus + decode_gpus) * span / 3600.0;
        m.insert("gpu_hours".into(), num(gpu_hours));
        m.insert("server_gpus".into(), num(gpn));
        m.insert("scale_up_domain_gpus".into(), Value::from(domain));
        m.insert("usd_per_gpu_hour".into(), num(price));
        m.insert("usd_per_million_output_tokens".into(), num(gpu_hours * price / (output / 1e6)));
        m.insert("prefill_iterations".into(), Value::from(r.prefill_iterations));
        m.insert("decode_iterations".into(), Value::from(r.decode_iterations));
        m.insert("peak_requests_in_system".into(), Value::from(r.peak_live_requests));
        if !stats.ttft.is_exact() || !stats.tpot.is_exact() {
            m.insert("percentile_relative_error_bound".into(), num(SKETCH_RELATIVE_ERROR));
        }
        m
    }
}

/// What a prefill and a decode unit sustain when kept full, at a run's
/// request mix.
struct FullBatchCapacity {
    /// Input tokens (cache hits included) per second of one prefill unit,
    /// every GPU taking its whole token budget each iteration.
    prefill_input_tokens_per_s_per_unit: f64,
    /// Output tokens per second of one decode unit, every GPU at the largest
    /// batch its batch bound and KV cache allow for the mix.
    decode_output_tokens_per_s_per_unit: f64,
    decode_batch_per_gpu: u64,
}

/// Full-batch capacities at the mix of `requests`: a prefill iteration of
/// `tokens_per_gpu` new tokens on every GPU attending to the mix's mean keys
/// per new token (a request with `c` cached and `n` new tokens: `c + n/2`),
/// and a decode iteration at the largest batch whose KV the GPU holds, at the
/// mix's mean context (`input + output/2`), each sequence making `1 + MTP
/// acceptance` tokens per iteration.
fn full_batch_capacity(
    config: &ServingConfig,
    mix: &RequestMix,
    times: &mut EngineIterationTimes,
) -> FullBatchCapacity {
    let (new, keys, input, kv) = (mix.new, mix.keys, mix.input, mix.kv);
    let count = mix.count.max(1) as f64;
    let budget = config.prefill_tokens_per_gpu.max(1);
    let prefill_s = times.prefill_s(budget, keys / new.max(1.0), 1.0);
    let new_per_unit = budget as f64 * config.prefill_gpus_per_unit as f64;
    // Each new token stands for input / new tokens of the mix's prompts.
    let prefill = new_per_unit * (input / new.max(1.0)) / prefill_s.max(1e-12);
    let reserved = mix.reserved / count;
    let by_kv = (config.kv_capacity_tokens_per_gpu as f64 / reserved.max(1.0)).floor() as u64;
    let batch = config.max_batch_per_gpu.min(by_kv).max(1);
    let decode_s = times.decode_s(batch, kv / count);
    let per_step = 1.0 + config.mtp_acceptance.unwrap_or(0.0);
    let decode = batch as f64 * per_step * config.decode_gpus_per_unit as f64 / decode_s.max(1e-12);
    FullBatchCapacity {
        prefill_input_tokens_per_s_per_unit: prefill,
        decode_output_tokens_per_s_per_unit: decode,
        decode_batch_per_gpu: batch,
    }
}

impl Workload for ServingWorkload {
    fn kind_name(&self) -> &str {
        "serving"
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let (device, topology, model, model_given, parallel_given) =
            (cx.device, cx.topology_state(), cx.model, cx.model_given, cx.parallel.is_some());
        let mut out = Vec::new();
        let mut positive = |key: &str, v: Option<f64>, what: &str| {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    out.push(problem(key, format!("expected {what} > 0, found {v}")));
                }
            }
        };
        positive("workload.rate_per_s", self.rate_per_s, "a rate");
        positive("workload.duration_s", self.duration_s, "a duration");
        positive("workload.time_scale", Some(self.time_scale), "a factor");
        positive("workload.input_scale", Some(self.input_scale), "a factor");
        positive("workload.output_scale", Some(self.output_scale), "a factor");
        positive("workload.ttft_slo_ms", self.ttft_slo_ms, "a time");
        positive("workload.tpot_slo_ms", self.tpot_slo_ms, "a time");
        positive("workload.prefix_cache_gib", self.prefix_cache_gib, "a size");
        if !(self.cache_hit_ratio.is_finite() && (0.0..1.0).contains(&self.cache_hit_ratio)) {
            out.push(problem(
                "workload.cache_hit_ratio",
                format!("expected a share in [0, 1), found {}", self.cache_hit_ratio),
            ));
        }
        if !(self.hbm_utilization > 0.0 && self.hbm_utilization <= 1.0) {
            out.push(problem(
                "workload.hbm_utilization",
                format!("expected a share in (0, 1], found {}", self.hbm_utilization),
            ));
        }
        check_price_and_precision(self.usd_per_gpu_hour, self.precision, device, &mut out);
        check_skew(self.skew, &mut out);
        if self.trace.is_none() {
            for (key, v) in [("workload.input_scale", self.input_scale), ("workload.output_scale", self.output_scale)] {
                if v != 1.0 {
                    out.push(problem(
                        key,
                        "scales a trace's lengths; without a trace set input_len and output_len".into(),
                    ));
                }
            }
        }
        if self.prefill_units == 0 {
            out.push(problem("workload.prefill_units", "expected an integer >= 1, found 0".into()));
        }
        if self.decode_units == 0 {
            out.push(problem("workload.decode_units", "expected an integer >= 1, found 0".into()));
        }
        match (self.arrivals(), &self.trace) {
            (Arrivals::Poisson, _) => {
                if self.rate_per_s.is_none() {
                    out.push(problem(
                        "workload.rate_per_s",
                        "Poisson arrivals need a rate, e.g. rate_per_s = 100".into(),
                    ));
                }
                if self.duration_s.is_none() {
                    out.push(problem(
                        "workload.duration_s",
                        "Poisson arrivals need a duration, e.g. duration_s = 3600".into(),
                    ));
                }
            }
            (Arrivals::Trace, None) => {
                out.push(problem("workload.trace", "arrivals = \"trace\" needs a trace file".into()))
            }
            _ => {}
        }
        if self.trace.is_none() {
            for (k, v) in [("workload.input_len", self.input_len), ("workload.output_len", self.output_len)] {
                match v {
                    None => out.push(problem(k, "without a trace every request needs this length, e.g. 4096".into())),
                    Some(0) => out.push(problem(k, "expected an integer >= 1, found 0".into())),
                    _ => {}
                }
            }
        }
        if let Some(p) = self.decode.mtp_acceptance {
            if !(0.0..=1.0).contains(&p) {
                out.push(problem(
                    "workload.decode.mtp_acceptance",
                    format!("expected a probability in [0, 1], found {p}"),
                ));
            }
        }
        if self.prefill.context_parallel == 0 || self.prefill.context_parallel > self.prefill.gpus.max(1) {
            out.push(problem(
                "workload.prefill.context_parallel",
                format!("expected 1 to the unit's {} GPUs, found {}", self.prefill.gpus, self.prefill.context_parallel),
            ));
        }
        if self.prefill.tokens_per_gpu == 0 {
            out.push(problem("workload.prefill.tokens_per_gpu", "expected an integer >= 1, found 0".into()));
        }
        if self.decode.max_batch_per_gpu == 0 {
            out.push(problem("workload.decode.max_batch_per_gpu", "expected an integer >= 1, found 0".into()));
        }
        if !model_given {
            out.push(problem("model", "serving needs a [model] table, e.g. preset = \"deepseek-v3\"".into()));
        }
        if parallel_given {
            out.push(problem(
                "parallel",
                "not used by kind \"serving\": units are set in [workload.prefill] and [workload.decode]".into(),
            ));
        }
        match topology {
            TopologyState::Missing => {
                out.push(problem("topology", "serving needs a [topology] table (the units' fabric)".into()))
            }
            TopologyState::Resolved(t) => {
                if let Some(m) = model {
                    for (prefix, spec) in [
                        ("workload.prefill", self.prefill_spec(m, 1024, 4096)),
                        ("workload.decode", self.decode_spec(m, 1, 1024)),
                    ] {
                        let g = t.gpus_per_node;
                        if spec.unit.gpus > g && !spec.unit.gpus.is_multiple_of(g) {
                            out.push(problem(
                                &format!("{prefix}.gpus"),
                                format!(
                                    "expected whole nodes of {g} GPUs (or at most one node), found {}",
                                    spec.unit.gpus
                                ),
                            ));
                            continue;
                        }
                        for p in spec.problems(spec.unit.gpus) {
                            let key = match p.key.as_str() {
                                "workload.gpus"
                                | "workload.tp"
                                | "workload.redundant_experts"
                                | "workload.micro_batches" => {
                                    format!("{prefix}.{}", &p.key["workload.".len()..])
                                }
                                "workload.tokens_per_gpu" => format!("{prefix}.tokens_per_gpu"),
                                "workload.batch_per_gpu" => format!("{prefix}.max_batch_per_gpu"),
                                "workload.mtp_acceptance" => format!("{prefix}.mtp_acceptance"),
                                _ => continue,
                            };
                            out.push(problem(&key, p.message));
                        }
                    }
                }
            }
            TopologyState::Broken => {}
        }
        out
    }

    fn footprint(&self, setup: &Setup) -> Option<Footprint> {
        // Requests stream through: only those in the system are held (about
        // 200 B each; a day at day-6 load held 100k at most), plus 16 MiB of
        // exact latencies before the sketch takes over. A trace is read
        // whole: at least 30 bytes a row, about 160 B a row held.
        match (self.arrivals(), &self.trace) {
            (Arrivals::Trace, Some(path)) => {
                let bytes = std::fs::metadata(resolve_path(&setup.source.origin, path)).map_or(0, |m| m.len());
                let rows = bytes as f64 / 30.0;
                Some(Footprint {
                    bytes: rows * 160.0 + 16.0 * (1u64 << 20) as f64,
                    key: "workload.trace".into(),
                    what: format!("a trace of up to {rows:.3e} requests"),
                })
            }
            _ => {
                let rate = self.rate_per_s.unwrap_or(1.0);
                // A request stays a few minutes at most unless the
                // deployment is overloaded (its backlog is held).
                let held = (rate * self.duration_s.unwrap_or(0.0)).min(rate * 600.0);
                Some(Footprint {
                    bytes: held * 200.0 + 16.0 * (1u64 << 20) as f64,
                    key: "workload.rate_per_s".into(),
                    what: format!("{held:.3e} requests in the system at once"),
                })
            }
        }
    }

    fn run(&self, setup: &Setup, options: &RunOptions, _observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let (trace, cache_blocks) = self.load_trace(setup)?;
        let mut source = self.request_stream(trace.as_ref(), cache_blocks, setup.seed);
        let mut times = EngineIterationTimes::new(self, setup)?;
        let mut files = Vec::new();
        // With `--out`, requests.csv is streamed to disk as requests finish.
        let (spool, mut writer) = match options.figures {
            true => {
                let (spooled, file) = SpooledFile::create(options.spool_dir.as_deref(), "requests.csv")
                    .map_err(|e| RunFailure::Failed(format!("creating requests.csv: {e}")))?;
                (Some(spooled), Some(std::io::BufWriter::with_capacity(1 << 20, file)))
            }
            false => (None, None),
        };
        let mut report = self.serve_stream(
            setup,
            &mut source,
            &mut times,
            self.prefill_units,
            self.decode_units,
            writer.as_mut().map(|w| w as &mut (dyn std::io::Write + Send)),
            options.figures,
        )?;
        if let Some(w) = writer {
            w.into_inner().map_err(|e| RunFailure::Failed(format!("writing requests.csv: {}", e.error())))?;
        }
        let mut figures = Vec::new();
        if options.figures {
            figures.extend(latency_cdfs(setup, &mut report.stats, self.ttft_slo_ms, self.tpot_slo_ms)?);
            if let Some(spans) = report.stats.timeline.take() {
                figures.push(super::draw(setup, unit_timeline(spans, report.totals.makespan_s))?);
            }
        }
        if let Some(file) = spool {
            files.push(("requests.csv".to_owned(), OutFile::Spooled(file)));
        }
        let result = RunResult {
            end: SimTime::ZERO + moesim_sim::SimDuration::from_secs_f64(report.totals.makespan_s),
            events: report.totals.events,
            ..Default::default()
        };
        Ok(Outcome {
            job_gpus: None,
            metrics: report.metrics,
            notes: report.notes,
            graph: TaskGraph::new(),
            platform: Platform::default(),
            result,
            figures,
            files,
        })
    }

    fn uses_model(&self) -> bool {
        true
    }

    fn sm_driven_all_to_all(&self, _parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        Some(("workload.prefill.comm_sms", self.prefill.comm_sms))
    }

    fn as_serving(&self) -> Option<&ServingWorkload> {
        Some(self)
    }
}

/// A trace path: see [`crate::files::data_path`] (beside the scenario file
/// when it is a file).
fn resolve_path(origin: &str, path: &str) -> PathBuf {
    let beside = (!origin.starts_with("builtin:")).then(|| Path::new(origin).parent()).flatten();
    crate::files::data_path(path, beside)
}

/// MoE layers simulated for the iteration tables: the full model's time is
/// `T(k2) + (L - k2) x (T(k2) - T(k1)) / (k2 - k1)` (every MoE layer runs the
/// same shapes and routing, so the pipeline repeats layer after layer).
pub const SAMPLE_LAYERS: (u32, u32) = (2, 4);

/// Grid of per-GPU prefill tokens, keys per token, decode batches and contexts.
const TOKEN_GRID: [f64; 12] =
    [64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0];
const KEY_GRID: [f64; 13] =
    [32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0];
/// Expert fill (the unit's mean tokens per GPU over the busiest GPU's):
/// interpolated linearly between these.
const FILL_GRID: [f64; 4] = [1.0 / 32.0, 0.125, 0.5, 1.0];
const BATCH_GRID: [u64; 14] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256];
const CONTEXT_GRID: [f64; 12] =
    [64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0];

/// Iteration times from the engine: iterations simulated on grid points
/// (lazily, memoised) and interpolated between them: bilinearly over batch or
/// tokens and context or keys, and linearly over prefill's expert fill.
pub struct EngineIterationTimes {
    pub model: ModelConfig,
    pub config: ServingConfig,
    workload: ServingWorkload,
    prefill_cluster: Cluster,
    decode_cluster: Cluster,
    seed: u64,
    /// Simulated grid points, by (token, key, fill) index (`NAN`: not yet).
    prefill: Vec<f64>,
    /// Simulated grid points, by (batch, context) index (`NAN`: not yet).
    decode: Vec<f64>,
    prefill_routing: RoutingCache,
    decode_routing: RoutingCache,
    batches: Vec<u64>,
    /// `batches` as the interpolation grid.
    batch_grid: Vec<f64>,
    /// The first failure of a simulated iteration.
    pub error: Option<RunFailure>,
    /// The last prefill times asked for, by a hash of their arguments'
    /// bits: ((tokens, keys bits, fill bits), seconds).
    prefill_memo: Vec<PrefillMemoSlot>,
    /// Host time each engine step adds, serial with the GPU (the rollout
    /// engine's scheduling, input preparation, sampling and output
    /// processing), s; 0 unless a caller sets it (a GRPO rollout does).
    pub step_cpu_s: f64,
}

pub(crate) fn unit_cluster(spec: &ClusterSpec, device: &DeviceSpec, gpus: u32, seed: u64) -> Result<Cluster, String> {
    let mut s = spec.clone();
    // A written-out fabric is built whole (its patterns were resolved for
    // its own nodes): the unit runs on its first ranks.
    if s.kind != moesim_topologies::TopologyKind::Explicit {
        s.nodes = gpus.div_ceil(s.gpus_per_node).max(1);
    }
    let topology = moesim_topologies::build(&s).map_err(|e| e.to_string())?;
    Ok(Cluster::new(topology, device.clone(), seed))
}

/// An input error at `key` of the scenario.
fn input_error(setup: &Setup, key: &str, message: String) -> RunFailure {
    RunFailure::Input(vec![setup.source.at_key(key, message)])
}

impl EngineIterationTimes {
    pub fn new(w: &ServingWorkload, setup: &Setup) -> Result<EngineIterationTimes, RunFailure> {
        let input = |key: &str, m: String| input_error(setup, key, m);
        let model = setup.model.clone().ok_or_else(|| input("model", "missing".into()))?;
        let topo = setup.topology.as_ref().ok_or_else(|| input("topology", "missing".into()))?;
        let device = &setup.device;
        let mut prefill_cluster =
            unit_cluster(topo, device, w.prefill.gpus, setup.seed).map_err(|e| input("workload.prefill.gpus", e))?;
        w.prefill.deepep_rdma.cap_normal_kernels(&mut prefill_cluster, w.prefill.comm_sms);
        prefill_cluster.share_memory_with_comm();
        let mut decode_cluster =
            unit_cluster(topo, device, w.decode.gpus, setup.seed).map_err(|e| input("workload.decode.gpus", e))?;
        decode_cluster.share_memory_with_comm();
        let at_max = w.decode_spec(&model, w.decode.max_batch_per_gpu, 1);
        let capacity = kv_capacity_tokens(&at_max, device, 1.0 - w.hbm_utilization).floor() as u64;
        if capacity == 0 {
            return Err(input(
                "workload.decode",
                format!(
                    "the weights and buffers of a decode GPU leave no room for KV cache in {:.0} % of {:.1} GiB HBM; use more GPUs per unit",
                    w.hbm_utilization * 100.0,
                    device.hbm_bytes() / (1u64 << 30) as f64
                ),
            ));
        }
        let ib = topo.ib_bytes_per_s * topo.ib_efficiency;
        let config = ServingConfig {
            prefill_units: w.prefill_units,
            prefill_gpus_per_unit: w.prefill.gpus,
            prefill_tokens_per_gpu: w.prefill.tokens_per_gpu,
            prefill_chunking: w.prefill.chunking,
            prefill_context_parallel: w.prefill.context_parallel,
            decode_units: w.decode_units,
            decode_gpus_per_unit: w.decode.gpus,
            max_batch_per_gpu: w.decode.max_batch_per_gpu,
            kv_capacity_tokens_per_gpu: capacity,
            kv_bytes_per_token: kv_bytes_per_token(&model, w.prefill.tp, false),
            kv_transfer_bytes_per_s: ib,
            // GPU -> NIC -> leaf -> spine -> leaf -> NIC -> GPU.
            kv_transfer_latency_s: (2.0 * topo.pcie_latency_ns + 4.0 * topo.ib_latency_ns) * 1e-9,
            mtp_acceptance: w.decode.mtp_acceptance,
            seed: setup.seed,
        };
        let mut batches: Vec<u64> = BATCH_GRID.iter().copied().filter(|&b| b < w.decode.max_batch_per_gpu).collect();
        batches.push(w.decode.max_batch_per_gpu);
        Ok(EngineIterationTimes {
            model,
            config,
            workload: w.clone(),
            prefill_cluster,
            decode_cluster,
            seed: setup.seed,
            prefill: vec![f64::NAN; TOKEN_GRID.len() * KEY_GRID.len() * FILL_GRID.len()],
            decode: vec![f64::NAN; batches.len() * CONTEXT_GRID.len()],
            prefill_routing: RoutingCache::default(),
            decode_routing: RoutingCache::default(),
            batch_grid: batches.iter().map(|&b| b as f64).collect(),
            batches,
            error: None,
            prefill_memo: vec![None; 1 << PREFILL_MEMO_BITS],
            step_cpu_s: 0.0,
        })
    }

    pub fn prefill_points(&self) -> usize {
        self.prefill.iter().filter(|t| !t.is_nan()).count()
    }
    pub fn decode_points(&self) -> usize {
        self.decode.iter().filter(|t| !t.is_nan()).count()
    }

    /// Simulates one iteration of `spec` on `cluster` with the MoE layers
    /// sampled and extrapolated (see [`SAMPLE_LAYERS`]).
    fn simulate(&mut self, spec: IterationSpec, decode: bool) -> f64 {
        let (cluster, routing) = if decode {
            (&self.decode_cluster, &mut self.decode_routing)
        } else {
            (&self.prefill_cluster, &mut self.prefill_routing)
        };
        let seed = self.seed;
        let moe = spec.model.moe_layers();
        let mut run = |layers_moe: u32| -> Result<f64, String> {
            let mut s = spec.clone();
            if moe > 0 {
                s.model.layers = spec.model.ffn.dense_layers + layers_moe.min(moe);
            }
            let mut graph = TaskGraph::new();
            lower_iteration_cached(cluster, &s, seed, &mut graph, routing).map_err(|e| e.to_string())?;
            let r = moesim_sim::run(&cluster.platform, &graph, &EngineOptions::default(), &mut moesim_sim::Quiet)
                .map_err(|e| super::explain(&e))?;
            Ok(r.end.as_secs_f64())
        };
        let (k1, k2) = SAMPLE_LAYERS;
        let t = if moe > k2 {
            run(k1).and_then(|a| run(k2).map(|b| b + (moe - k2) as f64 * (b - a) / (k2 - k1) as f64))
        } else {
            run(moe)
        };
        match t {
            Ok(t) => t,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(RunFailure::Failed(format!("simulating a unit iteration: {e}")));
                }
                1.0
            }
        }
    }

    fn prefill_at(&mut self, i: usize, j: usize, k: usize) -> f64 {
        let at = (i * KEY_GRID.len() + j) * FILL_GRID.len() + k;
        if !self.prefill[at].is_nan() {
            return self.prefill[at];
        }
        let n = TOKEN_GRID[i] as u64;
        let a = KEY_GRID[j].min(self.model.max_context as f64 / 2.0);
        // Sequences whose new tokens attend to `a` keys each on average:
        // a prompt of q new tokens after a - q/2 cached ones (q = 2a when
        // the prompt has no cache).
        let q = (n as f64).min(2.0 * a).max(1.0).round() as u64;
        let cached = (a - q as f64 / 2.0).max(0.0).round() as u64;
        let mut spec = self.workload.prefill_spec(&self.model, n, cached + q);
        spec.moe_fill = FILL_GRID[k];
        let t = self.simulate(spec, false);
        self.prefill[at] = t;
        t
    }

    fn decode_at(&mut self, i: usize, j: usize) -> f64 {
        let at = i * CONTEXT_GRID.len() + j;
        if !self.decode[at].is_nan() {
            return self.decode[at];
        }
        let b = self.batches[i];
        let max_c = self.model.max_context.saturating_sub(2) as f64;
        let c = CONTEXT_GRID[j].min(max_c).round() as u64;
        let spec = self.workload.decode_spec(&self.model, b, c);
        let t = self.simulate(spec, true);
        self.decode[at] = t;
        t
    }
}

/// The bracketing grid indices of `x` and its weight toward the upper one.
fn bracket(grid: &[f64], x: f64) -> (usize, usize, f64) {
    if x <= grid[0] {
        return (0, 0, 0.0);
    }
    let last = grid.len() - 1;
    if x >= grid[last] {
        return (last, last, 0.0);
    }
    let hi = grid.iter().position(|&g| g >= x).expect("inside");
    let lo = hi - 1;
    (lo, hi, (x - grid[lo]) / (grid[hi] - grid[lo]))
}

/// Bilinear interpolation of `at(i, j)` over grid brackets `(i0, i1, wi)`
/// and `(j0, j1, wj)`, evaluating only the points with a non-zero weight
/// (each is a simulation the first time it is asked for).
fn bilinear<S>(
    s: &mut S,
    (i0, i1, wi): (usize, usize, f64),
    (j0, j1, wj): (usize, usize, f64),
    at: impl Fn(&mut S, usize, usize) -> f64,
) -> f64 {
    let row = |s: &mut S, i| at(s, i, j0) * (1.0 - wj) + if wj > 0.0 { at(s, i, j1) * wj } else { 0.0 };
    let t0 = row(s, i0);
    let t1 = if wi > 0.0 { row(s, i1) } else { 0.0 };
    t0 * (1.0 - wi) + t1 * wi
}

impl IterationTimes for EngineIterationTimes {
    fn prefill_s(&mut self, new_tokens: u64, keys_per_token: f64, fill: f64) -> f64 {
        // The scheduler asks again and again for the same few batches (every
        // unit's next batch, whichever request is placing): a direct-mapped
        // memo of the last answers, exact (keyed by the arguments' bits).
        let key = (new_tokens, keys_per_token.to_bits(), fill.to_bits());
        let h = (key.0 ^ key.1.rotate_left(21) ^ key.2.rotate_left(42)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (h >> (64 - PREFILL_MEMO_BITS)) as usize;
        // The memo holds GPU time only: the host time per step is added on
        // every answer (a caller may change it between phases).
        if let Some((k, t)) = self.prefill_memo[slot] {
            if k == key {
                return t + self.step_cpu_s;
            }
        }
        let t = self.interpolate_prefill(new_tokens, keys_per_token, fill);
        self.prefill_memo[slot] = Some((key, t));
        t + self.step_cpu_s
    }

    fn decode_s(&mut self, batch: u64, context: f64) -> f64 {
        let (i, j) = (bracket(&self.batch_grid, batch as f64), bracket(&CONTEXT_GRID, context));
        bilinear(self, i, j, Self::decode_at) + self.step_cpu_s
    }
}

/// A slot of the prefill memo: ((tokens, keys bits, fill bits), seconds).
type PrefillMemoSlot = Option<((u64, u64, u64), f64)>;

/// Slots of [`EngineIterationTimes`]'s prefill memo: 2^12.
const PREFILL_MEMO_BITS: u32 = 12;

impl EngineIterationTimes {
    /// [`IterationTimes::prefill_s`] interpolated between grid points.
    fn interpolate_prefill(&mut self, new_tokens: u64, keys_per_token: f64, fill: f64) -> f64 {
        let (i, j) = (bracket(&TOKEN_GRID, new_tokens as f64), bracket(&KEY_GRID, keys_per_token));
        let (k0, k1, wk) = bracket(&FILL_GRID, fill);
        let t0 = bilinear(self, i, j, |s: &mut Self, a, b| s.prefill_at(a, b, k0));
        if wk > 0.0 {
            t0 * (1.0 - wk) + bilinear(self, i, j, |s: &mut Self, a, b| s.prefill_at(a, b, k1)) * wk
        } else {
            t0
        }
    }
}

/// Outcomes handed from the simulation to the recording thread at a time,
/// and arrivals from the drawing thread to the simulation.
const RECORD_BATCH: usize = 4096;

/// Runs [`serve_stream`], each outcome going to `stats` and a row of `csv`.
/// With two or more threads (rayon's pool) the simulation has two threads
/// beside it: one draws the arrivals (the source's requests and their MTP
/// draws, [`arrival`], which depend on nothing the run does) and one
/// records the outcomes; each is fed batches, in arrival order, through a
/// bounded channel (a few batches in flight: memory stays bounded), so the
/// bytes are those of one thread.
fn serve_and_record<'w>(
    config: &ServingConfig,
    source: &mut (dyn Iterator<Item = Request> + Send),
    times: &mut EngineIterationTimes,
    mut stats: ServingStats,
    mut csv: Option<RequestsCsv<'w>>,
) -> (ServingTotals, ServingStats, Option<RequestsCsv<'w>>) {
    let record = |stats: &mut ServingStats, csv: &mut Option<RequestsCsv>, o: &RequestOutcome| {
        stats.add(o);
        if let Some(w) = csv {
            w.row(o);
        }
    };
    if rayon::current_num_threads() < 2 {
        let totals = serve_stream(config, source, &mut |o| record(&mut stats, &mut csv, o), times);
        return (totals, stats, csv);
    }
    std::thread::scope(|scope| {
        let (arrivals_tx, arrivals_rx) = std::sync::mpsc::sync_channel::<Vec<Arrival>>(4);
        scope.spawn(move || {
            // The run takes at most u32::MAX + 1 requests (the last to see
            // that the stream is cut, `ServingTotals::arrivals_cut`): as many
            // as it would have pulled from `source` itself.
            let mut requests = source.take(u32::MAX as usize + 1).enumerate();
            loop {
                let batch: Vec<Arrival> =
                    requests.by_ref().take(RECORD_BATCH).map(|(i, r)| arrival(config, i as u64, r)).collect();
                // The simulation only stops taking arrivals at the end.
                if batch.is_empty() || arrivals_tx.send(batch).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<RequestOutcome>>(4);
        // Emptied batches go back to be refilled.
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<RequestOutcome>>();
        let recorder = scope.spawn(move || {
            for mut batch in rx {
                for o in &batch {
                    record(&mut stats, &mut csv, o);
                }
                batch.clear();
                let _ = back_tx.send(batch);
            }
            (stats, csv)
        });
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let send = |batch: &mut Vec<RequestOutcome>| {
            let empty = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(RECORD_BATCH));
            // The recorder only stops when this side hangs up.
            let _ = tx.send(std::mem::replace(batch, empty));
        };
        let totals = serve_arrivals(
            config,
            &mut arrivals_rx.into_iter().flatten(),
            &mut |o| {
                batch.push(*o);
                if batch.len() == RECORD_BATCH {
                    send(&mut batch);
                }
            },
            times,
        );
        if !batch.is_empty() {
            send(&mut batch);
        }
        drop(tx);
        let (stats, csv) = recorder.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (totals, stats, csv)
    })
}

/// The header of `requests.csv`.
const REQUESTS_CSV_HEADER: &str = "request,arrival_ms,input_tokens,output_tokens,cached_tokens,prefill_unit,prefill_gpu,prefill_start_ms,first_token_ms,decode_unit,decode_gpu,decode_join_ms,finish_ms,ttft_ms,tpot_ms\n";

/// `requests.csv` written a row at a time (one row per request, in arrival
/// order, times in ms to the microsecond); rows gather in a buffer handed
/// to `out` [`CSV_CHUNK_BYTES`] at a time; the first write error is kept
/// and the rest skipped.
pub struct RequestsCsv<'w> {
    out: &'w mut (dyn std::io::Write + Send),
    row: u64,
    /// Rows not yet handed to `out`.
    pending: Vec<u8>,
    error: Option<std::io::Error>,
}

/// Bytes of rows [`RequestsCsv`] gathers before writing them out.
const CSV_CHUNK_BYTES: usize = 1 << 16;

impl<'w> RequestsCsv<'w> {
    pub fn new(out: &'w mut (dyn std::io::Write + Send)) -> RequestsCsv<'w> {
        let mut pending = Vec::with_capacity(CSV_CHUNK_BYTES + 256);
        pending.extend_from_slice(REQUESTS_CSV_HEADER.as_bytes());
        RequestsCsv { out, row: 0, pending, error: None }
    }

    /// Hands the gathered rows to `out`.
    fn write_pending(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(&self.pending) {
                self.error = Some(e);
            }
        }
        self.pending.clear();
    }

    pub fn row(&mut self, o: &RequestOutcome) {
        let mut n = itoa::Buffer::new();
        let s = &mut self.pending;
        s.extend_from_slice(n.format(self.row).as_bytes());
        s.push(b',');
        push_ms(s, o.arrival_s * 1e3);
        for v in [o.input_len, o.output_len, o.cached_len, o.prefill_unit, o.prefill_gpu] {
            s.push(b',');
            s.extend_from_slice(n.format(v).as_bytes());
        }
        s.push(b',');
        push_ms(s, o.prefill_start_s * 1e3);
        s.push(b',');
        push_ms(s, o.first_token_s * 1e3);
        for v in [o.decode_unit, o.decode_gpu] {
            s.push(b',');
            s.extend_from_slice(n.format(v).as_bytes());
        }
        s.push(b',');
        push_ms(s, if o.decode_join_s.is_finite() { o.decode_join_s * 1e3 } else { o.first_token_s * 1e3 });
        s.push(b',');
        push_ms(s, o.finish_s * 1e3);
        s.push(b',');
        push_ms(s, o.ttft_s() * 1e3);
        s.push(b',');
        if let Some(t) = o.tpot_s() {
            push_ms(s, t * 1e3);
        }
        s.push(b'\n');
        self.row += 1;
        if self.pending.len() >= CSV_CHUNK_BYTES {
            self.write_pending();
        }
    }

    /// Writes the rest and flushes; the first error, if any.
    pub fn finish(mut self) -> Option<std::io::Error> {
        self.write_pending();
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        self.error
    }
}

/// Appends `v` as `format!("{v:.3}")` would, without its cost where the
/// rounding is clear: `v x 1000` rounded to a whole number, printed with
/// three decimals (the integer part by `itoa`, the same digits as
/// `Display`). Near a rounding tie, or out of range, it formats.
fn push_ms(s: &mut Vec<u8>, v: f64) {
    let scaled = v * 1000.0;
    // Below 2^40 an f64 resolves 1/4096: a fraction 1e-3 from one half
    // rounds the same way as the exact decimal value does.
    if v.is_finite() && v >= 0.0 && scaled < (1u64 << 40) as f64 {
        let frac = scaled - scaled.floor();
        if (frac - 0.5).abs() > 1e-3 {
            let n = scaled.round() as u64;
            let f = (n % 1000) as u32;
            s.extend_from_slice(itoa::Buffer::new().format(n / 1000).as_bytes());
            s.extend_from_slice(&[b'.', b'0' + (f / 100) as u8, b'0' + (f / 10 % 10) as u8, b'0' + (f % 10) as u8]);
            return;
        }
    }
    let _ = std::io::Write::write_fmt(s, format_args!("{v:.3}"));
}

/// The most units of each kind [`unit_timeline`] draws a row for.
const TIMELINE_UNITS: u32 = 12;

/// Prefill and decode over time, a row per unit (the first
/// [`TIMELINE_UNITS`] of each kind): when a prefill unit was prefilling some
/// request (prefill start to first token) and when a decode unit held
/// sequences (join to finish), intervals closer than a pixel merged.
pub fn unit_timeline(spans: TimelineSpans, makespan_s: f64) -> XyChart {
    use moesim_reports::plot::RectMark;
    let (prefill_units, decode_units) = (spans.prefill_units, spans.decode_units);
    let (np, nd) = (prefill_units.min(TIMELINE_UNITS), decode_units.min(TIMELINE_UNITS));
    let n = (np + nd) as usize;
    let end = makespan_s.max(1e-9);
    let mut labels: Vec<String> = (0..np).map(|u| format!("prefill unit {u}")).collect();
    labels.extend((0..nd).map(|u| format!("decode unit {u}")));
    labels.reverse();
    let spans = spans.rows;
    let more = if prefill_units > np || decode_units > nd {
        format!(" (the first {TIMELINE_UNITS} of {prefill_units} prefill and {decode_units} decode units)")
    } else {
        String::new()
    };
    let mut chart = XyChart::new(
        "serving_timeline",
        format!("Prefill and decode units over {end:.1} s: when each was busy{more}"),
        Axis::linear("time, s").with_range(0.0, end),
        Axis::linear("").with_range(-0.5, n as f64 - 0.5).with_categories(labels),
    );
    chart.size = (1400, (140 + 34 * n as u32).max(400));
    chart.legend = LegendPosition::UpperRight;
    let min_gap = end / 2000.0;
    for (row, mut merged) in spans.into_iter().enumerate() {
        merge_spans(&mut merged, min_gap);
        let decode = row >= np as usize;
        let y = (n - 1 - row) as f64;
        let (name, c) = if decode { ("decoding (holds sequences)", color(1)) } else { ("prefilling", color(0)) };
        for (a, b) in merged {
            chart.rects.push(RectMark {
                x0: a,
                x1: b,
                y0: y - 0.35,
                y1: y + 0.35,
                color: c,
                legend: Some(name.into()),
            });
        }
    }
    chart
}

/// TTFT and TPOT CDFs (log time axis), with the SLOs marked.
pub fn latency_cdfs(
    setup: &Setup,
    stats: &mut ServingStats,
    ttft_slo: Option<f64>,
    tpot_slo: Option<f64>,
) -> Result<Vec<RenderedFigure>, RunFailure> {
    let mut out = Vec::new();
    for (name, title, values, slo) in [
        ("ttft_cdf", "Time to first token", &mut stats.ttft, ttft_slo),
        ("tpot_cdf", "Time per output token (after the first)", &mut stats.tpot, tpot_slo),
    ] {
        if values.is_empty() {
            continue;
        }
        let pts = values.cdf_points();
        let lo = pts.first().map_or(1.0, |p| p.0).max(1e-3);
        let hi = pts.last().map_or(10.0, |p| p.0).max(lo * 10.0);
        let (lo, hi) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()));
        let (p50, p99) = (values.quantile(0.5), values.quantile(0.99));
        let mut chart = XyChart::new(
            name,
            format!("{title}: p50 {p50:.1} ms, p99 {p99:.1} ms ({} requests)", values.len()),
            Axis::log(format!("{} (ms)", if name == "ttft_cdf" { "TTFT" } else { "TPOT" })).with_range(lo, hi),
            Axis::linear("fraction of requests").with_range(0.0, 1.0),
        );
        chart.legend = LegendPosition::LowerRight;
        chart.series.push(Series {
            name: "requests".into(),
            color: color(0),
            style: SeriesStyle::Line { width: 2 },
            points: pts,
            in_legend: true,
        });
        if let Some(s) = slo {
            chart.series.push(Series {
                name: format!("SLO {s} ms"),
                color: color(3),
                style: SeriesStyle::Dashed { width: 1 },
                points: vec![(s, 0.0), (s, 1.0)],
                in_legend: true,
            });
        }
        out.push(super::draw(setup, chart)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed pseudo-random sequence in [0, 1) (xorshift64*).
    struct Draws(u64);
    impl Draws {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `requests.csv` as it was written before it streamed: the reference.
    fn reference_row(i: usize, o: &RequestOutcome) -> String {
        format!(
            "{i},{:.3},{},{},{},{},{},{:.3},{:.3},{},{},{:.3},{:.3},{:.3},{}\n",
            o.arrival_s * 1e3,
            o.input_len,
            o.output_len,
            o.cached_len,
            o.prefill_unit,
            o.prefill_gpu,
            o.prefill_start_s * 1e3,
            o.first_token_s * 1e3,
            o.decode_unit,
            o.decode_gpu,
            if o.decode_join_s.is_finite() { o.decode_join_s * 1e3 } else { o.first_token_s * 1e3 },
            o.finish_s * 1e3,
            o.ttft_s() * 1e3,
            o.tpot_s().map_or(String::new(), |t| format!("{:.3}", t * 1e3)),
        )
    }

    #[test]
    fn fast_millisecond_formatting_is_the_standard_one() {
        let mut r = Draws(5);
        let mut values: Vec<f64> = (0..200_000).map(|_| r.next() * 1e8).collect();
        // Whole nanoseconds land on rounding ties (x.xxx5 ms) and near them.
        values.extend((0..200_000u64).map(|k| (k * 500 + 1) as f64 * 1e-6));
        values.extend((0..200_000u64).map(|k| (r.next() * 8.64e13).floor() / 1e6 + (k % 2) as f64 * 5e-4));
        values.extend([0.0, 0.0005, 0.0015, 1e-9, 1e12, 2e13, f64::NAN]);
        for v in values {
            let mut s = Vec::new();
            push_ms(&mut s, v);
            assert_eq!(String::from_utf8(s).unwrap(), format!("{v:.3}"), "{v:e}");
        }
    }

    #[test]
    fn streamed_requests_csv_is_the_reference_one() {
        let o = RequestOutcome {
            arrival_s: 0.0173705,
            input_len: 4096,
            output_len: 1100,
            cached_len: 2306,
            prefill_start_s: 0.0173705,
            first_token_s: 0.2328401,
            decode_join_s: 0.2392055,
            finish_s: 22.6353714,
            prefill_unit: 3,
            prefill_gpu: 17,
            decode_unit: 0,
            decode_gpu: 143,
        };
        let one = RequestOutcome { output_len: 1, decode_join_s: f64::NAN, finish_s: o.first_token_s, ..o };
        let mut bytes = Vec::new();
        let mut w = RequestsCsv::new(&mut bytes);
        w.row(&o);
        w.row(&one);
        assert!(w.finish().is_none());
        let want = format!("{REQUESTS_CSV_HEADER}{}{}", reference_row(0, &o), reference_row(1, &one));
        assert_eq!(String::from_utf8(bytes).unwrap(), want);
    }

    #[test]
    fn timeline_spans_merged_as_they_come_are_those_merged_at_the_end() {
        let mut r = Draws(9);
        let mut all = Vec::new();
        let mut spans = TimelineSpans::new(1, 0);
        let mut t = 0.0;
        for _ in 0..100_000 {
            t += r.next() * 0.02;
            let s = (t, t + r.next() * 0.01);
            all.push(s);
            spans.push(0, s);
        }
        let end = all.iter().map(|s| s.1).fold(0.0, f64::max);
        assert!(spans.rows[0].len() < 20_000, "{}", spans.rows[0].len());
        merge_spans(&mut all, end / 2000.0);
        let mut streamed = spans.rows.remove(0);
        merge_spans(&mut streamed, end / 2000.0);
        assert_eq!(streamed, all);
    }
}
