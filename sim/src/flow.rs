//! The fluid network: flows share directed links max-min fairly.
//!
//! Flows that share a link, transitively, form a component; each link belongs
//! to at most one. Within a component, flows that were given the same rate at
//! the same time with the same bytes left form a *run*: they share one state
//! (bytes left per flow as of `since`, rate, completion time) and finish
//! together. An all-to-all of 16.8M equal flows has about 11.5k runs, so
//! per-flow state is a run id, and the solver's pending completions are runs in
//! buckets in a binary heap keyed by (time, sequence number) (`DueQueue`), so
//! runs due at one time finish in the order they were queued (stale entries are
//! recognised by the run's current `due`); a bucket of one run, as most are,
//! is the heap entry itself. The solver hands the engine one
//! pending completion at a time (stale ones are recognised by a generation).
//!
//! When flows start, [`FlowSolver::recompute`] (once per timestamp) gathers
//! the flows of every component the new flows touch plus the new flows,
//! and, in one pass over their paths, numbers the links they cross, joins
//! them into connected components with a union-find over links and builds a
//! link -> flow incidence (per link a delta-encoded list: about 9 bytes per
//! all-to-all flow); then it water-fills. Paths are read from the caller
//! ([`FlowPaths`]) while flows start and while a water-filling runs; as a
//! flow freezes, its path is copied into its component beside it, in run
//! order (`Component::hops`), so finishing a run, or taking re-filled runs
//! off their links, reads one contiguous stretch instead of millions of
//! paths scattered where their flows were routed (in the 4,096-GPU
//! all-to-all that lookup was a third of the run; the copy costs about 32
//! bytes per active flow).
//!
//! When flows only finish, components are not split and most rates stay:
//! progressive filling without the finished flows runs exactly as before up
//! to the lowest rate `s` of a finished flow (no link they cross saturated
//! below `s`), so flows with a rate below `s` keep it, and only the others
//! are re-filled over the capacity the kept ones leave (per-link loads are
//! kept incrementally). Each component keeps its runs sorted by rate (the
//! filling freezes them in order of rising level), so the re-filled set is a
//! suffix found by binary search. In an all-to-all, finishing flows are the
//! fastest ones and nothing else needs re-filling.
//! A run whose flows are all re-filled together at the rate they had keeps
//! its id, its due time and its queued completion (`Run::kept`): in an
//! every-rank training step about 4 in 10 re-filled flows are such runs, and
//! queuing them again left the due queue mostly stale entries.
//!
//! Water-filling (progressive filling) uses a lazy min-queue of links keyed by
//! their fair share `capacity_left / unfrozen_flows`: a link's share only grows
//! as flows elsewhere freeze, so an out-of-date key is pushed back, and a
//! current one is a bottleneck (the queue, `LevelQueue`, sorts the first keys
//! at once and heaps only the pushed-back ones; it stops when every flow
//! froze). All links saturating at that level freeze their unfrozen flows
//! together (a *batch*), either through the incidence or, when they hold many
//! flows, in one sequential pass over the flows not frozen as of the previous
//! such pass (a list compacted by each pass, so a pass costs at most twice the
//! incidence walk it replaces: with one pass over all flows per level, a
//! multi-plane fat-tree all-to-all, whose ECMP imbalance gives thousands of
//! levels, cost O(levels x flows), about N^3). Each batch becomes one run per
//! (component, origin run). Cost: O(sum of path lengths x log links) per
//! recompute.
//!
//! Most recomputes are small: in an every-rank training step each DeepEP
//! exchange is about 900 flows that finish one by one, and each completion
//! re-fills about 100 flows over about 200 links (in about 16 levels). Their
//! fixed costs are kept off whole-size structures: the incidence of a recompute
//! of at most 65,536 flows is flat (`Incidence::flat`, no 256-byte block per
//! link), the block pool is reused without zeroing, small mixed batches are
//! grouped by a comparison sort instead of counting sorts indexed by run id,
//! and completions queue in reused buckets (no map search or allocation per
//! run). The every-rank DeepSeek-V3 step on 256 GPUs (837k recomputes)
//! takes about 36 us of CPU per recompute, run included, on the 2-core
//! development machine (2.8-2.9M flows re-rated per second; 44-47 us and
//! 2.2-2.4M before). The solver counts the flows it starts and the flows its
//! water-fillings rate ([`FlowSolver::flows_rerated`]): one event can finish
//! millions of flows, so events/s alone says little of its work.
//!
//! A flow may stand for `w` identical member flows on one path
//! ([`FlowPaths::flow_weight`], from `TaskGraph::add_weighted_comm`): its
//! bytes and rate are a member's, and it loads each link it crosses with
//! `w` x its rate. Progressive filling freezes identical flows together, so
//! one flow of weight `w` gets exactly the rate, and finishes exactly when,
//! `w` separate ones would: the filling counts a link's unfrozen *members*
//! (the incidence sums weights beside its flow count) and takes `w` x the
//! level off each link a frozen flow crosses; link loads and member counts
//! (`LinkLive`) move by `w` x the rate and `w`. A caller without weights
//! reads no weight (the trait's default is the constant 1, and
//! `TaskGraph` keeps its weights in a side vector that stays empty until a
//! weighted flow is added), and `x * 1.0` is `x`, so unweighted runs give
//! the same bits as before. Weights are u32 and a link's members are
//! counted in a u32.
//!
//! Rates are f64 bytes per picosecond; completion times are rounded up to
//! whole picoseconds with [`ceil_ps`], and a flow with less than
//! [`DONE_BYTES`] left counts as finished, so rounding never livelocks a run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::graph::TaskGraph;
use crate::platform::{LinkId, Platform};
use crate::result::{LinkSample, LinkStats};
use crate::series::{SeriesRecorder, LINK_SERIES_BUDGET_BYTES};
use crate::time::PS_PER_S;

/// A flow with fewer bytes left than this is finished.
pub const DONE_BYTES: f64 = 1e-6;

const NONE: u32 = u32::MAX;
/// `run_of` of a flow never started.
const IDLE: u32 = u32::MAX;

/// Rounds a duration in picoseconds up to a whole picosecond; a value within
/// a relative 1e-9 of an integer snaps to it (so `1 / (1 / c)` gives `c`).
/// Non-positive and NaN inputs give 0, values beyond the range saturate.
pub fn ceil_ps(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    if x >= 1.8e19 {
        return u64::MAX;
    }
    let r = x.round();
    if (x - r).abs() <= 1e-9 * x.max(1.0) {
        r as u64
    } else {
        x.ceil() as u64
    }
}

/// Where the solver finds a flow's path: the flow index is the caller's.
pub trait FlowPaths {
    fn flow_path(&self, flow: u32) -> &[LinkId];

    /// The first step of looking a path up when it takes two dependent reads
    /// (the flow's path id, then the path): [`with_paths`] does this step
    /// for a whole chunk of flows before the second.
    fn path_key(&self, flow: u32) -> u32 {
        flow
    }

    /// The path of `flow` given its [`FlowPaths::path_key`].
    fn path_by_key(&self, flow: u32, _key: u32) -> &[LinkId] {
        self.flow_path(flow)
    }

    /// How many identical member flows `flow` stands for (see the module
    /// doc): 1 unless the caller weights flows.
    #[inline]
    fn flow_weight(&self, _flow: u32) -> u32 {
        1
    }

    /// Whether any flow may have a weight other than 1 (lets the solver
    /// keep its per-run sweeps where none has).
    #[inline]
    fn has_weights(&self) -> bool {
        false
    }
}

impl FlowPaths for TaskGraph {
    fn flow_path(&self, flow: u32) -> &[LinkId] {
        self.path(self.flow_path_id(flow))
    }

    fn path_key(&self, flow: u32) -> u32 {
        self.flow_path_id(flow).0
    }

    fn path_by_key(&self, _flow: u32, key: u32) -> &[LinkId] {
        self.path(crate::graph::PathId(key))
    }

    #[inline]
    fn flow_weight(&self, flow: u32) -> u32 {
        TaskGraph::flow_weight(self, flow)
    }

    #[inline]
    fn has_weights(&self) -> bool {
        TaskGraph::has_flow_weights(self)
    }
}

impl FlowPaths for Vec<Vec<LinkId>> {
    fn flow_path(&self, flow: u32) -> &[LinkId] {
        &self[flow as usize]
    }
}

/// Paths looked up together by [`with_paths`].
const PATH_CHUNK: usize = 32;

/// Calls `visit` with each flow of `flows` and its path, in order. The paths
/// of a chunk are looked up (and their first and last links read) before any
/// is visited, so the cache misses of scattered flows overlap instead of each
/// waiting behind the data-dependent loop of the one before.
pub fn with_paths<'p, P: FlowPaths + ?Sized>(paths: &'p P, flows: &[u32], mut visit: impl FnMut(u32, &'p [LinkId])) {
    let mut buf: [&'p [LinkId]; PATH_CHUNK] = [&[]; PATH_CHUNK];
    let mut keys = [0u32; PATH_CHUNK];
    for chunk in flows.chunks(PATH_CHUNK) {
        for (key, &f) in keys.iter_mut().zip(chunk) {
            *key = paths.path_key(f);
        }
        for ((slot, &key), &f) in buf.iter_mut().zip(&keys).zip(chunk) {
            *slot = paths.path_by_key(f, key);
        }
        let mut touch = 0u32;
        for p in &buf[..chunk.len()] {
            if let (Some(a), Some(b)) = (p.first(), p.last()) {
                touch ^= a.0 ^ b.0;
            }
        }
        std::hint::black_box(touch);
        for (&p, &f) in buf.iter().zip(chunk) {
            visit(f, p);
        }
    }
}

/// A component's next completion, to be put in the caller's event queue and
/// handed back to [`FlowSolver::complete_due`] when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowDue {
    /// Picoseconds.
    pub time: u64,
    pub comp: u32,
    pub gen: u32,
}

/// What changes on a link as flows come and go (together: one cache line
/// per link a finishing flow crosses).
#[derive(Debug, Clone, Copy, Default)]
struct LinkLive {
    /// Current aggregate rate, bytes per picosecond, maintained incrementally.
    load: f64,
    /// Active member flows crossing the link (a flow of weight w counts w).
    n: u32,
    /// The link is in `dirty_links`.
    dirty: bool,
}

/// Flows of one component with one shared state; see the module doc.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Bytes left per flow as of `since`.
    remaining: f64,
    /// Bytes per picosecond, per flow.
    rate: f64,
    since: u64,
    /// When its flows started (they started together).
    born: u64,
    /// Completion time (u64::MAX if none, or if the run is finished or free).
    due: u64,
    comp: u32,
    /// The run's flows: `comps[comp].flows[start..end]`.
    start: u32,
    end: u32,
    /// Finished (its flows are done), free, or *pending*: flows started
    /// since the last recompute with these bytes (no rate yet, no component).
    finished: bool,
    /// Re-filled whole at its old rate by the recompute under way, so it
    /// stays (its flows, rate and queued completion) instead of being freed
    /// with the other origins ([`FlowSolver::free_origins`]).
    kept: bool,
}

