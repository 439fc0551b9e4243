//! Decode: the units and their GPUs, admission (the GPU with the fewest
//! sequences, then the least reserved KV, that has batch and KV room; first
//! come first served), continuous batching in lockstep across a unit's
//! GPUs, and MTP (each iteration one token plus an accepted draft, drawn
//! per request from its own stream). Admission starts the request's KV
//! transfer ([`Server::send_kv`]); the request joins at the next iteration
//! after it arrived.

use std::collections::{BTreeMap, VecDeque};

use moesim_sim::SimTime;
use rand::Rng;
use rand_distr::{Binomial, Distribution};

use super::server::{secs, Event, Server};

impl Running {
    /// A request not yet decoding whose output takes `iterations`.
    pub(super) fn new(iterations: u64) -> Running {
        Running { iterations, ..Running::default() }
    }
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
pub(super) struct DecodeUnit {
    gpus: Vec<DecodeGpu>,
    iteration: u64,
    pub(super) busy: bool,
    /// Requests whose KV has arrived, joining at the next iteration start.
    pub(super) joining: Vec<u32>,
    /// Running requests by the iteration their last token comes out.
    finishing: Finishing,
    started_at: SimTime,
    step_batch: u64,
}

impl DecodeUnit {
    /// An idle unit of `gpus` empty GPUs.
    pub(super) fn new(gpus: usize) -> DecodeUnit {
        DecodeUnit { gpus: vec![DecodeGpu::default(); gpus], ..Default::default() }
    }
}

/// Every decode GPU's (sequences incl. admitted, reserved KV tokens,
/// index = unit x GPUs per unit + GPU), for admission: a tournament tree
/// whose nodes hold the least key below them (in that lexicographic order,
/// which is (sequences, reserved, unit, GPU) order; packed in a `u128`:
/// sequences, at most the run's requests, fit 32 bits) and the least
/// reserved KV below them.
#[derive(Debug, Clone)]
pub(super) struct LoadTree {
    /// Leaves: a power of two, at least the GPUs (the rest hold `EMPTY`).
    leaves: usize,
    key: Vec<u128>,
    least_reserved: Vec<u64>,
}

impl LoadTree {
    const EMPTY: u128 = u128::MAX;

    fn pack(load: u64, reserved: u64, i: usize) -> u128 {
        debug_assert!(load <= u64::from(u32::MAX));
        (u128::from(load) << 96) | (u128::from(reserved) << 32) | i as u128
    }

    /// (sequences, reserved, index) of a packed key.
    fn unpack(k: u128) -> (u64, u64, u32) {
        ((k >> 96) as u64, (k >> 32) as u64, k as u32)
    }

    /// `gpus` GPUs, each with no sequence and no KV reserved.
    pub(super) fn new(gpus: usize) -> LoadTree {
        let leaves = gpus.max(1).next_power_of_two();
        let mut t = LoadTree { leaves, key: vec![Self::EMPTY; 2 * leaves], least_reserved: vec![u64::MAX; 2 * leaves] };
        for i in 0..gpus {
            t.key[leaves + i] = Self::pack(0, 0, i);
            t.least_reserved[leaves + i] = 0;
        }
        for n in (1..leaves).rev() {
            t.key[n] = t.key[2 * n].min(t.key[2 * n + 1]);
            t.least_reserved[n] = t.least_reserved[2 * n].min(t.least_reserved[2 * n + 1]);
        }
        t
    }

    /// GPU `i` now holds `load` sequences and `reserved` KV tokens.
    pub(super) fn set(&mut self, i: usize, load: u64, reserved: u64) {
        let mut n = self.leaves + i;
        self.key[n] = Self::pack(load, reserved, i);
        self.least_reserved[n] = reserved;
        while n > 1 {
            n /= 2;
            let key = self.key[2 * n].min(self.key[2 * n + 1]);
            let least = self.least_reserved[2 * n].min(self.least_reserved[2 * n + 1]);
            // Nodes above depend only on this one's values.
            if key == self.key[n] && least == self.least_reserved[n] {
                break;
            }
            self.key[n] = key;
            self.least_reserved[n] = least;
        }
    }

