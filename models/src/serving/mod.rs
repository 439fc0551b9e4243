//! Request-level serving with prefill/decode disaggregation: an
//! event-driven model of its own, above the kernel engine, that takes the
//! time of each unit iteration from an [`IterationTimes`] (the workload
//! memoises engine-simulated iterations per batch and context and
//! interpolates between them) instead of lowering every kernel of every
//! iteration.
//!
//! - **Prefill units**: a global scheduler sends each request, first come
//!   first served, to the unit where it costs least: its own time to first
//!   token (the start of that unit's next iteration, now if it is idle,
//!   plus that iteration's time with the request in it) plus the delay it
//!   adds to the requests already in that iteration. Inside a unit the
//!   request's new tokens (its prompt less the prefix-cache hit) go to the
//!   least loaded GPU with room under the per-GPU token budget; a request
//!   longer than that GPU's room fills it and runs on there in budget-sized
//!   chunks, one per iteration, each attending to the chunks before it
//!   (chunked prefill filling the budget, as vLLM and SGLang do). With
//!   context parallelism a prompt longer than the budget spreads over that
//!   many empty GPUs instead, each with an equal share of its attention.
//!   With [`PrefillChunking::Time`] a GPU's share is also bounded in time
//!   (the time of a budget of fresh tokens): a deep chunk of a long prompt
//!   is cut shorter, and requests go to the GPU with the least time. An
//!   iteration lasts as long as its slowest GPU, each GPU timed at its own
//!   tokens and keys with the unit's mean tokens per GPU setting the expert
//!   rows and all-to-all traffic (the "fill"). An idle unit starts at once;
//!   a busy unit's next batch starts when its iteration ends. A request no
//!   unit's next batch has room for waits. The first output token is
//!   produced at the end of the iteration (TTFT).
//! - **KV transfer**: the prompt's KV cache (bytes per token from the
//!   model) goes from the prefill GPU's NIC to the decode GPU's NIC; each
//!   NIC carries one transfer at a time.
//! - **Decode units** batch continuously: a request joins its GPU at the
//!   next iteration after its KV arrived and leaves when its last token is
//!   out; every GPU of a unit steps in lockstep (the expert-parallel
//!   all-to-all joins them), so an iteration lasts as long as the GPU with
//!   the most sequences and KV needs. Admission reserves the request's
//!   whole KV (prompt + output) on the GPU with the fewest sequences that
//!   has room in both the batch bound and the KV capacity; a request that
//!   fits nowhere waits, first come first served, until one leaves.
//! - **MTP**: each iteration yields one token plus an accepted draft with
//!   the acceptance probability, drawn per request from its own stream.
//!
//! Deterministic: events at equal times run in insertion order; every
//! random draw comes from a named stream.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use moesim_sim::SimTime;
use rand::Rng;

use crate::rng;

/// One request as served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Seconds from the start of the run.
    pub arrival_s: f64,
    pub input_len: u64,
    pub output_len: u64,
    /// Leading prompt tokens found in the prefix cache (not computed).
    pub cached_len: u64,
}

/// Iteration times of the units, seconds.
pub trait IterationTimes {
    /// A prefill iteration whose busiest GPU computes `new_tokens` tokens
    /// that attend on average to `keys_per_token` keys each, while the
    /// unit's GPUs carry on average `fill` x `new_tokens` (in (0, 1]: the
    /// share that sets the expert rows and the all-to-all traffic).
    fn prefill_s(&mut self, new_tokens: u64, keys_per_token: f64, fill: f64) -> f64;
    /// A decode iteration whose busiest GPU holds `batch` sequences of
    /// `context` cached tokens on average.
    fn decode_s(&mut self, batch: u64, context: f64) -> f64;
}

/// What bounds a prefill GPU's share of an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrefillChunking {
    /// New tokens only: up to the budget per GPU, a request that overflows
    /// a GPU's room filling it and running on in budget-sized chunks
    /// (chunked prefill as vLLM and SGLang do it). A
    /// chunk deep in a long prompt attends to many keys, and the unit's
    /// other GPUs wait for it at every layer's all-to-all.
    #[default]
    Tokens,
    /// New tokens and time: no GPU takes longer than a budget of fresh
    /// tokens from one prompt would (its attention to half the budget on
    /// average). A chunk deep in a long prompt is cut to fit, and a request
    /// goes to the GPU with the least time rather than the fewest tokens.
    Time,
}

/// The deployment and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingConfig {
    pub prefill_units: u32,
    pub prefill_gpus_per_unit: u32,
    /// New tokens a prefill GPU takes per iteration.
    pub prefill_tokens_per_gpu: u64,
    pub prefill_chunking: PrefillChunking,
    /// GPUs of a prefill unit a prompt longer than the per-GPU budget
    /// spreads over (context parallelism; fewer when fewer are empty; 1:
    /// every request runs on one GPU).
    pub prefill_context_parallel: u32,
    pub decode_units: u32,
    pub decode_gpus_per_unit: u32,
    pub max_batch_per_gpu: u64,
    /// KV-cache tokens a decode GPU holds.
    pub kv_capacity_tokens_per_gpu: u64,
    pub kv_bytes_per_token: f64,
    /// Per-NIC rate of KV transfers, bytes/s, and their latency.
    pub kv_transfer_bytes_per_s: f64,
    pub kv_transfer_latency_s: f64,
    pub mtp_acceptance: Option<f64>,
    pub seed: u64,
}

/// What became of one request (times in seconds from the start).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestOutcome {
    pub arrival_s: f64,
    pub input_len: u32,
    pub output_len: u32,
    pub cached_len: u32,
    pub prefill_start_s: f64,
    pub first_token_s: f64,
    pub decode_join_s: f64,
    pub finish_s: f64,
    pub prefill_unit: u32,
    /// The prefill GPU inside its unit.
    pub prefill_gpu: u32,
    pub decode_unit: u32,
    pub decode_gpu: u32,
}

impl RequestOutcome {
    pub fn ttft_s(&self) -> f64 {
        self.first_token_s - self.arrival_s
    }

    /// Mean time per output token after the first; `None` for one-token outputs.
    pub fn tpot_s(&self) -> Option<f64> {
        (self.output_len > 1).then(|| (self.finish_s - self.first_token_s) / (self.output_len - 1) as f64)
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingResult {
    /// In the order of the input requests.
    pub requests: Vec<RequestOutcome>,
    /// When the last request finished.
    pub makespan_s: f64,
    pub events: u64,
    pub prefill_iterations: u64,
    pub decode_iterations: u64,
    /// Time prefill units computed, summed over units, seconds.
    pub prefill_busy_s: f64,
    /// Sum over decode iterations of (sequences per GPU x duration), for the
    /// time-averaged batch.
    pub decode_batch_seconds: f64,
    pub decode_busy_s: f64,
}

/// Why a request cannot be served at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unservable {
    pub index: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    PrefillDone { unit: u32 },
    TransferDone { request: u32 },
    DecodeStep { unit: u32 },
}

/// A request's share of one prefill iteration on GPU `gpu` of the unit:
/// part of the `piece` new tokens from `offset` that the request computes
/// this iteration (its tokens and keys are in the batch's per-GPU sums). A
/// piece on one GPU is one chunk; a piece split over several GPUs (context
/// parallelism) has a chunk on each, and one of them, the lead, stands for
/// the request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Chunk {
    request: u32,
    gpu: u32,
    offset: u64,
    piece: u64,
    lead: bool,
}

