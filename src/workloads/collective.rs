//! `kind = "collective"`: one collective over `ranks` GPUs, reported as time,
//! algorithm bandwidth and bus bandwidth (nccl-tests' definitions).

use moesim_models::network::collectives::{self, CollectiveOp, CollectiveSpec, FlowGrouping, Pipelining};
use moesim_sim::{Observer, TaskGraph};
use moesim_topologies::ConfigProblem;
use moesim_topologies::TopologyKind;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    build_cluster, check_ranks, model_failure, num, positive_time, problem, simulate, Context, Footprint, Outcome,
    RunFailure, RunOptions, TopologyState, Workload, BYTES_PER_FLOW, BYTES_PER_GROUPED_FLOW,
};
use crate::setup::Setup;

fn default_algorithm() -> String {
    "auto".into()
}

/// The `[workload]` table of a collective.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectiveWorkload {
    pub kind: String,
    pub op: CollectiveOp,
    /// Group size: GPUs 0..ranks.
    pub ranks: u32,
    /// nccl-tests' size: the buffer (all-reduce), output (all-gather), input
    /// (reduce-scatter) or per-rank send total (all-to-all), in bytes.
    pub bytes: f64,
    /// One of `collectives::ALGORITHMS`; `auto` picks as NCCL's cost model
    /// does.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// NCCL's protocol for ring and tree: `ll`, `ll128`, `simple`, or
    /// `auto` (default): the one NCCL's cost model picks for the algorithm
    /// (for `algorithm = "auto"`, together with it). NVLS, direct and
    /// hierarchical run Simple only.
    #[serde(default = "default_algorithm")]
    pub protocol: String,
    /// Pipelined algorithms (tree, nvls): bytes per chunk (default NCCL's
    /// Simple slice, 1 MiB).
    pub chunk_bytes: Option<f64>,
    /// Pipelined algorithms: chunks each member keeps in flight (default 4).
    pub chunks_in_flight: Option<u32>,
    /// How the direct algorithm's n^2 member flows (one per ordered pair of
    /// ranks) are simulated: `exact` (default), each on its own ECMP route;
    /// or `node-pair`, on a multi-plane fat-tree only, the members crossing
    /// one plane from one node to another as one weighted flow on one ECMP
    /// route plus weighted NVLink forwarding flows (G times fewer flows for
    /// G GPUs per node; the completion time within the error bound the
    /// README states: 0 to +6 % up to 8,192 GPUs).
    #[serde(default)]
    pub flow_grouping: FlowGrouping,
}

impl CollectiveWorkload {
    /// Whether the run groups flows: `node-pair`, and the direct algorithm
    /// named or the one `auto` takes for every all-to-all.
    fn groups_flows(&self) -> bool {
        self.flow_grouping == FlowGrouping::NodePair
            && (self.algorithm == "direct" || (self.algorithm == "auto" && self.op == CollectiveOp::AllToAll))
    }

    /// The flows of the direct exchanges, exact and (on whole nodes of
    /// `gpus_per_node`) grouped by node pair.
    fn direct_flows(&self, gpus_per_node: u32) -> (f64, f64) {
        let n = self.ranks as f64;
        let (exact, exchanges) = match self.op {
            CollectiveOp::AllToAll => (n * n, 1),
            CollectiveOp::AllReduce => (2.0 * n * (n - 1.0), 2),
            CollectiveOp::ReduceScatter | CollectiveOp::AllGather => (n * (n - 1.0), 1),
            CollectiveOp::SendRecv => (1.0, 0),
        };
        let g = u64::from(gpus_per_node.max(1));
        let grouped = exchanges as f64 * collectives::node_pair_flows(u64::from(self.ranks) / g, g) as f64;
        (exact, if exchanges == 0 { exact } else { grouped })
    }
}

impl Workload for CollectiveWorkload {
    fn job_gpus(&self) -> Option<u32> {
        Some(self.ranks)
    }

