//! Chakra execution traces (`.et`, one file per rank, `name.<rank>.et`):
//! read, checked and lowered onto the modelled network.
//!
//! A file is varint-length-delimited protobuf: one `GlobalMetadata` message,
//! then `Node`s. The message structs below are written by hand against the
//! public schema (mlcommons/chakra `schema/protobuf/et_def.proto`, package
//! `ChakraProtoMsg`) and decoded with `prost`; fields moesim does not use
//! (tensor I/O, storage detail, list-valued attributes) are skipped.
//!
//! Nodes map to the replay's graph as ASTRA-sim's feeder reads them:
//! compute nodes (`COMP_NODE`, and memory, send/recv and collectives the
//! network model has no lowering for) run for their `duration_micros` (or a
//! `runtime` attribute, µs); `COMM_COLL_NODE`s with a `comm_type` the network
//! models (all-reduce, all-gather, reduce-scatter, all-to-all) and a
//! `comm_size` become collectives on the cluster: the k-th such node of a
//! process group (`pg_name`; none: the default group) on every rank that
//! runs that group's collectives joined into one collective over those
//! ranks (file rank = GPU rank); a rank outside a group never waits for it.
//! `data_deps` order the nodes, as in ASTRA-sim's feeder; `ctrl_deps` are
//! read and checked but not followed: in traces converted from PyTorch they
//! name a node's parent operator (a nesting, not an ordering; Chakra's own
//! `tests/data/chakra.0.et` has 383 nodes listing themselves there and
//! cycles through them). A dependency of either kind on a node id not in
//! the file is counted and reported, not fatal; a cycle through
//! `data_deps`, a duplicate id, a bad length prefix or a truncated message
//! is an error naming the file and the node id or byte offset.

use std::path::Path;

use moesim_models::network::cluster::Cluster;
use moesim_models::network::collectives::{CollectiveAlgorithm, CollectiveOp, CollectiveSpec};
use moesim_sim::{SimDuration, StreamId, TaskClass, TaskGraph, TaskId, TaskKind};
use prost::Message;

use super::ReplayError;

/// `ChakraProtoMsg.AttributeProto`, the scalar members of its `value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(oneof = "AttrValue", tags = "3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29")]
    pub value: Option<AttrValue>,
}

/// The scalar values an attribute may hold.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AttrValue {
    #[prost(double, tag = "3")]
    Double(f64),
    #[prost(float, tag = "5")]
    Float(f32),
    #[prost(int32, tag = "7")]
    Int32(i32),
    #[prost(int64, tag = "9")]
    Int64(i64),
    #[prost(uint32, tag = "11")]
    Uint32(u32),
    #[prost(uint64, tag = "13")]
    Uint64(u64),
    #[prost(sint32, tag = "15")]
    Sint32(i32),
    #[prost(sint64, tag = "17")]
    Sint64(i64),
    #[prost(fixed32, tag = "19")]
    Fixed32(u32),
    #[prost(fixed64, tag = "21")]
    Fixed64(u64),
    #[prost(sfixed32, tag = "23")]
    Sfixed32(i32),
    #[prost(sfixed64, tag = "25")]
    Sfixed64(i64),
    #[prost(bool, tag = "27")]
    Bool(bool),
    #[prost(string, tag = "29")]
    Str(String),
}

impl AttrValue {
    /// The value as a non-negative integer, if it is a number.
    fn as_u64(&self) -> Option<u64> {
        let i = |v: i64| u64::try_from(v).ok();
        let f = |v: f64| (0.0..1.8e19).contains(&v).then_some(v as u64);
        match *self {
            AttrValue::Double(v) => f(v),
            AttrValue::Float(v) => f(v as f64),
            AttrValue::Int32(v) | AttrValue::Sint32(v) | AttrValue::Sfixed32(v) => i(v as i64),
            AttrValue::Int64(v) | AttrValue::Sint64(v) | AttrValue::Sfixed64(v) => i(v),
            AttrValue::Uint32(v) | AttrValue::Fixed32(v) => Some(v as u64),
            AttrValue::Uint64(v) | AttrValue::Fixed64(v) => Some(v),
            AttrValue::Bool(v) => Some(v as u64),
            AttrValue::Str(_) => None,
        }
    }
}

