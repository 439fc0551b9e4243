//! Maximum flow over a cluster graph (Dinic's algorithm), for the bisection
//! of a written-out fabric: the most one direction can carry from one set
//! of GPUs to another over the links' nominal rates.
//!
//! petgraph 0.6 has no max-flow (its `ford_fulkerson` arrived in 0.7, a
//! breaking upgrade for the workspace), so this is a small Dinic: BFS levels,
//! then blocking flows by DFS with per-vertex edge cursors; `O(V^2 E)` in
//! general and far less on the few-tier graphs here.

use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::topology::Topology;

/// A residual graph: arcs in pairs (arc `2k` forward, `2k + 1` its reverse).
struct Residual {
    head: Vec<usize>,
    cap: Vec<f64>,
    /// Arcs leaving each vertex.
    out: Vec<Vec<usize>>,
}

impl Residual {
    fn new(vertices: usize) -> Residual {
        Residual { head: Vec::new(), cap: Vec::new(), out: vec![Vec::new(); vertices] }
    }

    fn add(&mut self, from: usize, to: usize, cap: f64) {
        self.out[from].push(self.head.len());
        self.head.push(to);
        self.cap.push(cap);
        self.out[to].push(self.head.len());
        self.head.push(from);
        self.cap.push(0.0);
    }

    /// BFS levels from `s` over arcs with room; `None` where unreached.
    fn levels(&self, s: usize, eps: f64) -> Vec<Option<u32>> {
        let mut level = vec![None; self.out.len()];
        level[s] = Some(0);
        let mut queue = std::collections::VecDeque::from([s]);
        while let Some(v) = queue.pop_front() {
            let next = level[v].map(|l| l + 1);
            for &a in &self.out[v] {
                let w = self.head[a];
                if self.cap[a] > eps && level[w].is_none() {
                    level[w] = next;
                    queue.push_back(w);
                }
            }
        }
        level
    }

    /// One augmenting path along rising levels (iterative DFS with cursors);
    /// returns the flow pushed, 0 when none is left in this phase.
    fn augment(&mut self, s: usize, t: usize, level: &[Option<u32>], cursor: &mut [usize], eps: f64) -> f64 {
        let mut path: Vec<usize> = Vec::new();
        let mut v = s;
        loop {
            if v == t {
                let push = path.iter().map(|&a| self.cap[a]).fold(f64::INFINITY, f64::min);
                for &a in &path {
                    self.cap[a] -= push;
                    self.cap[a ^ 1] += push;
                }
                return push;
            }
            let mut advanced = false;
            while cursor[v] < self.out[v].len() {
                let a = self.out[v][cursor[v]];
                let w = self.head[a];
                if self.cap[a] > eps && level[w].is_some() && level[w] == level[v].map(|l| l + 1) {
                    path.push(a);
                    v = w;
                    advanced = true;
                    break;
                }
                cursor[v] += 1;
            }
            if !advanced {
                // Dead end: retreat and skip the arc that led here.
                let Some(a) = path.pop() else { return 0.0 };
                v = self.head[a ^ 1];
                cursor[v] += 1;
            }
        }
    }

    fn max_flow(&mut self, s: usize, t: usize) -> f64 {
        let scale = self.cap.iter().copied().fold(0.0, f64::max);
        let eps = scale * 1e-12;
        let mut total = 0.0;
        loop {
            let level = self.levels(s, eps);
            if level[t].is_none() {
                return total;
            }
            let mut cursor = vec![0; self.out.len()];
            loop {
                let pushed = self.augment(s, t, &level, &mut cursor, eps);
                if pushed <= eps {
                    break;
                }
                total += pushed;
            }
        }
    }
}

/// The most that can flow, one direction, over the links' nominal rates,
/// from the GPUs of ranks `from` to those of ranks `to` (bytes/s).
pub fn max_flow_bytes_per_s(topology: &Topology, from: &[u32], to: &[u32]) -> f64 {
    let n = topology.graph.node_count();
    let (s, t) = (n, n + 1);
    let mut r = Residual::new(n + 2);
    for e in topology.graph.edge_references() {
        r.add(e.source().index(), e.target().index(), e.weight().nominal_bytes_per_s);
    }
    // A GPU can send (receive) no more than its links out (in) carry.
    let bound = |rank: u32, dir: Direction| -> f64 {
        topology.graph.edges_directed(topology.gpu(rank), dir).map(|e| e.weight().nominal_bytes_per_s).sum()
    };
    for &rank in from {
        r.add(s, topology.gpu(rank).index(), bound(rank, Direction::Outgoing));
    }
    for &rank in to {
        r.add(topology.gpu(rank).index(), t, bound(rank, Direction::Incoming));
    }
    r.max_flow(s, t)
}

/// The bisection of the graph as the maximum flow from the first half of
/// the ranks (`0 .. gpus / 2`) to the second, over the links' nominal
/// rates: the real cut of a written-out fabric, with its oversubscribed
/// tiers. `network_only` leaves NVLink edges out (the scale-out bisection
/// of a multi-node graph).
pub fn rank_halves_bytes_per_s(topology: &Topology, network_only: bool) -> f64 {
    let gpus = topology.gpu_count();
    let half = gpus / 2;
    if half == 0 {
        return 0.0;
    }
    let (from, to): (Vec<u32>, Vec<u32>) = ((0..half).collect(), (gpus - half..gpus).collect());
    if !network_only {
        return max_flow_bytes_per_s(topology, &from, &to);
    }
    let mut g = topology.clone();
    g.graph.retain_edges(|g, e| g[e].kind != crate::topology::LinkKind::NvLink);
    // `retain_edges` keeps the vertices (and so the rank -> vertex map).
    max_flow_bytes_per_s(&g, &from, &to)
}
