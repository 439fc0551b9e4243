//! The `TaskGraph` IR: per-rank streams of tasks with dependencies.
//!
//! A task is a kernel on a device, a communication (one or more fluid flows
//! over routed paths, optionally holding compute units on a device while it
//! runs) or a fixed delay. Tasks in one stream run in the order they were
//! added; `add_dep` adds ordering across streams and ranks. Labels are
//! interned so a graph with millions of tasks stays small; flows and paths
//! live in flat arenas for the same reason. A task is stored in 16 bytes
//! (`TaskRecord`): its label, stream, class and an index into the graph's
//! distinct kernels, distinct delays or communications;
//! [`TaskGraph::task`] hands out the whole [`Task`] by value. A kernel on
//! the device its stream's first kernel ran on (every kernel, in the
//! workloads' graphs) takes that device from its stream, so its entry is
//! shared by every device that runs it: every rank of a training step runs
//! the same few thousand kernels, and 2,048 ranks keep one table of them
//! instead of one per device.

use std::collections::HashMap as StdHashMap;

/// The interning tables' map: foldhash's fixed-seed hasher, several times
/// faster than SipHash on the few words of a kernel or a path (a training
/// step interns a kernel per task: SipHash was ~half of lowering 2,048
/// every-rank GPUs), and the same on every run and machine.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::FixedState>;
use std::ops::Range;

use crate::error::SimError;
use crate::platform::{DeviceId, LinkId, Platform};
use crate::time::SimDuration;

/// Index of a task in [`TaskGraph::tasks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u32);

/// Index of a stream in [`TaskGraph::streams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

/// Index of a routed path (a list of directed links) in the graph's path arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(pub u32);

/// Index of an interned label string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelId(pub u32);

/// What a task counts as in statistics (compute vs communication overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskClass {
    Compute,
    Communication,
    /// Memory traffic that is neither arithmetic nor network (copies, casts).
    Memory,
    /// Waits, markers and joins.
    Other,
}

impl TaskClass {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskClass::Compute => "compute",
            TaskClass::Communication => "communication",
            TaskClass::Memory => "memory",
            TaskClass::Other => "other",
        }
    }
}

/// How many compute units a kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitDemand {
    /// Shares the units nobody holds with the other sharing kernels, using at
    /// most `max_units` (its CTA count).
    Share { max_units: u32 },
    /// Holds exactly this many units while it runs (communication kernels).
    Hold(u32),
}

/// A kernel on one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kernel {
    pub device: DeviceId,
    /// How long the arithmetic takes with every unit of the device and no
    /// memory stall (the compute side of the roofline, launch overhead
    /// included).
    pub compute: SimDuration,
    /// Bytes the kernel moves to and from device memory.
    pub mem_bytes: f64,
    pub units: UnitDemand,
}

/// One fluid transfer of `bytes` over the links of `path`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow {
    pub path: PathId,
    pub bytes: f64,
}

/// A communication task: flows that start together; the task ends when the
/// last one has arrived. While it runs it may hold units of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Comm {
    /// Range into [`TaskGraph::flows`].
    pub flows: Range<u32>,
    pub hold: Option<(DeviceId, u32)>,
    /// Fixed time the kernel spends besides moving data (launch, signalling,
    /// packing), added after the last flow has arrived.
    pub overhead: SimDuration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    Kernel(Kernel),
    Comm(Comm),
    /// Takes exactly this long and uses nothing; zero makes a join/marker.
    Delay(SimDuration),
}

/// A task as [`TaskGraph::task`] hands it out (built from its compact
/// record).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub label: LabelId,
    pub stream: StreamId,
    pub class: TaskClass,
    pub kind: TaskKind,
}

/// A stream of tasks that run one after another on one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub rank: u32,
    pub name: LabelId,
}

/// Which kind a [`TaskRecord`] holds: a kernel on its stream's device
/// ([`TaskGraph::stream_device`]; its entry's device is [`NO_DEVICE`]).
const KERNEL: u8 = 0;
/// A kernel on a device other than its stream's (its entry's own).
const KERNEL_ON: u8 = 3;
/// The device of a shared kernel entry, and of a stream without kernels.
const NO_DEVICE: u32 = u32::MAX;
const COMM: u8 = 1;
const DELAY: u8 = 2;

/// How a task is stored (16 bytes): `index` is a kernel's entry in
/// [`TaskGraph::kernels`], a delay's in [`TaskGraph::delays`], a
/// communication's in [`TaskGraph::comms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskRecord {
    label: LabelId,
    stream: StreamId,
    index: u32,
    class: TaskClass,
    kind: u8,
}

impl TaskRecord {
    /// Whether it is a kernel, on its stream's device or on its own.
    #[inline]
    fn is_kernel(&self) -> bool {
        self.kind == KERNEL || self.kind == KERNEL_ON
    }
}

/// A kernel entry's bit-exact identity (equal kernels share one entry, and
/// a value reads back with the bits it was stored with): its time, bytes
/// and units, and its device ([`NO_DEVICE`] for an entry shared by the
/// streams' devices).
type KernelKey = (u64, u64, u64, u32);

