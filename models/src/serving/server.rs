//! The run's state and its event loop: the [`Server`] (every part's state
//! in one struct, each part's methods in that part's file), the events it
//! queues, its construction from a deployment and its totals, the loop that
//! takes arrivals and events in time order, and the [`Window`] of live
//! requests: a request enters it when it arrives and leaves, handed to the
//! caller's sink in arrival order, once it and every request before it have
//! finished. Memory is the window's (the requests in the system), never the
//! run's whole history.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use moesim_sim::SimTime;

use super::decode::{DecodeUnit, LoadTree, Running};
use super::kv_transfer::Nics;
use super::prefill::PrefillUnit;
use super::{Arrival, IterationTimes, PrefillChunking, Request, RequestOutcome, ServingConfig, ServingTotals};

/// What the event queue holds (arrivals are read from the sorted requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Event {
    PrefillDone { unit: u32 },
    TransferDone { request: u32 },
    DecodeStep { unit: u32 },
}

/// One request in the system: as it came, what became of it so far, its
/// decode progress, and whether it has finished.
#[derive(Debug, Clone, Copy)]
pub(super) struct Live {
    pub(super) req: Request,
    pub(super) out: RequestOutcome,
    pub(super) running: Running,
    done: bool,
}

/// The requests from the oldest unfinished one to the newest arrival,
/// indexed by request number (`base` is the front's). Request numbers count
/// arrivals from 0; they fit a `u32` (the caller's stream stops before).
#[derive(Debug, Default)]
pub(super) struct Window {
    base: u32,
    slots: VecDeque<Live>,
    /// The most requests the window held at once.
    peak: usize,
}

impl Window {
    pub(super) fn get(&self, r: u32) -> &Live {
        &self.slots[(r - self.base) as usize]
    }
    pub(super) fn get_mut(&mut self, r: u32) -> &mut Live {
        &mut self.slots[(r - self.base) as usize]
    }
    pub(super) fn req(&self, r: u32) -> &Request {
        &self.get(r).req
    }
    pub(super) fn out(&self, r: u32) -> &RequestOutcome {
        &self.get(r).out
    }
    pub(super) fn out_mut(&mut self, r: u32) -> &mut RequestOutcome {
        &mut self.get_mut(r).out
    }
    /// Request `r` has finished at `t_s`.
    pub(super) fn finish(&mut self, r: u32, t_s: f64) {
        let live = self.get_mut(r);
        live.out.finish_s = t_s;
        live.done = true;
    }
}

/// The state of a run: the deployment, the arrivals still to come, the live
/// requests, the event queue and clock, and each part's units and counters.
pub(super) struct Server<'a> {
    pub(super) config: &'a ServingConfig,
    /// Arrivals still to come (sorted by arrival) and the next of them.
    source: &'a mut dyn Iterator<Item = Arrival>,
    next: Option<Arrival>,
    /// Where finished requests go, in arrival order.
    sink: &'a mut dyn FnMut(&RequestOutcome),
    pub(super) times: &'a mut dyn IterationTimes,
    pub(super) live: Window,
    /// Requests handed to the sink, and the last finish among them.
    served: u64,
    makespan_s: f64,
    /// The stream held more than `u32::MAX` requests; the rest were not taken.
    arrivals_cut: bool,
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
    pub(super) by_load: LoadTree,
    /// Per decode GPU, its sequences incl. admitted-not-joined.
    pub(super) load: Vec<u64>,
    pub(super) admit_wait: VecDeque<u32>,
    pub(super) decode_iterations: u64,
    pub(super) decode_batch_seconds: f64,
    pub(super) decode_busy_s: f64,
}

impl<'a> Server<'a> {
    /// The state before the first arrival: every unit idle and empty.
    pub(super) fn new(
        config: &'a ServingConfig,
        source: &'a mut dyn Iterator<Item = Arrival>,
        sink: &'a mut dyn FnMut(&RequestOutcome),
        times: &'a mut dyn IterationTimes,
    ) -> Server<'a> {
        let dg = config.decode_gpus_per_unit.max(1);
        let by_load = LoadTree::new((config.decode_units * dg) as usize);
        let mut server = Server {
            config,
            next: source.next(),
            source,
            sink,
            times,
            live: Window::default(),
            served: 0,
            makespan_s: 0.0,
            arrivals_cut: false,
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

    /// The run's totals, once [`Server::run`] is done.
    pub(super) fn into_totals(self) -> ServingTotals {
        ServingTotals {
            requests: self.served,
            peak_live_requests: self.live.peak as u64,
            arrivals_cut: self.arrivals_cut,
            makespan_s: self.makespan_s,
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
        let mut next_arrival = 0u32;
        loop {
            if next_arrival == u32::MAX && self.next.is_some() {
                // Request numbers are `u32`: the rest of the stream is not taken.
                self.next = None;
                self.arrivals_cut = true;
            }
            let arrival_t = self.next.map(|a| at(a.req.arrival_s));
            let event_t = self.queue.peek().map(|Reverse((t, _, _))| *t);
            // Arrivals go first at equal times (they came before any event
            // scheduled for that instant could react).
            match (arrival_t, event_t) {
                (Some(a), e) if e.is_none_or(|e| a <= e) => {
                    self.now = a;
                    self.events += 1;
                    let req = self.next.take().expect("peeked");
                    self.arrive(next_arrival, req);
                    next_arrival += 1;
                    self.next = self.source.next();
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
            self.retire();
        }
        self.retire();
    }

    /// Request `r` arrives: it enters the window and waits for prefill.
    fn arrive(&mut self, r: u32, Arrival { req, decode_iterations }: Arrival) {
        debug_assert_eq!(r as usize, self.live.base as usize + self.live.slots.len());
        self.live.slots.push_back(Live {
            req,
            out: RequestOutcome {
                arrival_s: req.arrival_s,
                input_len: req.input_len as u32,
                output_len: req.output_len as u32,
                cached_len: req.cached_len as u32,
                prefill_start_s: f64::NAN,
                first_token_s: f64::NAN,
                decode_join_s: f64::NAN,
                finish_s: f64::NAN,
                prefill_unit: 0,
                prefill_gpu: 0,
                decode_unit: 0,
                decode_gpu: 0,
            },
            running: Running::new(decode_iterations),
            done: false,
        });
        self.live.peak = self.live.peak.max(self.live.slots.len());
        self.waiting.push_back(r);
    }

    /// Hands the finished requests at the window's front to the sink.
    fn retire(&mut self) {
        while self.live.slots.front().is_some_and(|l| l.done) {
            let l = self.live.slots.pop_front().expect("front");
            self.live.base += 1;
            self.served += 1;
            self.makespan_s = self.makespan_s.max(l.out.finish_s);
            (self.sink)(&l.out);
        }
    }
}

pub(super) fn secs(t: SimTime) -> f64 {
    t.as_secs_f64()
}

fn at(s: f64) -> SimTime {
    SimTime::ZERO + moesim_sim::SimDuration::from_secs_f64(s.max(0.0))
}