impl Run {
    const FREE: Run = Run {
        remaining: 0.0,
        rate: 0.0,
        since: 0,
        born: 0,
        due: u64::MAX,
        comp: NONE,
        start: 0,
        end: 0,
        finished: true,
        kept: false,
    };

    /// The completion time if the rate were set at `self.since`.
    fn completion(&self) -> u64 {
        let dt = if self.remaining < DONE_BYTES {
            0
        } else if self.rate > 0.0 {
            ceil_ps(self.remaining / self.rate)
        } else {
            u64::MAX
        };
        if dt == u64::MAX {
            u64::MAX
        } else {
            self.since.saturating_add(dt)
        }
    }

    /// Whether its bytes are all sent by `now` (up to rounding).
    fn sent_by(&self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.since);
        let (rem, rate) = (self.remaining, self.rate);
        rem < DONE_BYTES
            || (rate > 0.0 && (ceil_ps(rem / rate) <= elapsed || rem - rate * (elapsed as f64) < DONE_BYTES))
    }

    /// Brings the bytes left up to `now`.
    fn advance(&mut self, now: u64) {
        let dt = now.saturating_sub(self.since) as f64;
        self.remaining = (self.remaining - self.rate * dt).max(0.0);
        self.since = now;
    }
}

#[derive(Debug, Default)]
struct Component {
    /// The component's flows run by run, runs in `runs` order; flows of
    /// runs finished since the last recompute are still listed.
    flows: Vec<u32>,
    /// Run ids sorted by rate (ascending).
    runs: Vec<u32>,
    links: Vec<u32>,
    /// The links of the flows' paths, flow by flow in `flows` order, copied
    /// as the flows froze: finishing a run reads them in one sweep instead
    /// of looking each path up where its flow was routed (a cache and TLB
    /// miss or two per flow when millions of flows finish in rate order).
    hops: Vec<LinkId>,
    /// Per entry of `flows`: where its path ends in `hops` (it starts where
    /// the previous entry's ends).
    hop_end: Vec<u32>,
    /// Lowest rate of a run of this component finished since the last
    /// recompute (infinite if none).
    removed_min: f64,
    touched: bool,
    retired: bool,
}

impl Component {
    /// Where the path of `flows[k]` starts in `hops`.
    fn hop_start(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            self.hop_end[k - 1] as usize
        }
    }

    /// Empties the flows and their paths.
    fn clear_flows(&mut self) {
        self.flows.clear();
        self.hops.clear();
        self.hop_end.clear();
    }

    /// Keeps the first `k` flows and their paths.
    fn truncate_flows(&mut self, k: usize) {
        let h = self.hop_start(k);
        self.flows.truncate(k);
        self.hops.truncate(h);
        self.hop_end.truncate(k);
    }
}

/// Max-min fair fluid flows over directed links; see the module doc.
#[derive(Debug)]
pub struct FlowSolver {
    /// Capacity, bytes per picosecond.
    link_cap: Vec<f64>,
    /// The component whose flows cross the link, if any.
    link_comp: Vec<u32>,
    /// Scratch, per link: its index among the links of a recompute.
    link_local: Vec<u32>,
    /// Current aggregate rate as reported (and recorded in the stats).
    link_agg: Vec<f64>,
    /// Per link: load, active flows, dirty flag.
    link_live: Vec<LinkLive>,
    dirty_links: Vec<u32>,
    link_changed_at: Vec<u64>,
    link_stats: Vec<LinkStats>,
    /// Each link's throughput history, if recorded.
    link_series: Option<SeriesRecorder>,
    /// Per flow: its run (possibly pending), or [`IDLE`] if never started.
    /// Only valid while the flow is active: a finished flow keeps its entry.
    run_of: Vec<u32>,
    runs: Vec<Run>,
    free_runs: Vec<u32>,
    /// Runs neither finished nor free.
    live_runs: usize,
    comps: Vec<Component>,
    free_comps: Vec<u32>,
    retired: Vec<u32>,
    touched: Vec<u32>,
    /// Flows started since the last recompute, and their pending runs (one
    /// per stretch of equal bytes).
    new_flows: Vec<u32>,
    new_runs: Vec<u32>,
    /// Bit per flow, all clear between recomputes: frozen by the water-filling.
    frozen: Vec<u64>,
    /// Pending completions: runs by completion time, at one time in the
    /// order they were queued; an entry is current when the run is live and
    /// its `due` equals the time.
    dues: DueQueue,
    /// The completion handed out last, if still pending, and its generation.
    scheduled: Option<u64>,
    gen: u32,
    resched: bool,
    scratch: Scratch,
    /// Recomputes of at most this many flows build a flat incidence
    /// ([`FLAT_FLOWS`]; tests lower it to check the blocks against it).
    flat_flows: usize,
    recomputes: u64,
    /// Flows given a rate by a water-filling (new or re-rated), in all.
    rerated: u64,
    /// Flows started, in all.
    started: u64,
    /// Relative tolerance on a flow's finish time: at a completion, runs due
    /// within this fraction of their flows' duration finish with it
    /// ([`FlowSolver::set_finish_tolerance`]; 0: exact).
    tolerance: f64,
    /// Flows finished early by that tolerance, in all.
    finished_early: u64,
}

/// Buffers reused by every recompute: the flows being recomputed and the
/// runs they came from, the links they cross (local link index), union-find
/// parents and component labels of the local links, the link -> flow
/// incidence, and the water-filling state.
#[derive(Debug, Default)]
struct Scratch {
    flows: Vec<u32>,
    /// The runs (old or pending) the gathered flows belong to, freed once
    /// the new runs are made.
    origins: Vec<u32>,
    links: Vec<u32>,
    parent: Vec<u32>,
    root_label: Vec<u32>,
    link_label: Vec<u32>,
    /// Component id of each label.
    label_comp: Vec<u32>,
    old_links: Vec<u32>,
    inc: Incidence,
    /// A small recompute's local link per hop, flow by flow, and where each
    /// flow's hops end (see [`FlowSolver::localise`]).
    hop_ll: Vec<u32>,
    hop_ll_end: Vec<u32>,
    cap0: Vec<f64>,
    /// Per local link during the filling: capacity left and unfrozen flows
    /// (together: one cache line per link touched).
    left: Vec<(f64, u32)>,
    sat: Vec<bool>,
    /// Links saturating at the current level.
    batch: Vec<u32>,
    /// Flows frozen at the current level, in freeze order, and (with more
    /// than one component) their component labels.
    batch_flows: Vec<u32>,
    batch_labels: Vec<u32>,
    /// The paths of `batch_flows`, one after another, and where each ends.
    batch_hops: Vec<LinkId>,
    batch_hop_end: Vec<u32>,
    /// (label, origin run, index in the batch) of a mixed batch, to group
    /// it, with [`group_stable`]'s buffers.
    group: Vec<(u32, u32, u32)>,
    group_tmp: Vec<(u32, u32, u32)>,
    key_count: Vec<u32>,
    keys: Vec<u32>,
    heap: LevelQueue,
    /// The water-filling's flows not yet frozen as of its last sequential
    /// pass.
    live: Vec<u32>,
}

/// Pending completions: buckets of runs in a binary heap by (time, sequence
/// number). A run due at the time of the bucket opened last joins it,
/// otherwise it opens a bucket; so runs due at one time come out in the
/// order they were queued (a bucket holds a stretch of them, and buckets of
/// one time come out in the order they were opened), and many runs due at
/// once (an all-to-all's) cost one heap entry.
///
/// The bucket opened last stays out of the heap while runs may join it
/// (`open`, in one reused buffer). When the next bucket opens it goes in: a
/// bucket of one run, as 99 % of them are in an every-rank training step,
/// as the run id in the heap entry itself, a bigger one in a slot of
/// reused buffers. So queuing and finishing a lone run touch the heap and
/// the run, not a bucket's vector header and buffer as well (two cache
/// misses per run, most of them for stale entries).
#[derive(Debug, Default)]
struct DueQueue {
    /// Closed buckets: (time, sequence, [`DueQueue::SLOT`] | slot, or the
    /// run id of a bucket of one run).
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Per slot: a closed bucket's runs, in the order queued (empty when
    /// free).
    buckets: Vec<Vec<u32>>,
    free: Vec<u32>,
    seq: u64,
    /// The bucket opened last, while still queued: (time, sequence); its
    /// runs are `open_runs`.
    open: Option<(u64, u64)>,
    open_runs: Vec<u32>,
    /// Runs in all queued buckets, current or not.
    len: usize,
    /// [`FlowSolver::finish_early`]'s last refusal: (time, sequence, k)
    /// when the first k runs of that bucket passed and run k did not.
    /// Passing only gets easier as time goes on, and a run of the bucket
    /// turns current again only by being queued at its time, so the next
    /// check starts at run k; dropped when that bucket leaves the queue,
    /// when a run is queued at its time, and on [`DueQueue::retain`].
    refused: Option<(u64, u64, usize)>,
}

/// Where the first bucket of a [`DueQueue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BucketAt {
    /// The open bucket.
    Open,
    /// A closed bucket of one run, in its heap entry.
    One(u32),
    /// A closed bucket in a slot.
    Slot(u32),
}

/// A bucket taken off a [`DueQueue`]: its time, where it was, and its runs
/// (a buffer handed back with [`DueQueue::release`]; empty for a lone run,
/// which `at` holds).
struct TakenBucket {
    time: u64,
    at: BucketAt,
    runs: Vec<u32>,
}

impl TakenBucket {
    fn runs(&self) -> &[u32] {
        match &self.at {
            BucketAt::One(r) => std::slice::from_ref(r),
            _ => &self.runs,
        }
    }
}

impl DueQueue {
    /// Marks a heap entry's payload as a slot (run ids stay below it).
    const SLOT: u32 = 1 << 31;

    fn push(&mut self, t: u64, r: u32) {
        assert!(r < Self::SLOT, "run ids stay below the slot flag");
        self.len += 1;
        if self.refused.is_some_and(|(rt, _, _)| rt == t) {
            self.refused = None;
        }
        if self.open.is_some_and(|(ot, _)| ot == t) {
            self.open_runs.push(r);
            return;
        }
        self.close_open();
        self.open = Some((t, self.seq));
        self.seq += 1;
        self.open_runs.push(r);
    }

    /// Moves the open bucket, if any, into the heap.
    fn close_open(&mut self) {
        let Some((t, seq)) = self.open.take() else { return };
        let payload = if let [r] = self.open_runs[..] {
            self.open_runs.clear();
            r
        } else {
            let slot = self.free.pop().unwrap_or_else(|| {
                self.buckets.push(Vec::new());
                self.buckets.len() as u32 - 1
            });
            std::mem::swap(&mut self.buckets[slot as usize], &mut self.open_runs);
            Self::SLOT | slot
        };
        self.heap.push(Reverse((t, seq, payload)));
    }