/// What is wrong with a kernel apart from its device, if anything.
fn kernel_problem(k: &Kernel) -> Option<String> {
    if !(k.mem_bytes.is_finite() && k.mem_bytes >= 0.0) {
        return Some(format!("memory bytes must be finite and non-negative, found {}", k.mem_bytes));
    }
    if let UnitDemand::Share { max_units: 0 } | UnitDemand::Hold(0) = k.units {
        return Some("a kernel needs at least one compute unit".into());
    }
    None
}

fn kernel_key(k: &Kernel) -> KernelKey {
    let units = match k.units {
        UnitDemand::Share { max_units } => max_units as u64,
        UnitDemand::Hold(n) => (1 << 32) | n as u64,
    };
    (k.compute.0, k.mem_bytes.to_bits(), units, k.device.0)
}

/// The IR every workload is lowered to and every importer produces.
#[derive(Debug, Clone, Default)]
pub struct TaskGraph {
    labels: Vec<String>,
    label_index: HashMap<String, LabelId>,
    streams: Vec<Stream>,
    /// Per stream: the device of its first kernel ([`NO_DEVICE`] until it
    /// has one), the device of its [`KERNEL`] tasks.
    stream_device: Vec<u32>,
    tasks: Vec<TaskRecord>,
    /// Distinct kernels, in first-use order: shared ones (device
    /// [`NO_DEVICE`]; every rank of a training step runs the same few
    /// thousand) and the few on a device other than their stream's.
    kernels: Vec<Kernel>,
    /// Distinct delays, in first-use order.
    delays: Vec<SimDuration>,
    /// Finds a kernel's entry (one table of a few thousand, shared by every
    /// device: it stays in cache), and a delay's; dropped by
    /// [`TaskGraph::shrink_to_fit`] and rebuilt if a task is added after.
    kernel_index: Option<HashMap<KernelKey, u32>>,
    delay_index: Option<HashMap<u64, u32>>,
    /// The communication tasks' flows, holds and overheads, in task order.
    comms: Vec<Comm>,
    /// `(before, after)` pairs added with [`TaskGraph::add_dep`].
    deps: Vec<(TaskId, TaskId)>,
    flows: Vec<Flow>,
    path_links: Vec<LinkId>,
    path_offsets: Vec<u32>,
    /// With [`TaskGraph::intern_paths`]: every distinct path stored once.
    path_index: Option<HashMap<Box<[LinkId]>, PathId>>,
    /// Communication tasks whose flows arrive a latency of their own after
    /// they finish instead of their path's, sorted by task
    /// ([`TaskGraph::set_comm_latency`]); empty in most graphs, so a task
    /// pays nothing for it.
    comm_latency: Vec<(TaskId, SimDuration)>,
    /// Whether flow k's path is k + a fixed shift, for every flow so far.
    flow_paths: FlowPathLayout,
    /// Per flow, the identical member flows it stands for
    /// ([`TaskGraph::add_weighted_comm`]); empty (every weight 1) until a
    /// flow of another weight is added, so an unweighted graph keeps its
    /// 16 bytes per flow and the solver reads no weight.
    flow_weights: Vec<u32>,
}

/// How flows name their paths: when every flow k has path k + d (flows and
/// their paths added in the same order, as routed collectives do), a
/// flow's path is found without reading the flow (one cache miss fewer per
/// scattered flow in the flow solver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum FlowPathLayout {
    #[default]
    NoFlows,
    /// Flow k's path is k + d (mod 2^32).
    Shifted(u32),
    Scattered,
}

impl TaskGraph {
    pub fn new() -> Self {
        TaskGraph { path_offsets: vec![0], ..Default::default() }
    }

    /// Interns a label.
    pub fn label(&mut self, s: &str) -> LabelId {
        if let Some(&id) = self.label_index.get(s) {
            return id;
        }
        let id = LabelId(self.labels.len() as u32);
        self.labels.push(s.to_owned());
        self.label_index.insert(s.to_owned(), id);
        id
    }

    pub fn label_str(&self, id: LabelId) -> &str {
        &self.labels[id.0 as usize]
    }

    pub fn add_stream(&mut self, rank: u32, name: &str) -> StreamId {
        let name = self.label(name);
        self.streams.push(Stream { rank, name });
        self.stream_device.push(NO_DEVICE);
        StreamId(self.streams.len() as u32 - 1)
    }

    pub fn add_task(&mut self, stream: StreamId, label: LabelId, class: TaskClass, kind: TaskKind) -> TaskId {
        let (kind, index) = match kind {
            TaskKind::Kernel(k) => {
                // A stream out of range (refused by `validate`) keeps its
                // kernels' devices in their entries.
                let mut sd = self.stream_device.get_mut(stream.0 as usize);
                if let Some(sd) = sd.as_deref_mut().filter(|sd| **sd == NO_DEVICE) {
                    *sd = k.device.0;
                }
                if sd.is_some_and(|sd| *sd == k.device.0) {
                    (KERNEL, self.intern_kernel(Kernel { device: DeviceId(NO_DEVICE), ..k }))
                } else {
                    (KERNEL_ON, self.intern_kernel(k))
                }
            }
            TaskKind::Comm(c) => {
                self.comms.push(c);
                (COMM, self.comms.len() as u32 - 1)
            }
            TaskKind::Delay(d) => (DELAY, self.intern_delay(d)),
        };
        self.tasks.push(TaskRecord { label, stream, index, class, kind });
        TaskId(self.tasks.len() as u32 - 1)
    }

