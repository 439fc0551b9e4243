//! DeepEP-style dispatch/combine: byte counts and flows for hand-made
//! routings, determinism, and the published DeepEP figures end to end (with
//! the efficiencies as the topology presets hold them).

use moesim_models::network::moe_comm::{
    lower_moe_comm, lower_moe_comm_given, routing_spec, DeepEpRdma, MoeCommLowering, MoeCommSpec, MoeKernel,
    IBRC_GB_PER_S_PER_SM,
};
use moesim_models::transformer::routing::MoePhase;
use moesim_models::transformer::routing::{Skew, TokenRouter};
use moesim_models::{Cluster, DeviceSpec};
use moesim_sim::{EngineOptions, Quiet, SimDuration, TaskGraph, TaskKind};
use moesim_topologies::{LinkDefaults, LinkKind, TopologyConfig};

const H800_LINKS: LinkDefaults = LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 };

/// An H800 cluster of `ranks` GPUs (one node up to 8) with the presets'
/// efficiencies.
fn cluster(ranks: u32) -> Cluster {
    let cfg = if ranks <= 8 {
        TopologyConfig { preset: Some("h800-node".into()), ..Default::default() }
    } else {
        TopologyConfig { preset: Some("h800-cluster".into()), nodes: Some(ranks / 8), ..Default::default() }
    };
    let spec = cfg.resolve(H800_LINKS).unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1)
}

/// DeepEP's README benchmark: 4096 tokens, hidden 7168, top-8 of 256 experts,
/// at most 4 nodes per token, the 24 SMs its tests run.
fn deepep(kernel: MoeKernel, phase: MoePhase, ranks: u32, tokens: u32) -> MoeCommSpec {
    MoeCommSpec {
        kernel,
        phase,
        ranks,
        tokens_per_rank: tokens,
        hidden: 7168,
        topk: 8,
        experts: 256,
        node_limit: 4,
        comm_sms: 24,
        skew: Skew::Balanced,
    }
}

struct Run {
    cluster: Cluster,
    graph: TaskGraph,
    low: MoeCommLowering,
    time_s: f64,
}

fn simulate(cluster: Cluster, graph: TaskGraph, low: MoeCommLowering) -> Run {
    let result = moesim_sim::run(&cluster.platform, &graph, &EngineOptions::default(), &mut Quiet).unwrap();
    Run { cluster, graph, low, time_s: result.end.as_secs_f64() }
}

fn run(spec: &MoeCommSpec, seed: u64) -> Run {
    run_with(spec, seed, None)
}

/// As [`run`], the normal kernels bounded by their SMs and `rdma`'s channels.
fn run_with(spec: &MoeCommSpec, seed: u64, rdma: Option<DeepEpRdma>) -> Run {
    let mut c = cluster(spec.ranks);
    if let Some(rdma) = rdma {
        rdma.cap_normal_kernels(&mut c, spec.comm_sms);
    }
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..spec.ranks).map(|r| g.add_stream(r, "ep")).collect();
    let low = lower_moe_comm(&c, spec, seed, &mut g, &streams, &vec![None; spec.ranks as usize]).unwrap();
    simulate(c, g, low)
}

fn run_given(spec: &MoeCommSpec, experts: &[Vec<Vec<u32>>]) -> Run {
    let c = cluster(spec.ranks);
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..spec.ranks).map(|r| g.add_stream(r, "ep")).collect();
    let low = lower_moe_comm_given(&c, spec, experts, &mut g, &streams, &vec![None; spec.ranks as usize]).unwrap();
    simulate(c, g, low)
}

/// The GPU rank at the start and the end of a flow's path.
fn endpoints(c: &Cluster, g: &TaskGraph, path: moesim_sim::PathId) -> (u32, u32) {
    let links = g.path(path);
    let edge = |i: usize| petgraph::graph::EdgeIndex::new(links[i].0 as usize);
    let (from, _) = c.topology.graph.edge_endpoints(edge(0)).unwrap();
    let (_, to) = c.topology.graph.edge_endpoints(edge(links.len() - 1)).unwrap();
    let rank = |v| c.topology.gpus.iter().position(|&x| x == v).unwrap() as u32;
    (rank(from), rank(to))
}

/// Every flow as (from, to, bytes), sorted.
fn flows(r: &Run) -> Vec<(u32, u32, f64)> {
    let mut out: Vec<_> = r
        .graph
        .flows()
        .iter()
        .map(|f| {
            let (a, b) = endpoints(&r.cluster, &r.graph, f.path);
            (a, b, f.bytes)
        })
        .collect();
    out.sort_by_key(|x| (x.0, x.1));
    out
}

