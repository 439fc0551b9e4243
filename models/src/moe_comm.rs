//! MoE dispatch and combine the way DeepEP's normal kernels do them, lowered
//! to flows.
//!
//! A token goes once to every rank that hosts one of its top-k experts (not
//! once per expert). Inside one node that is a direct NVLink copy. Across
//! nodes a token crosses InfiniBand once per target node, to the GPU with the
//! same local index there, which forwards it over NVLink to the target GPUs of
//! that node; tokens for the source's own node go over NVLink directly.
//! DeepEP pipelines the RDMA and the forwarding in chunks, so each rank's
//! sends and forwards are one communication task whose flows start together
//! (its time is the slower medium, not the sum), holding `comm_sms` SMs.
//! Combine runs the same paths backwards with BF16 payloads.
//!
//! Bytes are also *counted* the way DeepEP's benchmarks count them, because
//! the published bandwidths are those counts over the kernel time: RDMA bytes
//! = (token, distinct target node) pairs including the source's own node;
//! NVLink bytes = (token, destination rank) pairs a rank receives, including
//! its own tokens.
//!
//! The low-latency (decode) kernels send every (token, selected expert) copy
//! straight to the expert's rank, hold no SMs while data is in flight, and
//! count every copy (7,408 B dispatch, 14,336 B combine at hidden 7168).
//!
//! Every kernel starts with a count exchange among all ranks, so when ranks
//! arrive at different times (`after`) no transfer starts before the last.

use moesim_sim::{Flow, SimDuration, StreamId, TaskGraph, TaskId};

use crate::cluster::Cluster;
use crate::collectives::join_all;
use crate::error::ModelError;
use crate::routing::{RoutingSpec, Skew, TokenRouter};

/// DeepEP's kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeKernel {
    /// High-throughput kernels (training, prefill): NVLink + RDMA forwarding.
    Normal,
    /// Pure-RDMA low-latency kernels (decode).
    LowLatency,
}

/// Which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoePhase {
    /// Tokens to experts, FP8 with one FP32 scale per 128 channels.
    Dispatch,
    /// Expert outputs back to their tokens, BF16.
    Combine,
}

/// One dispatch or combine over ranks `0..ranks`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeCommSpec {
    pub kernel: MoeKernel,
    pub phase: MoePhase,
    pub ranks: u32,
    pub tokens_per_rank: u32,
    pub hidden: u32,
    pub topk: u32,
    /// Routed experts, spread evenly and contiguously over the ranks.
    pub experts: u32,
    /// Most nodes a token's experts may span (node-limited routing).
    pub node_limit: u32,
    /// SMs the kernel holds on each GPU while it runs.
    pub comm_sms: u32,
    pub skew: Skew,
}

impl MoeCommSpec {
    /// Payload bytes per token copy: FP8 values plus one FP32 scale per 128
    /// channels for dispatch, BF16 for combine.
    pub fn bytes_per_token(&self) -> f64 {
        let h = self.hidden as f64;
        match self.phase {
            MoePhase::Dispatch => h * (1.0 + 4.0 / 128.0),
            MoePhase::Combine => h * 2.0,
        }
    }

    /// Bytes per (token, selected expert) copy of the low-latency kernels:
    /// dispatch adds a 16-byte header to the FP8 payload (7,408 B at hidden
    /// 7168), combine is BF16 (14,336 B) — DeepEP's counts.
    pub fn low_latency_bytes_per_copy(&self) -> f64 {
        match self.phase {
            MoePhase::Dispatch => self.bytes_per_token() + 16.0,
            MoePhase::Combine => self.bytes_per_token(),
        }
    }
}

/// What the lowering produced.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeCommLowering {
    /// Each rank's last task.
    pub last: Vec<TaskId>,
    /// Mean per rank of the NVLink bytes DeepEP counts.
    pub nvlink_bytes_per_rank: f64,
    /// Mean per rank of the RDMA bytes DeepEP counts (0 inside one node).
    pub rdma_bytes_per_rank: f64,
    /// Bytes that actually cross InfiniBand, mean per rank.
    pub ib_bytes_per_rank: f64,
}