    /// The entry of `kernel` in [`TaskGraph::kernels`] (device
    /// [`NO_DEVICE`] for a shared one), added if new.
    fn intern_kernel(&mut self, kernel: Kernel) -> u32 {
        let kernels = &self.kernels;
        let index = self
            .kernel_index
            .get_or_insert_with(|| kernels.iter().enumerate().map(|(i, k)| (kernel_key(k), i as u32)).collect());
        *index.entry(kernel_key(&kernel)).or_insert_with(|| {
            self.kernels.push(kernel);
            self.kernels.len() as u32 - 1
        })
    }

    /// The entry of `delay` in [`TaskGraph::delays`], added if new.
    fn intern_delay(&mut self, delay: SimDuration) -> u32 {
        let delays = &self.delays;
        let index =
            self.delay_index.get_or_insert_with(|| delays.iter().enumerate().map(|(i, d)| (d.0, i as u32)).collect());
        *index.entry(delay.0).or_insert_with(|| {
            self.delays.push(delay);
            self.delays.len() as u32 - 1
        })
    }

    /// The number of tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Adds a kernel task; a convenience over [`TaskGraph::add_task`].
    pub fn add_kernel(&mut self, stream: StreamId, label: &str, class: TaskClass, kernel: Kernel) -> TaskId {
        let label = self.label(label);
        self.add_task(stream, label, class, TaskKind::Kernel(kernel))
    }

    /// Adds a delay task; zero duration makes a join point.
    pub fn add_delay(&mut self, stream: StreamId, label: &str, duration: SimDuration) -> TaskId {
        let label = self.label(label);
        self.add_task(stream, label, TaskClass::Other, TaskKind::Delay(duration))
    }

    /// Adds a communication task made of `flows`.
    pub fn add_comm(
        &mut self,
        stream: StreamId,
        label: &str,
        flows: impl IntoIterator<Item = Flow>,
        hold: Option<(DeviceId, u32)>,
    ) -> TaskId {
        let label = self.label(label);
        let start = self.flows.len() as u32;
        self.flows.extend(flows);
        let end = self.flows.len() as u32;
        if !self.flow_weights.is_empty() {
            self.flow_weights.resize(end as usize, 1);
        }
        for k in start..end {
            let d = self.flows[k as usize].path.0.wrapping_sub(k);
            self.flow_paths = match self.flow_paths {
                FlowPathLayout::NoFlows => FlowPathLayout::Shifted(d),
                FlowPathLayout::Shifted(d0) if d0 == d => FlowPathLayout::Shifted(d),
                _ => FlowPathLayout::Scattered,
            };
        }
        self.add_task(
            stream,
            label,
            TaskClass::Communication,
            TaskKind::Comm(Comm { flows: start..end, hold, overhead: SimDuration::ZERO }),
        )
    }

    /// Adds a communication task of weighted flows: `(flow, w)` stands for
    /// `w` (>= 1) identical member flows of `flow.bytes` each on its path,
    /// as one flow of the flow solver (see `crate::flow`). The task ends
    /// when every flow has arrived.
    pub fn add_weighted_comm(
        &mut self,
        stream: StreamId,
        label: &str,
        flows: &[(Flow, u32)],
        hold: Option<(DeviceId, u32)>,
    ) -> TaskId {
        let start = self.flows.len();
        let task = self.add_comm(stream, label, flows.iter().map(|&(f, _)| f), hold);
        if self.flow_weights.is_empty() && flows.iter().any(|&(_, w)| w != 1) {
            // As much room as the flows have (`reserve_flows`).
            self.flow_weights.reserve_exact(self.flows.capacity());
            self.flow_weights.resize(self.flows.len(), 1);
        }
        if !self.flow_weights.is_empty() {
            for (slot, &(_, w)) in self.flow_weights[start..].iter_mut().zip(flows) {
                *slot = w;
            }
        }
        task
    }

    /// The member flows flow `flow` stands for (1 unless it was added
    /// weighted).
    #[inline]
    pub fn flow_weight(&self, flow: u32) -> u32 {
        if self.flow_weights.is_empty() {
            1
        } else {
            self.flow_weights[flow as usize]
        }
    }

    /// Whether any flow was added with a weight other than 1.
    #[inline]
    pub fn has_flow_weights(&self) -> bool {
        !self.flow_weights.is_empty()
    }

    /// Gives a communication task a fixed overhead (see [`Comm::overhead`]);
    /// other tasks are left alone.
    pub fn set_comm_overhead(&mut self, task: TaskId, overhead: SimDuration) {
        if let Some(&TaskRecord { kind: COMM, index, .. }) = self.tasks.get(task.0 as usize) {
            self.comms[index as usize].overhead = overhead;
        }
    }

