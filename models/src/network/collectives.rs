//! Collective algorithms lowered to flows in a `TaskGraph`, as NCCL runs them.
//!
//! An algorithm is a [`CollectiveAlgorithm`] (the open extension point):
//!
//! - `ring`: reduce-scatter, all-gather, all-reduce (= reduce-scatter then
//!   all-gather) step by step around the group, and send/recv;
//! - `tree`: NCCL's double binary tree for all-reduce (chains inside a node,
//!   binary trees over the nodes, half the data on each of two trees whose
//!   inner nodes differ), reduce up and broadcast down, pipelined by chunks;
//! - `nvls`: NVLink SHARP on an NVSwitch (all-reduce, reduce-scatter,
//!   all-gather): each member's shard is reduced in the switch
//!   (`multimem.ld_reduce`: every GPU sends its copy of the shard up once, the
//!   owner receives the sum once) and multicast back (`multimem.st`: the
//!   owner sends it once, the switch delivers it to every GPU), the two
//!   phases pipelined by chunks, at NCCL's NVLink rate x the topology's
//!   `nvls_efficiency`, less what NCCL's chunk steps cost
//!   (`nvls_chunk_overhead_ns` per chunk of NCCL's size-dependent chunk);
//! - `hierarchical`: all-reduce as an intra-node reduce-scatter (NVLS where
//!   the node has it, else ring), an inter-node all-reduce of each shard
//!   among the GPUs of the same local index (ring), and an intra-node
//!   all-gather; all-to-all as an intra-node exchange to the GPU of the
//!   destination's local index, then one aggregated transfer per remote node
//!   over that GPU's own NIC;
//! - `direct`: every pair at once: all-to-all, send/recv, reduce-scatter
//!   (each shard to its owner), all-gather (each shard to every peer) and
//!   all-reduce (the one, then the other), as ASTRA-sim's direct collectives
//!   on a fully connected network;
//! - `auto`: the one NCCL's cost model picks (see [`choose`]).
//!
//! A direct exchange has a member flow per ordered pair of ranks, n^2 in
//! all. [`DirectNodePair`] (`workload.flow_grouping = "node-pair"`) runs
//! it on a multi-plane fabric as weighted flows instead, an approximation
//! with a measured error (see its doc and the README).
//!
//! Pipelined algorithms cut the data into chunks ([`Pipelining`]) and keep
//! several chunks in flight per member (one stream per slot), so a chunk's
//! latency hides under the next one's transfer. NCCL's fixed per-kernel
//! latencies ([`nccl`]) are a delay before the first transfer; per-hop
//! latencies come from the links on the Simple protocol, and from NCCL's
//! per-protocol hardware latencies on LL and LL128 ([`Protocol`]: ring and
//! tree run any of the three, whose bytes on the wire and latencies follow
//! NCCL's cost model; `auto` picks algorithm and protocol together).
//!
//! The ring's, tree's, direct and two-phase flows are NCCL's copy loops: on
//! a route of NVLink links only each charges [`Cluster::nccl_charge`] bytes
//! per byte it moves, so it runs at NCCL's own NVLink rate
//! (`topology.nccl_nvlink_efficiency`) rather than the links' DeepEP-fitted
//! one. NVLS flows run at that rate x `nvls_efficiency`, less the chunk
//! overhead (see `NvlsDomain::rate`). [`estimates`] weighs the same rates
//! as NCCL's tuner does (without the chunk overhead, which it ignores).
//!
//! Sizes follow nccl-tests: all-reduce the buffer, all-gather the output,
//! reduce-scatter the input, all-to-all the total each rank sends (its own
//! slice included). Reduction arithmetic is not costed: it hides under the
//! transfer on every GPU this models (and in the switch for NVLS, at the
//! efficiency above).

use moesim_sim::{Flow, LinkId, PathId, SimDuration, StreamId, TaskGraph, TaskId};
use moesim_topologies::EdgeIndex;
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::ModelError;
use crate::network::cluster::Cluster;

/// Senders a direct all-to-all routes at once, in parallel (their routes
/// are held until stored: 64 x n x ~6 links of 4 bytes, 6 MB at n = 4,096).
const ROUTE_BLOCK: usize = 64;

/// Which collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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

/// NCCL's published model constants, from NVIDIA/nccl `src/graph/tuning.cc`
/// (`ncclTunerConstantsDefaults`, `nvlsEfficiency`, `ncclTopoTuneModel`)
/// and `src/include/device.h` (`NCCL_STEPS`, `ALLREDUCE_SLICESTEPS`) with
/// the default 4 MiB `NCCL_BUFFSIZE`. Tables by protocol are indexed by
/// [`Protocol`] (LL, LL128, Simple). moesim uses the base latencies as each
/// kernel's fixed cost, LL's and LL128's hardware latencies as their
/// per-step latency, and all of them in [`choose`]'s estimate.
pub mod nccl {
    pub use moesim_topologies::NcclTuner;

    /// `baseLatencies[Ring]` (LL, LL128, Simple), µs.
    pub const RING_BASE_BY_PROTOCOL_US: [f64; 3] = [6.6, 14.0, 8.4];
    /// `baseLatencies[Tree]` (LL, LL128, Simple), µs.
    pub const TREE_BASE_BY_PROTOCOL_US: [f64; 3] = [6.8, 14.0, 8.4];
    /// `hwLatencies[NVLINK][Ring]` (LL, LL128, Simple), µs per step.
    pub const RING_NVLINK_BY_PROTOCOL_US: [f64; 3] = [0.6, 1.9, 3.4];
    /// `hwLatencies[NVLINK][Tree]` (LL, LL128, Simple), µs per hop.
    pub const TREE_NVLINK_BY_PROTOCOL_US: [f64; 3] = [0.6, 1.25, 4.0];
    /// `hwLatencies[NET][Ring]` (LL, LL128, Simple), µs per step.
    pub const RING_NET_BY_PROTOCOL_US: [f64; 3] = [2.7, 4.0, 14.0];
    /// `hwLatencies[NET][Tree]` (LL, LL128, Simple), µs per level.
    pub const TREE_NET_BY_PROTOCOL_US: [f64; 3] = [5.0, 8.5, 14.0];
    /// `llMaxBws` of a job over 2 nodes and over more (the Intel-CPU row),
    /// GB/s: the bus bandwidth LL reaches at most between nodes. Within one
    /// node the cap is the GPU generation's (the device's
    /// `nccl_ll_max_busbw_gb_per_s`).
    pub const LL_MAX_BUSBW_2_NODES_GB_PER_S: f64 = 39.0;
    pub const LL_MAX_BUSBW_MORE_NODES_GB_PER_S: f64 = 20.4;
    /// The constants of one generation of NCCL's tuner that differ between
    /// generations (`topology.nccl_version`).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Tuner {
        pub generation: NcclTuner,
        /// `baseLatencies[Tree]` (LL, LL128, Simple), µs.
        pub tree_base_us: [f64; 3],
        /// `hwLatencies[NVLINK][Tree]`, µs per hop.
        pub tree_nvlink_us: [f64; 3],
        /// `hwLatencies[NET][Tree]`, µs per level.
        pub tree_net_us: [f64; 3],
        /// `hwLatencies[NVLINK][NVLS][Simple]`, µs.
        pub nvls_us: f64,
        /// `llMaxBws` inside a node at most, GB/s (2.19-2.20: 87.7 for
        /// every generation from Ampere on; 2.21 on: none beyond the
        /// device's `nccl_ll_max_busbw_gb_per_s`).
        pub ll_max_busbw_gb_per_s: f64,
    }

    /// NCCL 2.21 to 2.30 (the tables above).
    pub const TUNER_2_21: Tuner = Tuner {
        generation: NcclTuner::V2_21,
        tree_base_us: TREE_BASE_BY_PROTOCOL_US,
        tree_nvlink_us: TREE_NVLINK_BY_PROTOCOL_US,
        tree_net_us: TREE_NET_BY_PROTOCOL_US,
        nvls_us: NVLS_US,
        ll_max_busbw_gb_per_s: f64::INFINITY,
    };

    /// NCCL 2.19-2.20 (`src/graph/tuning.cc` at v2.19.3 / v2.20.5): the tree
    /// on Simple without a base latency but 28 µs per hop, NVLS 23 µs, LL
    /// capped at 87.7 GB/s in a node; ring LL at 1/4 of the bus bandwidth
    /// (all-reduce, or across nodes; 1/3 otherwise), ring LL128 at 0.7 with
    /// one GPU per node; NVLS's algbw 5/6 of its bus bandwidth.
    pub const TUNER_2_19: Tuner = Tuner {
        generation: NcclTuner::V2_19,
        tree_base_us: [6.8, 14.0, 0.0],
        tree_nvlink_us: [0.6, 1.25, 28.0],
        tree_net_us: [5.0, 8.5, 28.0],
        nvls_us: 23.0,
        ll_max_busbw_gb_per_s: 87.7,
    };

    /// The constants of a generation.
    pub fn tuner(generation: NcclTuner) -> Tuner {
        match generation {
            NcclTuner::V2_19 => TUNER_2_19,
            NcclTuner::V2_21 => TUNER_2_21,
        }
    }

    /// `baseLatencies[Ring][Simple]`, µs.
    pub const RING_BASE_US: f64 = RING_BASE_BY_PROTOCOL_US[2];
    /// `baseLatencies[Tree][Simple]`, µs.
    pub const TREE_BASE_US: f64 = TREE_BASE_BY_PROTOCOL_US[2];
    /// `hwLatencies[NVLINK][NVLS][Simple]` (its base latency is 0), µs: the
    /// whole NVLS kernel's latency in NCCL's model.
    pub const NVLS_US: f64 = 25.0;
    /// Tree all-reduce bandwidth refinement (`busBw * .92`).
    pub const TREE_BW_FACTOR: f64 = 0.92;
    /// Simple slice: 4 MiB buffer / `NCCL_STEPS` (8) x `ALLREDUCE_SLICESTEPS` (2).
    pub const SLICE_BYTES: f64 = 1_048_576.0;
    /// Slices in flight per connection: `NCCL_STEPS` / `ALLREDUCE_SLICESTEPS`.
    pub const SLICES_IN_FLIGHT: usize = 4;
    /// NVLS's largest chunk: `NCCL_NVLS_CHUNKSIZE`'s default, 128 KiB
    /// (`src/transport/nvls.cc`).
    pub const NVLS_CHUNK_BYTES: f64 = 131_072.0;

    /// The chunk NCCL's NVLS kernel moves per step for a collective of
    /// `bytes` with `concurrent_ops` = NVLS channels x heads (one head per
    /// rank of the NVLink domain) running at once: 128 KiB, halved down to
    /// 16 KiB as the message shrinks (`src/enqueue.cc`, the NVLS branch of
    /// the chunk-size tuning: 64 KiB below 64 x ops x 128 KiB, 32 KiB below
    /// 8 x ops x 64 KiB, 16 KiB below 2 x ops x 32 KiB).
    pub fn nvls_chunk_bytes(bytes: f64, concurrent_ops: f64) -> f64 {
        let mut c = NVLS_CHUNK_BYTES;
        for (times, next) in [(64.0, 65_536.0), (8.0, 32_768.0), (2.0, 16_384.0)] {
            if bytes < times * concurrent_ops * c && c > next {
                c = next;
            }
        }
        c
    }
}

