//! Collectives and DeepEP-style dispatch/combine, lowered and run, against
//! hand-computed times and byte counts.

use moesim_models::network::collectives::{
    algorithm, algorithm_with, algorithm_with_protocol, bus_bandwidth_factor, choose, member_load, nccl, pick,
    CollectiveOp, CollectiveSpec, Pipelining, Protocol,
};
use moesim_models::network::moe_comm::{lower_moe_comm, MoeCommSpec, MoeKernel};
use moesim_models::transformer::routing::MoePhase;
use moesim_models::transformer::routing::Skew;
use moesim_models::{Cluster, DeviceSpec};
use moesim_sim::{EngineOptions, LinkId, Quiet, TaskGraph};
use moesim_topologies::{LinkDefaults, LinkKind, TopologyConfig};

fn cluster(preset: &str, nodes: u32, eff: f64) -> Cluster {
    let cfg = TopologyConfig {
        preset: Some(preset.into()),
        nodes: (preset != "h800-node").then_some(nodes),
        nvlink_efficiency: Some(eff),
        // NCCL's kernels at the same rate as the link, so the hand
        // computations hold for every kernel family.
        nccl_nvlink_efficiency: Some(eff),
        nvlink_latency_ns: Some(1000.0),
        ..Default::default()
    };
    let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1)
}

fn run_collective(c: &Cluster, op: CollectiveOp, alg: &str, n: u32, bytes: f64) -> f64 {
    run_piped(c, op, alg, n, bytes, Pipelining::default()).0
}

/// Runs a collective over ranks 0..n; returns its time (s) and its graph.
fn run_piped(c: &Cluster, op: CollectiveOp, alg: &str, n: u32, bytes: f64, pipe: Pipelining) -> (f64, TaskGraph) {
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..n).map(|r| g.add_stream(r, "comm")).collect();
    let spec = CollectiveSpec { op, group: (0..n).collect(), bytes };
    algorithm_with(alg, pipe).unwrap().lower(c, &spec, &mut g, &streams, &vec![None; n as usize]).unwrap();
    let t = moesim_sim::run(&c.platform, &g, &EngineOptions::default(), &mut Quiet).unwrap().end.as_secs_f64();
    (t, g)
}

/// A cluster with an NVLS efficiency of `nvls`.
fn nvls_cluster(preset: &str, nodes: u32, eff: f64, nvls: f64) -> Cluster {
    let cfg = TopologyConfig {
        preset: Some(preset.into()),
        nodes: (preset != "h800-node").then_some(nodes),
        nvlink_efficiency: Some(eff),
        // NCCL's kernels at the same rate as the link, so the hand
        // computations hold for every kernel family.
        nccl_nvlink_efficiency: Some(eff),
        nvlink_latency_ns: Some(1000.0),
        nvls_efficiency: Some(nvls),
        // No chunk overhead: NVLS at the link's NVLS rate at every size.
        nvls_chunk_overhead_ns: Some(0.0),
        ..Default::default()
    };
    let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1)
}

#[test]
fn ring_all_reduce_on_4_gpus_matches_the_hand_computation() {
    // NVLink 200 GB/s x 0.5 = 100 GB/s per direction, 1 us per hop (2 hops).
    // Each of the 2(n-1) = 6 steps moves bytes/4 over disjoint links, after
    // NCCL's ring base latency (8.4 us).
    let c = cluster("h800-node", 1, 0.5);
    let bytes = 4.0 * 100e6; // chunk = 100 MB -> 1 ms per step
    let t = run_collective(&c, CollectiveOp::AllReduce, "ring", 4, bytes);
    let expected = nccl::RING_BASE_US * 1e-6 + 6.0 * (1e-3 + 2e-6);
    assert!((t - expected).abs() < 1e-9, "{t} vs {expected}");
    // reduce-scatter and all-gather are half of it.
    let t = run_collective(&c, CollectiveOp::ReduceScatter, "ring", 4, bytes);
    assert!((t - 8.4e-6 - 3.0 * (1e-3 + 2e-6)).abs() < 1e-9, "{t}");
}

