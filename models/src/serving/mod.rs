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
//!   the acceptance probability, drawn per request from its own stream (the
//!   iterations a request needs, in a few binomial draws with the exact
//!   distribution of one draw per iteration).
//!
//! Deterministic: events at equal times run in insertion order; every
//! random draw comes from a named stream.
//!
//! Prefix caching happens before this room: the caller resolves each
//! prompt's hit into [`Request::cached_len`] (the root crate's trace reader
//! keeps the LRU cache of KV blocks); here a hit only shortens the prefill.
//!
//! The room's rule: serving knows no kernels, only iteration times. It
//! uses nothing of this crate but [`rng`](crate::rng) and nothing of the
//! engine but `moesim_sim::SimTime` (with its `SimDuration`); the caller
//! brings the engine in through [`IterationTimes`]. Keep it that way.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the API: [`Request`], [`Arrival`], [`ServingConfig`], [`PrefillChunking`], [`IterationTimes`], [`RequestOutcome`], [`ServingTotals`], [`ServingResult`], [`Unservable`]; the entry points [`unservable`], [`serve_stream`] (outcomes to a sink, memory bounded by the requests in the system; [`serve_arrivals`] the same with each request's decode iterations drawn by the caller, [`arrival`]) and [`simulate_serving`] (every outcome kept) |
//! | `server.rs` | the run's state (`Server`, every part's units and counters), its events, the event loop and the window of live requests (`Window`: arrival to hand-on, in arrival order) |
//! | `prefill.rs` | prefill units, batches and chunks; where a request goes (unit and GPU); chunking by tokens or time; context parallelism; iteration timing |
//! | `kv_transfer.rs` | the NICs and the prompt KV transfers from prefill to decode GPUs |
//! | `decode.rs` | decode units and GPUs, admission, continuous batching, MTP |
//! | `stats.rs` | [`poisson_arrivals`] ([`PoissonArrivals`] one at a time), [`quantile`] and [`Quantiles`] (exact, then a sketch with a stated error bound), the workload's helpers around a run |
//! | `testing.rs` | unit-test fixtures |
//!
//! Each part's methods are an `impl Server` block in its own file; the
//! parts share the one `Server` state.

mod decode;
mod kv_transfer;
mod prefill;
mod server;
mod stats;
#[cfg(test)]
mod testing;

pub use stats::{
    lognormal_lengths, poisson_arrivals, quantile, PoissonArrivals, Quantiles, EXACT_VALUES, SKETCH_RELATIVE_ERROR,
};

use server::Server;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
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

/// A run's totals (what [`serve_stream`] returns; its requests went to the
/// sink).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServingTotals {
    /// Requests served (handed to the sink).
    pub requests: u64,
    /// The most requests in the system at once (arrived, not yet handed on):
    /// what the run's memory grows with.
    pub peak_live_requests: u64,
    /// The stream held more than `u32::MAX` requests; the rest were not taken.
    pub arrivals_cut: bool,
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
    /// Some event fell past the end of simulated time (`SimTime::RANGE_S`):
    /// the timings are not to be trusted.
    pub time_overflow: bool,
}

/// A whole run with every request's outcome ([`simulate_serving`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingResult {
    /// In the order of the input requests.
    pub requests: Vec<RequestOutcome>,
    pub totals: ServingTotals,
}

/// Why a request cannot be served at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unservable {
    pub index: usize,
    pub message: String,
}

/// Checks every request against the deployment's bounds.
pub fn unservable(config: &ServingConfig, requests: &[Request], max_context: u64) -> Vec<Unservable> {
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let total = r.input_len.saturating_add(r.output_len);
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
/// [`unservable`]) on the deployment, keeping every outcome.
pub fn simulate_serving(config: &ServingConfig, requests: &[Request], times: &mut dyn IterationTimes) -> ServingResult {
    let mut out = Vec::with_capacity(requests.len());
    let totals = serve_stream(config, &mut requests.iter().copied(), &mut |o| out.push(*o), times);
    ServingResult { requests: out, totals }
}

/// Simulates serving the requests `source` yields (sorted by arrival; each
/// servable, see [`unservable`]; at most `u32::MAX` of them, see
/// [`ServingTotals::arrivals_cut`]), handing each outcome to `sink` in
/// arrival order as soon as it and every request before it have finished.
/// Memory holds only the requests in the system
/// ([`ServingTotals::peak_live_requests`]), so a run of any length streams.
pub fn serve_stream(
    config: &ServingConfig,
    source: &mut dyn Iterator<Item = Request>,
    sink: &mut dyn FnMut(&RequestOutcome),
    times: &mut dyn IterationTimes,
) -> ServingTotals {
    let mut index = 0u64;
    let mut arrivals = source.map(|req| {
        let a = arrival(config, index, req);
        index += 1;
        a
    });
    serve_arrivals(config, &mut arrivals, sink, times)
}

/// A request as it enters the run: the request and the decode iterations
/// its output takes ([`arrival`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub req: Request,
    /// Iterations that emit its output tokens after the first (with MTP, a
    /// random draw; at least 1 is run).
    pub decode_iterations: u64,
}