    /// The earliest bucket: (time, sequence, where).
    fn first(&self) -> Option<(u64, u64, BucketAt)> {
        let top = self.heap.peek().map(|&Reverse((t, seq, p))| {
            (t, seq, if p & Self::SLOT != 0 { BucketAt::Slot(p & !Self::SLOT) } else { BucketAt::One(p) })
        });
        match (self.open, top) {
            (Some((ot, oseq)), Some(top)) if ot < top.0 => Some((ot, oseq, BucketAt::Open)),
            (Some((ot, oseq)), None) => Some((ot, oseq, BucketAt::Open)),
            (_, top) => top,
        }
    }

    /// The runs of the bucket at `at`, in the order queued.
    fn runs_at<'a>(&'a self, at: &'a BucketAt) -> &'a [u32] {
        match at {
            BucketAt::Open => &self.open_runs,
            BucketAt::One(r) => std::slice::from_ref(r),
            BucketAt::Slot(s) => &self.buckets[*s as usize],
        }
    }

    /// Takes the earliest bucket off the queue; the caller hands its
    /// buffer back with [`DueQueue::release`].
    fn take_first(&mut self) -> Option<TakenBucket> {
        let (time, seq, at) = self.first()?;
        if self.refused.is_some_and(|(rt, rs, _)| (rt, rs) == (time, seq)) {
            self.refused = None;
        }
        let runs = match at {
            BucketAt::Open => {
                self.open = None;
                std::mem::take(&mut self.open_runs)
            }
            BucketAt::One(_) => {
                self.heap.pop();
                Vec::new()
            }
            BucketAt::Slot(s) => {
                self.heap.pop();
                std::mem::take(&mut self.buckets[s as usize])
            }
        };
        let bucket = TakenBucket { time, at, runs };
        self.len -= bucket.runs().len();
        Some(bucket)
    }

    /// Hands a taken bucket's buffer back (and frees its slot).
    fn release(&mut self, bucket: TakenBucket) {
        let mut runs = bucket.runs;
        runs.clear();
        match bucket.at {
            BucketAt::Open => {
                if self.open_runs.capacity() < runs.capacity() {
                    self.open_runs = runs;
                }
            }
            BucketAt::One(_) => {}
            BucketAt::Slot(s) => {
                self.buckets[s as usize] = runs;
                self.free.push(s);
            }
        }
    }

    /// Drops the stale runs at the head of the queue (`current(time, run)`
    /// says which are not): lone runs and whole buckets with no current
    /// run leave it, and a bucket's stale runs at its end are dropped;
    /// returns the time of the first bucket left.
    fn drop_stale_head(&mut self, current: impl Fn(u64, u32) -> bool) -> Option<u64> {
        while let Some((t, _, at)) = self.first() {
            let v = match at {
                BucketAt::One(r) if current(t, r) => return Some(t),
                BucketAt::One(_) => None,
                BucketAt::Open => Some(&mut self.open_runs),
                BucketAt::Slot(s) => Some(&mut self.buckets[s as usize]),
            };
            if let Some(v) = v {
                while let Some(&r) = v.last() {
                    if current(t, r) {
                        return Some(t);
                    }
                    v.pop();
                    self.len -= 1;
                }
            }
            let bucket = self.take_first().expect("the first bucket");
            self.release(bucket);
        }
        None
    }

    /// Keeps the runs for which `keep(time, run)` holds.
    fn retain(&mut self, keep: impl Fn(u64, u32) -> bool) {
        // The open bucket closes, as a new bucket would open after a
        // pruning.
        self.close_open();
        let (buckets, free) = (&mut self.buckets, &mut self.free);
        let mut len = 0;
        self.heap.retain(|&Reverse((t, _, p))| {
            if p & Self::SLOT == 0 {
                let kept = keep(t, p);
                len += usize::from(kept);
                return kept;
            }
            let slot = p & !Self::SLOT;
            let v = &mut buckets[slot as usize];
            v.retain(|&r| keep(t, r));
            len += v.len();
            if v.is_empty() {
                free.push(slot);
            }
            !v.is_empty()
        });
        self.len = len;
        self.refused = None;
    }
}

/// The water-filling's lazy min-queue of (fair share as f64 bits, local
/// link): the links' first keys sorted at once, keys pushed later (a link's
/// share, re-read, that outgrew its key) in a binary heap; a pop takes the
/// smaller head. Entries are distinct (a link has at most one at a time), so
/// the pops come in the one order of (key, link), as from a single heap,
/// and sorting a few hundred keys costs less than heapifying and popping
/// them one by one. An entry is packed as `key << 32 | link` (the same
/// order), so the sort compares plain integers.
#[derive(Debug, Default)]
struct LevelQueue {
    /// Ascending; entries before `at` are popped.
    sorted: Vec<u128>,
    at: usize,
    heap: BinaryHeap<Reverse<u128>>,
}

fn pack(key: u64, ll: u32) -> u128 {
    (u128::from(key) << 32) | u128::from(ll)
}

fn unpack(e: u128) -> (u64, u32) {
    ((e >> 32) as u64, e as u32)
}

impl LevelQueue {
    fn clear(&mut self) {
        self.sorted.clear();
        self.at = 0;
        self.heap.clear();
    }

    fn add_first(&mut self, key: u64, ll: u32) {
        self.sorted.push(pack(key, ll));
    }

    fn sort(&mut self) {
        self.sorted.sort_unstable();
    }

    #[inline]
    fn peek(&self) -> Option<(u64, u32)> {
        let a = self.sorted.get(self.at).copied();
        let e = match (a, self.heap.peek()) {
            (Some(a), Some(&Reverse(b))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|r| r.0)),
        };
        e.map(unpack)
    }

    #[inline]
    fn pop(&mut self) -> Option<(u64, u32)> {
        let a = self.sorted.get(self.at).copied();
        let e = match (a, self.heap.peek()) {
            (Some(a), Some(&Reverse(b))) if b < a => {
                self.heap.pop();
                Some(b)
            }
            (Some(a), _) => {
                self.at += 1;
                Some(a)
            }
            (None, _) => self.heap.pop().map(|r| r.0),
        };
        e.map(unpack)
    }

    fn push(&mut self, key: u64, ll: u32) {
        self.heap.push(Reverse(pack(key, ll)));
    }
}

/// The local number of global link `link` in this recompute (`links` in
/// first-seen order): its number so far, or the next one, with a
/// union-find node of its own in `parent`, on first sight; and whether it
/// is new.
fn number_link(link_local: &mut [u32], links: &mut Vec<u32>, parent: &mut Vec<u32>, link: u32) -> (u32, bool) {
    let ll = link_local[link as usize];
    if ll != NONE {
        return (ll, false);
    }
    let ll = links.len() as u32;
    link_local[link as usize] = ll;
    links.push(link);
    parent.push(ll);
    (ll, true)
}

/// Joins local link `ll` into the set rooted at `root` (`NONE` before a
/// path's first link) and returns the joined set's root. The smaller id
/// becomes the root, so the result does not depend on the order.
fn join(parent: &mut [u32], root: u32, ll: u32) -> u32 {
    let b = find(parent, ll);
    if root == NONE || root == b {
        return b;
    }
    let (lo, hi) = if root < b { (root, b) } else { (b, root) };
    parent[hi as usize] = lo;
    lo
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// A flow-id difference (mod 2^32) folded so small magnitudes of either
/// sign are small numbers.
fn zigzag(delta: u32) -> u32 {
    let d = delta as i32;
    ((d << 1) ^ (d >> 31)) as u32
}

fn unzigzag(z: u32) -> u32 {
    ((z >> 1) as i32 ^ -((z & 1) as i32)) as u32
}

/// Batches of at most this many flows from several runs or components are
/// grouped by a comparison sort, larger ones by counting sorts.
const SORT_GROUPS: usize = 256;

/// Recomputes of at most this many flows build a flat [`Incidence`].
const FLAT_FLOWS: usize = 1 << 16;

/// Bytes per block of an [`Incidence`] list: a payload, then the index of
/// the next block (u32, little-endian).
const BLOCK: usize = 256;
const PAYLOAD: usize = BLOCK - 4;

/// The link -> flow incidence of a recompute: per local link, the flows that
/// cross it in `sc.flows` order, each stored as the zigzag LEB128 varint of
/// its difference from the one before (1 byte for neighbouring flows, 2 for
/// flows 4,095 apart), in a chain of blocks of one pool. Built in the same
/// pass that numbers the links; about 9 bytes per all-to-all flow instead of
/// 24 for a CSR of u32. A recompute of at most [`FLAT_FLOWS`] flows lists
/// them flat instead (`flat`: one u32 per flow and link, the lists one after
/// another), which costs a few hundred bytes per recompute where a block
/// per link costs 256 bytes per link.
#[derive(Debug, Default)]
struct Incidence {
    /// The lists are `items[start[k]..start[k + 1]]`, not blocks.
    flat: bool,
    start: Vec<u32>,
    items: Vec<u32>,
    /// Blocks; bytes from `used` on are left over from earlier recomputes
    /// (every byte a list reads was written by this one), so reusing the
    /// pool needs no clearing.
    pool: Vec<u8>,
    /// Bytes of `pool` in use.
    used: usize,
    /// Per local link: first block.
    head: Vec<u32>,
    /// Per local link: where its list grows.
    tails: Vec<ListTail>,
}

/// The growing end of one link's list.
#[derive(Debug, Clone, Copy)]
struct ListTail {
    /// Next write position in the pool.
    pos: usize,
    /// The last flow appended.
    last: u32,
    /// Flows in the list.
    deg: u32,
    /// Their weights, summed (member flows).
    weight: u32,
}

impl Incidence {
    fn clear(&mut self) {
        self.used = 0;
        self.head.clear();
        self.tails.clear();
        self.flat = false;
    }

    fn new_block(&mut self) -> u32 {
        let b = self.used / BLOCK;
        self.used += BLOCK;
        if self.pool.len() < self.used {
            self.pool.resize(self.used, 0);
        }
        b as u32
    }

    fn add_link(&mut self) {
        let b = self.new_block();
        self.head.push(b);
        self.tails.push(ListTail { pos: b as usize * BLOCK, last: 0, deg: 0, weight: 0 });
    }

    /// Flows crossing local link `k`.
    fn deg(&self, k: usize) -> u32 {
        self.tails[k].deg
    }

    /// Member flows crossing local link `k` (the flows' weights summed).
    fn weight(&self, k: usize) -> u32 {
        self.tails[k].weight
    }

    /// Appends flow `f` of weight `w` to local link `k`'s list.
    #[inline]
    fn push(&mut self, k: usize, f: u32, w: u32) {
        let tail = &mut self.tails[k];
        let mut z = zigzag(f.wrapping_sub(tail.last));
        tail.last = f;
        tail.deg += 1;
        tail.weight += w;
        let mut pos = tail.pos;
        if pos % BLOCK + 5 <= PAYLOAD {
            // Room for any varint in this block.
            while z >= 0x80 {
                self.pool[pos] = (z as u8) | 0x80;
                z >>= 7;
                pos += 1;
            }
            self.pool[pos] = z as u8;
            tail.pos = pos + 1;
            return;
        }
        self.push_across(k, z);
    }

    /// [`Incidence::push`] near the end of a block: byte by byte, chaining
    /// a new block when this one is full.
    #[cold]
    fn push_across(&mut self, k: usize, mut z: u32) {
        let mut pos = self.tails[k].pos;
        loop {
            if pos % BLOCK == PAYLOAD {
                let b = self.new_block();
                self.pool[pos..pos + 4].copy_from_slice(&b.to_le_bytes());
                pos = b as usize * BLOCK;
            }
            if z < 0x80 {
                self.pool[pos] = z as u8;
                pos += 1;
                break;
            }
            self.pool[pos] = (z as u8) | 0x80;
            z >>= 7;
            pos += 1;
        }
        self.tails[k].pos = pos;
    }

    /// The flows of local link `k`, in the order they were pushed.
    fn list(&self, k: usize) -> IncidenceList<'_> {
        if self.flat {
            return IncidenceList::Flat(self.items[self.start[k] as usize..self.start[k + 1] as usize].iter());
        }
        IncidenceList::Blocks(BlockList {
            pool: &self.pool,
            pos: self.head[k] as usize * BLOCK,
            left: self.tails[k].deg,
            prev: 0,
        })
    }
}

