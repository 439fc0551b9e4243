//! Trace replay: real profiles (PyTorch profiler / Kineto JSON, one file per
//! rank) rebuilt into the graph the hardware ran and re-run in the engine,
//! on the trace's own hardware or on a what-if.
//!
//! `kineto.rs` reads a file (streamed; plain or gzip), `graph.rs` rebuilds a
//! rank (streams, launches, cross-stream and host waits, CPU timeline),
//! `classify.rs` names each kernel's class, `recost.rs` gives each op its
//! time on the target hardware (`network.rs` that of an NCCL collective from
//! its message size on the modelled network), `matching.rs` matches
//! collectives across ranks, `lower.rs` turns the ranks into a
//! `TaskGraph`, and [`replay`] runs it and measures trace and replay the
//! same way (spans, per-stream busy time, compute/communication overlap,
//! DeepEP time under compute).
//!
//! `chakra.rs` reads Chakra execution traces (`.et`, protobuf) and lowers
//! them onto the modelled network (collectives on the cluster), the way
//! ASTRA-sim replays them.

pub mod chakra;
pub mod classify;
pub mod graph;
pub mod kineto;
pub mod lower;
pub mod matching;
pub mod network;
pub mod recost;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use moesim_sim::analysis::union_length;
use moesim_sim::{EngineOptions, Observer, RunResult, TaskClass};
use serde_json::{Map, Value};

use classify::KernelClass;
use graph::RankGraph;
use lower::Lowered;
use recost::{Basis, WhatIf};

/// A problem with a trace file: its path and what is wrong (with the byte
/// offset or event index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    pub origin: String,
    pub message: String,
}

impl ReplayError {
    pub fn new(origin: &str, message: impl Into<String>) -> ReplayError {
        ReplayError { origin: origin.to_owned(), message: message.into() }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Reads and rebuilds one rank's trace; `fallback_rank` is used when the
/// trace does not say its rank.
pub fn import(path: &Path, fallback_rank: u32) -> Result<RankGraph, ReplayError> {
    let trace = kineto::read(path)?;
    graph::reconstruct(&trace, fallback_rank)
}

/// The preset of a device a trace names (`NVIDIA H800` -> `h800`).
pub fn device_preset_of(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    let words: Vec<&str> = n.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    ["h800", "h200", "h100", "h20"].into_iter().find(|p| words.contains(p))
}

/// A GPU op's interval and what it counts as, ns.
#[derive(Debug, Clone, Copy)]
struct Interval {
    start: u64,
    end: u64,
    class: KernelClass,
}

/// Compute, communication, overlap and DeepEP-under-compute of one rank's
/// op intervals, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Activity {
    pub span_ns: u64,
    pub compute_ns: u64,
    pub comm_ns: u64,
    pub overlap_ns: u64,
    pub deepep_ns: u64,
    pub deepep_under_compute_ns: u64,
}

impl Activity {
    pub fn exposed_comm_ns(&self) -> u64 {
        self.comm_ns - self.overlap_ns
    }
}

fn activity(iv: &[Interval]) -> Activity {
    let pick = |f: &dyn Fn(KernelClass) -> bool| -> Vec<(u64, u64)> {
        iv.iter().filter(|i| f(i.class) && i.end > i.start).map(|i| (i.start, i.end)).collect()
    };
    let compute = pick(&|c| !c.is_comm());
    let comm = pick(&|c| c.is_comm());
    let deepep = pick(&|c| c.is_deepep());
    let u = |v: &[(u64, u64)]| union_length(&mut v.to_vec());
    let both = |a: &[(u64, u64)], b: &[(u64, u64)]| {
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        u(a) + u(b) - u(&all)
    };
    let start = iv.iter().map(|i| i.start).min().unwrap_or(0);
    let end = iv.iter().map(|i| i.end).max().unwrap_or(0);
    Activity {
        span_ns: end - start,
        compute_ns: u(&compute),
        comm_ns: u(&comm),
        overlap_ns: both(&compute, &comm),
        deepep_ns: u(&deepep),
        deepep_under_compute_ns: both(&deepep, &compute),
    }
}

/// Per class: kernels, measured and simulated time (ns), for `kernel_classes.csv`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassRow {
    pub kernels: u64,
    pub measured_ns: u64,
    pub simulated_ns: u64,
}

