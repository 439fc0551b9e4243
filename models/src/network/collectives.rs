//! Collective algorithms lowered to flows in a `TaskGraph`.
//!
//! An algorithm is a [`CollectiveAlgorithm`] (the open extension point):
//! `ring` (reduce-scatter, all-gather, all-reduce = reduce-scatter then
//! all-gather, and send/recv) and `direct` (all-to-all, and the same
//! send/recv). Sizes follow nccl-tests: all-reduce the buffer, all-gather the
//! output, reduce-scatter the input, all-to-all the total each rank sends
//! (its own slice included). Reduction arithmetic is not costed: it hides
//! under the transfer on every GPU this models.

use moesim_sim::{Flow, StreamId, TaskGraph, TaskId};
use serde::Deserialize;

use crate::error::ModelError;
use crate::network::cluster::Cluster;

/// Which collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectiveOp {
    AllReduce,
    ReduceScatter,
    AllGather,
    AllToAll,
    SendRecv,
}

impl CollectiveOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectiveOp::AllReduce => "all-reduce",
            CollectiveOp::ReduceScatter => "reduce-scatter",
            CollectiveOp::AllGather => "all-gather",
            CollectiveOp::AllToAll => "all-to-all",
            CollectiveOp::SendRecv => "send-recv",
        }
    }
}

/// One collective over a group of GPU ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectiveSpec {
    pub op: CollectiveOp,
    /// Global GPU ranks, in the order the algorithm uses them.
    pub group: Vec<u32>,
    /// nccl-tests' size, bytes.
    pub bytes: f64,
}

/// A way to run a collective as tasks and flows.
pub trait CollectiveAlgorithm {
    fn name(&self) -> &'static str;
    /// Lowers `spec` into `graph`: member i's tasks go on `streams[i]` and
    /// wait for `after[i]`; returns the last task of each member.
    fn lower(
        &self,
        cluster: &Cluster,
        spec: &CollectiveSpec,
        graph: &mut TaskGraph,
        streams: &[StreamId],
        after: &[Option<TaskId>],
    ) -> Result<Vec<TaskId>, ModelError>;
}

/// The algorithms by name.
pub const ALGORITHMS: &[&str] = &["direct", "ring"];

/// Looks an algorithm up by name.
pub fn algorithm(name: &str) -> Result<Box<dyn CollectiveAlgorithm>, ModelError> {
    match name {
        "ring" => Ok(Box::new(Ring)),
        "direct" => Ok(Box::new(Direct)),
        other => Err(ModelError::invalid(
            "workload.algorithm",
            format!("expected one of {}, found \"{other}\"", ALGORITHMS.join(", ")),
        )),
    }
}

/// nccl-tests' bus-bandwidth factor: busbw = algbw x factor.
pub fn bus_bandwidth_factor(op: CollectiveOp, n: u32) -> f64 {
    let n = n.max(1) as f64;
    match op {
        CollectiveOp::AllReduce => 2.0 * (n - 1.0) / n,
        CollectiveOp::ReduceScatter | CollectiveOp::AllGather | CollectiveOp::AllToAll => (n - 1.0) / n,
        CollectiveOp::SendRecv => 1.0,
    }
}

/// Checks what every algorithm needs.
fn check(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    streams: &[StreamId],
    after: &[Option<TaskId>],
) -> Result<(), ModelError> {
    let n = spec.group.len();
    let need = if spec.op == CollectiveOp::SendRecv { "exactly 2" } else { "at least 2" };
    if n < 2 || (spec.op == CollectiveOp::SendRecv && n != 2) {
        return Err(ModelError::invalid(
            "workload.ranks",
            format!("{} needs {need} ranks, found {n}", spec.op.as_str()),
        ));
    }
    if !(spec.bytes.is_finite() && spec.bytes > 0.0) {
        return Err(ModelError::invalid(
            "workload.bytes",
            format!("expected a positive number of bytes, found {}", spec.bytes),
        ));
    }
    let gpus = cluster.gpu_count();
    if let Some(&r) = spec.group.iter().find(|&&r| r >= gpus) {
        return Err(ModelError::invalid("workload.ranks", format!("rank {r} is not in the cluster of {gpus} GPUs")));
    }
    let mut sorted = spec.group.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(ModelError::invalid("workload.ranks", format!("rank {} appears twice in the group", w[0])));
    }
    assert!(streams.len() == n && after.len() == n, "one stream and one `after` per group member");
    Ok(())
}

/// Ring: every step, each member sends one chunk to its successor.
pub struct Ring;