enum IncidenceList<'a> {
    Blocks(BlockList<'a>),
    Flat(std::slice::Iter<'a, u32>),
}

impl Iterator for IncidenceList<'_> {
    type Item = u32;
    #[inline]
    fn next(&mut self) -> Option<u32> {
        match self {
            IncidenceList::Blocks(b) => b.next(),
            IncidenceList::Flat(it) => it.next().copied(),
        }
    }
}

struct BlockList<'a> {
    pool: &'a [u8],
    pos: usize,
    left: u32,
    prev: u32,
}

impl BlockList<'_> {
    fn byte(&mut self) -> u8 {
        if self.pos % BLOCK == PAYLOAD {
            let next = &self.pool[self.pos..self.pos + 4];
            self.pos = u32::from_le_bytes([next[0], next[1], next[2], next[3]]) as usize * BLOCK;
        }
        let b = self.pool[self.pos];
        self.pos += 1;
        b
    }
}

impl Iterator for BlockList<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut b = self.byte();
        let mut z = u32::from(b & 0x7f);
        let mut shift = 7;
        while b & 0x80 != 0 {
            b = self.byte();
            z |= u32::from(b & 0x7f) << shift;
            shift += 7;
        }
        self.prev = self.prev.wrapping_add(unzigzag(z));
        Some(self.prev)
    }
}

/// Reorders `items` so equal keys are together, in ascending key order, each
/// group keeping the items' order (a counting sort over the keys present).
/// `count` covers every key and is all zero before and after.
fn group_stable<T: Copy>(
    items: &mut [T],
    tmp: &mut Vec<T>,
    count: &mut [u32],
    keys: &mut Vec<u32>,
    key: impl Fn(&T) -> u32,
) {
    keys.clear();
    for it in items.iter() {
        let k = key(it);
        if count[k as usize] == 0 {
            keys.push(k);
        }
        count[k as usize] += 1;
    }
    if keys.len() > 1 {
        keys.sort_unstable();
        let mut at = 0;
        for &k in keys.iter() {
            let n = count[k as usize];
            count[k as usize] = at;
            at += n;
        }
        tmp.clear();
        tmp.extend_from_slice(items);
        for it in tmp.iter() {
            let slot = &mut count[key(it) as usize];
            items[*slot as usize] = *it;
            *slot += 1;
        }
    }
    for &k in keys.iter() {
        count[k as usize] = 0;
    }
}

fn is_set(bits: &[u64], i: u32) -> bool {
    bits[i as usize >> 6] & (1u64 << (i & 63)) != 0
}

fn set_bit(bits: &mut [u64], i: u32) {
    bits[i as usize >> 6] |= 1u64 << (i & 63);
}

impl FlowSolver {
    /// A solver for the links of `platform` and flow indices below
    /// `flow_count`, recording each link's throughput history if
    /// `record_series` (within [`LINK_SERIES_BUDGET_BYTES`]).
    pub fn new(platform: &Platform, flow_count: usize, record_series: bool) -> Self {
        Self::with_series_budget(platform, flow_count, record_series.then_some(LINK_SERIES_BUDGET_BYTES))
    }

    /// [`FlowSolver::new`], recording the link series within
    /// `series_budget_bytes` if given (see [`crate::series`]).
    pub fn with_series_budget(platform: &Platform, flow_count: usize, series_budget_bytes: Option<u64>) -> Self {
        let n = platform.links.len();
        FlowSolver {
            link_cap: platform.links.iter().map(|l| l.bytes_per_s / PS_PER_S).collect(),
            link_comp: vec![NONE; n],
            link_local: vec![NONE; n],
            link_agg: vec![0.0; n],
            link_live: vec![LinkLive::default(); n],
            dirty_links: Vec::new(),
            link_changed_at: vec![0; n],
            link_stats: vec![LinkStats::default(); n],
            link_series: series_budget_bytes.map(|b| SeriesRecorder::new(&platform.links, b)),
            run_of: vec![IDLE; flow_count],
            runs: Vec::new(),
            free_runs: Vec::new(),
            live_runs: 0,
            comps: Vec::new(),
            free_comps: Vec::new(),
            retired: Vec::new(),
            touched: Vec::new(),
            new_flows: Vec::new(),
            new_runs: Vec::new(),
            frozen: vec![0; flow_count.div_ceil(64)],
            dues: DueQueue::default(),
            scheduled: None,
            gen: 0,
            resched: false,
            scratch: Scratch::default(),
            flat_flows: FLAT_FLOWS,
            recomputes: 0,
            rerated: 0,
            started: 0,
            tolerance: 0.0,
            finished_early: 0,
        }
    }

    /// Lets a completion take along the runs due soon after it: a run due at
    /// `d` whose flows started at `b` finishes at a completion at `t` when
    /// `d - t <= tolerance x (d - b)`, i.e. each flow ends at most
    /// `tolerance` of its own duration early (with its last bytes unsent).
    /// Whole buckets of due runs are taken, in due order, while every
    /// current run in the bucket qualifies. The freed capacity goes to the
    /// other flows that much earlier, so they too may finish early; the
    /// error on a training step is measured in the README. 0 (the default)
    /// is exact; the point is fewer re-fills when an exchange's flows finish
    /// one by one.
    pub fn set_finish_tolerance(&mut self, tolerance: f64) {
        self.tolerance = tolerance;
    }

    /// Starts flow `flow` with `bytes` (> 0) over its non-empty path. It gets a
    /// rate at the next [`FlowSolver::recompute`].
    pub fn start_flow<P: FlowPaths + ?Sized>(&mut self, paths: &P, flow: u32, bytes: f64) {
        self.started += 1;
        let w = paths.flow_weight(flow);
        let link_bytes = bytes * f64::from(w);
        for &l in paths.flow_path(flow) {
            let li = l.0 as usize;
            self.link_stats[li].bytes += link_bytes;
            self.link_live[li].n += w;
            // The component it joins is recomputed with it.
            let c = self.link_comp[li];
            if c != NONE {
                self.retire(c);
            }
        }
        let pending = match self.new_runs.last() {
            Some(&r) if self.runs[r as usize].remaining.to_bits() == bytes.to_bits() => r,
            _ => {
                let r = self.alloc_run();
                self.runs[r as usize].remaining = bytes;
                self.new_runs.push(r);
                r
            }
        };
        self.run_of[flow as usize] = pending;
        self.new_flows.push(flow);
    }

    fn retire(&mut self, c: u32) {
        let comp = &mut self.comps[c as usize];
        if !comp.retired {
            comp.retired = true;
            self.retired.push(c);
        }
    }

    fn mark_link(&mut self, l: u32) {
        if !self.link_live[l as usize].dirty {
            self.link_live[l as usize].dirty = true;
            self.dirty_links.push(l);
        }
    }

    fn alloc_run(&mut self) -> u32 {
        match self.free_runs.pop() {
            Some(r) => r,
            None => {
                self.runs.push(Run::FREE);
                self.runs.len() as u32 - 1
            }
        }
    }

    fn free_run(&mut self, r: u32) {
        let run = &mut self.runs[r as usize];
        if !run.finished {
            self.live_runs -= 1;
        }
        *run = Run::FREE;
        self.free_runs.push(r);
    }

    /// Handles a due completion at `now`: pushes the flows that are done onto
    /// `finished` and returns true, or returns false for an out-of-date `due`.
    pub fn complete_due<P: FlowPaths + ?Sized>(
        &mut self,
        paths: &P,
        due: FlowDue,
        now: u64,
        finished: &mut Vec<u32>,
    ) -> bool {
        self.complete_due_with(paths, due, now, |f, _| finished.push(f))
    }

    /// [`FlowSolver::complete_due`] that calls `done` with each finished flow
    /// and its path (just read, so the caller's use of it is cheap).
    pub fn complete_due_with<P: FlowPaths + ?Sized>(
        &mut self,
        paths: &P,
        due: FlowDue,
        now: u64,
        mut done: impl FnMut(u32, &[LinkId]),
    ) -> bool {
        if due.gen != self.gen || self.scheduled != Some(due.time) {
            return false;
        }
        self.scheduled = None;
        self.resched = true;
        while let Some((t, _, _)) = self.dues.first() {
            if t > now {
                break;
            }
            self.finish_bucket(paths, now, false, &mut done);
        }
        if self.tolerance > 0.0 {
            self.finish_early(paths, now, &mut done);
        }
        true
    }

    /// Finishes, at `now`, the buckets of due runs that
    /// [`FlowSolver::set_finish_tolerance`] lets finish early, in due order,
    /// stopping at the first bucket with a current run that does not
    /// qualify.
    fn finish_early<P: FlowPaths + ?Sized>(&mut self, paths: &P, now: u64, done: &mut impl FnMut(u32, &[LinkId])) {
        while let Some((t, seq, at)) = self.dues.first() {
            let runs = &self.runs;
            let tol = self.tolerance;
            let bucket = self.dues.runs_at(&at);
            // Runs before the last refusal's passed then and still pass.
            let from = match self.dues.refused {
                Some((rt, rs, k)) if (rt, rs) == (t, seq) => k.min(bucket.len()),
                _ => 0,
            };
            let refusal = bucket[from..].iter().position(|&r| {
                let run = &runs[r as usize];
                !(run.finished || run.due != t || (t - now) as f64 <= tol * t.saturating_sub(run.born) as f64)
            });
            if let Some(k) = refusal {
                self.dues.refused = Some((t, seq, from + k));
                break;
            }
            self.finish_bucket(paths, now, true, done);
        }
    }