/// A finished replay.
pub struct ReplayRun {
    pub lowered: Lowered,
    pub result: RunResult,
    pub metrics: Map<String, Value>,
    pub notes: Vec<String>,
    pub classes: BTreeMap<KernelClass, ClassRow>,
    /// Per rank, per op: measured and simulated (start, end) in ps from the
    /// rank's origin, for the lanes figure.
    pub lanes: Vec<Lane>,
}

/// One stream's measured or simulated intervals.
pub struct Lane {
    pub label: String,
    pub intervals: Vec<(u64, u64, TaskClass)>,
}

/// Re-costs, lowers and runs the ranks; measures trace and replay alike.
/// `network` re-times NCCL collectives from their message size on the
/// modelled network (`None`: the link-rate ratio for all of them).
pub fn replay(
    ranks: &[RankGraph],
    whatif: &WhatIf,
    network: Option<&network::NetworkModel>,
    engine: &EngineOptions,
    observer: &mut dyn Observer,
) -> Result<ReplayRun, ReplayFailure> {
    let matching = matching::match_collectives(ranks);
    let instance_of = matching.instance_of(ranks);
    // Per instance, its members' global ranks (the group, when every
    // member's trace is here).
    let member_ranks: Vec<Vec<u32>> = matching
        .instances
        .iter()
        .map(|inst| {
            let mut g: Vec<u32> = inst.members.iter().map(|&(r, _)| ranks[r].rank).collect();
            g.sort_unstable();
            g
        })
        .collect();
    // New durations.
    let mut durations = Vec::with_capacity(ranks.len());
    let mut basis_ns: BTreeMap<Basis, f64> = BTreeMap::new();
    let mut by_message = 0u64;
    let mut by_link_rate: BTreeMap<String, u64> = BTreeMap::new();
    for (ri, r) in ranks.iter().enumerate() {
        let (overlap, held) = comm_overlap(r);
        let mut d = Vec::with_capacity(r.ops.len());
        for (i, op) in r.ops.iter().enumerate() {
            let (mut ns, mut basis) = whatif.recost(op, overlap[i], held, r.world_size);
            if op.class == KernelClass::NcclCollective && !whatif.is_identity() {
                let members = instance_of[ri][i].map(|k| member_ranks[k].as_slice());
                let ratio = match network {
                    Some(net) => network::spec_of(op, r.world_size, members).and_then(|spec| net.ratio(&spec)),
                    None => Err(network::Why::NotOnCluster(
                        "no modelled network (no [topology], or a written-out one)".into(),
                    )),
                };
                match ratio {
                    Ok(ratio) => {
                        ns = ((op.dur_ns as f64) * ratio).round().max(0.0) as i64;
                        basis = Basis::Message;
                        by_message += 1;
                    }
                    Err(why) => *by_link_rate.entry(why.to_string()).or_default() += 1,
                }
            }
            *basis_ns.entry(basis).or_default() += op.dur_ns as f64;
            d.push(ns);
        }
        durations.push(d);
    }
    matching::transfer_durations(&matching, &mut durations);
    let lowered = lower::lower(ranks, &durations, &matching).map_err(ReplayFailure::Input)?;
    let result = moesim_sim::run(&lowered.platform, &lowered.graph, engine, observer)
        .map_err(|e| ReplayFailure::Failed(crate::workloads::explain(&e)))?;

    // Measure both sides per rank.
    let mut measured = Vec::new();
    let mut simulated = Vec::new();
    let mut classes: BTreeMap<KernelClass, ClassRow> = BTreeMap::new();
    let mut lanes = Vec::new();
    let mut streams_json = Map::new();
    for (ri, r) in ranks.iter().enumerate() {
        let origin = r.ops.iter().map(|o| o.start_ns).min().unwrap_or(0);
        let mut m_iv = Vec::with_capacity(r.ops.len());
        let mut s_iv = Vec::with_capacity(r.ops.len());
        let mut per_stream: Vec<(u64, u64)> = vec![(0, 0); r.streams.len()];
        let mut m_lanes: Vec<Vec<(u64, u64, TaskClass)>> = vec![Vec::new(); r.streams.len()];
        let mut s_lanes: Vec<Vec<(u64, u64, TaskClass)>> = vec![Vec::new(); r.streams.len()];
        for (i, op) in r.ops.iter().enumerate() {
            let span = result.spans[lowered.op_tasks[ri][i].0 as usize];
            let (ms, me) = ((op.start_ns - origin).max(0) as u64, (op.end_ns() - origin).max(0) as u64);
            let (ss, se) = (span.start.as_ps() / 1000, span.end.as_ps() / 1000);
            m_iv.push(Interval { start: ms, end: me, class: op.class });
            s_iv.push(Interval { start: ss, end: se, class: op.class });
            let row = classes.entry(op.class).or_default();
            row.kernels += 1;
            row.measured_ns += me - ms;
            row.simulated_ns += se - ss;
            let st = &mut per_stream[op.stream as usize];
            st.0 += me - ms;
            st.1 += se - ss;
            m_lanes[op.stream as usize].push((ms * 1000, me * 1000, op.class.task_class()));
            s_lanes[op.stream as usize].push((span.start.as_ps(), span.end.as_ps(), op.class.task_class()));
        }
        for (si, s) in r.streams.iter().enumerate() {
            let key = if ranks.len() > 1 { format!("rank{} {}", r.rank, s.label) } else { s.label.clone() };
            let mut o = Map::new();
            o.insert("kernels".into(), Value::from(r.ops.iter().filter(|op| op.stream as usize == si).count()));
            o.insert("trace_busy_ms".into(), num(per_stream[si].0 as f64 / 1e6));
            o.insert("busy_ms".into(), num(per_stream[si].1 as f64 / 1e6));
            streams_json.insert(key.clone(), Value::Object(o));
            lanes.push(Lane { label: format!("{key} trace"), intervals: std::mem::take(&mut m_lanes[si]) });
            lanes.push(Lane { label: format!("{key} replay"), intervals: std::mem::take(&mut s_lanes[si]) });
        }
        measured.push(activity(&m_iv));
        simulated.push(activity(&s_iv));
    }
    let total: f64 = basis_ns.values().sum::<f64>().max(1e-9);
    let frac = |b: Basis| basis_ns.get(&b).copied().unwrap_or(0.0) / total;
    let ms = |v: u64| num(v as f64 / 1e6);
    let mean = |a: &[Activity], f: &dyn Fn(&Activity) -> u64| {
        a.iter().map(|x| f(x) as f64).sum::<f64>() / a.len().max(1) as f64 / 1e6
    };
    let mut m = Map::new();
    let trace_span = measured.iter().map(|a| a.span_ns).max().unwrap_or(0);
    let span = simulated.iter().map(|a| a.span_ns).max().unwrap_or(0);
    m.insert("ranks".into(), Value::from(ranks.len()));
    m.insert("source_device".into(), Value::from(whatif.source.device.name.clone()));
    m.insert("device".into(), Value::from(whatif.target.device.name.clone()));
    m.insert("trace_span_ms".into(), ms(trace_span));
    m.insert("span_ms".into(), ms(span));
    m.insert("span_change_pct".into(), num((span as f64 / trace_span.max(1) as f64 - 1.0) * 100.0));
    m.insert("kernels".into(), Value::from(ranks.iter().map(|r| r.ops.len()).sum::<usize>()));
    m.insert("unplaced_kernels".into(), Value::from(ranks.iter().map(|r| r.unplaced.len()).sum::<usize>()));
    m.insert("recosted_by_shape_fraction".into(), num(frac(Basis::Shape)));
    m.insert("recosted_by_message_fraction".into(), num(frac(Basis::Message)));
    let link_rate: u64 = by_link_rate.values().sum();
    m.insert("nccl_collectives_by_message".into(), Value::from(by_message));
    m.insert("nccl_collectives_by_link_rate".into(), Value::from(link_rate));
    m.insert("recosted_by_class_fraction".into(), num(frac(Basis::Class)));
    m.insert("kept_fraction".into(), num(frac(Basis::Kept)));
    for (prefix, a) in [("trace_", &measured), ("", &simulated)] {
        let comm = mean(a, &|x| x.comm_ns);
        let exposed = mean(a, &|x| x.exposed_comm_ns());
        let deepep = mean(a, &|x| x.deepep_ns);
        let under = mean(a, &|x| x.deepep_under_compute_ns);
        m.insert(format!("{prefix}compute_ms"), num(mean(a, &|x| x.compute_ns)));
        m.insert(format!("{prefix}comm_ms"), num(comm));
        m.insert(format!("{prefix}exposed_comm_ms"), num(exposed));
        m.insert(format!("{prefix}overlap_fraction"), num(if comm > 0.0 { 1.0 - exposed / comm } else { 0.0 }));
        m.insert(format!("{prefix}deepep_ms"), num(deepep));
        m.insert(
            format!("{prefix}deepep_under_compute_fraction"),
            num(if deepep > 0.0 { under / deepep } else { 0.0 }),
        );
    }
    m.insert("streams".into(), Value::Object(streams_json));

    let mut notes = Vec::new();
    let st = |f: &dyn Fn(&RankGraph) -> u64| ranks.iter().map(f).sum::<u64>();
    notes.push(format!(
        "every GPU op runs for its measured time{}; launch latency from the trace ({}); CPU gaps between launches \
         and syncs are fixed delays",
        if whatif.is_identity() { "" } else { " re-costed to the target (see recosted_*_fraction)" },
        ranks.iter().map(|r| format!("{:.1} us", r.launch_latency_ns as f64 / 1e3)).collect::<Vec<_>>().join(", ")
    ));
    notes.push(format!(
        "cross-stream waits: {} from cuda_sync records, {} inferred from timing (ended within {} us before a start \
         nothing else explains); {} waits no edge explains kept as measured delays ({:.3} ms); {} host syncs; {} ops \
         with no launch call anchored at their measured start",
        st(&|r| r.stats.explicit_waits),
        st(&|r| r.stats.inferred_waits),
        graph::INFER_WINDOW_NS / 1000,
        st(&|r| r.stats.residual_waits),
        ranks.iter().map(|r| r.stats.residual_wait_ns).sum::<i64>() as f64 / 1e6,
        st(&|r| r.stats.host_syncs),
        st(&|r| r.stats.unlaunched_ops),
    ));
    for r in ranks {
        for u in r.unplaced.iter().take(20) {
            notes.push(format!(
                "{}: traceEvents[{}] ({}) not placed: {}",
                r.path,
                u.event,
                graph::short(&u.name),
                u.why
            ));
        }
        if r.unplaced.len() > 20 {
            notes.push(format!("{}: {} more GPU events not placed", r.path, r.unplaced.len() - 20));
        }
    }
    if by_message + link_rate > 0 {
        let why: Vec<String> = by_link_rate.iter().map(|(w, n)| format!("{n}: {w}")).collect();
        notes.push(format!(
            "NCCL collective kernels: {by_message} re-timed from their message size on the modelled network (measured \
             x model(target) / model(source), the collective alone on each cluster with NCCL's algorithm choice), \
             {link_rate} by the link-rate ratio{}",
            if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
        ));
    }
    if ranks.len() > 1 {
        notes.push(format!(
            "ranks replay side by side with their own clocks (each from its first event); {} NCCL collectives matched \
             across ranks (by process group and sequence): each member starts its transfer when the last has \
             arrived, and transfers for the shortest member's time (send/recv kernels are not matched)",
            matching.instances.len()
        ));
        for (group, seq) in &matching.mismatched {
            notes.push(format!(
                "warning: process group {group}: collective #{seq} differs across ranks (missing on some, or another \
                 collective); from there on its kernels replay per rank"
            ));
        }
    }
    m.insert("matched_collectives".into(), Value::from(matching.instances.len()));
    Ok(ReplayRun { lowered, result, metrics: m, notes, classes, lanes })
}

