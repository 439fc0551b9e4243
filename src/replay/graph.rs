//! Per-rank reconstruction of what the hardware ran, from one Kineto trace.
//!
//! - GPU ops (kernels, copies, sets) per CUDA stream in issue order.
//! - Launches: an op's runtime call (`cudaLaunchKernel`, `cuLaunchKernel`,
//!   `cudaMemcpyAsync`, ... matched by correlation id); the op cannot start
//!   before the call's start plus the launch latency (the trace's own: a low
//!   percentile of call-to-start over ops launched into an idle stream). An
//!   op with no launch call in the window is anchored at its measured start.
//! - Cross-stream edges: Kineto's `cuda_sync` records (`Stream Wait Event`:
//!   the first op issued on the waiting stream after the wait depends on the
//!   last op issued on the recorded stream before the `cudaEventRecord`).
//!   Traces without them (older Kineto) carry no event ids on
//!   `cudaStreamWaitEvent`, so a wait is inferred from timing: an op that
//!   started later than its stream, its launch and its known edges allow
//!   depends on the op of another stream that ended last before it (within
//!   [`INFER_WINDOW_NS`]). What still cannot be explained stays as a measured
//!   wait before the op, hung off the op's binding constraint.
//! - Host-blocking syncs: `cudaDeviceSynchronize` (every stream),
//!   `cudaStreamSynchronize` and `cudaEventSynchronize` (the stream the
//!   `cuda_sync` record names, else the launched op that ended last before
//!   the call returned), a synchronous device-to-host copy (its own copy).
//!   The CPU thread waits there; what it spent after the GPU finished stays.
//! - CPU threads keep their own timeline: the gaps between launches and syncs
//!   are fixed delays (a faster GPU does not speed up Python).
//! - Shapes: each launch's innermost enclosing CPU op on the same thread that
//!   recorded `Input Dims` gives the op its inputs.
//!
//! A GPU event without a start or duration, or not a complete event, cannot
//! be placed: it is listed with its index and counted, never dropped
//! silently. A GPU event with no stream is an error.

use std::collections::{BTreeMap, HashMap};

use super::classify::{classify, KernelClass};
use super::kineto::{CollectiveInfo, EventKind, KinetoTrace, OpInputs};
use super::ReplayError;

/// How far back an inferred cross-stream wait may look for its cause, ns.
pub const INFER_WINDOW_NS: i64 = 20_000;
/// Starts later than every known constraint by more than this are waits, ns.
pub const SLACK_TOLERANCE_NS: i64 = 1_000;

/// One GPU stream of a rank.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuStream {
    pub device: i64,
    pub id: i64,
    pub label: String,
}

/// One GPU op as the trace measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuOp {
    /// Index of the event in the file.
    pub event: u32,
    pub name: String,
    pub class: KernelClass,
    /// Into [`RankGraph::streams`].
    pub stream: u32,
    /// Start relative to the rank's origin, ns.
    pub start_ns: i64,
    pub dur_ns: i64,
    pub grid: [u32; 3],
    pub bytes: Option<f64>,
    /// The enclosing CPU op's name and inputs, if it recorded shapes.
    pub parent: Option<(String, OpInputs)>,
    pub collective: Option<CollectiveInfo>,
    /// (thread, launch index in that thread's items).
    pub launch: Option<(u32, u32)>,
    /// Explicit or inferred ops this one waits for (indices into ops).
    pub waits_on: Vec<u32>,
    /// Measured wait before the op that no edge explains, ns.
    pub residual_wait_ns: i64,
    /// The innermost `user_annotation` range enclosing the op's launch call
    /// (into [`RankGraph::annotations`]).
    pub annotation: Option<u32>,
}

impl GpuOp {
    pub fn end_ns(&self) -> i64 {
        self.start_ns + self.dur_ns
    }
}

/// A `user_annotation` range of a CPU thread (times relative to the
/// rank's origin, ns).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub name: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// A point on a CPU thread's timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuItem {
    /// A launch call starting at `at_ns` (its op waits `latency` after it).
    Launch { at_ns: i64 },
    /// A host-blocking call from `start_ns` to `end_ns` waiting for `waits`
    /// (ops); the thread resumes `residual_ns` after the last of them ends.
    Sync { start_ns: i64, end_ns: i64, waits: Vec<u32>, residual_ns: i64, what: String },
}