/// NCCL's protocols: how a copy loop tells the receiver that data arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A flag with every 8 bytes of data (16-byte stores): the lowest
    /// latency, at most half the bandwidth.
    Ll,
    /// A flag with every 120 bytes of data (128-byte lines).
    Ll128,
    /// Bulk copies, then a fence and a flag per step: the full bandwidth.
    Simple,
}

/// The `protocol` names a collective accepts (`auto`: NCCL's cost model
/// picks).
pub const PROTOCOLS: &[&str] = &["auto", "ll", "ll128", "simple"];

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Ll, Protocol::Ll128, Protocol::Simple];

    /// The column of [`nccl`]'s tables.
    fn index(self) -> usize {
        match self {
            Protocol::Ll => 0,
            Protocol::Ll128 => 1,
            Protocol::Simple => 2,
        }
    }

    /// NCCL's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ll => "LL",
            Protocol::Ll128 => "LL128",
            Protocol::Simple => "Simple",
        }
    }

    /// A `protocol` key: `None` for `auto`; else what was expected.
    pub fn parse(name: &str) -> Result<Option<Protocol>, String> {
        match name {
            "auto" => Ok(None),
            "ll" => Ok(Some(Protocol::Ll)),
            "ll128" => Ok(Some(Protocol::Ll128)),
            "simple" => Ok(Some(Protocol::Simple)),
            other => Err(format!("expected one of {}, found \"{other}\"", PROTOCOLS.join(", "))),
        }
    }
}

/// How a pipelined algorithm cuts its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pipelining {
    /// Bytes per chunk (per member and tree for `tree`, of the whole buffer
    /// for `nvls`); the chunk count is capped at [`Pipelining::MAX_CHUNKS`],
    /// so very large collectives use larger chunks.
    pub chunk_bytes: f64,
    /// Chunks a member keeps in flight at once.
    pub in_flight: usize,
}

impl Pipelining {
    /// Bounds the task count of one collective.
    pub const MAX_CHUNKS: usize = 64;

    /// How many chunks `bytes` makes.
    pub fn chunks(&self, bytes: f64) -> usize {
        let n = (bytes / self.chunk_bytes.max(1.0)).ceil();
        if n.is_finite() {
            (n as usize).clamp(1, Self::MAX_CHUNKS)
        } else {
            Self::MAX_CHUNKS
        }
    }
}

impl Default for Pipelining {
    /// NCCL's Simple slice and slices in flight (see [`nccl`]).
    fn default() -> Self {
        Pipelining { chunk_bytes: nccl::SLICE_BYTES, in_flight: nccl::SLICES_IN_FLIGHT }
    }
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
pub const ALGORITHMS: &[&str] = &["auto", "direct", "hierarchical", "nvls", "ring", "tree"];

/// Looks an algorithm up by name, with NCCL's default pipelining.
pub fn algorithm(name: &str) -> Result<Box<dyn CollectiveAlgorithm>, ModelError> {
    algorithm_with(name, Pipelining::default())
}

/// An algorithm as an idealised collective model runs it, with no kernel
/// launch latency before the first transfer: ASTRA-sim's analytical
/// collectives, which the Chakra replay is compared with. Only the ring
/// has such a latency among the algorithms it uses.
pub fn algorithm_without_launch_latency(name: &str) -> Result<Box<dyn CollectiveAlgorithm>, ModelError> {
    match name {
        "ring" => Ok(Box::new(Ring { launch_us: 0.0, protocol: Protocol::Simple })),
        other => algorithm(other),
    }
}

/// Looks an algorithm up by name; pipelined ones cut their data as `pipe`
/// says; ring and tree use the Simple protocol.
pub fn algorithm_with(name: &str, pipe: Pipelining) -> Result<Box<dyn CollectiveAlgorithm>, ModelError> {
    algorithm_with_protocol(name, pipe, Protocol::Simple)
}

/// As [`algorithm_with`], with ring and tree on `protocol` (the other
/// algorithms have one protocol: NVLS and the direct exchanges are
/// Simple, `auto` picks its own).
pub fn algorithm_with_protocol(
    name: &str,
    pipe: Pipelining,
    protocol: Protocol,
) -> Result<Box<dyn CollectiveAlgorithm>, ModelError> {
    match name {
        "auto" => Ok(Box::new(Auto { pipe })),
        "ring" => Ok(Box::new(Ring::nccl(protocol))),
        "direct" => Ok(Box::new(Direct)),
        "tree" => Ok(Box::new(Tree { pipe, protocol })),
        "nvls" => Ok(Box::new(Nvls { pipe })),
        "hierarchical" => Ok(Box::new(Hierarchical { pipe })),
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

/// Ring: every step, each member sends one chunk to its successor. Each
/// member's kernel first waits its launch latency (NCCL's ring base
/// latency; none for an idealised simulator's ring, see
/// [`algorithm_without_launch_latency`]). On LL or LL128 each step's data
/// costs the protocol's bytes on the wire ([`protocol_charge`]) and arrives
/// NCCL's per-step latency of the protocol after it is sent
/// ([`protocol_hop_latency`]) instead of the route's.
pub struct Ring {
    pub launch_us: f64,
    pub protocol: Protocol,
}

impl Ring {
    /// The ring as NCCL runs it on `protocol`.
    pub fn nccl(protocol: Protocol) -> Ring {
        Ring { launch_us: nccl::RING_BASE_BY_PROTOCOL_US[protocol.index()], protocol }
    }
}

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
                    "a ring cannot run an all-to-all; use algorithm = \"direct\" or \"hierarchical\"",
                ))
            }
        };
        let mut prev = launch(graph, streams, after, "ring launch", self.launch_us);
        let mut scratch = Vec::new();
        let proto = protocol_charge(cluster, spec, "ring", self.protocol);
        let paths: Vec<(PathId, f64, Option<SimDuration>)> = (0..n)
            .map(|i| {
                let (path, charge) =
                    cluster.add_nccl_route(graph, spec.group[i], spec.group[(i + 1) % n], 0, &mut scratch);
                (path, charge * proto, protocol_hop_latency(cluster, &scratch, "ring", self.protocol))
            })
            .collect();
        for step in 0..steps {
            let name = format!("{label} step {}", step + 1);
            let now: Vec<TaskId> = (0..n)
                .map(|i| {
                    let (path, charge, hop) = paths[i];
                    let t = graph.add_comm(streams[i], &name, [Flow { path, bytes: chunk * charge }], None);
                    if let Some(hop) = hop {
                        graph.set_comm_latency(t, hop);
                    }
                    t
                })
                .collect();
            for i in 0..n {
                // The first step waits for the member's own launch; later
                // ones for the predecessor's previous step (its data).
                // Stream order covers the member's own previous step.
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

/// Each member's kernel launch: a delay of NCCL's fixed latency after the
/// member's `after`.
fn launch(
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
    label: &str,
    us: f64,
) -> Vec<Option<TaskId>> {
    streams
        .iter()
        .zip(after)
        .map(|(&s, a)| {
            let t = graph.add_delay(s, label, SimDuration::from_us_f64(us));
            if let Some(a) = a {
                graph.add_dep(*a, t);
            }
            Some(t)
        })
        .collect()
}

/// Direct: every member sends to every other member at once (all-reduce in
/// two such exchanges).
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
        let mut scratch = Vec::new();
        match spec.op {
            CollectiveOp::SendRecv => {
                let (path, charge) = cluster.add_nccl_route(graph, spec.group[0], spec.group[1], 0, &mut scratch);
                let send = graph.add_comm(streams[0], "send", [Flow { path, bytes: spec.bytes * charge }], None);
                let recv = graph.add_delay(streams[1], "recv", moesim_sim::SimDuration::ZERO);
                for (i, t) in [send, recv].into_iter().enumerate() {
                    if let Some(a) = after[i] {
                        graph.add_dep(a, t);
                    }
                }
                graph.add_dep(send, recv);
                Ok(vec![send, recv])
            }
            _ => exchanges(spec, after, |after, per_peer, label| {
                Ok(exchange(cluster, spec, graph, streams, after, per_peer, label))
            }),
        }
    }
}