#[test]
fn direct_all_to_all_shares_each_gpus_nvlink() {
    // 8 GPUs, each sends bytes/8 to 7 peers over its one 100 GB/s uplink.
    let c = cluster("h800-node", 1, 0.5);
    let bytes = 8.0 * 100e6;
    let t = run_collective(&c, CollectiveOp::AllToAll, "direct", 8, bytes);
    let expected = 7.0 * 100e6 / 100e9 + 2e-6;
    assert!((t - expected).abs() < 1e-9, "{t} vs {expected}");
    assert!((bus_bandwidth_factor(CollectiveOp::AllToAll, 8) - 7.0 / 8.0).abs() < 1e-12);
    assert!((bus_bandwidth_factor(CollectiveOp::AllReduce, 8) - 1.75).abs() < 1e-12);
}

#[test]
fn bad_collectives_are_rejected() {
    let c = cluster("h800-node", 1, 0.5);
    let mut g = TaskGraph::new();
    let s: Vec<_> = (0..2).map(|r| g.add_stream(r, "c")).collect();
    let a2a = CollectiveSpec { op: CollectiveOp::AllToAll, group: vec![0, 1], bytes: 1.0 };
    let e = algorithm("ring").unwrap().lower(&c, &a2a, &mut g, &s, &[None, None]).unwrap_err();
    assert!(e.to_string().contains("direct"), "{e}");
    let dup = CollectiveSpec { op: CollectiveOp::AllReduce, group: vec![1, 1], bytes: 1.0 };
    assert!(algorithm("ring").unwrap().lower(&c, &dup, &mut g, &s, &[None, None]).is_err());
    let big = CollectiveSpec { op: CollectiveOp::AllReduce, group: vec![0, 9], bytes: 1.0 };
    let e = algorithm("ring").unwrap().lower(&c, &big, &mut g, &s, &[None, None]).unwrap_err();
    assert!(e.to_string().contains("rank 9"), "{e}");
    assert!(algorithm("bogus").err().unwrap().to_string().contains("auto, direct, hierarchical, nvls, ring, tree"));
    // NVLS needs one NVSwitch with NVLS; tree runs all-reduce only.
    let two = cluster("h800-cluster", 2, 0.5);
    let mut g = TaskGraph::new();
    let s: Vec<_> = (0..16).map(|r| g.add_stream(r, "c")).collect();
    let across = CollectiveSpec { op: CollectiveOp::AllReduce, group: (0..16).collect(), bytes: 1e6 };
    let e = algorithm("nvls").unwrap().lower(&two, &across, &mut g, &s, &[None; 16]).unwrap_err();
    assert!(e.to_string().contains("one NVSwitch domain"), "{e}");
    let none = cluster("h800-node", 1, 0.5); // this helper's table sets no nvls_efficiency over the preset's
    assert!(none.topology.spec.as_ref().unwrap().nvls_efficiency.is_some());
    let rs = CollectiveSpec { op: CollectiveOp::ReduceScatter, group: (0..16).collect(), bytes: 1e6 };
    let e = algorithm("tree").unwrap().lower(&two, &rs, &mut g, &s, &[None; 16]).unwrap_err();
    assert!(e.to_string().contains("all-reduce only"), "{e}");
}

