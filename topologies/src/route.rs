//! Routing: shortest paths (in hops) with seeded ECMP among equal-cost next hops.
//!
//! `Router::new` runs one breadth-first search per destination GPU over the
//! reversed graph and keeps, for every (vertex, destination GPU), the set of
//! out-edges that lie on a shortest path: a range of the vertex's out-edges
//! sorted by (target kind, target index), which is contiguous in every preset
//! fabric (all up-links of a leaf, or the one down-link), with a fallback list
//! for sets that are not. `route` then walks from the source, picking at each
//! hop one edge of the set by a hash of (seed, src, dst, flow_key, hop): no
//! search and no allocation per route.
//!
//! Among paths of equal hop count the router prefers those through fewer
//! intermediate GPUs (GPUs forward only where the fabric leaves no other
//! shortest path, e.g. across planes of a multi-plane fat-tree; in a
//! rail-optimised fabric a cross-rail flow takes a spine rather than NVLink).
//!
//! Memory: 2 bytes per (vertex, GPU) while every vertex has under 255
//! out-edges, else 4 — about 73 MB for 512 H800 nodes on a rail-optimised
//! fabric (4,096 GPUs, 8,864 vertices).

use std::collections::HashMap;

use petgraph::graph::EdgeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use rayon::prelude::*;

use crate::topology::{NodeKind, Topology};

/// The next-hop table: u16 codes when every vertex has at most 254
/// out-edges (every preset up to 2,032 leaves per spine), else u32.
enum Codes {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

/// One next-hop set: `start | len << BITS/2` into the vertex's sorted
/// out-edges; len 0 and start 0: none (the vertex is the destination or
/// cannot reach it); len 0 and start `MAX_FIELD`: look the set up in
/// `extra_sets`.
trait Code: Copy + Default + PartialEq + Send + Sync {
    const MAX_FIELD: u32;
    fn to_u32(self) -> u32;
    fn pack(start: u32, len: u32) -> Self;
    fn unpack(self) -> (u32, u32);
}

impl Code for u16 {
    const MAX_FIELD: u32 = 0xFF;
    fn to_u32(self) -> u32 {
        u32::from(self)
    }
    fn pack(start: u32, len: u32) -> u16 {
        (start | len << 8) as u16
    }
    fn unpack(self) -> (u32, u32) {
        (u32::from(self) & 0xFF, u32::from(self) >> 8)
    }
}

impl Code for u32 {
    const MAX_FIELD: u32 = 0xFFFF;
    fn to_u32(self) -> u32 {
        self
    }
    fn pack(start: u32, len: u32) -> u32 {
        start | len << 16
    }
    fn unpack(self) -> (u32, u32) {
        (self & 0xFFFF, self >> 16)
    }
}
/// Where [`Router::walk`] puts the links it walks.
trait PushLink {
    fn push_link(&mut self, e: EdgeIndex);
}

impl PushLink for Vec<EdgeIndex> {
    fn push_link(&mut self, e: EdgeIndex) {
        self.push(e);
    }
}

/// The first link only ([`Router::first_hop`]).
struct FirstLink(Option<EdgeIndex>);

impl PushLink for FirstLink {
    fn push_link(&mut self, e: EdgeIndex) {
        self.0.get_or_insert(e);
    }
}

/// Destinations computed together, so the vertex-major table is written a
/// cache line at a time.
const BLOCK: usize = 16;

/// Precomputed routing state for one topology.
pub struct Router {
    /// The seed, mixed once (every route's hash starts from it).
    seed_mix: u64,
    /// GPUs (= destinations), the row length of `codes`.
    gpus: usize,
    gpu_vertex: Vec<u32>,
    /// Out-edges in CSR form, each vertex's sorted by (target kind, target).
    offsets: Vec<u32>,
    edges: Vec<u32>,
    targets: Vec<u32>,
    /// `codes[row_of[v] * gpus + dst]`: next-hop set of vertex v towards GPU
    /// dst, a range of v's out-edges (see [`Code`]). Identical rows are
    /// stored once (e.g. all spines of a plane share one), which keeps the
    /// rows a route touches in cache.
    codes: Codes,
    row_of: Vec<u32>,
    /// Sets that are not a range: (v * gpus + dst, start, len) sorted by
    /// key; (start, len) index `extra_positions`, which hold positions
    /// relative to the vertex's first out-edge.
    extra_sets: Vec<(u64, u32, u32)>,
    extra_positions: Vec<u32>,
    edge_count: usize,
}

/// Adjacency the table filling reads.
struct Lists<'a> {
    is_gpu: &'a [bool],
    rev_offsets: &'a [u32],
    rev_sources: &'a [u32],
}