/// A CPU thread's launches and syncs in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuThread {
    pub label: String,
    pub items: Vec<CpuItem>,
}

/// What the reconstruction found, for the summary and notes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReconstructionStats {
    pub explicit_waits: u64,
    pub inferred_waits: u64,
    pub residual_waits: u64,
    pub residual_wait_ns: i64,
    pub host_syncs: u64,
    pub unlaunched_ops: u64,
    pub ignored_syncs: u64,
}

/// A GPU event that could not be placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    pub event: u32,
    pub name: String,
    pub why: String,
}

/// One rank's reconstructed graph with measured times.
#[derive(Debug, Clone, PartialEq)]
pub struct RankGraph {
    pub path: String,
    pub rank: u32,
    pub device_name: Option<String>,
    pub device_sms: Option<u32>,
    pub world_size: Option<u32>,
    pub streams: Vec<GpuStream>,
    /// Sorted by stream, then issue order.
    pub ops: Vec<GpuOp>,
    pub threads: Vec<CpuThread>,
    /// The trace's `user_annotation` ranges, in the order the file lists them.
    pub annotations: Vec<Annotation>,
    /// Ops with no launch call, anchored at their measured start (in order).
    pub anchored: Vec<u32>,
    pub launch_latency_ns: i64,
    pub stats: ReconstructionStats,
    pub unplaced: Vec<Unplaced>,
    /// Events in the file and JSON bytes read.
    pub total_events: u64,
    pub json_bytes: u64,
}

impl RankGraph {
    /// Measured GPU span: first op start to last op end, ns.
    pub fn gpu_span_ns(&self) -> i64 {
        let start = self.ops.iter().map(|o| o.start_ns).min().unwrap_or(0);
        let end = self.ops.iter().map(GpuOp::end_ns).max().unwrap_or(0);
        end - start
    }
}

struct Call {
    event: u32,
    name: String,
    thread: u32,
    ts: i64,
    dur: i64,
    correlation: Option<i64>,
}