/// `ChakraProtoMsg.GlobalMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GlobalMetadata {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, repeated, tag = "2")]
    pub attr: Vec<AttributeProto>,
}

/// `ChakraProtoMsg.Node` (without `inputs`, `outputs` and `storage`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    /// `NodeType`.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(uint64, repeated, tag = "4")]
    pub ctrl_deps: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub data_deps: Vec<u64>,
    #[prost(uint64, tag = "6")]
    pub start_time_micros: u64,
    #[prost(uint64, tag = "7")]
    pub duration_micros: u64,
    #[prost(message, repeated, tag = "10")]
    pub attr: Vec<AttributeProto>,
}

/// `NodeType` values used here.
const COMP_NODE: i32 = 4;
const COMM_SEND_NODE: i32 = 5;
const COMM_RECV_NODE: i32 = 6;
const COMM_COLL_NODE: i32 = 7;

/// The most all of a file's node durations may add up to, µs: far above
/// any traced step, and far below simulated time's range.
pub const MAX_TOTAL_US: u64 = 10_000_000_000;

/// What a node is to the replay.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// Runs for its measured duration on the rank's compute stream.
    Compute,
    /// A collective the network model lowers: op, `comm_size` bytes, and
    /// the process group's name if the trace gives one.
    Collective { op: CollectiveOp, bytes: f64, group: Option<String> },
    /// Communication the network model does not lower (send/recv, or a
    /// collective type without a lowering, or one without a size): runs for
    /// its measured duration, off the compute stream.
    MeasuredComm { what: String },
    /// Anything else (metadata, memory, storage): its measured duration.
    Other,
}

/// One node, its dependencies resolved to indices.
#[derive(Debug, Clone, PartialEq)]
pub struct ChakraNode {
    pub id: u64,
    pub name: String,
    pub kind: NodeKind,
    pub dur_ns: u64,
    /// `is_cpu_op`: a host operator (its own stream, as ASTRA-sim keeps one
    /// CPU op and one GPU op in flight per rank).
    pub cpu: bool,
    /// Its `data_deps`, as indices into the trace's `nodes`.
    pub deps: Vec<u32>,
}

/// One rank's trace.
#[derive(Debug, Clone, PartialEq)]
pub struct ChakraTrace {
    pub path: String,
    pub rank: u32,
    pub version: String,
    /// Nodes in an order that respects their dependencies (file order where
    /// it already does).
    pub nodes: Vec<ChakraNode>,
    /// (node id, the id it depends on) for every dependency (data or
    /// control) on a node id not in the file.
    pub dangling: Vec<(u64, u64)>,
    /// `ctrl_deps` entries read but not followed.
    pub ctrl_deps: u64,
}

/// The rank a file's name says (`name.<rank>.et`).
pub fn rank_of(path: &Path) -> Option<u32> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".et")?;
    stem.rsplit('.').next()?.parse().ok()
}

/// Reads one `.et` file; `fallback_rank` when the name does not say.
pub fn read(path: &Path, fallback_rank: u32) -> Result<ChakraTrace, ReplayError> {
    let origin = path.display().to_string();
    let bytes =
        crate::files::read_regular(path, crate::files::MAX_TRACE_BYTES).map_err(|e| ReplayError::new(&origin, e))?;
    parse(&origin, &bytes, rank_of(path).unwrap_or(fallback_rank))
}

/// Reads a varint at `at`; `None` if it runs past the end or past 10 bytes.
fn varint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for k in 0..10 {
        let b = *bytes.get(at + k)?;
        v |= u64::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            return Some((v, k + 1));
        }
    }
    None
}

