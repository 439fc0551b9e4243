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
//!
//! How the normal kernels drive RDMA is [`DeepEpRdma`]: GPU-initiated with a
//! queue pair per channel (DeepEP since 2025-04, line-rate bound), or the
//! first release's NVSHMEM IBRC, whose channels bound every (token, node)
//! copy a rank makes, its own node's included.

use moesim_sim::{Flow, SimDuration, StreamId, TaskGraph, TaskId};

use crate::error::ModelError;
use crate::network::cluster::Cluster;
use crate::network::collectives::join_all;
use crate::transformer::routing::{MoePhase, RoutingSpec, Skew, TokenRouter};

/// DeepEP's kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeKernel {
    /// High-throughput kernels (training, prefill): NVLink + RDMA forwarding.
    Normal,
    /// Pure-RDMA low-latency kernels (decode).
    LowLatency,
}

/// How DeepEP's normal (internode) kernels drive RDMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeepEpRdma {
    /// GPU-initiated RDMA (IBGDA) with a queue pair per channel: DeepEP
    /// since PR #130 (2025-04-22), whose EP32 and EP64 benchmarks run at the
    /// InfiniBand line rate. The links bound the kernels.
    #[default]
    Ibgda,
    /// NVSHMEM's IBRC transport, one queue pair per channel: DeepEP as first
    /// released (2025-02-25) and as DeepSeek trained V3 with. Its channels
    /// move (token, node) copies, the rank's own node included, at
    /// [`IBRC_GB_PER_S_PER_SM`] per SM — below the line rate.
    Ibrc,
}

/// What one SM of DeepEP's IBRC normal kernels moves, GB/s of (token, node)
/// copies (DeepEP's RDMA count: the source's own node included). DeepEP's
/// first README (ebfe47e, 2025-02-25) gives 43, 44 and 46 GB/s for EP16,
/// EP32 and EP64 dispatch (43, 47, 45 combine) with the 24 SMs its
/// `test_internode.py` runs; PR #130 (2025-04-22) lifted EP32 and EP64 to
/// 58 and 51 by changing the transport alone, so the first kernels were
/// bound by their channels, not the links. The EP64 dispatch figure over its
/// 24 SMs is this rate (`deepep-ibrc-ep64-dispatch-rdma` is fitted; the other
/// IBRC rows are held out).
pub const IBRC_GB_PER_S_PER_SM: f64 = 46.0 / 24.0;

impl DeepEpRdma {
    /// The scenario's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeepEpRdma::Ibgda => "ibgda",
            DeepEpRdma::Ibrc => "ibrc",
        }
    }

    /// The per-SM rate of the kernels' RDMA channels, GB/s of (token, node)
    /// copies, where they bound the kernel (`None`: the links do).
    pub fn channel_gb_per_s_per_sm(self) -> Option<f64> {
        match self {
            DeepEpRdma::Ibgda => None,
            DeepEpRdma::Ibrc => Some(IBRC_GB_PER_S_PER_SM),
        }
    }

    /// Bounds `cluster`'s normal kernels holding `sms` SMs by those SMs
    /// ([`Cluster::cap_comm_by_sms`]) and, where this transport has them, by
    /// their RDMA channels ([`Cluster::cap_rdma_channels`]).
    pub fn cap_normal_kernels(self, cluster: &mut Cluster, sms: u32) {
        cluster.cap_comm_by_sms(sms);
        if let Some(rate) = self.channel_gb_per_s_per_sm() {
            cluster.cap_rdma_channels(sms, rate);
        }
    }
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