/// Bytes of the graph's flows that cross a link of `kind`, once per flow.
fn bytes_over(r: &Run, kind: LinkKind) -> f64 {
    let is =
        |l: &moesim_sim::LinkId| r.cluster.topology.link(petgraph::graph::EdgeIndex::new(l.0 as usize)).kind == kind;
    r.graph.flows().iter().filter(|f| r.graph.path(f.path).iter().any(is)).map(|f| f.bytes).sum()
}

/// EP16 (2 nodes), one expert per rank, one token per rank; only ranks 0 and
/// 3 route anything: rank 0's token to experts {10, 1, 9, 0}, rank 3's to {12}.
fn tiny(kernel: MoeKernel, phase: MoePhase) -> (MoeCommSpec, Vec<Vec<Vec<u32>>>) {
    let spec = MoeCommSpec { tokens_per_rank: 1, hidden: 128, topk: 4, experts: 16, ..deepep(kernel, phase, 16, 1) };
    let mut experts = vec![vec![vec![]]; 16];
    experts[0] = vec![vec![10, 1, 9, 0]];
    experts[3] = vec![vec![12]];
    (spec, experts)
}

#[test]
fn hand_made_routing_is_counted_and_delivered_once_per_rank() {
    let (spec, experts) = tiny(MoeKernel::Normal, MoePhase::Dispatch);
    let r = run_given(&spec, &experts);
    let b = 128.0 * (1.0 + 4.0 / 128.0);
    // Rank 0's token: NVLink to rank 1 (its own copy stays), RDMA once to
    // node 1's GPU 8 (same local index), which forwards to 9 and 10. Rank 3's
    // token: RDMA to 11, forwarded to 12.
    let expected = vec![(0, 1, b), (0, 8, b), (3, 11, b), (8, 9, b), (8, 10, b), (11, 12, b)];
    assert_eq!(flows(&r), expected);
    // DeepEP's counts: (token, destination rank) pairs incl. the own rank = 4
    // + 1; (token, destination node) pairs incl. the own node = 2 + 1.
    assert_eq!(r.low.nvlink_bytes_per_rank, 5.0 * b / 16.0);
    assert_eq!(r.low.rdma_bytes_per_rank, 3.0 * b / 16.0);
    assert_eq!(r.low.ib_bytes_per_rank, 2.0 * b / 16.0);
    assert_eq!(bytes_over(&r, LinkKind::InfiniBand), 2.0 * b);

    // Combine runs the same paths backwards, BF16.
    let (spec, experts) = tiny(MoeKernel::Normal, MoePhase::Combine);
    let r = run_given(&spec, &experts);
    let b = 256.0;
    let back = vec![(1, 0, b), (8, 0, b), (9, 8, b), (10, 8, b), (11, 3, b), (12, 11, b)];
    assert_eq!(flows(&r), back);
    assert_eq!(r.low.rdma_bytes_per_rank, 3.0 * b / 16.0);
}

#[test]
fn every_sampled_token_copy_is_delivered_once() {
    // Independently of the lowering: each (token, destination rank) pair
    // costs one NVLink copy inside the source node (none to itself); each
    // remote target node one RDMA copy plus one NVLink copy per destination
    // there other than the same-index GPU.
    let spec = deepep(MoeKernel::Normal, MoePhase::Dispatch, 32, 256);
    let r = run(&spec, 7);
    let c = &r.cluster;
    let router = TokenRouter::new(routing_spec(c, &spec), 7).unwrap();
    let (mut nvlink, mut rdma) = (0u64, 0u64);
    for src in 0..32u32 {
        router.for_each_token(src, |es| {
            let mut dests: Vec<u32> = es.iter().map(|e| e / 8).collect();
            dests.dedup();
            let mut nodes: Vec<u32> = dests.iter().map(|d| d / 8).collect();
            nodes.dedup();
            rdma += nodes.iter().filter(|&&n| n != src / 8).count() as u64;
            nvlink += dests.iter().filter(|&&d| d != src && d != d / 8 * 8 + src % 8).count() as u64;
        });
    }
    let b = spec.bytes_per_token();
    let sent: f64 = r.graph.flows().iter().map(|f| f.bytes).sum();
    assert!((sent - (nvlink + rdma) as f64 * b).abs() < 1e-3 * b, "{sent} vs {}", (nvlink + rdma) as f64 * b);
    assert!((bytes_over(&r, LinkKind::InfiniBand) - rdma as f64 * b).abs() < 1e-3 * b);
}

