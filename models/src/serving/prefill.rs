//! Prefill: the units, the batch each fills for its next iteration and the
//! chunks in it; where the global scheduler sends a request (the unit and
//! GPU where it costs least); chunked prefill by tokens or by time
//! ([`PrefillChunking`](super::PrefillChunking)); context parallelism; and
//! the timing of an iteration (its slowest GPU, with the unit's mean tokens
//! as the expert fill). A request whose last chunk is done gets its first
//! token and is handed to decode admission.

use moesim_sim::SimTime;

use super::server::{secs, Event, Server};
use super::IterationTimes;

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
    /// The GPU with the fewest tokens (the lowest of equals), once asked
    /// for; `None` again when `tokens` changes.
    least_tokens: Option<usize>,
    /// The last placement worked out in it for a request ((prompt, cache
    /// hit) of the request, [`Server::candidate`]), exact while the batch
    /// is unchanged: a run of like requests tries each unit's batch once per
    /// change, not once per request. `None` again when the batch changes.
    candidate: Option<((u64, u64), Option<Candidate>)>,
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
            least_tokens: None,
            candidate: None,
        }
    }

    /// The GPU with the fewest tokens, the lowest of equals.
    fn least_tokens_gpu(&mut self) -> usize {
        if let Some(g) = self.least_tokens {
            return g;
        }
        let tokens = &self.tokens;
        let g = (0..tokens.len()).min_by_key(|&g| (tokens[g], g)).expect("one GPU");
        self.least_tokens = Some(g);
        g
    }
}

/// One prefill unit.
#[derive(Debug, Clone, Default)]
pub(super) struct PrefillUnit {
    /// When its running iteration ends; `None` while idle.
    busy_until: Option<SimTime>,
    /// `busy_until` in seconds (what the scheduler compares, once per
    /// unit and request).
    busy_until_s: Option<f64>,
    running: Vec<Chunk>,
    /// The batch of its next iteration, filled as requests are sent to it.
    next: PrefillBatch,
}

impl PrefillUnit {
    /// An idle unit of `gpus` GPUs with an empty next batch.
    pub(super) fn new(gpus: usize) -> PrefillUnit {
        PrefillUnit { next: PrefillBatch::new(gpus), ..Default::default() }
    }
}

#[cfg(test)]
thread_local! {
    /// Whether batches keep their candidate placement (tests turn it off to
    /// check that keeping it changes nothing).
    static KEEP_CANDIDATES: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether a batch's kept candidate placement is used (always, but in the
/// test that compares runs without it).
fn candidates_kept() -> bool {
    #[cfg(test)]
    return KEEP_CANDIDATES.with(|k| k.get());
    #[cfg(not(test))]
    true
}

/// Where a request's first piece would go in one unit's next batch, and
/// what it would take there.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    /// The GPUs of the piece, the lead first (empty: `gpu` alone).
    spread: Vec<usize>,
    gpu: usize,
    piece: u64,
    /// The piece's GPUs' time with it, estimated.
    gpu_s: f64,
    /// What the rest of the prompt takes after the piece, estimated.
    rest_s: f64,
}

/// Where a request's first piece would go, and what it would cost.
struct Placement {
    /// Its first token from now, plus the delay it adds to the first
    /// tokens of the requests already in the batch, seconds (estimated).
    cost: f64,
    unit: usize,
    /// The GPUs of the piece, the lead first (empty: `gpu` alone).
    spread: Vec<usize>,
    gpu: usize,
    piece: u64,
    /// The batch's time and the piece's GPUs' time with it, estimated.
    time_s: f64,
    gpu_s: f64,
}

