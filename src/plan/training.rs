//! `moesim plan` for training scenarios: a search over nodes x TP x PP x EP
//! x DP x schedule x micro-batch x recompute x ZeRO for the plans that train
//! `tokens` tokens fastest and cheapest.
//!
//! Every candidate is first checked without simulating: the plan's own
//! consistency (tiling, divisibility, the batch), then its memory per GPU
//! (exactly the footprint the simulated step reports, from the schedule and
//! the stage split alone), then a lower bound on its step time: the
//! busiest pipeline device's compute kernels at their solo (roofline) times
//! with balanced routing, which a simulated step can only exceed (kernels
//! on one compute stream run one after another; imbalance, communication,
//! bubbles and launch gaps only add). The survivors are simulated in rounds
//! of [`ROUND`] in order of their bound, in parallel; a candidate whose
//! bound (time to train, cost) is already beaten on both by a simulated
//! plan cannot reach the time-cost Pareto frontier and is pruned. Rounds
//! have a fixed size and results are kept in candidate order, so the
//! outcome does not depend on the thread count. The scenario's own plan is
//! always simulated, as the reference.

use std::collections::HashMap;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::diagnostics::Source;
use crate::workloads::training::TrainingWorkload;
use crate::workloads::RunOptions;
use crate::{load_source, AppError};
use moesim_models::lowering::training::{partition, schedule_memory, RankMode, TrainingSpec};
use moesim_models::network::cluster::Cluster;
use moesim_models::transformer::layers::{Recompute, Unit};
use moesim_models::transformer::parallel::ParallelPlan;
use moesim_models::transformer::routing::Skew;
use moesim_models::transformer::schedule::{self, PipeOp, ScheduleKind};

/// Candidates simulated per round.
pub const ROUND: usize = 8;

/// What to plan for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingTarget {
    /// Tokens to train on.
    pub tokens: f64,
    /// Most GPUs (default: the scenario's cluster).
    pub max_gpus: Option<u64>,
    /// Longest acceptable time to train, days.
    pub deadline_days: Option<f64>,
    pub max_memory_bytes: Option<f64>,
}

/// One plan of the search space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub nodes: u32,
    pub tp: u32,
    pub pp: u32,
    pub dp: u32,
    pub ep: u32,
    pub schedule: ScheduleKind,
    pub virtual_stages: u32,
    pub micro_batch: u32,
    pub recompute: Recompute,
    pub zero: u32,
}

impl Candidate {
    /// The `--set` overrides that turn the scenario into this plan.
    pub fn sets(&self) -> Vec<String> {
        vec![
            format!("topology.nodes={}", self.nodes),
            format!("parallel.tp={}", self.tp),
            format!("parallel.pp={}", self.pp),
            format!("parallel.dp={}", self.dp),
            format!("parallel.ep={}", self.ep),
            format!("parallel.schedule={}", self.schedule.as_str()),
            format!("parallel.virtual_stages={}", self.virtual_stages),
            format!("parallel.micro_batch={}", self.micro_batch),
            format!("parallel.zero={}", self.zero),
            format!("workload.recompute={}", recompute_name(self.recompute)),
        ]
    }

    /// A short name: `TP1 PP16 EP64 DP128 dualpipe mb1 ZeRO-1 recompute=...`.
    pub fn name(&self) -> String {
        format!(
            "{} nodes TP{} PP{} DP{} EP{} {}{} mb{} ZeRO-{} recompute {}",
            self.nodes,
            self.tp,
            self.pp,
            self.dp,
            self.ep,
            self.schedule.as_str(),
            if self.schedule == ScheduleKind::Interleaved1F1B {
                format!(" v{}", self.virtual_stages)
            } else {
                String::new()
            },
            self.micro_batch,
            self.zero,
            recompute_name(self.recompute)
        )
    }
}

/// The `workload.recompute` name of a recompute policy.
pub fn recompute_label(r: Recompute) -> &'static str {
    recompute_name(r)
}