fn check(cluster: &Cluster, spec: &MoeCommSpec) -> Result<(), ModelError> {
    let g = cluster.topology.gpus_per_node;
    let bad = |k: &str, m: String| Err(ModelError::invalid(k, m));
    if spec.ranks == 0 || spec.ranks > cluster.gpu_count() {
        return bad(
            "workload.ranks",
            format!("expected 1 to {} (the cluster's GPUs), found {}", cluster.gpu_count(), spec.ranks),
        );
    }
    if spec.ranks > g && !spec.ranks.is_multiple_of(g) {
        return bad(
            "workload.ranks",
            format!("expected whole nodes ({g} GPUs each) or at most one node, found {}", spec.ranks),
        );
    }
    if !spec.experts.is_multiple_of(spec.ranks) {
        return bad(
            "workload.experts",
            format!(
                "expected a multiple of the {} ranks (experts are spread evenly), found {}",
                spec.ranks, spec.experts
            ),
        );
    }
    if spec.tokens_per_rank == 0 || spec.hidden == 0 {
        return bad("workload.tokens_per_rank", "tokens per rank and hidden size must be at least 1".into());
    }
    Ok(())
}

/// The gate a benchmark samples: DeepEP's internode normal benchmark groups
/// experts by node and keeps at most `node_limit` nodes per token; its
/// intranode and low-latency benchmarks take the top-k of all experts.
pub fn routing_spec(cluster: &Cluster, spec: &MoeCommSpec) -> RoutingSpec {
    let g = cluster.topology.gpus_per_node.clamp(1, spec.ranks.max(1));
    let nodes = spec.ranks.div_ceil(g).max(1);
    let (groups, group_limit) = match spec.kernel {
        MoeKernel::Normal if nodes > 1 => (nodes, spec.node_limit.min(nodes)),
        _ => (1, 1),
    };
    RoutingSpec {
        tokens: spec.tokens_per_rank,
        experts: spec.experts,
        topk: spec.topk,
        groups,
        group_limit,
        skew: spec.skew,
    }
}

/// Lowers a dispatch or combine with routing sampled from the seeded gate
/// ([`routing_spec`]); rank r's tasks go on `streams[r]` after `after[r]`.
pub fn lower_moe_comm(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    seed: u64,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
) -> Result<MoeCommLowering, ModelError> {
    check(cluster, spec)?;
    let router = TokenRouter::new(routing_spec(cluster, spec), seed)?;
    lower_routed(cluster, spec, |src, f| router.for_each_token(src, f), graph, streams, after)
}

/// Lowers a dispatch or combine with a routing given explicitly:
/// `experts[src][token]` lists the experts token `token` of rank `src`
/// selected (distinct, below `spec.experts`, at most `spec.topk`; any order).
/// For hand-made cases and imported traces.
pub fn lower_moe_comm_given(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    experts: &[Vec<Vec<u32>>],
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
) -> Result<MoeCommLowering, ModelError> {
    check(cluster, spec)?;
    if experts.len() != spec.ranks as usize {
        return Err(ModelError::invalid(
            "workload.routing",
            format!("expected the tokens of {} ranks, found {}", spec.ranks, experts.len()),
        ));
    }
    for (src, tokens) in experts.iter().enumerate() {
        if tokens.len() != spec.tokens_per_rank as usize {
            return Err(ModelError::invalid(
                "workload.routing",
                format!("rank {src}: expected {} tokens, found {}", spec.tokens_per_rank, tokens.len()),
            ));
        }
        for (t, es) in tokens.iter().enumerate() {
            let mut sorted = es.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != es.len() || es.len() > spec.topk as usize || es.iter().any(|&e| e >= spec.experts) {
                return Err(ModelError::invalid(
                    "workload.routing",
                    format!(
                        "rank {src} token {t}: expected at most {} distinct experts below {}, found {es:?}",
                        spec.topk, spec.experts
                    ),
                ));
            }
        }
    }
    let mut buf: Vec<u32> = Vec::with_capacity(spec.topk as usize);
    let for_source = |src: u32, f: &mut dyn FnMut(&[u32])| {
        for es in &experts[src as usize] {
            buf.clear();
            buf.extend_from_slice(es);
            buf.sort_unstable();
            f(&buf);
        }
    };
    lower_routed(cluster, spec, for_source, graph, streams, after)
}

/// Calls `f` with each token's experts (ascending) for one source rank.
trait ForSource: FnMut(u32, &mut dyn FnMut(&[u32])) {}
impl<F: FnMut(u32, &mut dyn FnMut(&[u32]))> ForSource for F {}