    fn kind_name(&self) -> &str {
        "collective"
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let topology = cx.topology_state();
        let mut out = Vec::new();
        if self.ranks < 2 {
            out.push(problem("workload.ranks", format!("expected an integer >= 2, found {}", self.ranks)));
        }
        if !(self.bytes.is_finite() && self.bytes > 0.0) {
            out.push(problem("workload.bytes", format!("expected a positive number of bytes, found {}", self.bytes)));
        }
        if let Some(b) = self.chunk_bytes.filter(|b| !(b.is_finite() && *b >= 1.0)) {
            out.push(problem("workload.chunk_bytes", format!("expected a number of bytes ≥ 1, found {b}")));
        }
        if self.chunks_in_flight == Some(0) {
            out.push(problem("workload.chunks_in_flight", "expected an integer ≥ 1, found 0".into()));
        }
        if !collectives::ALGORITHMS.contains(&self.algorithm.as_str()) {
            out.push(problem(
                "workload.algorithm",
                format!("expected one of {}, found \"{}\"", collectives::ALGORITHMS.join(", "), self.algorithm),
            ));
        }
        if let Err(message) = collectives::Protocol::parse(&self.protocol) {
            out.push(problem("workload.protocol", message));
        }
        if self.flow_grouping == FlowGrouping::NodePair {
            if !matches!(self.algorithm.as_str(), "direct" | "auto") {
                out.push(problem(
                    "workload.flow_grouping",
                    format!(
                        "\"node-pair\" groups the direct algorithm's flows; expected algorithm = \"direct\" (or \"auto\"), found \"{}\"",
                        self.algorithm
                    ),
                ));
            }
            if let TopologyState::Resolved(t) = topology {
                if t.kind != TopologyKind::MultiPlaneFatTree {
                    out.push(problem(
                        "workload.flow_grouping",
                        format!(
                            "\"node-pair\" groups flows by the planes of a multi-plane fabric; expected topology kind \"multi-plane-fat-tree\", found \"{}\"",
                            t.kind.as_str()
                        ),
                    ));
                } else if !self.ranks.is_multiple_of(t.gpus_per_node) {
                    out.push(problem(
                        "workload.flow_grouping",
                        format!(
                            "\"node-pair\" needs whole nodes: expected ranks a multiple of {} GPUs per node, found {}",
                            t.gpus_per_node, self.ranks
                        ),
                    ));
                }
            }
        }
        check_ranks(self.ranks, topology, &mut out);
        out
    }

