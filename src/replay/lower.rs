//! Lowering reconstructed ranks into the engine's `TaskGraph`.
//!
//! Per rank one engine device with a unit per concurrent kernel, so each GPU
//! op runs for exactly its (re-costed) measured time: the measurement already
//! holds what sharing SMs and HBM with its neighbours cost it. Per rank:
//!
//! - a stream per CUDA stream: each op, preceded by its unexplained measured
//!   wait (a delay that depends on the op's own constraints, so it counts
//!   from the binding one);
//! - a stream per CPU thread: the gaps between launches and syncs as delays;
//!   a sync is a join on the ops it waits for, then what the thread spent
//!   after they finished;
//! - launch lanes per thread (a few streams): a launch-latency delay that
//!   starts at the launch call's point of the thread's chain, so a kernel
//!   waits for its launch without holding up the thread;
//! - a host stream anchoring ops whose launch is not in the trace at their
//!   measured start.

use moesim_sim::{DeviceId, DeviceResource, Kernel, Platform, SimDuration, StreamId, TaskGraph, TaskId, UnitDemand};

use super::graph::{short, CpuItem, RankGraph};
use super::matching::Matching;
use super::ReplayError;

/// Units per replay device: up to this many ops run at once at full speed.
pub const REPLAY_UNITS: u32 = 1000;
/// Launch lanes per CPU thread.
const LANES: usize = 8;

/// The lowered replay.
pub struct Lowered {
    pub graph: TaskGraph,
    pub platform: Platform,
    /// Per rank, per op, its task.
    pub op_tasks: Vec<Vec<TaskId>>,
    /// Per rank, per stream of the rank graph, its engine stream.
    pub stream_ids: Vec<Vec<StreamId>>,
}

fn ns(v: i64) -> SimDuration {
    SimDuration::from_ns(v.max(0) as u64)
}

/// Lowers every rank with the op durations given (ns, per rank per op);
/// each matched collective's members start their transfer together, when
/// the last one has arrived.
pub fn lower(ranks: &[RankGraph], durations: &[Vec<i64>], matching: &Matching) -> Result<Lowered, ReplayError> {
    let instance_of = matching.instance_of(ranks);
    // Per instance: each member's arrival marker and transfer task.
    let mut members: Vec<Vec<(TaskId, TaskId)>> = vec![Vec::new(); matching.instances.len()];
    let mut g = TaskGraph::new();
    let mut platform = Platform::default();
    let mut op_tasks = Vec::with_capacity(ranks.len());
    let mut stream_ids = Vec::with_capacity(ranks.len());
    // Which (rank, event) each task stands for, for cycle messages.
    let mut task_event: Vec<Option<(usize, u32)>> = Vec::new();
    for (ri, r) in ranks.iter().enumerate() {
        let device = platform.add_device(DeviceResource {
            name: format!("rank{} gpu (replay)", r.rank),
            units: REPLAY_UNITS,
            mem_bytes_per_s: 1e18,
        });
        let (tasks, streams) = lower_rank(
            &mut g,
            device,
            r,
            &durations[ri],
            ri,
            MatchedOps { instance_of: &instance_of[ri], members: &mut members },
            &mut task_event,
        );
        op_tasks.push(tasks);
        stream_ids.push(streams);
    }
    for (inst, m) in matching.instances.iter().zip(&members) {
        join_members(&mut g, ranks[inst.members[0].0].rank, &format!("{} #{}", inst.group, inst.seq), m);
    }
    if let Some(t) = first_stuck(&g) {
        let (ri, event) = task_event.get(t.0 as usize).copied().flatten().unwrap_or((0, 0));
        return Err(ReplayError::new(
            &ranks[ri].path,
            format!(
                "dependency cycle: traceEvents[{event}] ({}) waits, through stream order and cuda_sync records, on \
                 work that waits on it",
                g.task_name(t)
            ),
        ));
    }
    Ok(Lowered { graph: g, platform, op_tasks, stream_ids })
}

/// A rank's ops' matched collectives, and where to record each member's
/// arrival and transfer tasks.
struct MatchedOps<'a> {
    /// Per op of the rank, its instance.
    instance_of: &'a [Option<usize>],
    /// Per instance, (arrival, transfer) of each member lowered so far.
    members: &'a mut [Vec<(TaskId, TaskId)>],
}