/// A direct algorithm's exchanges for `spec.op` (all but send/recv), each
/// done by `exchange(after, bytes per peer, label)`. All-to-all: each
/// member's slice for each peer. Reduce-scatter: each shard to its owner;
/// all-gather: each member's shard to every peer; all-reduce: the one, then
/// the other.
fn exchanges(
    spec: &CollectiveSpec,
    after: &[Option<TaskId>],
    mut exchange: impl FnMut(&[Option<TaskId>], f64, &'static str) -> Result<Vec<TaskId>, ModelError>,
) -> Result<Vec<TaskId>, ModelError> {
    let shard = spec.bytes / spec.group.len() as f64;
    if spec.op == CollectiveOp::AllReduce {
        let scattered = exchange(after, shard, "reduce-scatter")?;
        let after: Vec<Option<TaskId>> = scattered.into_iter().map(Some).collect();
        exchange(&after, shard, "all-gather")
    } else {
        exchange(after, shard, spec.op.as_str())
    }
}

/// Every member sends `per_peer` bytes to every other at once (one task per
/// member, after its `after`); done when every send has arrived.
fn exchange(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
    per_peer: f64,
    label: &str,
) -> Vec<TaskId> {
    let n = spec.group.len();
    let mut sends = Vec::with_capacity(n);
    let mut flows = Vec::with_capacity(n);
    // The n^2 routes are most of the lowering: a block of senders is routed
    // in parallel (rayon), then stored in sender order, so the graph is the
    // same at any thread count; the next block is routed while this one is
    // stored (two sets of buffers, swapped). Each sender slot's buffers are
    // reused from block to block (allocating and growing them per sender
    // cost as much as a tenth of a 4,096-GPU run in malloc and page faults).
    let slots = ROUTE_BLOCK.min(n);
    let mut routed: Vec<(Vec<LinkId>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); slots];
    let mut ahead: Vec<(Vec<LinkId>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); slots];
    let route_block = |block: usize, routed: &mut [(Vec<LinkId>, Vec<u32>)]| {
        let senders = n.min(block + ROUTE_BLOCK) - block;
        routed[..senders].par_iter_mut().enumerate().for_each_init(Vec::new, |scratch, (k, (links, ends))| {
            let i = block + k;
            links.clear();
            ends.clear();
            for j in (0..n).filter(|&j| j != i) {
                cluster.route_links(spec.group[i], spec.group[j], 0, scratch, links);
                ends.push(links.len() as u32);
            }
        });
    };
    if n > 0 {
        route_block(0, &mut routed);
    }
    for block in (0..n).step_by(ROUTE_BLOCK) {
        let senders = n.min(block + ROUTE_BLOCK) - block;
        if block == 0 {
            // Room for every flow and, at the first block's mean path length
            // (plus 2 %), every path: a guess short of the real length
            // doubles the largest array of the lowering.
            let links: usize = routed[..senders].iter().map(|r| r.0.len()).sum();
            let flows = senders * (n - 1);
            let per_flow = (links as f64 / flows.max(1) as f64 * 1.02).ceil() as usize;
            graph.reserve_flows(n * (n - 1), n * (n - 1) * per_flow);
        }
        let next = block + ROUTE_BLOCK;
        let mut store = || {
            for (k, (links, ends)) in routed[..senders].iter().enumerate() {
                let i = block + k;
                flows.clear();
                let mut from = 0;
                for &end in ends {
                    let route = &links[from..end as usize];
                    let path = graph.add_path(route);
                    from = end as usize;
                    flows.push(Flow { path, bytes: per_peer * cluster.nccl_charge_of_links(route) });
                }
                let t = graph.add_comm(streams[i], label, flows.iter().copied(), None);
                if let Some(a) = after[i] {
                    graph.add_dep(a, t);
                }
                sends.push(t);
            }
        };
        if next < n {
            rayon::join(store, || route_block(next, &mut ahead));
        } else {
            store();
        }
        std::mem::swap(&mut routed, &mut ahead);
    }
    join_all(graph, streams, &sends, &format!("{label} done"))
}

/// How a direct exchange's member flows (one per ordered pair of ranks)
/// become the engine's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FlowGrouping {
    /// Every member flow routed and simulated on its own (exact).
    #[default]
    Exact,
    /// On a multi-plane fabric, the members that cross one plane from one
    /// node to another as one weighted flow ([`DirectNodePair`]).
    NodePair,
}

impl FlowGrouping {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowGrouping::Exact => "exact",
            FlowGrouping::NodePair => "node-pair",
        }
    }
}

/// The engine's flows of one direct exchange among `nodes` whole nodes of
/// `gpus_per_node` GPUs under [`DirectNodePair`]: a weighted flow per
/// (source node, destination node, plane), two per ordered pair of GPUs
/// of a node.
pub fn node_pair_flows(nodes: u64, gpus_per_node: u64) -> u64 {
    nodes * nodes.saturating_sub(1) * gpus_per_node + 2 * nodes * gpus_per_node * gpus_per_node.saturating_sub(1)
}

/// The direct exchanges (all-to-all, reduce-scatter, all-gather,
/// all-reduce) with their member flows grouped by node pair and plane, for
/// multi-plane fabrics (NIC i of every node on plane i, no links between
/// planes, so a member from local GPU g to remote local GPU h != g crosses
/// NVLink to GPU h of its own node and then plane h, or plane g and then
/// NVLink to GPU h at its destination; its exact route picks one by hash).
///
/// Each member takes the plane its exact route takes (its first hop,
/// hashed as the exact route is: [`Cluster::first_route_link`]), so the
/// members per (source node, destination node, plane) and the forwarded
/// members per NVLink route are exactly the exact exchange's. The members
/// from node a to node b over plane p become one flow of that weight on
/// the route from a's GPU p to b's GPU p (its ECMP choice: that member's).
/// The NVLink hops are their own flows, so NVLink link loads stay right:
/// on each node, GPU g's route to GPU h carries the member from g to h
/// (weight 1, with NCCL's NVLink charge) and one flow of the members
/// forwarded over it (at their source or their destination).
///
/// What is approximate: the members of a group share one spine instead of
/// drawing one each (more collisions, so the time errs high); a forwarded
/// member's NVLink hop no longer holds back its network hop (two flows,
/// each at its own max-min rate; NVLink has about 3x the NIC's rate here);
/// and a network flow arrives its route's latency plus one NVLink
/// forwarding after its last byte when it has forwarded members (the
/// latest of them). Each member's network flows go on streams of their own,
/// one per arrival latency (`TaskGraph::set_comm_latency`). The error
/// against the exact exchange on the multi-plane fat-tree is measured in
/// the README ("Speed") and bounded by `tests/flow_grouping.rs`. Needs
/// whole nodes (every GPU of each node in the group).
pub struct DirectNodePair;

impl CollectiveAlgorithm for DirectNodePair {
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
        match spec.op {
            CollectiveOp::SendRecv => Direct.lower(cluster, spec, graph, streams, after),
            _ => exchanges(spec, after, |after, per_peer, label| {
                exchange_node_pair(cluster, spec, graph, streams, after, per_peer, label)
            }),
        }
    }
}

/// Source nodes [`DirectNodePair`] works on at once, in parallel.
const NODE_BLOCK: usize = 16;

/// One source node's part of a [`DirectNodePair`] exchange: per sender
/// (local GPU p), its routes to the node's other GPUs and to GPU p of every
/// other node that some member reaches over plane p, with the member counts.
#[derive(Debug, Clone, Default)]
struct SourceNode {
    /// Members from this node to node b over plane p: `[b * g + p]`.
    plane_members: Vec<u32>,
    /// Members this node forwards at its side from GPU g to GPU h:
    /// `[g * g_count + h]`.
    forwarded_here: Vec<u32>,
    /// Members forwarded at their destination: `(b * g + g) * g + h` per
    /// member, to be counted on node b.
    forwarded_there: Vec<u32>,
    /// Per sender p: routes to the node's GPUs h != p in order, then to
    /// GPU p of each node b with members, as links and where they end,
    /// and the nodes b.
    nvlink: Vec<Vec<LinkId>>,
    nvlink_ends: Vec<Vec<u32>>,
    network: Vec<Vec<LinkId>>,
    network_ends: Vec<Vec<u32>>,
    network_nodes: Vec<Vec<u32>>,
}