/// A prefill batch being filled or run: its chunks and, per GPU, the new
/// tokens and the keys they attend to (summed).
#[derive(Debug, Clone, Default)]
struct PrefillBatch {
    chunks: Vec<Chunk>,
    tokens: Vec<u64>,
    /// Sum of `tokens`.
    total: u64,
    work: Vec<f64>,
    /// Per GPU, its time as last estimated, seconds.
    gpu_s: Vec<f64>,
    /// Requests with a piece in it.
    requests: u32,
    /// The iteration's time, seconds (its slowest GPU's).
    time_s: f64,
}

impl PrefillBatch {
    fn new(gpus: usize) -> PrefillBatch {
        PrefillBatch {
            chunks: Vec::new(),
            tokens: vec![0; gpus],
            total: 0,
            work: vec![0.0; gpus],
            gpu_s: vec![0.0; gpus],
            requests: 0,
            time_s: 0.0,
        }
    }
}

/// One prefill unit.
#[derive(Debug, Clone, Default)]
struct PrefillUnit {
    /// When its running iteration ends; `None` while idle.
    busy_until: Option<SimTime>,
    running: Vec<Chunk>,
    /// The batch of its next iteration, filled as requests are sent to it.
    next: PrefillBatch,
}

/// One decode GPU.
#[derive(Debug, Clone, Default)]
struct DecodeGpu {
    active: u64,
    /// Cached tokens of its sequences now.
    context: f64,
    /// Tokens its sequences add per iteration.
    growth: f64,
    /// KV tokens reserved (prompt + output of every admitted request).
    reserved: u64,
}

/// One decode unit.
#[derive(Debug, Clone, Default)]
struct DecodeUnit {
    gpus: Vec<DecodeGpu>,
    iteration: u64,
    busy: bool,
    /// Requests whose KV has arrived, joining at the next iteration start.
    joining: Vec<u32>,
    /// (finish iteration, request) of running requests.
    finishing: BinaryHeap<Reverse<(u64, u32)>>,
    started_at: SimTime,
    step_batch: u64,
}

/// Per request, its decode progress.
#[derive(Debug, Clone, Copy, Default)]
struct Running {
    join_iteration: u64,
    /// Tokens added per iteration on average (output tokens / iterations).
    rate: f64,
    gpu: u32,
}

struct Server<'a> {
    config: &'a ServingConfig,
    requests: &'a [Request],
    times: &'a mut dyn IterationTimes,
    out: Vec<RequestOutcome>,
    queue: BinaryHeap<Reverse<(SimTime, u64, Event)>>,
    seq: u64,
    now: SimTime,
    events: u64,
    // prefill
    /// Arrived requests no unit's next batch has taken yet, in order.
    waiting: VecDeque<u32>,
    prefill: Vec<PrefillUnit>,
    prefill_iterations: u64,
    prefill_busy_s: f64,
    /// The most time a prefill GPU may take ([`PrefillChunking::Time`];
    /// infinite otherwise), seconds.
    prefill_gpu_budget_s: f64,
    /// Per prefill GPU (unit * gpus + g) and decode GPU: when its NIC is free.
    prefill_nic_free: Vec<SimTime>,
    decode_nic_free: Vec<SimTime>,
    // decode
    decode: Vec<DecodeUnit>,
    /// (sequences incl. reserved, reserved KV tokens, unit, gpu) of every
    /// decode GPU: admission takes the first with room.
    by_load: BTreeSet<(u64, u64, u32, u32)>,
    /// Per decode GPU, its sequences incl. admitted-not-joined.
    load: Vec<u64>,
    admit_wait: VecDeque<u32>,
    running: Vec<Running>,
    decode_iterations: u64,
    decode_batch_seconds: f64,
    decode_busy_s: f64,
}

/// Checks every request against the deployment's bounds.
pub fn unservable(config: &ServingConfig, requests: &[Request], max_context: u64) -> Vec<Unservable> {
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let total = r.input_len + r.output_len;
        let message = if r.input_len == 0 || r.output_len == 0 {
            format!("input and output must be at least one token each (found {} and {})", r.input_len, r.output_len)
        } else if total > max_context {
            format!(
                "needs {total} tokens of context ({} in + {} out), more than the model's {max_context}",
                r.input_len, r.output_len
            )
        } else if total > config.kv_capacity_tokens_per_gpu {
            format!(
                "needs {total} tokens of KV cache, more than a decode GPU holds ({})",
                config.kv_capacity_tokens_per_gpu
            )
        } else if !(r.arrival_s.is_finite() && r.arrival_s >= 0.0) {
            format!("arrives at {} s", r.arrival_s)
        } else {
            continue;
        };
        out.push(Unservable { index: i, message });
    }
    out
}

/// Simulates serving `requests` (sorted by arrival; each servable, see
/// [`unservable`]) on the deployment.
pub fn simulate_serving(config: &ServingConfig, requests: &[Request], times: &mut dyn IterationTimes) -> ServingResult {
    let dg = config.decode_gpus_per_unit.max(1);
    let mut by_load = BTreeSet::new();
    for u in 0..config.decode_units {
        for g in 0..dg {
            by_load.insert((0, 0, u, g));
        }
    }
    let mut server = Server {
        config,
        requests,
        times,
        out: requests
            .iter()
            .map(|r| RequestOutcome {
                arrival_s: r.arrival_s,
                input_len: r.input_len as u32,
                output_len: r.output_len as u32,
                cached_len: r.cached_len as u32,
                prefill_start_s: f64::NAN,
                first_token_s: f64::NAN,
                decode_join_s: f64::NAN,
                finish_s: f64::NAN,
                prefill_unit: 0,
                prefill_gpu: 0,
                decode_unit: 0,
                decode_gpu: 0,
            })
            .collect(),
        queue: BinaryHeap::new(),
        seq: 0,
        now: SimTime::ZERO,
        events: 0,
        waiting: VecDeque::new(),
        prefill: (0..config.prefill_units)
            .map(|_| PrefillUnit {
                next: PrefillBatch::new(config.prefill_gpus_per_unit.max(1) as usize),
                ..Default::default()
            })
            .collect(),
        prefill_iterations: 0,
        prefill_busy_s: 0.0,
        prefill_gpu_budget_s: f64::INFINITY,
        prefill_nic_free: vec![SimTime::ZERO; (config.prefill_units * config.prefill_gpus_per_unit) as usize],
        decode_nic_free: vec![SimTime::ZERO; (config.decode_units * dg) as usize],
        decode: (0..config.decode_units)
            .map(|_| DecodeUnit { gpus: vec![DecodeGpu::default(); dg as usize], ..Default::default() })
            .collect(),
        by_load,
        load: vec![0; (config.decode_units * dg) as usize],
        admit_wait: VecDeque::new(),
        running: vec![Running::default(); requests.len()],
        decode_iterations: 0,
        decode_batch_seconds: 0.0,
        decode_busy_s: 0.0,
    };
    if config.prefill_chunking == PrefillChunking::Time {
        let b = config.prefill_tokens_per_gpu.max(1);
        server.prefill_gpu_budget_s = server.times.prefill_s(b, (b as f64 + 1.0) / 2.0, 1.0);
    }
    server.run();
    let makespan_s = server.out.iter().map(|o| o.finish_s).filter(|f| f.is_finite()).fold(0.0, f64::max);
    ServingResult {
        requests: server.out,
        makespan_s,
        events: server.events,
        prefill_iterations: server.prefill_iterations,
        decode_iterations: server.decode_iterations,
        prefill_busy_s: server.prefill_busy_s,
        decode_batch_seconds: server.decode_batch_seconds,
        decode_busy_s: server.decode_busy_s,
    }
}