/// Decodes a whole file's bytes.
pub fn parse(origin: &str, bytes: &[u8], rank: u32) -> Result<ChakraTrace, ReplayError> {
    let err = |m: String| ReplayError::new(origin, m);
    let mut at = 0usize;
    let mut frames: Vec<(usize, &[u8])> = Vec::new();
    while at < bytes.len() {
        let (len, n) = varint(bytes, at).ok_or_else(|| {
            err(format!("byte offset {at}: length prefix is not a valid varint (truncated or over 10 bytes)"))
        })?;
        let start = at + n;
        let left = (bytes.len() - start) as u64;
        if len > left {
            return Err(err(format!(
                "byte offset {at}: length prefix says {len} bytes, only {left} remain (truncated message or wrong \
                 length prefix)"
            )));
        }
        let end = start + len as usize;
        frames.push((at, &bytes[start..end]));
        at = end;
    }
    let Some(&(_, first)) = frames.first() else {
        return Err(err("byte offset 0: empty file; expected a GlobalMetadata message then Nodes".into()));
    };
    let meta = GlobalMetadata::decode(first)
        .map_err(|e| err(format!("byte offset 0: GlobalMetadata does not decode: {e}")))?;
    let mut raw = Vec::with_capacity(frames.len().saturating_sub(1));
    for &(off, frame) in &frames[1..] {
        raw.push(Node::decode(frame).map_err(|e| err(format!("byte offset {off}: Node does not decode: {e}")))?);
    }
    build(origin, rank, meta.version, raw)
}

fn attr<'a>(n: &'a Node, name: &str) -> Option<&'a AttrValue> {
    n.attr.iter().find(|a| a.name == name).and_then(|a| a.value.as_ref())
}

fn kind_of(n: &Node) -> NodeKind {
    match n.r#type {
        COMP_NODE => NodeKind::Compute,
        COMM_SEND_NODE => NodeKind::MeasuredComm { what: "send".into() },
        COMM_RECV_NODE => NodeKind::MeasuredComm { what: "recv".into() },
        COMM_COLL_NODE => {
            let ty = attr(n, "comm_type").and_then(AttrValue::as_u64);
            let op = match ty {
                Some(0) => Some(CollectiveOp::AllReduce),
                Some(2) => Some(CollectiveOp::AllGather),
                Some(6) => Some(CollectiveOp::AllToAll),
                Some(7) => Some(CollectiveOp::ReduceScatter),
                _ => None,
            };
            let bytes = attr(n, "comm_size").and_then(AttrValue::as_u64).filter(|&b| b > 0);
            let group = match attr(n, "pg_name") {
                Some(AttrValue::Str(s)) => Some(s.clone()),
                _ => None,
            };
            match (op, bytes) {
                (Some(op), Some(b)) => NodeKind::Collective { op, bytes: b as f64, group },
                _ => NodeKind::MeasuredComm {
                    what: match ty {
                        Some(t) => {
                            format!("collective type {t}{}", if bytes.is_none() { " without a size" } else { "" })
                        }
                        None => "collective without a comm_type".into(),
                    },
                },
            }
        }
        _ => NodeKind::Other,
    }
}