/// Lowers a dispatch or combine as one representative rank sees it: the
/// routing of every rank is sampled ([`routing_spec`]) and counted, and the
/// critical rank's sends and receptions are lowered as one task on `stream`
/// (which must belong to that rank: see [`critical_rank_of`]). Byte counts
/// are the group's means, as [`lower_moe_comm`] reports them.
pub fn lower_moe_comm_mirror(
    cluster: &Cluster,
    spec: &MoeCommSpec,
    seed: u64,
    graph: &mut TaskGraph,
    stream: StreamId,
    rep: u32,
) -> Result<MoeCommLowering, ModelError> {
    check(cluster, spec)?;
    let router = TokenRouter::new(routing_spec(cluster, spec), seed)?;
    let g = cluster.topology.gpus_per_node.min(spec.ranks);
    let label = kernel_label(spec.phase);
    let per_rank = |count: u64, bytes: f64| count as f64 * bytes / spec.ranks as f64;
    match spec.kernel {
        MoeKernel::Normal => {
            let traffic = EpTraffic::count(spec.ranks, g, spec.experts, |src, f| router.for_each_token(src, f));
            let bytes = spec.bytes_per_token();
            let kernel = CommKernel::normal(spec.phase, bytes, spec.comm_sms);
            let t = traffic.lower_mirror(cluster, &kernel, rep as usize, label, graph, stream);
            Ok(MoeCommLowering {
                last: vec![t],
                nvlink_bytes_per_rank: per_rank(traffic.counted_nvlink, bytes),
                rdma_bytes_per_rank: per_rank(traffic.counted_rdma, bytes),
                ib_bytes_per_rank: per_rank(traffic.rdma.iter().sum(), bytes),
            })
        }
        MoeKernel::LowLatency => {
            let traffic = LowLatencyTraffic::count(spec.ranks, spec.experts, |src, f| router.for_each_token(src, f));
            let bytes = spec.low_latency_bytes_per_copy();
            let kernel = CommKernel::low_latency(cluster, spec.phase, bytes);
            let t = traffic.lower_mirror(cluster, &kernel, rep as usize, label, graph, stream);
            let r_count = traffic.ranks;
            let mut ib = 0u64;
            for src in 0..r_count {
                for dst in 0..r_count {
                    if cluster.topology.node_of(src as u32) != cluster.topology.node_of(dst as u32) {
                        ib += traffic.copies[src * r_count + dst];
                    }
                }
            }
            Ok(MoeCommLowering {
                last: vec![t],
                nvlink_bytes_per_rank: 0.0,
                rdma_bytes_per_rank: per_rank(traffic.copies.iter().sum(), bytes),
                ib_bytes_per_rank: per_rank(ib, bytes),
            })
        }
    }
}

/// The rank a representative lowering of `spec` mirrors: the one whose
/// exchange takes longest on its own links under the sampled routing.
pub fn critical_rank_of(cluster: &Cluster, spec: &MoeCommSpec, seed: u64) -> Result<u32, ModelError> {
    check(cluster, spec)?;
    let router = TokenRouter::new(routing_spec(cluster, spec), seed)?;
    let g = cluster.topology.gpus_per_node.min(spec.ranks);
    let nv = cluster.topology.summary().gpu_nvlink_bytes_per_s.max(1.0);
    let ib = cluster.topology.summary().gpu_network_bytes_per_s.max(1.0);
    Ok(match spec.kernel {
        MoeKernel::Normal => {
            EpTraffic::count(spec.ranks, g, spec.experts, |src, f| router.for_each_token(src, f)).critical_rank(nv, ib)
        }
        MoeKernel::LowLatency => {
            LowLatencyTraffic::count(spec.ranks, spec.experts, |src, f| router.for_each_token(src, f))
                .critical_rank(g, nv, ib)
        }
    } as u32)
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
pub trait ForSource: FnMut(u32, &mut dyn FnMut(&[u32])) {}
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

/// A standalone exchange's task label.
fn kernel_label(phase: MoePhase) -> &'static str {
    match phase {
        MoePhase::Dispatch => "moe dispatch",
        MoePhase::Combine => "moe combine",
    }
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
    for_source: impl ForSource,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    start: Option<TaskId>,
) -> Result<(Vec<TaskId>, MoeCommLowering), ModelError> {
    let g = cluster.topology.gpus_per_node.min(spec.ranks);
    let traffic = EpTraffic::count(spec.ranks, g, spec.experts, for_source);
    let bytes_per_token = spec.bytes_per_token();
    let kernel = CommKernel::normal(spec.phase, bytes_per_token, spec.comm_sms);
    let sends = traffic.lower_all(cluster, &kernel, kernel_label(spec.phase), graph, streams, start);
    let per_rank = |count: u64| count as f64 * bytes_per_token / spec.ranks as f64;
    Ok((
        sends,
        MoeCommLowering {
            last: Vec::new(),
            nvlink_bytes_per_rank: per_rank(traffic.counted_nvlink),
            rdma_bytes_per_rank: per_rank(traffic.counted_rdma),
            ib_bytes_per_rank: per_rank(traffic.rdma.iter().sum()),
        },
    ))
}

