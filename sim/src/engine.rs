//! The discrete-event executor: runs a `TaskGraph` on a `Platform`.
//!
//! Events sit in a binary heap ordered by (time, sequence number), so events
//! at equal times run in the order they were scheduled. The loop pops every
//! event at the current time (a batch), then recomputes once the rates of the
//! devices and flow components the batch touched (see [`crate::device`] and
//! [`crate::flow`]), which schedules their next completions.
//!
//! A task starts when its stream predecessor and its explicit dependencies
//! have finished. Delays end after their duration; kernels when their device
//! says so; communications when the last flow has arrived (last byte sent
//! plus the path's latency, or the task's own, `TaskGraph::set_comm_latency`). Tasks finished during a batch start their
//! successors at once (through a FIFO, so there is no recursion).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::device::{Demand, DeviceState};
use crate::error::SimError;
use crate::flow::{FlowDue, FlowSolver, DONE_BYTES};
use crate::graph::{Successors, TaskGraph, TaskId, TaskKind, NO_TASK};
use crate::platform::{LinkId, Platform};
use crate::result::{EngineOptions, Observer, RunResult, TaskSpan};
use crate::time::{SimTime, PS_PER_S};

const NONE: u32 = u32::MAX;
/// [`Engine::state`] bits.
const STARTED: u8 = 1;
const DONE: u8 = 2;
const PROGRESS_EVERY: u64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    TaskDone(u32),
    DeviceDue { device: u32, version: u32 },
    FlowDue { comp: u32, gen: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    time: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// Runs `graph` on `platform` to completion.
pub fn run(
    platform: &Platform,
    graph: &TaskGraph,
    options: &EngineOptions,
    observer: &mut dyn Observer,
) -> Result<RunResult, SimError> {
    platform.validate()?;
    graph.validate(platform)?;
    Engine::new(platform, graph, options).run(observer)
}

/// Which communication task a finished flow belongs to.
enum FlowOwner {
    /// The communications' flow ranges, disjoint and sorted: (first flow,
    /// task), and the range found last. A binary search over them replaces
    /// a word per flow; the flows a completion finishes mostly come a
    /// communication at a time, so the range found last is tried first.
    Ranges(Vec<(u32, u32)>, usize),
    /// Per flow, the task that started it last (when ranges overlap).
    PerFlow(Vec<u32>),
}

impl FlowOwner {
    fn new(graph: &TaskGraph) -> FlowOwner {
        let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
        for i in 0..graph.task_count() as u32 {
            if let TaskKind::Comm(c) = graph.task_kind(TaskId(i)) {
                if c.flows.start < c.flows.end {
                    ranges.push((c.flows.start, c.flows.end, i));
                }
            }
        }
        if !ranges.windows(2).all(|w| w[0].0 <= w[1].0) {
            ranges.sort_unstable();
        }
        if ranges.windows(2).all(|w| w[0].1 <= w[1].0) {
            FlowOwner::Ranges(ranges.into_iter().map(|(start, _, task)| (start, task)).collect(), 0)
        } else {
            FlowOwner::PerFlow(vec![NONE; graph.flows().len()])
        }
    }

    /// The task of a started flow.
    fn task(&mut self, flow: u32) -> u32 {
        match self {
            FlowOwner::Ranges(ranges, last) => {
                let hit = ranges.get(*last).is_some_and(|r| r.0 <= flow)
                    && ranges.get(*last + 1).is_none_or(|next| flow < next.0);
                if !hit {
                    *last = ranges.partition_point(|r| r.0 <= flow) - 1;
                }
                ranges[*last].1
            }
            FlowOwner::PerFlow(owner) => owner[flow as usize],
        }
    }
}

struct Engine<'a> {
    platform: &'a Platform,
    graph: &'a TaskGraph,
    /// Unfinished predecessors; for a running communication, flows not yet
    /// arrived.
    pending: Vec<u32>,
    next_in_stream: Vec<u32>,
    successors: Successors,
    spans: Vec<TaskSpan>,
    /// Per task, [`STARTED`] (for naming what a stalled run waits on) and
    /// [`DONE`].
    state: Vec<u8>,
    finished: usize,
    end: u64,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    now: u64,
    events: u64,
    devices: Vec<DeviceState>,
    dirty_devices: Vec<u32>,
    /// Per device, the link standing for its memory, or `NONE`.
    memory_link: Vec<u32>,
    /// Scratch: dirty devices with a memory link, shared after the flows.
    coupled_devices: Vec<u32>,
    flows: FlowSolver,
    flow_task: FlowOwner,
    to_finish: VecDeque<u32>,
    dues: Vec<FlowDue>,
    /// (flow, path latency) of the flows a completion finished.
    arrivals: Vec<(u32, u64)>,
    /// Per link, picoseconds (compact: read for every finished flow).
    link_latency: Vec<u64>,
}