fn lower_rank(
    g: &mut TaskGraph,
    device: DeviceId,
    r: &RankGraph,
    durations: &[i64],
    ri: usize,
    matched: MatchedOps<'_>,
    task_event: &mut Vec<Option<(usize, u32)>>,
) -> (Vec<TaskId>, Vec<StreamId>) {
    let MatchedOps { instance_of, members } = matched;
    let rank = r.rank;
    let note = |t: TaskId, ev: Option<u32>, te: &mut Vec<Option<(usize, u32)>>| {
        if te.len() <= t.0 as usize {
            te.resize(t.0 as usize + 1, None);
        }
        te[t.0 as usize] = ev.map(|e| (ri, e));
    };
    // CPU threads: chains and launch lanes; markers per (thread, item).
    let mut markers: Vec<Vec<Option<TaskId>>> = Vec::with_capacity(r.threads.len());
    let mut sync_joins: Vec<(TaskId, Vec<u32>)> = Vec::new();
    let cpu_label = g.label("cpu");
    for th in &r.threads {
        let chain = g.add_stream(rank, &th.label);
        let mut lanes: Vec<(StreamId, i64)> = Vec::new();
        let mut cursor = 0i64;
        let mut marks = vec![None; th.items.len()];
        for (k, item) in th.items.iter().enumerate() {
            match item {
                CpuItem::Launch { at_ns } => {
                    let p = g.add_task(chain, cpu_label, moesim_sim::TaskClass::Other, delay(*at_ns - cursor));
                    note(p, None, task_event);
                    cursor = cursor.max(*at_ns);
                    // A free lane (its last marker passed), else the earliest.
                    let lane = match lanes.iter().position(|&(_, free)| free <= *at_ns) {
                        Some(l) => l,
                        None if lanes.len() < LANES => {
                            let s = g.add_stream(rank, &format!("{} launch lane {}", th.label, lanes.len()));
                            lanes.push((s, i64::MIN));
                            lanes.len() - 1
                        }
                        None => (0..lanes.len()).min_by_key(|&l| (lanes[l].1, l)).unwrap_or(0),
                    };
                    let m = g.add_delay(lanes[lane].0, "launch latency", ns(r.launch_latency_ns));
                    note(m, None, task_event);
                    g.add_dep(p, m);
                    lanes[lane].1 = *at_ns + r.launch_latency_ns;
                    marks[k] = Some(m);
                }
                CpuItem::Sync { start_ns, end_ns, waits, residual_ns, what } => {
                    let p = g.add_task(chain, cpu_label, moesim_sim::TaskClass::Other, delay(*start_ns - cursor));
                    note(p, None, task_event);
                    let join = g.add_delay(chain, &format!("host waits ({what})"), SimDuration::ZERO);
                    note(join, None, task_event);
                    sync_joins.push((join, waits.clone()));
                    let after = g.add_delay(chain, "after sync", ns(*residual_ns));
                    note(after, None, task_event);
                    cursor = cursor.max(*end_ns);
                }
            }
        }
        markers.push(marks);
    }
    // Ops launched outside the trace: anchored at their measured start.
    let mut anchor_of: Vec<Option<TaskId>> = vec![None; r.ops.len()];
    if !r.anchored.is_empty() {
        let host = g.add_stream(rank, "host (launch not traced)");
        let mut cursor = 0i64;
        for &o in &r.anchored {
            let at = r.ops[o as usize].start_ns;
            let t = g.add_task(host, cpu_label, moesim_sim::TaskClass::Other, delay(at - cursor));
            note(t, None, task_event);
            cursor = cursor.max(at);
            anchor_of[o as usize] = Some(t);
        }
    }
    // GPU streams and ops.
    let streams: Vec<StreamId> = r.streams.iter().map(|s| g.add_stream(rank, &s.label)).collect();
    let mut tasks: Vec<TaskId> = Vec::with_capacity(r.ops.len());
    let mut pending: Vec<(u32, TaskId)> = Vec::new(); // (source op, waiting task)
    for (i, op) in r.ops.iter().enumerate() {
        let stream = streams[op.stream as usize];
        let marker = match op.launch {
            Some((t, k)) => markers[t as usize][k as usize],
            None => anchor_of[i],
        };
        let constrain = |t: TaskId, g: &mut TaskGraph, pending: &mut Vec<(u32, TaskId)>| {
            if let Some(m) = marker {
                g.add_dep(m, t);
            }
            for &w in &op.waits_on {
                pending.push((w, t));
            }
        };
        if op.residual_wait_ns > 0 {
            let w = g.add_delay(stream, "wait (not explained by the trace)", ns(op.residual_wait_ns));
            note(w, Some(op.event), task_event);
            constrain(w, g, &mut pending);
        }
        // A matched collective arrives (once its own constraints are met),
        // then transfers when every member has arrived.
        let arrival = instance_of[i].map(|inst| {
            let a = g.add_delay(stream, "collective: arrive", SimDuration::ZERO);
            note(a, Some(op.event), task_event);
            constrain(a, g, &mut pending);
            (inst, a)
        });
        let kernel = Kernel {
            device,
            compute: SimDuration::from_ps(durations[i].max(0) as u64),
            mem_bytes: 0.0,
            units: UnitDemand::Share { max_units: 1 },
        };
        let t = g.add_kernel(stream, &short(&op.name), op.class.task_class(), kernel);
        note(t, Some(op.event), task_event);
        constrain(t, g, &mut pending);
        if let Some((inst, a)) = arrival {
            members[inst].push((a, t));
        }
        tasks.push(t);
    }
    for (src, t) in pending {
        g.add_dep(tasks[src as usize], t);
    }
    for (join, waits) in sync_joins {
        for w in waits {
            g.add_dep(tasks[w as usize], join);
        }
    }
    (tasks, streams)
}

