//! NCCL collectives re-timed from their message size on the modelled
//! network, with the measurement as the anchor: new = measured x
//! model(target) / model(source).
//!
//! model(x) is the collective alone on cluster x, the scenario's topology
//! with the source's (traced) or the target's link rates, lowered by
//! `collectives::Auto` (NCCL's cost model picks ring, tree or NVLS for
//! all-reduce, reduce-scatter and all-gather; all-to-all runs direct) and
//! run in the engine: so a latency-bound collective (NCCL's fixed kernel
//! latency, per-hop link latencies) barely moves with bandwidth, a
//! bandwidth-bound one moves with the links it crosses, and a group inside
//! one node ignores the InfiniBand rate.
//!
//! What the collective was comes from the kernel's `record_param_comms`
//! args: `Collective name` (else the kernel name), `In msg nelems` /
//! `Out msg nelems` with `dtype` (nccl-tests' size: all-gather's output,
//! the others' input), and the group's global ranks (`Process Group Ranks`,
//! else `Global rank start`/`stride`, else the matched members when every
//! member's trace is here, else the whole world when the group is the
//! world). Global rank r is GPU r of the cluster. A collective missing any
//! of these, or one the collectives module has no model for (broadcast,
//! reduce, send/recv), keeps `recost.rs`'s link-rate ratio; [`Why`] says
//! which.

use std::cell::RefCell;
use std::collections::BTreeMap;

use moesim_models::network::cluster::Cluster;
use moesim_models::network::collectives::{self, CollectiveOp, CollectiveSpec};
use moesim_sim::{EngineOptions, Quiet, StreamId, TaskGraph};

use super::graph::GpuOp;

/// The source (traced) and target clusters a collective is modelled on.
pub struct NetworkModel {
    source: Cluster,
    target: Cluster,
    cache: RefCell<RatioCache>,
}

/// model(target) / model(source) per (op, group, bytes).
type RatioCache = BTreeMap<(&'static str, Vec<u32>, u64), Result<f64, Why>>;

/// Why a collective kept the link-rate ratio.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// No model for this collective (broadcast, reduce, barrier, ...).
    NoModel(String),
    /// The args give no message size (or no known `dtype`).
    NoSize,
    /// The group's ranks are not in the trace.
    NoGroup,
    /// The group does not fit the modelled cluster, or the model failed.
    NotOnCluster(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoModel(name) => write!(f, "no network model for {name}"),
            Why::NoSize => write!(f, "no message size (In/Out msg nelems with a known dtype)"),
            Why::NoGroup => write!(f, "the group's ranks are not recorded (Process Group Ranks)"),
            Why::NotOnCluster(e) => write!(f, "not on the modelled cluster: {e}"),
        }
    }
}

impl NetworkModel {
    pub fn new(source: Cluster, target: Cluster) -> NetworkModel {
        NetworkModel { source, target, cache: RefCell::new(BTreeMap::new()) }
    }

    /// model(target) / model(source) of `spec`.
    pub fn ratio(&self, spec: &CollectiveSpec) -> Result<f64, Why> {
        let key = (spec.op.as_str(), spec.group.clone(), spec.bytes.round() as u64);
        if let Some(r) = self.cache.borrow().get(&key) {
            return r.clone();
        }
        let r = time_alone_ps(&self.source, spec).and_then(|s| {
            let t = time_alone_ps(&self.target, spec)?;
            if s > 0.0 {
                Ok(t / s)
            } else {
                Err(Why::NotOnCluster("the model gives it no time".into()))
            }
        });
        self.cache.borrow_mut().insert(key, r.clone());
        r
    }
}

/// The collective alone on `cluster` (auto algorithm), ps.
pub fn time_alone_ps(cluster: &Cluster, spec: &CollectiveSpec) -> Result<f64, Why> {
    let algorithm = collectives::algorithm("auto").map_err(|e| Why::NotOnCluster(e.to_string()))?;
    let mut graph = TaskGraph::new();
    let streams: Vec<StreamId> = spec.group.iter().map(|&r| graph.add_stream(r, "collective")).collect();
    let after = vec![None; spec.group.len()];
    algorithm.lower(cluster, spec, &mut graph, &streams, &after).map_err(|e| Why::NotOnCluster(e.to_string()))?;
    let result = moesim_sim::run(&cluster.platform, &graph, &EngineOptions::default(), &mut Quiet)
        .map_err(|e| Why::NotOnCluster(format!("{e:?}")))?;
    Ok(result.end.as_ps() as f64)
}

