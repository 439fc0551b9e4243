//! Collectives and DeepEP-style dispatch/combine, lowered and run, against
//! hand-computed times and byte counts.

use moesim_models::network::collectives::{algorithm, bus_bandwidth_factor, CollectiveOp, CollectiveSpec};
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
        nvlink_latency_ns: Some(1000.0),
        ..Default::default()
    };
    let spec = cfg.resolve(LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 }).unwrap();
    Cluster::new(moesim_topologies::build(&spec).unwrap(), DeviceSpec::preset("h800").unwrap(), 1)
}

fn run_collective(c: &Cluster, op: CollectiveOp, alg: &str, n: u32, bytes: f64) -> f64 {
    let mut g = TaskGraph::new();
    let streams: Vec<_> = (0..n).map(|r| g.add_stream(r, "comm")).collect();
    let spec = CollectiveSpec { op, group: (0..n).collect(), bytes };
    algorithm(alg).unwrap().lower(c, &spec, &mut g, &streams, &vec![None; n as usize]).unwrap();
    moesim_sim::run(&c.platform, &g, &EngineOptions::default(), &mut Quiet).unwrap().end.as_secs_f64()
}

#[test]
fn ring_all_reduce_on_4_gpus_matches_the_hand_computation() {
    // NVLink 200 GB/s x 0.5 = 100 GB/s per direction, 1 us per hop (2 hops).
    // Each of the 2(n-1) = 6 steps moves bytes/4 over disjoint links.
    let c = cluster("h800-node", 1, 0.5);
    let bytes = 4.0 * 100e6; // chunk = 100 MB -> 1 ms per step
    let t = run_collective(&c, CollectiveOp::AllReduce, "ring", 4, bytes);
    let expected = 6.0 * (1e-3 + 2e-6);
    assert!((t - expected).abs() < 1e-9, "{t} vs {expected}");
    // reduce-scatter and all-gather are half of it.
    let t = run_collective(&c, CollectiveOp::ReduceScatter, "ring", 4, bytes);
    assert!((t - 3.0 * (1e-3 + 2e-6)).abs() < 1e-9, "{t}");
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
    assert!(algorithm("tree").err().unwrap().to_string().contains("direct, ring"));
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
        .iter()
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