    /// Takes the first bucket off the queue and finishes its current runs:
    /// those whose bytes are sent by `now`, or with `early` all of them
    /// (counted as finished early).
    fn finish_bucket<P: FlowPaths + ?Sized>(
        &mut self,
        paths: &P,
        now: u64,
        early: bool,
        done: &mut impl FnMut(u32, &[LinkId]),
    ) {
        let Some(bucket) = self.dues.take_first() else { return };
        let t = bucket.time;
        for &r in bucket.runs() {
            let run = self.runs[r as usize];
            if run.finished || run.due != t {
                continue;
            }
            if early {
                self.finished_early += u64::from(run.end - run.start);
            } else if !run.sent_by(now) {
                continue;
            }
            self.finish_run(paths, r, done);
        }
        self.dues.release(bucket);
    }

    /// Marks a run's flows done and takes them off their links.
    fn finish_run<P: FlowPaths + ?Sized>(&mut self, paths: &P, r: u32, done: &mut impl FnMut(u32, &[LinkId])) {
        let run = &mut self.runs[r as usize];
        run.finished = true;
        run.due = u64::MAX;
        let run = *run;
        self.live_runs -= 1;
        let comp = &mut self.comps[run.comp as usize];
        comp.removed_min = comp.removed_min.min(run.rate);
        if !comp.touched {
            comp.touched = true;
            self.touched.push(run.comp);
        }
        let comp = &self.comps[run.comp as usize];
        let (link_live, dirty_links) = (&mut self.link_live, &mut self.dirty_links);
        let mut from = comp.hop_start(run.start as usize);
        for k in run.start as usize..run.end as usize {
            let to = comp.hop_end[k] as usize;
            let path = &comp.hops[from..to];
            from = to;
            let w = paths.flow_weight(comp.flows[k]);
            let load = run.rate * f64::from(w);
            for &l in path {
                let li = l.0 as usize;
                let live = &mut link_live[li];
                live.load -= load;
                live.n -= w;
                if !live.dirty {
                    live.dirty = true;
                    dirty_links.push(l.0);
                }
            }
            done(comp.flows[k], path);
        }
    }

    /// Whether anything changed since the last recompute.
    pub fn needs_recompute(&self) -> bool {
        !self.new_flows.is_empty() || !self.retired.is_empty() || !self.touched.is_empty() || self.resched
    }

    /// Numbers the links the flows of `sc.flows` cross (optionally joining
    /// the links of each path in the union-find) and builds the link -> flow
    /// incidence, in one pass over the paths.
    fn localise<P: FlowPaths + ?Sized>(&mut self, paths: &P, sc: &mut Scratch, union: bool) {
        sc.links.clear();
        sc.parent.clear();
        sc.inc.clear();
        if sc.flows.len() <= self.flat_flows {
            self.localise_flat(paths, sc, union);
            return;
        }
        for &f in &sc.flows {
            let w = paths.flow_weight(f);
            // The root of the path's links so far.
            let mut root = NONE;
            for &l in paths.flow_path(f) {
                let (ll, new) = number_link(&mut self.link_local, &mut sc.links, &mut sc.parent, l.0);
                if new {
                    sc.inc.add_link();
                }
                sc.inc.push(ll as usize, f, w);
                if union {
                    root = join(&mut sc.parent, root, ll);
                }
            }
        }
    }

    /// [`FlowSolver::localise`] into a flat incidence: one pass over the
    /// paths numbers the links, joins them, counts each link's flows and
    /// notes each hop's local link; the lists are then laid out one after
    /// another and filled from those notes, each in `sc.flows` order (the
    /// order the blocks would hold).
    fn localise_flat<P: FlowPaths + ?Sized>(&mut self, paths: &P, sc: &mut Scratch, union: bool) {
        sc.hop_ll.clear();
        sc.hop_ll_end.clear();
        for &f in &sc.flows {
            let w = paths.flow_weight(f);
            let mut root = NONE;
            for &l in paths.flow_path(f) {
                let (ll, new) = number_link(&mut self.link_local, &mut sc.links, &mut sc.parent, l.0);
                if new {
                    sc.inc.tails.push(ListTail { pos: 0, last: 0, deg: 0, weight: 0 });
                }
                let tail = &mut sc.inc.tails[ll as usize];
                tail.deg += 1;
                tail.weight += w;
                sc.hop_ll.push(ll);
                if union {
                    root = join(&mut sc.parent, root, ll);
                }
            }
            sc.hop_ll_end.push(sc.hop_ll.len() as u32);
        }
        let inc = &mut sc.inc;
        inc.flat = true;
        inc.start.clear();
        inc.head.clear();
        let mut at = 0u32;
        for t in &inc.tails {
            inc.start.push(at);
            // Where the link's list fills next.
            inc.head.push(at);
            at += t.deg;
        }
        inc.start.push(at);
        inc.items.clear();
        inc.items.resize(at as usize, 0);
        let mut from = 0;
        for (&f, &end) in sc.flows.iter().zip(&sc.hop_ll_end) {
            for &ll in &sc.hop_ll[from..end as usize] {
                let slot = &mut inc.head[ll as usize];
                inc.items[*slot as usize] = f;
                *slot += 1;
            }
            from = end as usize;
        }
    }

    /// Recomputes the rates of every component a started or finished flow
    /// touched since the last call, and pushes the next completion onto
    /// `dues` if it changed.
    pub fn recompute<P: FlowPaths + ?Sized>(&mut self, paths: &P, now: u64, dues: &mut Vec<FlowDue>) {
        if !self.needs_recompute() {
            return;
        }
        let mut sc = std::mem::take(&mut self.scratch);
        if !self.new_flows.is_empty() || !self.retired.is_empty() {
            self.recomputes += 1;
            self.recompute_full(paths, now, &mut sc);
        }
        for k in 0..self.touched.len() {
            let c = self.touched[k];
            if !self.comps[c as usize].touched {
                continue;
            }
            self.recomputes += 1;
            self.recompute_partial(paths, c, now, &mut sc);
        }
        self.touched.clear();
        for k in 0..self.dirty_links.len() {
            let l = self.dirty_links[k];
            self.link_live[l as usize].dirty = false;
            let li = l as usize;
            if self.link_live[li].n == 0 {
                self.link_live[li].load = 0.0;
            }
            let agg = self.link_live[li].load.max(0.0);
            self.set_link_rate(l, agg, now);
        }
        self.dirty_links.clear();
        self.scratch = sc;
        self.resched = false;
        // Drop stale entries when they dominate.
        let runs = &self.runs;
        let current = |t: u64, r: u32| !runs[r as usize].finished && runs[r as usize].due == t;
        if self.dues.len > 2 * self.live_runs + 1024 {
            self.dues.retain(current);
        }
        let top = self.dues.drop_stale_head(current);
        if top != self.scheduled {
            self.scheduled = top;
            if let Some(t) = top {
                self.gen = self.gen.wrapping_add(1);
                dues.push(FlowDue { time: t, comp: 0, gen: self.gen });
            }
        }
    }

    /// Takes the runs of component `c` from position `from` on out of it
    /// (the caller truncates): frees the finished ones; brings the others up
    /// to `now`, appends their flows to `sc.flows`, optionally takes their
    /// rate off the links, and lists them in `sc.origins`.
    fn gather_runs<P: FlowPaths + ?Sized>(
        &mut self,
        paths: &P,
        c: usize,
        from: usize,
        now: u64,
        unload: bool,
        sc: &mut Scratch,
    ) {
        for k in from..self.comps[c].runs.len() {
            let r = self.comps[c].runs[k];
            let run = &mut self.runs[r as usize];
            if run.finished {
                self.free_run(r);
            } else {
                run.advance(now);
                let run = *run;
                sc.origins.push(r);
                let comp = &self.comps[c];
                sc.flows.extend_from_slice(&comp.flows[run.start as usize..run.end as usize]);
                if unload && run.start < run.end && paths.has_weights() {
                    // Flow by flow: each takes its weight x the rate off.
                    let mut from = comp.hop_start(run.start as usize);
                    for k in run.start as usize..run.end as usize {
                        let to = comp.hop_end[k] as usize;
                        let load = run.rate * f64::from(paths.flow_weight(comp.flows[k]));
                        for &l in &comp.hops[from..to] {
                            self.link_live[l.0 as usize].load -= load;
                        }
                        from = to;
                    }
                } else if unload && run.start < run.end {
                    let hops =
                        &comp.hops[comp.hop_start(run.start as usize)..comp.hop_end[run.end as usize - 1] as usize];
                    for &l in hops {
                        self.link_live[l.0 as usize].load -= run.rate;
                    }
                }
            }
        }
    }

    /// Frees the runs the recomputed flows came from.
    fn free_origins(&mut self, sc: &mut Scratch) {
        for k in 0..sc.origins.len() {
            let r = sc.origins[k];
            let run = &mut self.runs[r as usize];
            if run.kept {
                run.kept = false;
            } else {
                self.free_run(r);
            }
        }
        sc.origins.clear();
    }

    /// Re-fills one component after some of its flows finished: runs below
    /// the lowest rate of a finished run keep their rates (progressive
    /// filling runs identically up to that level), the others are re-filled
    /// over the capacity the kept ones leave.
    fn recompute_partial<P: FlowPaths + ?Sized>(&mut self, paths: &P, c: u32, now: u64, sc: &mut Scratch) {
        let ci = c as usize;
        let s_d = self.comps[ci].removed_min;
        self.comps[ci].removed_min = f64::INFINITY;
        self.comps[ci].touched = false;
        let thr = s_d * (1.0 - 1e-9);
        let runs = &self.runs;
        let k = self.comps[ci].runs.partition_point(|&r| runs[r as usize].rate < thr);
        let Some(&first) = self.comps[ci].runs.get(k) else { return };
        let cut = self.runs[first as usize].start as usize;
        sc.flows.clear();
        sc.origins.clear();
        self.gather_runs(paths, ci, k, now, true, sc);
        self.comps[ci].runs.truncate(k);
        self.comps[ci].truncate_flows(cut);
        if sc.flows.is_empty() {
            return;
        }
        self.localise(paths, sc, false);
        sc.cap0.clear();
        for k in 0..sc.links.len() {
            let l = sc.links[k];
            let fixed = if self.link_live[l as usize].n == sc.inc.weight(k) {
                0.0
            } else {
                self.link_live[l as usize].load.max(0.0)
            };
            sc.cap0.push((self.link_cap[l as usize] - fixed).max(0.0));
        }
        sc.label_comp.clear();
        sc.label_comp.push(c);
        self.water_fill(paths, sc, now);
        self.free_origins(sc);
        for k in 0..sc.links.len() {
            let l = sc.links[k];
            self.link_local[l as usize] = NONE;
            let li = l as usize;
            if self.link_live[li].n == sc.inc.weight(k) {
                self.link_live[li].load = (self.link_cap[li] - sc.left[k].0).max(0.0);
            } else {
                self.link_live[li].load += sc.cap0[k] - sc.left[k].0;
            }
            self.mark_link(l);
        }
        // The kept runs are sorted and below the re-filled ones; only the
        // re-filled tail can be out of order.
        self.sort_runs(ci, k.saturating_sub(1));
    }