/// [`exchange`] with [`DirectNodePair`]'s weighted flows. Each member
/// (a, g) -> (b, h), g != h, takes the plane its exact route takes (its
/// first hop, hashed as the exact route: NVLink, so forwarded at its
/// source onto plane h, or its NIC, plane g), so the members per plane and
/// the forwarded members per NVLink link are the exact exchange's.
fn exchange_node_pair(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
    per_peer: f64,
    label: &str,
) -> Result<Vec<TaskId>, ModelError> {
    let topo = &cluster.topology;
    let g = topo.gpus_per_node as usize;
    // Members by node, then local index.
    let mut by_node: std::collections::BTreeMap<u32, Vec<Option<usize>>> = std::collections::BTreeMap::new();
    for (i, &r) in spec.group.iter().enumerate() {
        by_node.entry(topo.node_of(r)).or_insert_with(|| vec![None; g])[topo.local_index(r) as usize] = Some(i);
    }
    let mut nodes: Vec<Vec<usize>> = Vec::with_capacity(by_node.len());
    for (node, locals) in by_node {
        let Some(members) = locals.into_iter().collect::<Option<Vec<usize>>>() else {
            return Err(ModelError::invalid(
                "workload.flow_grouping",
                format!("node-pair grouping needs whole nodes: node {node} has only some of its {g} GPUs in the group"),
            ));
        };
        nodes.push(members);
    }
    let m = nodes.len();
    let rank = |a: usize, p: usize| spec.group[nodes[a][p]];
    let latency = |links: &[LinkId]| -> u64 {
        links.iter().map(|l| cluster.platform.links[l.0 as usize].latency.0).fold(0u64, u64::saturating_add)
    };
    // Per node and pair of its GPUs: the members forwarded over that NVLink
    // route (at their source or their destination).
    let mut forwarded = vec![0u32; m * g * g];
    let mut sends = Vec::with_capacity(m * g * 3);
    let mut nvlink_of: Vec<(Vec<LinkId>, Vec<u32>)> = Vec::with_capacity(m * g);
    let mut blocks: Vec<SourceNode> = vec![SourceNode::default(); NODE_BLOCK.min(m)];
    let mut flows: Vec<(Flow, u32)> = Vec::new();
    let mut buckets: Vec<(u64, Vec<u32>)> = Vec::new();
    for block in (0..m).step_by(NODE_BLOCK) {
        let count = m.min(block + NODE_BLOCK) - block;
        blocks[..count].par_iter_mut().enumerate().for_each_init(Vec::new, |scratch, (k, s)| {
            let a = block + k;
            s.plane_members.clear();
            s.plane_members.resize(m * g, 0);
            s.forwarded_here.clear();
            s.forwarded_here.resize(g * g, 0);
            s.forwarded_there.clear();
            s.nvlink.resize(g, Vec::new());
            s.nvlink_ends.resize(g, Vec::new());
            s.network.resize(g, Vec::new());
            s.network_ends.resize(g, Vec::new());
            s.network_nodes.resize(g, Vec::new());
            for p in 0..g {
                let (links, ends) = (&mut s.nvlink[p], &mut s.nvlink_ends[p]);
                links.clear();
                ends.clear();
                for h in (0..g).filter(|&h| h != p) {
                    cluster.route_links(rank(a, p), rank(a, h), 0, scratch, links);
                    ends.push(links.len() as u32);
                }
            }
            // Which plane each member takes.
            for src in 0..g {
                let nvlink_first = s.nvlink[src].first().copied();
                for b in (0..m).filter(|&b| b != a) {
                    for dst in 0..g {
                        if src == dst {
                            s.plane_members[b * g + src] += 1;
                        } else if cluster.first_route_link(rank(a, src), rank(b, dst), 0) == nvlink_first {
                            s.plane_members[b * g + dst] += 1;
                            s.forwarded_here[src * g + dst] += 1;
                        } else {
                            s.plane_members[b * g + src] += 1;
                            s.forwarded_there.push(((b * g + src) * g + dst) as u32);
                        }
                    }
                }
            }
            for p in 0..g {
                let (links, ends, to) = (&mut s.network[p], &mut s.network_ends[p], &mut s.network_nodes[p]);
                links.clear();
                ends.clear();
                to.clear();
                for b in (0..m).filter(|&b| b != a && s.plane_members[b * g + p] > 0) {
                    cluster.route_links(rank(a, p), rank(b, p), 0, scratch, links);
                    ends.push(links.len() as u32);
                    to.push(b as u32);
                }
            }
        });
        if block == 0 {
            // Room for every flow and, at the first block's mean network
            // route length (plus 2 %), every route: a guess short of the
            // real length doubles the largest array of the lowering.
            let (links, routes) = blocks[..count]
                .iter()
                .flat_map(|s| &s.network_ends)
                .fold((0, 0), |(l, r), ends| (l + ends.last().map_or(0, |&e| e as usize), r + ends.len()));
            let per_route = (links as f64 / routes.max(1) as f64 * 1.02).ceil() as usize;
            let network = m * m.saturating_sub(1) * g;
            graph.reserve_flows(node_pair_flows(m as u64, g as u64) as usize, network * per_route + 4 * m * g * g);
        }
        for (k, s) in blocks[..count].iter().enumerate() {
            let a = block + k;
            for (slot, &n) in forwarded[a * g * g..(a + 1) * g * g].iter_mut().zip(&s.forwarded_here) {
                *slot += n;
            }
            for &i in &s.forwarded_there {
                forwarded[i as usize] += 1;
            }
            for (p, &member) in nodes[a].iter().enumerate() {
                let forward_ps = s.nvlink_ends[p]
                    .iter()
                    .scan(0usize, |from, &end| {
                        let lat = latency(&s.nvlink[p][*from..end as usize]);
                        *from = end as usize;
                        Some(lat)
                    })
                    .max()
                    .unwrap_or(0);
                nvlink_of.push((s.nvlink[p].clone(), s.nvlink_ends[p].clone()));
                // One flow per node reached over plane p, weighted by its
                // members, on one stream per arrival latency: the route's,
                // plus an NVLink forwarding where a member is forwarded.
                for b in buckets.iter_mut() {
                    b.1.clear();
                }
                let mut from = 0;
                for (j, (&end, &b)) in s.network_ends[p].iter().zip(&s.network_nodes[p]).enumerate() {
                    let w = s.plane_members[b as usize * g + p];
                    let lat = latency(&s.network[p][from..end as usize]) + if w > 1 { forward_ps } else { 0 };
                    from = end as usize;
                    match buckets.iter_mut().find(|x| x.0 == lat) {
                        Some(x) => x.1.push(j as u32),
                        None => buckets.push((lat, vec![j as u32])),
                    }
                }
                buckets.sort_by_key(|x| x.0);
                for (lat, legs) in buckets.iter().filter(|x| !x.1.is_empty()) {
                    flows.clear();
                    for &j in legs {
                        let j = j as usize;
                        let start = if j == 0 { 0 } else { s.network_ends[p][j - 1] as usize };
                        let route = &s.network[p][start..s.network_ends[p][j] as usize];
                        let w = s.plane_members[s.network_nodes[p][j] as usize * g + p];
                        let path = graph.add_path(route);
                        flows.push((Flow { path, bytes: per_peer * cluster.nccl_charge_of_links(route) }, w));
                    }
                    let stream = graph.add_stream(graph.stream(streams[member]).rank, &format!("{label} network"));
                    let t = graph.add_weighted_comm(stream, label, &flows, None);
                    graph.set_comm_latency(t, SimDuration(*lat));
                    if let Some(x) = after[member] {
                        graph.add_dep(x, t);
                    }
                    sends.push(t);
                }
            }
        }
    }
    // NVLink: from each GPU to each other GPU of its node, its own member
    // (NCCL's NVLink charge) and the members forwarded over that route.
    for a in 0..m {
        for p in 0..g {
            let member = nodes[a][p];
            let (links, ends) = &nvlink_of[a * g + p];
            flows.clear();
            let mut from = 0;
            for (&end, h) in ends.iter().zip((0..g).filter(|&h| h != p)) {
                let route = &links[from..end as usize];
                from = end as usize;
                let path = graph.add_path(route);
                flows.push((Flow { path, bytes: per_peer * cluster.nccl_charge_of_links(route) }, 1));
                let w = forwarded[(a * g + p) * g + h];
                if w > 0 {
                    let path = graph.add_path(route);
                    flows.push((Flow { path, bytes: per_peer }, w));
                }
            }
            if !flows.is_empty() {
                let t = graph.add_weighted_comm(streams[member], label, &flows, None);
                if let Some(x) = after[member] {
                    graph.add_dep(x, t);
                }
                sends.push(t);
            }
        }
    }
    Ok(join_all(graph, streams, &sends, &format!("{label} done")))
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

/// New streams for a member's chunks in flight: `slots` per member, on the
/// member's rank.
fn slot_streams(graph: &mut TaskGraph, streams: &[StreamId], slots: usize, label: &str) -> Vec<Vec<StreamId>> {
    streams
        .iter()
        .map(|&s| {
            let rank = graph.stream(s).rank;
            (0..slots).map(|k| graph.add_stream(rank, &format!("{label} slot {k}"))).collect()
        })
        .collect()
}

fn link_id(e: EdgeIndex) -> moesim_sim::LinkId {
    moesim_sim::LinkId(e.index() as u32)
}

fn link_latency(cluster: &Cluster, e: EdgeIndex) -> SimDuration {
    SimDuration::from_ps_f64(cluster.topology.link(e).latency_ns * 1e3)
}

/// The NVSwitch a group shares: each member's NVLink up (GPU -> switch) and
/// down (switch -> GPU) edge, the switch's NVLS efficiency, and what sizes
/// NVLS's rate.
struct NvlsDomain {
    up: Vec<EdgeIndex>,
    down: Vec<EdgeIndex>,
    efficiency: f64,
    /// The slowest member link's capacity in the engine (nominal x its own
    /// efficiency), bytes/s.
    link_rate: f64,
    /// The same link at NCCL's NVLink rate ([`Cluster::nccl_bytes_per_s`]).
    nccl_rate: f64,
    /// NCCL's NVLS channels (the device's `nvls_channels`).
    channels: f64,
    /// `topology.nvls_chunk_overhead_ns`, in seconds.
    chunk_overhead_s: f64,
}

impl NvlsDomain {
    /// NVLS's rate on each GPU link for a collective of `bytes` over `n`
    /// ranks, bytes/s: NCCL's NVLink rate x `nvls_efficiency` (NCCL's
    /// NVLS bandwidth, `src/graph/tuning.cc`), less what each chunk step
    /// costs beyond its transfer. A channel moves chunks of
    /// [`nccl::nvls_chunk_bytes`] at 1/channels of the link rate and pays
    /// `nvls_chunk_overhead_ns` per chunk, so the rate is
    /// r x c / (c + overhead x r / channels): the peak at large messages
    /// (128 KiB chunks), less at 8-32 MiB (32 KiB chunks).
    fn rate(&self, bytes: f64, n: usize) -> f64 {
        let r = self.nccl_rate * self.efficiency;
        let c = nccl::nvls_chunk_bytes(bytes, self.channels * n as f64);
        r * c / (c + self.chunk_overhead_s * r / self.channels)
    }

    /// The bytes an NVLS flow charges its link per byte moved, so that
    /// the link's capacity carries it at [`NvlsDomain::rate`].
    fn charge(&self, bytes: f64, n: usize) -> f64 {
        self.link_rate / self.rate(bytes, n)
    }
}

/// The group's NVSwitch, or why NVLS cannot run on it.
fn nvls_domain(cluster: &Cluster, group: &[u32]) -> Result<NvlsDomain, String> {
    let topo = &cluster.topology;
    if !cluster.device.nvls {
        return Err(format!(
            "device {} has no NVLS (NVLink SHARP needs Hopper or newer on third-generation NVSwitch); use ring or tree",
            cluster.device.name
        ));
    }
    let Some(efficiency) = topo.spec.as_ref().and_then(|s| s.nvls_efficiency) else {
        return Err(format!(
            "topology {} has no NVLS (its NVSwitch sets no nvls_efficiency); use ring or tree",
            topo.name
        ));
    };
    let (mut up, mut down, mut switch) = (Vec::new(), Vec::new(), None);
    for &r in group {
        let Some((sw, edge, back)) = topo.nvswitch_links(r) else {
            return Err(format!("rank {r} has no NVSwitch, so NVLS cannot reduce its data"));
        };
        if *switch.get_or_insert(sw) != sw {
            return Err(format!(
                "NVLS reduces within one NVSwitch domain, but ranks {} and {r} are on different ones ({} and {}); \
                 use hierarchical, ring or tree",
                group[0],
                topo.node_name(switch.expect("set")),
                topo.node_name(sw)
            ));
        }
        up.push(edge);
        down.push(back);
    }
    let min = |rate: &dyn Fn(EdgeIndex) -> f64| up.iter().map(|&e| rate(e)).fold(f64::INFINITY, f64::min);
    let link_rate = min(&|e| topo.link(e).effective_bytes_per_s());
    let nccl_rate = min(&|e| cluster.nccl_bytes_per_s(e));
    let chunk_overhead_s = topo.spec.as_ref().map_or(0.0, |s| s.nvls_chunk_overhead_ns * 1e-9);
    let channels = f64::from(cluster.device.nvls_channels.max(1));
    Ok(NvlsDomain { up, down, efficiency, link_rate, nccl_rate, channels, chunk_overhead_s })
}

/// NVLS: in-switch reduction (`multimem.ld_reduce`) and multicast
/// (`multimem.st`) on one NVSwitch, pipelined by chunks. Per chunk, member i
/// owns shard i: its reduce pulls shard i up every member's link once and
/// down its own once; its store sends the sum up its link once and down
/// every member's. So each GPU link carries (n + 1)/n of the buffer in each
/// direction (a ring: 2(n - 1)/n), at the topology's `nvls_efficiency` of
/// the link rate (moesim charges each NVLS flow payload / efficiency bytes).
/// The kernel first waits NCCL's NVLS latency less the switch crossings
/// the first chunk pays itself (two per phase).
pub struct Nvls {
    pub pipe: Pipelining,
}

impl CollectiveAlgorithm for Nvls {
    fn name(&self) -> &'static str {
        "nvls"
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
        let (reduce, store) = match spec.op {
            CollectiveOp::AllReduce => (true, true),
            CollectiveOp::ReduceScatter => (true, false),
            CollectiveOp::AllGather => (false, true),
            other => {
                return Err(ModelError::invalid(
                    "workload.algorithm",
                    format!("nvls runs all-reduce, reduce-scatter and all-gather, not {}", other.as_str()),
                ))
            }
        };
        let dom = nvls_domain(cluster, &spec.group).map_err(|m| ModelError::invalid("workload.algorithm", m))?;
        let n = spec.group.len();
        let chunks = self.pipe.chunks(spec.bytes);
        let w = self.pipe.in_flight.clamp(1, chunks);
        let shard = spec.bytes / chunks as f64 / n as f64 * dom.charge(spec.bytes, n);
        let up: Vec<PathId> = dom.up.iter().map(|&e| graph.add_path(&[link_id(e)])).collect();
        let down: Vec<PathId> = dom.down.iter().map(|&e| graph.add_path(&[link_id(e)])).collect();
        // NCCL's 25 us is the NVLS kernel's whole latency; the lowering
        // crosses the switch twice per chunk (reduce, then multicast) and
        // pays those link latencies itself, so the launch waits the rest.
        let hop_us = dom.up.iter().chain(&dom.down).map(|&e| link_latency(cluster, e).as_us_f64()).fold(0.0, f64::max);
        let phases = f64::from(u8::from(reduce) + u8::from(store));
        let fixed_us = (tuner_of(cluster).nvls_us - 2.0 * phases * hop_us).max(0.0);
        let starts = launch(graph, streams, after, "nvls launch", fixed_us);
        // Every member's buffer is ready (and registered) before any reduce.
        let barrier = graph.add_delay(streams[0], "nvls start", SimDuration::ZERO);
        for t in starts.into_iter().flatten() {
            graph.add_dep(t, barrier);
        }
        // The reduce and the multicast run on their own slots (NCCL gives them
        // separate warps), so chunk c's multicast overlaps chunk c + 1's reduce.
        let reduce_slots = slot_streams(graph, streams, if reduce { w } else { 0 }, "nvls reduce");
        let store_slots = slot_streams(graph, streams, if store { w } else { 0 }, "nvls multicast");
        // A sender issues its chunks back to back: slot k starts once k
        // chunks have left (at the member's link rate), so the slots stay
        // staggered and one's latency hides under the others' transfers.
        let per_chunk = SimDuration::from_secs_f64(shard * (n + 1) as f64 / dom.link_rate);
        let stagger = |graph: &mut TaskGraph, slots: &[Vec<StreamId>]| -> Vec<Vec<TaskId>> {
            slots
                .iter()
                .map(|member| {
                    member
                        .iter()
                        .enumerate()
                        .map(|(k, &s)| {
                            let t = graph.add_delay(s, "nvls stagger", SimDuration(per_chunk.0 * k as u64));
                            graph.add_dep(barrier, t);
                            t
                        })
                        .collect()
                })
                .collect()
        };
        let first_slots = if reduce { &reduce_slots } else { &store_slots };
        let staggers = stagger(graph, first_slots);
        let mut ends: Vec<Vec<TaskId>> = vec![Vec::with_capacity(chunks); n];
        for c in 0..chunks {
            for i in 0..n {
                let mut last = None;
                if reduce {
                    let flows = (0..n)
                        .map(|j| Flow { path: up[j], bytes: shard })
                        .chain(std::iter::once(Flow { path: down[i], bytes: shard }));
                    let t = graph.add_comm(reduce_slots[i][c % w], "nvls reduce", flows, None);
                    // The sum leaves the switch after the copies arrive: one more hop.
                    graph.set_comm_overhead(t, link_latency(cluster, dom.down[i]));
                    if c < w {
                        graph.add_dep(staggers[i][c], t);
                    }
                    last = Some(t);
                }
                if store {
                    let flows = std::iter::once(Flow { path: up[i], bytes: shard })
                        .chain((0..n).map(|j| Flow { path: down[j], bytes: shard }));
                    let t = graph.add_comm(store_slots[i][c % w], "nvls multicast", flows, None);
                    graph.set_comm_overhead(t, link_latency(cluster, dom.up[i]));
                    match last {
                        Some(r) => graph.add_dep(r, t),
                        None if c < w => graph.add_dep(staggers[i][c], t),
                        None => {}
                    }
                    last = Some(t);
                }
                ends[i].push(last.expect("reduce or store"));
            }
        }
        if spec.op == CollectiveOp::ReduceScatter {
            // A member has its shard once its own reduces are done.
            return Ok((0..n)
                .map(|i| {
                    let j = graph.add_delay(streams[i], "nvls done", SimDuration::ZERO);
                    for &t in &ends[i] {
                        graph.add_dep(t, j);
                    }
                    j
                })
                .collect());
        }
        let all: Vec<TaskId> = ends.into_iter().flatten().collect();
        Ok(join_all(graph, streams, &all, "nvls done"))
    }
}