    /// Gives a communication task's flows their own arrival latency in
    /// place of the sum of their path's link latencies: a protocol whose
    /// signalling is faster than the path's measured end-to-end latency
    /// (NCCL's LL, which writes flags with the data). Other tasks are left
    /// alone.
    pub fn set_comm_latency(&mut self, task: TaskId, latency: SimDuration) {
        if !matches!(self.tasks.get(task.0 as usize), Some(TaskRecord { kind: COMM, .. })) {
            return;
        }
        match self.comm_latency.binary_search_by_key(&task, |&(t, _)| t) {
            Ok(i) => self.comm_latency[i].1 = latency,
            Err(i) => self.comm_latency.insert(i, (task, latency)),
        }
    }

    /// The latency [`TaskGraph::set_comm_latency`] gave `task`, if any.
    pub fn comm_latency(&self, task: TaskId) -> Option<SimDuration> {
        if self.comm_latency.is_empty() {
            return None;
        }
        self.comm_latency.binary_search_by_key(&task, |&(t, _)| t).ok().map(|i| self.comm_latency[i].1)
    }

    /// Runs every device's kernels at its speed, in one pass over the
    /// tasks: device `d` runs at `speeds[d]` times its normal rate (a GPU
    /// 20 % slow: 0.8; 1: unchanged; a device past the slice's end is
    /// unchanged too), its arithmetic time divided by it. The devices'
    /// memory bandwidth is the platform's to scale
    /// ([`crate::Platform::slow_device`]). Returns the kernels changed per
    /// device (as long as `speeds`).
    pub fn slow_devices_kernels(&mut self, speeds: &[f64]) -> Vec<usize> {
        let mut changed = vec![0; speeds.len()];
        // Per (kernel entry, speed): the slowed entry, interned once.
        let mut slowed: HashMap<(u32, u64), u32> = HashMap::default();
        for i in 0..self.tasks.len() {
            let r = self.tasks[i];
            if !r.is_kernel() {
                continue;
            }
            let index = r.index;
            let mut k = self.kernels[index as usize];
            let d = self.record_device(&r) as usize;
            match speeds.get(d) {
                Some(&speed) if speed != 1.0 => {
                    let new = match slowed.get(&(index, speed.to_bits())) {
                        Some(&new) => new,
                        None => {
                            k.compute = SimDuration((k.compute.0 as f64 / speed).round() as u64);
                            let new = self.intern_kernel(k);
                            slowed.insert((index, speed.to_bits()), new);
                            new
                        }
                    };
                    self.tasks[i].index = new;
                    changed[d] += 1;
                }
                _ => {}
            }
        }
        changed
    }

    /// From now on, a path equal to one stored before gets that one's id
    /// instead of a copy: a graph whose every rank sends over the same
    /// routes layer after layer (every-rank training) keeps each route once.
    /// Off by default (ids then count every call).
    pub fn intern_paths(&mut self) {
        if self.path_index.is_none() {
            self.path_index = Some(HashMap::default());
        }
    }

    /// Stores a routed path and returns its id (no deduplication unless
    /// [`TaskGraph::intern_paths`]: callers that reuse a path keep its id).
    pub fn add_path(&mut self, links: &[LinkId]) -> PathId {
        self.add_path_from(links.iter().copied())
    }

    /// Stores a routed path given as an iterator (no intermediate allocation).
    pub fn add_path_from(&mut self, links: impl IntoIterator<Item = LinkId>) -> PathId {
        let start = self.path_links.len();
        self.path_links.extend(links);
        let id = PathId(self.path_offsets.len() as u32 - 1);
        if let Some(index) = &mut self.path_index {
            let new = &self.path_links[start..];
            if let Some(&old) = index.get(new) {
                self.path_links.truncate(start);
                return old;
            }
            index.insert(new.into(), id);
        }
        self.path_offsets.push(self.path_links.len() as u32);
        id
    }

    /// Reserves room for `flows` more flows and `links` more path links.
    pub fn reserve_flows(&mut self, flows: usize, links: usize) {
        self.flows.reserve(flows);
        self.path_offsets.reserve(flows);
        self.path_links.reserve(links);
    }

    /// Gives back the room the arenas grew into beyond what they hold (up
    /// to half of a large graph), e.g. before the engine allocates its own
    /// state; drops the path index of [`TaskGraph::intern_paths`] and the
    /// kernels' and delays' indices (rebuilt if a task is added after).
    pub fn shrink_to_fit(&mut self) {
        self.tasks.shrink_to_fit();
        self.comms.shrink_to_fit();
        self.kernels.shrink_to_fit();
        self.delays.shrink_to_fit();
        self.kernel_index = None;
        self.delay_index = None;
        self.deps.shrink_to_fit();
        self.flows.shrink_to_fit();
        self.flow_weights.shrink_to_fit();
        self.path_links.shrink_to_fit();
        self.path_offsets.shrink_to_fit();
        self.streams.shrink_to_fit();
        self.stream_device.shrink_to_fit();
        self.path_index = None;
    }

    /// `after` may start only once `before` has finished.
    pub fn add_dep(&mut self, before: TaskId, after: TaskId) {
        self.deps.push((before, after));
    }