/// Token copies of one DeepEP normal-kernel dispatch over an expert-parallel
/// group of `ranks` ranks, `gpus_per_node` per node, as the kernel sends
/// them (a combine sends the same copies backwards).
#[derive(Debug, Clone, PartialEq)]
pub struct EpTraffic {
    pub ranks: usize,
    pub gpus_per_node: usize,
    pub nodes: usize,
    /// `nvlink[a * gpus_per_node + b]`: copies rank `a` sends over NVLink to
    /// the rank with local index `b` in its node (its own and forwarded ones).
    pub nvlink: Vec<u64>,
    /// `rdma[src * nodes + m]`: tokens `src` sends over RDMA to the GPU with
    /// its local index in node `m`.
    pub rdma: Vec<u64>,
    /// `own_node[src]`: tokens of `src` with an expert in its own node (the
    /// (token, node) copies its RDMA channels make without crossing nodes;
    /// 0 inside one node).
    pub own_node: Vec<u64>,
    /// (token, expert) pairs each rank's experts receive.
    pub rows: Vec<u64>,
    /// (token, destination rank) pairs, as DeepEP's benchmark counts NVLink bytes.
    pub counted_nvlink: u64,
    /// (token, destination node) pairs across nodes incl. the source's own, as
    /// DeepEP's benchmark counts RDMA bytes (0 inside one node).
    pub counted_rdma: u64,
}

/// What one source rank's tokens need of an expert-parallel group of
/// `ranks` members: per member, the tokens with at least one expert there
/// and the (token, expert) copies it receives; per node, the tokens with at
/// least one expert there. Enough to place the source anywhere in the group
/// ([`EpTraffic::from_sources`]): a token's experts do not depend on which
/// rank sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCounts {
    pub dest_tokens: Vec<u64>,
    pub node_tokens: Vec<u64>,
    pub rows: Vec<u64>,
}

impl SourceCounts {
    /// Counts one source's routing (`for_tokens` calls back with each
    /// token's experts, ascending; experts spread evenly and contiguously
    /// over the `ranks` members, `gpus_per_node` to a node).
    pub fn count(
        ranks: u32,
        gpus_per_node: u32,
        experts: u32,
        for_tokens: impl FnOnce(&mut dyn FnMut(&[u32])),
    ) -> SourceCounts {
        let r_count = ranks as usize;
        let g = gpus_per_node.clamp(1, ranks.max(1)) as usize;
        let nodes = r_count.div_ceil(g);
        let experts_per_rank = (experts / ranks.max(1)).max(1);
        let mut c = SourceCounts { dest_tokens: vec![0; r_count], node_tokens: vec![0; nodes], rows: vec![0; r_count] };
        for_tokens(&mut |experts: &[u32]| {
            let (mut last_dest, mut last_node) = (usize::MAX, usize::MAX);
            for &e in experts {
                let d = ((e / experts_per_rank) as usize).min(r_count - 1);
                c.rows[d] += 1;
                if d != last_dest {
                    c.dest_tokens[d] += 1;
                    last_dest = d;
                    if d / g != last_node {
                        c.node_tokens[d / g] += 1;
                        last_node = d / g;
                    }
                }
            }
        });
        c
    }
}

/// One rank's traffic over each medium, token copies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RankTraffic {
    pub nvlink_out: u64,
    pub nvlink_in: u64,
    pub rdma_out: u64,
    pub rdma_in: u64,
}

impl EpTraffic {
    /// Counts the copies of a routing given per source rank (`for_source`
    /// calls back with each token's experts, ascending; experts are spread
    /// evenly and contiguously over the ranks).
    pub fn count(ranks: u32, gpus_per_node: u32, experts: u32, mut for_source: impl ForSource) -> EpTraffic {
        let sources: Vec<SourceCounts> =
            (0..ranks).map(|src| SourceCounts::count(ranks, gpus_per_node, experts, |f| for_source(src, f))).collect();
        EpTraffic::from_sources(ranks, gpus_per_node, &sources.iter().collect::<Vec<_>>())
    }