#[test]
fn one_node_dispatch_has_no_rdma_flows() {
    for kernel in [MoeKernel::Normal, MoeKernel::LowLatency] {
        let r = run(&deepep(kernel, MoePhase::Dispatch, 8, 256), 1);
        assert_eq!(bytes_over(&r, LinkKind::InfiniBand), 0.0);
        assert_eq!(r.low.ib_bytes_per_rank, 0.0);
        if kernel == MoeKernel::Normal {
            assert_eq!(r.low.rdma_bytes_per_rank, 0.0);
        }
    }
}

#[test]
fn same_seed_same_bytes_and_time() {
    for phase in [MoePhase::Dispatch, MoePhase::Combine] {
        let spec = deepep(MoeKernel::Normal, phase, 16, 512);
        let (a, b, other) = (run(&spec, 3), run(&spec, 3), run(&spec, 4));
        assert_eq!(a.low, b.low);
        assert_eq!(a.time_s, b.time_s);
        assert_eq!(flows(&a), flows(&b));
        assert_ne!(a.low.nvlink_bytes_per_rank, other.low.nvlink_bytes_per_rank);
    }
}

#[test]
fn low_latency_kernels_send_each_expert_copy_directly_and_hold_no_sms() {
    let (spec, experts) = tiny(MoeKernel::LowLatency, MoePhase::Dispatch);
    let r = run_given(&spec, &experts);
    let b = 128.0 * (1.0 + 4.0 / 128.0) + 16.0;
    assert_eq!(flows(&r), vec![(0, 1, b), (0, 9, b), (0, 10, b), (3, 12, b)]);
    // Every copy counted, the own rank's included.
    assert_eq!(r.low.rdma_bytes_per_rank, 5.0 * b / 16.0);
    assert_eq!(r.low.ib_bytes_per_rank, 3.0 * b / 16.0);
    assert!(r.graph.tasks().all(|t| !matches!(&t.kind, TaskKind::Comm(c) if c.hold.is_some())));
    // DeepEP's published per-copy sizes at hidden 7168.
    let full = deepep(MoeKernel::LowLatency, MoePhase::Dispatch, 8, 128);
    assert_eq!(full.low_latency_bytes_per_copy(), 7408.0);
    assert_eq!(MoeCommSpec { phase: MoePhase::Combine, ..full }.low_latency_bytes_per_copy(), 14336.0);
    let (spec, experts) = tiny(MoeKernel::LowLatency, MoePhase::Combine);
    let r = run_given(&spec, &experts);
    assert_eq!(flows(&r), vec![(1, 0, 256.0), (9, 0, 256.0), (10, 0, 256.0), (12, 3, 256.0)]);
}

#[test]
fn no_rank_transfers_before_every_rank_has_arrived() {
    let spec = deepep(MoeKernel::Normal, MoePhase::Dispatch, 8, 64);
    let c = cluster(8);
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..8).map(|r| g.add_stream(r, "ep")).collect();
    let late = g.add_delay(streams[5], "compute", SimDuration::from_us_f64(100.0));
    let mut after = vec![None; 8];
    after[5] = Some(late);
    lower_moe_comm(&c, &spec, 1, &mut g, &streams, &after).unwrap();
    let res = moesim_sim::run(&c.platform, &g, &EngineOptions::default(), &mut Quiet).unwrap();
    for (i, t) in g.tasks().enumerate() {
        if matches!(t.kind, TaskKind::Comm(_)) {
            assert!(res.spans[i].start.as_ps() >= 100_000_000, "{:?}", res.spans[i]);
        }
    }
}

#[test]
fn bad_routings_are_rejected() {
    let (spec, mut experts) = tiny(MoeKernel::Normal, MoePhase::Dispatch);
    let c = cluster(16);
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..16).map(|r| g.add_stream(r, "ep")).collect();
    let none = vec![None; 16];
    experts[2] = vec![vec![3, 3]];
    let e = lower_moe_comm_given(&c, &spec, &experts, &mut g, &streams, &none).unwrap_err();
    assert!(e.to_string().contains("rank 2 token 0"), "{e}");
    experts[2] = vec![vec![16]];
    assert!(lower_moe_comm_given(&c, &spec, &experts, &mut g, &streams, &none).is_err());
    experts.pop();
    let e = lower_moe_comm_given(&c, &spec, &experts, &mut g, &streams, &none).unwrap_err();
    assert!(e.to_string().contains("16 ranks"), "{e}");
    let e = lower_moe_comm(&c, &MoeCommSpec { experts: 250, ..spec }, 1, &mut g, &streams, &none).unwrap_err();
    assert!(e.to_string().contains("workload.experts"), "{e}");
}

