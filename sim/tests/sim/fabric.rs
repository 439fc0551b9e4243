//! A synthetic rail-optimised fat-tree and an all-to-all over it, for the
//! scale test and the benchmark (the topologies crate is not a dependency of
//! `sim`): 8-GPU nodes with an NVLink star (GPU <-> switch), one NIC per GPU
//! (PCIe), rail `r` of every node on rail-`r` leaves (32 nodes per leaf),
//! every leaf up to every spine. A flow to another rail first crosses NVLink
//! to the same-rail GPU of its own node (PXN); spines are picked by hash.

use moesim_sim::*;

pub struct Fabric {
    pub platform: Platform,
    pub gpus: u32,
    nvl_up: Vec<LinkId>,
    nvl_down: Vec<LinkId>,
    pcie_up: Vec<LinkId>,
    pcie_down: Vec<LinkId>,
    nic_up: Vec<LinkId>,
    nic_down: Vec<LinkId>,
    /// [leaf][spine]
    leaf_up: Vec<Vec<LinkId>>,
    leaf_down: Vec<Vec<LinkId>>,
    spines: u32,
}

const GPUS_PER_NODE: u32 = 8;
const NODES_PER_LEAF: u32 = 32;

fn link(p: &mut Platform, gb_per_s: f64, latency_ns: u64) -> LinkId {
    p.add_link(LinkResource {
        name: String::new(),
        kind: LinkKind::Physical("test"),
        bytes_per_s: gb_per_s * 1e9,
        latency: SimDuration::from_ns(latency_ns),
    })
}

impl Fabric {
    pub fn new(gpus: u32) -> Self {
        assert_eq!(gpus % GPUS_PER_NODE, 0);
        let mut p = Platform::default();
        let mut f = Fabric {
            platform: Platform::default(),
            gpus,
            nvl_up: vec![],
            nvl_down: vec![],
            pcie_up: vec![],
            pcie_down: vec![],
            nic_up: vec![],
            nic_down: vec![],
            leaf_up: vec![],
            leaf_down: vec![],
            spines: 0,
        };
        for _ in 0..gpus {
            p.add_device(DeviceResource { name: String::new(), units: 132, mem_bytes_per_s: 3.35e12 });
            f.nvl_up.push(link(&mut p, 160.0, 100));
            f.nvl_down.push(link(&mut p, 160.0, 100));
            f.pcie_up.push(link(&mut p, 50.0, 200));
            f.pcie_down.push(link(&mut p, 50.0, 200));
            f.nic_up.push(link(&mut p, 50.0, 300));
            f.nic_down.push(link(&mut p, 50.0, 300));
        }
        let nodes = gpus / GPUS_PER_NODE;
        let leaves_per_rail = nodes.div_ceil(NODES_PER_LEAF);
        let leaves = leaves_per_rail * GPUS_PER_NODE;
        f.spines = if leaves_per_rail == 1 && nodes <= NODES_PER_LEAF { 8 } else { 32 };
        for _ in 0..leaves {
            let up: Vec<LinkId> = (0..f.spines).map(|_| link(&mut p, 50.0, 300)).collect();
            let down: Vec<LinkId> = (0..f.spines).map(|_| link(&mut p, 50.0, 300)).collect();
            f.leaf_up.push(up);
            f.leaf_down.push(down);
        }
        f.platform = p;
        f
    }

    fn leaf(&self, gpu: u32) -> usize {
        let node = gpu / GPUS_PER_NODE;
        let rail = gpu % GPUS_PER_NODE;
        (rail * (self.gpus / GPUS_PER_NODE).div_ceil(NODES_PER_LEAF) + node / NODES_PER_LEAF) as usize
    }

    /// The route from `src` to `dst` (distinct GPUs), written into `out`.
    pub fn route(&self, src: u32, dst: u32, out: &mut Vec<LinkId>) {
        out.clear();
        let (sn, dn) = (src / GPUS_PER_NODE, dst / GPUS_PER_NODE);
        if sn == dn {
            out.extend([self.nvl_up[src as usize], self.nvl_down[dst as usize]]);
            return;
        }
        let mut s = src;
        if src % GPUS_PER_NODE != dst % GPUS_PER_NODE {
            let relay = sn * GPUS_PER_NODE + dst % GPUS_PER_NODE;
            out.extend([self.nvl_up[src as usize], self.nvl_down[relay as usize]]);
            s = relay;
        }
        out.extend([self.pcie_up[s as usize], self.nic_up[s as usize]]);
        let (ls, ld) = (self.leaf(s), self.leaf(dst));
        if ls != ld {
            let spine = ((s.wrapping_mul(2_654_435_761) ^ dst.wrapping_mul(40_503)) % self.spines) as usize;
            out.extend([self.leaf_up[ls][spine], self.leaf_down[ld][spine]]);
        }
        out.extend([self.nic_down[dst as usize], self.pcie_down[dst as usize]]);
    }

    /// One communication task per GPU, each sending `bytes` to every other
    /// GPU, all starting at time zero.
    pub fn all_to_all(&self, bytes: f64) -> TaskGraph {
        let mut g = TaskGraph::new();
        let mut route = Vec::new();
        let mut flows = Vec::with_capacity(self.gpus as usize);
        for src in 0..self.gpus {
            let s = g.add_stream(src, "comm");
            flows.clear();
            for dst in (0..self.gpus).filter(|&d| d != src) {
                self.route(src, dst, &mut route);
                flows.push(Flow { path: g.add_path(&route), bytes });
            }
            g.add_comm(s, "all-to-all", flows.drain(..), Some((DeviceId(src), 20)));
        }
        g
    }
}

/// Peak resident memory of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