#[test]
fn nvls_all_reduce_moves_n_plus_1_over_n_per_direction_and_pipelines_its_phases() {
    // 4 GPUs, links 100 GB/s, NVLS at 0.5 of it, 1 us per hop, 400 MB.
    // Unpipelined (one chunk): the reduce sends every copy of each shard up
    // (4 x 100 MB / 0.5 = 800 MB per up-link: 8 ms), then the multicast sends
    // every shard down (8 ms); each phase two hops; NCCL's NVLS latency
    // (less the four hops, which the lowering pays itself) first.
    let c = nvls_cluster("h800-node", 1, 0.5, 0.5);
    let one = Pipelining { chunk_bytes: 1e12, in_flight: 1 };
    let (t, _) = run_piped(&c, CollectiveOp::AllReduce, "nvls", 4, 400e6, one);
    let expected = nccl::NVLS_US * 1e-6 - 4e-6 + 2.0 * (8e-3 + 2e-6);
    assert!((t - expected).abs() < 1e-8, "{t} vs {expected}");
    // Pipelined, both directions carry (n + 1)/n x 400 MB / 0.5 = 1 GB: 10 ms
    // plus about one chunk's fill.
    let (t, _) = run_piped(&c, CollectiveOp::AllReduce, "nvls", 4, 400e6, Pipelining::default());
    assert!((10.0e-3..10.6e-3).contains(&(t - 21e-6)), "{t}");
    // Against the ring's 2(n - 1)/n = 1.5 x 400 MB at 100 GB/s = 6 ms: NVLS at
    // 0.5 efficiency loses; at 0.9 it moves 1.25 x 400 MB / 0.9 in 5.6 ms and wins.
    let ring = run_collective(&c, CollectiveOp::AllReduce, "ring", 4, 400e6);
    assert!(ring < t);
    let fast = nvls_cluster("h800-node", 1, 0.5, 0.9);
    let (t9, _) = run_piped(&fast, CollectiveOp::AllReduce, "nvls", 4, 400e6, Pipelining::default());
    assert!(t9 < ring && t9 > 5.55e-3, "{t9} vs ring {ring}");
}

#[test]
fn nvls_reduce_scatter_and_all_gather_are_its_two_halves() {
    let c = nvls_cluster("h800-node", 1, 0.5, 0.5);
    let one = Pipelining { chunk_bytes: 1e12, in_flight: 1 };
    for op in [CollectiveOp::ReduceScatter, CollectiveOp::AllGather] {
        let (t, _) = run_piped(&c, op, "nvls", 4, 400e6, one);
        // NCCL's 25 us less the phase's two hops, then the phase.
        assert!((t - 23e-6 - 8e-3 - 2e-6).abs() < 1e-8, "{op:?}: {t}");
    }
}

#[test]
fn tree_all_reduce_pipelines_up_and_down_its_chain() {
    // One node: each tree is a chain of 4 carrying half the data. On an
    // NVSwitch each GPU's one uplink carries all it sends: per tree its
    // partial sum up and the result down (S/2 each), so 2S over both trees
    // (a ring: 1.5 S). 400 MB at 100 GB/s: 8 ms plus the pipeline's fill.
    let c = cluster("h800-node", 1, 0.5);
    let pipe = Pipelining { chunk_bytes: 1e6, in_flight: 4 };
    let (t, _) = run_piped(&c, CollectiveOp::AllReduce, "tree", 4, 400e6, pipe);
    assert!((8.0e-3..8.6e-3).contains(&(t - nccl::TREE_BASE_US * 1e-6)), "{t}");
    // One chunk cannot overlap the hops: 3 hops up then 3 down, sharing links.
    let one = Pipelining { chunk_bytes: 1e12, in_flight: 1 };
    let (coarse, _) = run_piped(&c, CollectiveOp::AllReduce, "tree", 4, 400e6, one);
    assert!(coarse > 1.3 * t, "{coarse} vs {t}");
}

#[test]
fn hierarchical_all_reduce_crosses_the_network_with_one_nth_of_the_buffer_per_gpu() {
    // 2 nodes x 8: intra-node reduce-scatter, a 2-GPU all-reduce of 1/8 of
    // the buffer per rail, intra-node all-gather. Each GPU puts 2(N-1)/N x
    // S/8 = S/8 on the network (a flat ring puts 2(n-1)/n x S/n per GPU on
    // its ring edge, but only the 2 node-crossing edges use IB).
    let c = cluster("h800-cluster", 2, 0.676);
    let bytes = 64e6;
    let (t, g) = run_piped(&c, CollectiveOp::AllReduce, "hierarchical", 16, bytes, Pipelining::default());
    let ib = bytes_over(&c, &g, LinkKind::InfiniBand);
    assert!((ib - 16.0 * bytes / 8.0).abs() < 1.0, "{ib}");
    // Every rail's all-reduce runs in parallel over its own NIC: faster than a
    // flat ring bound by one NIC per GPU.
    let ring = run_collective(&c, CollectiveOp::AllReduce, "ring", 16, bytes);
    assert!(t < ring, "{t} vs ring {ring}");
}