    /// The traffic of a group whose member `src` sent the tokens counted in
    /// `sources[src]` (one per member, each counted for this group's size).
    /// [`EpTraffic::count`] is this over the members' own routings; a
    /// routing drawn once per source can so be reused in another position.
    pub fn from_sources(ranks: u32, gpus_per_node: u32, sources: &[&SourceCounts]) -> EpTraffic {
        let r_count = ranks as usize;
        let g = gpus_per_node.clamp(1, ranks.max(1)) as usize;
        let nodes = r_count.div_ceil(g);
        assert_eq!(sources.len(), r_count, "one source per member");
        let mut t = EpTraffic {
            ranks: r_count,
            gpus_per_node: g,
            nodes,
            nvlink: vec![0; r_count * g],
            rdma: vec![0; r_count * nodes],
            own_node: vec![0; r_count],
            rows: vec![0; r_count],
            counted_nvlink: 0,
            counted_rdma: 0,
        };
        for (src, c) in sources.iter().enumerate() {
            let (src_node, src_local) = (src / g, src % g);
            for (d, &tokens) in c.dest_tokens.iter().enumerate() {
                t.rows[d] += c.rows[d];
                if tokens == 0 {
                    continue;
                }
                t.counted_nvlink += tokens;
                let (d_node, d_local) = (d / g, d % g);
                if d_node == src_node {
                    if d != src {
                        t.nvlink[src * g + d_local] += tokens;
                    }
                } else {
                    // Forwarded from the same-index GPU of the target node.
                    let relay = d_node * g + src_local;
                    if d != relay {
                        t.nvlink[relay * g + d_local] += tokens;
                    }
                }
            }
            for (m, &tokens) in c.node_tokens.iter().enumerate() {
                if nodes > 1 {
                    t.counted_rdma += tokens;
                }
                if m != src_node {
                    t.rdma[src * nodes + m] += tokens;
                } else if nodes > 1 {
                    t.own_node[src] += tokens;
                }
            }
        }
        t
    }

    /// The same exchange with member `from` renamed `to`: the two members'
    /// nodes swap places and so do their local indices in every node, which
    /// keeps the kernels' structure (NVLink inside a node, RDMA to the
    /// same-index GPU of another): member `to` now carries exactly what
    /// `from` carried on each of its links ([`EpTraffic::rank`]), and the
    /// other members are permuted alike.
    pub fn relabelled(&self, from: usize, to: usize) -> EpTraffic {
        let g = self.gpus_per_node;
        let swap = |x: usize, a: usize, b: usize| {
            if x == a {
                b
            } else if x == b {
                a
            } else {
                x
            }
        };
        let node = |m: usize| swap(m, from / g, to / g);
        let local = |l: usize| swap(l, from % g, to % g);
        let rank = |r: usize| node(r / g) * g + local(r % g);
        let mut t = EpTraffic {
            nvlink: vec![0; self.nvlink.len()],
            rdma: vec![0; self.rdma.len()],
            own_node: vec![0; self.own_node.len()],
            rows: vec![0; self.rows.len()],
            ..self.clone()
        };
        for a in 0..self.ranks {
            let ra = rank(a);
            for b in 0..g {
                t.nvlink[ra * g + local(b)] = self.nvlink[a * g + b];
            }
            for m in 0..self.nodes {
                t.rdma[ra * self.nodes + node(m)] = self.rdma[a * self.nodes + m];
            }
            t.rows[ra] = self.rows[a];
            t.own_node[ra] = self.own_node[a];
        }
        t
    }

    /// Rank `r`'s copies over each medium.
    pub fn rank(&self, r: usize) -> RankTraffic {
        let g = self.gpus_per_node;
        let (node, local) = (r / g, r % g);
        let nvlink_out = self.nvlink[r * g..(r + 1) * g].iter().sum();
        let nvlink_in = (0..g).map(|a| self.nvlink[(node * g + a) * g + local]).sum();
        let rdma_out = self.rdma[r * self.nodes..(r + 1) * self.nodes].iter().sum();
        let rdma_in = (0..self.nodes).map(|m| self.rdma[(m * g + local) * self.nodes + node]).sum();
        RankTraffic { nvlink_out, nvlink_in, rdma_out, rdma_in }
    }