    /// The least key whose reserved KV is at most `most`, as (sequences,
    /// reserved, index) (branch and bound: subtrees with no such GPU, or no
    /// key below the best found, are skipped; the least key overall answers
    /// at once when it fits).
    fn first_with_reserved_at_most(&self, most: u64) -> Option<(u64, u64, u32)> {
        let best = if Self::unpack(self.key[1]).1 <= most {
            Some(self.key[1])
        } else {
            let mut best: Option<u128> = None;
            let mut stack = vec![1usize];
            while let Some(n) = stack.pop() {
                if self.least_reserved[n] > most || best.is_some_and(|b| self.key[n] >= b) {
                    continue;
                }
                if n >= self.leaves {
                    best = Some(self.key[n]);
                    continue;
                }
                // The child with the lesser key last, so it is searched first.
                let (a, b) = (2 * n, 2 * n + 1);
                if self.key[a] <= self.key[b] {
                    stack.extend([b, a]);
                } else {
                    stack.extend([a, b]);
                }
            }
            best
        };
        best.filter(|&k| k != Self::EMPTY).map(Self::unpack)
    }
}

/// A request decoding on a unit: what its leaving needs (kept here, not
/// looked up in the window, where it has long gone cold).
#[derive(Debug, Clone, Copy)]
struct Decoding {
    request: u32,
    gpu: u32,
    join_iteration: u64,
    /// Tokens added per iteration on average (output tokens / iterations).
    rate: f64,
    input_len: u64,
    output_len: u64,
}

/// A decode unit's running requests by the iteration their last token
/// comes out: a ring of buckets for the next [`FINISH_RING`] iterations
/// (bucket `i` finishing at the unit's iteration + 1 + `i`), later ones in
/// an ordered map. The requests of an iteration come out in request order,
/// as (iteration, request) pairs out of one priority queue would.
#[derive(Debug, Clone, Default)]
struct Finishing {
    /// The unit's iteration (the last one ended).
    now: u64,
    ring: VecDeque<Vec<Decoding>>,
    far: BTreeMap<(u64, u32), Decoding>,
}

/// Iterations ahead [`Finishing`] keeps in buckets.
const FINISH_RING: u64 = 4096;

impl Finishing {
    /// `d` finishes at iteration `fin`, later than the unit's now.
    fn push(&mut self, fin: u64, d: Decoding) {
        debug_assert!(fin > self.now);
        let i = fin - self.now - 1;
        if i >= FINISH_RING {
            self.far.insert((fin, d.request), d);
            return;
        }
        let i = i as usize;
        if self.ring.len() <= i {
            self.ring.resize_with(i + 1, Vec::new);
        }
        self.ring[i].push(d);
    }

    /// The requests finishing at iteration `it`, the unit's iteration just
    /// ended (the one after the last `take`; every request left finishes
    /// later), in request order; hand the list back with
    /// [`Finishing::give_back`].
    fn take(&mut self, it: u64) -> Vec<Decoding> {
        debug_assert_eq!(it, self.now + 1);
        self.now = it;
        let mut done = self.ring.pop_front().unwrap_or_default();
        while let Some(e) = self.far.first_entry() {
            if e.key().0 > it {
                break;
            }
            done.push(e.remove());
        }
        done.sort_unstable_by_key(|d| d.request);
        done
    }

    /// The list [`Finishing::take`] gave, emptied and kept for a later
    /// iteration's bucket.
    fn give_back(&mut self, mut done: Vec<Decoding>) {
        done.clear();
        if !self.ring.is_empty() {
            self.ring.push_back(done);
        }
    }
}

/// Per request, its decode progress.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Running {
    /// Iterations its output tokens after the first take ([`super::arrival`]).
    pub(super) iterations: u64,
    /// The decode GPU it was admitted to.
    gpu: u32,
}