/// Resolves ids, orders the nodes by their dependencies and refuses cycles.
fn build(origin: &str, rank: u32, version: String, raw: Vec<Node>) -> Result<ChakraTrace, ReplayError> {
    let err = |m: String| ReplayError::new(origin, m);
    let mut index: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    for (i, n) in raw.iter().enumerate() {
        if index.insert(n.id, i as u32).is_some() {
            return Err(err(format!("node id {} appears twice", n.id)));
        }
    }
    let mut dangling = Vec::new();
    let mut deps: Vec<Vec<u32>> = Vec::with_capacity(raw.len());
    let mut ctrl_deps = 0u64;
    for n in &raw {
        let mut d: Vec<u32> = Vec::new();
        for &id in &n.data_deps {
            match index.get(&id) {
                Some(&j) => d.push(j),
                None => dangling.push((n.id, id)),
            }
        }
        for &id in &n.ctrl_deps {
            ctrl_deps += 1;
            if !index.contains_key(&id) {
                dangling.push((n.id, id));
            }
        }
        d.sort_unstable();
        d.dedup();
        deps.push(d);
    }
    // Kahn's algorithm, smallest file index first: file order where it
    // already respects the dependencies.
    let n = raw.len();
    let mut indeg: Vec<u32> = deps.iter().map(|d| d.len() as u32).collect();
    let mut succ: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            succ[j as usize].push(i as u32);
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<u32>> =
        (0..n as u32).filter(|&i| indeg[i as usize] == 0).map(std::cmp::Reverse).collect();
    let mut order: Vec<u32> = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &s in &succ[i as usize] {
            indeg[s as usize] -= 1;
            if indeg[s as usize] == 0 {
                ready.push(std::cmp::Reverse(s));
            }
        }
    }
    if order.len() < n {
        let stuck =
            (0..n).find(|&i| indeg[i] > 0 && on_cycle(i, &deps, &indeg)).or_else(|| (0..n).find(|&i| indeg[i] > 0));
        let id = stuck.map_or(0, |i| raw[i].id);
        return Err(err(format!("dependency cycle: node id {id} depends, through data_deps, on itself")));
    }
    let mut new_index = vec![0u32; n];
    for (k, &i) in order.iter().enumerate() {
        new_index[i as usize] = k as u32;
    }
    let mut slots: Vec<Option<Node>> = raw.into_iter().map(Some).collect();
    let mut nodes = Vec::with_capacity(n);
    let mut total_us = 0u64;
    for &i in &order {
        let Some(node) = slots[i as usize].take() else { continue };
        let dur_us = if node.duration_micros > 0 {
            node.duration_micros
        } else {
            attr(&node, "runtime").and_then(AttrValue::as_u64).unwrap_or(0)
        };
        total_us = total_us.saturating_add(dur_us);
        if total_us > MAX_TOTAL_US {
            return Err(err(format!(
                "node id {}: durations add up to more than {MAX_TOTAL_US} µs (about 2.8 hours) in one file; a \
                 duration is likely not in µs",
                node.id
            )));
        }
        nodes.push(ChakraNode {
            id: node.id,
            kind: kind_of(&node),
            cpu: attr(&node, "is_cpu_op").and_then(AttrValue::as_u64).is_some_and(|v| v != 0),
            dur_ns: dur_us.saturating_mul(1000),
            deps: deps[i as usize].iter().map(|&j| new_index[j as usize]).collect(),
            name: node.name,
        });
    }
    Ok(ChakraTrace { path: origin.to_owned(), rank, version, nodes, dangling, ctrl_deps })
}

/// Whether node `i` (not yet ordered) reaches itself through unordered deps.
fn on_cycle(i: usize, deps: &[Vec<u32>], indeg: &[u32]) -> bool {
    let mut seen = vec![false; deps.len()];
    let mut stack: Vec<usize> = deps[i].iter().map(|&j| j as usize).filter(|&j| indeg[j] > 0).collect();
    while let Some(j) = stack.pop() {
        if j == i {
            return true;
        }
        if std::mem::replace(&mut seen[j], true) {
            continue;
        }
        stack.extend(deps[j].iter().map(|&k| k as usize).filter(|&k| indeg[k] > 0));
    }
    false
}

/// What lowering found, for the run's metrics and notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LowerStats {
    pub nodes: u64,
    pub compute_nodes: u64,
    /// Collectives run on the network (one per matched set of rank nodes).
    pub network_collectives: u64,
    /// Communication nodes kept at their measured duration, and why (first
    /// few).
    pub measured_comm_nodes: u64,
    pub measured_comm_why: Vec<String>,
}