#[test]
fn hierarchical_all_to_all_aggregates_per_remote_node() {
    // 2 nodes x 8: the same bytes leave each node as in a direct all-to-all,
    // in one flow per (GPU, remote node) instead of one per remote GPU.
    let c = cluster("h800-cluster", 2, 0.676);
    let bytes = 16e6;
    let (_, h) = run_piped(&c, CollectiveOp::AllToAll, "hierarchical", 16, bytes, Pipelining::default());
    let mut d = TaskGraph::new();
    let streams: Vec<_> = (0..16).map(|r| d.add_stream(r, "comm")).collect();
    let spec = CollectiveSpec { op: CollectiveOp::AllToAll, group: (0..16).collect(), bytes };
    algorithm("direct").unwrap().lower(&c, &spec, &mut d, &streams, &[None; 16]).unwrap();
    let (ib_h, ib_d) = (bytes_over(&c, &h, LinkKind::InfiniBand), bytes_over(&c, &d, LinkKind::InfiniBand));
    assert!((ib_h - ib_d).abs() < 1.0, "{ib_h} vs {ib_d}");
    let ib_flows = |g: &TaskGraph| {
        let is =
            |l: &LinkId| c.topology.link(petgraph::graph::EdgeIndex::new(l.0 as usize)).kind == LinkKind::InfiniBand;
        g.flows().iter().filter(|f| g.path(f.path).iter().any(is)).count()
    };
    assert_eq!(ib_flows(&h), 16);
    assert_eq!(ib_flows(&d), 16 * 8);
}

#[test]
fn auto_chooses_as_nccls_cost_model_does() {
    // One NVSwitch with NVLS: NVLS (25 us latency vs the ring's 56 us, and
    // (n + 1)/n instead of 2(n - 1)/n of the buffer per link).
    let node = nvls_cluster("h800-node", 1, 0.676, 0.85);
    let spec = |n: u32, bytes: f64| CollectiveSpec { op: CollectiveOp::AllReduce, group: (0..n).collect(), bytes };
    assert_eq!(choose(&node, &spec(8, 64.0 * 1048576.0)), "nvls");
    // Without NVLS: the ring.
    let cfg = TopologyConfig { preset: Some("h800-node".into()), ..Default::default() };
    let mut spec_no = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    spec_no.nvls_efficiency = None;
    let plain = Cluster::new(moesim_topologies::build(&spec_no).unwrap(), DeviceSpec::preset("h800").unwrap(), 1);
    assert_eq!(choose(&plain, &spec(8, 64.0 * 1048576.0)), "ring");
    // 16 nodes: the tree's log-depth latency wins small buffers, the ring's
    // bandwidth large ones (crossover near 260 MB here).
    let big = cluster("h800-cluster", 16, 0.676);
    assert_eq!(choose(&big, &spec(128, 1048576.0)), "tree");
    assert_eq!(choose(&big, &spec(128, 1e9)), "ring");
    // All-to-all is point to point.
    let a2a = CollectiveSpec { op: CollectiveOp::AllToAll, group: (0..8).collect(), bytes: 1e6 };
    assert_eq!(choose(&node, &a2a), "direct");
}

#[test]
fn a_mirrored_member_loads_its_links_as_the_chosen_algorithm_does() {
    let spec = |op, group: Vec<u32>, bytes: f64| CollectiveSpec { op, group, bytes };
    let s = 64.0 * 1048576.0;
    // TP8 on one H800 NVSwitch with NVLS: (n + 1)/n of the buffer / 0.85.
    let node = nvls_cluster("h800-node", 1, 0.676, 0.85);
    let l = member_load(&node, &spec(CollectiveOp::AllReduce, (0..8).collect(), s), 3);
    assert_eq!((l.algorithm, l.succ), ("nvls", 4));
    assert!((l.bytes - 9.0 / 8.0 * s / 0.85).abs() < 1.0, "{}", l.bytes);
    // The same node with an A100 (no NVLink SHARP): the ring, 2(n - 1)/n.
    let mut a100 = nvls_cluster("h800-node", 1, 0.676, 0.85);
    a100.device = DeviceSpec::preset("a100").unwrap();
    let l = member_load(&a100, &spec(CollectiveOp::AllReduce, (0..8).collect(), s), 7);
    assert_eq!((l.algorithm, l.succ, l.steps), ("ring", 0, 14));
    assert!((l.bytes - 14.0 / 8.0 * s).abs() < 1.0);
    // Data-parallel replicas 8 apart on 16 nodes: the route crosses nodes
    // (the ring's slowest edge), reduce-scatter moves (n - 1)/n.
    let big = cluster("h800-cluster", 16, 0.676);
    let group: Vec<u32> = (0..16).map(|j| j * 8 + 2).collect();
    let l = member_load(&big, &spec(CollectiveOp::ReduceScatter, group, 1e9), 0);
    assert_eq!((l.algorithm, l.succ, l.steps), ("ring", 10, 15));
    assert!((l.bytes - 15.0 / 16.0 * 1e9).abs() < 1.0);
    // Two replicas per node: the next member on another node, not the
    // NVLink neighbour.
    let group: Vec<u32> = (0..16).map(|j| j * 4).collect();
    assert_eq!(member_load(&big, &spec(CollectiveOp::AllGather, group, 1e9), 0).succ, 8);
}

