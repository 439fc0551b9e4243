//! Routing drawn per micro-batch in the training lowering: micro-batches of
//! one pipeline device exchange different traffic (and only with the
//! per-micro-batch draw), and an exchange relabelled onto another member
//! puts exactly the critical member's load on that member's links.

use moesim_models::hardware::device::Dtype;
use moesim_models::lowering::training::{lower_training, OpKind, RankMode, RoutingDraw, TrainingSpec};
use moesim_models::network::moe_comm::DeepEpRdma;
use moesim_models::network::moe_comm::EpTraffic;
use moesim_models::transformer::layers::Recompute;
use moesim_models::transformer::parallel::{CpComm, ParallelPlan};
use moesim_models::transformer::routing::{RoutingSpec, Skew, TokenRouter};
use moesim_models::transformer::schedule::ScheduleKind;
use moesim_models::{Cluster, DeviceSpec, ModelConfig};
use moesim_sim::{TaskGraph, TaskKind};
use moesim_topologies::{LinkDefaults, TopologyConfig};

/// 4 nodes of 8 H800.
fn cluster() -> Cluster {
    let cfg = TopologyConfig { preset: Some("h800-cluster".into()), nodes: Some(4), ..Default::default() };
    let links = LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 };
    Cluster::new(
        moesim_topologies::build(&cfg.resolve(links).unwrap()).unwrap(),
        DeviceSpec::preset("h800").unwrap(),
        1,
    )
}

/// DeepSeek-V3 with 4 MoE layers, PP2 1F1B, EP16, 8 micro-batches of 1,024 tokens.
fn spec(mode: RankMode, routing_draw: RoutingDraw) -> TrainingSpec {
    let mut model = ModelConfig::preset("deepseek-v3").unwrap();
    model.layers = 4;
    model.mtp_modules = 0;
    model.ffn.dense_layers = 0;
    let plan = ParallelPlan {
        tp: 1,
        cp: 1,
        cp_comm: CpComm::Ring,
        pp: 2,
        dp: 16,
        ep: 16,
        zero: 1,
        schedule: ScheduleKind::OneFOneB,
        virtual_stages: 1,
        sequence_parallel: false,
        micro_batch: 1,
        comm_sms: 20,
        deepep_rdma: DeepEpRdma::Ibgda,
        gemm_kernels: Default::default(),
    };
    TrainingSpec {
        model,
        plan,
        seq_len: 1024,
        global_batch: 128,
        linear_dtype: Dtype::Fp8,
        skew: Skew::Zipf(0.6),
        recompute: Recompute::NormsAndUpProjections,
        attention_kernel: Default::default(),
        stage_layers: None,
        mode,
        routing_draw,
        launch_gaps_us: [None; 4],
        ep_lateness: 0.0,
    }
}

/// Per forward op of the first simulated rank: the bytes its dispatches
/// move (the op's tasks lie between its marker and the next op's).
fn dispatch_bytes_per_forward(routing_draw: RoutingDraw) -> Vec<f64> {
    let c = cluster();
    let mut g = TaskGraph::new();
    let low = lower_training(&c, &spec(RankMode::Representative, routing_draw), 3, &mut g).unwrap();
    let rank = low.ranks[0].rank;
    let mut spans: Vec<_> = low.ops.iter().filter(|o| o.rank == rank).collect();
    spans.sort_by_key(|o| o.first.0);
    let mut out = Vec::new();
    for (i, o) in spans.iter().enumerate() {
        if o.kind != OpKind::Forward {
            continue;
        }
        let end = spans.get(i + 1).map_or(g.tasks().len() as u32, |n| n.first.0);
        let bytes: f64 = (o.first.0..end)
            .map(moesim_sim::TaskId)
            .filter(|&t| g.task_name(t) == "ep dispatch")
            .map(|t| match &g.task(t).kind {
                TaskKind::Comm(comm) => g.comm_flows(comm).iter().map(|f| f.bytes).sum(),
                _ => 0.0,
            })
            .sum();
        out.push(bytes);
    }
    out
}

#[test]
fn micro_batches_exchange_their_own_routing_only_when_drawn_per_micro_batch() {
    let per_micro = dispatch_bytes_per_forward(RoutingDraw::PerMicroBatch);
    let per_device = dispatch_bytes_per_forward(RoutingDraw::PerDevice);
    println!("per micro-batch {per_micro:?}\nper device {per_device:?}");
    assert_eq!(per_micro.len(), 8);
    assert!(per_micro.iter().all(|&b| b > 0.0));
    // One draw for the device: every forward moves the same bytes.
    assert!(per_device.windows(2).all(|w| w[0] == w[1]), "{per_device:?}");
    // A draw per micro-batch: the critical member's load differs.
    let mut distinct = per_micro.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    assert!(distinct.len() >= 4, "{per_micro:?}");
}

#[test]
fn a_relabelled_exchange_carries_the_critical_members_load_on_the_chosen_member() {
    let v3 = ModelConfig::preset("deepseek-v3").unwrap().moe.unwrap();
    let router = TokenRouter::new(RoutingSpec::model_gate(&v3, 64, 8, 512, Skew::Zipf(0.6)), 5).unwrap();
    let t = EpTraffic::count(64, 8, 256, |src, f| router.for_each_token(src, f));
    let critical = t.critical_rank(135e9, 45e9);
    // Another node and another local index.
    let to = (critical + 8 * 3 + 5) % 64;
    let r = t.relabelled(critical, to);
    assert_eq!(r.rank(to), t.rank(critical));
    assert_eq!(r.critical_rank(135e9, 45e9), to);
    assert_eq!(r.rows[to], t.rows[critical]);
    let (mut a, mut b) = (t.rows.clone(), r.rows.clone());
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert_eq!((r.counted_nvlink, r.counted_rdma), (t.counted_nvlink, t.counted_rdma));
    // Every member is some member's image: the loads are a permutation.
    let mut before: Vec<_> =
        (0..64).map(|m| t.rank(m)).map(|x| (x.nvlink_out, x.nvlink_in, x.rdma_out, x.rdma_in)).collect();
    let mut after: Vec<_> =
        (0..64).map(|m| r.rank(m)).map(|x| (x.nvlink_out, x.nvlink_in, x.rdma_out, x.rdma_in)).collect();
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(before, after);
}