impl<'a> Engine<'a> {
    fn new(platform: &'a Platform, graph: &'a TaskGraph, options: &EngineOptions) -> Self {
        let n = graph.task_count();
        let (next_in_stream, mut pending) = graph.stream_order();
        let successors = Successors::new(graph);
        for &b in successors.targets() {
            pending[b as usize] += 1;
        }
        Engine {
            platform,
            graph,
            pending,
            next_in_stream,
            successors,
            spans: vec![TaskSpan::default(); n],
            state: vec![0; n],
            finished: 0,
            end: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            events: 0,
            devices: platform.devices.iter().map(DeviceState::new).collect(),
            dirty_devices: Vec::new(),
            memory_link: {
                let mut m = vec![NONE; platform.devices.len()];
                for &(d, l) in &platform.memory_links {
                    m[d.0 as usize] = l.0;
                }
                m
            },
            coupled_devices: Vec::new(),
            flows: {
                let mut solver = FlowSolver::with_series_budget(
                    platform,
                    graph.flows().len(),
                    options.record_link_series.then_some(options.link_series_budget_bytes),
                );
                solver.set_finish_tolerance(options.flow_finish_tolerance);
                solver
            },
            flow_task: FlowOwner::new(graph),
            to_finish: VecDeque::new(),
            dues: Vec::new(),
            arrivals: Vec::new(),
            link_latency: platform.links.iter().map(|l| l.latency.0).collect(),
        }
    }

    fn schedule(&mut self, time: u64, kind: EventKind) {
        self.heap.push(Reverse(Event { time, seq: self.seq, kind }));
        self.seq += 1;
    }

    fn run(mut self, observer: &mut dyn Observer) -> Result<RunResult, SimError> {
        let n = self.spans.len();
        for t in 0..n {
            if self.pending[t] == 0 {
                self.start(t as u32);
            }
        }
        self.drain();
        loop {
            self.recompute();
            let Some(Reverse(top)) = self.heap.peek() else { break };
            self.now = top.time;
            if self.now == SimTime::MAX.as_ps() {
                let first = (0..n).find(|&t| self.state[t] & DONE == 0).unwrap_or(0);
                return Err(SimError::TimeOverflow { example: self.graph.task_name(TaskId(first as u32)).to_owned() });
            }
            while let Some(Reverse(ev)) = self.heap.peek() {
                if ev.time != self.now {
                    break;
                }
                let ev = *ev;
                self.heap.pop();
                if self.handle(ev.kind) {
                    self.events += 1;
                    if self.events & (PROGRESS_EVERY - 1) == 0 {
                        observer.progress(self.finished, n, SimTime(self.now));
                    }
                }
                self.drain();
            }
        }
        observer.progress(self.finished, n, SimTime(self.now));
        if self.finished < n {
            // Name a task that started and never finished, and what it runs on.
            let running = (0..n).find(|&t| self.state[t] == STARTED);
            let first = running.or_else(|| (0..n).find(|&t| self.state[t] & DONE == 0)).unwrap_or(0);
            let (waiting_on, resource_kind) = match running {
                Some(t) => self.resource_of(t),
                None => ("a task that never started".to_owned(), None),
            };
            return Err(SimError::Stalled {
                at_us: SimTime(self.now).as_us_f64(),
                unfinished: n - self.finished,
                example: self.graph.task_name(TaskId(first as u32)).to_owned(),
                waiting_on,
                resource_kind,
            });
        }
        let (flows_started, flow_recomputes, flows_rerated, flows_finished_early) = (
            self.flows.flows_started(),
            self.flows.recomputes(),
            self.flows.flows_rerated(),
            self.flows.flows_finished_early(),
        );
        let (links, series) = self.flows.into_stats();
        let link_series = series.unwrap_or_else(|| vec![Vec::new(); links.len()]);
        Ok(RunResult {
            end: SimTime(self.end),
            events: self.events,
            flows_started,
            flow_recomputes,
            flows_rerated,
            flows_finished_early,
            spans: self.spans,
            devices: self.devices.iter().map(|d| d.stats).collect(),
            links,
            link_series,
        })
    }