fn dispatch(
    phase: MoePhase,
    ranks: u32,
    seed: u64,
) -> (Cluster, TaskGraph, moesim_models::network::moe_comm::MoeCommLowering) {
    let c = cluster("h800-cluster", ranks.div_ceil(8), 0.676);
    let spec = MoeCommSpec {
        kernel: MoeKernel::Normal,
        phase,
        ranks,
        tokens_per_rank: 512,
        hidden: 7168,
        topk: 8,
        experts: 256,
        node_limit: 4,
        comm_sms: 20,
        skew: Skew::Balanced,
    };
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..ranks).map(|r| g.add_stream(r, "ep")).collect();
    let low = lower_moe_comm(&c, &spec, seed, &mut g, &streams, &vec![None; ranks as usize]).unwrap();
    (c, g, low)
}

/// Bytes of the graph's flows that cross a link of `kind`, once per flow.
fn bytes_over(c: &Cluster, g: &TaskGraph, kind: LinkKind) -> f64 {
    let is = |l: &LinkId| c.topology.link(petgraph::graph::EdgeIndex::new(l.0 as usize)).kind == kind;
    g.flows().iter().filter(|f| g.path(f.path).iter().any(is)).map(|f| f.bytes).sum()
}

#[test]
fn intranode_dispatch_uses_no_rdma_and_counts_received_copies() {
    let (c, g, low) = dispatch(MoePhase::Dispatch, 8, 1);
    assert_eq!(low.rdma_bytes_per_rank, 0.0);
    assert_eq!(bytes_over(&c, &g, LinkKind::InfiniBand), 0.0);
    // Counted NVLink bytes include each rank's copies to itself (1/8 of them on
    // average), which never touch NVLink.
    let moved = bytes_over(&c, &g, LinkKind::NvLink) / 8.0;
    let ratio = moved / low.nvlink_bytes_per_rank;
    assert!((0.80..0.95).contains(&ratio), "{ratio}");
    // 8 experts over 8 ranks of 32: ~5.25 distinct ranks per token.
    let per_token = low.nvlink_bytes_per_rank / 512.0 / (7168.0 * (1.0 + 4.0 / 128.0));
    assert!((5.0..5.5).contains(&per_token), "{per_token}");
}

#[test]
fn internode_dispatch_crosses_ib_once_per_remote_node_and_combine_reverses_it() {
    let (c, g, low) = dispatch(MoePhase::Dispatch, 32, 1);
    let ib = bytes_over(&c, &g, LinkKind::InfiniBand);
    assert!((ib / 32.0 - low.ib_bytes_per_rank).abs() < 1.0, "{ib} vs {}", low.ib_bytes_per_rank);
    // 4 nodes, node limit 4: every token reaches ~4 nodes; RDMA counts the own
    // node too, IB carries only the 3 remote ones.
    assert!((low.ib_bytes_per_rank / low.rdma_bytes_per_rank - 0.75).abs() < 0.03);
    let (_, _, back) = dispatch(MoePhase::Combine, 32, 1);
    let bf16_over_fp8 = 2.0 / (1.0 + 4.0 / 128.0);
    assert!((back.rdma_bytes_per_rank / low.rdma_bytes_per_rank - bf16_over_fp8).abs() < 1e-9);
    // Same seed, same routing; another seed, another one.
    let (_, _, again) = dispatch(MoePhase::Dispatch, 32, 1);
    assert_eq!(again, low);
    let (_, _, other) = dispatch(MoePhase::Dispatch, 32, 2);
    assert_ne!(other.nvlink_bytes_per_rank, low.nvlink_bytes_per_rank);
}

