//! Network: a cluster (topology + device → the engine's `Platform`) and the
//! communication lowered onto it as flows.
//!
//! Owns `Cluster` (`cluster.rs`), the collective algorithms
//! (`collectives.rs`: ring, tree, NVLS, hierarchical and direct, `auto` as
//! NCCL's cost model picks, the `CollectiveAlgorithm` extension point), and DeepEP-style MoE dispatch/combine (`moe_comm.rs`: normal and
//! low-latency kernels, every rank or a representative rank with its mirror).
//!
//! May use: `hardware` (device link rates and SMs) and `transformer::routing`
//! (which tokens go to which experts, and the exchange's direction). Uses
//! neither `lowering` nor `serving`.

pub mod cluster;
pub mod collectives;
pub mod moe_comm;
