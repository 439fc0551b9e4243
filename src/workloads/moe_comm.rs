//! `kind = "moe-dispatch"` / `"moe-combine"`: DeepEP-style expert-parallel
//! all-to-all, reported as time and per-rank NVLink and RDMA bandwidth counted
//! the way DeepEP's benchmarks count them.

use moesim_models::network::moe_comm::{self, DeepEpRdma, MoeCommSpec, MoeKernel};
use moesim_models::transformer::routing::MoePhase;
use moesim_models::transformer::routing::Skew;
use moesim_sim::{Observer, TaskGraph};
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::training::SimulateRanks;
use super::{
    build_cluster, check_ranks, check_skew, model_failure, num, positive_time, problem, simulate, Context, Footprint,
    Outcome, RunFailure, RunOptions, Workload, BYTES_PER_FLOW,
};
use crate::setup::{ParallelTable, Setup};

/// DeepEP's two kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KernelName {
    #[default]
    Normal,
    LowLatency,
}

fn default_comm_sms() -> u32 {
    20
}

/// The `[workload]` table of a dispatch or combine.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoeCommWorkload {
    pub kind: String,
    #[serde(default)]
    pub kernel: KernelName,
    /// Ranks of the expert-parallel group (GPUs 0..ranks).
    pub ranks: u32,
    /// Tokens each rank dispatches (or combines).
    pub tokens_per_rank: u32,
    /// Hidden size: elements per token.
    pub hidden: u32,
    /// Experts each token is routed to.
    pub topk: u32,
    /// Routed experts over the group (redundant copies included).
    pub experts: u32,
    /// Most nodes a token's experts may span (node-limited routing: experts
    /// are grouped by node, as DeepSeek-V3's gate and DeepEP's benchmark do).
    pub node_limit: u32,
    /// SMs the normal kernels hold.
    #[serde(default = "default_comm_sms")]
    pub comm_sms: u32,
    /// How the normal kernels drive RDMA: "ibgda" (default, DeepEP since 2025-04) or "ibrc" (DeepEP as first released, 2025-02: its channels bound every (token, node) copy at 46/24 GB/s per SM).
    #[serde(default)]
    pub deepep_rdma: DeepEpRdma,
    /// Zipf exponent of expert popularity; 0 = balanced.
    #[serde(default)]
    pub skew: f64,
    /// `all` ranks (default) or one `representative` rank: the critical
    /// rank's sends and receptions over the real routes, its peers assumed
    /// loaded alike — for groups too large to simulate every flow (EP256).
    #[serde(default = "all_ranks")]
    pub simulate: SimulateRanks,
}

fn all_ranks() -> SimulateRanks {
    SimulateRanks::All
}

impl MoeCommWorkload {
    fn spec(&self) -> MoeCommSpec {
        MoeCommSpec {
            kernel: match self.kernel {
                KernelName::Normal => MoeKernel::Normal,
                KernelName::LowLatency => MoeKernel::LowLatency,
            },
            phase: if self.kind == "moe-combine" { MoePhase::Combine } else { MoePhase::Dispatch },
            ranks: self.ranks,
            tokens_per_rank: self.tokens_per_rank,
            hidden: self.hidden,
            topk: self.topk,
            experts: self.experts,
            node_limit: self.node_limit,
            comm_sms: self.comm_sms,
            skew: Skew::from_exponent(self.skew),
        }
    }
}

impl Workload for MoeCommWorkload {
    fn job_gpus(&self) -> Option<u32> {
        Some(self.ranks)
    }