/// The group's members by node, in group order (nodes in order of first
/// appearance).
fn by_node(cluster: &Cluster, group: &[u32]) -> Vec<Vec<usize>> {
    let mut nodes: Vec<(u32, Vec<usize>)> = Vec::new();
    for (i, &r) in group.iter().enumerate() {
        let node = cluster.topology.node_of(r);
        match nodes.iter_mut().find(|(n, _)| *n == node) {
            Some((_, m)) => m.push(i),
            None => nodes.push((node, vec![i])),
        }
    }
    nodes.into_iter().map(|(_, m)| m).collect()
}

/// Tree: NCCL's double binary tree for all-reduce. Inside a node the
/// members form a chain; the chains' heads form a binary tree over the
/// nodes. Half the data goes over each of two trees, the second with nodes
/// and chains reversed (so its inner nodes and heads differ). Per chunk,
/// each member sends its partial sum to its parent once its children's
/// arrived (reduce), and the root's result flows back down (broadcast); the
/// two directions and the chunks overlap. Each member's kernel first waits
/// NCCL's tree base latency of its protocol; on LL or LL128 the data costs
/// and arrives as the ring's does (see [`Ring`]).
pub struct Tree {
    pub pipe: Pipelining,
    pub protocol: Protocol,
}

impl CollectiveAlgorithm for Tree {
    fn name(&self) -> &'static str {
        "tree"
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
        if spec.op != CollectiveOp::AllReduce {
            return Err(ModelError::invalid(
                "workload.algorithm",
                format!("tree runs all-reduce only (as NCCL's), not {}; use ring or nvls", spec.op.as_str()),
            ));
        }
        let n = spec.group.len();
        let nodes = by_node(cluster, &spec.group);
        let starts =
            launch(graph, streams, after, "tree launch", tuner_of(cluster).tree_base_us[self.protocol.index()]);
        let proto = protocol_charge(cluster, spec, "tree", self.protocol);
        let half = spec.bytes / 2.0;
        let chunks = self.pipe.chunks(half);
        let w = self.pipe.in_flight.clamp(1, chunks);
        let chunk = half / chunks as f64;
        let mut scratch = Vec::new();
        let mut downs = Vec::new();
        for tree in 0..2u64 {
            let mut parent: Vec<Option<usize>> = vec![None; n];
            let order: Vec<usize> =
                if tree == 0 { (0..nodes.len()).collect() } else { (0..nodes.len()).rev().collect() };
            let chain = |m: usize| -> Vec<usize> {
                let mut c = nodes[m].clone();
                if tree == 1 {
                    c.reverse();
                }
                c
            };
            for (pos, &m) in order.iter().enumerate() {
                let c = chain(m);
                for k in 1..c.len() {
                    parent[c[k]] = Some(c[k - 1]);
                }
                if pos > 0 {
                    parent[c[0]] = Some(chain(order[(pos - 1) / 2])[0]);
                }
            }
            let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (i, p) in parent.iter().enumerate() {
                if let Some(p) = p {
                    children[*p].push(i);
                }
            }
            let mut route = |graph: &mut TaskGraph, from: usize, to: usize| {
                let (path, charge) =
                    cluster.add_nccl_route(graph, spec.group[from], spec.group[to], tree, &mut scratch);
                (path, charge * proto, protocol_hop_latency(cluster, &scratch, "tree", self.protocol))
            };
            let up_path: Vec<Option<(PathId, f64, Option<SimDuration>)>> =
                (0..n).map(|i| parent[i].map(|p| route(graph, i, p))).collect();
            let down_path: Vec<Option<(PathId, f64, Option<SimDuration>)>> =
                (0..n).map(|i| parent[i].map(|p| route(graph, p, i))).collect();
            let up_slots = slot_streams(graph, streams, w, &format!("tree {tree} up"));
            let down_slots = slot_streams(graph, streams, w, &format!("tree {tree} down"));
            for c in 0..chunks {
                let ups: Vec<Option<TaskId>> = (0..n)
                    .map(|i| {
                        up_path[i].map(|(path, charge, hop)| {
                            let flow = Flow { path, bytes: chunk * charge };
                            let t = graph.add_comm(up_slots[i][c % w], "tree reduce", [flow], None);
                            if let Some(hop) = hop {
                                graph.set_comm_latency(t, hop);
                            }
                            t
                        })
                    })
                    .collect();
                let down: Vec<Option<TaskId>> = (0..n)
                    .map(|i| {
                        (!children[i].is_empty()).then(|| {
                            let mut hop = None;
                            let flows: Vec<Flow> = children[i]
                                .iter()
                                .map(|&k| {
                                    let (path, charge, h) = down_path[k].expect("a child has a parent");
                                    hop = hop.max(h);
                                    Flow { path, bytes: chunk * charge }
                                })
                                .collect();
                            let t = graph.add_comm(down_slots[i][c % w], "tree broadcast", flows, None);
                            if let Some(hop) = hop {
                                graph.set_comm_latency(t, hop);
                            }
                            t
                        })
                    })
                    .collect();
                for i in 0..n {
                    for t in [ups[i], down[i]].into_iter().flatten() {
                        if c < w {
                            graph.add_dep(starts[i].expect("launched"), t);
                        }
                    }
                    // Reduce: a member sends up (the root broadcasts) after
                    // its children's partial sums arrived.
                    let reduced = if parent[i].is_some() { ups[i] } else { down[i] };
                    if let Some(t) = reduced {
                        for &k in &children[i] {
                            graph.add_dep(ups[k].expect("a child sends up"), t);
                        }
                    }
                    // Broadcast: after the parent's result.
                    if let (Some(p), Some(t)) = (parent[i], down[i]) {
                        graph.add_dep(down[p].expect("a parent has children"), t);
                    }
                }
                downs.extend(down.into_iter().flatten());
            }
        }
        Ok(join_all(graph, streams, &downs, "tree done"))
    }
}