    /// Every task in id order, by value.
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = Task> + '_ {
        (0..self.tasks.len() as u32).map(|i| self.task(TaskId(i)))
    }
    pub fn task(&self, id: TaskId) -> Task {
        let r = &self.tasks[id.0 as usize];
        Task { label: r.label, stream: r.stream, class: r.class, kind: self.record_kind(r) }
    }
    /// What task `id` is (cheaper than [`TaskGraph::task`] when the rest is
    /// not needed).
    #[inline]
    pub fn task_kind(&self, id: TaskId) -> TaskKind {
        self.record_kind(&self.tasks[id.0 as usize])
    }
    #[inline]
    pub fn task_stream(&self, id: TaskId) -> StreamId {
        self.tasks[id.0 as usize].stream
    }
    #[inline]
    pub fn task_class(&self, id: TaskId) -> TaskClass {
        self.tasks[id.0 as usize].class
    }
    #[inline]
    pub fn task_label(&self, id: TaskId) -> LabelId {
        self.tasks[id.0 as usize].label
    }
    /// Whether task `id` is a kernel, and its device.
    #[inline]
    pub fn kernel_device(&self, id: TaskId) -> Option<DeviceId> {
        let r = &self.tasks[id.0 as usize];
        r.is_kernel().then(|| DeviceId(self.record_device(r)))
    }
    /// The device of a kernel task's record.
    #[inline]
    fn record_device(&self, r: &TaskRecord) -> u32 {
        if r.kind == KERNEL {
            self.stream_device[r.stream.0 as usize]
        } else {
            self.kernels[r.index as usize].device.0
        }
    }
    #[inline]
    fn record_kind(&self, r: &TaskRecord) -> TaskKind {
        match r.kind {
            KERNEL => TaskKind::Kernel(Kernel {
                device: DeviceId(self.stream_device[r.stream.0 as usize]),
                ..self.kernels[r.index as usize]
            }),
            KERNEL_ON => TaskKind::Kernel(self.kernels[r.index as usize]),
            COMM => TaskKind::Comm(self.comms[r.index as usize].clone()),
            _ => TaskKind::Delay(self.delays[r.index as usize]),
        }
    }
    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }
    pub fn stream(&self, id: StreamId) -> &Stream {
        &self.streams[id.0 as usize]
    }
    pub fn deps(&self) -> &[(TaskId, TaskId)] {
        &self.deps
    }
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }
    pub fn comm_flows(&self, comm: &Comm) -> &[Flow] {
        &self.flows[comm.flows.start as usize..comm.flows.end as usize]
    }
    pub fn path(&self, id: PathId) -> &[LinkId] {
        let i = id.0 as usize;
        &self.path_links[self.path_offsets[i] as usize..self.path_offsets[i + 1] as usize]
    }
    /// The path of flow `flow` (which must exist), read from the flow
    /// itself only when flows and paths are not in step (see
    /// [`FlowPathLayout`]).
    #[inline]
    pub fn flow_path_id(&self, flow: u32) -> PathId {
        match self.flow_paths {
            FlowPathLayout::Shifted(d) => PathId(flow.wrapping_add(d)),
            _ => self.flows[flow as usize].path,
        }
    }
    pub fn path_count(&self) -> usize {
        self.path_offsets.len() - 1
    }
    /// The label of a task, e.g. for error messages.
    pub fn task_name(&self, id: TaskId) -> &str {
        self.label_str(self.task_label(id))
    }

    /// Checks every reference (streams, devices, links, paths, dependencies)
    /// and every number, and that the dependencies together with stream order
    /// have no cycle.
    pub fn validate(&self, platform: &Platform) -> Result<(), SimError> {
        let n_dev = platform.devices.len() as u32;
        // The flows and paths checked in bulk first (sequential sweeps, no
        // per-flow lookup): when all pass, the per-task loop skips them; when
        // one fails, that loop finds and names the first bad flow.
        let flows_ok = self.flows_and_paths_ok(platform);
        // Each kernel entry checked once: a task of a sound entry on a
        // known device needs no more (one read of its 16-byte record).
        let entry_ok: Vec<bool> = self.kernels.iter().map(|k| kernel_problem(k).is_none()).collect();
        for (i, r) in self.tasks.iter().enumerate() {
            let name = || self.task_name(TaskId(i as u32)).to_owned();
            if r.stream.0 as usize >= self.streams.len() {
                return Err(SimError::UnknownResource { task: name(), what: format!("stream #{}", r.stream.0) });
            }
            if r.is_kernel() && entry_ok[r.index as usize] && self.record_device(r) < n_dev {
                continue;
            }
            if r.kind == DELAY {
                continue;
            }
            match &self.record_kind(r) {
                TaskKind::Kernel(k) => {
                    if k.device.0 >= n_dev {
                        return Err(SimError::UnknownResource {
                            task: name(),
                            what: format!("device #{}", k.device.0),
                        });
                    }
                    if let Some(problem) = kernel_problem(k) {
                        return Err(SimError::BadTask { task: name(), problem });
                    }
                }
                TaskKind::Comm(c) => {
                    if c.flows.end as usize > self.flows.len() || c.flows.start > c.flows.end {
                        return Err(SimError::UnknownResource { task: name(), what: "a flow range".into() });
                    }
                    if let Some((d, _)) = c.hold {
                        if d.0 >= n_dev {
                            return Err(SimError::UnknownResource { task: name(), what: format!("device #{}", d.0) });
                        }
                    }
                    if flows_ok {
                        continue;
                    }
                    for (f, k) in self.comm_flows(c).iter().zip(c.flows.clone()) {
                        if f.path.0 as usize >= self.path_count() {
                            return Err(SimError::UnknownResource {
                                task: name(),
                                what: format!("path #{}", f.path.0),
                            });
                        }
                        if self.flow_weights.get(k as usize) == Some(&0) {
                            return Err(SimError::BadTask {
                                task: name(),
                                problem: "a weighted flow stands for at least one member flow, found 0".into(),
                            });
                        }
                        if !(f.bytes.is_finite() && f.bytes >= 0.0) {
                            return Err(SimError::BadTask {
                                task: name(),
                                problem: format!("flow bytes must be finite and non-negative, found {}", f.bytes),
                            });
                        }
                        for l in self.path(f.path) {
                            if l.0 as usize >= platform.links.len() {
                                return Err(SimError::UnknownResource { task: name(), what: format!("link #{}", l.0) });
                            }
                        }
                    }
                }
                TaskKind::Delay(_) => {}
            }
        }
        let len = self.tasks.len();
        for &(a, b) in &self.deps {
            for (x, other) in [(a, b), (b, a)] {
                if x.0 as usize >= len {
                    let task = if (other.0 as usize) < len {
                        self.task_name(other).to_owned()
                    } else {
                        format!("#{}", other.0)
                    };
                    return Err(SimError::DanglingDependency { task, missing: x.0, len });
                }
            }
        }
        self.check_acyclic()
    }

    /// Whether every flow names a stored path, has finite non-negative
    /// bytes and a weight of at least 1, and every stored path's links
    /// exist: what [`TaskGraph::validate`] checks flow by flow, in sweeps.
    fn flows_and_paths_ok(&self, platform: &Platform) -> bool {
        let paths = self.path_count() as u32;
        let links = platform.links.len();
        let max_link = self.path_links.iter().fold(0u32, |m, l| m.max(l.0));
        (self.path_links.is_empty() || (max_link as usize) < links)
            && self.flows.iter().all(|f| f.path.0 < paths && f.bytes.is_finite() && f.bytes >= 0.0)
            && !self.flow_weights.contains(&0)
    }

    /// Kahn's algorithm over explicit dependencies plus stream order (12
    /// bytes a task at most, besides the dependencies sorted by source).
    fn check_acyclic(&self) -> Result<(), SimError> {
        let n = self.tasks.len();
        let (next, mut indeg) = self.stream_order();
        let succ = Successors::new(self);
        for &b in succ.targets() {
            indeg[b as usize] += 1;
        }
        let mut queue: Vec<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
        let mut seen = 0usize;
        while let Some(i) = queue.pop() {
            seen += 1;
            let after = next[i as usize];
            for s in (after != NO_TASK).then_some(after).into_iter().chain(succ.of(i).iter().copied()) {
                indeg[s as usize] -= 1;
                if indeg[s as usize] == 0 {
                    queue.push(s);
                }
            }
        }
        if seen == n {
            return Ok(());
        }
        let stuck: Vec<String> =
            (0..n).filter(|&i| indeg[i] > 0).take(5).map(|i| self.task_name(TaskId(i as u32)).to_owned()).collect();
        Err(SimError::Cycle { count: n - seen, examples: stuck })
    }

    /// Per task, the next task of its stream ([`NO_TASK`] for a stream's
    /// last) and its number of stream predecessors (0 or 1).
    pub(crate) fn stream_order(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.tasks.len();
        let mut next = vec![NO_TASK; n];
        let mut preds = vec![0u32; n];
        let mut last = vec![NO_TASK; self.streams.len()];
        for (i, t) in self.tasks.iter().enumerate() {
            let s = t.stream.0 as usize;
            if last[s] != NO_TASK {
                next[last[s] as usize] = i as u32;
                preds[i] = 1;
            }
            last[s] = i as u32;
        }
        (next, preds)
    }
}