fn lower_routed(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    for_source: impl ForSource,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    after: &[Option<TaskId>],
) -> Result<MoeCommLowering, ModelError> {
    let r_count = spec.ranks as usize;
    assert!(streams.len() == r_count && after.len() == r_count, "one stream and one `after` per rank");
    let start = start_barrier(graph, streams, after);
    let (sends, lowering) = match spec.kernel {
        MoeKernel::Normal => lower_normal(cluster, spec, for_source, graph, streams, start)?,
        MoeKernel::LowLatency => lower_low_latency(cluster, spec, for_source, graph, streams, start),
    };
    let label = match spec.phase {
        MoePhase::Dispatch => "moe dispatch done",
        MoePhase::Combine => "moe combine done",
    };
    let last = join_all(graph, streams, &sends, label);
    Ok(MoeCommLowering { last, ..lowering })
}

/// DeepEP's kernels start by exchanging counts among all ranks, so no rank
/// transfers before every rank has arrived: with `after` given, one barrier
/// (on the first stream) waits for all of them. `None` when nothing waits.
fn start_barrier(graph: &mut TaskGraph, streams: &[StreamId], after: &[Option<TaskId>]) -> Option<TaskId> {
    if after.iter().all(Option::is_none) {
        return None;
    }
    let barrier = graph.add_delay(streams[0], "moe notify", SimDuration::ZERO);
    for &a in after.iter().flatten() {
        graph.add_dep(a, barrier);
    }
    Some(barrier)
}

/// The normal (high-throughput) kernels: NVLink inside a node, RDMA once per
/// target node to the same-index GPU, NVLink forwarding there.
fn lower_normal(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    mut for_source: impl ForSource,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    start: Option<TaskId>,
) -> Result<(Vec<TaskId>, MoeCommLowering), ModelError> {
    let r_count = spec.ranks as usize;
    let g = cluster.topology.gpus_per_node.min(spec.ranks) as usize;
    let nodes = r_count.div_ceil(g);
    let experts_per_rank = spec.experts / spec.ranks;

    // Token copies per (sender, receiver) over each medium, as the dispatch
    // sends them: nvlink[a][b] (a, b in one node), rdma[src][node].
    let mut nvlink = vec![0u64; r_count * g];
    let mut rdma = vec![0u64; r_count * nodes];
    let mut counted_rdma = 0u64;
    let mut counted_nvlink = 0u64;
    let mut dests: Vec<u32> = Vec::with_capacity(spec.topk as usize);
    let mut dest_nodes: Vec<usize> = Vec::with_capacity(nodes);
    for src in 0..r_count {
        let (src_node, src_local) = (src / g, src % g);
        for_source(src as u32, &mut |experts: &[u32]| {
            dests.clear();
            dests.extend(experts.iter().map(|e| e / experts_per_rank));
            dests.dedup();
            dest_nodes.clear();
            dest_nodes.extend(dests.iter().map(|&d| d as usize / g));
            dest_nodes.dedup();
            counted_nvlink += dests.len() as u64;
            if nodes > 1 {
                counted_rdma += dest_nodes.len() as u64;
            }
            for &d in &dests {
                let (d_node, d_local) = (d as usize / g, d as usize % g);
                if d_node == src_node {
                    if d as usize != src {
                        nvlink[src * g + d_local] += 1;
                    }
                } else {
                    // Forward from the same-index GPU of the target node.
                    let relay = d_node * g + src_local;
                    if d as usize != relay {
                        nvlink[relay * g + d_local] += 1;
                    }
                }
            }
            for &m in &dest_nodes {
                if m != src_node {
                    rdma[src * nodes + m] += 1;
                }
            }
        });
    }

    let bytes_per_token = spec.bytes_per_token();
    let combine = spec.phase == MoePhase::Combine;
    let mut scratch = Vec::new();
    let mut flows = Vec::new();
    let mut sends = Vec::with_capacity(r_count);
    let mut ib_tokens = 0u64;
    let label = if combine { "moe combine" } else { "moe dispatch" };
    for a in 0..r_count {
        flows.clear();
        let (a_node, a_local) = (a / g, a % g);
        // NVLink copies a sends (dispatch) or receives (combine).
        for b_local in 0..g {
            let tokens = nvlink[a * g + b_local];
            if tokens > 0 {
                let b = (a_node * g + b_local) as u32;
                let (from, to) = if combine { (b, a as u32) } else { (a as u32, b) };
                let path = cluster.add_route(graph, from, to, 0, &mut scratch);
                flows.push(Flow { path, bytes: tokens as f64 * bytes_per_token });
            }
        }
        // RDMA to (dispatch) or from (combine) the same-index GPU of each node.
        for m in 0..nodes {
            let tokens = rdma[a * nodes + m];
            if tokens > 0 {
                ib_tokens += tokens;
                let peer = (m * g + a_local) as u32;
                let (from, to) = if combine { (peer, a as u32) } else { (a as u32, peer) };
                let path = cluster.add_route(graph, from, to, 0, &mut scratch);
                flows.push(Flow { path, bytes: tokens as f64 * bytes_per_token });
            }
        }
        let hold = (spec.comm_sms > 0).then(|| (cluster.device_of(a as u32), spec.comm_sms));
        let t = graph.add_comm(streams[a], label, flows.iter().copied(), hold);
        if let Some(p) = start {
            graph.add_dep(p, t);
        }
        sends.push(t);
    }
    let per_rank = |count: u64| count as f64 * bytes_per_token / r_count as f64;
    Ok((
        sends,
        MoeCommLowering {
            last: Vec::new(),
            nvlink_bytes_per_rank: per_rank(counted_nvlink),
            rdma_bytes_per_rank: per_rank(counted_rdma),
            ib_bytes_per_rank: per_rank(ib_tokens),
        },
    ))
}