#[test]
fn deepep_normal_kernels_hold_their_sms() {
    let (c, g, _) = dispatch(MoePhase::Dispatch, 8, 1);
    let holds: Vec<_> = g
        .tasks()
        .filter_map(|t| match &t.kind {
            moesim_sim::TaskKind::Comm(comm) => comm.hold,
            _ => None,
        })
        .collect();
    assert_eq!(holds.len(), 8);
    assert!(holds.iter().enumerate().all(|(r, &(d, sms))| d == c.device_of(r as u32) && sms == 20));
}

/// Not a timing assertion: prints how long lowering a 4096-GPU all-to-all
/// (16.8M flows) takes. `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn all_to_all_on_4096_gpus_lowers_quickly() {
    let t0 = std::time::Instant::now();
    let cfg = TopologyConfig { preset: Some("h800-cluster".into()), nodes: Some(512), ..Default::default() };
    let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    let c = Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1);
    let built = t0.elapsed();
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..4096).map(|r| g.add_stream(r, "comm")).collect();
    let a2a = CollectiveSpec { op: CollectiveOp::AllToAll, group: (0..4096).collect(), bytes: 4096.0 * 1e6 };
    let t1 = std::time::Instant::now();
    algorithm("direct").unwrap().lower(&c, &a2a, &mut g, &streams, &vec![None; 4096]).unwrap();
    println!("cluster {built:?}; lowering {:?}; {} flows", t1.elapsed(), g.flows().len());
    assert_eq!(g.flows().len(), 4096 * 4095);
}

#[test]
fn nvls_chunks_follow_nccls_size_rule() {
    // 8 ranks x 16 channels = 128 concurrent operations (NVIDIA/nccl
    // src/enqueue.cc): 128 KiB from 64 x 128 x 128 KiB = 1 GiB, 64 KiB from
    // 8 x 128 x 64 KiB = 64 MiB, 32 KiB from 2 x 128 x 32 KiB = 8 MiB.
    let mib = 1048576.0;
    for (bytes, chunk) in [
        (8192.0 * mib, 131072.0),
        (1024.0 * mib, 131072.0),
        (1023.0 * mib, 65536.0),
        (64.0 * mib, 65536.0),
        (32.0 * mib, 32768.0),
        (8.0 * mib, 32768.0),
        (4.0 * mib, 16384.0),
        (1.0, 16384.0),
    ] {
        assert_eq!(nccl::nvls_chunk_bytes(bytes, 128.0), chunk, "{bytes}");
    }
}

/// An 8-GPU NVSwitch node whose NVLS pays `overhead_ns` per chunk.
fn nvls_node(overhead_ns: f64) -> Cluster {
    let cfg = TopologyConfig {
        preset: Some("h800-node".into()),
        nvlink_efficiency: Some(0.5),
        nccl_nvlink_efficiency: Some(0.5),
        nvlink_latency_ns: Some(1000.0),
        nvls_efficiency: Some(0.8),
        nvls_chunk_overhead_ns: Some(overhead_ns),
        ..Default::default()
    };
    let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1)
}