/// The collective op a name says (`Collective name` or the kernel name).
fn op_of(name: &str) -> Option<CollectiveOp> {
    let n: String = name.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if n.contains("allreduce") {
        Some(CollectiveOp::AllReduce)
    } else if n.contains("allgather") {
        Some(CollectiveOp::AllGather)
    } else if n.contains("reducescatter") {
        Some(CollectiveOp::ReduceScatter)
    } else if n.contains("alltoall") {
        Some(CollectiveOp::AllToAll)
    } else {
        None
    }
}

/// Bytes per element of a `dtype` arg (PyTorch's scalar type names).
fn dtype_bytes(dtype: &str) -> Option<f64> {
    let d = dtype.to_ascii_lowercase();
    Some(match d.as_str() {
        "double" | "long" | "float64" | "int64" | "complexfloat" => 8.0,
        "float" | "int" | "float32" | "int32" | "uint32" => 4.0,
        "half" | "bfloat16" | "short" | "float16" | "int16" | "uint16" => 2.0,
        "byte" | "char" | "bool" | "int8" | "uint8" => 1.0,
        _ if d.starts_with("float8") => 1.0,
        _ => return None,
    })
}

/// The collective `op` ran, as the model takes it. `members` are the
/// global ranks of the matched instance's members, when every member's
/// trace is here; `world_size` the trace's.
pub fn spec_of(op: &GpuOp, world_size: Option<u32>, members: Option<&[u32]>) -> Result<CollectiveSpec, Why> {
    let info = op.collective.as_ref().ok_or(Why::NoSize)?;
    let label = info.name.clone().unwrap_or_else(|| op.name.clone());
    let kind = info.name.as_deref().and_then(op_of).or_else(|| op_of(&op.name)).ok_or(Why::NoModel(label))?;
    let elems = match kind {
        CollectiveOp::AllGather => info.out_elems.or(info.in_elems),
        _ => info.in_elems.or(info.out_elems),
    };
    let bytes = elems.zip(info.dtype.as_deref().and_then(dtype_bytes)).map(|(e, b)| e * b).ok_or(Why::NoSize)?;
    if !(bytes.is_finite() && bytes > 0.0) {
        return Err(Why::NoSize);
    }
    let group = match (&info.group_ranks, members, info.group_size, world_size) {
        (Some(g), ..) => g.clone(),
        (None, Some(m), Some(size), _) if m.len() == size as usize => m.to_vec(),
        (None, _, Some(size), Some(world)) if size == world => (0..world).collect(),
        _ => return Err(Why::NoGroup),
    };
    if group.len() < 2 {
        return Err(Why::NotOnCluster(format!("a group of {} rank", group.len())));
    }
    Ok(CollectiveSpec { op: kind, group, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(op_of("allreduce"), Some(CollectiveOp::AllReduce));
        assert_eq!(op_of("_allgather_base"), Some(CollectiveOp::AllGather));
        assert_eq!(op_of("reduce_scatter_tensor"), Some(CollectiveOp::ReduceScatter));
        assert_eq!(op_of("all_to_allv"), Some(CollectiveOp::AllToAll));
        assert_eq!(op_of("ncclKernel_AllReduce_RING_LL_Sum_float"), Some(CollectiveOp::AllReduce));
        assert_eq!(op_of("broadcast"), None);
        assert_eq!(dtype_bytes("BFloat16"), Some(2.0));
        assert_eq!(dtype_bytes("Float"), Some(4.0));
        assert_eq!(dtype_bytes("Float8_e4m3fn"), Some(1.0));
        assert_eq!(dtype_bytes("Quantum"), None);
    }
}