impl Server<'_> {
    /// Admits waiting requests, first come first served, while one fits.
    pub(super) fn admit(&mut self) {
        while let Some(&r) = self.admit_wait.front() {
            let Some((u, g)) = self.place(r) else { break };
            self.admit_wait.pop_front();
            let req = *self.live.req(r);
            let dg = self.config.decode_gpus_per_unit;
            let idx = (u * dg + g) as usize;
            let reserved = &mut self.decode[u as usize].gpus[g as usize].reserved;
            self.load[idx] += 1;
            *reserved += req.input_len + req.output_len;
            self.by_load.set(idx, self.load[idx], *reserved);
            let l = self.live.get_mut(r);
            l.out.decode_unit = u;
            l.out.decode_gpu = g;
            l.running.gpu = g;
            // The prompt's KV from the prefill GPU's NIC to the decode GPU's.
            self.send_kv(r, u, g);
        }
    }

    /// The decode GPU with the fewest sequences, then the least reserved KV
    /// (what DeepSeek's decode load balancer equalises: request counts and
    /// KV-cache use per GPU, day 6), that has batch and KV room.
    fn place(&self, r: u32) -> Option<(u32, u32)> {
        let req = self.live.req(r);
        let need = req.input_len + req.output_len;
        // In (sequences, reserved, unit, GPU) order, the first GPU with KV
        // room, unless a GPU without batch room comes first: as all those
        // come after all with batch room, the first with KV room, if it has
        // batch room.
        let most = self.config.kv_capacity_tokens_per_gpu.checked_sub(need)?;
        let (load, _, idx) = self.by_load.first_with_reserved_at_most(most)?;
        let dg = self.config.decode_gpus_per_unit.max(1);
        (load < self.config.max_batch_per_gpu).then_some((idx / dg, idx % dg))
    }

    /// Starts the unit's next iteration now, after its joining requests
    /// join (idle if it has no sequence left).
    pub(super) fn start_decode(&mut self, u: u32) {
        let joining = std::mem::take(&mut self.decode[u as usize].joining);
        let now_s = secs(self.now);
        let it = self.decode[u as usize].iteration;
        for r in joining {
            let l = self.live.get_mut(r);
            let req = l.req;
            let k = l.running.iterations.max(1);
            let rate = (req.output_len - 1) as f64 / k as f64;
            l.out.decode_join_s = now_s;
            let g = l.running.gpu;
            let unit = &mut self.decode[u as usize];
            let gpu = &mut unit.gpus[g as usize];
            gpu.active += 1;
            gpu.context += req.input_len as f64;
            gpu.growth += rate;
            let d = Decoding {
                request: r,
                gpu: g,
                join_iteration: it,
                rate,
                input_len: req.input_len,
                output_len: req.output_len,
            };
            unit.finishing.push(it + k, d);
        }
        let unit = &self.decode[u as usize];
        // One pass: the most sequences, the most context and all sequences.
        let (batch, most_context, sequences) =
            unit.gpus.iter().fold((0, 0.0, 0), |(b, c, n), g| (b.max(g.active), f64::max(c, g.context), n + g.active));
        if batch == 0 {
            self.decode[u as usize].busy = false;
            return;
        }
        let context = most_context / batch as f64;
        let t = self.times.decode_s(batch, context);
        let unit = &mut self.decode[u as usize];
        unit.busy = true;
        unit.started_at = self.now;
        unit.step_batch = batch;
        self.decode_iterations += 1;
        self.decode_busy_s += t;
        self.decode_batch_seconds += t * sequences as f64 / unit.gpus.len() as f64;
        let done = self.now + moesim_sim::SimDuration::from_secs_f64(t);
        self.push(done, Event::DecodeStep { unit: u });
    }

    /// The unit's iteration ended: its sequences grow, those with their last
    /// token out leave (freeing their KV for waiting admissions), and the
    /// next iteration starts.
    pub(super) fn decode_step(&mut self, u: u32) {
        let now_s = secs(self.now);
        let dg = self.config.decode_gpus_per_unit;
        let unit = &mut self.decode[u as usize];
        unit.iteration += 1;
        let it = unit.iteration;
        for g in unit.gpus.iter_mut() {
            g.context += g.growth;
        }
        let done = unit.finishing.take(it);
        let freed = !done.is_empty();
        for run in &done {
            let gpu = &mut unit.gpus[run.gpu as usize];
            gpu.active -= 1;
            gpu.context -= run.input_len as f64 + run.rate * (it - run.join_iteration) as f64;
            gpu.growth -= run.rate;
            if gpu.active == 0 {
                gpu.context = 0.0;
                gpu.growth = 0.0;
            }
            let idx = (u * dg + run.gpu) as usize;
            gpu.reserved -= run.input_len + run.output_len;
            self.load[idx] -= 1;
            self.by_load.set(idx, self.load[idx], gpu.reserved);
            self.live.finish(run.request, now_s);
        }
        let unit = &mut self.decode[u as usize];
        unit.finishing.give_back(done);
        unit.busy = false;
        if freed {
            self.admit();
        }
        self.start_decode(u);
    }
}