/// Request number `index` of a run (servable arrivals counted from 0) as it
/// enters: its decode iterations depend only on the deployment, its number
/// and its output length (MTP draws come from the request's own stream,
/// "mtp-acceptance" at `index`), never on the run's state, so a caller may
/// draw them ahead of the run, on another thread ([`serve_arrivals`]).
pub fn arrival(config: &ServingConfig, index: u64, req: Request) -> Arrival {
    let m = req.output_len.saturating_sub(1);
    let decode_iterations = match config.mtp_acceptance {
        None => m,
        Some(p) if p >= 1.0 => m.div_ceil(2),
        Some(p) if p <= 0.0 || m == 0 => m,
        Some(p) => {
            let mut rng = crate::rng::stream(config.seed, "mtp-acceptance", index);
            decode::mtp_iterations(m, p, &mut rng)
        }
    };
    Arrival { req, decode_iterations }
}

/// [`serve_stream`] on requests whose decode iterations are drawn already:
/// the `index`-th arrival `source` yields must be [`arrival`] of
/// (`config`, `index`, its request), so the run is the same as
/// [`serve_stream`]'s on the requests.
pub fn serve_arrivals(
    config: &ServingConfig,
    source: &mut dyn Iterator<Item = Arrival>,
    sink: &mut dyn FnMut(&RequestOutcome),
    times: &mut dyn IterationTimes,
) -> ServingTotals {
    let mut server = Server::new(config, source, sink, times);
    server.run();
    server.into_totals()
}

#[cfg(test)]
mod tests {
    use super::testing::{config, Linear};
    use super::*;

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
        assert_eq!(r.totals.decode_iterations, 10);
    }

    /// A long run at a steady load streams: the sink gets every outcome in
    /// arrival order, the same as the run that keeps them all, while the
    /// window holds only the few requests in the system at once.
    #[test]
    fn a_long_stream_holds_only_the_requests_in_the_system() {
        let reqs: Vec<Request> = (0..20_000)
            .map(|i| Request { arrival_s: i as f64 * 0.05, input_len: 500, output_len: 11, cached_len: 100 })
            .collect();
        let kept = simulate_serving(&config(), &reqs, &mut Linear { a: 0.01, b: 1e-4, c: 0.02 });
        let mut streamed = Vec::new();
        let totals = serve_stream(
            &config(),
            &mut reqs.iter().copied(),
            &mut |o| streamed.push(*o),
            &mut Linear { a: 0.01, b: 1e-4, c: 0.02 },
        );
        assert_eq!(streamed, kept.requests);
        assert_eq!(totals, kept.totals);
        assert_eq!(totals.requests, 20_000);
        // A request stays about 0.25 s and one arrives every 0.05 s.
        assert!(totals.peak_live_requests <= 8, "{}", totals.peak_live_requests);
        let arrivals: Vec<f64> = streamed.iter().map(|o| o.arrival_s).collect();
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]));
    }

    /// On a small run's real latencies, the sketch's percentiles are within
    /// the stated bound of the exact ones.
    #[test]
    fn sketched_latency_percentiles_are_within_the_bound_of_exact_ones() {
        let reqs: Vec<Request> = (0..3000)
            .map(|i| Request {
                arrival_s: i as f64 * 0.004,
                input_len: 300 + (i * 37 % 900),
                output_len: 2 + (i * 13 % 60),
                cached_len: 50,
            })
            .collect();
        let r = simulate_serving(&config(), &reqs, &mut Quadratic);
        let (mut exact, mut sketch) = (Quantiles::default(), Quantiles::with_exact_limit(0));
        for o in &r.requests {
            exact.push(o.ttft_s() * 1e3);
            sketch.push(o.ttft_s() * 1e3);
        }
        assert!(exact.is_exact() && !sketch.is_exact());
        for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
            let (e, s) = (exact.quantile(q), sketch.quantile(q));
            assert!((s - e).abs() <= SKETCH_RELATIVE_ERROR * e, "q{q}: exact {e} ms, sketch {s} ms");
        }
        assert_eq!(exact.mean(), sketch.mean());
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
}