#[test]
fn nvls_reaches_its_peak_only_with_nccls_largest_chunks() {
    // Links 200 GB/s x 0.5, NVLS at 0.8 of it: 80 GB/s per link, 5 GB/s per
    // channel (16). 1 us per chunk costs a 128 KiB chunk 131072 / (131072 +
    // 5000) = 96.3 % of the rate and a 32 KiB chunk 86.8 %. 4 GiB all-reduce
    // (128 KiB chunks) moves 9/8 x 4 GiB per link direction.
    let with = nvls_node(1000.0);
    let without = nvls_node(0.0);
    let big = 4.0 * 1073741824.0;
    let (t_big, _) = run_piped(&with, CollectiveOp::AllReduce, "nvls", 8, big, Pipelining::default());
    let (t_big0, _) = run_piped(&without, CollectiveOp::AllReduce, "nvls", 8, big, Pipelining::default());
    let ratio = t_big0 / t_big;
    assert!((ratio - 131072.0 / 136072.0).abs() < 2e-3, "{ratio}");
    let ideal = 9.0 / 8.0 * big / 80e9;
    // (plus the fill of moesim's 64-chunk pipeline, a few per cent)
    assert!((0.0..0.05).contains(&(t_big0 / ideal - 1.0)), "{t_big0} vs {ideal}");
    // 32 MiB: 32 KiB chunks, the rate 86.8 % of the peak (the fixed latency aside).
    let mid = 32.0 * 1048576.0;
    let (t_mid, _) = run_piped(&with, CollectiveOp::AllReduce, "nvls", 8, mid, Pipelining::default());
    let (t_mid0, _) = run_piped(&without, CollectiveOp::AllReduce, "nvls", 8, mid, Pipelining::default());
    let slower = (t_mid - t_mid0) / (t_mid0 - 21e-6);
    assert!((slower - (32768.0 + 5000.0) / 32768.0 + 1.0).abs() < 0.02, "{slower}");
}

#[test]
fn ll_ring_steps_arrive_after_nccls_protocol_latency() {
    // 8 GPUs, links 200 GB/s at efficiency 1 (NCCL's too): ring busbw 200
    // GB/s, LL half of it (100 < the H800's 141 cap), so each step's 1 MiB / 8
    // costs twice its bytes: 131072 x 2 / 200 GB/s = 1.31 us, then LL's 0.6 us
    // NVLink latency instead of the route's 2 x 1 us; the kernel waits LL's
    // 6.6 us base latency first. 14 steps.
    let c = cluster("h800-node", 1, 1.0);
    let bytes = 1048576.0;
    let run = |protocol| {
        let mut g = TaskGraph::new();
        let streams: Vec<_> = (0..8).map(|r| g.add_stream(r, "comm")).collect();
        let spec = CollectiveSpec { op: CollectiveOp::AllReduce, group: (0..8).collect(), bytes };
        algorithm_with_protocol("ring", Pipelining::default(), protocol)
            .unwrap()
            .lower(&c, &spec, &mut g, &streams, &[None; 8])
            .unwrap();
        moesim_sim::run(&c.platform, &g, &EngineOptions::default(), &mut Quiet).unwrap().end.as_secs_f64()
    };
    let ll = run(Protocol::Ll);
    let expected = 6.6e-6 + 14.0 * (131072.0 * 2.0 / 200e9 + 0.6e-6);
    assert!((ll - expected).abs() < 1e-9, "{ll} vs {expected}");
    // Simple: 8.4 us, then each step at the full rate and the route's 2 us.
    let simple = run(Protocol::Simple);
    let expected = 8.4e-6 + 14.0 * (131072.0 / 200e9 + 2e-6);
    assert!((simple - expected).abs() < 1e-9, "{simple} vs {expected}");
    // LL128: 14 us base, 120/128-ish (0.92) of the rate, 1.9 us per step.
    let ll128 = run(Protocol::Ll128);
    let expected = 14e-6 + 14.0 * (131072.0 / 0.92 / 200e9 + 1.9e-6);
    assert!((ll128 - expected).abs() < 1e-9, "{ll128} vs {expected}");
}