/// No task (a stream's last task has no next).
pub(crate) const NO_TASK: u32 = u32::MAX;

/// The dependencies grouped by the task they wait for (each group in the
/// order added): a counting sort, no comparison sort. A task's group is
/// found in O(1) by the rank of its bit among the tasks that have one (a
/// bit per task, a prefix count per 64 tasks), not by a binary search over
/// every dependency (tens of cache misses each in a 100M-task graph). 4
/// bytes a dependency, 4 a task with successors, and 1.5 bits a task.
pub(crate) struct Successors {
    /// The waiting tasks, grouped by the task they wait for, in id order.
    targets: Vec<u32>,
    /// Per task with successors, in id order: where its group starts in
    /// `targets`; and a last entry, `targets.len()`.
    starts: Vec<u32>,
    /// One bit per task: whether it has successors.
    has: Vec<u64>,
    /// Per word of `has`: the tasks with successors before it.
    before: Vec<u32>,
}

impl Successors {
    pub(crate) fn new(graph: &TaskGraph) -> Successors {
        let mut has = vec![0u64; graph.tasks.len().div_ceil(64)];
        for &(a, _) in &graph.deps {
            has[a.0 as usize / 64] |= 1 << (a.0 % 64);
        }
        let mut before = Vec::with_capacity(has.len());
        let mut with = 0u32;
        for w in &has {
            before.push(with);
            with += w.count_ones();
        }
        let mut succ = Successors { targets: Vec::new(), starts: vec![0; with as usize + 1], has, before };
        // Counts, then prefix sums, then each target in its group's next
        // slot in the order added.
        for &(a, _) in &graph.deps {
            let j = succ.index(a.0);
            succ.starts[j + 1] += 1;
        }
        for j in 1..succ.starts.len() {
            succ.starts[j] += succ.starts[j - 1];
        }
        let mut next = succ.starts.clone();
        succ.targets = vec![0; graph.deps.len()];
        for &(a, b) in &graph.deps {
            let j = succ.index(a.0);
            succ.targets[next[j] as usize] = b.0;
            next[j] += 1;
        }
        succ
    }

