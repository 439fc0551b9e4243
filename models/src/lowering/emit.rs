//! Turning a rank's kernel items ([`crate::transformer::layers::Item`]) into engine tasks,
//! shared by the training step and the inference iterations: kernels in
//! issue order on the rank's compute stream with the launch gaps between
//! them (per kernel class, [`LaunchGaps`]), tensor-parallel all-reduces as mirrored ring transfers on its `tp`
//! stream, context-parallel K/V gathers and ring-attention transfers on its
//! `cp` stream, and an optional wait on an earlier task (an all-to-all)
//! before the first kernel.

use std::collections::VecDeque;

use moesim_sim::{DeviceId, Flow, SimDuration, StreamId, TaskGraph, TaskId};

use crate::network::cluster::Cluster;
use crate::network::collectives::{member_load, CollectiveOp, CollectiveSpec, MemberLoad, Protocol};
use crate::transformer::layers::{Item, KernelItem, KernelKind};

/// The streams of one simulated rank that compute items go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankStreams {
    /// Global rank (= engine device index).
    pub rank: u32,
    pub compute: StreamId,
    pub tp: StreamId,
    /// Context-parallel transfers (may be the `tp` stream).
    pub cp: StreamId,
}

/// The gap on a stream before a kernel of each class: the launch and CPU
/// time the GPU waits for between back-to-back kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchGaps([SimDuration; 4]);

impl LaunchGaps {
    /// The same gap before every kernel.
    pub fn uniform(gap: SimDuration) -> LaunchGaps {
        LaunchGaps([gap; 4])
    }

    /// A gap per class.
    pub fn per_kind(gap: impl Fn(KernelKind) -> SimDuration) -> LaunchGaps {
        LaunchGaps(KernelKind::ALL.map(gap))
    }

    /// The gap before a kernel of class `kind`.
    pub fn of(&self, kind: KernelKind) -> SimDuration {
        self.0[kind as usize]
    }

    /// The gaps before `items`' kernels, in all (with one gap for every
    /// class, a count: no kernel's class is worked out).
    fn total(&self, items: &[Item]) -> u64 {
        let kernels = items.iter().filter_map(|i| match i {
            Item::Kernel(k) => Some(k),
            _ => None,
        });
        if self.0.iter().all(|&g| g == self.0[0]) {
            kernels.count() as u64 * self.0[0].as_ps()
        } else {
            kernels.map(|k| self.of(k.kind()).as_ps()).sum()
        }
    }
}

/// What emitting needs besides the graph.
#[derive(Clone, Copy)]
pub struct Emitter<'c> {
    pub cluster: &'c Cluster,
    /// Tensor-parallel group size (consecutive ranks).
    pub tp: u32,
    /// Context-parallel group size (ranks `tp` apart).
    pub cp: u32,
    /// Gap before each kernel on a stream, by its class.
    pub launch_gaps: LaunchGaps,
}

