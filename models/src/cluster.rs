//! A `Cluster`: a built topology with its device, turned into the engine's
//! `Platform` (one compute device per GPU, one link resource per directed
//! edge) plus the router that maps GPU pairs to link paths.

use moesim_sim::{DeviceId, DeviceResource, LinkId, LinkResource, PathId, Platform, SimDuration, TaskGraph};
use moesim_topologies::{EdgeIndex, Router, Topology};

use crate::hardware::DeviceSpec;

/// Topology + device + the engine platform built from them.
pub struct Cluster {
    pub topology: Topology,
    pub device: DeviceSpec,
    pub platform: Platform,
    pub router: Router,
}

impl Cluster {
    /// Builds the platform: GPU rank r is `DeviceId(r)`; edge e of the
    /// topology graph is `LinkId(e)` with capacity nominal x efficiency.
    pub fn new(topology: Topology, device: DeviceSpec, seed: u64) -> Cluster {
        let mut platform = Platform::default();
        for rank in 0..topology.gpu_count() {
            let v = topology.gpu(rank);
            platform.add_device(DeviceResource {
                name: topology.node_name(v),
                units: device.sms,
                mem_bytes_per_s: device.hbm_bytes_per_s(),
            });
        }
        for e in topology.graph.edge_indices() {
            let spec = topology.link(e);
            platform.add_link(LinkResource {
                name: topology.link_name(e),
                bytes_per_s: spec.effective_bytes_per_s(),
                latency: SimDuration::from_ps_f64(spec.latency_ns * 1e3),
            });
        }
        let router = Router::new(&topology, seed);
        Cluster { topology, device, platform, router }
    }

    pub fn gpu_count(&self) -> u32 {
        self.topology.gpu_count()
    }

    /// The engine device of GPU `rank`.
    pub fn device_of(&self, rank: u32) -> DeviceId {
        DeviceId(rank)
    }

    /// Routes `src -> dst` (ECMP choice keyed by `flow_key`) and stores the
    /// path in `graph`.
    pub fn add_route(
        &self,
        graph: &mut TaskGraph,
        src: u32,
        dst: u32,
        flow_key: u64,
        scratch: &mut Vec<EdgeIndex>,
    ) -> PathId {
        scratch.clear();
        self.router.route(&self.topology, src, dst, flow_key, scratch);
        graph.add_path_from(scratch.iter().map(|e| LinkId(e.index() as u32)))
    }
}