    /// The rank of task `t` among the tasks with successors (`t` has some).
    #[inline]
    fn index(&self, t: u32) -> usize {
        let (w, bit) = (t as usize / 64, t % 64);
        (self.before[w] + (self.has[w] & ((1u64 << bit) - 1)).count_ones()) as usize
    }

    /// Where the tasks waiting on task `t` lie in [`Successors::targets`].
    #[inline]
    pub(crate) fn range(&self, t: u32) -> Range<usize> {
        if self.has[t as usize / 64] & (1 << (t % 64)) == 0 {
            return 0..0;
        }
        let j = self.index(t);
        self.starts[j] as usize..self.starts[j + 1] as usize
    }

    /// The tasks waiting on task `t`, in the order their dependencies were
    /// added.
    #[inline]
    pub(crate) fn of(&self, t: u32) -> &[u32] {
        &self.targets[self.range(t)]
    }

    /// Every dependency's waiting task (a task once per dependency).
    pub(crate) fn targets(&self) -> &[u32] {
        &self.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::DeviceResource;

    fn platform() -> Platform {
        let mut p = Platform::default();
        p.add_device(DeviceResource { name: "gpu0".into(), units: 4, mem_bytes_per_s: 1e12 });
        p
    }

    #[test]
    fn successors_come_grouped_by_task_in_the_order_added() {
        let mut g = TaskGraph::new();
        let s = g.add_stream(0, "a");
        let t: Vec<TaskId> = (0..200).map(|i| g.add_delay(s, &format!("t{i}"), SimDuration::ZERO)).collect();
        // Across words of the bit set, out of id order, a task twice.
        for &(a, b) in &[(130, 199), (3, 150), (130, 140), (63, 64), (3, 10), (64, 65), (130, 199), (199, 0)] {
            g.add_dep(t[a], t[b]);
        }
        let succ = Successors::new(&g);
        let of = |i: u32| succ.of(i).to_vec();
        assert_eq!(of(3), [150, 10]);
        assert_eq!(of(63), [64]);
        assert_eq!(of(64), [65]);
        assert_eq!(of(130), [199, 140, 199]);
        assert_eq!(of(199), [0]);
        for i in [0, 1, 2, 4, 62, 65, 128, 129, 131, 198] {
            assert!(of(i).is_empty(), "task {i}");
        }
        assert_eq!(succ.targets().len(), 8);
    }

    #[test]
    fn cycle_across_streams_is_rejected() {
        let mut g = TaskGraph::new();
        let s0 = g.add_stream(0, "a");
        let s1 = g.add_stream(1, "b");
        let a1 = g.add_delay(s0, "a1", SimDuration::ZERO);
        let a2 = g.add_delay(s0, "a2", SimDuration::ZERO);
        let b1 = g.add_delay(s1, "b1", SimDuration::ZERO);
        g.add_dep(a2, b1);
        g.add_dep(b1, a1);
        let err = g.validate(&platform()).unwrap_err();
        assert!(matches!(err, SimError::Cycle { count: 3, .. }), "{err}");
    }

    #[test]
    fn dangling_dependency_is_rejected() {
        let mut g = TaskGraph::new();
        let s0 = g.add_stream(0, "a");
        let a1 = g.add_delay(s0, "a1", SimDuration::ZERO);
        g.add_dep(TaskId(7), a1);
        let err = g.validate(&platform()).unwrap_err();
        assert_eq!(err, SimError::DanglingDependency { task: "a1".into(), missing: 7, len: 1 });
    }

    #[test]
    fn labels_are_interned_and_paths_stored() {
        let mut g = TaskGraph::new();
        assert_eq!(g.label("x"), g.label("x"));
        let p0 = g.add_path(&[LinkId(3), LinkId(4)]);
        let p1 = g.add_path(&[]);
        let p2 = g.add_path(&[LinkId(1)]);
        assert_eq!(g.path(p0), &[LinkId(3), LinkId(4)]);
        assert!(g.path(p1).is_empty());
        assert_eq!(g.path(p2), &[LinkId(1)]);
        assert_eq!(g.path_count(), 3);
    }

    #[test]
    fn devices_share_the_entry_of_a_kernel_they_all_run() {
        let mut g = TaskGraph::new();
        let kernel = |device| Kernel {
            device: DeviceId(device),
            compute: SimDuration(7),
            mem_bytes: 3.0,
            units: UnitDemand::Share { max_units: 4 },
        };
        // Four ranks, each running the same kernel twice on its own stream.
        let streams: Vec<StreamId> = (0..4).map(|r| g.add_stream(r, "compute")).collect();
        let ids: Vec<TaskId> = (0..8u32)
            .map(|i| g.add_kernel(streams[(i % 4) as usize], "k", TaskClass::Compute, kernel(i % 4)))
            .collect();
        assert_eq!(g.kernels.len(), 1, "one entry for the four devices");
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(g.task_kind(id), TaskKind::Kernel(kernel(i as u32 % 4)));
            assert_eq!(g.kernel_device(id), Some(DeviceId(i as u32 % 4)));
        }
        // Devices 1 and 3 at different speeds: each gets its own slowed entry.
        assert_eq!(g.slow_devices_kernels(&[1.0, 0.5, 1.0, 0.25]), vec![0, 2, 0, 2]);
        for (i, &id) in ids.iter().enumerate() {
            let want = [7, 14, 7, 28][i % 4];
            assert_eq!(
                g.task_kind(id),
                TaskKind::Kernel(Kernel { compute: SimDuration(want), ..kernel(i as u32 % 4) })
            );
        }
        assert_eq!(g.kernels.len(), 3);
    }