fn kind_order(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::Gpu { .. } => 0,
        NodeKind::NvSwitch { .. } => 1,
        NodeKind::Nic { .. } => 2,
        NodeKind::Leaf { .. } => 3,
        NodeKind::Spine { .. } => 4,
        NodeKind::Core { .. } => 5,
        NodeKind::Switch { tier, .. } => 6u32.saturating_add(*tier).min(255) as u8,
    }
}

/// Stores each distinct row of `codes` (rows of `len` codes) once: returns
/// the compacted table and the row of each vertex, numbered in vertex order.
fn dedup_rows<C: Code>(mut codes: Vec<C>, len: usize) -> (Vec<C>, Vec<u32>) {
    if len == 0 {
        return (codes, Vec::new());
    }
    let rows = codes.len() / len;
    let mut row_of = Vec::with_capacity(rows);
    let mut by_hash: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut kept = 0usize;
    for v in 0..rows {
        let row = &codes[v * len..(v + 1) * len];
        // Four codes per mix: a shorter dependency chain (any hash will do;
        // rows are compared before they are shared).
        let hash =
            row.chunks(4).fold(GOLDEN, |h, c| mix(h ^ c.iter().fold(0u64, |w, x| w << 16 ^ u64::from(x.to_u32()))));
        let same = by_hash
            .get(&hash)
            .and_then(|ids| ids.iter().copied().find(|&id| &codes[id as usize * len..(id as usize + 1) * len] == row));
        match same {
            Some(id) => row_of.push(id),
            None => {
                codes.copy_within(v * len..(v + 1) * len, kept * len);
                by_hash.entry(hash).or_default().push(kept as u32);
                row_of.push(kept as u32);
                kept += 1;
            }
        }
    }
    codes.truncate(kept * len);
    codes.shrink_to_fit();
    (codes, row_of)
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Router {
    pub fn new(topology: &Topology, seed: u64) -> Router {
        let graph = &topology.graph;
        let n = graph.node_count();
        let gpus = topology.gpus.len();
        let gpu_vertex: Vec<u32> = topology.gpus.iter().map(|v| v.index() as u32).collect();
        let is_gpu: Vec<bool> = graph.node_weights().map(|k| matches!(k, NodeKind::Gpu { .. })).collect();

        // Out-edges, sorted per vertex.
        let mut offsets = Vec::with_capacity(n + 1);
        let mut edges = Vec::with_capacity(graph.edge_count());
        let mut targets = Vec::with_capacity(graph.edge_count());
        let mut scratch: Vec<(u8, u32, u32)> = Vec::new();
        offsets.push(0u32);
        for v in graph.node_indices() {
            scratch.clear();
            scratch.extend(
                graph
                    .edges_directed(v, Direction::Outgoing)
                    .map(|e| (kind_order(&graph[e.target()]), e.target().index() as u32, e.id().index() as u32)),
            );
            scratch.sort_unstable();
            for &(_, t, e) in &scratch {
                targets.push(t);
                edges.push(e);
            }
            offsets.push(edges.len() as u32);
        }
        // In-neighbours (sources of in-edges), CSR.
        let mut rev_offsets = vec![0u32; n + 1];
        for &t in &targets {
            rev_offsets[t as usize + 1] += 1;
        }
        for i in 0..n {
            rev_offsets[i + 1] += rev_offsets[i];
        }
        let mut fill = rev_offsets.clone();
        let mut rev_sources = vec![0u32; targets.len()];
        for v in 0..n {
            for &t in &targets[offsets[v] as usize..offsets[v + 1] as usize] {
                rev_sources[fill[t as usize] as usize] = v as u32;
                fill[t as usize] += 1;
            }
        }

        let max_degree = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let mut router = Router {
            seed_mix: mix(seed ^ GOLDEN),
            gpus,
            gpu_vertex,
            offsets,
            edges,
            targets,
            codes: Codes::Narrow(Vec::new()),
            row_of: Vec::new(),
            extra_sets: Vec::new(),
            extra_positions: Vec::new(),
            edge_count: graph.edge_count(),
        };
        let lists = Lists { is_gpu: &is_gpu, rev_offsets: &rev_offsets, rev_sources: &rev_sources };
        router.codes = if max_degree < u16::MAX_FIELD {
            Codes::Narrow(router.fill::<u16>(&lists))
        } else {
            Codes::Wide(router.fill::<u32>(&lists))
        };
        router.extra_sets.sort_unstable();
        router
    }

    /// One reverse BFS per destination, then the next-hop sets. The
    /// destinations of a block are searched on rayon's threads, each into
    /// its own row, and stored in destination order (the same table at any
    /// thread count).
    fn fill<C: Code>(&mut self, lists: &Lists) -> Vec<C> {
        let n = self.offsets.len() - 1;
        let gpus = self.gpus;
        let mut codes = vec![C::default(); n * gpus];
        let mut block = vec![C::default(); BLOCK * n];
        // Per destination of the block: its sets that are not a range, as
        // (key, positions).
        let mut extras: Vec<Vec<(u64, Vec<u32>)>> = vec![Vec::new(); BLOCK];
        for d0 in (0..gpus).step_by(BLOCK) {
            let count = BLOCK.min(gpus - d0);
            let this = &*self;
            block[..count * n].par_chunks_mut(n).zip(extras[..count].par_iter_mut()).enumerate().for_each_init(
                || (vec![u16::MAX; n], vec![0u16; n], Vec::with_capacity(n)),
                |(hop, transits, queue), (b, (row, extra))| {
                    extra.clear();
                    this.destination_row(lists, d0 + b, row, hop, transits, queue, extra);
                },
            );
            for extra in &extras[..count] {
                for (key, positions) in extra {
                    let start = self.extra_positions.len() as u32;
                    self.extra_positions.extend_from_slice(positions);
                    self.extra_sets.push((*key, start, positions.len() as u32));
                }
            }
            for v in 0..n {
                let dst_row = &mut codes[v * gpus + d0..v * gpus + d0 + count];
                for (b, code) in dst_row.iter_mut().enumerate() {
                    *code = block[b * n + v];
                }
            }
        }
        let (codes, row_of) = dedup_rows(codes, gpus);
        self.row_of = row_of;
        codes
    }

    /// The next-hop sets of every vertex towards GPU `d` (`row`, by
    /// vertex), sets that are not a range in `extra`.
    #[allow(clippy::too_many_arguments)]
    fn destination_row<C: Code>(
        &self,
        lists: &Lists,
        d: usize,
        row: &mut [C],
        hop: &mut [u16],
        transits: &mut [u16],
        queue: &mut Vec<u32>,
        extra: &mut Vec<(u64, Vec<u32>)>,
    ) {
        let gpus = self.gpus;
        let is_gpu = lists.is_gpu;
        row.fill(C::default());
        let t = self.gpu_vertex[d] as usize;
        // Reverse BFS by layers: hop count to t, then fewest
        // intermediate GPUs among shortest paths.
        hop.fill(u16::MAX);
        queue.clear();
        hop[t] = 0;
        transits[t] = 0;
        queue.push(t as u32);
        let mut head = 0;
        while head < queue.len() {
            let w = queue[head] as usize;
            head += 1;
            let via = transits[w] + u16::from(is_gpu[w] && w != t);
            let h = hop[w].saturating_add(1);
            let sources = &lists.rev_sources[lists.rev_offsets[w] as usize..lists.rev_offsets[w + 1] as usize];
            for &v in sources {
                let v = v as usize;
                if hop[v] == u16::MAX {
                    hop[v] = h;
                    transits[v] = via;
                    queue.push(v as u32);
                } else if hop[v] == h && via < transits[v] {
                    transits[v] = via;
                }
            }
        }
        // Next-hop sets: out-edges to a vertex one hop closer with
        // the fewest intermediate GPUs.
        let on_path = |v: usize, w: usize| {
            hop[w] != u16::MAX && hop[w] + 1 == hop[v] && transits[w] + u16::from(is_gpu[w] && w != t) == transits[v]
        };
        for &v in &queue[1..] {
            let v = v as usize;
            let lo = self.offsets[v] as usize;
            let hi = self.offsets[v + 1] as usize;
            let (mut first, mut last, mut len) = (u32::MAX, 0u32, 0u32);
            for (i, &w) in self.targets[lo..hi].iter().enumerate() {
                if on_path(v, w as usize) {
                    first = first.min(i as u32);
                    last = i as u32;
                    len += 1;
                }
            }
            row[v] = if len == last - first + 1 && first < C::MAX_FIELD && len <= C::MAX_FIELD {
                C::pack(first, len)
            } else {
                let positions = self.targets[lo..hi]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &w)| on_path(v, w as usize))
                    .map(|(i, _)| i as u32)
                    .collect();
                extra.push(((v * gpus + d) as u64, positions));
                C::pack(C::MAX_FIELD, 0)
            };
        }
    }

    /// Bytes held by the routing tables.
    pub fn memory_bytes(&self) -> usize {
        let codes = match &self.codes {
            Codes::Narrow(c) => 2 * c.len(),
            Codes::Wide(c) => 4 * c.len(),
        };
        codes
            + 4 * (self.offsets.len() + self.edges.len() + self.targets.len() + self.extra_positions.len())
            + 16 * self.extra_sets.len()
            + 4 * (self.gpu_vertex.len() + self.row_of.len())
    }

    /// Appends to `out` the directed links of a shortest path from GPU rank
    /// `src` to GPU rank `dst`; among equal-cost choices picks by a hash of
    /// (seed, src, dst, `flow_key`), so one (src, dst) pair can spread flows.
    /// `src == dst` gives an empty path.
    ///
    /// Panics if `topology` is not the one the router was built from or if
    /// `dst` cannot be reached from `src` (`build` rejects such graphs; check
    /// a hand-built one with [`Topology::check_connected`]).
    pub fn route(&self, topology: &Topology, src: u32, dst: u32, flow_key: u64, out: &mut Vec<EdgeIndex>) {
        assert_eq!(topology.graph.edge_count(), self.edge_count, "router used with another topology");
        if src == dst {
            return;
        }
        let base = mix(self.seed_mix ^ (u64::from(src) << 32 | u64::from(dst))) ^ mix(flow_key.wrapping_add(GOLDEN));
        match &self.codes {
            Codes::Narrow(codes) => self.walk(codes, src, dst, base, usize::MAX, out),
            Codes::Wide(codes) => self.walk(codes, src, dst, base, usize::MAX, out),
        }
    }

    /// The first link of [`Router::route`]'s path (the same ECMP choice,
    /// without walking the rest); `None` for `src == dst`. Panics as
    /// `route` does.
    pub fn first_hop(&self, topology: &Topology, src: u32, dst: u32, flow_key: u64) -> Option<EdgeIndex> {
        assert_eq!(topology.graph.edge_count(), self.edge_count, "router used with another topology");
        if src == dst {
            return None;
        }
        let base = mix(self.seed_mix ^ (u64::from(src) << 32 | u64::from(dst))) ^ mix(flow_key.wrapping_add(GOLDEN));
        // At most one link: on the stack (this runs once per member flow).
        let mut out = FirstLink(None);
        match &self.codes {
            Codes::Narrow(codes) => self.walk(codes, src, dst, base, 1, &mut out),
            Codes::Wide(codes) => self.walk(codes, src, dst, base, 1, &mut out),
        }
        out.0
    }

    /// Walks from `src` towards `dst`, at most `hops` links.
    fn walk<C: Code>(&self, codes: &[C], src: u32, dst: u32, base: u64, hops: usize, out: &mut impl PushLink) {
        let d = dst as usize;
        let target = self.gpu_vertex[d];
        let mut v = self.gpu_vertex[src as usize];
        let mut step = 0u64;
        let mut walked = 0;
        while v != target && walked < hops {
            walked += 1;
            let key = v as usize * self.gpus + d;
            let (start, len) = codes[self.row_of[v as usize] as usize * self.gpus + d].unpack();
            let extra = len == 0 && start == C::MAX_FIELD;
            let (start, len) = if extra {
                let i = self.extra_sets.partition_point(|s| s.0 < key as u64);
                (self.extra_sets[i].1, self.extra_sets[i].2)
            } else {
                (start, len)
            };
            assert!(len > 0, "no route from rank {src} to rank {dst}: the topology is disconnected");
            let pick = if len == 1 {
                0
            } else {
                step += 1;
                let h = mix(base.wrapping_add(step.wrapping_mul(GOLDEN)));
                ((u128::from(h) * u128::from(len)) >> 64) as u32
            };
            let rel = if extra { self.extra_positions[(start + pick) as usize] } else { start + pick };
            let pos = (self.offsets[v as usize] + rel) as usize;
            out.push_link(EdgeIndex::new(self.edges[pos] as usize));
            v = self.targets[pos];
        }
    }
}
