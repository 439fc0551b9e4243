//! A `Cluster`: a built topology with its device, turned into the engine's
//! `Platform` (one compute device per GPU, one link resource per directed
//! edge, and optionally per GPU a send and a receive link standing for the
//! SMs an SM-driven all-to-all kernel holds, per GPU a send and a receive
//! link standing for the RDMA channels of DeepEP's IBRC kernels, and per GPU
//! a link standing for its HBM, which every flow reads at its source and
//! writes at its destination) plus the router that maps GPU pairs to link
//! paths.

use moesim_sim::{DeviceId, DeviceResource, LinkId, LinkKind, LinkResource, PathId, Platform, SimDuration, TaskGraph};
use moesim_topologies::{EdgeIndex, Router, Topology};

use crate::hardware::device::DeviceSpec;

/// Topology + device + the engine platform built from them.
pub struct Cluster {
    pub topology: Topology,
    pub device: DeviceSpec,
    pub platform: Platform,
    pub router: Router,
    /// Per GPU, the links standing for the SMs an SM-driven all-to-all
    /// kernel holds (its send side, its receive side); empty unless
    /// [`Cluster::cap_comm_by_sms`] added them.
    sm_links: Vec<(LinkId, LinkId)>,
    /// Per GPU, the links standing for the RDMA channels of an SM-driven
    /// all-to-all kernel (send side, receive side); empty unless
    /// [`Cluster::cap_rdma_channels`] added them.
    channel_links: Vec<(LinkId, LinkId)>,
    /// Per GPU, the link standing for its HBM; empty unless
    /// [`Cluster::share_memory_with_comm`] added them.
    memory_links: Vec<LinkId>,
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
                kind: LinkKind::Physical(spec.kind.as_str()),
                bytes_per_s: spec.effective_bytes_per_s(),
                latency: SimDuration::from_ps_f64(spec.latency_ns * 1e3),
            });
        }
        let router = Router::new(&topology, seed);
        Cluster {
            topology,
            device,
            platform,
            router,
            sm_links: Vec::new(),
            channel_links: Vec::new(),
            memory_links: Vec::new(),
        }
    }

    /// The platform, dropping the rest (the route tables: about 1 GB at
    /// 16,384 GPUs) once every route is stored.
    pub fn into_platform(self) -> Platform {
        self.platform
    }

    pub fn gpu_count(&self) -> u32 {
        self.topology.gpu_count()
    }

    /// NCCL's NVLink efficiency, if the topology sets one
    /// (`topology.nccl_nvlink_efficiency`).
    fn nccl_nvlink_efficiency(&self) -> Option<f64> {
        self.topology.spec.as_ref().and_then(|s| s.nccl_nvlink_efficiency)
    }

    /// The rate NCCL's kernels move data at over edge `e`: an NVLink edge's
    /// nominal rate x `topology.nccl_nvlink_efficiency` where the topology
    /// sets it, else (and on every other edge) its effective rate.
    pub fn nccl_bytes_per_s(&self, e: EdgeIndex) -> f64 {
        let link = self.topology.link(e);
        match self.nccl_nvlink_efficiency() {
            Some(eff) if link.kind == moesim_topologies::LinkKind::NvLink => link.nominal_bytes_per_s * eff,
            _ => link.effective_bytes_per_s(),
        }
    }

    /// The bytes a flow of an NCCL kernel charges its route per byte it
    /// moves. The links' capacity is nominal x their own efficiency (on
    /// NVLink fitted on DeepEP's kernels); NCCL's copy loops reach
    /// `topology.nccl_nvlink_efficiency` instead, so on a route of NVLink
    /// edges only such a flow charges own / NCCL's efficiency per byte (the
    /// largest over the route), which lets it reach NCCL's rate. 1 on any
    /// other route, or where the topology sets no NCCL efficiency. (The
    /// factor applies to every link of the stored path, the HBM links of
    /// [`Cluster::share_memory_with_comm`] included.)
    pub fn nccl_charge(&self, route: &[EdgeIndex]) -> f64 {
        self.nccl_charge_of(route.iter().copied())
    }

    fn nccl_charge_of(&self, route: impl IntoIterator<Item = EdgeIndex>) -> f64 {
        let Some(eff) = self.nccl_nvlink_efficiency() else { return 1.0 };
        let mut charge = f64::NEG_INFINITY;
        for e in route {
            let link = self.topology.link(e);
            if link.kind != moesim_topologies::LinkKind::NvLink {
                return 1.0;
            }
            charge = charge.max(link.efficiency / eff);
        }
        if charge.is_finite() {
            charge
        } else {
            1.0
        }
    }

    /// [`Cluster::nccl_charge`] of a route given as the engine's links (as
    /// [`Cluster::route_links`] gives them).
    pub fn nccl_charge_of_links(&self, route: &[LinkId]) -> f64 {
        let edges = self.topology.graph.edge_count();
        self.nccl_charge_of(route.iter().filter(|l| (l.0 as usize) < edges).map(|l| EdgeIndex::new(l.0 as usize)))
    }

    /// As [`Cluster::add_route`], for a flow of an NCCL kernel: the path and
    /// the bytes it charges per byte moved ([`Cluster::nccl_charge`]).
    pub fn add_nccl_route(
        &self,
        graph: &mut TaskGraph,
        src: u32,
        dst: u32,
        flow_key: u64,
        scratch: &mut Vec<EdgeIndex>,
    ) -> (PathId, f64) {
        let path = self.path(graph, (src, dst), flow_key, scratch, false, None);
        (path, self.nccl_charge(scratch))
    }

    /// The engine device of GPU `rank`.
    pub fn device_of(&self, rank: u32) -> DeviceId {
        DeviceId(rank)
    }

    /// Bounds SM-driven all-to-all kernels (DeepEP's normal kernels) by the
    /// `sms` SMs they hold: every GPU gets a send and a receive link of
    /// `sms` x the device's per-SM rate, which [`Cluster::add_kernel_route`]
    /// puts at the ends of such a kernel's flows. Nothing on a device whose
    /// communication does not run on its compute units, or with no per-SM
    /// rate; idempotent.
    pub fn cap_comm_by_sms(&mut self, sms: u32) {
        let Some(rate) = self.device.comm_gb_per_s_per_sm else { return };
        if !self.device.comm_uses_compute_units || sms == 0 || !self.sm_links.is_empty() {
            return;
        }
        self.sm_links = self.send_receive_links(sms as f64 * rate * 1e9, &format!("{sms} comm SMs"), "sm-port");
    }

    /// Bounds the RDMA side of SM-driven all-to-all kernels by their
    /// channels: every GPU gets a send and a receive link of `sms` x
    /// `gb_per_s_per_sm` GB/s, which [`Cluster::add_kernel_route`] puts at
    /// the ends of such a kernel's flows across nodes and
    /// [`Cluster::add_channel_self_route`] gives the copies a rank's channels
    /// make for its own node. DeepEP's IBRC kernels (2025-02) push every
    /// (token, node) copy through one queue pair per channel, the source's
    /// own node included, and reach less than the line rate
    /// (`moe_comm::DeepEpRdma`). Nothing on a device whose communication
    /// does not run on its compute units, or with `sms` 0; idempotent.
    pub fn cap_rdma_channels(&mut self, sms: u32, gb_per_s_per_sm: f64) {
        if !self.device.comm_uses_compute_units || sms == 0 || !self.channel_links.is_empty() {
            return;
        }
        let bytes_per_s = sms as f64 * gb_per_s_per_sm * 1e9;
        self.channel_links = self.send_receive_links(bytes_per_s, &format!("{sms} RDMA channel SMs"), "rdma-channel");
    }

    /// Per GPU a send and a receive link of `bytes_per_s`, named after the
    /// GPU, `what` and the side, of construct kind `kind`.
    fn send_receive_links(&mut self, bytes_per_s: f64, what: &str, kind: &'static str) -> Vec<(LinkId, LinkId)> {
        (0..self.gpu_count())
            .map(|rank| {
                let name = self.topology.node_name(self.topology.gpu(rank));
                let mut link = |side: &str| {
                    self.platform.add_link(LinkResource {
                        name: format!("{name} {what} {side}"),
                        kind: LinkKind::Construct(kind),
                        bytes_per_s,
                        latency: SimDuration::ZERO,
                    })
                };
                (link("send"), link("receive"))
            })
            .collect()
    }

    /// Makes communication share each GPU's HBM with its kernels (issue #15,
    /// in-situ interference): every GPU gets a memory link of the HBM
    /// bandwidth, attached to its device (`Platform::attach_memory_link`;
    /// the engine sets its capacity to what the kernels leave, and the
    /// kernels share what the flows leave), and every route then starts at
    /// its source's memory link and ends at its destination's. Nothing when
    /// the device's `comm_shares_hbm` is off; idempotent. Call before
    /// routing any flow.
    pub fn share_memory_with_comm(&mut self) {
        if !self.device.comm_shares_hbm || !self.memory_links.is_empty() {
            return;
        }
        let bytes_per_s = self.device.hbm_bytes_per_s();
        for rank in 0..self.gpu_count() {
            let name = self.topology.node_name(self.topology.gpu(rank));
            let link = self.platform.add_link(LinkResource {
                name: format!("{name} HBM"),
                kind: LinkKind::Construct("hbm"),
                bytes_per_s,
                latency: SimDuration::ZERO,
            });
            self.platform.attach_memory_link(self.device_of(rank), link);
            self.memory_links.push(link);
        }
    }

    /// As [`Cluster::add_route`], for a flow an SM-driven kernel moves: with
    /// [`Cluster::cap_comm_by_sms`] in force it also crosses the sender's
    /// SM send link and the receiver's SM receive link, and across nodes with
    /// [`Cluster::cap_rdma_channels`] in force the sender's channel send
    /// link and the receiver's channel receive link.
    pub fn add_kernel_route(
        &self,
        graph: &mut TaskGraph,
        src: u32,
        dst: u32,
        flow_key: u64,
        scratch: &mut Vec<EdgeIndex>,
    ) -> PathId {
        let g = self.topology.gpus_per_node.max(1);
        let channels = if src / g == dst / g {
            None
        } else {
            let send = self.channel_links.get(src as usize).map(|&(send, _)| send);
            send.zip(self.channel_links.get(dst as usize).map(|&(_, receive)| receive))
        };
        self.path(graph, (src, dst), flow_key, scratch, true, channels)
    }

    /// The path of the copies GPU `rank`'s RDMA channels make for its own
    /// node (its channel send and receive links, no physical link), `None`
    /// unless [`Cluster::cap_rdma_channels`] is in force.
    pub fn add_channel_self_route(&self, graph: &mut TaskGraph, rank: u32) -> Option<PathId> {
        let &(send, receive) = self.channel_links.get(rank as usize)?;
        Some(graph.add_path_from([send, receive]))
    }

    /// Appends the links of the route `src -> dst` (ECMP choice keyed by
    /// `flow_key`) to `out`, without SM links: what [`Cluster::add_route`]
    /// stores, for callers that route on several threads and store in order.
    pub fn route_links(&self, src: u32, dst: u32, flow_key: u64, scratch: &mut Vec<EdgeIndex>, out: &mut Vec<LinkId>) {
        scratch.clear();
        self.router.route(&self.topology, src, dst, flow_key, scratch);
        out.extend(scratch.iter().map(|e| LinkId(e.index() as u32)));
    }

    /// The first link of the route `src -> dst` ([`Cluster::route_links`]'s
    /// first, the same ECMP choice), `None` for `src == dst`.
    pub fn first_route_link(&self, src: u32, dst: u32, flow_key: u64) -> Option<LinkId> {
        self.router.first_hop(&self.topology, src, dst, flow_key).map(|e| LinkId(e.index() as u32))
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
        self.path(graph, (src, dst), flow_key, scratch, false, None)
    }

    /// The stored path `src -> dst`: the source's HBM link, its SM send link
    /// (with `through_sms`), its channel send link (with `channels`), the
    /// route, then the same at the destination in reverse order.
    fn path(
        &self,
        graph: &mut TaskGraph,
        (src, dst): (u32, u32),
        flow_key: u64,
        scratch: &mut Vec<EdgeIndex>,
        through_sms: bool,
        channels: Option<(LinkId, LinkId)>,
    ) -> PathId {
        scratch.clear();
        self.router.route(&self.topology, src, dst, flow_key, scratch);
        let route = scratch.iter().map(|e| LinkId(e.index() as u32));
        let ends =
            if through_sms { (self.sm_links.get(src as usize), self.sm_links.get(dst as usize)) } else { (None, None) };
        let send = ends.0.map(|&(send, _)| send).filter(|_| ends.1.is_some());
        let receive = ends.1.map(|&(_, receive)| receive).filter(|_| ends.0.is_some());
        let read = self.memory_links.get(src as usize).copied();
        let write = self.memory_links.get(dst as usize).copied().filter(|_| src != dst);
        let (channel_send, channel_receive) = (channels.map(|c| c.0), channels.map(|c| c.1));
        graph.add_path_from(
            read.into_iter()
                .chain(send)
                .chain(channel_send)
                .chain(route)
                .chain(channel_receive)
                .chain(receive)
                .chain(write),
        )
    }
}