/// Lowers the ranks onto `cluster`: GPU compute on one stream per rank and
/// CPU ops (`is_cpu_op`) on another (in dependency order, one at a time on
/// each, as ASTRA-sim runs them), measured
/// communication on another, and the k-th network collective of each
/// process group joined into one collective over the group's ranks (see
/// [`match_groups`]), split into `chunks` pieces
/// that run one after another (ASTRA-sim's dataset splits with one in
/// flight). With one rank, collectives keep their measured duration.
pub fn lower(
    traces: &[ChakraTrace],
    cluster: &Cluster,
    algorithm: &dyn CollectiveAlgorithm,
    chunks: u32,
    graph: &mut TaskGraph,
) -> Result<LowerStats, ReplayError> {
    let gpus = cluster.gpu_count();
    let mut stats = LowerStats::default();
    if let Some(t) = traces.iter().find(|t| t.rank >= gpus) {
        return Err(ReplayError::new(
            &t.path,
            format!(
                "rank {} is not in the cluster of {gpus} GPUs; the topology needs at least {} GPUs",
                t.rank,
                t.rank + 1
            ),
        ));
    }
    let network = traces.len() > 1;
    let matched = match_groups(traces, network)?;
    let compute_label = graph.label("compute");
    let compute: Vec<StreamId> = traces.iter().map(|t| graph.add_stream(t.rank, "compute")).collect();
    let cpu: Vec<StreamId> = traces.iter().map(|t| graph.add_stream(t.rank, "cpu ops")).collect();
    let other: Vec<StreamId> = traces.iter().map(|t| graph.add_stream(t.rank, "communication (measured)")).collect();
    let mut done: Vec<Vec<Option<TaskId>>> = traces.iter().map(|t| vec![None; t.nodes.len()]).collect();
    let mut cursor = vec![0usize; traces.len()];
    loop {
        // Every rank up to (not including) its next matched collective.
        for (r, t) in traces.iter().enumerate() {
            while cursor[r] < t.nodes.len() && matched.instance_of[r][cursor[r]].is_none() {
                let i = cursor[r];
                let node = &t.nodes[i];
                stats.nodes += 1;
                let (stream, class) = match &node.kind {
                    NodeKind::Compute => {
                        stats.compute_nodes += 1;
                        (if node.cpu { cpu[r] } else { compute[r] }, TaskClass::Compute)
                    }
                    NodeKind::Collective { op, group, .. } => {
                        stats.measured_comm_nodes += 1;
                        let alone = match (network, group) {
                            (false, _) => "one rank".to_owned(),
                            (true, Some(g)) => format!("no other rank of process group \"{g}\" among the traces"),
                            (true, None) => "no other rank has collectives without a process group".to_owned(),
                        };
                        why(
                            &mut stats,
                            format!("{}: node id {} ({}): {alone}, kept as measured", t.path, node.id, op.as_str()),
                        );
                        (other[r], TaskClass::Communication)
                    }
                    NodeKind::MeasuredComm { what } => {
                        stats.measured_comm_nodes += 1;
                        why(
                            &mut stats,
                            format!("{}: node id {} ({what}): no network lowering, kept as measured", t.path, node.id),
                        );
                        (other[r], TaskClass::Communication)
                    }
                    NodeKind::Other => (if node.cpu { cpu[r] } else { compute[r] }, TaskClass::Other),
                };
                let label = if class == TaskClass::Compute { compute_label } else { graph.label(&node.name) };
                let task = graph.add_task(stream, label, class, TaskKind::Delay(SimDuration::from_ns(node.dur_ns)));
                for &d in &node.deps {
                    if let Some(p) = done[r][d as usize] {
                        graph.add_dep(p, task);
                    }
                }
                done[r][i] = Some(task);
                cursor[r] += 1;
            }
        }
        // A collective every member has reached (the lowest rank's first).
        let waiting: Vec<(usize, usize)> = (0..traces.len())
            .filter_map(|r| matched.instance_of[r].get(cursor[r]).copied().flatten().map(|k| (r, k)))
            .collect();
        let Some(&(r, k)) = waiting.first() else { break };
        let ready = waiting
            .iter()
            .map(|&(_, k)| k)
            .find(|&k| matched.instances[k].members.iter().all(|&(m, i)| cursor[m] == i));
        let Some(k) = ready else {
            // Every waiting member waits for one that first waits elsewhere.
            let inst = &matched.instances[k];
            let &(late, at) = inst.members.iter().find(|&&(m, i)| cursor[m] != i).unwrap_or(&inst.members[0]);
            let node = &traces[r].nodes[cursor[r]];
            return Err(ReplayError::new(
                &traces[r].path,
                format!(
                    "node id {} ({}) waits for {} to reach its node id {}, which it reaches only after a collective \
                     this rank has not reached: the ranks run the collectives of different process groups in \
                     different orders",
                    node.id,
                    describe(&node.kind),
                    traces[late].path,
                    traces[late].nodes[at].id
                ),
            ));
        };
        let inst = &matched.instances[k];
        let (r0, i0) = inst.members[0];
        let NodeKind::Collective { op, bytes, group } = traces[r0].nodes[i0].kind.clone() else { break };
        stats.nodes += inst.members.len() as u64;
        stats.network_collectives += 1;
        let name = format!("collective {}#{} ({})", group.as_deref().unwrap_or("default "), inst.seq, op.as_str());
        let streams: Vec<StreamId> =
            inst.members.iter().map(|&(r, _)| graph.add_stream(traces[r].rank, &name)).collect();
        let mut after: Vec<Option<TaskId>> = Vec::with_capacity(inst.members.len());
        for (m, &(r, i)) in inst.members.iter().enumerate() {
            let node = &traces[r].nodes[i];
            let preds: Vec<TaskId> = node.deps.iter().filter_map(|&d| done[r][d as usize]).collect();
            after.push(match preds.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => {
                    let join = graph.add_delay(streams[m], "dependencies", SimDuration::ZERO);
                    for &p in many {
                        graph.add_dep(p, join);
                    }
                    Some(join)
                }
            });
        }
        let pieces = chunks.max(1);
        let members: Vec<u32> = inst.members.iter().map(|&(r, _)| traces[r].rank).collect();
        let spec = CollectiveSpec { op, group: members, bytes: bytes / pieces as f64 };
        for _ in 0..pieces {
            let ends = algorithm
                .lower(cluster, &spec, graph, &streams, &after)
                .map_err(|e| ReplayError::new(&traces[r0].path, format!("node id {}: {e}", traces[r0].nodes[i0].id)))?;
            after = ends.into_iter().map(Some).collect();
        }
        for (&(r, i), a) in inst.members.iter().zip(&after) {
            done[r][i] = *a;
            cursor[r] += 1;
        }
    }
    Ok(stats)
}