/// Where a request's first piece would go, and what it would cost.
struct Placement {
    /// Its first token from now, plus the delay it adds to the first
    /// tokens of the requests already in the batch, seconds (estimated).
    cost: f64,
    unit: usize,
    /// The GPUs of the piece, the lead first.
    gpus: Vec<usize>,
    piece: u64,
    /// The batch's time and the piece's GPUs' time with it, estimated.
    time_s: f64,
    gpu_s: f64,
}

fn secs(t: SimTime) -> f64 {
    t.as_secs_f64()
}

fn at(s: f64) -> SimTime {
    SimTime::ZERO + moesim_sim::SimDuration::from_secs_f64(s.max(0.0))
}

impl Server<'_> {
    fn push(&mut self, t: SimTime, e: Event) {
        self.queue.push(Reverse((t, self.seq, e)));
        self.seq += 1;
    }

    fn run(&mut self) {
        let mut next_arrival = 0usize;
        loop {
            let arrival_t = self.requests.get(next_arrival).map(|r| at(r.arrival_s));
            let event_t = self.queue.peek().map(|Reverse((t, _, _))| *t);
            // Arrivals go first at equal times (they came before any event
            // scheduled for that instant could react).
            match (arrival_t, event_t) {
                (Some(a), e) if e.is_none_or(|e| a <= e) => {
                    self.now = a;
                    self.events += 1;
                    self.waiting.push_back(next_arrival as u32);
                    next_arrival += 1;
                    self.dispatch_prefills();
                }
                (_, Some(_)) => {
                    let Reverse((t, _, e)) = self.queue.pop().expect("peeked");
                    self.now = t;
                    self.events += 1;
                    match e {
                        Event::PrefillDone { unit } => self.prefill_done(unit),
                        Event::TransferDone { request } => self.transfer_done(request),
                        Event::DecodeStep { unit } => self.decode_step(unit),
                    }
                }
                (None, None) => break,
                (Some(_), None) => unreachable!("handled above"),
            }
        }
    }

    // ---- prefill ----

    /// Sends waiting requests, in order, to the units where they cost least
    /// (see [`Server::assign_prefill`]), starting idle units; stops at the
    /// first request no unit has room for.
    fn dispatch_prefills(&mut self) {
        while let Some(&r) = self.waiting.front() {
            let Some(unit) = self.assign_prefill(r) else { return };
            self.waiting.pop_front();
            if self.prefill[unit].busy_until.is_none() {
                self.start_prefill(unit);
            }
        }
    }

    /// New tokens of request `r` (its prompt less the prefix-cache hit).
    fn new_tokens(&self, r: u32) -> u64 {
        let req = &self.requests[r as usize];
        req.input_len.saturating_sub(req.cached_len).max(1)
    }

    /// Keys the new tokens `offset..offset + len` of request `r` attend to,
    /// summed: everything before them (the cached prefix and the earlier
    /// chunks) plus, on average, half of the chunk (causal).
    fn chunk_work(&self, r: u32, offset: u64, len: u64) -> f64 {
        let req = &self.requests[r as usize];
        let before = req.input_len - self.new_tokens(r) + offset;
        len as f64 * before as f64 + len as f64 * (len as f64 + 1.0) / 2.0
    }

    /// The longest piece of request `r`'s new tokens from `offset` that a
    /// GPU already holding `tokens` new tokens attending to `work` keys can
    /// take: up to the room under the token budget and, with time-bounded
    /// chunking, within the GPU time budget (timed at fill 1, as the budget
    /// is). 0 when there is no room; an empty GPU takes at least one token.
    fn fit_len(&mut self, r: u32, offset: u64, tokens: u64, work: f64) -> u64 {
        let room = self.config.prefill_tokens_per_gpu.max(1).saturating_sub(tokens);
        let cap = (self.new_tokens(r) - offset).min(room);
        if cap == 0 || self.prefill_gpu_budget_s.is_infinite() {
            return cap;
        }
        let fits = |s: &mut Self, len: u64| {
            let t = tokens + len;
            let keys = (work + s.chunk_work(r, offset, len)) / t as f64;
            s.times.prefill_s(t, keys, 1.0) <= s.prefill_gpu_budget_s * (1.0 + 1e-9)
        };
        self.longest_fitting(1, cap, fits).unwrap_or(u64::from(tokens == 0))
    }

    /// The largest n in `least..=most` for which `fits` holds, by bisection
    /// (`fits` must hold on a prefix of the range); `None` if not even
    /// `least` fits.
    fn longest_fitting(&mut self, least: u64, most: u64, fits: impl Fn(&mut Self, u64) -> bool) -> Option<u64> {
        if fits(self, most) {
            return Some(most);
        }
        if least >= most || !fits(self, least) {
            return None;
        }
        // lo fits, hi does not.
        let (mut lo, mut hi) = (least, most);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(self, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// An estimate of the time request `r`'s new tokens after the first
    /// `done` take once its first piece ran: budget-sized chunks alone on
    /// their GPU, one per iteration, each timed at the middle chunk's keys.
    fn rest_s(&mut self, r: u32, done: u64) -> f64 {
        let rest = self.new_tokens(r) - done;
        let budget = self.config.prefill_tokens_per_gpu.max(1);
        let c = rest.min(budget);
        let keys = self.chunk_work(r, done + (rest - c) / 2, c) / c as f64;
        let fill = 1.0 / self.config.prefill_gpus_per_unit.max(1) as f64;
        rest.div_ceil(budget) as f64 * self.times.prefill_s(c, keys, fill)
    }

    /// Adds request `r` to the next batch of the unit where it costs least
    /// (ties: the lowest unit): its own time to first token plus the delay
    /// it adds to the requests already in that batch (a long prompt joining
    /// a batch of short ones holds them all). On that batch's least loaded
    /// GPU (fewest tokens, or least time with time-bounded chunking). A
    /// request longer than the GPU's room fills it and runs on in the
    /// iterations after (chunked prefill fills the budget, as vLLM and
    /// SGLang do). `None` when no next batch has room for any of it.
    fn assign_prefill(&mut self, r: u32) -> Option<usize> {
        let by_time = self.prefill_gpu_budget_s.is_finite();
        let q = self.new_tokens(r);
        let gpus = self.config.prefill_gpus_per_unit.max(1) as f64;
        let fill = |total: u64, gpu: u64| (total as f64 / gpus / gpu.max(1) as f64).clamp(f64::MIN_POSITIVE, 1.0);
        // Its first budget's worth alone on a GPU: about the least time to
        // its first token anywhere (a split start only adds iterations).
        let budget = self.config.prefill_tokens_per_gpu.max(1);
        let c = q.min(budget);
        let alone_s = self.times.prefill_s(c, self.chunk_work(r, 0, c) / c as f64, fill(c, c));
        let cp = self.config.prefill_context_parallel.max(1) as usize;
        let mut best: Option<Placement> = None;
        for u in 0..self.prefill.len() {
            let next = &self.prefill[u].next;
            let start = self.prefill[u].busy_until.unwrap_or(self.now);
            let wait_s = secs(start) - secs(self.now);
            let (waiting, batch_s) = (next.requests as f64, next.time_s);
            if best.as_ref().is_some_and(|b| wait_s + batch_s.max(alone_s / cp as f64) >= b.cost) {
                continue;
            }
            let g = if by_time {
                (0..next.gpu_s.len()).min_by(|&a, &b| next.gpu_s[a].total_cmp(&next.gpu_s[b]).then(a.cmp(&b)))
            } else {
                (0..next.tokens.len()).min_by_key(|&g| (next.tokens[g], g))
            }
            .expect("one GPU");
            let (tokens, work, total) = (next.tokens[g], next.work[g], next.total);
            let empty: Vec<usize> = if q > budget && cp > 1 {
                (0..next.tokens.len()).filter(|&g| next.tokens[g] == 0).take(cp).collect()
            } else {
                Vec::new()
            };
            let m = empty.len();
            // The piece's GPUs, its tokens, their time in this batch and the
            // time the rest of the prompt will take after it.
            let (on, piece, gpu_s, rest_s) = if m >= 2 {
                // A long prompt spread over m empty GPUs.
                let piece = self.cp_piece(r, 0, m);
                let slice = piece.div_ceil(m as u64);
                let w = self.chunk_work(r, 0, piece) / m as f64;
                let gpu_s = self.times.prefill_s(slice, w / slice as f64, fill(total + piece, slice));
                let rest_s = if piece < q { self.rest_s(r, piece) / m as f64 } else { 0.0 };
                (empty, piece, gpu_s, rest_s)
            } else {
                let len = self.fit_len(r, 0, tokens, work);
                if len == 0 {
                    continue;
                }
                // An estimate for the choice (the other GPUs' times are not
                // refreshed for the new fill); the batch is timed exactly
                // when it starts.
                let t = tokens + len;
                let gpu_s = if tokens == 0 && len == c {
                    alone_s
                } else {
                    self.times.prefill_s(t, (work + self.chunk_work(r, 0, len)) / t as f64, fill(total + len, t))
                };
                let rest_s = if len < q { self.rest_s(r, len) } else { 0.0 };
                (vec![g], len, gpu_s, rest_s)
            };
            let time_s = batch_s.max(gpu_s);
            let cost = wait_s + time_s + rest_s + waiting * (time_s - batch_s);
            if best.as_ref().is_none_or(|b| cost < b.cost) {
                best = Some(Placement { cost, unit: u, gpus: on, piece, time_s, gpu_s });
            }
        }
        let b = best?;
        self.push_piece(b.unit, r, 0, &b.gpus, b.piece);
        let next = &mut self.prefill[b.unit].next;
        for &g in &b.gpus {
            next.gpu_s[g] = b.gpu_s;
        }
        next.time_s = b.time_s;
        Some(b.unit)
    }

    /// Adds `piece` new tokens of request `r` from `offset` to a unit's next
    /// batch, split evenly over `gpus` (the first is the lead), each slice
    /// with an equal share of the piece's attention work.
    fn push_piece(&mut self, unit: usize, r: u32, offset: u64, gpus: &[usize], piece: u64) {
        // No GPU gets an empty slice (a short last piece takes fewer GPUs).
        let gpus = &gpus[..gpus.len().min(piece.max(1) as usize)];
        let m = gpus.len().max(1) as u64;
        let work = self.chunk_work(r, offset, piece) / m as f64;
        let next = &mut self.prefill[unit].next;
        for (i, &g) in gpus.iter().enumerate() {
            let len = piece / m + u64::from((i as u64) < piece % m);
            next.tokens[g] += len;
            next.total += len;
            next.work[g] += work;
            next.chunks.push(Chunk { request: r, gpu: g as u32, offset, piece, lead: i == 0 });
        }
        next.requests += 1;
    }

    /// The next piece of a long request `r` from `offset` spread over `m`
    /// empty GPUs: up to `m` budgets of its new tokens and, with
    /// time-bounded chunking, as long as a slice's time stays within the
    /// GPU budget (fill 1).
    fn cp_piece(&mut self, r: u32, offset: u64, m: usize) -> u64 {
        let m = m.max(1) as u64;
        let cap = (self.new_tokens(r) - offset).min(m * self.config.prefill_tokens_per_gpu.max(1));
        if self.prefill_gpu_budget_s.is_infinite() {
            return cap;
        }
        let fits = |s: &mut Self, piece: u64| {
            let slice = piece.div_ceil(m);
            let keys = s.chunk_work(r, offset, piece) / m as f64 / slice as f64;
            s.times.prefill_s(slice, keys, 1.0) <= s.prefill_gpu_budget_s * (1.0 + 1e-9)
        };
        // At least one token per GPU, even past the budget.
        self.longest_fitting(m.min(cap), cap, fits).unwrap_or(m.min(cap))
    }

    /// Starts the unit's next batch (if any) now. The next chunks of the
    /// requests it does not finish go into the batch after it, on the same
    /// GPUs (their KV is there).
    fn start_prefill(&mut self, unit: usize) {
        let gpus = self.config.prefill_gpus_per_unit.max(1) as usize;
        let mut batch = std::mem::replace(&mut self.prefill[unit].next, PrefillBatch::new(gpus));
        if batch.chunks.is_empty() {
            return;
        }
        batch.time_s = Self::batch_time(&mut *self.times, &mut batch);
        let start = secs(self.now);
        for c in batch.chunks.iter().filter(|c| c.lead) {
            if c.offset == 0 {
                let o = &mut self.out[c.request as usize];
                o.prefill_start_s = start;
                o.prefill_unit = unit as u32;
                o.prefill_gpu = c.gpu;
            }
            let done = c.offset + c.piece;
            if done < self.new_tokens(c.request) {
                // The rest goes on the same GPUs (its KV is there).
                let gpus: Vec<usize> =
                    batch.chunks.iter().filter(|x| x.request == c.request).map(|x| x.gpu as usize).collect();
                let piece = if gpus.len() > 1 {
                    self.cp_piece(c.request, done, gpus.len())
                } else {
                    let g = gpus[0];
                    let (tokens, work) = (self.prefill[unit].next.tokens[g], self.prefill[unit].next.work[g]);
                    self.fit_len(c.request, done, tokens, work).max(1)
                };
                self.push_piece(unit, c.request, done, &gpus, piece);
            }
        }
        // The continuing chunks' estimate, for requests choosing a unit.
        let mut next = std::mem::take(&mut self.prefill[unit].next);
        next.time_s = Self::batch_time(&mut *self.times, &mut next);
        self.prefill[unit].next = next;
        let done = self.now + moesim_sim::SimDuration::from_secs_f64(batch.time_s);
        self.prefill[unit].busy_until = Some(done);
        self.prefill[unit].running = batch.chunks;
        self.prefill_iterations += 1;
        self.prefill_busy_s += batch.time_s;
        self.push(done, Event::PrefillDone { unit: unit as u32 });
    }

    /// A batch's iteration time: its slowest GPU's, each timed at its own
    /// tokens and keys with the unit's mean tokens as the expert fill (each
    /// GPU's time is kept in `gpu_s`).
    fn batch_time(times: &mut dyn IterationTimes, batch: &mut PrefillBatch) -> f64 {
        let mean = batch.total as f64 / batch.tokens.len().max(1) as f64;
        for (g, &t) in batch.tokens.iter().enumerate() {
            batch.gpu_s[g] =
                if t > 0 { times.prefill_s(t, batch.work[g] / t as f64, (mean / t as f64).min(1.0)) } else { 0.0 };
        }
        batch.gpu_s.iter().copied().fold(0.0, f64::max)
    }

    fn prefill_done(&mut self, unit: u32) {
        let u = unit as usize;
        self.prefill[u].busy_until = None;
        let batch = std::mem::take(&mut self.prefill[u].running);
        let now_s = secs(self.now);
        for c in batch.iter().filter(|c| c.lead) {
            let r = c.request;
            if c.offset + c.piece < self.new_tokens(r) {
                continue;
            }
            self.out[r as usize].first_token_s = now_s;
            if self.requests[r as usize].output_len <= 1 {
                self.out[r as usize].finish_s = now_s;
                continue;
            }
            self.admit_wait.push_back(r);
        }
        self.admit();
        self.start_prefill(u);
        self.dispatch_prefills();
    }

    // ---- KV transfer and admission ----

    /// Admits waiting requests, first come first served, while one fits.
    fn admit(&mut self) {
        while let Some(&r) = self.admit_wait.front() {
            let Some((u, g)) = self.place(r) else { break };
            self.admit_wait.pop_front();
            let req = self.requests[r as usize];
            let dg = self.config.decode_gpus_per_unit;
            let idx = (u * dg + g) as usize;
            let reserved = &mut self.decode[u as usize].gpus[g as usize].reserved;
            self.by_load.remove(&(self.load[idx], *reserved, u, g));
            self.load[idx] += 1;
            *reserved += req.input_len + req.output_len;
            self.by_load.insert((self.load[idx], *reserved, u, g));
            let o = &mut self.out[r as usize];
            o.decode_unit = u;
            o.decode_gpu = g;
            // The prompt's KV from the prefill GPU's NIC to the decode GPU's.
            let src = (o.prefill_unit * self.config.prefill_gpus_per_unit + o.prefill_gpu) as usize;
            let bytes = req.input_len as f64 * self.config.kv_bytes_per_token;
            let start = self.now.max(self.prefill_nic_free[src]).max(self.decode_nic_free[idx]);
            let busy = moesim_sim::SimDuration::from_secs_f64(bytes / self.config.kv_transfer_bytes_per_s.max(1.0));
            self.prefill_nic_free[src] = start + busy;
            self.decode_nic_free[idx] = start + busy;
            let done = start + busy + moesim_sim::SimDuration::from_secs_f64(self.config.kv_transfer_latency_s);
            self.running[r as usize].gpu = g;
            self.push(done, Event::TransferDone { request: r });
        }
    }

    /// The decode GPU with the fewest sequences, then the least reserved KV
    /// (what DeepSeek's decode load balancer equalises: request counts and
    /// KV-cache use per GPU, day 6), that has batch and KV room.
    fn place(&self, r: u32) -> Option<(u32, u32)> {
        let req = &self.requests[r as usize];
        let need = req.input_len + req.output_len;
        for &(load, reserved, u, g) in &self.by_load {
            if load >= self.config.max_batch_per_gpu {
                return None;
            }
            if reserved + need <= self.config.kv_capacity_tokens_per_gpu {
                return Some((u, g));
            }
        }
        None
    }

    fn transfer_done(&mut self, r: u32) {
        let u = self.out[r as usize].decode_unit;
        self.decode[u as usize].joining.push(r);
        if !self.decode[u as usize].busy {
            self.start_decode(u);
        }
    }

    // ---- decode ----

    /// Iterations request `r` needs for its remaining output tokens.
    fn iterations_needed(&self, r: u32) -> u64 {
        let m = self.requests[r as usize].output_len.saturating_sub(1);
        match self.config.mtp_acceptance {
            None => m,
            Some(p) if p >= 1.0 => m.div_ceil(2),
            Some(p) if p <= 0.0 => m,
            Some(p) => {
                // Runs of accepted drafts (2 tokens each) end with a rejected
                // one (1 token); run lengths are geometric.
                let mut rng = rng::stream(self.config.seed, "mtp-acceptance", r as u64);
                let (mut tokens, mut iters) = (0u64, 0u64);
                let ln_p = p.ln();
                loop {
                    let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
                    let run = (u.ln() / ln_p).floor() as u64;
                    if tokens + 2 * run >= m {
                        return iters + (m - tokens).div_ceil(2);
                    }
                    tokens += 2 * run + 1;
                    iters += run + 1;
                    if tokens >= m {
                        return iters;
                    }
                }
            }
        }
    }

    fn start_decode(&mut self, u: u32) {
        let joining = std::mem::take(&mut self.decode[u as usize].joining);
        let now_s = secs(self.now);
        let it = self.decode[u as usize].iteration;
        for r in joining {
            let req = self.requests[r as usize];
            let k = self.iterations_needed(r).max(1);
            let rate = (req.output_len - 1) as f64 / k as f64;
            let g = self.running[r as usize].gpu;
            self.running[r as usize] = Running { join_iteration: it, rate, gpu: g };
            self.out[r as usize].decode_join_s = now_s;
            let unit = &mut self.decode[u as usize];
            let gpu = &mut unit.gpus[g as usize];
            gpu.active += 1;
            gpu.context += req.input_len as f64;
            gpu.growth += rate;
            unit.finishing.push(Reverse((it + k, r)));
        }
        let unit = &self.decode[u as usize];
        let batch = unit.gpus.iter().map(|g| g.active).max().unwrap_or(0);
        if batch == 0 {
            self.decode[u as usize].busy = false;
            return;
        }
        let context = unit.gpus.iter().map(|g| g.context).fold(0.0, f64::max) / batch as f64;
        let t = self.times.decode_s(batch, context);
        let unit = &mut self.decode[u as usize];
        unit.busy = true;
        unit.started_at = self.now;
        unit.step_batch = batch;
        self.decode_iterations += 1;
        self.decode_busy_s += t;
        self.decode_batch_seconds +=
            t * unit.gpus.iter().map(|g| g.active).sum::<u64>() as f64 / unit.gpus.len() as f64;
        let done = self.now + moesim_sim::SimDuration::from_secs_f64(t);
        self.push(done, Event::DecodeStep { unit: u });
    }

    fn decode_step(&mut self, u: u32) {
        let now_s = secs(self.now);
        let dg = self.config.decode_gpus_per_unit;
        let unit = &mut self.decode[u as usize];
        unit.iteration += 1;
        let it = unit.iteration;
        for g in unit.gpus.iter_mut() {
            g.context += g.growth;
        }
        let mut freed = false;
        while let Some(&Reverse((fin, r))) = unit.finishing.peek() {
            if fin > it {
                break;
            }
            unit.finishing.pop();
            let run = self.running[r as usize];
            let req = self.requests[r as usize];
            let gpu = &mut unit.gpus[run.gpu as usize];
            gpu.active -= 1;
            gpu.context -= req.input_len as f64 + run.rate * (it - run.join_iteration) as f64;
            gpu.growth -= run.rate;
            if gpu.active == 0 {
                gpu.context = 0.0;
                gpu.growth = 0.0;
            }
            let idx = (u * dg + run.gpu) as usize;
            self.by_load.remove(&(self.load[idx], gpu.reserved, u, run.gpu));
            gpu.reserved -= req.input_len + req.output_len;
            self.load[idx] -= 1;
            self.by_load.insert((self.load[idx], gpu.reserved, u, run.gpu));
            self.out[r as usize].finish_s = now_s;
            freed = true;
        }
        self.decode[u as usize].busy = false;
        if freed {
            self.admit();
        }
        self.start_decode(u);
    }
}

/// Arrival times (seconds) of a Poisson process at `rate_per_s` over
/// `duration_s`, from stream (seed, "serving-arrivals", 0).
pub fn poisson_arrivals(rate_per_s: f64, duration_s: f64, seed: u64) -> Vec<f64> {
    let mut rng = rng::stream(seed, "serving-arrivals", 0);
    let mut out = Vec::new();
    if !(rate_per_s > 0.0 && duration_s > 0.0) {
        return out;
    }
    let mut t = 0.0;
    loop {
        let u: f64 = rng.gen::<f64>();
        t += -(1.0 - u).ln() / rate_per_s;
        if t > duration_s {
            return out;
        }
        out.push(t);
    }
}

/// The `q`-quantile (0..=1) of `values` by nearest rank (sorts in place).
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed iteration times: prefill `a + b x tokens`, decode `c`.
    struct Linear {
        a: f64,
        b: f64,
        c: f64,
    }
    impl IterationTimes for Linear {
        fn prefill_s(&mut self, new_tokens: u64, _keys: f64, _fill: f64) -> f64 {
            self.a + self.b * new_tokens as f64
        }
        fn decode_s(&mut self, _batch: u64, _context: f64) -> f64 {
            self.c
        }
    }

    fn config() -> ServingConfig {
        ServingConfig {
            prefill_units: 1,
            prefill_gpus_per_unit: 2,
            prefill_tokens_per_gpu: 1000,
            prefill_chunking: PrefillChunking::Tokens,
            prefill_context_parallel: 1,
            decode_units: 1,
            decode_gpus_per_unit: 2,
            max_batch_per_gpu: 4,
            kv_capacity_tokens_per_gpu: 100_000,
            kv_bytes_per_token: 1000.0,
            kv_transfer_bytes_per_s: 1e9,
            kv_transfer_latency_s: 0.0,
            mtp_acceptance: None,
            seed: 1,
        }
    }

    #[test]
    fn one_request_goes_through_prefill_transfer_and_decode_by_hand() {
        let req = Request { arrival_s: 1.0, input_len: 500, output_len: 11, cached_len: 100 };
        let mut t = Linear { a: 0.01, b: 1e-4, c: 0.02 };
        let r = simulate_serving(&config(), &[req], &mut t);
        let o = r.requests[0];
        // Prefill of 400 new tokens: 0.01 + 0.04 = 0.05 s.
        assert!((o.ttft_s() - 0.05).abs() < 1e-9, "{o:?}");
        // KV: 500 tokens x 1000 B at 1 GB/s = 0.5 ms; then 10 iterations of 20 ms.
        assert!((o.decode_join_s - 1.0505).abs() < 1e-9, "{o:?}");
        assert!((o.finish_s - (1.0505 + 0.2)).abs() < 1e-9, "{o:?}");
        assert!((o.tpot_s().unwrap() - (0.0005 + 0.2) / 10.0).abs() < 1e-9);
        assert_eq!(r.decode_iterations, 10);
    }

    #[test]
    fn prefill_batches_fill_gpus_up_to_the_token_budget_first_come_first_served() {
        // Four 600-token prompts at t=0 on 2 GPUs of 1000 tokens, 1 ms per
        // token on the busiest GPU. The first arrival starts an iteration
        // alone (the others arrive at the same instant but after it
        // started). The next batch takes the second on GPU 0 and the third
        // on GPU 1; the fourth fills GPU 0's room (400 tokens) and its last
        // 200 run in the iteration after: 0.6, then 1.0, then 0.2 s.
        let reqs: Vec<Request> =
            (0..4).map(|_| Request { arrival_s: 0.0, input_len: 600, output_len: 1, cached_len: 0 }).collect();
        let mut t = Linear { a: 0.0, b: 1e-3, c: 0.01 };
        let r = simulate_serving(&config(), &reqs, &mut t);
        let firsts: Vec<f64> = r.requests.iter().map(|o| o.first_token_s).collect();
        for (f, want) in firsts.iter().zip([0.6, 1.6, 1.6, 1.8]) {
            assert!((f - want).abs() < 1e-9, "{firsts:?}");
        }
        let gpus: Vec<u32> = r.requests.iter().map(|o| o.prefill_gpu).collect();
        assert_eq!(gpus, [0, 0, 1, 0]);
        assert!((r.requests[3].prefill_start_s - 0.6).abs() < 1e-9);
        assert_eq!(r.prefill_iterations, 3);
    }

    #[test]
    fn a_request_goes_to_the_unit_where_its_first_token_comes_soonest() {
        // Two units of one GPU; 600-token prompts; an iteration takes 1 ms
        // per 600 tokens on its busiest GPU (two prompts: 2 ms).
        let mut c = config();
        c.prefill_units = 2;
        c.prefill_gpus_per_unit = 1;
        c.prefill_tokens_per_gpu = 1200;
        let at = [0.0, 0.1e-3, 0.2e-3, 0.3e-3];
        let reqs: Vec<Request> =
            at.iter().map(|&a| Request { arrival_s: a, input_len: 600, output_len: 1, cached_len: 0 }).collect();
        let mut t = Linear { a: 0.0, b: 1e-3 / 600.0, c: 0.01 };
        let r = simulate_serving(&c, &reqs, &mut t);
        let firsts: Vec<f64> = r.requests.iter().map(|o| o.first_token_s * 1e3).collect();
        let units: Vec<u32> = r.requests.iter().map(|o| o.prefill_unit).collect();
        // 0 and 1 start at once on the idle units; 2 joins unit 0's next
        // iteration (first token at 1 + 1 ms, before unit 1's 1.1 + 1); 3
        // would make that iteration 2 ms (done at 3 ms), so it takes unit 1's
        // next instead (2.1 ms). Taking every waiting request on the first
        // unit to free would have given 3 ms to both.
        assert_eq!(units, [0, 1, 0, 1]);
        for (f, want) in firsts.iter().zip([1.0, 1.1, 2.0, 2.1]) {
            assert!((f - want).abs() < 1e-9, "{firsts:?}");
        }
    }

    #[test]
    fn a_long_prompt_does_not_hold_a_batch_of_short_ones() {
        // Three units of one GPU, 1 ms per token. At t = 0 they start
        // prompts of 1000, 1050 and 1500 tokens (free at 1.0, 1.05, 1.5 s).
        // S1 and S2 (100 tokens) take the next batches of units 0 and 1
        // (S2 would add 0.1 s to S1 on unit 0). L (2000) would see its first
        // token soonest on unit 0 (3.1 s) but would hold S1 there for 2 s;
        // unit 2's empty next batch gives it 3.5 s and delays no one.
        let mut c = config();
        c.prefill_units = 3;
        c.prefill_gpus_per_unit = 1;
        c.prefill_tokens_per_gpu = 4000;
        let at_len = [(0.0, 1000), (0.0, 1050), (0.0, 1500), (0.1, 100), (0.2, 100), (0.3, 2000)];
        let reqs: Vec<Request> =
            at_len.iter().map(|&(a, n)| Request { arrival_s: a, input_len: n, output_len: 1, cached_len: 0 }).collect();
        let r = simulate_serving(&c, &reqs, &mut Linear { a: 0.0, b: 1e-3, c: 0.01 });
        let units: Vec<u32> = r.requests.iter().map(|o| o.prefill_unit).collect();
        assert_eq!(units, [0, 1, 2, 0, 1, 2]);
        for (o, want) in r.requests[3..].iter().zip([1.1, 1.15, 3.5]) {
            assert!((o.first_token_s - want).abs() < 1e-9, "{o:?}");
        }
    }

    #[test]
    fn a_prompt_longer_than_the_budget_runs_in_chunks_beside_other_requests() {
        // One unit of two GPUs, 1000 new tokens per GPU per iteration, 1 ms
        // per token on the busiest GPU. A (2500 tokens) runs 1000 + 1000 +
        // 500 on GPU 0; B (600) arrives during A's first chunk and shares
        // the second iteration on GPU 1.
        let reqs = [
            Request { arrival_s: 0.0, input_len: 2500, output_len: 1, cached_len: 0 },
            Request { arrival_s: 0.1, input_len: 600, output_len: 1, cached_len: 0 },
        ];
        let mut t = Linear { a: 0.0, b: 1e-3, c: 0.01 };
        let r = simulate_serving(&config(), &reqs, &mut t);
        let (a, b) = (r.requests[0], r.requests[1]);
        assert_eq!((a.prefill_gpu, b.prefill_gpu), (0, 1));
        assert!((b.first_token_s - 2.0).abs() < 1e-9, "{b:?}");
        assert!((a.first_token_s - 2.5).abs() < 1e-9, "{a:?}");
        assert!(a.prefill_start_s == 0.0 && (b.prefill_start_s - 1.0).abs() < 1e-9);
        assert_eq!(r.prefill_iterations, 3);
    }

    /// Attention-bound prefill: a GPU's time is 1 us per (token, key).
    struct Attention;
    impl IterationTimes for Attention {
        fn prefill_s(&mut self, new_tokens: u64, keys: f64, _fill: f64) -> f64 {
            1e-6 * new_tokens as f64 * keys
        }
        fn decode_s(&mut self, _batch: u64, _context: f64) -> f64 {
            0.01
        }
    }

    #[test]
    fn time_bounded_chunking_cuts_deep_chunks_and_balances_gpus_by_time() {
        // Two GPUs of 1000 tokens; A (3000 new tokens) from t = 0, B (600)
        // at 0.1 s, C (300) at 0.2 s. The GPU budget is 1000 fresh tokens:
        // 1000 x 500.5 keys = 0.5005 s.
        let reqs = [
            Request { arrival_s: 0.0, input_len: 3000, output_len: 1, cached_len: 0 },
            Request { arrival_s: 0.1, input_len: 600, output_len: 1, cached_len: 0 },
            Request { arrival_s: 0.2, input_len: 300, output_len: 1, cached_len: 0 },
        ];
        let first_chunk = 1000.0 * 500.5e-6;
        // By tokens: A's second chunk is 1000 tokens after 1000 (1500.5 keys
        // each, 1.5005 s); B and C share GPU 1 beside it and wait for it.
        let r = simulate_serving(&config(), &reqs, &mut Attention);
        let (b, c) = (r.requests[1], r.requests[2]);
        assert!((b.first_token_s - (first_chunk + 1.5005)).abs() < 1e-9, "{b:?}");
        assert!((c.first_token_s - b.first_token_s).abs() < 1e-12, "{c:?}");
        // By time: the second chunk is the longest L with
        // L x (1000 + (L + 1) / 2) us <= 0.5005 s, L = 414 (0.4999 s), so B
        // (0.18 s on GPU 1) is out at 0.5005 + 0.4999 s.
        let mut cfg = config();
        cfg.prefill_chunking = PrefillChunking::Time;
        // L^2 / 2 + 1000.5 L <= 500,500: L = floor(sqrt(1000.5^2 + 1,001,000) - 1000.5).
        let l = ((1000.5f64.powi(2) + 1_001_000.0).sqrt() - 1000.5).floor();
        assert_eq!(l, 414.0);
        let r = simulate_serving(&cfg, &reqs, &mut Attention);
        let (a, b, c) = (r.requests[0], r.requests[1], r.requests[2]);
        assert!((b.first_token_s - (first_chunk + l * (1000.0 + (l + 1.0) / 2.0) * 1e-6)).abs() < 1e-9, "{b:?}");
        // C goes by time, not by tokens: GPU 0 has fewer tokens (414 < 600)
        // but no time left, so C joins B on GPU 1 (900 tokens, 0.23 s).
        assert_eq!((a.prefill_gpu, b.prefill_gpu, c.prefill_gpu), (0, 1, 1));
        assert!((c.first_token_s - b.first_token_s).abs() < 1e-12, "{c:?}");
        // A itself needs more, shorter iterations: 1000 + 414 + 318 + ...
        assert!(r.prefill_iterations >= 5, "{}", r.prefill_iterations);
        assert!(a.first_token_s > b.first_token_s);
    }

    #[test]
    fn context_parallelism_spreads_a_long_prompt_over_empty_gpus() {
        let mut c = config();
        c.prefill_gpus_per_unit = 4;
        // 3000 new tokens, attention-bound (1 us per token-key): on one GPU
        // three chunks of 1000 tokens attending to 500.5, 1500.5 and 2500.5
        // keys each (4.5015 s); spread over 4 GPUs, one iteration with a
        // quarter of the 4,501,500 token-keys on each (1.125375 s).
        let a = [Request { arrival_s: 0.0, input_len: 3000, output_len: 1, cached_len: 0 }];
        let alone = simulate_serving(&c, &a, &mut Attention);
        assert!((alone.requests[0].first_token_s - 4.5015).abs() < 1e-9, "{:?}", alone.requests[0]);
        c.prefill_context_parallel = 4;
        let spread = simulate_serving(&c, &a, &mut Attention);
        assert!((spread.requests[0].first_token_s - 1.125375).abs() < 1e-9, "{:?}", spread.requests[0]);
        assert_eq!((spread.prefill_iterations, spread.requests[0].prefill_gpu), (1, 0));
        // 5000 tokens on at most 2 GPUs, 1 ms per token on the busiest GPU:
        // pieces of 2000, 2000 and 1000 tokens over the same two GPUs
        // (1 + 1 + 0.5 s); a 600-token request arriving meanwhile takes one
        // of the other GPUs in the second iteration.
        c.prefill_context_parallel = 2;
        let reqs = [
            Request { arrival_s: 0.0, input_len: 5000, output_len: 1, cached_len: 0 },
            Request { arrival_s: 0.5, input_len: 600, output_len: 1, cached_len: 0 },
        ];
        let r = simulate_serving(&c, &reqs, &mut Linear { a: 0.0, b: 1e-3, c: 0.01 });
        let (a, b) = (r.requests[0], r.requests[1]);
        assert!((a.first_token_s - 2.5).abs() < 1e-9, "{a:?}");
        assert!((b.first_token_s - 2.0).abs() < 1e-9 && b.prefill_gpu >= 2, "{b:?}");
        assert_eq!(r.prefill_iterations, 3);
    }

    #[test]
    fn a_batch_is_timed_with_the_units_mean_tokens_as_its_expert_fill() {
        // Records the fill of every prefill time asked for.
        struct Fills(Vec<f64>);
        impl IterationTimes for Fills {
            fn prefill_s(&mut self, _tokens: u64, _keys: f64, fill: f64) -> f64 {
                self.0.push(fill);
                1e-3
            }
            fn decode_s(&mut self, _batch: u64, _context: f64) -> f64 {
                0.01
            }
        }
        // One 600-token prompt on a unit of two GPUs: mean 300, fill 0.5.
        let reqs = [Request { arrival_s: 0.0, input_len: 600, output_len: 1, cached_len: 0 }];
        let mut t = Fills(Vec::new());
        simulate_serving(&config(), &reqs, &mut t);
        assert_eq!(t.0.last(), Some(&0.5), "{:?}", t.0);
        // Three at once: the first starts alone, the next two share the
        // following iteration, one per GPU: the unit is full.
        let three = [reqs[0]; 3];
        let mut t = Fills(Vec::new());
        simulate_serving(&config(), &three, &mut t);
        assert!(t.0.contains(&1.0), "{:?}", t.0);
    }

    #[test]
    fn decode_batch_is_bounded_by_kv_capacity() {
        // Each request needs 600 KV tokens; a GPU holds 1000: one at a time per GPU.
        let mut c = config();
        c.kv_capacity_tokens_per_gpu = 1000;
        let reqs: Vec<Request> = (0..4)
            .map(|i| Request { arrival_s: i as f64 * 1e-3, input_len: 500, output_len: 101, cached_len: 0 })
            .collect();
        let mut t = Linear { a: 0.0, b: 0.0, c: 0.01 };
        let r = simulate_serving(&c, &reqs, &mut t);
        // Two GPUs: requests 2 and 3 wait for 0 and 1 to finish (100 iterations).
        let mut joins: Vec<f64> = r.requests.iter().map(|o| o.decode_join_s).collect();
        joins.sort_by(f64::total_cmp);
        assert!(joins[2] >= joins[0] + 1.0 - 1e-9, "{joins:?}");
        assert!(unservable(&c, &[Request { arrival_s: 0.0, input_len: 900, output_len: 200, cached_len: 0 }], 1 << 20)
            .first()
            .is_some_and(|u| u.message.contains("KV cache")));
    }

    #[test]
    fn decode_admission_balances_sequences_then_kv() {
        // Two decode GPUs. A (900-token prompt) goes to GPU 0, B (100) to
        // the empty GPU 1; C finds one sequence on each and goes where less
        // KV is reserved: GPU 1 (150 tokens against 950).
        let reqs: Vec<Request> = [(0.0, 900), (1e-3, 100), (2e-3, 100)]
            .iter()
            .map(|&(a, n)| Request { arrival_s: a, input_len: n, output_len: 50, cached_len: 0 })
            .collect();
        let r = simulate_serving(&config(), &reqs, &mut Linear { a: 0.0, b: 1e-4, c: 0.01 });
        let gpus: Vec<u32> = r.requests.iter().map(|o| o.decode_gpu).collect();
        assert_eq!(gpus, [0, 1, 1]);
    }

    #[test]
    fn mtp_iterations_average_one_plus_acceptance_tokens() {
        let mut c = config();
        c.mtp_acceptance = Some(0.85);
        c.max_batch_per_gpu = 1000;
        c.kv_capacity_tokens_per_gpu = 1 << 20;
        let reqs: Vec<Request> =
            (0..200).map(|_| Request { arrival_s: 0.0, input_len: 10, output_len: 1001, cached_len: 0 }).collect();
        let mut t = Linear { a: 0.0, b: 0.0, c: 0.01 };
        let r = simulate_serving(&c, &reqs, &mut t);
        let mean_tpot: f64 = r.requests.iter().map(|o| o.tpot_s().unwrap()).sum::<f64>() / 200.0;
        // 1000 tokens at 1.85 per 10 ms iteration: 5.4 ms per token.
        assert!((mean_tpot / (0.01 / 1.85) - 1.0).abs() < 0.02, "{mean_tpot}");
    }

    /// Prefill time a + b x token-keys on the busiest GPU.
    struct Quadratic;
    impl IterationTimes for Quadratic {
        fn prefill_s(&mut self, new_tokens: u64, keys: f64, fill: f64) -> f64 {
            1e-3 * fill + 1e-4 * new_tokens as f64 + 1e-7 * new_tokens as f64 * keys
        }
        fn decode_s(&mut self, batch: u64, context: f64) -> f64 {
            0.005 + 1e-5 * batch as f64 * (1.0 + context / 1000.0)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Whatever the mix and the scheduler's options, every request
        /// goes through in order: arrival <= prefill start < first token
        /// <= decode join <= finish.
        #[test]
        fn every_request_is_served_in_order(
            lens in proptest::collection::vec((0.0f64..2.0, 1u64..6000, 0.0f64..0.9, 1u64..40), 1..40),
            units in 1u32..4,
            gpus in 1u32..5,
            budget in 200u64..3000,
            by_time in proptest::bool::ANY,
            cp in 1u32..5,
        ) {
            let mut c = config();
            c.prefill_units = units;
            c.prefill_gpus_per_unit = gpus;
            c.prefill_tokens_per_gpu = budget;
            c.prefill_chunking = if by_time { PrefillChunking::Time } else { PrefillChunking::Tokens };
            c.prefill_context_parallel = cp.min(gpus);
            c.max_batch_per_gpu = 8;
            let mut reqs: Vec<Request> = lens
                .iter()
                .map(|&(a, n, hit, o)| Request {
                    arrival_s: a,
                    input_len: n,
                    output_len: o,
                    cached_len: ((n as f64 * hit) as u64).min(n - 1),
                })
                .collect();
            reqs.sort_by(|x, y| x.arrival_s.total_cmp(&y.arrival_s));
            let r = simulate_serving(&c, &reqs, &mut Quadratic);
            for o in &r.requests {
                // Times are whole nanoseconds.
                proptest::prop_assert!(o.prefill_start_s >= o.arrival_s - 1e-9, "{o:?}");
                proptest::prop_assert!(o.first_token_s > o.prefill_start_s, "{o:?}");
                proptest::prop_assert!(o.prefill_unit < units && o.prefill_gpu < gpus, "{o:?}");
                if o.output_len > 1 {
                    proptest::prop_assert!(o.decode_join_s >= o.first_token_s && o.finish_s > o.decode_join_s, "{o:?}");
                } else {
                    proptest::prop_assert_eq!(o.finish_s, o.first_token_s);
                }
            }
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
    }
}