    fn footprint(&self, setup: &Setup) -> Option<Footprint> {
        let spec = setup.topology.as_ref();
        let gpus_per_node = spec.map_or(1, |t| t.gpus_per_node);
        let (exact, grouped) = self.direct_flows(gpus_per_node);
        if self.groups_flows() {
            return Some(Footprint {
                bytes: grouped * BYTES_PER_GROUPED_FLOW,
                key: "workload.ranks".into(),
                what: format!("{grouped:.3e} flows grouped by node pair"),
            });
        }
        // Where grouping would apply, say what it would save.
        let multi_plane = spec.is_some_and(|t| t.kind == TopologyKind::MultiPlaneFatTree);
        let direct = matches!(self.algorithm.as_str(), "direct" | "auto") && self.op != CollectiveOp::SendRecv;
        let what = if multi_plane && direct && self.ranks.is_multiple_of(gpus_per_node) && grouped < exact {
            format!(
                "{exact:.3e} flows; workload.flow_grouping = \"node-pair\" would run {grouped:.3e} weighted flows in about {:.1} GiB",
                grouped * BYTES_PER_GROUPED_FLOW / (1u64 << 30) as f64
            )
        } else {
            format!("{exact:.3e} flows")
        };
        Some(Footprint { bytes: exact * BYTES_PER_FLOW, key: "workload.ranks".into(), what })
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let cluster = build_cluster(setup)?;
        let defaults = Pipelining::default();
        let pipe = Pipelining {
            chunk_bytes: self.chunk_bytes.unwrap_or(defaults.chunk_bytes),
            in_flight: self.chunks_in_flight.map_or(defaults.in_flight, |k| k as usize),
        };
        let spec = CollectiveSpec { op: self.op, group: (0..self.ranks).collect(), bytes: self.bytes };
        let mut notes = Vec::new();
        let forced = collectives::Protocol::parse(&self.protocol)
            .map_err(|m| model_failure(setup, moesim_models::ModelError::invalid("workload.protocol", m)))?;
        let estimates = collectives::estimates(&cluster, &spec);
        let weighed = estimates.iter().any(|e| e.time_us.is_finite());
        let forced_algorithm = (self.algorithm != "auto").then_some(self.algorithm.as_str());
        let picked = if weighed { collectives::pick(&cluster, &spec, forced_algorithm, forced) } else { None };
        let (name, protocol) = match (picked, forced_algorithm) {
            (Some(e), _) => (e.algorithm, e.protocol),
            (None, Some(a)) if matches!(forced, None | Some(collectives::Protocol::Simple)) => {
                (a, collectives::Protocol::Simple)
            }
            (None, Some(a)) => {
                return Err(model_failure(
                    setup,
                    moesim_models::ModelError::invalid(
                        "workload.protocol",
                        format!("{a} runs the Simple protocol only (NCCL runs LL and LL128 for ring and tree)"),
                    ),
                ))
            }
            (None, None) => (collectives::choose(&cluster, &spec), collectives::Protocol::Simple),
        };
        if weighed && (self.algorithm == "auto" || self.protocol == "auto") && picked.is_some() {
            let list: Vec<String> = estimates
                .iter()
                .map(|e| format!("{}/{} {:.1} us", e.algorithm, e.protocol.as_str(), e.time_us))
                .collect();
            notes.push(format!(
                "{} chose {name}/{}: NCCL's cost model (tuning.cc) on this topology's link rates estimates {}",
                if self.algorithm == "auto" { "algorithm auto" } else { "protocol auto" },
                protocol.as_str(),
                list.join(", ")
            ));
        }
        let algorithm: Box<dyn collectives::CollectiveAlgorithm> = if self.flow_grouping == FlowGrouping::NodePair
            && name == "direct"
        {
            notes.push(
                    "flow_grouping = node-pair: each plane's member flows between two nodes run as one weighted flow on one ECMP route, NVLink forwarding as weighted flows of its own; an approximation of the exact exchange (error bound in the README)".into(),
                );
            Box::new(collectives::DirectNodePair)
        } else {
            if self.flow_grouping == FlowGrouping::NodePair {
                notes.push(format!("flow_grouping = node-pair has no effect: the algorithm is {name}, not direct"));
            }
            collectives::algorithm_with_protocol(name, pipe, protocol).map_err(|e| model_failure(setup, e))?
        };
        let mut graph = TaskGraph::new();
        let streams: Vec<_> = (0..self.ranks).map(|r| graph.add_stream(r, "comm")).collect();
        let after = vec![None; self.ranks as usize];
        algorithm.lower(&cluster, &spec, &mut graph, &streams, &after).map_err(|e| model_failure(setup, e))?;
        // The route tables (about 1 GB at 16,384 GPUs) are done with.
        let platform = cluster.into_platform();
        let (platform, graph, result) = simulate(platform, graph, options, observer)?;
        let time_s = positive_time(result.end);
        let algbw = self.bytes / time_s / 1e9;
        let busbw = algbw * collectives::bus_bandwidth_factor(self.op, self.ranks);
        let mut metrics = Map::new();
        metrics.insert("op".into(), Value::from(self.op.as_str()));
        metrics.insert("algorithm".into(), Value::from(algorithm.name()));
        metrics.insert("protocol".into(), Value::from(protocol.as_str()));
        if self.flow_grouping != FlowGrouping::Exact {
            metrics.insert("flow_grouping".into(), Value::from(self.flow_grouping.as_str()));
        }
        metrics.insert("ranks".into(), Value::from(self.ranks));
        metrics.insert("bytes".into(), num(self.bytes));
        metrics.insert("time_us".into(), num(time_s * 1e6));
        metrics.insert("algbw_gb_per_s".into(), num(algbw));
        metrics.insert("busbw_gb_per_s".into(), num(busbw));
        Ok(Outcome { metrics, notes, graph, platform, result, figures: Vec::new(), files: Vec::new(), job_gpus: None })
    }
}