/// (name, kernel, phase, ranks, published GB/s over the medium DeepEP names).
const DEEPEP_README: &[(&str, MoePhase, u32, f64)] = &[
    ("intranode EP8 dispatch (NVLink)", MoePhase::Dispatch, 8, 153.0),
    ("intranode EP8 combine (NVLink)", MoePhase::Combine, 8, 158.0),
    ("internode EP16 dispatch (RDMA)", MoePhase::Dispatch, 16, 43.0),
    ("internode EP16 combine (RDMA)", MoePhase::Combine, 16, 43.0),
    ("internode EP32 dispatch (RDMA)", MoePhase::Dispatch, 32, 58.0),
    ("internode EP32 combine (RDMA)", MoePhase::Combine, 32, 57.0),
    ("internode EP64 dispatch (RDMA)", MoePhase::Dispatch, 64, 51.0),
    ("internode EP64 combine (RDMA)", MoePhase::Combine, 64, 50.0),
];

/// DeepEP README, normal kernels on H800 + CX7: the NVLink efficiency was
/// fitted on EP8 dispatch and the InfiniBand one on EP64 dispatch; every
/// other case is predicted.
#[test]
fn deepep_normal_kernels_match_the_readme() {
    let mut failures = Vec::new();
    for &(name, phase, ranks, published) in DEEPEP_README {
        let r = run(&deepep(MoeKernel::Normal, phase, ranks, 4096), 1);
        let bytes = if ranks <= 8 { r.low.nvlink_bytes_per_rank } else { r.low.rdma_bytes_per_rank };
        let gb_per_s = bytes / r.time_s / 1e9;
        let err = (gb_per_s - published) / published;
        println!("{name}: published {published} GB/s, simulated {gb_per_s:.1} GB/s ({:+.1} %)", err * 100.0);
        if err.abs() > 0.15 {
            failures.push(format!("{name}: {gb_per_s:.1} vs {published} GB/s"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// DeepEP README, low-latency kernels at EP8 (128 tokens, top-8 of 256 + 32
/// redundant experts, NVLink inside the node): the kernels' fixed time (the
/// device's `low_latency_kernel_overhead_us`) is fitted on the dispatch, so
/// the dispatch matches by construction and the combine is predicted.
#[test]
fn deepep_low_latency_kernels_at_ep8() {
    let time_us = |phase| {
        let r = run(&MoeCommSpec { experts: 288, ..deepep(MoeKernel::LowLatency, phase, 8, 128) }, 1);
        (r.time_s * 1e6, r.low.rdma_bytes_per_rank / r.time_s / 1e9)
    };
    let (combine_us, combine_gb_per_s) = time_us(MoePhase::Combine);
    println!("low-latency EP8 combine: published 114 us / 127 GB/s, simulated {combine_us:.1} us / {combine_gb_per_s:.1} GB/s");
    assert!((combine_us - 114.0).abs() / 114.0 < 0.15, "{combine_us}");
    let (dispatch_us, dispatch_gb_per_s) = time_us(MoePhase::Dispatch);
    println!("low-latency EP8 dispatch: published 77 us / 98 GB/s, simulated {dispatch_us:.1} us / {dispatch_gb_per_s:.1} GB/s (fitted)");
    assert!((dispatch_us - 77.0).abs() < 0.5, "{dispatch_us}");
}

/// The representative-rank (mirror) lowering of the critical rank lasts as
/// long as the full exchange over all ranks, within a few per cent, for the
/// DeepEP EP64 and EP16 dispatch and combine (balanced and skewed routing).
#[test]
fn mirror_of_the_critical_rank_matches_the_full_exchange() {
    use moesim_models::network::moe_comm::{CommKernel, EpTraffic, Exchange};
    for (ranks, phase, skew) in [
        (64, MoePhase::Dispatch, Skew::Balanced),
        (64, MoePhase::Combine, Skew::Balanced),
        (16, MoePhase::Dispatch, Skew::Balanced),
        (64, MoePhase::Dispatch, Skew::Zipf(0.8)),
    ] {
        let spec = MoeCommSpec { skew, ..deepep(MoeKernel::Normal, phase, ranks, 4096) };
        let full = run(&spec, 7);
        let c = cluster(ranks);
        let router = TokenRouter::new(routing_spec(&c, &spec), 7).unwrap();
        let traffic = EpTraffic::count(ranks, 8, spec.experts, |src, f| router.for_each_token(src, f));
        let nv = c.platform.links.iter().map(|l| l.bytes_per_s).fold(0.0, f64::max);
        let rep = traffic.critical_rank(nv, 50e9 * 0.905);
        let mut g = TaskGraph::new();
        let s = g.add_stream(rep as u32, "ep");
        traffic.lower_mirror(&c, &CommKernel::normal(phase, spec.bytes_per_token(), 20), rep, "mirror", &mut g, s);
        let mirror = simulate(c, g, full.low.clone());
        let err = mirror.time_s / full.time_s - 1.0;
        println!(
            "EP{ranks} {phase:?} {skew:?}: full {:.1} us, mirror of rank {rep} {:.1} us ({:+.1}%)",
            full.time_s * 1e6,
            mirror.time_s * 1e6,
            err * 100.0
        );
        assert!(err.abs() < 0.05, "{err}");
    }
}

#[test]
fn sm_links_bound_sm_driven_kernels_only_where_the_device_has_them() {
    let mut c = cluster(8);
    let links = c.platform.links.len();
    let mut g = TaskGraph::new();
    let mut scratch = Vec::new();
    let plain = c.add_kernel_route(&mut g, 0, 1, 0, &mut scratch);
    assert_eq!(g.path(plain).len(), 2, "GPU -> NVSwitch -> GPU, no SM links yet");
    c.cap_comm_by_sms(10);
    c.cap_comm_by_sms(10);
    assert_eq!(c.platform.links.len(), links + 16, "a send and a receive link per GPU, once");
    let capped = c.add_kernel_route(&mut g, 0, 1, 0, &mut scratch);
    let path = g.path(capped).to_vec();
    assert_eq!(path.len(), 4);
    for l in [path[0], path[3]] {
        assert_eq!(c.platform.link(l).bytes_per_s, 10.0 * 8.0e9);
    }
    let other = c.add_route(&mut g, 0, 1, 0, &mut scratch);
    assert_eq!(g.path(other).len(), 2, "other traffic is not SM-bound");
    // Copy engines (Ascend): nothing to bound.
    let mut npu = cluster(8);
    npu.device = DeviceSpec::preset("ascend-910b").unwrap();
    npu.cap_comm_by_sms(10);
    assert_eq!(npu.platform.links.len(), links);
}

/// DeepEP's first (IBRC) kernels: their channels pass every (token, node)
/// copy a rank makes, its own node's included, at `IBRC_GB_PER_S_PER_SM`
/// per SM, so the rate DeepEP counts is the SMs times that — 24 SMs give
/// the README's 46 GB/s at EP64, the 20 of DeepSeek's training 5/6 of it —
/// while the IBGDA kernels stay link-bound whatever the SMs. Inside one
/// node there is no RDMA and nothing changes.
#[test]
fn ibrc_channels_bound_every_token_node_copy_by_the_sms() {
    for (sms, phase) in [(24, MoePhase::Dispatch), (20, MoePhase::Dispatch), (20, MoePhase::Combine)] {
        let spec = MoeCommSpec { comm_sms: sms, ..deepep(MoeKernel::Normal, phase, 64, 4096) };
        let ibrc = run_with(&spec, 7, Some(DeepEpRdma::Ibrc));
        let counted = ibrc.low.rdma_bytes_per_rank / ibrc.time_s / 1e9;
        let bound = sms as f64 * IBRC_GB_PER_S_PER_SM;
        assert!((counted / bound - 1.0).abs() < 0.03, "{sms} SMs {phase:?}: {counted:.1} GB/s against {bound:.1}");
        let ibgda = run_with(&spec, 7, Some(DeepEpRdma::Ibgda));
        let link_bound = ibgda.low.rdma_bytes_per_rank / ibgda.time_s / 1e9;
        assert!(link_bound > 50.0 && link_bound < 53.0, "{link_bound}");
        // One flow per rank carries its own node's copies through its
        // channels alone: no physical link, the channels' two ends.
        let physical = ibrc.cluster.topology.graph.edge_count();
        let own: Vec<_> = ibrc
            .graph
            .flows()
            .iter()
            .filter(|f| ibrc.graph.path(f.path).iter().all(|&l| (l.0 as usize) >= physical))
            .collect();
        assert_eq!(own.len(), 64, "one own-node flow per rank");
        for f in &own {
            let path = ibrc.graph.path(f.path);
            assert_eq!(path.len(), 2);
            for &l in path {
                assert_eq!(ibrc.cluster.platform.link(l).bytes_per_s, bound * 1e9);
            }
        }
    }
    let intranode = deepep(MoeKernel::Normal, MoePhase::Dispatch, 8, 4096);
    let (a, b) = (run_with(&intranode, 7, Some(DeepEpRdma::Ibrc)), run_with(&intranode, 7, Some(DeepEpRdma::Ibgda)));
    assert_eq!(a.time_s, b.time_s, "no RDMA inside a node");
}