    fn recompute_full<P: FlowPaths + ?Sized>(&mut self, paths: &P, now: u64, sc: &mut Scratch) {
        // Gather the flows of the retired components (bringing them up to
        // date) and the links they covered, then free those components.
        sc.flows.clear();
        sc.origins.clear();
        sc.old_links.clear();
        for k in 0..self.retired.len() {
            let c = self.retired[k] as usize;
            self.gather_runs(paths, c, 0, now, false, sc);
            let comp = &mut self.comps[c];
            sc.old_links.extend_from_slice(&comp.links);
            comp.clear_flows();
            comp.runs.clear();
            comp.links.clear();
            comp.retired = false;
            comp.touched = false;
            comp.removed_min = f64::INFINITY;
        }
        for c in std::mem::take(&mut self.retired) {
            self.free_comps.push(c);
        }
        if sc.flows.is_empty() {
            std::mem::swap(&mut sc.flows, &mut self.new_flows);
        } else {
            sc.flows.extend_from_slice(&self.new_flows);
        }
        self.new_flows.clear();
        for &r in &self.new_runs {
            self.runs[r as usize].since = now;
            self.runs[r as usize].born = now;
        }
        sc.origins.append(&mut self.new_runs);
        self.localise(paths, sc, true);
        let nl = sc.links.len();
        // Label components in order of first appearance (a component's links
        // first appear with its first flow).
        sc.root_label.clear();
        sc.root_label.resize(nl, NONE);
        sc.link_label.clear();
        let mut comps_n = 0u32;
        for k in 0..nl {
            let root = find(&mut sc.parent, k as u32) as usize;
            if sc.root_label[root] == NONE {
                sc.root_label[root] = comps_n;
                comps_n += 1;
            }
            sc.link_label.push(sc.root_label[root]);
        }
        sc.label_comp.clear();
        for _ in 0..comps_n {
            let id = match self.free_comps.pop() {
                Some(id) => id,
                None => {
                    self.comps.push(Component::default());
                    self.comps.len() as u32 - 1
                }
            };
            let comp = &mut self.comps[id as usize];
            comp.clear_flows();
            comp.runs.clear();
            comp.removed_min = f64::INFINITY;
            comp.touched = false;
            comp.retired = false;
            sc.label_comp.push(id);
        }
        sc.cap0.clear();
        for k in 0..nl {
            sc.cap0.push(self.link_cap[sc.links[k] as usize]);
        }
        self.water_fill(paths, sc, now);
        self.free_origins(sc);
        // Old links no longer used by any flow go idle.
        for k in 0..sc.old_links.len() {
            let l = sc.old_links[k];
            if self.link_local[l as usize] == NONE {
                self.link_comp[l as usize] = NONE;
                self.link_live[l as usize].load = 0.0;
                self.mark_link(l);
            }
        }
        for k in 0..nl {
            let l = sc.links[k] as usize;
            self.link_live[l].load = (self.link_cap[l] - sc.left[k].0).max(0.0);
            self.mark_link(l as u32);
            let id = sc.label_comp[sc.link_label[k] as usize];
            self.link_comp[l] = id;
            self.comps[id as usize].links.push(l as u32);
            self.link_local[l] = NONE;
        }
        for j in 0..sc.label_comp.len() {
            self.sort_runs(sc.label_comp[j] as usize, 0);
        }
    }

    /// Progressive filling over the gathered flows (all components at once:
    /// they share no link, so they do not interact); each batch becomes runs.
    fn water_fill<P: FlowPaths + ?Sized>(&mut self, paths: &P, sc: &mut Scratch, now: u64) {
        let n = sc.flows.len();
        let nl = sc.links.len();
        let labelled = sc.label_comp.len() > 1;
        sc.left.clear();
        let mut heap = std::mem::take(&mut sc.heap);
        heap.clear();
        for ll in 0..nl {
            let cap = sc.cap0[ll];
            let k = sc.inc.weight(ll);
            sc.left.push((cap, k));
            if k > 0 {
                heap.add_first((cap / k as f64).to_bits(), ll as u32);
            }
        }
        heap.sort();
        // Flows not frozen yet: once none is left, the links still in the
        // heap hold no unfrozen flow and their pops would do nothing.
        let mut unfrozen = n;
        // Flows not frozen as of the last sequential pass.
        let mut live = std::mem::take(&mut sc.live);
        live.clear();
        live.extend_from_slice(&sc.flows);
        let mut live_len = n;
        sc.sat.clear();
        sc.sat.resize(nl, false);
        let mut batch = std::mem::take(&mut sc.batch);
        let mut level = 0.0f64;
        while unfrozen > 0 {
            let Some((key, ll)) = heap.pop() else { break };
            let ll = ll as usize;
            let k = sc.left[ll].1;
            if k == 0 {
                continue;
            }
            let cur = sc.left[ll].0.max(0.0) / k as f64;
            if cur > f64::from_bits(key) * (1.0 + 1e-12) {
                heap.push(cur.to_bits(), ll as u32);
                continue;
            }
            // Shares equal in exact arithmetic get the same rate.
            let s = if (cur - level).abs() <= 1e-9 * level { level } else { cur };
            level = s;
            // Every other link saturating at this level joins the batch.
            batch.clear();
            batch.push(ll as u32);
            let mut work = sc.inc.deg(ll);
            while let Some((key2, l2)) = heap.peek() {
                if f64::from_bits(key2) > s * (1.0 + 1e-9) {
                    break;
                }
                heap.pop();
                let l2 = l2 as usize;
                let k2 = sc.left[l2].1;
                if k2 == 0 {
                    continue;
                }
                let cur2 = sc.left[l2].0.max(0.0) / k2 as f64;
                if cur2 > s * (1.0 + 1e-9) {
                    heap.push(cur2.to_bits(), l2 as u32);
                    continue;
                }
                batch.push(l2 as u32);
                work += sc.inc.deg(l2);
            }
            sc.batch_flows.clear();
            sc.batch_labels.clear();
            sc.batch_hops.clear();
            sc.batch_hop_end.clear();
            if work as usize > live_len / 2 {
                // Many flows freeze: one sequential pass over the flows not
                // frozen as of the last such pass (`sc.live`, in `sc.flows`
                // order), dropping the frozen ones from it as it goes, so
                // the passes cost no more than the incidence walks they
                // replace (O(sum of path lengths) over a whole filling).
                for &b in &batch {
                    sc.sat[b as usize] = true;
                }
                let mut kept = 0;
                for i in 0..live_len {
                    let f = live[i];
                    if is_set(&self.frozen, f) {
                        continue;
                    }
                    let p = paths.flow_path(f);
                    if !p.iter().any(|l| sc.sat[self.link_local[l.0 as usize] as usize]) {
                        live[kept] = f;
                        kept += 1;
                        continue;
                    }
                    set_bit(&mut self.frozen, f);
                    sc.batch_flows.push(f);
                    sc.batch_hops.extend_from_slice(p);
                    sc.batch_hop_end.push(sc.batch_hops.len() as u32);
                    let w = paths.flow_weight(f);
                    let take = s * f64::from(w);
                    for l in p {
                        let l2 = self.link_local[l.0 as usize] as usize;
                        sc.left[l2].0 -= take;
                        sc.left[l2].1 -= w;
                    }
                    if labelled {
                        sc.batch_labels.push(sc.link_label[self.link_local[p[0].0 as usize] as usize]);
                    }
                }
                live_len = kept;
                self.rerated += sc.batch_flows.len() as u64;
                for &b in &batch {
                    sc.sat[b as usize] = false;
                }
            } else {
                for &b in &batch {
                    let b = b as usize;
                    // A link lists a flow once: its unfrozen flows first, then
                    // their paths (see `with_paths`).
                    let from = sc.batch_flows.len();
                    for f in sc.inc.list(b) {
                        if is_set(&self.frozen, f) {
                            continue;
                        }
                        set_bit(&mut self.frozen, f);
                        sc.batch_flows.push(f);
                    }
                    self.rerated += (sc.batch_flows.len() - from) as u64;
                    let (left, link_local) = (&mut sc.left, &self.link_local);
                    let (labels, link_label) = (&mut sc.batch_labels, &sc.link_label);
                    let (hops, hop_end) = (&mut sc.batch_hops, &mut sc.batch_hop_end);
                    with_paths(paths, &sc.batch_flows[from..], |f, path| {
                        hops.extend_from_slice(path);
                        hop_end.push(hops.len() as u32);
                        let w = paths.flow_weight(f);
                        let take = s * f64::from(w);
                        for l in path {
                            let l2 = link_local[l.0 as usize] as usize;
                            left[l2].0 -= take;
                            left[l2].1 -= w;
                        }
                        if labelled {
                            labels.push(link_label[link_local[path[0].0 as usize] as usize]);
                        }
                    });
                }
            }
            unfrozen -= sc.batch_flows.len();
            self.emit_batch(sc, s, now);
        }
        sc.batch = batch;
        sc.heap = heap;
        sc.live = live;
        // Every gathered flow froze; clear their bits.
        if n >= self.frozen.len() {
            self.frozen.fill(0);
        } else {
            for &f in &sc.flows {
                self.frozen[f as usize >> 6] = 0;
            }
        }
    }