    /// What task `t` runs on, in words, and its kind (`device`, or the
    /// link's kind label): its device, or the slowest link its flows cross.
    fn resource_of(&self, t: usize) -> (String, Option<&'static str>) {
        match self.graph.task_kind(TaskId(t as u32)) {
            TaskKind::Kernel(k) => {
                let d = &self.platform.devices[k.device.0 as usize];
                (format!("device `{}` ({} B/s of memory bandwidth)", d.name, d.mem_bytes_per_s), Some("device"))
            }
            TaskKind::Comm(c) => {
                let slowest = c
                    .flows
                    .clone()
                    .flat_map(|f| self.graph.path(self.graph.flows()[f as usize].path).iter())
                    .map(|l| &self.platform.links[l.0 as usize])
                    .min_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s));
                match slowest {
                    Some(l) => (
                        format!("link `{}` ({}, {:e} B/s)", l.name, l.kind.label(), l.bytes_per_s),
                        Some(l.kind.label()),
                    ),
                    None => ("a communication without links".to_owned(), None),
                }
            }
            TaskKind::Delay(d) => (format!("a delay of {} ps", d.0), None),
        }
    }

    /// Handles one event; returns false for a stale one.
    fn handle(&mut self, kind: EventKind) -> bool {
        match kind {
            EventKind::TaskDone(t) => {
                self.to_finish.push_back(t);
                true
            }
            EventKind::DeviceDue { device, version } => {
                let d = &mut self.devices[device as usize];
                if d.version != version {
                    return false;
                }
                d.advance(self.now, &mut self.to_finish);
                self.mark_device(device);
                true
            }
            EventKind::FlowDue { comp, gen } => {
                let due = FlowDue { time: self.now, comp, gen };
                let mut arrivals = std::mem::take(&mut self.arrivals);
                arrivals.clear();
                let latency = &self.link_latency;
                let current = self.flows.complete_due_with(self.graph, due, self.now, |f, path| {
                    let lat = path.iter().map(|l| latency[l.0 as usize]).fold(0u64, u64::saturating_add);
                    arrivals.push((f, lat));
                });
                for &(f, lat) in &arrivals {
                    let t = self.flow_task.task(f);
                    let lat = self.graph.comm_latency(TaskId(t)).map_or(lat, |l| l.0);
                    self.flow_arrived(t, self.now.saturating_add(lat));
                }
                self.arrivals = arrivals;
                current
            }
        }
    }

    fn flow_arrived(&mut self, task: u32, arrival: u64) {
        let t = task as usize;
        if arrival > self.spans[t].end.0 {
            self.spans[t].end = SimTime(arrival);
        }
        self.pending[t] -= 1;
        if self.pending[t] == 0 {
            self.comm_done(task);
        }
    }

    /// All of a communication's flows have arrived: it ends after its fixed
    /// overhead.
    fn comm_done(&mut self, task: u32) {
        let t = task as usize;
        let overhead = match self.graph.task_kind(TaskId(task)) {
            TaskKind::Comm(c) => c.overhead.0,
            _ => 0,
        };
        let at = self.spans[t].end.0.saturating_add(overhead);
        self.spans[t].end = SimTime(at);
        self.schedule(at, EventKind::TaskDone(task));
    }

    fn mark_device(&mut self, d: u32) {
        let dev = &mut self.devices[d as usize];
        if !dev.dirty {
            dev.dirty = true;
            self.dirty_devices.push(d);
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.to_finish.pop_front() {
            self.finish(t);
        }
    }

    fn finish(&mut self, task: u32) {
        let t = task as usize;
        let now = self.now;
        self.spans[t].end = SimTime(now);
        self.end = self.end.max(now);
        self.finished += 1;
        self.state[t] |= DONE;
        if let TaskKind::Comm(c) = self.graph.task_kind(TaskId(task)) {
            if let Some((d, _)) = c.hold {
                let dev = &mut self.devices[d.0 as usize];
                dev.advance(now, &mut self.to_finish);
                dev.release_hold(task);
                self.mark_device(d.0);
            }
        }
        let next = self.next_in_stream[t];
        if next != NO_TASK {
            self.release(next);
        }
        for i in self.successors.range(task) {
            let s = self.successors.targets()[i];
            self.release(s);
        }
    }

    fn release(&mut self, task: u32) {
        let p = &mut self.pending[task as usize];
        *p -= 1;
        if *p == 0 {
            self.start(task);
        }
    }

    fn start(&mut self, task: u32) {
        let t = task as usize;
        let now = self.now;
        self.state[t] |= STARTED;
        self.spans[t].start = SimTime(now);
        match self.graph.task_kind(TaskId(task)) {
            TaskKind::Delay(d) => self.schedule(now.saturating_add(d.0), EventKind::TaskDone(task)),
            TaskKind::Kernel(k) => {
                if k.compute.0 == 0 && k.mem_bytes == 0.0 {
                    self.schedule(now, EventKind::TaskDone(task));
                    return;
                }
                let dev = &mut self.devices[k.device.0 as usize];
                dev.advance(now, &mut self.to_finish);
                dev.start(task, Demand::from(k.units), k.compute.0 as f64, k.mem_bytes);
                self.mark_device(k.device.0);
            }
            TaskKind::Comm(c) => {
                self.spans[t].end = SimTime(now);
                self.pending[t] = 0;
                for f in c.flows.clone() {
                    let flow = &self.graph.flows()[f as usize];
                    let path = self.graph.path(flow.path);
                    if path.is_empty() || flow.bytes < DONE_BYTES {
                        let lat = self.graph.comm_latency(TaskId(task)).map_or_else(
                            || {
                                path.iter()
                                    .map(|l| self.platform.links[l.0 as usize].latency.0)
                                    .fold(0u64, u64::saturating_add)
                            },
                            |l| l.0,
                        );
                        let arrival = now.saturating_add(lat);
                        if arrival > self.spans[t].end.0 {
                            self.spans[t].end = SimTime(arrival);
                        }
                    } else {
                        if let FlowOwner::PerFlow(owner) = &mut self.flow_task {
                            owner[f as usize] = task;
                        }
                        self.flows.start_flow(self.graph, f, flow.bytes);
                        self.pending[t] += 1;
                    }
                }
                if let Some((d, n)) = c.hold {
                    let dev = &mut self.devices[d.0 as usize];
                    dev.advance(now, &mut self.to_finish);
                    dev.start(task, Demand::CommHold(n), 0.0, 0.0);
                    self.mark_device(d.0);
                }
                if self.pending[t] == 0 {
                    self.comm_done(task);
                }
            }
        }
    }

    /// Recomputes the rates of everything the last batch touched: the
    /// devices' units (and, on a device with a memory link, the memory its
    /// communication may take), the flows, then the memory shares of the
    /// devices with a memory link (see [`crate::device`]). A device without
    /// one is done in the first pass, as before memory links existed.
    fn recompute(&mut self) {
        let mut coupled = std::mem::take(&mut self.coupled_devices);
        coupled.clear();
        for i in 0..self.dirty_devices.len() {
            let d = self.dirty_devices[i];
            self.devices[d as usize].allocate_units();
            let link = self.memory_link[d as usize];
            if link == NONE {
                self.schedule_device(d, 0.0);
            } else {
                let cap = self.devices[d as usize].comm_memory_cap() * PS_PER_S;
                self.flows.set_link_capacity(LinkId(link), cap);
                coupled.push(d);
            }
        }
        self.dirty_devices.clear();
        if self.flows.needs_recompute() {
            let mut dues = std::mem::take(&mut self.dues);
            dues.clear();
            self.flows.recompute(self.graph, self.now, &mut dues);
            for &d in &dues {
                self.schedule(d.time, EventKind::FlowDue { comp: d.comp, gen: d.gen });
            }
            self.dues = dues;
        }
        for &d in &coupled {
            let link = LinkId(self.memory_link[d as usize]);
            let comm = self.flows.link_rate_bytes_per_s(link) / PS_PER_S;
            self.schedule_device(d, comm);
        }
        self.coupled_devices = coupled;
    }

    /// Shares a device's memory (`comm` bytes per picosecond taken by
    /// flows) and schedules its next completion.
    fn schedule_device(&mut self, d: u32, comm: f64) {
        if let Some(at) = self.devices[d as usize].share_memory(comm) {
            let version = self.devices[d as usize].version;
            self.schedule(at, EventKind::DeviceDue { device: d, version });
        }
    }
}