#[test]
fn auto_picks_ll_for_small_messages_and_simple_for_large_ones() {
    let spec = |n: u32, bytes: f64| CollectiveSpec { op: CollectiveOp::AllReduce, group: (0..n).collect(), bytes };
    // Without NVLS, on one node (NVLink 200 GB/s, NCCL's rate 0.824 of it):
    // LL's 15 us of latency wins 64 KiB, Simple's bandwidth 256 MiB.
    let cfg = TopologyConfig { preset: Some("h800-node".into()), ..Default::default() };
    let mut no_nvls = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    no_nvls.nvls_efficiency = None;
    let plain = Cluster::new(moesim_topologies::build(&no_nvls).unwrap(), DeviceSpec::preset("h800").unwrap(), 1);
    let small = pick(&plain, &spec(8, 65536.0), None, None).unwrap();
    assert_eq!((small.algorithm, small.protocol), ("ring", Protocol::Ll));
    // LL's bus bandwidth: half of NCCL's 200 x 0.824 GB/s (below the 141 cap).
    let ll_busbw = 0.5 * 200e9 * 0.824;
    assert!((small.time_us - (6.6 + 14.0 * 0.6 + 65536.0 / (ll_busbw * 8.0 / 14.0) * 1e6)).abs() < 0.01, "{small:?}");
    let large = pick(&plain, &spec(8, 256.0 * 1048576.0), None, None).unwrap();
    assert_eq!((large.algorithm, large.protocol), ("ring", Protocol::Simple));
    // A forced algorithm gets the protocol NCCL would run it on.
    let forced = pick(&plain, &spec(8, 65536.0), Some("tree"), None).unwrap();
    assert_eq!(forced.algorithm, "tree");
    assert!(forced.protocol != Protocol::Simple, "{forced:?}");
    // The representative member carries LL's bytes (twice the ring's) and latency.
    let l = member_load(&plain, &spec(8, 65536.0), 0);
    assert_eq!(l.protocol, Protocol::Ll);
    assert!(l.hop_latency.is_some());
}

#[test]
fn nccl_releases_pick_small_all_reduces_differently() {
    // 8 H100 on one NVSwitch (NVLink 450 GB/s, NCCL's rate 0.824 of it).
    let node = |version: &str| {
        let cfg = TopologyConfig {
            preset: Some("h800-node".into()),
            nccl_version: Some(version.into()),
            ..Default::default()
        };
        let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 450.0, nic_gbit_per_s: 400.0 }).unwrap();
        Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h100").unwrap(), 1)
    };
    let spec = |bytes: f64| CollectiveSpec { op: CollectiveOp::AllReduce, group: (0..8).collect(), bytes };
    let chosen = |c: &Cluster, bytes: f64| {
        let e = pick(c, &spec(bytes), None, None).unwrap();
        (e.algorithm, e.protocol)
    };
    // 2.21 on: ring LL at half of 370.8 GB/s, capped at Hopper's 141: 15 us
    // + 1 MiB / (141 x 8/14) = 28.0 us, NVLS 25 + 1 MiB / (370.8 x 0.85 x
    // 8/9) = 28.7 us: LL.
    let new = node("2.29");
    assert_eq!(chosen(&new, 1048576.0), ("ring", Protocol::Ll));
    // 2.19-2.20: LL at a quarter (92.7 GB/s): 15 + 19.8 = 34.8 us; NVLS 23 +
    // 1 MiB / (8 x 370.8/9 x 5/6) = 26.8 us: NVLS, as vidur's profile shows.
    let old = node("2.20.5");
    assert_eq!(chosen(&old, 1048576.0), ("nvls", Protocol::Simple));
    let e = pick(&old, &spec(1048576.0), None, None).unwrap();
    assert!((e.time_us - (23.0 + 1048576.0 / (8.0 * 370.8e9 / 9.0 * 5.0 / 6.0) * 1e6)).abs() < 0.05, "{e:?}");
    // Both keep LL for 64 KiB.
    assert_eq!(chosen(&old, 65536.0), ("ring", Protocol::Ll));
    assert_eq!(chosen(&new, 65536.0), ("ring", Protocol::Ll));
}

/// Not a timing assertion: prints how long sampling DeepEP's EP64 routing
/// (4096 tokens x 256 experts x 64 ranks) takes.
#[test]
#[ignore]
fn ep64_routing_samples_quickly() {
    use moesim_models::transformer::routing::{RoutingSpec, TokenRouter};
    let spec = RoutingSpec { tokens: 4096, experts: 256, topk: 8, groups: 8, group_limit: 4, skew: Skew::Balanced };
    let router = TokenRouter::new(spec, 1).unwrap();
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    for src in 0..64 {
        router.for_each_token(src, |es| n += es[0] as u64);
    }
    println!("sampled 64 x 4096 tokens in {:?} ({n})", t0.elapsed());
}