/// The low-latency (decode) kernels: every (token, selected expert) copy goes
/// straight to the expert's rank — over NVLink inside a node, RDMA across —
/// with no forwarding and no SMs held while the data is in flight. Dispatch
/// flows are the source's task; combine flows (expert rank back to the
/// token's rank) are the receiver's. DeepEP counts every copy, the source's
/// own rank included, as RDMA bytes; `nvlink_bytes_per_rank` is 0.
fn lower_low_latency(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    mut for_source: impl ForSource,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    start: Option<TaskId>,
) -> (Vec<TaskId>, MoeCommLowering) {
    let r_count = spec.ranks as usize;
    let experts_per_rank = spec.experts / spec.ranks;
    let bytes_per_copy = spec.low_latency_bytes_per_copy();
    let combine = spec.phase == MoePhase::Combine;
    let label = if combine { "moe combine (low latency)" } else { "moe dispatch (low latency)" };
    // Copies from the current source to each rank: O(ranks) memory.
    let mut copies = vec![0u64; r_count];
    let (mut counted, mut ib_copies) = (0u64, 0u64);
    let mut scratch = Vec::new();
    let mut flows = Vec::new();
    let mut sends = Vec::with_capacity(r_count);
    for (src, &stream) in streams.iter().enumerate() {
        copies.iter_mut().for_each(|c| *c = 0);
        for_source(src as u32, &mut |experts: &[u32]| {
            for &e in experts {
                copies[(e / experts_per_rank) as usize] += 1;
            }
        });
        flows.clear();
        let src_node = cluster.topology.node_of(src as u32);
        for (dst, &n) in copies.iter().enumerate() {
            counted += n;
            if n == 0 || dst == src {
                continue;
            }
            if cluster.topology.node_of(dst as u32) != src_node {
                ib_copies += n;
            }
            let (from, to) = if combine { (dst as u32, src as u32) } else { (src as u32, dst as u32) };
            let path = cluster.add_route(graph, from, to, 0, &mut scratch);
            flows.push(Flow { path, bytes: n as f64 * bytes_per_copy });
        }
        let t = graph.add_comm(stream, label, flows.iter().copied(), None);
        if let Some(p) = start {
            graph.add_dep(p, t);
        }
        sends.push(t);
    }
    let per_rank = |count: u64| count as f64 * bytes_per_copy / r_count as f64;
    (
        sends,
        MoeCommLowering {
            last: Vec::new(),
            nvlink_bytes_per_rank: 0.0,
            rdma_bytes_per_rank: per_rank(counted),
            ib_bytes_per_rank: per_rank(ib_copies),
        },
    )
}