impl CollectiveAlgorithm for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn lower(
        &self,
        cluster: &Cluster,
        spec: &CollectiveSpec,
        graph: &mut TaskGraph,
        streams: &[StreamId],
        after: &[Option<TaskId>],
    ) -> Result<Vec<TaskId>, ModelError> {
        check(cluster, spec, streams, after)?;
        let n = spec.group.len();
        let (steps, chunk, label) = match spec.op {
            CollectiveOp::AllReduce => (2 * (n - 1), spec.bytes / n as f64, "all-reduce"),
            CollectiveOp::ReduceScatter => (n - 1, spec.bytes / n as f64, "reduce-scatter"),
            CollectiveOp::AllGather => (n - 1, spec.bytes / n as f64, "all-gather"),
            CollectiveOp::SendRecv => return Direct.lower(cluster, spec, graph, streams, after),
            CollectiveOp::AllToAll => {
                return Err(ModelError::invalid(
                    "workload.algorithm",
                    "a ring cannot run an all-to-all; use algorithm = \"direct\"",
                ))
            }
        };
        let mut scratch = Vec::new();
        let paths: Vec<_> =
            (0..n).map(|i| cluster.add_route(graph, spec.group[i], spec.group[(i + 1) % n], 0, &mut scratch)).collect();
        let mut prev: Vec<Option<TaskId>> = after.to_vec();
        for step in 0..steps {
            let name = format!("{label} step {}", step + 1);
            let now: Vec<TaskId> = (0..n)
                .map(|i| graph.add_comm(streams[i], &name, [Flow { path: paths[i], bytes: chunk }], None))
                .collect();
            for i in 0..n {
                // The first step waits for `after`; later ones for the
                // predecessor's previous step (its data). Stream order covers
                // the member's own previous step.
                let wait = if step == 0 { prev[i] } else { prev[(i + n - 1) % n] };
                if let Some(p) = wait {
                    graph.add_dep(p, now[i]);
                }
            }
            prev = now.into_iter().map(Some).collect();
        }
        Ok(prev.into_iter().map(|t| t.expect("at least one step")).collect())
    }
}

/// Direct: every member sends to every other member at once.
pub struct Direct;

impl CollectiveAlgorithm for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn lower(
        &self,
        cluster: &Cluster,
        spec: &CollectiveSpec,
        graph: &mut TaskGraph,
        streams: &[StreamId],
        after: &[Option<TaskId>],
    ) -> Result<Vec<TaskId>, ModelError> {
        check(cluster, spec, streams, after)?;
        let n = spec.group.len();
        let mut scratch = Vec::new();
        match spec.op {
            CollectiveOp::SendRecv => {
                let path = cluster.add_route(graph, spec.group[0], spec.group[1], 0, &mut scratch);
                let send = graph.add_comm(streams[0], "send", [Flow { path, bytes: spec.bytes }], None);
                let recv = graph.add_delay(streams[1], "recv", moesim_sim::SimDuration::ZERO);
                for (i, t) in [send, recv].into_iter().enumerate() {
                    if let Some(a) = after[i] {
                        graph.add_dep(a, t);
                    }
                }
                graph.add_dep(send, recv);
                Ok(vec![send, recv])
            }
            CollectiveOp::AllToAll => {
                let per_peer = spec.bytes / n as f64;
                graph.reserve_flows(n * (n - 1), n * (n - 1) * 6);
                let mut sends = Vec::with_capacity(n);
                let mut flows = Vec::with_capacity(n);
                for i in 0..n {
                    flows.clear();
                    for j in (0..n).filter(|&j| j != i) {
                        let path = cluster.add_route(graph, spec.group[i], spec.group[j], 0, &mut scratch);
                        flows.push(Flow { path, bytes: per_peer });
                    }
                    let t = graph.add_comm(streams[i], "all-to-all", flows.iter().copied(), None);
                    if let Some(a) = after[i] {
                        graph.add_dep(a, t);
                    }
                    sends.push(t);
                }
                Ok(join_all(graph, streams, &sends, "all-to-all done"))
            }
            other => Err(ModelError::invalid(
                "workload.algorithm",
                format!("direct runs all-to-all and send-recv; use algorithm = \"ring\" for {}", other.as_str()),
            )),
        }
    }
}

/// A member is done when every member's sends have arrived: one barrier task
/// (on the first stream) waits for all sends, and every other member's join
/// waits for it — O(n) dependencies instead of O(n^2).
pub(crate) fn join_all(graph: &mut TaskGraph, streams: &[StreamId], sends: &[TaskId], label: &str) -> Vec<TaskId> {
    let barrier = graph.add_delay(streams[0], label, moesim_sim::SimDuration::ZERO);
    for &s in sends {
        graph.add_dep(s, barrier);
    }
    let mut out = vec![barrier];
    for &stream in &streams[1..] {
        let j = graph.add_delay(stream, label, moesim_sim::SimDuration::ZERO);
        graph.add_dep(barrier, j);
        out.push(j);
    }
    out
}