impl Server<'_> {
    /// Sends waiting requests, in order, to the units where they cost least
    /// (see [`Server::assign_prefill`]), starting idle units; stops at the
    /// first request no unit has room for.
    pub(super) fn dispatch_prefills(&mut self) {
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
        let req = self.live.req(r);
        req.input_len.saturating_sub(req.cached_len).max(1)
    }

    /// Keys the new tokens `offset..offset + len` of request `r` attend to,
    /// summed: everything before them (the cached prefix and the earlier
    /// chunks) plus, on average, half of the chunk (causal).
    fn chunk_work(&self, r: u32, offset: u64, len: u64) -> f64 {
        let req = self.live.req(r);
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
        let q = self.new_tokens(r);
        let gpus = self.config.prefill_gpus_per_unit.max(1) as f64;
        let fill = |total: u64, gpu: u64| (total as f64 / gpus / gpu.max(1) as f64).clamp(f64::MIN_POSITIVE, 1.0);
        // Its first budget's worth alone on a GPU: about the least time to
        // its first token anywhere (a split start only adds iterations).
        let budget = self.config.prefill_tokens_per_gpu.max(1);
        let c = q.min(budget);
        let alone_s = self.times.prefill_s(c, self.chunk_work(r, 0, c) / c as f64, fill(c, c));
        let cp = self.config.prefill_context_parallel.max(1) as usize;
        let req = self.live.req(r);
        let key = (req.input_len, req.cached_len);
        let mut best: Option<Placement> = None;
        let now_s = secs(self.now);
        for u in 0..self.prefill.len() {
            let start_s = self.prefill[u].busy_until_s.unwrap_or(now_s);
            let next = &self.prefill[u].next;
            let wait_s = start_s - now_s;
            let (waiting, batch_s) = (next.requests as f64, next.time_s);
            if best.as_ref().is_some_and(|b| wait_s + batch_s.max(alone_s / cp as f64) >= b.cost) {
                continue;
            }
            let candidate = match &next.candidate {
                Some((k, c)) if *k == key && candidates_kept() => c.clone(),
                _ => {
                    let c = self.candidate(u, r, alone_s);
                    self.prefill[u].next.candidate = Some((key, c.clone()));
                    c
                }
            };
            let Some(Candidate { spread, gpu, piece, gpu_s, rest_s }) = candidate else { continue };
            let time_s = batch_s.max(gpu_s);
            let cost = wait_s + time_s + rest_s + waiting * (time_s - batch_s);
            if best.as_ref().is_none_or(|b| cost < b.cost) {
                best = Some(Placement { cost, unit: u, spread, gpu, piece, time_s, gpu_s });
            }
        }
        let b = best?;
        let gpus = if b.spread.is_empty() { std::slice::from_ref(&b.gpu) } else { &b.spread[..] };
        self.push_piece(b.unit, r, 0, gpus, b.piece);
        let next = &mut self.prefill[b.unit].next;
        for &g in gpus {
            next.gpu_s[g] = b.gpu_s;
        }
        next.time_s = b.time_s;
        Some(b.unit)
    }

    /// Where request `r`'s first piece would go in unit `u`'s next batch
    /// (its least loaded GPU, or empty GPUs with context parallelism) and
    /// what it would take; `None` when the batch has no room for it.
    /// `alone_s`: its first budget's worth alone on a GPU. What it reads of
    /// the request is its prompt and cache hit only, so the answer holds for
    /// every request with the same two until the batch changes (the batch's
    /// `candidate`).
    fn candidate(&mut self, u: usize, r: u32, alone_s: f64) -> Option<Candidate> {
        let q = self.new_tokens(r);
        let gpus = self.config.prefill_gpus_per_unit.max(1) as f64;
        let fill = |total: u64, gpu: u64| (total as f64 / gpus / gpu.max(1) as f64).clamp(f64::MIN_POSITIVE, 1.0);
        let budget = self.config.prefill_tokens_per_gpu.max(1);
        let c = q.min(budget);
        let cp = self.config.prefill_context_parallel.max(1) as usize;
        let g = if self.prefill_gpu_budget_s.is_finite() {
            let next = &self.prefill[u].next;
            (0..next.gpu_s.len()).min_by(|&a, &b| next.gpu_s[a].total_cmp(&next.gpu_s[b]).then(a.cmp(&b)))
        } else {
            Some(self.prefill[u].next.least_tokens_gpu())
        }
        .expect("one GPU");
        let next = &self.prefill[u].next;
        let (tokens, work, total) = (next.tokens[g], next.work[g], next.total);
        let empty: Vec<usize> = if q > budget && cp > 1 {
            (0..next.tokens.len()).filter(|&g| next.tokens[g] == 0).take(cp).collect()
        } else {
            Vec::new()
        };
        let m = empty.len();
        // The piece's GPUs, its tokens, their time in this batch and the
        // time the rest of the prompt will take after it.
        if m >= 2 {
            // A long prompt spread over m empty GPUs.
            let piece = self.cp_piece(r, 0, m);
            let slice = piece.div_ceil(m as u64);
            let w = self.chunk_work(r, 0, piece) / m as f64;
            let gpu_s = self.times.prefill_s(slice, w / slice as f64, fill(total + piece, slice));
            let rest_s = if piece < q { self.rest_s(r, piece) / m as f64 } else { 0.0 };
            Some(Candidate { spread: empty, gpu: g, piece, gpu_s, rest_s })
        } else {
            let len = self.fit_len(r, 0, tokens, work);
            if len == 0 {
                return None;
            }
            // An estimate for the choice (the other GPUs' times are not
            // refreshed for the new fill); the batch is timed exactly when
            // it starts.
            let t = tokens + len;
            let gpu_s = if tokens == 0 && len == c {
                alone_s
            } else {
                self.times.prefill_s(t, (work + self.chunk_work(r, 0, len)) / t as f64, fill(total + len, t))
            };
            let rest_s = if len < q { self.rest_s(r, len) } else { 0.0 };
            Some(Candidate { spread: Vec::new(), gpu: g, piece: len, gpu_s, rest_s })
        }
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
        next.least_tokens = None;
        next.candidate = None;
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
                let o = self.live.out_mut(c.request);
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
        next.candidate = None;
        self.prefill[unit].next = next;
        let done = self.now + moesim_sim::SimDuration::from_secs_f64(batch.time_s);
        self.prefill[unit].busy_until = Some(done);
        self.prefill[unit].busy_until_s = Some(secs(done));
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

    /// The unit's iteration ended: requests whose last chunk ran get their
    /// first token (and finish, or wait for decode admission); the unit
    /// starts its next batch and takes waiting requests.
    pub(super) fn prefill_done(&mut self, unit: u32) {
        let u = unit as usize;
        self.prefill[u].busy_until = None;
        self.prefill[u].busy_until_s = None;
        let batch = std::mem::take(&mut self.prefill[u].running);
        let now_s = secs(self.now);
        for c in batch.iter().filter(|c| c.lead) {
            let r = c.request;
            if c.offset + c.piece < self.new_tokens(r) {
                continue;
            }
            self.live.out_mut(r).first_token_s = now_s;
            if self.live.req(r).output_len <= 1 {
                self.live.finish(r, now_s);
                continue;
            }
            self.admit_wait.push_back(r);
        }
        self.admit();
        self.start_prefill(u);
        self.dispatch_prefills();
    }
}