/// Rebuilds one rank's graph from its trace; `rank` is the fallback rank.
pub fn reconstruct(trace: &KinetoTrace, rank: u32) -> Result<RankGraph, ReplayError> {
    let path = &trace.path;
    let mut unplaced = Vec::new();
    // GPU ops and streams.
    let mut stream_index: BTreeMap<(i64, i64), u32> = BTreeMap::new();
    let mut raw_ops: Vec<(u32, usize)> = Vec::new(); // (stream key index later, event idx)
    let mut keys: Vec<(i64, i64)> = Vec::new();
    for (i, e) in trace.events.iter().enumerate() {
        if !e.kind.is_gpu() {
            continue;
        }
        let name = trace.name(e.name);
        let (Some(_), Some(_), true) = (e.ts_ns, e.dur_ns, e.complete) else {
            let why = if !e.complete { "not a complete (ph X) event" } else { "no ts or dur" };
            unplaced.push(Unplaced { event: e.index, name: name.to_owned(), why: why.into() });
            continue;
        };
        let stream = e.stream.or_else(|| trace.name(e.tid).parse::<i64>().ok());
        let Some(stream) = stream else {
            return Err(ReplayError::new(
                path,
                format!(
                    "traceEvents[{}] ({}): on an unknown stream (no args.stream, tid \"{}\")",
                    e.index,
                    short(name),
                    trace.name(e.tid)
                ),
            ));
        };
        let device = e.device.or_else(|| trace.name(e.pid).parse::<i64>().ok()).unwrap_or(0);
        keys.push((device, stream));
        raw_ops.push((0, i));
    }
    keys.sort_unstable();
    keys.dedup();
    for (i, k) in keys.iter().enumerate() {
        stream_index.insert(*k, i as u32);
    }
    let streams: Vec<GpuStream> = keys
        .iter()
        .map(|&(device, id)| GpuStream {
            device,
            id,
            label: if keys.iter().any(|k| k.0 != device) {
                format!("gpu{device} stream {id}")
            } else {
                format!("stream {id}")
            },
        })
        .collect();
    if raw_ops.is_empty() {
        return Err(ReplayError::new(
            path,
            format!(
                "no GPU events (kernels, copies or sets) among its {} events; profile with CUDA activities on",
                trace.total_events
            ),
        ));
    }
    // CPU calls by thread; CPU ops by thread for shapes.
    let mut thread_index: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut thread_labels: Vec<String> = Vec::new();
    let mut calls: Vec<Call> = Vec::new();
    let mut cpu_ops: BTreeMap<u32, Vec<(i64, i64, u32, u32)>> = BTreeMap::new(); // thread -> (ts, end, name, inputs)
    let mut annotation_ranges: BTreeMap<u32, Vec<(i64, i64, u32, u32)>> = BTreeMap::new(); // thread -> (ts, end, name, index)
    let mut annotations: Vec<Annotation> = Vec::new();
    let mut thread_of = |pid: u32, tid: u32, labels: &mut Vec<String>| -> u32 {
        let next = thread_index.len() as u32;
        *thread_index.entry((pid, tid)).or_insert_with(|| {
            labels.push(format!("cpu {}/{}", trace.name(pid), trace.name(tid)));
            next
        })
    };
    let mut syncs_by_corr: HashMap<i64, usize> = HashMap::new();
    let mut stream_waits: Vec<usize> = Vec::new();
    let mut origin = i64::MAX;
    for (i, e) in trace.events.iter().enumerate() {
        if let Some(ts) = e.ts_ns {
            if e.kind.is_gpu() || e.kind == EventKind::Runtime {
                origin = origin.min(ts);
            }
        }
        match e.kind {
            EventKind::Runtime => {
                let (Some(ts), Some(dur)) = (e.ts_ns, e.dur_ns) else { continue };
                let thread = thread_of(e.pid, e.tid, &mut thread_labels);
                calls.push(Call {
                    event: i as u32,
                    name: trace.name(e.name).to_owned(),
                    thread,
                    ts,
                    dur,
                    correlation: e.correlation,
                });
            }
            EventKind::CpuOp => {
                let (Some(ts), Some(dur), Some(inputs)) = (e.ts_ns, e.dur_ns, e.inputs) else { continue };
                let thread = thread_of(e.pid, e.tid, &mut thread_labels);
                cpu_ops.entry(thread).or_default().push((ts, ts + dur, e.name, inputs));
            }
            EventKind::Annotation => {
                let (Some(ts), Some(dur)) = (e.ts_ns, e.dur_ns) else { continue };
                let thread = thread_of(e.pid, e.tid, &mut thread_labels);
                let index = annotations.len() as u32;
                annotations.push(Annotation { name: trace.name(e.name).to_owned(), start_ns: ts, end_ns: ts + dur });
                annotation_ranges.entry(thread).or_default().push((ts, ts + dur, e.name, index));
            }
            EventKind::CudaSync => {
                let Some(s) = &e.sync else { continue };
                if s.kind.contains("Wait") {
                    stream_waits.push(i);
                } else if let Some(c) = e.correlation {
                    syncs_by_corr.insert(c, i);
                }
            }
            _ => {}
        }
    }
    // Runtime calls by correlation (the first wins: a driver call nested in a
    // runtime call shares no correlation with it in Kineto).
    calls.sort_by_key(|c| (c.thread, c.ts, c.event));
    let mut call_by_corr: HashMap<i64, usize> = HashMap::new();
    for (i, c) in calls.iter().enumerate() {
        if let Some(k) = c.correlation {
            call_by_corr.entry(k).or_insert(i);
        }
    }
    // Ops, sorted by stream and start.
    let mut ops: Vec<GpuOp> = Vec::with_capacity(raw_ops.len());
    let mut op_call: Vec<Option<usize>> = Vec::with_capacity(raw_ops.len());
    for &(_, i) in &raw_ops {
        let e = &trace.events[i];
        let device = e.device.or_else(|| trace.name(e.pid).parse::<i64>().ok()).unwrap_or(0);
        let stream = e.stream.or_else(|| trace.name(e.tid).parse::<i64>().ok()).unwrap_or(0);
        let name = trace.name(e.name);
        ops.push(GpuOp {
            event: e.index,
            name: name.to_owned(),
            class: classify(e.kind, name),
            stream: stream_index[&(device, stream)],
            start_ns: e.ts_ns.unwrap_or(0),
            dur_ns: e.dur_ns.unwrap_or(0),
            grid: e.grid,
            bytes: e.bytes,
            parent: None,
            collective: e.collective.as_deref().cloned(),
            launch: None,
            waits_on: Vec::new(),
            residual_wait_ns: 0,
            annotation: None,
        });
        op_call.push(e.correlation.and_then(|c| call_by_corr.get(&c).copied()));
    }
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].stream, ops[i].start_ns, ops[i].event));
    let ops: Vec<GpuOp> = order.iter().map(|&i| ops[i].clone()).collect();
    let op_call: Vec<Option<usize>> = order.iter().map(|&i| op_call[i]).collect();
    let mut ops = ops;
    for o in &mut ops {
        o.start_ns -= origin;
    }
    let calls: Vec<Call> = calls.into_iter().map(|c| Call { ts: c.ts - origin, ..c }).collect();

    // Shapes: innermost enclosing CPU op with inputs.
    for (o, (_, _, name, inputs)) in innermost_enclosing(&calls, &op_call, &cpu_ops, origin) {
        ops[o].parent = Some((trace.name(name).to_owned(), trace.inputs[inputs as usize].clone()));
    }
    // Annotations: the innermost one around each launch.
    for (o, (_, _, _, index)) in innermost_enclosing(&calls, &op_call, &annotation_ranges, origin) {
        ops[o].annotation = Some(index);
    }
    for a in &mut annotations {
        (a.start_ns, a.end_ns) = (a.start_ns - origin, a.end_ns - origin);
    }

    // The op each call launched; per stream the op list.
    let mut stream_ops: Vec<Vec<u32>> = vec![Vec::new(); streams.len()];
    for (i, o) in ops.iter().enumerate() {
        stream_ops[o.stream as usize].push(i as u32);
    }
    let launch_at: Vec<i64> =
        (0..ops.len()).map(|i| op_call[i].map(|c| calls[c].ts).unwrap_or(ops[i].start_ns)).collect();
    let launch_ts = |i: usize| launch_at[i];
    // Launch latency: a low percentile of call-to-start into an idle stream.
    let mut lat: Vec<i64> = Vec::new();
    for list in &stream_ops {
        let mut prev_end = i64::MIN;
        for &o in list {
            let o = o as usize;
            if let Some(c) = op_call[o] {
                if prev_end <= calls[c].ts {
                    lat.push(ops[o].start_ns - calls[c].ts);
                }
            }
            prev_end = ops[o].end_ns();
        }
    }
    lat.retain(|&l| l >= 0);
    lat.sort_unstable();
    let launch_latency_ns = if lat.is_empty() { 0 } else { lat[lat.len() / 20] };

    let mut stats = ReconstructionStats::default();
    // Explicit stream waits from cuda_sync records.
    let last_issued_before = |stream: u32, t: i64| -> Option<u32> {
        let list = &stream_ops[stream as usize];
        list.iter().rev().copied().find(|&o| launch_ts(o as usize) < t)
    };
    let find_stream = |device: i64, id: i64| stream_index.get(&(device, id)).copied();
    let mut explicit = vec![false; ops.len()];
    for &i in &stream_waits {
        let e = &trace.events[i];
        let s = e.sync.as_deref().expect("cuda_sync has sync info");
        let device = e.device.unwrap_or(0);
        let (Some(waiting), Some(on)) =
            (e.stream.and_then(|x| find_stream(device, x)), s.wait_on_stream.and_then(|x| find_stream(device, x)))
        else {
            stats.ignored_syncs += 1;
            continue;
        };
        let Some(wait_call) = e.correlation.and_then(|c| call_by_corr.get(&c)).map(|&c| calls[c].ts) else {
            stats.ignored_syncs += 1;
            continue;
        };
        let record_at =
            s.wait_on_record_correlation.and_then(|c| call_by_corr.get(&c)).map(|&c| calls[c].ts).unwrap_or(wait_call);
        let waiter = stream_ops[waiting as usize].iter().copied().find(|&o| launch_ts(o as usize) > wait_call);
        let source = last_issued_before(on, record_at);
        if let (Some(w), Some(src)) = (waiter, source) {
            if w != src {
                ops[w as usize].waits_on.push(src);
                explicit[w as usize] = true;
                stats.explicit_waits += 1;
            }
        } else {
            stats.ignored_syncs += 1;
        }
    }

    // Inferred waits and residual waits, by measured time.
    let mut by_end: Vec<(i64, u32)> = ops.iter().enumerate().map(|(i, o)| (o.end_ns(), i as u32)).collect();
    by_end.sort_unstable();
    for list in &stream_ops {
        let mut prev_end = i64::MIN;
        for &oi in list {
            let o = oi as usize;
            let marker = match op_call[o] {
                Some(c) => calls[c].ts + launch_latency_ns,
                None => ops[o].start_ns,
            };
            let deps_end = ops[o].waits_on.iter().map(|&d| ops[d as usize].end_ns()).max().unwrap_or(i64::MIN);
            let mut lb = prev_end.max(marker).max(deps_end);
            let start = ops[o].start_ns;
            if start - lb > SLACK_TOLERANCE_NS && !explicit[o] {
                // The op of another stream that ended last in (lb, start].
                let hi = by_end.partition_point(|&(e, _)| e <= start);
                let stream = ops[o].stream;
                let found = by_end[..hi]
                    .iter()
                    .rev()
                    .take_while(|&&(e, _)| e > lb && start - e <= INFER_WINDOW_NS)
                    .find(|&&(_, j)| ops[j as usize].stream != stream);
                if let Some(&(e, j)) = found {
                    ops[o].waits_on.push(j);
                    stats.inferred_waits += 1;
                    lb = e;
                }
            }
            if start - lb > SLACK_TOLERANCE_NS {
                ops[o].residual_wait_ns = start - lb;
                stats.residual_waits += 1;
                stats.residual_wait_ns += start - lb;
            }
            prev_end = ops[o].end_ns();
        }
    }

    // CPU items: launches and host syncs per thread.
    let mut items: Vec<Vec<(i64, u32, CpuItem)>> = vec![Vec::new(); thread_labels.len()];
    let mut launch_of_op: Vec<Option<(u32, i64, u32)>> = vec![None; ops.len()];
    for (o, c) in op_call.iter().enumerate() {
        if let Some(c) = *c {
            let call = &calls[c];
            launch_of_op[o] = Some((call.thread, call.ts, call.event));
        }
    }
    // Ops launched before time t (by launch time), per stream the last one.
    let last_launched_before = |t: i64| -> Vec<u32> {
        stream_ops.iter().filter_map(|list| list.iter().rev().copied().find(|&o| launch_ts(o as usize) < t)).collect()
    };
    let op_of_call: HashMap<u32, usize> =
        op_call.iter().enumerate().filter_map(|(o, c)| c.map(|c| (calls[c].event, o))).collect();
    for c in &calls {
        let lname = c.name.as_str();
        let sync_rec = c.correlation.and_then(|k| syncs_by_corr.get(&k)).map(|&i| &trace.events[i]);
        let waits: Option<(Vec<u32>, &str)> = if lname.contains("DeviceSynchronize") || lname == "cuCtxSynchronize" {
            Some((last_launched_before(c.ts), "device sync"))
        } else if lname.contains("StreamSynchronize") || lname.contains("EventSynchronize") {
            let named = sync_rec.and_then(|e| {
                let s = e.sync.as_deref()?;
                let device = e.device.unwrap_or(0);
                let stream = s.wait_on_stream.or(e.stream.filter(|&x| x >= 0))?;
                let stream = find_stream(device, stream)?;
                let before = s
                    .wait_on_record_correlation
                    .and_then(|k| call_by_corr.get(&k))
                    .map(|&k| calls[k].ts)
                    .unwrap_or(c.ts);
                last_issued_before(stream, before)
            });
            let w = named.or_else(|| {
                // The launched op that ended last before the call returned.
                last_launched_before(c.ts)
                    .into_iter()
                    .filter(|&o| ops[o as usize].end_ns() <= c.ts + c.dur + SLACK_TOLERANCE_NS)
                    .max_by_key(|&o| (ops[o as usize].end_ns(), o))
            });
            Some((w.into_iter().collect(), "stream/event sync"))
        } else if lname.starts_with("cudaMemcpy") || lname.starts_with("cuMemcpy") {
            // A synchronous copy, or an async one into pageable host memory.
            let own = op_of_call.get(&c.event).copied();
            own.filter(|&o| {
                let n = &ops[o].name;
                !lname.contains("Async") || (n.contains("DtoH") && n.contains("Pageable"))
            })
            .map(|o| (vec![o as u32], "device-to-host copy"))
        } else {
            None
        };
        if let Some((waits, what)) = waits {
            if waits.is_empty() {
                continue;
            }
            let gpu_done = waits.iter().map(|&o| ops[o as usize].end_ns()).max().unwrap_or(c.ts);
            let end = c.ts + c.dur;
            let residual = (end - gpu_done.max(c.ts)).max(0);
            stats.host_syncs += 1;
            items[c.thread as usize].push((
                c.ts,
                c.event,
                CpuItem::Sync { start_ns: c.ts, end_ns: end, waits, residual_ns: residual, what: what.to_owned() },
            ));
        }
    }
    for (o, l) in launch_of_op.iter().enumerate() {
        if let Some((thread, ts, event)) = *l {
            items[thread as usize].push((ts, event, CpuItem::Launch { at_ns: ts }));
            let _ = o;
        }
    }
    let mut threads = Vec::new();
    let mut item_pos: HashMap<(u32, u32), u32> = HashMap::new(); // (thread, call event) -> item index
    for (t, mut list) in items.into_iter().enumerate() {
        // Launches before syncs of the same time (a synchronous copy launches
        // its copy, then waits for it); stable by event.
        list.sort_by_key(|(ts, ev, item)| (*ts, matches!(item, CpuItem::Sync { .. }), *ev));
        list.dedup_by(|a, b| {
            a.1 == b.1 && matches!(a.2, CpuItem::Launch { .. }) && matches!(b.2, CpuItem::Launch { .. })
        });
        for (k, (_, ev, item)) in list.iter().enumerate() {
            if matches!(item, CpuItem::Launch { .. }) {
                item_pos.insert((t as u32, *ev), k as u32);
            }
        }
        threads.push(CpuThread { label: thread_labels[t].clone(), items: list.into_iter().map(|x| x.2).collect() });
    }
    let mut anchored = Vec::new();
    for (o, l) in launch_of_op.iter().enumerate() {
        match *l {
            Some((thread, _, event)) => ops[o].launch = item_pos.get(&(thread, event)).map(|&k| (thread, k)),
            None => {
                stats.unlaunched_ops += 1;
                anchored.push(o as u32);
            }
        }
    }
    anchored.sort_by_key(|&o| (ops[o as usize].start_ns, o));

    Ok(RankGraph {
        path: path.clone(),
        rank: trace.rank.unwrap_or(rank),
        device_name: trace.device_name.clone(),
        device_sms: trace.device_sms,
        world_size: trace.world_size,
        streams,
        ops,
        threads,
        annotations,
        anchored,
        launch_latency_ns,
        stats,
        unplaced,
        total_events: trace.total_events,
        json_bytes: trace.json_bytes,
    })
}