    fn kind_name(&self) -> &str {
        &self.kind
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let topology = cx.topology_state();
        let mut out = Vec::new();
        let int = |key: &str, v: u32, min: u32, out: &mut Vec<ConfigProblem>| {
            if v < min {
                out.push(problem(key, format!("expected an integer >= {min}, found {v}")));
            }
        };
        int("workload.ranks", self.ranks, 1, &mut out);
        int("workload.tokens_per_rank", self.tokens_per_rank, 1, &mut out);
        int("workload.hidden", self.hidden, 1, &mut out);
        int("workload.topk", self.topk, 1, &mut out);
        int("workload.experts", self.experts, 1, &mut out);
        int("workload.node_limit", self.node_limit, 1, &mut out);
        if self.topk > self.experts {
            out.push(problem(
                "workload.topk",
                format!("expected at most experts ({}), found {}", self.experts, self.topk),
            ));
        }
        check_skew(self.skew, &mut out);
        check_ranks(self.ranks, topology, &mut out);
        out
    }

    fn footprint(&self, _setup: &Setup) -> Option<Footprint> {
        let n = self.ranks as f64;
        Some(Footprint {
            bytes: n * n * BYTES_PER_FLOW,
            key: "workload.ranks".into(),
            what: format!("{:.3e} flows", n * n),
        })
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let mut cluster = build_cluster(setup)?;
        let mut graph = TaskGraph::new();
        let spec = self.spec();
        if spec.kernel == MoeKernel::Normal {
            self.deepep_rdma.cap_normal_kernels(&mut cluster, spec.comm_sms);
        }
        let mut notes = Vec::new();
        let lowered = match self.simulate {
            SimulateRanks::All => {
                let streams: Vec<_> = (0..self.ranks).map(|r| graph.add_stream(r, "deepep")).collect();
                let after = vec![None; self.ranks as usize];
                moe_comm::lower_moe_comm(&cluster, &spec, setup.seed, &mut graph, &streams, &after)
            }
            SimulateRanks::Representative => moe_comm::critical_rank_of(&cluster, &spec, setup.seed).and_then(|rep| {
                notes.push(format!(
                    "representative rank: rank {rep} (the critical rank) simulated of {}; its peers are assumed loaded alike",
                    self.ranks
                ));
                let stream = graph.add_stream(rep, "deepep");
                moe_comm::lower_moe_comm_mirror(&cluster, &spec, setup.seed, &mut graph, stream, rep)
            }),
        }
        .map_err(|e| model_failure(setup, e))?;
        let (platform, graph, result) = simulate(cluster.platform, graph, options, observer)?;
        let time_s = positive_time(result.end);
        let mut metrics = Map::new();
        metrics.insert(
            "kernel".into(),
            Value::from(if self.kernel == KernelName::Normal { "normal" } else { "low-latency" }),
        );
        metrics.insert("phase".into(), Value::from(if self.kind == "moe-combine" { "combine" } else { "dispatch" }));
        metrics.insert("ranks".into(), Value::from(self.ranks));
        metrics.insert("time_us".into(), num(time_s * 1e6));
        metrics.insert("nvlink_bytes_per_rank".into(), num(lowered.nvlink_bytes_per_rank));
        metrics.insert("rdma_bytes_per_rank".into(), num(lowered.rdma_bytes_per_rank));
        metrics.insert("nvlink_gb_per_s".into(), num(lowered.nvlink_bytes_per_rank / time_s / 1e9));
        metrics.insert("rdma_gb_per_s".into(), num(lowered.rdma_bytes_per_rank / time_s / 1e9));
        metrics.insert("ib_bytes_per_rank".into(), num(lowered.ib_bytes_per_rank));
        notes.push("bandwidths count bytes as DeepEP's benchmarks do: (token, destination) pairs incl. the rank's own node/rank, divided by the kernel time".into());
        Ok(Outcome { metrics, notes, graph, platform, result, figures: Vec::new(), files: Vec::new(), job_gpus: None })
    }

    fn sm_driven_all_to_all(&self, _parallel: Option<&ParallelTable>) -> Option<(&'static str, u32)> {
        (self.kernel == KernelName::Normal).then_some(("workload.comm_sms", self.comm_sms))
    }
}