    /// Turns the flows frozen at `rate` (`sc.batch_flows`) into runs: one per
    /// (component, origin run), each keeping the freeze order. Flows of one
    /// origin have the same bytes left.
    fn emit_batch(&mut self, sc: &mut Scratch, rate: f64, now: u64) {
        if sc.batch_flows.is_empty() {
            return;
        }
        if sc.label_comp.len() == 1 && sc.origins.len() == 1 {
            let origin = sc.origins[0];
            let o = &self.runs[origin as usize];
            let (c, progress) = (sc.label_comp[0], (o.remaining, o.born));
            let r = self.run_for(origin, rate, sc.batch_flows.len());
            self.push_run(r, c, rate, progress, now, &sc.batch_flows, &sc.batch_hops, &sc.batch_hop_end);
            return;
        }
        sc.group.clear();
        for (k, &f) in sc.batch_flows.iter().enumerate() {
            let label = if sc.label_comp.len() == 1 { 0 } else { sc.batch_labels[k] };
            let origin = if sc.origins.len() == 1 { sc.origins[0] } else { self.run_of[f as usize] };
            sc.group.push((label, origin, k as u32));
        }
        // Stable groups in (label, origin) order: each run keeps the freeze
        // order. Origins first, then labels. A small batch is sorted by
        // (label, origin, index) instead: the same order.
        if sc.group.len() <= SORT_GROUPS {
            sc.group.sort_unstable_by_key(|&(l, o, k)| (u128::from(l) << 64) | (u128::from(o) << 32) | u128::from(k));
        } else {
            if sc.key_count.len() < self.runs.len().max(sc.label_comp.len()) {
                sc.key_count.resize(self.runs.len().max(sc.label_comp.len()), 0);
            }
            group_stable(&mut sc.group, &mut sc.group_tmp, &mut sc.key_count, &mut sc.keys, |g| g.1);
            group_stable(&mut sc.group, &mut sc.group_tmp, &mut sc.key_count, &mut sc.keys, |g| g.0);
        }
        let mut a = 0;
        while a < sc.group.len() {
            let (label, origin, _) = sc.group[a];
            let mut b = a + 1;
            while b < sc.group.len() && (sc.group[b].0, sc.group[b].1) == (label, origin) {
                b += 1;
            }
            // The run's flows and paths straight from the batch into the
            // component.
            let o = &self.runs[origin as usize];
            let (c, progress) = (sc.label_comp[label as usize], (o.remaining, o.born));
            let r = self.run_for(origin, rate, b - a);
            let comp = &mut self.comps[c as usize];
            let start = comp.flows.len() as u32;
            for g in &sc.group[a..b] {
                let k = g.2 as usize;
                let from = if k == 0 { 0 } else { sc.batch_hop_end[k - 1] as usize };
                let f = sc.batch_flows[k];
                comp.flows.push(f);
                comp.hops.extend_from_slice(&sc.batch_hops[from..sc.batch_hop_end[k] as usize]);
                comp.hop_end.push(comp.hops.len() as u32);
                self.run_of[f as usize] = r;
            }
            self.seal_run(r, c, start, rate, progress, now);
            a = b;
        }
    }

    /// The run for `flows` flows of run `origin` frozen together at `rate`:
    /// `origin` itself when they are all of its flows and it had that rate
    /// (marked kept: its queued completion may still hold), else a new one.
    fn run_for(&mut self, origin: u32, rate: f64, flows: usize) -> u32 {
        let o = &mut self.runs[origin as usize];
        if !o.finished && o.rate == rate && (o.end - o.start) as usize == flows {
            o.kept = true;
            origin
        } else {
            self.alloc_run()
        }
    }

    /// Makes `r` a run of `flows` appended to component `c` and queues its
    /// completion; their paths are `hops`, flow k's ending at `hop_end[k]`;
    /// `progress` is (bytes left per flow, when they started).
    #[allow(clippy::too_many_arguments)]
    fn push_run(
        &mut self,
        r: u32,
        c: u32,
        rate: f64,
        progress: (f64, u64),
        now: u64,
        flows: &[u32],
        hops: &[LinkId],
        hop_end: &[u32],
    ) {
        let comp = &mut self.comps[c as usize];
        let start = comp.flows.len() as u32;
        comp.flows.extend_from_slice(flows);
        let base = comp.hops.len() as u32;
        comp.hops.extend_from_slice(hops);
        comp.hop_end.extend(hop_end.iter().map(|&e| base + e));
        for &f in flows {
            self.run_of[f as usize] = r;
        }
        self.seal_run(r, c, start, rate, progress, now);
    }

    /// Makes run `r` of component `c` the flows appended to it from
    /// `start` on, and queues its completion; `progress` is (bytes left per
    /// flow, when they started).
    ///
    /// A kept run (see [`FlowSolver::run_for`]) stays live, and its queued
    /// completion stands when its due time is unchanged.
    fn seal_run(&mut self, r: u32, c: u32, start: u32, rate: f64, progress: (f64, u64), now: u64) {
        let comp = &mut self.comps[c as usize];
        let end = comp.flows.len() as u32;
        comp.runs.push(r);
        let (remaining, born) = progress;
        let old = self.runs[r as usize];
        let mut run = Run {
            remaining,
            rate,
            since: now,
            born,
            due: u64::MAX,
            comp: c,
            start,
            end,
            finished: false,
            kept: old.kept,
        };
        run.due = run.completion();
        self.runs[r as usize] = run;
        if old.kept {
            if run.due == old.due {
                return;
            }
        } else {
            self.live_runs += 1;
        }
        if run.due != u64::MAX {
            self.dues.push(run.due, r);
        }
    }

    /// Restores the order of component `c`'s runs by rate from position
    /// `from` on (ties by first flow), moving their flows along.
    fn sort_runs(&mut self, c: usize, from: usize) {
        let comp = &mut self.comps[c];
        let runs = &mut self.runs;
        let from = from.min(comp.runs.len());
        if comp.runs[from..].windows(2).all(|w| runs[w[0] as usize].rate <= runs[w[1] as usize].rate) {
            return;
        }
        let mut order: Vec<(f64, u32, u32)> = comp.runs[from..]
            .iter()
            .map(|&r| {
                let run = &runs[r as usize];
                (run.rate, comp.flows[run.start as usize], r)
            })
            .collect();
        // Distinct runs have distinct first flows: no ties.
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // Runs from `from` on are laid out in order from its start; their
        // paths move with them.
        let base = runs[comp.runs[from] as usize].start as usize;
        let hop_base = comp.hop_start(base);
        let old = comp.flows[base..].to_vec();
        let old_end = comp.hop_end[base..].to_vec();
        let old_hops = comp.hops[hop_base..].to_vec();
        let (mut pos, mut hop_pos) = (base, hop_base);
        for (k, &(_, _, r)) in order.iter().enumerate() {
            comp.runs[from + k] = r;
            let run = &mut runs[r as usize];
            let (s, e) = (run.start as usize - base, run.end as usize - base);
            comp.flows[pos..pos + (e - s)].copy_from_slice(&old[s..e]);
            let hs = if s == 0 { hop_base } else { old_end[s - 1] as usize };
            let he = if e == s { hs } else { old_end[e - 1] as usize };
            comp.hops[hop_pos..hop_pos + (he - hs)].copy_from_slice(&old_hops[hs - hop_base..he - hop_base]);
            for (slot, &end) in comp.hop_end[pos..pos + (e - s)].iter_mut().zip(&old_end[s..e]) {
                *slot = (end as usize - hs + hop_pos) as u32;
            }
            hop_pos += he - hs;
            run.start = pos as u32;
            pos += e - s;
            run.end = pos as u32;
        }
    }

    fn set_link_rate(&mut self, l: u32, agg: f64, now: u64) {
        let li = l as usize;
        let old = self.link_agg[li];
        if agg == old || (agg > 0.0 && (agg - old).abs() <= 1e-12 * agg.max(old)) {
            return;
        }
        let st = &mut self.link_stats[li];
        if old > 0.0 {
            st.busy_ps += now.saturating_sub(self.link_changed_at[li]);
        }
        self.link_changed_at[li] = now;
        self.link_agg[li] = agg;
        let bps = agg * PS_PER_S;
        if bps > st.peak_bytes_per_s {
            st.peak_bytes_per_s = bps;
        }
        if let Some(series) = &mut self.link_series {
            series.record(li, now, bps);
        }
    }

    /// The rate of an active flow in bytes per second (0 for other flows); as
    /// slow as [`FlowSolver::is_active`].
    pub fn rate_bytes_per_s(&self, flow: u32) -> f64 {
        if self.is_active(flow) {
            self.runs[self.run_of[flow as usize] as usize].rate * PS_PER_S
        } else {
            0.0
        }
    }

    /// Whether `flow` has been given a rate and not finished. Takes time in
    /// proportion to the flows of its run (for tests and inspection: finishing
    /// a run does not touch its flows' entries, so a finished flow may still
    /// name a run that has since been reused).
    pub fn is_active(&self, flow: u32) -> bool {
        let r = self.run_of[flow as usize];
        if r == IDLE {
            return false;
        }
        let run = &self.runs[r as usize];
        !run.finished && self.comps[run.comp as usize].flows[run.start as usize..run.end as usize].contains(&flow)
    }

    /// Changes a link's capacity from now on (bytes per second, > 0). The
    /// rates are recomputed (at the next [`FlowSolver::recompute`]) only when
    /// the current ones stop being max-min fair: the link was saturated, or
    /// carries more than the new capacity. A link that bounds no flow before
    /// or after the change leaves every rate as it is.
    pub fn set_link_capacity(&mut self, link: LinkId, bytes_per_s: f64) {
        let li = link.0 as usize;
        let cap = bytes_per_s / PS_PER_S;
        let old = self.link_cap[li];
        if cap == old {
            return;
        }
        self.link_cap[li] = cap;
        let load = self.link_live[li].load;
        let binds = load > 0.0 && (load >= old * (1.0 - 1e-9) || load > cap * (1.0 - 1e-9));
        let c = self.link_comp[li];
        if binds && c != NONE {
            self.retire(c);
        }
    }

    /// A link's aggregate rate, bytes per second, as of the last recompute.
    pub fn link_rate_bytes_per_s(&self, link: LinkId) -> f64 {
        self.link_agg[link.0 as usize] * PS_PER_S
    }

    /// How many times [`FlowSolver::recompute`] did any work.
    pub fn recomputes(&self) -> u64 {
        self.recomputes
    }

    /// How many flows water-fillings gave a rate, in all (a flow re-rated
    /// by several recomputes counts each time): the solver's work, next to
    /// the engine's events.
    pub fn flows_rerated(&self) -> u64 {
        self.rerated
    }

    /// Flows finished early under [`FlowSolver::set_finish_tolerance`], in all.
    pub fn flows_finished_early(&self) -> u64 {
        self.finished_early
    }

    /// How many flows were started, in all.
    pub fn flows_started(&self) -> u64 {
        self.started
    }