/// For each op launched by a call, the innermost range of `ranges` (per
/// thread: start, end, name, payload; in the trace's clock) on the call's
/// thread that encloses the call: (op index, the range shifted to the
/// rank's origin).
fn innermost_enclosing(
    calls: &[Call],
    op_call: &[Option<usize>],
    ranges: &BTreeMap<u32, Vec<(i64, i64, u32, u32)>>,
    origin: i64,
) -> Vec<(usize, (i64, i64, u32, u32))> {
    let mut sorted: BTreeMap<u32, Vec<(i64, i64, u32, u32)>> = BTreeMap::new();
    for (t, list) in ranges {
        let mut l: Vec<_> = list.iter().map(|&(a, b, n, i)| (a - origin, b - origin, n, i)).collect();
        l.sort_by_key(|&(a, b, _, _)| (a, std::cmp::Reverse(b)));
        sorted.insert(*t, l);
    }
    let mut found = Vec::new();
    for (o, c) in op_call.iter().enumerate() {
        let Some(c) = *c else { continue };
        let call = &calls[c];
        let Some(list) = sorted.get(&call.thread) else { continue };
        // Among ranges starting at or before the call, the latest-starting
        // one that still encloses it is the innermost.
        let hi = list.partition_point(|&(a, _, _, _)| a <= call.ts);
        if let Some(&r) = list[..hi].iter().rev().find(|&&(_, b, _, _)| b >= call.ts + call.dur) {
            found.push((o, r));
        }
    }
    found
}

/// A name shortened for messages.
pub fn short(name: &str) -> String {
    let n = name.strip_prefix("void ").unwrap_or(name);
    let n = n.split('(').next().unwrap_or(n);
    if n.chars().count() > 80 {
        format!("{}...", n.chars().take(77).collect::<String>())
    } else {
        n.to_owned()
    }
}