fn recompute_name(r: Recompute) -> &'static str {
    match r {
        Recompute::None => "none",
        Recompute::Selective => "selective",
        Recompute::Full => "full",
        Recompute::NormsAndUpProjections => "norms-and-up-projections",
    }
}

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// Not a valid plan for this cluster, model and batch.
    Invalid { why: String },
    /// Needs more memory per GPU than the device has.
    NoFit { memory_gib: f64, hbm_gib: f64 },
    /// Its lower bound misses the deadline.
    MissesDeadline,
    /// A simulated plan beats its lower bound on time and cost.
    Pruned,
    /// ZeRO-2 where ZeRO-1 of the same plan fits: the same communication,
    /// so the same step.
    SameAsZero1,
    /// Simulated.
    Simulated { step_s: f64, days: f64, gpu_hours: f64, cost_usd: f64, mfu: f64, memory_gib: f64 },
}

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub candidate: Candidate,
    pub gpus: u64,
    /// Lower bound on the step time, s (0 for an invalid plan).
    pub bound_step_s: f64,
    pub bound_days: f64,
    pub bound_cost_usd: f64,
    pub status: Status,
    /// The scenario's own plan.
    pub reference: bool,
}

impl Evaluated {
    /// `(days, cost)` of a simulated plan that fits.
    pub fn outcome(&self) -> Option<(f64, f64)> {
        match self.status {
            Status::Simulated { days, cost_usd, .. } => Some((days, cost_usd)),
            _ => None,
        }
    }
}

/// The search's result.
#[derive(Debug, Clone)]
pub struct TrainingPlan {
    pub tokens: f64,
    pub evaluated: Vec<Evaluated>,
    /// Indices into `evaluated` of the time-cost Pareto frontier, fastest first.
    pub frontier: Vec<usize>,
    /// The recommended plan: the cheapest meeting the deadline, else the fastest.
    pub best: Option<usize>,
    pub reference: Option<usize>,
    pub invalid: usize,
    pub no_fit: usize,
    pub pruned: usize,
    pub simulated: usize,
    /// The best plan's scenario file.
    pub best_scenario: Option<String>,
}