    /// The rank whose exchange takes longest on its own links, given the
    /// per-direction NVLink and RDMA rates (bytes/s): the critical rank a
    /// representative simulation should mirror.
    pub fn critical_rank(&self, nvlink_bytes_per_s: f64, rdma_bytes_per_s: f64) -> usize {
        let time = |r: &RankTraffic| {
            let nv = r.nvlink_out.max(r.nvlink_in) as f64 / nvlink_bytes_per_s;
            let ib = r.rdma_out.max(r.rdma_in) as f64 / rdma_bytes_per_s;
            nv.max(ib)
        };
        (0..self.ranks)
            .map(|r| (time(&self.rank(r)), r))
            .fold((f64::MIN, 0), |best, x| if x.0 > best.0 { x } else { best })
            .1
    }
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
    for_source: impl ForSource,
    graph: &mut TaskGraph,
    streams: &[StreamId],
    start: Option<TaskId>,
) -> (Vec<TaskId>, MoeCommLowering) {
    let traffic = LowLatencyTraffic::count(spec.ranks, spec.experts, for_source);
    let bytes_per_copy = spec.low_latency_bytes_per_copy();
    let kernel = CommKernel::low_latency(cluster, spec.phase, bytes_per_copy);
    let sends = traffic.lower_all(cluster, &kernel, kernel_label(spec.phase), graph, streams, start);
    let r_count = traffic.ranks;
    let mut ib_copies = 0u64;
    for src in 0..r_count {
        let src_node = cluster.topology.node_of(src as u32);
        for dst in 0..r_count {
            if cluster.topology.node_of(dst as u32) != src_node {
                ib_copies += traffic.copies[src * r_count + dst];
            }
        }
    }
    let counted: u64 = traffic.copies.iter().sum();
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

/// Copies of one low-latency dispatch over an expert-parallel group (a
/// combine sends the same copies backwards): every (token, selected expert)
/// pair is one copy from the token's rank to the expert's rank.
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatencyTraffic {
    pub ranks: usize,
    /// `copies[src * ranks + dst]`: copies rank `src` sends to rank `dst`
    /// (its own rank included).
    pub copies: Vec<u64>,
    /// Copies each rank's experts receive (= its expert GEMM rows).
    pub rows: Vec<u64>,
}

/// One communication kernel of an expert-parallel exchange: its direction,
/// payload bytes per token copy, the group's first global rank, the SMs it
/// holds and its fixed time besides the transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommKernel {
    pub phase: MoePhase,
    /// Bytes per token sent to a rank (normal) or per (token, expert) copy
    /// (low latency).
    pub bytes: f64,
    /// Global rank of group member 0.
    pub first_rank: u32,
    /// SMs the kernel holds on its rank while it runs.
    pub comm_sms: u32,
    /// Time after the last arrival (launch, packing, signalling).
    pub overhead: SimDuration,
}

impl CommKernel {
    /// DeepEP's normal kernel: `bytes_per_token` per token and destination
    /// rank, holding `comm_sms` SMs, in the group starting at rank 0.
    pub fn normal(phase: MoePhase, bytes_per_token: f64, comm_sms: u32) -> CommKernel {
        CommKernel { phase, bytes: bytes_per_token, first_rank: 0, comm_sms, overhead: SimDuration::ZERO }
    }

    /// DeepEP's low-latency kernel: `bytes_per_copy` per (token, expert)
    /// copy, no SMs held while in flight, the device's fixed kernel time.
    pub fn low_latency(cluster: &Cluster, phase: MoePhase, bytes_per_copy: f64) -> CommKernel {
        let overhead = SimDuration::from_us_f64(cluster.device.low_latency_kernel_overhead_us);
        CommKernel { phase, bytes: bytes_per_copy, first_rank: 0, comm_sms: 0, overhead }
    }

    /// The same kernel in the group whose member 0 is global rank `first_rank`.
    pub fn in_group(self, first_rank: u32) -> CommKernel {
        CommKernel { first_rank, ..self }
    }
}

/// An expert-parallel exchange (normal or low-latency kernels) with its
/// copies counted, lowered to one communication task per rank kernel.
pub trait Exchange {
    /// Ranks in the group.
    fn ranks(&self) -> usize;

    /// The flows of rank `a`'s kernel (group-local index): dispatch sends
    /// `a`'s copies, combine runs them backwards so `a` receives them. With
    /// `mirror`, the rank's transfers in the other direction are added too.
    fn rank_flows(
        &self,
        cluster: &Cluster,
        kernel: &CommKernel,
        a: usize,
        mirror: bool,
        graph: &mut TaskGraph,
    ) -> Vec<Flow>;