/// Holds every member's transfer until all members arrived: direct edges
/// for a small group, a join on a stream of its own for a large one.
fn join_members(g: &mut TaskGraph, rank: u32, name: &str, members: &[(TaskId, TaskId)]) {
    if members.len() <= 8 {
        for &(arrive, _) in members {
            for &(other, transfer) in members {
                if other != arrive {
                    g.add_dep(arrive, transfer);
                }
            }
        }
        return;
    }
    let stream = g.add_stream(rank, &format!("collective {name}"));
    let join = g.add_delay(stream, "all members arrived", SimDuration::ZERO);
    for &(arrive, transfer) in members {
        g.add_dep(arrive, join);
        g.add_dep(join, transfer);
    }
}

fn delay(v: i64) -> moesim_sim::TaskKind {
    moesim_sim::TaskKind::Delay(ns(v))
}

/// A task on a cycle (or behind one), if the graph has one: Kahn's algorithm
/// over stream order and dependencies.
fn first_stuck(g: &TaskGraph) -> Option<TaskId> {
    let n = g.task_count();
    let mut indeg = vec![0u32; n];
    let mut succ: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut last: Vec<Option<u32>> = vec![None; g.streams().len()];
    for (i, t) in g.tasks().enumerate() {
        if let Some(p) = last[t.stream.0 as usize] {
            succ[p as usize].push(i as u32);
            indeg[i] += 1;
        }
        last[t.stream.0 as usize] = Some(i as u32);
    }
    for &(a, b) in g.deps() {
        succ[a.0 as usize].push(b.0);
        indeg[b.0 as usize] += 1;
    }
    let mut queue: Vec<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
    let mut seen = 0;
    while let Some(i) = queue.pop() {
        seen += 1;
        for &s in &succ[i as usize] {
            indeg[s as usize] -= 1;
            if indeg[s as usize] == 0 {
                queue.push(s);
            }
        }
    }
    if seen == n {
        return None;
    }
    // Prefer a stuck GPU op (a kernel) for the message.
    let stuck = |i: usize| indeg[i] > 0;
    (0..n)
        .find(|&i| stuck(i) && g.kernel_device(moesim_sim::TaskId(i as u32)).is_some())
        .or_else(|| (0..n).find(|&i| stuck(i)))
        .map(|i| TaskId(i as u32))
}