/// Per-stage forward and full-backward kernel times and the split, keyed by
/// what sets them.
type StageKey = (u32, u32, u32, &'static str, bool);
type StageCosts = (Vec<Vec<Unit>>, Vec<f64>, Vec<f64>);
type UnitCosts = (Vec<Unit>, Vec<f64>, Vec<f64>);

fn input(source: &Source, m: String) -> AppError {
    AppError::Input(vec![source.plain(m)])
}

/// Runs the search on a `kind = "training"` scenario source.
pub fn plan(base: &Source, sets: &[String], target: &TrainingTarget) -> Result<TrainingPlan, AppError> {
    let scenario = load_source(base.clone(), sets)?;
    let setup = &scenario.setup;
    if scenario.workload.kind_name() != "training" {
        return Err(input(&setup.source, "not a training scenario".into()));
    }
    let source = setup.source.clone();
    if !(target.tokens.is_finite() && target.tokens > 0.0) {
        return Err(input(&source, format!("--tokens: expected a positive number of tokens, found {}", target.tokens)));
    }
    if let Some(d) = target.deadline_days {
        if !(d.is_finite() && d > 0.0) {
            return Err(input(&source, format!("--deadline-days: expected a positive number of days, found {d}")));
        }
    }
    let table: toml::Table = source.text.parse().map_err(|e: toml::de::Error| input(&source, e.to_string()))?;
    let workload: TrainingWorkload = table
        .get("workload")
        .cloned()
        .ok_or_else(|| input(&source, "no [workload] table".into()))?
        .try_into()
        .map_err(|e: toml::de::Error| input(&source, e.to_string()))?;
    let (Some(model), Some(parallel), Some(topology)) = (&setup.model, &setup.parallel, &setup.topology) else {
        return Err(input(&source, "a training plan needs [model], [parallel] and [topology] tables".into()));
    };
    let gpn = topology.gpus_per_node;
    let scenario_gpus = crate::workloads::cluster_gpus(topology);
    let max_gpus = target.max_gpus.unwrap_or(scenario_gpus);
    if max_gpus < gpn as u64 {
        return Err(input(&source, format!("--max-gpus: expected at least one node of {gpn} GPUs, found {max_gpus}")));
    }
    let max_nodes = (max_gpus / gpn as u64) as u32;
    let mut node_counts: Vec<u32> = [max_nodes, max_nodes / 2, max_nodes / 4].into_iter().filter(|&n| n >= 1).collect();
    node_counts.dedup();
    let reference_plan = TrainingWorkload::plan(parallel, scenario_gpus);
    let reference = Candidate {
        nodes: (scenario_gpus / gpn as u64) as u32,
        tp: reference_plan.tp,
        pp: reference_plan.pp,
        dp: reference_plan.dp,
        ep: reference_plan.ep,
        schedule: reference_plan.schedule,
        virtual_stages: reference_plan.virtual_stages,
        micro_batch: reference_plan.micro_batch,
        recompute: workload.recompute.resolve(),
        zero: reference_plan.zero,
    };
    let experts = model.moe.as_ref().map_or(1, |m| m.routed_experts);
    let mut candidates = Vec::new();
    for &nodes in &node_counts {
        let gpus = nodes as u64 * gpn as u64;
        for tp in [1u32, 2, 4, 8].into_iter().filter(|&t| t <= gpn) {
            for pp in [1u32, 2, 4, 8, 16, 32] {
                if !gpus.is_multiple_of(tp as u64 * pp as u64) {
                    continue;
                }
                let dp = (gpus / (tp as u64 * pp as u64)) as u32;
                let eps: Vec<u32> = if model.moe.is_some() {
                    [8u32, 16, 32, 64, 128, 256].into_iter().filter(|&e| experts.is_multiple_of(e)).collect()
                } else {
                    vec![1]
                };
                for ep in eps {
                    let schedules: &[(ScheduleKind, u32)] = if pp == 1 {
                        &[(ScheduleKind::OneFOneB, 1)]
                    } else {
                        &[
                            (ScheduleKind::OneFOneB, 1),
                            (ScheduleKind::Zb1p, 1),
                            (ScheduleKind::Interleaved1F1B, 2),
                            (ScheduleKind::DualPipe, 1),
                            (ScheduleKind::DualPipeV, 1),
                        ]
                    };
                    for &(schedule, virtual_stages) in schedules {
                        for micro_batch in [1u32, 2] {
                            for recompute in [Recompute::None, Recompute::NormsAndUpProjections, Recompute::Full] {
                                for zero in [0u32, 1, 2, 3] {
                                    candidates.push(Candidate {
                                        nodes,
                                        tp,
                                        pp,
                                        dp,
                                        ep,
                                        schedule,
                                        virtual_stages,
                                        micro_batch,
                                        recompute,
                                        zero,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let reference_index = match candidates.iter().position(|c| *c == reference) {
        Some(i) => i,
        None => {
            candidates.push(reference);
            candidates.len() - 1
        }
    };

    // Clusters per node count (the topology is built once each).
    let mut clusters: HashMap<u32, Cluster> = HashMap::new();
    for &n in node_counts.iter().chain([&reference.nodes]) {
        if clusters.contains_key(&n) {
            continue;
        }
        let mut s = setup.clone();
        if let Some(t) = s.topology.as_mut() {
            t.nodes = n;
        }
        let cluster = crate::workloads::build_cluster(&s).map_err(AppError::from)?;
        clusters.insert(n, cluster);
    }
    let tokens_per_step = workload.global_batch as f64 * workload.seq_len as f64;
    let steps = target.tokens / tokens_per_step;
    let price = setup.device.price_per_gpu_hour(workload.usd_per_gpu_hour);
    let hbm = setup.device.hbm_bytes();
    let gib = (1u64 << 30) as f64;
    type SchedKey = (&'static str, u32, u32, u32, u32);
    type Sched = Result<std::sync::Arc<schedule::PipelineSchedule>, String>;
    let sched_cache: Mutex<HashMap<SchedKey, Sched>> = Mutex::new(HashMap::new());
    let unit_cache: Mutex<HashMap<StageKey, Option<std::sync::Arc<UnitCosts>>>> = Mutex::new(HashMap::new());

    // Cheap checks and bounds, in parallel, kept in candidate order.
    let checked: Vec<Evaluated> = candidates
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            let cluster = &clusters[&c.nodes];
            let gpus = c.nodes as u64 * gpn as u64;
            let plan = ParallelPlan {
                tp: c.tp,
                cp: 1,
                cp_comm: parallel.cp_comm,
                pp: c.pp,
                dp: c.dp,
                ep: c.ep,
                zero: c.zero,
                schedule: c.schedule,
                virtual_stages: c.virtual_stages,
                sequence_parallel: parallel.sequence_parallel,
                micro_batch: c.micro_batch,
                comm_sms: parallel.comm_sms,
                deepep_rdma: parallel.deepep_rdma,
                gemm_kernels: parallel.gemm_kernels,
            };
            let mut e = Evaluated {
                candidate: *c,
                gpus,
                bound_step_s: 0.0,
                bound_days: 0.0,
                bound_cost_usd: 0.0,
                status: Status::Pruned,
                reference: i == reference_index,
            };
            let invalid = |why: String| Status::Invalid { why };
            let problems = plan.problems(gpus, gpn, model, workload.global_batch);
            if let Some(p) = problems.first() {
                e.status = invalid(format!("{}: {}", p.key, p.message));
                return e;
            }
            let m = match plan.microbatches(workload.global_batch) {
                Ok(m) => m,
                Err(p) => {
                    e.status = invalid(p.message);
                    return e;
                }
            };
            // The schedule of at most 4 micro-batches per stage: the memory
            // peak is reached by then, and each micro-batch adds the same
            // work, so the compute bound scales by m / m_eff.
            let m_eff = m.min(4 * plan.stages()).max(1);
            let m_eff = if c.schedule == ScheduleKind::DualPipe { m_eff + m_eff % 2 } else { m_eff }.min(m);
            let skey = (c.schedule.as_str(), c.pp, plan.stages(), c.virtual_stages, m_eff);
            let cached = sched_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&skey).cloned();
            let sched = match cached {
                Some(s) => s,
                None => {
                    let s = match c.schedule {
                        ScheduleKind::Interleaved1F1B => schedule::build_interleaved(c.pp, c.virtual_stages, m_eff),
                        kind => schedule::build(kind, plan.stages(), m_eff),
                    }
                    .map(std::sync::Arc::new)
                    .map_err(|err| err.to_string());
                    sched_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(skey, s.clone());
                    s
                }
            };
            let sched = match sched {
                Ok(s) => s,
                Err(err) => {
                    e.status = invalid(format!("parallel.schedule: {err}"));
                    return e;
                }
            };
            let spec = TrainingSpec {
                model: model.clone(),
                plan,
                seq_len: workload.seq_len,
                global_batch: workload.global_batch,
                linear_dtype: workload.precision,
                skew: Skew::from_exponent(workload.skew),
                recompute: c.recompute,
                mode: RankMode::Representative,
                routing_draw: workload.routing_draw.resolve(),
                launch_gaps_us: workload.launch_gaps.gaps_us(),
                ep_lateness: workload.ep_lateness,
                attention_kernel: workload.attention_kernel,
                stage_layers: None,
            };
            let key = (c.tp, c.ep, c.micro_batch, recompute_name(c.recompute), parallel.sequence_parallel);
            let cached = unit_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
            let units = match cached {
                Some(v) => v,
                None => {
                    let v = unit_costs(&spec, cluster).map(std::sync::Arc::new);
                    unit_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, v.clone());
                    v
                }
            };
            let costs = units.and_then(|u| stage_costs(model, &u, sched.stages));
            let Some(costs) = costs else {
                e.status = invalid("the model does not split into these stages".into());
                return e;
            };
            let memory = schedule_memory(&spec, cluster, &sched, &costs.0).total();
            let mut busiest: f64 = 0.0;
            for ops in &sched.ops {
                let mut t = 0.0;
                for op in ops {
                    match op {
                        PipeOp::F(x) => t += costs.1[x.stage as usize],
                        PipeOp::B(x) => t += costs.2[x.stage as usize],
                        PipeOp::W(_) => {}
                        PipeOp::FB { f, b } => t += costs.1[f.stage as usize] + costs.2[b.stage as usize],
                    }
                }
                busiest = busiest.max(t * m as f64 / m_eff as f64);
            }
            if matches!(c.schedule, ScheduleKind::OneFOneB | ScheduleKind::Zb1p) && sched.stages > 1 {
                // The last stage's device starts once the first micro-batch
                // has gone forward through every earlier stage.
                let last = sched.ops.last().map_or(0.0, |ops| {
                    ops.iter()
                        .map(|op| match op {
                            PipeOp::F(x) => costs.1[x.stage as usize],
                            PipeOp::B(x) => costs.2[x.stage as usize],
                            _ => 0.0,
                        })
                        .sum::<f64>()
                }) * m as f64
                    / m_eff as f64;
                let ramp: f64 = costs.1[..sched.stages as usize - 1].iter().sum();
                busiest = busiest.max(last + ramp);
            }
            e.bound_step_s = busiest;
            e.bound_days = busiest * steps / 86400.0;
            e.bound_cost_usd = gpus as f64 * e.bound_days * 24.0 * price;
            if memory > hbm {
                e.status = Status::NoFit { memory_gib: memory / gib, hbm_gib: hbm / gib };
            } else if target.deadline_days.is_some_and(|d| e.bound_days > d) && !e.reference {
                e.status = Status::MissesDeadline;
            }
            e
        })
        .collect();
    let mut evaluated = checked;
    // ZeRO-2 shards the gradients too but communicates as ZeRO-1 does (a
    // reduce-scatter, then an all-gather of the updated weights): where
    // ZeRO-1 of the same plan fits, ZeRO-2 has its step and is not run.
    for i in 0..evaluated.len() {
        let c = evaluated[i].candidate;
        if c.zero != 2 || evaluated[i].reference || !matches!(evaluated[i].status, Status::Pruned) {
            continue;
        }
        let twin = Candidate { zero: 1, ..c };
        // ZeRO varies fastest in the candidate order: the twin is just before.
        if let Some(j) = i.checked_sub(1).filter(|&j| evaluated[j].candidate == twin) {
            if matches!(evaluated[j].status, Status::Pruned) || evaluated[j].reference {
                evaluated[i].status = Status::SameAsZero1;
            }
        }
    }
    let survivors = evaluated.iter().filter(|e| matches!(e.status, Status::Pruned)).count();
    eprintln!(
        "plan: {} candidates checked, {survivors} fit and are valid; simulating in rounds of {ROUND}, best bound first",
        evaluated.len()
    );

    // Simulate the survivors in rounds, in order of their bound.
    let mut order: Vec<usize> = (0..evaluated.len())
        .filter(|&i| matches!(evaluated[i].status, Status::Pruned) || i == reference_index)
        .collect();
    order.sort_by(|&a, &b| evaluated[a].bound_days.total_cmp(&evaluated[b].bound_days).then(a.cmp(&b)));
    if let Some(p) = order.iter().position(|&i| i == reference_index) {
        order.remove(p);
        order.insert(0, reference_index);
    }
    let options = RunOptions { max_memory_bytes: target.max_memory_bytes, ..RunOptions::default() };
    let mut done: Vec<(f64, f64)> = Vec::new();
    let mut k = 0;
    let mut simulated = 0;
    while k < order.len() {
        let mut round = Vec::new();
        while k < order.len() && round.len() < ROUND {
            let i = order[k];
            k += 1;
            let e = &evaluated[i];
            let beaten = done.iter().any(|&(d, c)| d <= e.bound_days && c <= e.bound_cost_usd);
            if !beaten || e.reference {
                round.push(i);
            }
        }
        simulated += round.len();
        if !round.is_empty() {
            eprintln!(
                "plan: simulating {} more ({simulated} so far, {k} of {} in bound order)",
                round.len(),
                order.len()
            );
        }
        let results: Vec<Result<Status, AppError>> = round
            .par_iter()
            .map(|&i| {
                let e = &evaluated[i];
                let mut all = sets.to_vec();
                all.extend(e.candidate.sets());
                let (summary, _) = crate::run_source(base.clone(), &all, &options, &mut moesim_sim::Quiet)?;
                let get = |k: &str| summary.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                let step_s = get("step_time_s");
                let days = step_s * steps / 86400.0;
                let gpu_hours = e.gpus as f64 * days * 24.0;
                let memory_gib = get("memory_gib_per_gpu");
                if summary.get("fits").and_then(|v| v.as_bool()) == Some(false) {
                    return Ok(Status::NoFit { memory_gib, hbm_gib: get("hbm_gib") });
                }
                Ok(Status::Simulated {
                    step_s,
                    days,
                    gpu_hours,
                    cost_usd: gpu_hours * price,
                    mfu: get("mfu_bf16_peak"),
                    memory_gib,
                })
            })
            .collect();
        for (&i, r) in round.iter().zip(results) {
            let status = match r {
                Ok(s) => s,
                Err(AppError::Input(d)) => {
                    Status::Invalid { why: d.first().map_or(String::new(), |d| d.message.clone()) }
                }
                Err(f) => return Err(f),
            };
            evaluated[i].status = status;
            if let Some(o) = evaluated[i].outcome() {
                if target.deadline_days.is_none_or(|d| o.0 <= d) {
                    done.push(o);
                }
            }
        }
    }

    // The frontier: fastest first, each cheaper than every faster one.
    let eligible = |e: &Evaluated| e.outcome().filter(|o| target.deadline_days.is_none_or(|d| o.0 <= d));
    let mut sim: Vec<usize> = (0..evaluated.len()).filter(|&i| eligible(&evaluated[i]).is_some()).collect();
    sim.sort_by(|&a, &b| {
        let (x, y) = (evaluated[a].outcome().unwrap(), evaluated[b].outcome().unwrap());
        x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)).then(a.cmp(&b))
    });
    let mut frontier = Vec::new();
    let mut cheapest = f64::INFINITY;
    for i in sim {
        let (_, c) = evaluated[i].outcome().unwrap();
        if c < cheapest {
            cheapest = c;
            frontier.push(i);
        }
    }
    let best = if target.deadline_days.is_some() { frontier.last().copied() } else { frontier.first().copied() };
    let count = |f: &dyn Fn(&Status) -> bool| evaluated.iter().filter(|e| f(&e.status)).count();
    let best_scenario = match best {
        Some(b) => {
            let mut all = sets.to_vec();
            all.extend(evaluated[b].candidate.sets());
            Some(base.clone().with_overrides(&all).map_err(AppError::Input)?.text)
        }
        None => None,
    };
    Ok(TrainingPlan {
        tokens: target.tokens,
        invalid: count(&|s| matches!(s, Status::Invalid { .. })),
        no_fit: count(&|s| matches!(s, Status::NoFit { .. })),
        pruned: count(&|s| matches!(s, Status::Pruned | Status::MissesDeadline | Status::SameAsZero1)),
        simulated,
        evaluated,
        frontier,
        best,
        reference: Some(reference_index),
        best_scenario,
    })
}

/// Each unit's forward and full backward (weight gradients included)
/// kernel time for one micro-batch with balanced routing: embedding,
/// layers, head, MTP modules, in model order.
fn unit_costs(spec: &TrainingSpec, cluster: &Cluster) -> Option<UnitCosts> {
    let ctx = spec.layer_context(cluster);
    let model = &spec.model;
    let rows = model.moe.as_ref().map_or(0, |m| spec.plan.micro_batch as u64 * spec.seq_len * m.topk as u64);
    let mut units = vec![Unit::Embedding];
    units.extend((0..model.layers).map(Unit::Layer));
    units.push(Unit::Head);
    units.extend((0..model.mtp_modules).map(Unit::Mtp));
    let mut f = Vec::with_capacity(units.len());
    let mut b = Vec::with_capacity(units.len());
    // Layers of one FFN kind cost the same: each kind is costed once.
    let mut by_kind: Vec<(moesim_models::transformer::model::FfnKind, f64, f64)> = Vec::new();
    for &u in &units {
        let kind = match u {
            Unit::Layer(i) => Some(model.ffn_kind(i)),
            _ => None,
        };
        if let Some(&(_, x, y)) = kind.and_then(|k| by_kind.iter().find(|e| e.0 == k)) {
            f.push(x);
            b.push(y);
            continue;
        }
        let (x, y) = (ctx.forward(u, rows).ok()?.kernel_time_s(), ctx.backward(u, rows).ok()?.kernel_time_s());
        if let Some(k) = kind {
            by_kind.push((k, x, y));
        }
        f.push(x);
        b.push(y);
    }
    Some((units, f, b))
}

/// The stages' units (cut as `lowering::training::split_stages` cuts them,
/// from the same unit costs) and each stage's forward and backward time.
fn stage_costs(model: &moesim_models::ModelConfig, unit: &UnitCosts, stages: u32) -> Option<StageCosts> {
    let (units, f, b) = unit;
    let layers = model.layers as usize;
    if stages == 0 || stages as usize > layers {
        return None;
    }
    let costs: Vec<f64> = f.iter().zip(b).map(|(x, y)| x + y).collect();
    let mut weighted: Vec<f64> = costs[1..=layers].to_vec();
    weighted[0] += costs[0];
    let tail: f64 = costs[layers + 1..].iter().sum();
    *weighted.last_mut()? += tail;
    let starts = partition(&weighted, stages as usize);
    let mut out: Vec<Vec<Unit>> = Vec::with_capacity(stages as usize);
    let (mut sf, mut sb) = (Vec::new(), Vec::new());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(layers);
        // Unit i of the model is at index i + 1 (after the embedding).
        let mut idx: Vec<usize> = (s + 1..end + 1).collect();
        if k == 0 {
            idx.insert(0, 0);
        }
        if k + 1 == stages as usize {
            idx.extend(layers + 1..units.len());
        }
        sf.push(idx.iter().map(|&i| f[i]).sum());
        sb.push(idx.iter().map(|&i| b[i]).sum());
        out.push(idx.iter().map(|&i| units[i]).collect());
    }
    Some((out, sf, sb))
}