    /// Lowers the exchange for every rank of the group: rank `a`'s kernel is
    /// one communication task on `streams[a]`, holding the kernel's SMs,
    /// after `start`. Returns the tasks.
    fn lower_all(
        &self,
        cluster: &Cluster,
        kernel: &CommKernel,
        label: &str,
        graph: &mut TaskGraph,
        streams: &[StreamId],
        start: Option<TaskId>,
    ) -> Vec<TaskId> {
        streams
            .iter()
            .enumerate()
            .take(self.ranks())
            .map(|(a, &stream)| {
                let t = lower_kernel(self, cluster, kernel, a, false, label, graph, stream);
                if let Some(p) = start {
                    graph.add_dep(p, t);
                }
                t
            })
            .collect()
    }

    /// Lowers the exchange as seen by one representative rank `rep` whose
    /// peers are not simulated: one task with the rank's sends *and* its
    /// receptions as flows over the real routes. Only the representative's
    /// own links are shared with its other traffic; a peer's links are
    /// assumed loaded like the representative's (the mirror assumption), so
    /// the task lasts as long as the slower of the rank's send and receive
    /// sides — what every rank of a symmetric exchange sees.
    fn lower_mirror(
        &self,
        cluster: &Cluster,
        kernel: &CommKernel,
        rep: usize,
        label: &str,
        graph: &mut TaskGraph,
        stream: StreamId,
    ) -> TaskId {
        lower_kernel(self, cluster, kernel, rep, true, label, graph, stream)
    }
}

impl Exchange for EpTraffic {
    fn ranks(&self) -> usize {
        self.ranks
    }
    /// The flows of rank `a`'s kernel (group-local indices; `first_rank` is
    /// the global rank of group member 0): dispatch sends `a`'s NVLink copies
    /// and RDMA tokens; combine runs the same copies backwards, so `a`
    /// receives them. With `mirror`, the rank's receptions in the other
    /// direction are added too (see [`Exchange::lower_mirror`]).
    fn rank_flows(
        &self,
        cluster: &Cluster,
        kernel: &CommKernel,
        a: usize,
        mirror: bool,
        graph: &mut TaskGraph,
    ) -> Vec<Flow> {
        let (phase, bytes_per_token, first_rank) = (kernel.phase, kernel.bytes, kernel.first_rank);
        let mut scratch = Vec::new();
        let mut flows = Vec::new();
        let g = self.gpus_per_node;
        let (a_node, a_local) = (a / g, a % g);
        let combine = phase == MoePhase::Combine;
        let global = |r: usize| first_rank + r as u32;
        let mut push = |graph: &mut TaskGraph, from: usize, to: usize, tokens: u64| {
            if tokens > 0 && from != to {
                let path = cluster.add_kernel_route(graph, global(from), global(to), 0, &mut scratch);
                flows.push(Flow { path, bytes: tokens as f64 * bytes_per_token });
            }
        };
        for b_local in 0..g {
            let b = a_node * g + b_local;
            let out = self.nvlink[a * g + b_local];
            let (from, to) = if combine { (b, a) } else { (a, b) };
            push(graph, from, to, out);
            if mirror {
                let back = self.nvlink[b * g + a_local];
                push(graph, to, from, back);
            }
        }
        for m in 0..self.nodes {
            let peer = m * g + a_local;
            let out = self.rdma[a * self.nodes + m];
            let (from, to) = if combine { (peer, a) } else { (a, peer) };
            push(graph, from, to, out);
            if mirror {
                let back = self.rdma[peer * self.nodes + a_node];
                push(graph, to, from, back);
            }
        }
        // The copies `a`'s RDMA channels make for its own node, where the
        // channels bound the kernel (`DeepEpRdma::Ibrc`).
        if self.own_node[a] > 0 {
            if let Some(path) = cluster.add_channel_self_route(graph, global(a)) {
                flows.push(Flow { path, bytes: self.own_node[a] as f64 * bytes_per_token });
            }
        }
        flows
    }
}