    /// The per-link statistics and (if recorded) series.
    pub fn into_stats(self) -> (Vec<LinkStats>, Option<Vec<Vec<LinkSample>>>) {
        (self.link_stats, self.link_series.map(SeriesRecorder::finish))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_ps_snaps_and_rounds_up() {
        assert_eq!(ceil_ps(0.0), 0);
        assert_eq!(ceil_ps(-3.0), 0);
        assert_eq!(ceil_ps(f64::NAN), 0);
        assert_eq!(ceil_ps(4.2), 5);
        assert_eq!(ceil_ps(49.00000000000001), 49);
        assert_eq!(ceil_ps(1e30), u64::MAX);
    }

    #[test]
    fn incidence_lists_round_trip_any_flow_order_across_blocks() {
        let mut inc = Incidence::default();
        inc.add_link();
        inc.add_link();
        let odd = [5u32, 6, 7, 200, 3, u32::MAX, 0, 1 << 20, (1 << 20) - 1, 16_773_119];
        let mut want = [Vec::new(), Vec::new()];
        for k in 0..400u32 {
            // Link 0: neighbours (1 byte each); link 1: jumps of every size.
            let a = 1000 + k;
            let b = odd[k as usize % odd.len()].wrapping_add(k * 4095);
            inc.push(0, a, 1);
            inc.push(1, b, 1);
            want[0].push(a);
            want[1].push(b);
        }
        assert_eq!(inc.list(0).collect::<Vec<_>>(), want[0]);
        assert_eq!(inc.list(1).collect::<Vec<_>>(), want[1]);
        assert!(inc.pool.len() > 4 * BLOCK, "lists span several blocks");
    }

    #[test]
    fn flat_incidence_and_union_equal_the_blocks() {
        let mut p = Platform::default();
        for i in 0..40 {
            p.add_link(crate::platform::LinkResource {
                name: format!("l{i}"),
                kind: crate::platform::LinkKind::Physical("test"),
                bytes_per_s: 1e12,
                latency: crate::time::SimDuration(0),
            });
        }
        // 600 flows over paths of 1-4 links, some repeating a link, over two
        // groups of links that never meet (several components).
        let paths: Vec<Vec<LinkId>> = (0..600u32)
            .map(|f| {
                let base = if f % 3 == 0 { 20 } else { 0 };
                (0..1 + f % 4).map(|h| LinkId(base + (f * 7 + h * 13) % 20)).collect()
            })
            .collect();
        let flows: Vec<u32> = (0..600u32).rev().filter(|f| f % 5 != 1).collect();
        let mut got = Vec::new();
        for flat_flows in [0, usize::MAX] {
            let mut solver = FlowSolver::new(&p, paths.len(), false);
            solver.flat_flows = flat_flows;
            let mut sc = Scratch { flows: flows.clone(), ..Scratch::default() };
            solver.localise(&paths, &mut sc, true);
            assert_eq!(sc.inc.flat, flat_flows != 0);
            let lists: Vec<(Vec<u32>, u32, u32)> =
                (0..sc.links.len()).map(|k| (sc.inc.list(k).collect(), sc.inc.deg(k), sc.inc.weight(k))).collect();
            let roots: Vec<u32> = (0..sc.links.len() as u32).map(|k| find(&mut sc.parent, k)).collect();
            got.push((sc.links.clone(), lists, roots));
        }
        assert_eq!(got[0], got[1]);
        assert!(got[0].2.iter().collect::<std::collections::BTreeSet<_>>().len() > 1, "several components");
    }

    #[test]
    fn a_refusal_is_forgotten_when_its_bucket_could_hold_a_new_current_run() {
        let mut q = DueQueue::default();
        q.push(10, 1);
        q.push(10, 2);
        q.push(20, 3);
        let (t, seq, _) = q.first().unwrap();
        assert_eq!(t, 10);
        // Queuing at another time keeps it; at its time drops it.
        q.refused = Some((t, seq, 1));
        q.push(30, 4);
        assert_eq!(q.refused, Some((10, seq, 1)));
        q.push(10, 5);
        assert_eq!(q.refused, None);
        // Its bucket leaving the queue drops it; another's does not.
        q.refused = Some((20, 99, 0));
        let b = q.take_first().unwrap();
        q.release(b);
        assert_eq!(q.refused, Some((20, 99, 0)));
        let (_, seq, _) = q.first().unwrap();
        q.refused = Some((10, seq, 0));
        let b = q.take_first().unwrap();
        q.release(b);
        assert_eq!(q.refused, None);
        q.refused = Some((30, 0, 0));
        q.retain(|_, _| true);
        assert_eq!(q.refused, None);
    }

    #[test]
    fn due_buckets_come_out_by_time_then_as_queued_lone_runs_in_the_heap_entry() {
        let mut q = DueQueue::default();
        // Buckets: {10: 1, 2}, {5: 3}, {10: 4} (a new bucket: another time
        // was queued in between), {7: 5, 6} (still open), and the same
        // again after a retain that drops run 2 and closes the open bucket.
        for (t, r) in [(10, 1), (10, 2), (5, 3), (10, 4), (7, 5), (7, 6)] {
            q.push(t, r);
        }
        assert_eq!(q.len, 6);
        assert_eq!(q.open_runs, [5, 6]);
        let drain = |q: &mut DueQueue| {
            let mut out = Vec::new();
            while let Some(b) = q.take_first() {
                out.push((b.time, b.runs().to_vec(), matches!(b.at, BucketAt::One(_))));
                q.release(b);
            }
            assert_eq!(q.len, 0);
            out
        };
        assert_eq!(
            drain(&mut q),
            [(5, vec![3], true), (7, vec![5, 6], false), (10, vec![1, 2], false), (10, vec![4], true)]
        );
        for (t, r) in [(10, 1), (10, 2), (5, 3), (10, 4), (7, 5), (7, 6)] {
            q.push(t, r);
        }
        q.retain(|_, r| r != 2);
        assert_eq!(q.len, 5);
        assert_eq!(q.open, None);
        // Another run due at 7 opens a bucket of its own.
        q.push(7, 7);
        assert_eq!(
            drain(&mut q),
            [
                (5, vec![3], true),
                (7, vec![5, 6], false),
                (7, vec![7], false),
                (10, vec![1], false),
                (10, vec![4], true)
            ]
        );
        // Dropping a stale head: the lone run 1 and run 3 at the end of
        // bucket {2: 2, 3} go; run 2 stays, so the head is at 2.
        for (t, r) in [(1, 1), (2, 2), (2, 3), (4, 4)] {
            q.push(t, r);
        }
        assert_eq!(q.drop_stale_head(|_, r| r == 2 || r == 4), Some(2));
        assert_eq!(q.len, 2);
        assert_eq!(drain(&mut q), [(2, vec![2], false), (4, vec![4], false)]);
    }

    #[test]
    fn a_run_refilled_whole_at_its_old_rate_keeps_its_queued_completion() {
        let mut p = Platform::default();
        // x (1 B/ps) carries flows 0 and 1, y (10 B/ps) flows 1 and 2, w
        // (2 B/ps) flow 2 alone: flows 0 and 1 share x at 0.5, flow 2 gets
        // w's 2. When flow 0 finishes, flows 1 and 2 are re-filled: flow 1
        // rises to 1, flow 2 stays at 2 (its bottleneck is w).
        for (name, bytes_per_s) in [("x", 1e12), ("y", 10e12), ("w", 2e12)] {
            p.add_link(crate::platform::LinkResource {
                name: name.into(),
                kind: crate::platform::LinkKind::Physical("test"),
                bytes_per_s,
                latency: crate::time::SimDuration(0),
            });
        }
        let paths: Vec<Vec<LinkId>> = vec![vec![LinkId(0)], vec![LinkId(0), LinkId(1)], vec![LinkId(1), LinkId(2)]];
        let mut solver = FlowSolver::new(&p, 3, false);
        for (f, bytes) in [(0, 50.0), (1, 1000.0), (2, 1000.0)] {
            solver.start_flow(&paths, f, bytes);
        }
        let mut dues = Vec::new();
        solver.recompute(&paths, 0, &mut dues);
        let run2 = solver.run_of[2];
        assert_eq!(solver.runs[run2 as usize].rate, 2.0);
        assert_eq!(solver.runs[run2 as usize].due, 500);
        assert_eq!(solver.dues.len, 3);
        // Flow 0 is due at 100.
        let due = dues.pop().unwrap();
        assert_eq!(due.time, 100);
        let mut finished = Vec::new();
        assert!(solver.complete_due(&paths, due, 100, &mut finished));
        assert_eq!(finished, vec![0]);
        solver.recompute(&paths, 100, &mut dues);
        // Flow 1 got a new run at the new rate; flow 2 kept its run, its
        // due time and its queued entry: only flow 1's new completion was
        // queued (flow 1's old entry is stale).
        assert_eq!(solver.rate_bytes_per_s(1), 1e12);
        assert_eq!(solver.run_of[2], run2);
        assert_eq!(solver.runs[run2 as usize].due, 500);
        assert_eq!(solver.dues.len, 3);
        assert_eq!(solver.live_runs, 2);
        // Both still finish when due: flow 1 at 100 + 950 / 1, flow 2 at 500.
        let mut order = Vec::new();
        while let Some(due) = dues.pop() {
            let mut done = Vec::new();
            assert!(solver.complete_due(&paths, due, due.time, &mut done));
            order.extend(done.into_iter().map(|f| (f, due.time)));
            solver.recompute(&paths, due.time, &mut dues);
        }
        assert_eq!(order, vec![(2, 500), (1, 1050)]);
        assert_eq!(solver.live_runs, 0);
    }

    #[test]
    fn runs_out_of_rate_order_are_sorted_with_their_flows() {
        let mut p = Platform::default();
        p.add_link(crate::platform::LinkResource {
            name: "l".into(),
            kind: crate::platform::LinkKind::Physical("test"),
            bytes_per_s: 1e12,
            latency: crate::time::SimDuration(0),
        });
        let mut solver = FlowSolver::new(&p, 8, false);
        solver.comps.push(Component { removed_min: f64::INFINITY, ..Component::default() });
        // Rates 1, 3, 2 (flows 0-1, 2-4, 5), then 0.5 (flows 6-7).
        for (rate, flows) in [(1.0, &[0u32, 1][..]), (3.0, &[2, 3, 4]), (2.0, &[5]), (0.5, &[6, 7])] {
            // Flow f's path is the one link f.
            let hops: Vec<LinkId> = flows.iter().map(|&f| LinkId(f)).collect();
            let ends: Vec<u32> = (1..=flows.len() as u32).collect();
            let r = solver.alloc_run();
            solver.push_run(r, 0, rate, (100.0, 0), 0, flows, &hops, &ends);
        }
        solver.sort_runs(0, 1);
        let comp = &solver.comps[0];
        let order: Vec<(f64, Vec<u32>)> = comp
            .runs
            .iter()
            .map(|&r| {
                let run = &solver.runs[r as usize];
                (run.rate, comp.flows[run.start as usize..run.end as usize].to_vec())
            })
            .collect();
        // The first run stays; the rest follow by rate.
        let want = vec![(1.0, vec![0, 1]), (0.5, vec![6, 7]), (2.0, vec![5]), (3.0, vec![2, 3, 4])];
        assert_eq!(order, want);
        for f in 0..8 {
            assert!(solver.is_active(f), "flow {f} is still listed in its run");
        }
        // Each flow's path moved with it.
        let comp = &solver.comps[0];
        for (k, &f) in comp.flows.iter().enumerate() {
            assert_eq!(&comp.hops[comp.hop_start(k)..comp.hop_end[k] as usize], &[LinkId(f)]);
        }
    }
}