/// Hierarchical: intra-node first, then inter-node (see the module doc).
/// Every node must hold the same number of group members.
pub struct Hierarchical {
    pub pipe: Pipelining,
}

impl CollectiveAlgorithm for Hierarchical {
    fn name(&self) -> &'static str {
        "hierarchical"
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
        let nodes = by_node(cluster, &spec.group);
        let ppn = nodes[0].len();
        if let Some(m) = nodes.iter().find(|m| m.len() != ppn) {
            return Err(ModelError::invalid(
                "workload.ranks",
                format!(
                    "hierarchical needs the same number of group members on every node, found {ppn} and {}",
                    m.len()
                ),
            ));
        }
        match spec.op {
            CollectiveOp::AllReduce => self.all_reduce(cluster, spec, &nodes, graph, streams, after),
            CollectiveOp::AllToAll => Ok(all_to_all_two_phase(cluster, spec, &nodes, graph, streams, after)),
            other => Err(ModelError::invalid(
                "workload.algorithm",
                format!("hierarchical runs all-reduce and all-to-all, not {}", other.as_str()),
            )),
        }
    }
}

impl Hierarchical {
    fn all_reduce(
        &self,
        cluster: &Cluster,
        spec: &CollectiveSpec,
        nodes: &[Vec<usize>],
        graph: &mut TaskGraph,
        streams: &[StreamId],
        after: &[Option<TaskId>],
    ) -> Result<Vec<TaskId>, ModelError> {
        let n = spec.group.len();
        let ppn = nodes[0].len();
        let mut done: Vec<Option<TaskId>> = after.to_vec();
        // Runs `op` on each sub-group (member indices) with `alg`, chaining `done`.
        let mut phase = |graph: &mut TaskGraph,
                         groups: Vec<Vec<usize>>,
                         op: CollectiveOp,
                         bytes: f64,
                         intra: bool|
         -> Result<(), ModelError> {
            for members in groups {
                let sub = CollectiveSpec { op, group: members.iter().map(|&i| spec.group[i]).collect(), bytes };
                let alg: Box<dyn CollectiveAlgorithm> = if intra && nvls_domain(cluster, &sub.group).is_ok() {
                    Box::new(Nvls { pipe: self.pipe })
                } else {
                    Box::new(Ring::nccl(Protocol::Simple))
                };
                let s: Vec<StreamId> = members.iter().map(|&i| streams[i]).collect();
                let a: Vec<Option<TaskId>> = members.iter().map(|&i| done[i]).collect();
                let ends = alg.lower(cluster, &sub, graph, &s, &a)?;
                for (&i, t) in members.iter().zip(ends) {
                    done[i] = Some(t);
                }
            }
            Ok(())
        };
        if nodes.len() == 1 {
            phase(graph, nodes.to_vec(), CollectiveOp::AllReduce, spec.bytes, true)?;
        } else {
            if ppn > 1 {
                phase(graph, nodes.to_vec(), CollectiveOp::ReduceScatter, spec.bytes, true)?;
            }
            let rails: Vec<Vec<usize>> = (0..ppn).map(|l| nodes.iter().map(|m| m[l]).collect()).collect();
            phase(graph, rails, CollectiveOp::AllReduce, spec.bytes / ppn as f64, false)?;
            if ppn > 1 {
                phase(graph, nodes.to_vec(), CollectiveOp::AllGather, spec.bytes, true)?;
            }
        }
        Ok((0..n).map(|i| done[i].expect("every member ran a phase")).collect())
    }
}

/// All-to-all in two phases: member (a, l) first sends, over NVLink, to
/// (a, m) everything bound for local index m on any node; then (a, m) sends
/// to each remote (b, m), over its own NIC, what its node gathered for it.
fn all_to_all_two_phase(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    nodes: &[Vec<usize>],
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
) -> Vec<TaskId> {
    let n = spec.group.len();
    let (node_count, ppn) = (nodes.len(), nodes[0].len());
    let per_peer = spec.bytes / n as f64;
    let mut scratch = Vec::new();
    let mut intra: Vec<Option<TaskId>> = vec![None; n];
    let mut sends = Vec::new();
    for members in nodes {
        for (l, &i) in members.iter().enumerate() {
            let flows: Vec<Flow> = (0..ppn)
                .filter(|&m| m != l)
                .map(|m| {
                    let (path, charge) =
                        cluster.add_nccl_route(graph, spec.group[i], spec.group[members[m]], 0, &mut scratch);
                    Flow { path, bytes: per_peer * node_count as f64 * charge }
                })
                .collect();
            if flows.is_empty() {
                continue;
            }
            let t = graph.add_comm(streams[i], "all-to-all intra-node", flows, None);
            if let Some(a) = after[i] {
                graph.add_dep(a, t);
            }
            intra[i] = Some(t);
            sends.push(t);
        }
    }
    for (a, members) in nodes.iter().enumerate() {
        for (m, &i) in members.iter().enumerate() {
            let flows: Vec<Flow> = (0..node_count)
                .filter(|&b| b != a)
                .map(|b| {
                    let (path, charge) =
                        cluster.add_nccl_route(graph, spec.group[i], spec.group[nodes[b][m]], 0, &mut scratch);
                    Flow { path, bytes: per_peer * ppn as f64 * charge }
                })
                .collect();
            if flows.is_empty() {
                continue;
            }
            let t = graph.add_comm(streams[i], "all-to-all inter-node", flows, None);
            // What it forwards arrives from every member of its node.
            for &k in members {
                if let Some(p) = intra[k] {
                    graph.add_dep(p, t);
                }
            }
            if let (None, Some(p)) = (intra[i], after[i]) {
                graph.add_dep(p, t);
            }
            sends.push(t);
        }
    }
    join_all(graph, streams, &sends, "all-to-all done")
}