/// One collective across ranks: the `seq`-th of its process group on each
/// member, `(trace index, node index)` per member in rank order.
struct Instance {
    seq: usize,
    members: Vec<(usize, usize)>,
}

/// The collectives of every process group matched across its ranks.
struct Matched {
    instances: Vec<Instance>,
    /// Per trace, per node: its instance.
    instance_of: Vec<Vec<Option<usize>>>,
}

/// Matches the k-th network collective of each process group (`pg_name`;
/// nodes without one form the default group) across the ranks whose traces
/// have that group's collectives: a group's ranks are those that run its
/// collectives, and a rank outside a group never waits for it. A group
/// whose ranks have different counts, or different collectives at the same
/// place, is an error naming the node; a group on one rank stays measured.
fn match_groups(traces: &[ChakraTrace], network: bool) -> Result<Matched, ReplayError> {
    let mut instance_of: Vec<Vec<Option<usize>>> = traces.iter().map(|t| vec![None; t.nodes.len()]).collect();
    let mut instances = Vec::new();
    if !network {
        return Ok(Matched { instances, instance_of });
    }
    let mut groups: std::collections::BTreeMap<Option<String>, Vec<Vec<usize>>> = std::collections::BTreeMap::new();
    for (r, t) in traces.iter().enumerate() {
        for (i, node) in t.nodes.iter().enumerate() {
            if let NodeKind::Collective { group, .. } = &node.kind {
                groups.entry(group.clone()).or_insert_with(|| vec![Vec::new(); traces.len()])[r].push(i);
            }
        }
    }
    for (group, per_rank) in &groups {
        let members: Vec<usize> = (0..traces.len()).filter(|&r| !per_rank[r].is_empty()).collect();
        if members.len() < 2 {
            continue;
        }
        let in_group = group.as_ref().map(|g| format!(" of process group \"{g}\"")).unwrap_or_default();
        let r0 = members[0];
        let (t0, c0) = (&traces[r0], &per_rank[r0]);
        for &r in &members[1..] {
            let (t, c) = (&traces[r], &per_rank[r]);
            if c.len() != c0.len() {
                return Err(ReplayError::new(
                    &t.path,
                    format!(
                        "{} collectives{in_group} the network models, but {} has {}: the collectives of a process \
                         group are matched across its ranks in order",
                        c.len(),
                        t0.path,
                        c0.len()
                    ),
                ));
            }
            for (&a, &b) in c0.iter().zip(c) {
                let (na, nb) = (&t0.nodes[a], &t.nodes[b]);
                if na.kind != nb.kind {
                    return Err(ReplayError::new(
                        &t.path,
                        format!(
                            "node id {} ({}) does not match node id {} of {} ({}), the collective at the same place",
                            nb.id,
                            describe(&nb.kind),
                            na.id,
                            t0.path,
                            describe(&na.kind)
                        ),
                    ));
                }
            }
        }
        for (seq, _) in c0.iter().enumerate() {
            let k = instances.len();
            let inst = Instance { seq, members: members.iter().map(|&r| (r, per_rank[r][seq])).collect() };
            for &(r, i) in &inst.members {
                instance_of[r][i] = Some(k);
            }
            instances.push(inst);
        }
    }
    Ok(Matched { instances, instance_of })
}

