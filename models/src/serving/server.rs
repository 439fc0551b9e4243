//! The run's state and its event loop: the [`Server`] (every part's state
//! in one struct, each part's methods in that part's file), the events it
//! queues, its construction from a deployment and its result, and the loop
//! that takes arrivals and events in time order.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use moesim_sim::SimTime;

use super::decode::{DecodeUnit, Running};
use super::kv_transfer::Nics;
use super::prefill::PrefillUnit;
use super::{IterationTimes, PrefillChunking, Request, RequestOutcome, ServingConfig, ServingResult};

/// What the event queue holds (arrivals are read from the sorted requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Event {
    PrefillDone { unit: u32 },
    TransferDone { request: u32 },
    DecodeStep { unit: u32 },
}

/// The state of a run: the deployment, the requests and their outcomes,
/// the event queue and clock, and each part's units and counters.
pub(super) struct Server<'a> {
    pub(super) config: &'a ServingConfig,
    pub(super) requests: &'a [Request],
    pub(super) times: &'a mut dyn IterationTimes,
    pub(super) out: Vec<RequestOutcome>,
    pub(super) queue: BinaryHeap<Reverse<(SimTime, u64, Event)>>,
    pub(super) seq: u64,
    pub(super) now: SimTime,
    /// An event was pushed at the end of simulated time (saturated).
    pub(super) time_overflow: bool,
    pub(super) events: u64,
    // prefill
    /// Arrived requests no unit's next batch has taken yet, in order.
    pub(super) waiting: VecDeque<u32>,
    pub(super) prefill: Vec<PrefillUnit>,
    pub(super) prefill_iterations: u64,
    pub(super) prefill_busy_s: f64,
    /// The most time a prefill GPU may take ([`PrefillChunking::Time`];
    /// infinite otherwise), seconds.
    pub(super) prefill_gpu_budget_s: f64,
    /// Per prefill GPU and decode GPU: when its NIC is free.
    pub(super) nics: Nics,
    // decode
    pub(super) decode: Vec<DecodeUnit>,
    /// (sequences incl. reserved, reserved KV tokens, unit, gpu) of every
    /// decode GPU: admission takes the first with room.
    pub(super) by_load: BTreeSet<(u64, u64, u32, u32)>,
    /// Per decode GPU, its sequences incl. admitted-not-joined.
    pub(super) load: Vec<u64>,
    pub(super) admit_wait: VecDeque<u32>,
    pub(super) running: Vec<Running>,
    pub(super) decode_iterations: u64,
    pub(super) decode_batch_seconds: f64,
    pub(super) decode_busy_s: f64,
}

impl<'a> Server<'a> {
    /// The state before the first arrival: every unit idle and empty.
    pub(super) fn new(
        config: &'a ServingConfig,
        requests: &'a [Request],
        times: &'a mut dyn IterationTimes,
    ) -> Server<'a> {
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
            time_overflow: false,
            events: 0,
            waiting: VecDeque::new(),
            prefill: (0..config.prefill_units)
                .map(|_| PrefillUnit::new(config.prefill_gpus_per_unit.max(1) as usize))
                .collect(),
            prefill_iterations: 0,
            prefill_busy_s: 0.0,
            prefill_gpu_budget_s: f64::INFINITY,
            nics: Nics::new(config),
            decode: (0..config.decode_units).map(|_| DecodeUnit::new(dg as usize)).collect(),
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
        server
    }

    /// The run's result, once [`Server::run`] is done.
    pub(super) fn into_result(self) -> ServingResult {
        let makespan_s = self.out.iter().map(|o| o.finish_s).filter(|f| f.is_finite()).fold(0.0, f64::max);
        ServingResult {
            requests: self.out,
            makespan_s,
            events: self.events,
            prefill_iterations: self.prefill_iterations,
            decode_iterations: self.decode_iterations,
            prefill_busy_s: self.prefill_busy_s,
            decode_batch_seconds: self.decode_batch_seconds,
            decode_busy_s: self.decode_busy_s,
            time_overflow: self.time_overflow,
        }
    }
}

impl Server<'_> {
    pub(super) fn push(&mut self, t: SimTime, e: Event) {
        self.time_overflow |= t == SimTime::MAX;
        self.queue.push(Reverse((t, self.seq, e)));
        self.seq += 1;
    }

    pub(super) fn run(&mut self) {
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
}

pub(super) fn secs(t: SimTime) -> f64 {
    t.as_secs_f64()
}

fn at(s: f64) -> SimTime {
    SimTime::ZERO + moesim_sim::SimDuration::from_secs_f64(s.max(0.0))
}