/// A JSON number (the workload rounds them for output).
fn num(v: f64) -> Value {
    Value::from(v)
}

/// Why a replay failed.
#[derive(Debug)]
pub enum ReplayFailure {
    Input(ReplayError),
    Failed(String),
}

/// Per op, the fraction of its measured time a DeepEP normal kernel ran
/// beside it, and the SMs such kernels hold (their grid).
fn comm_overlap(r: &RankGraph) -> (Vec<f64>, u32) {
    let mut iv: Vec<(i64, i64)> =
        r.ops.iter().filter(|o| o.class == KernelClass::DeepEpNormal).map(|o| (o.start_ns, o.end_ns())).collect();
    let mut held: Vec<u32> = r.ops.iter().filter(|o| o.class == KernelClass::DeepEpNormal).map(|o| o.grid[0]).collect();
    held.sort_unstable();
    let held = held.last().copied().unwrap_or(0);
    iv.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (a, b) in iv {
        match merged.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let overlap = r
        .ops
        .iter()
        .map(|o| {
            if !o.class.is_tensor() || o.dur_ns <= 0 {
                return 0.0;
            }
            let (a, b) = (o.start_ns, o.end_ns());
            let from = merged.partition_point(|&(_, e)| e <= a);
            let mut sum = 0;
            for &(s, e) in &merged[from..] {
                if s >= b {
                    break;
                }
                sum += e.min(b) - s.max(a);
            }
            sum as f64 / o.dur_ns as f64
        })
        .collect();
    (overlap, held)
}