/// Iterations that emit `m` tokens when each emits one plus an accepted
/// draft with probability `p` (in (0, 1)): the least k with
/// k + Binomial(k, p) >= m. Drawn in O(log m) with the exact distribution:
/// while `left` > 2 tokens remain, the next (left - 1) / 2 iterations cannot
/// finish (each emits at most 2), so their accepted drafts are one
/// `Binomial` draw; the last one or two tokens take one iteration, or two
/// when 2 remain and the draft is rejected.
pub(super) fn mtp_iterations(m: u64, p: f64, rng: &mut impl Rng) -> u64 {
    let (mut left, mut iters) = (m, 0u64);
    while left > 2 {
        let n = (left - 1) / 2;
        let Ok(accepted) = Binomial::new(n, p) else { return m };
        left -= n + accepted.sample(rng);
        iters += n;
    }
    match left {
        0 => iters,
        1 => iters + 1,
        _ => iters + 1 + u64::from(!rng.gen_bool(p)),
    }
}

#[cfg(test)]
mod tests {
    use crate::serving::testing::{config, Linear};
    use crate::serving::{simulate_serving, unservable, Request};

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
}

#[cfg(test)]
mod finishing_tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use rand::Rng;

    use super::{Decoding, Finishing, FINISH_RING};
    use crate::rng;

    /// The buckets (and the map past them) give each iteration's finishing
    /// requests in the order one priority queue of (iteration, request)
    /// gives them, with some requests finishing beyond the ring.
    #[test]
    fn finishing_buckets_come_out_as_one_priority_queue_would() {
        let mut draws = rng::stream(3, "finishing-test", 0);
        let (mut buckets, mut heap) = (Finishing::default(), BinaryHeap::new());
        let mut next_request = 0u32;
        for it in 0..30_000u64 {
            if it > 0 {
                let mut want = Vec::new();
                while heap.peek().is_some_and(|&Reverse((fin, _))| fin <= it) {
                    want.push(heap.pop().expect("peeked").0 .1);
                }
                let done = buckets.take(it);
                assert_eq!(done.iter().map(|d| d.request).collect::<Vec<_>>(), want, "iteration {it}");
                buckets.give_back(done);
            }
            // Joins arrive out of request order, some far past the ring.
            for _ in 0..draws.gen_range(0..4) {
                let r = next_request + draws.gen_range(0..3);
                next_request += 3;
                let k =
                    if draws.gen_bool(0.05) { FINISH_RING + draws.gen_range(0..900) } else { draws.gen_range(1..1200) };
                let d = Decoding { request: r, gpu: 0, join_iteration: it, rate: 1.0, input_len: 1, output_len: 2 };
                buckets.push(it + k, d);
                heap.push(Reverse((it + k, r)));
            }
        }
        assert!(!heap.is_empty() && !buckets.far.is_empty());
    }
}

#[cfg(test)]
mod load_tree_tests {
    use std::collections::BTreeSet;

    use rand::Rng;

    use super::LoadTree;
    use crate::rng;

    /// The tree answers as a scan of one ordered set of (sequences,
    /// reserved, GPU) does: the first with reserved KV at most the bound.
    #[test]
    fn load_tree_finds_what_a_scan_of_the_ordered_set_finds() {
        let mut draws = rng::stream(5, "load-tree-test", 0);
        for gpus in [1usize, 3, 8, 37] {
            let mut tree = LoadTree::new(gpus);
            let mut set: BTreeSet<(u64, u64, u32)> = (0..gpus as u32).map(|i| (0, 0, i)).collect();
            assert_eq!(tree.first_with_reserved_at_most(0), Some((0, 0, 0)));
            let mut state = vec![(0u64, 0u64); gpus];
            for _ in 0..5000 {
                let i = draws.gen_range(0..gpus);
                let (load, reserved) = (draws.gen_range(0..6), draws.gen_range(0..1000));
                set.remove(&(state[i].0, state[i].1, i as u32));
                set.insert((load, reserved, i as u32));
                state[i] = (load, reserved);
                tree.set(i, load, reserved);
                let most = draws.gen_range(0..1100);
                let want = set.iter().find(|k| k.1 <= most).copied();
                assert_eq!(tree.first_with_reserved_at_most(most), want, "{gpus} GPUs, at most {most}");
            }
        }
    }
}

#[cfg(test)]
mod mtp_tests {
    use rand_distr::{Distribution, Geometric};