impl Exchange for LowLatencyTraffic {
    fn ranks(&self) -> usize {
        self.ranks
    }
    /// Flows of rank `a`'s kernel: dispatch sends its copies, combine
    /// receives them back; with `mirror` the other direction is added too.
    fn rank_flows(
        &self,
        cluster: &Cluster,
        kernel: &CommKernel,
        a: usize,
        mirror: bool,
        graph: &mut TaskGraph,
    ) -> Vec<Flow> {
        let (phase, bytes_per_copy, first_rank) = (kernel.phase, kernel.bytes, kernel.first_rank);
        let mut scratch = Vec::new();
        let mut flows = Vec::new();
        let n = self.ranks;
        let combine = phase == MoePhase::Combine;
        let global = |r: usize| first_rank + r as u32;
        for b in 0..n {
            let sends = [(self.copies[a * n + b], a, b), (if mirror { self.copies[b * n + a] } else { 0 }, b, a)];
            for (copies, src, dst) in sends {
                if copies == 0 || src == dst {
                    continue;
                }
                let (from, to) = if combine { (dst, src) } else { (src, dst) };
                let path = cluster.add_route(graph, global(from), global(to), 0, &mut scratch);
                flows.push(Flow { path, bytes: copies as f64 * bytes_per_copy });
            }
        }
        flows
    }
}

/// One rank's kernel as a communication task on `stream` (with its
/// receptions too when `mirror`), holding the kernel's SMs on that rank.
#[allow(clippy::too_many_arguments)]
fn lower_kernel<E: Exchange + ?Sized>(
    exchange: &E,
    cluster: &Cluster,
    kernel: &CommKernel,
    a: usize,
    mirror: bool,
    label: &str,
    graph: &mut TaskGraph,
    stream: StreamId,
) -> TaskId {
    let flows = exchange.rank_flows(cluster, kernel, a, mirror, graph);
    let rank = kernel.first_rank + a as u32;
    let hold = (kernel.comm_sms > 0).then(|| (cluster.device_of(rank), kernel.comm_sms));
    let t = graph.add_comm(stream, label, flows, hold);
    graph.set_comm_overhead(t, kernel.overhead);
    t
}

impl LowLatencyTraffic {
    /// Counts the copies of a routing given per source rank (experts spread
    /// evenly and contiguously over the ranks).
    pub fn count(ranks: u32, experts: u32, mut for_source: impl ForSource) -> LowLatencyTraffic {
        let r_count = ranks as usize;
        let experts_per_rank = (experts / ranks.max(1)).max(1);
        let mut copies = vec![0u64; r_count * r_count];
        for src in 0..r_count {
            let row = &mut copies[src * r_count..(src + 1) * r_count];
            for_source(src as u32, &mut |experts: &[u32]| {
                for &e in experts {
                    row[((e / experts_per_rank) as usize).min(r_count - 1)] += 1;
                }
            });
        }
        let rows = (0..r_count).map(|d| (0..r_count).map(|s| copies[s * r_count + d]).sum()).collect();
        LowLatencyTraffic { ranks: r_count, copies, rows }
    }

    /// Copies rank `r` sends to other ranks and receives from them.
    pub fn rank_copies(&self, r: usize) -> (u64, u64) {
        let n = self.ranks;
        let out = (0..n).filter(|&d| d != r).map(|d| self.copies[r * n + d]).sum();
        let inc = (0..n).filter(|&s| s != r).map(|s| self.copies[s * n + r]).sum();
        (out, inc)
    }

    /// The rank whose exchange takes longest on its own links: copies over
    /// NVLink inside its node and over the network to other nodes, each at
    /// its per-direction rate (bytes/s, per copy counted once).
    pub fn critical_rank(&self, gpus_per_node: u32, nvlink_bytes_per_s: f64, rdma_bytes_per_s: f64) -> usize {
        let g = gpus_per_node.max(1) as usize;
        let n = self.ranks;
        let time = |r: usize| {
            let (mut nv_out, mut nv_in, mut ib_out, mut ib_in) = (0u64, 0u64, 0u64, 0u64);
            for p in (0..n).filter(|&p| p != r) {
                let (out, inc) = (self.copies[r * n + p], self.copies[p * n + r]);
                if p / g == r / g {
                    nv_out += out;
                    nv_in += inc;
                } else {
                    ib_out += out;
                    ib_in += inc;
                }
            }
            (nv_out.max(nv_in) as f64 / nvlink_bytes_per_s).max(ib_out.max(ib_in) as f64 / rdma_bytes_per_s)
        };
        (0..n).map(|r| (time(r), r)).fold((f64::MIN, 0), |best, x| if x.0 > best.0 { x } else { best }).1
    }
}