    #[test]
    fn tasks_read_back_as_added_from_16_byte_records() {
        assert_eq!(std::mem::size_of::<TaskRecord>(), 16);
        let mut g = TaskGraph::new();
        let s0 = g.add_stream(0, "a");
        let k = |device, compute, units| Kernel {
            device: DeviceId(device),
            compute: SimDuration(compute),
            mem_bytes: 0.1 + compute as f64,
            units,
        };
        let kernels = [
            k(0, 5, UnitDemand::Share { max_units: 3 }),
            k(1, 5, UnitDemand::Share { max_units: 3 }),
            k(0, 5, UnitDemand::Hold(3)),
            k(0, 5, UnitDemand::Share { max_units: 3 }),
        ];
        let ids: Vec<TaskId> =
            kernels.iter().map(|&kernel| g.add_kernel(s0, "k", TaskClass::Compute, kernel)).collect();
        let long = SimDuration(u64::MAX - 7);
        let d = g.add_delay(s0, "d", long);
        g.shrink_to_fit();
        let z = g.add_delay(s0, "z", SimDuration::ZERO);
        let again = g.add_kernel(s0, "k", TaskClass::Compute, kernels[1]);
        for (&id, &kernel) in ids.iter().zip(&kernels) {
            assert_eq!(g.task_kind(id), TaskKind::Kernel(kernel));
        }
        assert_eq!(g.kernels.len(), 3, "equal kernels share an entry");
        assert_eq!(g.task_kind(again), TaskKind::Kernel(kernels[1]));
        assert_eq!(g.task_kind(d), TaskKind::Delay(long));
        assert_eq!(g.task_kind(z), TaskKind::Delay(SimDuration::ZERO));
        // Device 0 at half speed: its kernels take twice as long, device 1's are unchanged.
        assert_eq!(g.slow_devices_kernels(&[0.5]), vec![3]);
        assert_eq!(g.task_kind(ids[0]), TaskKind::Kernel(Kernel { compute: SimDuration(10), ..kernels[0] }));
        assert_eq!(g.task_kind(ids[1]), TaskKind::Kernel(kernels[1]));
        assert_eq!(g.task_kind(ids[2]), TaskKind::Kernel(Kernel { compute: SimDuration(10), ..kernels[2] }));
    }

    #[test]
    fn a_flows_path_is_found_in_step_or_scattered() {
        let mut g = TaskGraph::new();
        let s0 = g.add_stream(0, "a");
        let p: Vec<PathId> = (0..6).map(|k| g.add_path(&[LinkId(k)])).collect();
        let flow = |path| Flow { path, bytes: 1.0 };
        // Flows 0..3 on paths 1..4: in step, shifted by one.
        g.add_comm(s0, "c", [flow(p[1]), flow(p[2])], None);
        g.add_comm(s0, "c", [flow(p[3])], None);
        assert_eq!(g.flow_paths, FlowPathLayout::Shifted(1));
        for k in 0..3 {
            assert_eq!(g.flow_path_id(k), g.flows()[k as usize].path);
        }
        // Out of step: every flow reads its own path.
        g.add_comm(s0, "c", [flow(p[0]), flow(p[5])], None);
        assert_eq!(g.flow_paths, FlowPathLayout::Scattered);
        for k in 0..5 {
            assert_eq!(g.flow_path_id(k), g.flows()[k as usize].path);
        }
    }
}