/// `auto`: the algorithm [`choose`] picks, lowered with this pipelining.
pub struct Auto {
    pub pipe: Pipelining,
}

impl CollectiveAlgorithm for Auto {
    fn name(&self) -> &'static str {
        "auto"
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
        let (algorithm, protocol) =
            pick(cluster, spec, None, None).map_or(("direct", Protocol::Simple), |e| (e.algorithm, e.protocol));
        algorithm_with_protocol(algorithm, self.pipe, protocol)?.lower(cluster, spec, graph, streams, after)
    }
}

/// One candidate of [`choose`]: NCCL's time estimate for an algorithm on
/// a protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub algorithm: &'static str,
    pub protocol: Protocol,
    /// latency + bytes / algorithm bandwidth, µs.
    pub time_us: f64,
}

/// The slowest NCCL rate on the routes of the ring through `spec.group`
/// (each member to the next), bytes/s: NCCL's Simple bus bandwidth.
fn ring_bytes_per_s(cluster: &Cluster, spec: &CollectiveSpec) -> f64 {
    let n = spec.group.len();
    let mut scratch = Vec::new();
    let mut ring_bw = f64::INFINITY;
    for i in 0..n {
        scratch.clear();
        cluster.router.route(&cluster.topology, spec.group[i], spec.group[(i + 1) % n], 0, &mut scratch);
        for &e in &scratch {
            ring_bw = ring_bw.min(cluster.nccl_bytes_per_s(e));
        }
    }
    ring_bw
}

/// NCCL's bus bandwidth for `algorithm` ("ring" or "tree") on `protocol`
/// over `nodes` nodes of at most `ppn` members each, from its Simple bus
/// bandwidth `simple` (bytes/s),
/// with NCCL's refinements (`ncclTopoTuneModel`): ring LL half of it, at
/// most `llMaxBw`; ring LL128 0.92 of it; tree LL 1/3.8 of it, at most
/// `llMaxBw`; tree LL128 7/9 of it inside a node, 120/128 across nodes.
/// `llMaxBw` inside a node is the device's `nccl_ll_max_busbw_gb_per_s`
/// (none: no cap), across nodes [`nccl::LL_MAX_BUSBW_2_NODES_GB_PER_S`] and
/// [`nccl::LL_MAX_BUSBW_MORE_NODES_GB_PER_S`]. (NCCL also caps LL128 by a
/// per-channel rate x its channels, which depend on its topology search;
/// moesim leaves that cap out.)
/// NCCL 2.19-2.20 ([`nccl::TUNER_2_19`]) refines the ring differently: LL
/// a quarter (all-reduce or across nodes, else a third), LL128 0.7 with one
/// GPU per node.
fn protocol_busbw(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    (nodes, ppn): (usize, usize),
    algorithm: &str,
    protocol: Protocol,
    simple: f64,
) -> f64 {
    let tuner = tuner_of(cluster);
    let ll_max = match nodes {
        0 | 1 => cluster
            .device
            .nccl_ll_max_busbw_gb_per_s
            .map_or(f64::INFINITY, |v| v * 1e9)
            .min(tuner.ll_max_busbw_gb_per_s * 1e9),
        2 => nccl::LL_MAX_BUSBW_2_NODES_GB_PER_S * 1e9,
        _ => nccl::LL_MAX_BUSBW_MORE_NODES_GB_PER_S * 1e9,
    };
    let old = tuner.generation == nccl::NcclTuner::V2_19;
    let ring_ll = match (old, nodes > 1 || spec.op == CollectiveOp::AllReduce) {
        (false, _) => 0.5,
        (true, true) => 0.25,
        (true, false) => 1.0 / 3.0,
    };
    let ring_ll128 = if old && ppn < 2 { 0.7 } else { 0.92 };
    match (algorithm, protocol) {
        (_, Protocol::Simple) => simple,
        ("tree", Protocol::Ll) => (simple / 3.8).min(ll_max),
        ("tree", Protocol::Ll128) => simple * if nodes <= 1 { 7.0 / 9.0 } else { 120.0 / 128.0 },
        (_, Protocol::Ll) => (simple * ring_ll).min(ll_max),
        (_, Protocol::Ll128) => simple * ring_ll128,
    }
}

/// The generation of NCCL's tuner the cluster's topology names
/// (`topology.nccl_version`).
fn tuner_of(cluster: &Cluster) -> nccl::Tuner {
    nccl::tuner(cluster.topology.spec.as_ref().map_or_else(Default::default, |s| s.nccl_tuner))
}

/// The bytes a copy loop of `algorithm` ("ring" or "tree") on `protocol`
/// charges its route per byte of data, beside [`Cluster::nccl_charge`]:
/// NCCL's Simple bus bandwidth over the protocol's ([`protocol_busbw`]), so
/// the flow reaches the protocol's rate. 1 for Simple.
pub fn protocol_charge(cluster: &Cluster, spec: &CollectiveSpec, algorithm: &str, protocol: Protocol) -> f64 {
    if protocol == Protocol::Simple {
        return 1.0;
    }
    let nodes = by_node(cluster, &spec.group);
    let shape = (nodes.len(), nodes.iter().map(Vec::len).max().unwrap_or(1));
    let simple = ring_bytes_per_s(cluster, spec) * if algorithm == "tree" { nccl::TREE_BW_FACTOR } else { 1.0 };
    let busbw = protocol_busbw(cluster, spec, shape, algorithm, protocol, simple);
    if busbw > 0.0 && busbw.is_finite() && simple.is_finite() {
        simple / busbw
    } else {
        1.0
    }
}

/// The latency after which a step of `algorithm` on `protocol` arrives over
/// `route`, in place of the route's links' (`None` for Simple, whose
/// latency is the links' measured end-to-end one): NCCL's per-step
/// hardware latency of the protocol, NVLink's on a route of NVLink only,
/// the network's otherwise.
pub fn protocol_hop_latency(
    cluster: &Cluster,
    route: &[EdgeIndex],
    algorithm: &str,
    protocol: Protocol,
) -> Option<SimDuration> {
    if protocol == Protocol::Simple {
        return None;
    }
    let nvlink_only = route.iter().all(|&e| cluster.topology.link(e).kind == moesim_topologies::LinkKind::NvLink);
    let i = protocol.index();
    let us = match (algorithm, nvlink_only) {
        ("tree", true) => nccl::TREE_NVLINK_BY_PROTOCOL_US[i],
        ("tree", false) => nccl::TREE_NET_BY_PROTOCOL_US[i],
        (_, true) => nccl::RING_NVLINK_BY_PROTOCOL_US[i],
        (_, false) => nccl::RING_NET_BY_PROTOCOL_US[i],
    };
    Some(SimDuration::from_us_f64(us))
}