#[cfg(test)]
mod tests {
    use crate::serving::testing::{config, Linear};
    use crate::serving::{simulate_serving, IterationTimes, PrefillChunking, Request};

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
        assert_eq!(r.totals.prefill_iterations, 3);
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
        assert_eq!(r.totals.prefill_iterations, 3);
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
        assert!(r.totals.prefill_iterations >= 5, "{}", r.totals.prefill_iterations);
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
        assert_eq!((spread.totals.prefill_iterations, spread.requests[0].prefill_gpu), (1, 0));
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
        assert_eq!(r.totals.prefill_iterations, 3);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A batch's kept candidate placement is exact: runs of requests
        /// with repeated (prompt, cache hit) pairs, by tokens or time, with
        /// or without context parallelism, come out the same with every
        /// placement worked out afresh.
        #[test]
        fn kept_candidate_placements_change_nothing(
            shapes in proptest::collection::vec((0usize..3, 0usize..3), 1..5),
            picks in proptest::collection::vec((0usize..4, 0.0f64..0.05), 1..120),
            units in 1u32..4,
            by_time in proptest::bool::ANY,
            cp in 1u32..3,
        ) {
            let mut c = config();
            c.prefill_units = units;
            c.prefill_tokens_per_gpu = 1500;
            c.prefill_chunking = if by_time { PrefillChunking::Time } else { PrefillChunking::Tokens };
            c.prefill_context_parallel = cp;
            let mut at = 0.0;
            let reqs: Vec<Request> = picks
                .iter()
                .map(|&(k, gap)| {
                    // Prompts that share a length with another cache hit.
                    let (i, j) = shapes[k % shapes.len()];
                    let (n, hit) = ([600u64, 1400, 3100][i], [0.0, 0.25, 0.5][j]);
                    at += gap;
                    Request { arrival_s: at, input_len: n, output_len: 3, cached_len: ((n as f64 * hit) as u64).min(n - 1) }
                })
                .collect();
            let kept = simulate_serving(&c, &reqs, &mut Attention);
            super::KEEP_CANDIDATES.with(|k| k.set(false));
            let fresh = simulate_serving(&c, &reqs, &mut Attention);
            super::KEEP_CANDIDATES.with(|k| k.set(true));
            proptest::prop_assert_eq!(kept, fresh);
        }
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
}