impl Emitter<'_> {
    /// Emits `items` on `rank`'s compute stream after `*last` (stream
    /// order), the first one also after `wait`; `*last` becomes the last
    /// task. The launch gaps of the run of kernels go first as one delay
    /// (same total time on the stream). With nothing to run, a marker still
    /// carries the wait so later items do.
    pub fn compute(
        &self,
        graph: &mut TaskGraph,
        rank: RankStreams,
        items: &[Item],
        wait: Option<TaskId>,
        last: &mut Option<TaskId>,
    ) {
        self.compute_recorded(graph, rank, items, wait, last, &mut |_, _| {})
    }

    /// As [`Emitter::compute`], calling `record` with each kernel's task.
    pub fn compute_recorded(
        &self,
        graph: &mut TaskGraph,
        rank: RankStreams,
        items: &[Item],
        wait: Option<TaskId>,
        last: &mut Option<TaskId>,
        record: &mut dyn FnMut(TaskId, &KernelItem),
    ) {
        let mut pending_wait = wait;
        let gap_ps = self.launch_gaps.total(items);
        if gap_ps > 0 {
            let t = graph.add_delay(rank.compute, "launch gaps", SimDuration::from_ps(gap_ps));
            if let Some(w) = pending_wait.take() {
                graph.add_dep(w, t);
            }
            *last = Some(t);
        }
        let mut cp_sends = VecDeque::new();
        for item in items {
            let t = self.item(graph, rank, item, last, &mut cp_sends);
            if let Item::Kernel(k) = item {
                record(t, k);
            }
            if let Some(w) = pending_wait.take() {
                graph.add_dep(w, t);
            }
        }
        if let Some(w) = pending_wait {
            wait_on(graph, rank, "wait", Some(w), last);
        }
    }

    fn item(
        &self,
        graph: &mut TaskGraph,
        rank: RankStreams,
        item: &Item,
        last: &mut Option<TaskId>,
        cp_sends: &mut VecDeque<TaskId>,
    ) -> TaskId {
        match item {
            Item::Kernel(k) => {
                let kernel = k.cost.kernel(DeviceId(rank.rank));
                let t = graph.add_kernel(rank.compute, &k.label, k.class, kernel);
                *last = Some(t);
                t
            }
            Item::TpAllReduce { label, bytes } => {
                let t = self.tp_all_reduce(graph, rank, label, *bytes, *last);
                // The next kernel waits for the all-reduce.
                wait_on(graph, rank, label, Some(t), last)
            }
            Item::CpCollective { label, bytes } => {
                let cp = self.cp;
                // A ring all-gather on the Simple protocol (its messages are large).
                let load = MemberLoad {
                    algorithm: "ring",
                    protocol: Protocol::Simple,
                    succ: self.cp_successor(rank.rank),
                    bytes: (cp as f64 - 1.0) / cp as f64 * bytes,
                    steps: cp - 1,
                    hop_latency: None,
                };
                let t = self.mirror_ring(graph, rank.cp, rank.rank, label, &load, *last);
                wait_on(graph, rank, label, Some(t), last)
            }
            Item::CpSend { label, bytes, first } => {
                let mut scratch = Vec::new();
                let (path, charge) =
                    self.cluster.add_nccl_route(graph, rank.rank, self.cp_successor(rank.rank), 0, &mut scratch);
                let t = graph.add_comm(rank.cp, label, [Flow { path, bytes: *bytes * charge }], None);
                if let (true, Some(a)) = (*first, *last) {
                    graph.add_dep(a, t);
                }
                cp_sends.push_back(t);
                t
            }
            Item::CpWait { label } => wait_on(graph, rank, label, cp_sends.pop_front(), last),
        }
    }

    /// The next rank of `rank`'s context-parallel ring (`tp` ranks on,
    /// wrapping inside the group).
    fn cp_successor(&self, rank: u32) -> u32 {
        let (tp, cp) = (self.tp.max(1), self.cp.max(1));
        let c = (rank / tp) % cp;
        rank - c * tp + ((c + 1) % cp) * tp
    }

    /// An all-reduce over the tensor-parallel group of `rank`, by the
    /// algorithm NCCL's cost model picks for it (ring, or NVLS in-switch
    /// reduction where the NVSwitch has it), as this member's load
    /// ([`member_load`]) mirrored for the others.
    pub fn tp_all_reduce(
        &self,
        graph: &mut TaskGraph,
        rank: RankStreams,
        label: &str,
        bytes: f64,
        after: Option<TaskId>,
    ) -> TaskId {
        let tp = self.tp;
        let r = rank.rank;
        let base = r - r % tp;
        let spec = CollectiveSpec { op: CollectiveOp::AllReduce, group: (base..base + tp).collect(), bytes };
        let load = member_load(self.cluster, &spec, (r - base) as usize);
        self.mirror_ring(graph, rank.tp, r, label, &load, after)
    }

    /// A collective as seen by one member (`load`, [`member_load`]): one
    /// flow of the bytes it sends over its edge to `load.succ`, then the
    /// remaining steps' latencies (the protocol's per-step latency where
    /// NCCL's model picks LL or LL128, else the route's link latencies).
    /// Exact for a ring whose edges are alike (every member sends the same
    /// bytes over a similar link at the same time). A copy loop's flow (not
    /// NVLS) charges [`Cluster::nccl_charge`] per byte on an NVLink route.
    #[allow(clippy::too_many_arguments)]
    pub fn mirror_ring(
        &self,
        graph: &mut TaskGraph,
        stream: StreamId,
        rank: u32,
        label: &str,
        load: &MemberLoad,
        after: Option<TaskId>,
    ) -> TaskId {
        let mut scratch = Vec::new();
        let (path, charge) = self.cluster.add_nccl_route(graph, rank, load.succ, 0, &mut scratch);
        let charge = if load.copy_loop() { charge } else { 1.0 };
        let latency_ps: u64 = match load.hop_latency {
            Some(hop) => hop.as_ps(),
            None => graph.path(path).iter().map(|l| self.cluster.platform.link(*l).latency.as_ps()).sum(),
        };
        let t = graph.add_comm(stream, label, [Flow { path, bytes: load.bytes * charge }], None);
        if let Some(hop) = load.hop_latency {
            graph.set_comm_latency(t, hop);
        }
        if let Some(a) = after {
            graph.add_dep(a, t);
        }
        let extra = SimDuration::from_ps(latency_ps.saturating_mul(load.steps.saturating_sub(1) as u64));
        if extra > SimDuration::ZERO {
            graph.add_delay(stream, label, extra)
        } else {
            t
        }
    }
}

/// A zero marker on `rank`'s compute stream after `task`: what comes next
/// on the stream waits for it. It becomes `*last`.
fn wait_on(
    graph: &mut TaskGraph,
    rank: RankStreams,
    label: &str,
    task: Option<TaskId>,
    last: &mut Option<TaskId>,
) -> TaskId {
    let m = graph.add_delay(rank.compute, label, SimDuration::ZERO);
    if let Some(t) = task {
        graph.add_dep(t, m);
    }
    *last = Some(m);
    m
}