/// NCCL's cost model (`ncclTopoTuneModel` and `ncclTopoGetAlgoTime` in
/// NVIDIA/nccl `src/graph/tuning.cc`; the pick is the least time, as in
/// `topoGetAlgoInfo`) over this cluster's effective link rates, for each
/// algorithm and protocol (LL, LL128, Simple; NVLS runs Simple only). With
/// n ranks on N nodes (p = n/N per node), B the slowest NCCL rate on the
/// ring's routes, and per protocol the base latency `base`, NVLink and
/// network hardware latencies `nv`, `net` ([`nccl`]'s tables) and bus
/// bandwidth [`protocol_busbw`] of B:
///
/// - ring: base + nv (2(n-1) - 2(N-1)) + net x 2(N-1) µs, algbw busbw n /
///   2(n-1) (reduce-scatter/all-gather: half the steps, busbw n/(n-1));
/// - tree (all-reduce): base + 2 (nv (p-1) + net floor(log2 N)) µs, algbw
///   busbw / 2, from 0.92 B;
/// - nvls (group on one NVSwitch with NVLS): 25 µs, algbw B x
///   nvls_efficiency x n/(n+1) (NCCL's NVLS graph: n channels of B/(n+1),
///   on (n-1)/n of them, two phases pipelined); reduce-scatter/all-gather:
///   B x nvls_efficiency x (n-1)^2/(n(n+1)). NCCL's tuner does not weigh
///   the chunk overhead the lowering pays (`NvlsDomain::rate`).
///
/// All-to-all and send/recv are `direct` (NCCL runs them as grouped
/// point-to-point). Hierarchical is never picked (NCCL's counterparts,
/// NVLS-tree and CollNet, need in-network reduction across nodes).
pub fn estimates(cluster: &Cluster, spec: &CollectiveSpec) -> Vec<Estimate> {
    let n = spec.group.len();
    if n < 2 || !matches!(spec.op, CollectiveOp::AllReduce | CollectiveOp::ReduceScatter | CollectiveOp::AllGather) {
        return vec![Estimate { algorithm: "direct", protocol: Protocol::Simple, time_us: f64::NAN }];
    }
    let nodes = by_node(cluster, &spec.group);
    let (nf, big_n) = (n as f64, nodes.len() as f64);
    let shape = (nodes.len(), nodes.iter().map(Vec::len).max().unwrap_or(1));
    let ppn = shape.1 as f64;
    let ring_bw = ring_bytes_per_s(cluster, spec);
    let s = spec.bytes;
    let mut out = Vec::new();
    let all_reduce = spec.op == CollectiveOp::AllReduce;
    let (steps, inter) = if all_reduce { (2.0 * (nf - 1.0), 2.0 * (big_n - 1.0)) } else { (nf - 1.0, big_n - 1.0) };
    for protocol in Protocol::ALL {
        let i = protocol.index();
        let lat = nccl::RING_BASE_BY_PROTOCOL_US[i]
            + nccl::RING_NVLINK_BY_PROTOCOL_US[i] * (steps - inter)
            + nccl::RING_NET_BY_PROTOCOL_US[i] * inter;
        let algbw = protocol_busbw(cluster, spec, shape, "ring", protocol, ring_bw) * nf / steps;
        out.push(Estimate { algorithm: "ring", protocol, time_us: lat + s / algbw * 1e6 });
    }
    let tuner = tuner_of(cluster);
    if all_reduce {
        let log2 = (nodes.len() as u32).ilog2() as f64;
        for protocol in Protocol::ALL {
            let i = protocol.index();
            let lat =
                tuner.tree_base_us[i] + 2.0 * (tuner.tree_nvlink_us[i] * (ppn - 1.0) + tuner.tree_net_us[i] * log2);
            let busbw = protocol_busbw(cluster, spec, shape, "tree", protocol, nccl::TREE_BW_FACTOR * ring_bw);
            out.push(Estimate { algorithm: "tree", protocol, time_us: lat + s / (busbw / 2.0) * 1e6 });
        }
    }
    if let Ok(dom) = nvls_domain(cluster, &spec.group) {
        // NCCL's NVLS bandwidth: its NVLS graph has one channel per rank
        // (head), each pulling twice its share over its own GPU's link and
        // once over the others', so a channel gets the link's rate / (n + 1)
        // (`ncclTopoSearchTryNvls`); x nvlsEfficiency x (n-1)/n per channel,
        // the two phases pipelined for all-reduce (x2, then busbw x n /
        // 2(n-1)): algbw B x eff x n/(n+1) (480 GB/s busbw on 8 H100, NVIDIA's
        // peak); reduce-scatter and all-gather: n x B/(n+1) x eff x
        // ((n-1)/n)^2. NCCL's tuner knows nothing of the chunk overhead.
        // NCCL 2.19-2.20 had no nvlsEfficiency: algbw 5/6 of n x B/(n+1)
        // for all-reduce, all of it for the others.
        let per_channel = dom.nccl_rate / (nf + 1.0);
        let algbw = match (tuner.generation, all_reduce) {
            (nccl::NcclTuner::V2_19, true) => nf * per_channel * 5.0 / 6.0,
            (nccl::NcclTuner::V2_19, false) => nf * per_channel,
            (_, true) => nf * per_channel * dom.efficiency * (nf - 1.0) / nf * 2.0 * nf / (2.0 * (nf - 1.0)),
            (_, false) => nf * per_channel * dom.efficiency * (nf - 1.0) / nf * (nf - 1.0) / nf,
        };
        out.push(Estimate { algorithm: "nvls", protocol: Protocol::Simple, time_us: tuner.nvls_us + s / algbw * 1e6 });
    }
    out
}

/// What one member of a collective puts on the wire when only it is
/// simulated and the others are taken to do the same at the same time (the
/// training and inference lowerings' representative ranks): one flow of
/// `bytes` to `succ` carries the load the chosen algorithm puts on each of
/// its GPU links, so contention with other traffic still applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberLoad {
    /// The algorithm NCCL's cost model picks ([`choose`]).
    pub algorithm: &'static str,
    /// The protocol it picks with it ([`pick`]); LL and LL128 are in
    /// `bytes` ([`protocol_charge`]) and `hop_latency`.
    pub protocol: Protocol,
    /// The member whose route carries this member's flow: for a group
    /// across nodes, the next member on another node (the ring's slowest
    /// edge), else the next member.
    pub succ: u32,
    /// Bytes on that route, per direction of each GPU link:
    /// - ring: `2 (n - 1) / n` of the buffer for all-reduce, `(n - 1) / n`
    ///   for reduce-scatter and all-gather (as [`Ring`] moves them);
    /// - nvls: `(n + 1) / n` of the buffer for all-reduce and the whole
    ///   buffer for reduce-scatter and all-gather, over `nvls_efficiency`
    ///   (as [`Nvls`] charges them);
    /// - tree: NCCL's own time for it over the edge's rate (`2 / 0.92` of
    ///   the buffer: its algorithm bandwidth is `0.92 B / 2`).
    ///
    /// Payload bytes: the flow that carries a copy loop's charges its route
    /// NCCL's factor too ([`MemberLoad::copy_loop`], [`Cluster::nccl_charge`],
    /// as `Emitter::mirror_ring` does).
    pub bytes: f64,
    /// Steps whose per-hop latency follows the transfer (ring: one per step
    /// after the first; tree: its depth up and down, the chain inside a node
    /// plus log2 of the nodes; nvls: 1).
    pub steps: u32,
    /// Each step's latency where the protocol sets it
    /// ([`protocol_hop_latency`]); `None`: the route's.
    pub hop_latency: Option<SimDuration>,
}

impl MemberLoad {
    /// Whether the load is one of NCCL's copy loops (ring, tree, direct),
    /// which run at NCCL's NVLink rate ([`Cluster::nccl_charge`]), rather
    /// than NVLS (the links' rate x `nvls_efficiency`, already in `bytes`).
    pub fn copy_loop(&self) -> bool {
        self.algorithm != "nvls"
    }
}

/// How one member of `spec` loads its links under the algorithm NCCL would
/// pick; `member` indexes `spec.group`.
pub fn member_load(cluster: &Cluster, spec: &CollectiveSpec, member: usize) -> MemberLoad {
    let n = spec.group.len();
    let nf = n as f64;
    let me = spec.group[member];
    let node = cluster.topology.node_of(me);
    // The same position among the next node's members (a permutation, so
    // with every rank simulated no NIC receives twice), else the next
    // member on another node, else the next member.
    let here = spec.group.iter().filter(|&&r| cluster.topology.node_of(r) == node).count();
    let same_position = spec.group[(member + here) % n];
    let succ = if cluster.topology.node_of(same_position) != node {
        same_position
    } else {
        (1..n)
            .map(|k| spec.group[(member + k) % n])
            .find(|&r| cluster.topology.node_of(r) != node)
            .unwrap_or(spec.group[(member + 1) % n])
    };
    let all_reduce = spec.op == CollectiveOp::AllReduce;
    let (algorithm, protocol) =
        pick(cluster, spec, None, None).map_or(("direct", Protocol::Simple), |e| (e.algorithm, e.protocol));
    let s = spec.bytes;
    let (bytes, steps) = match algorithm {
        "nvls" => {
            let charge = nvls_domain(cluster, &spec.group).map_or(1.0, |d| d.charge(s, n));
            (if all_reduce { (nf + 1.0) / nf * s * charge } else { s * charge }, 1)
        }
        "tree" => {
            // Reduce up and broadcast down: the chain inside a node, then
            // the binary tree's levels over the nodes.
            let nodes = by_node(cluster, &spec.group);
            let ppn = nodes.iter().map(Vec::len).max().unwrap_or(1) as u32;
            let depth = ppn - 1 + (nodes.len() as u32).next_power_of_two().ilog2();
            (2.0 * s / nccl::TREE_BW_FACTOR, 2 * depth.max(1))
        }
        _ if all_reduce => (2.0 * (nf - 1.0) / nf * s, 2 * (n as u32 - 1)),
        _ => ((nf - 1.0) / nf * s, n as u32 - 1),
    };
    let algorithm = if algorithm == "direct" { "ring" } else { algorithm };
    let (bytes, hop_latency) = if algorithm == "nvls" {
        (bytes, None)
    } else {
        let mut route = Vec::new();
        cluster.router.route(&cluster.topology, me, succ, 0, &mut route);
        (
            bytes * protocol_charge(cluster, spec, algorithm, protocol),
            protocol_hop_latency(cluster, &route, algorithm, protocol),
        )
    };
    MemberLoad { algorithm, protocol, succ, bytes, steps, hop_latency }
}

/// The least of [`estimates`] (the first on a tie) among those of
/// `algorithm` and `protocol` where given: what NCCL runs (`auto`), or the
/// protocol it runs a forced algorithm on. `None` where no estimate
/// matches (the algorithm is not one NCCL's model weighs, or the protocol
/// is not one it runs).
pub fn pick(
    cluster: &Cluster,
    spec: &CollectiveSpec,
    algorithm: Option<&str>,
    protocol: Option<Protocol>,
) -> Option<Estimate> {
    estimates(cluster, spec)
        .into_iter()
        .filter(|e| algorithm.is_none_or(|a| a == e.algorithm) && protocol.is_none_or(|p| p == e.protocol))
        .fold(None::<Estimate>, |best, e| match best {
            Some(b) if e.time_us < b.time_us => Some(e),
            Some(b) => Some(b),
            None => Some(e),
        })
}

/// The algorithm `auto` runs: that of [`pick`] with nothing forced.
pub fn choose(cluster: &Cluster, spec: &CollectiveSpec) -> &'static str {
    pick(cluster, spec, None, None).map_or("direct", |e| e.algorithm)
}