    use super::mtp_iterations;
    use crate::rng;

    /// The exact distribution of the iterations for `m` tokens: K(0) = 0,
    /// K(1) = 1, K(m) = 1 + K(m - 1 - B) with B ~ Bernoulli(p).
    fn exact_pmf(m: usize, p: f64) -> Vec<f64> {
        let mut pmf: Vec<Vec<f64>> = vec![vec![1.0], vec![0.0, 1.0]];
        for t in 2..=m {
            let mut next = vec![0.0; t + 1];
            for (k, &q) in pmf[t - 1].iter().enumerate() {
                next[k + 1] += (1.0 - p) * q;
            }
            for (k, &q) in pmf[t - 2].iter().enumerate() {
                next[k + 1] += p * q;
            }
            pmf.push(next);
        }
        pmf.swap_remove(m)
    }

    /// The per-run draw this replaced: runs of accepted drafts (geometric)
    /// ended by a rejected one.
    fn by_runs(m: u64, p: f64, rng: &mut impl rand::Rng) -> u64 {
        let runs = Geometric::new(1.0 - p).unwrap();
        let (mut tokens, mut iters) = (0u64, 0u64);
        loop {
            let run = runs.sample(rng);
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

    /// Pearson's chi-squared of `draws` against `pmf`, bins with fewer than
    /// 5 expected pooled; (statistic, degrees of freedom).
    fn chi_squared(draws: &[u64], pmf: &[f64]) -> (f64, usize) {
        let n = draws.len() as f64;
        let mut seen = vec![0.0; pmf.len()];
        for &k in draws {
            seen[k as usize] += 1.0;
        }
        let (mut stat, mut bins, mut pool_e, mut pool_o) = (0.0, 0usize, 0.0, 0.0);
        for (e, o) in pmf.iter().map(|q| q * n).zip(&seen) {
            if e == 0.0 {
                assert_eq!(*o, 0.0, "a draw the exact distribution never gives");
                continue;
            }
            pool_e += e;
            pool_o += o;
            if pool_e >= 5.0 {
                stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
                bins += 1;
                (pool_e, pool_o) = (0.0, 0.0);
            }
        }
        if pool_e > 0.0 {
            stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
            bins += 1;
        }
        (stat, bins.saturating_sub(1).max(1))
    }

    /// The chi-squared value a correct sampler exceeds with probability
    /// 0.001 (Wilson-Hilferty).
    fn critical(df: usize) -> f64 {
        let d = df as f64;
        let c = 2.0 / (9.0 * d);
        d * (1.0 - c + 3.09 * c.sqrt()).powi(3)
    }

    /// The O(log m) draw has the exact distribution of one token plus a
    /// Bernoulli(p) draft per iteration (chi-squared against the recursion's
    /// pmf on 40,000 draws per case), as the per-run draw it replaced has.
    #[test]
    fn mtp_iterations_have_the_exact_distribution() {
        for (m, p) in [(1, 0.85), (2, 0.85), (3, 0.5), (4, 0.85), (9, 0.3), (60, 0.85), (37, 0.1), (1000, 0.7)] {
            let pmf = exact_pmf(m, p);
            for (name, draw) in [("binomial", mtp_iterations as fn(u64, f64, &mut _) -> u64), ("runs", by_runs)] {
                let mut rng = rng::stream(7, "mtp-test", m as u64);
                let draws: Vec<u64> = (0..40_000).map(|_| draw(m as u64, p, &mut rng)).collect();
                let (stat, df) = chi_squared(&draws, &pmf);
                assert!(stat < critical(df), "{name}, m {m}, p {p}: chi-squared {stat:.1} on {df} df");
                let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
                let exact: f64 = pmf.iter().enumerate().map(|(k, q)| k as f64 * q).sum();
                assert!((mean / exact - 1.0).abs() < 0.01, "{name}, m {m}: mean {mean} against {exact}");
            }
        }
        // A wrong sampler fails: p + 0.05.
        let pmf = exact_pmf(60, 0.8);
        let mut rng = rng::stream(7, "mtp-test", 0);
        let draws: Vec<u64> = (0..40_000).map(|_| mtp_iterations(60, 0.85, &mut rng)).collect();
        let (stat, df) = chi_squared(&draws, &pmf);
        assert!(stat > critical(df), "{stat} on {df}");
    }
}