/// A collective for messages: `all-reduce of 1048576 bytes in group "pg"`.
fn describe(kind: &NodeKind) -> String {
    match kind {
        NodeKind::Collective { op, bytes, group } => format!(
            "{} of {bytes} bytes{}",
            op.as_str(),
            group.as_ref().map(|g| format!(" in group \"{g}\"")).unwrap_or_default()
        ),
        NodeKind::MeasuredComm { what } => what.clone(),
        NodeKind::Compute => "compute".into(),
        NodeKind::Other => "other".into(),
    }
}

fn why(stats: &mut LowerStats, line: String) {
    if stats.measured_comm_why.len() < 20 {
        stats.measured_comm_why.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(out: &mut Vec<u8>, msg: &impl Message) {
        msg.encode_length_delimited(out).unwrap();
    }

    fn node(id: u64, ty: i32, deps: &[u64], dur_us: u64) -> Node {
        Node {
            id,
            name: format!("n{id}"),
            r#type: ty,
            data_deps: deps.to_vec(),
            duration_micros: dur_us,
            ..Default::default()
        }
    }

    fn file(nodes: &[Node]) -> Vec<u8> {
        let mut out = Vec::new();
        frame(&mut out, &GlobalMetadata { version: "0.0.4".into(), attr: vec![] });
        for n in nodes {
            frame(&mut out, n);
        }
        out
    }

    #[test]
    fn orders_by_dependencies_and_counts_dangling() {
        let mut last = node(4, COMP_NODE, &[], 1);
        last.ctrl_deps = vec![4, 98];
        let bytes =
            file(&[node(2, COMP_NODE, &[1], 5), node(1, COMP_NODE, &[], 3), node(3, COMP_NODE, &[1, 99], 1), last]);
        let t = parse("t.0.et", &bytes, 0).unwrap();
        assert_eq!(t.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(t.nodes[1].deps, vec![0]);
        assert_eq!(t.nodes[1].dur_ns, 5000);
        assert_eq!(t.dangling, vec![(3, 99), (4, 98)]);
        assert_eq!(t.ctrl_deps, 2);
    }

    #[test]
    fn a_cycle_names_a_node_on_it() {
        let bytes = file(&[node(1, COMP_NODE, &[], 1), node(2, COMP_NODE, &[3], 1), node(3, COMP_NODE, &[2], 1)]);
        let e = parse("t.0.et", &bytes, 0).unwrap_err();
        assert_eq!(e.message, "dependency cycle: node id 2 depends, through data_deps, on itself");
    }

    #[test]
    fn a_long_length_prefix_names_its_offset() {
        let mut bytes = file(&[node(1, COMP_NODE, &[], 1)]);
        let meta_len = bytes[0] as usize + 1;
        bytes[meta_len] += 40;
        let e = parse("t.0.et", &bytes, 0).unwrap_err();
        assert!(e.message.starts_with(&format!("byte offset {meta_len}: length prefix says")), "{}", e.message);
        let e = parse("t.0.et", &bytes[..bytes.len() - 1], 0).unwrap_err();
        assert!(e.message.contains("byte offset"), "{}", e.message);
    }

    #[test]
    fn rank_from_the_file_name() {
        assert_eq!(rank_of(Path::new("a/all_reduce.7.et")), Some(7));
        assert_eq!(rank_of(Path::new("a/trace.et")), None);
    }
}
