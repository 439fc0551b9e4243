//! The fluid network: flows share directed links max-min fairly.
//!
//! [`FlowSolver`] keeps, per flow, its remaining bytes as of its own last
//! update (`since`, progress is lazy), its rate, its completion time and its
//! component: flows that share a link, transitively, form a component, and
//! each link belongs to at most one. Completions sit in buckets keyed by time
//! (a `BTreeMap`; flows frozen together share a time), stale entries are
//! recognised by the flow's current `due`, and the solver hands the engine
//! one pending completion (stale ones are recognised by a generation).
//!
//! When flows start, [`FlowSolver::recompute`] (once per timestamp) gathers
//! the flows of every component the new flows touch plus the new flows,
//! copies their paths into a scratch arena of local link indices, splits them
//! into connected components with a union-find over links, builds a link ->
//! flow incidence (CSR) and water-fills.
//!
//! When flows only finish, components are not split and most rates stay:
//! progressive filling without the finished flows runs exactly as before up
//! to the lowest rate `s` of a finished flow (no link they cross saturated
//! below `s`), so flows with a rate below `s` keep it, and only the others
//! are re-filled over the capacity the kept ones leave (per-link loads are
//! kept incrementally). Each component keeps its flows sorted by rate (the
//! filling freezes them in order of rising level), so the re-filled set is a
//! suffix found by binary search. In an all-to-all, finishing flows are the
//! fastest ones and nothing else needs re-filling.
//!
//! Water-filling (progressive filling) uses a lazy min-heap of links keyed by
//! their fair share `capacity_left / unfrozen_flows`: a link's share only grows
//! as flows elsewhere freeze, so an out-of-date key is pushed back, and a
//! current one is a bottleneck. All links saturating at that level freeze
//! their unfrozen flows together, either through the CSR or, when they hold
//! many flows, in one sequential pass over all flows (an all-to-all has few
//! levels, so a few cache-friendly passes). Cost: O(sum of path lengths x
//! (log links + levels that take the sequential pass)) per recompute.
//!
//! Rates are f64 bytes per picosecond; completion times are rounded up to
//! whole picoseconds with [`ceil_ps`], and a flow with less than
//! [`DONE_BYTES`] left counts as finished, so rounding never livelocks a run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::graph::TaskGraph;
use crate::platform::{LinkId, Platform};
use crate::result::{LinkSample, LinkStats};
use crate::time::PS_PER_S;

/// A flow with fewer bytes left than this is finished.
pub const DONE_BYTES: f64 = 1e-6;

const NO_COMP: u32 = u32::MAX;
const DONE: u32 = u32::MAX - 1;

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
}

impl FlowPaths for TaskGraph {
    fn flow_path(&self, flow: u32) -> &[LinkId] {
        self.path(self.flows()[flow as usize].path)
    }
}

impl FlowPaths for Vec<Vec<LinkId>> {
    fn flow_path(&self, flow: u32) -> &[LinkId] {
        &self[flow as usize]
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

#[derive(Debug, Default)]
struct Component {
    /// The component's live flows sorted by rate (ascending) with their rates
    /// alongside; flows finished since the last recompute are still listed.
    flows: Vec<u32>,
    rates: Vec<f64>,
    links: Vec<u32>,
    /// Lowest rate of a flow of this component finished since the last
    /// recompute (infinite if none).
    removed_min: f64,
    touched: bool,
    retired: bool,
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
    /// Current aggregate rate, maintained incrementally.
    link_load: Vec<f64>,
    /// Active flows crossing the link.
    link_n: Vec<u32>,
    /// Scratch flag: the link is in `dirty_links`.
    link_dirty: Vec<bool>,
    dirty_links: Vec<u32>,
    link_changed_at: Vec<u64>,
    link_stats: Vec<LinkStats>,
    link_series: Option<Vec<Vec<LinkSample>>>,
    /// Bytes left as of `since`.
    remaining: Vec<f64>,
    since: Vec<u64>,
    /// Bytes per picosecond.
    rate: Vec<f64>,
    /// The flow's current completion time (u64::MAX if none).
    due: Vec<u64>,
    comp_of: Vec<u32>,
    comps: Vec<Component>,
    free_comps: Vec<u32>,
    retired: Vec<u32>,
    touched: Vec<u32>,
    new_flows: Vec<u32>,
    /// Lazy min-heap of (completion time, flow); an entry is current when the
    /// flow is active and its `due` equals the time.
    dues: BTreeMap<u64, Vec<u32>>,
    /// Entries in `dues`, current or not.
    due_entries: usize,
    /// The last bucket appended to (flows frozen together share a time).
    last_bucket: Option<(u64, Vec<u32>)>,
    live: usize,
    /// The completion handed out last, if still pending, and its generation.
    scheduled: Option<u64>,
    gen: u32,
    resched: bool,
    scratch: Scratch,
    recomputes: u64,
}

/// Buffers reused by every recompute: the flows being recomputed (local
/// index `i`), copies of their paths in local link indices, union-find
/// parents of the local links, and a link -> local-flow incidence in CSR form.
#[derive(Debug, Default)]
struct Scratch {
    flows: Vec<u32>,
    path_off: Vec<u32>,
    path: Vec<u32>,
    parent: Vec<u32>,
    root_label: Vec<u32>,
    cap0: Vec<f64>,
    cap_left: Vec<f64>,
    n_left: Vec<u32>,
    sat: Vec<bool>,
    batch: Vec<u32>,
    rate: Vec<f64>,
    frozen: Vec<u32>,
    label: Vec<u32>,
    links: Vec<u32>,
    old_links: Vec<u32>,
    csr_off: Vec<u32>,
    csr: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

impl FlowSolver {
    /// A solver for the links of `platform` and flow indices below `flow_count`.
    pub fn new(platform: &Platform, flow_count: usize, record_series: bool) -> Self {
        let n = platform.links.len();
        FlowSolver {
            link_cap: platform.links.iter().map(|l| l.bytes_per_s / PS_PER_S).collect(),
            link_comp: vec![NO_COMP; n],
            link_local: vec![NO_COMP; n],
            link_agg: vec![0.0; n],
            link_load: vec![0.0; n],
            link_n: vec![0; n],
            link_dirty: vec![false; n],
            dirty_links: Vec::new(),
            link_changed_at: vec![0; n],
            link_stats: vec![LinkStats::default(); n],
            link_series: record_series.then(|| vec![Vec::new(); n]),
            remaining: vec![0.0; flow_count],
            since: vec![0; flow_count],
            rate: vec![0.0; flow_count],
            due: vec![u64::MAX; flow_count],
            comp_of: vec![NO_COMP; flow_count],
            comps: Vec::new(),
            free_comps: Vec::new(),
            retired: Vec::new(),
            touched: Vec::new(),
            new_flows: Vec::new(),
            dues: BTreeMap::new(),
            due_entries: 0,
            last_bucket: None,
            live: 0,
            scheduled: None,
            gen: 0,
            resched: false,
            scratch: Scratch::default(),
            recomputes: 0,
        }
    }

    /// Starts flow `flow` with `bytes` (> 0) over its non-empty path. It gets a
    /// rate at the next [`FlowSolver::recompute`].
    pub fn start_flow<P: FlowPaths + ?Sized>(&mut self, paths: &P, flow: u32, bytes: f64) {
        let f = flow as usize;
        self.remaining[f] = bytes;
        self.rate[f] = 0.0;
        self.comp_of[f] = NO_COMP;
        for &l in paths.flow_path(flow) {
            self.link_stats[l.0 as usize].bytes += bytes;
            self.link_n[l.0 as usize] += 1;
        }
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
        if !self.link_dirty[l as usize] {
            self.link_dirty[l as usize] = true;
            self.dirty_links.push(l);
        }
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
        if due.gen != self.gen || self.scheduled != Some(due.time) {
            return false;
        }
        self.scheduled = None;
        self.resched = true;
        self.flush_bucket();
        let mut bucket = Vec::new();
        let mut k = 0;
        let mut t = 0;
        loop {
            if k == bucket.len() {
                match self.dues.first_key_value() {
                    Some((&bt, _)) if bt <= now => {
                        let (bt, b) = self.dues.pop_first().expect("a bucket");
                        self.due_entries -= b.len();
                        t = bt;
                        bucket = b;
                        k = 0;
                        continue;
                    }
                    _ => break,
                }
            }
            let f = bucket[k];
            k += 1;
            let fi = f as usize;
            let c = self.comp_of[fi];
            if c == DONE || c == NO_COMP || self.due[fi] != t {
                continue;
            }
            let elapsed = now.saturating_sub(self.since[fi]);
            let (rem, r) = (self.remaining[fi], self.rate[fi]);
            let done = rem < DONE_BYTES
                || (r > 0.0 && (ceil_ps(rem / r) <= elapsed || rem - r * (elapsed as f64) < DONE_BYTES));
            if !done {
                continue;
            }
            self.comp_of[fi] = DONE;
            self.remaining[fi] = 0.0;
            self.rate[fi] = 0.0;
            self.due[fi] = u64::MAX;
            self.live -= 1;
            for &l in paths.flow_path(f) {
                let li = l.0 as usize;
                self.link_load[li] -= r;
                self.link_n[li] -= 1;
                self.mark_link(l.0);
            }
            let comp = &mut self.comps[c as usize];
            comp.removed_min = comp.removed_min.min(r);
            if !comp.touched {
                comp.touched = true;
                self.touched.push(c);
            }
            finished.push(f);
        }
        true
    }

    /// Whether anything changed since the last recompute.
    pub fn needs_recompute(&self) -> bool {
        !self.new_flows.is_empty() || !self.retired.is_empty() || !self.touched.is_empty() || self.resched
    }

    /// Sets a flow's rate at `now` (its remaining bytes already as of `now`)
    /// and queues its completion.
    fn set_flow_rate(&mut self, f: u32, r: f64, now: u64) {
        let fi = f as usize;
        self.rate[fi] = r;
        self.since[fi] = now;
        let rem = self.remaining[fi];
        let dt = if rem < DONE_BYTES {
            0
        } else if r > 0.0 {
            ceil_ps(rem / r)
        } else {
            u64::MAX
        };
        let t = if dt == u64::MAX { u64::MAX } else { now.saturating_add(dt) };
        if t != self.due[fi] || t == u64::MAX {
            self.due[fi] = t;
            if t != u64::MAX {
                self.due_entries += 1;
                match &mut self.last_bucket {
                    Some((bt, v)) if *bt == t => v.push(f),
                    _ => {
                        self.flush_bucket();
                        self.last_bucket = Some((t, vec![f]));
                    }
                }
            }
        }
    }

    fn flush_bucket(&mut self) {
        if let Some((t, v)) = self.last_bucket.take() {
            match self.dues.entry(t) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().extend_from_slice(&v),
            }
        }
    }

    /// Brings a flow's remaining bytes up to `now`.
    fn advance_flow(&mut self, f: u32, now: u64) {
        let fi = f as usize;
        let dt = now.saturating_sub(self.since[fi]) as f64;
        self.remaining[fi] = (self.remaining[fi] - self.rate[fi] * dt).max(0.0);
        self.since[fi] = now;
    }

    /// Copies the paths of `sc.flows` into local link indices (registering
    /// new local links with fixed load `fixed`) and optionally unions them.
    fn localise<P: FlowPaths + ?Sized>(&mut self, paths: &P, sc: &mut Scratch, union: bool) {
        sc.path_off.clear();
        sc.path.clear();
        sc.links.clear();
        sc.parent.clear();
        sc.path_off.push(0);
        for &f in &sc.flows {
            let mut prev = NO_COMP;
            for &l in paths.flow_path(f) {
                let mut ll = self.link_local[l.0 as usize];
                if ll == NO_COMP {
                    ll = sc.links.len() as u32;
                    self.link_local[l.0 as usize] = ll;
                    sc.links.push(l.0);
                    sc.parent.push(ll);
                }
                let l = ll;
                sc.path.push(l);
                if union && prev != NO_COMP {
                    let (a, b) = (find(&mut sc.parent, prev), find(&mut sc.parent, l));
                    if a != b {
                        // The smaller id becomes the root: independent of order.
                        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                        sc.parent[hi as usize] = lo;
                    }
                }
                prev = l;
            }
            sc.path_off.push(sc.path.len() as u32);
        }
        // Link -> local flow incidence (CSR).
        let n = sc.flows.len();
        let nl = sc.links.len();
        sc.csr_off.clear();
        sc.csr_off.resize(nl + 1, 0);
        for &ll in &sc.path {
            sc.csr_off[ll as usize + 1] += 1;
        }
        for k in 0..nl {
            sc.csr_off[k + 1] += sc.csr_off[k];
        }
        sc.csr.clear();
        sc.csr.resize(sc.path.len(), 0);
        let mut fill: Vec<u32> = sc.csr_off[..nl].to_vec();
        for i in 0..n {
            for &ll in &sc.path[sc.path_off[i] as usize..sc.path_off[i + 1] as usize] {
                let ll = ll as usize;
                sc.csr[fill[ll] as usize] = i as u32;
                fill[ll] += 1;
            }
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
            self.link_dirty[l as usize] = false;
            let li = l as usize;
            if self.link_n[li] == 0 {
                self.link_load[li] = 0.0;
            }
            let agg = self.link_load[li].max(0.0);
            self.set_link_rate(l, agg, now);
        }
        self.dirty_links.clear();
        self.scratch = sc;
        self.resched = false;
        self.flush_bucket();
        // Drop stale entries when they dominate.
        if self.due_entries > 2 * self.live + 1024 {
            let (due, comp_of) = (&self.due, &self.comp_of);
            self.dues.retain(|&t, v| {
                v.retain(|&f| due[f as usize] == t && comp_of[f as usize] < DONE);
                !v.is_empty()
            });
            self.due_entries = self.dues.values().map(Vec::len).sum();
        }
        let mut top = None;
        while let Some(mut e) = self.dues.first_entry() {
            let t = *e.key();
            let v = e.get_mut();
            while let Some(&f) = v.last() {
                let fi = f as usize;
                if self.due[fi] == t && self.comp_of[fi] < DONE {
                    break;
                }
                v.pop();
                self.due_entries -= 1;
            }
            if v.is_empty() {
                e.remove();
            } else {
                top = Some(t);
                break;
            }
        }
        if top != self.scheduled {
            self.scheduled = top;
            if let Some(t) = top {
                self.gen = self.gen.wrapping_add(1);
                dues.push(FlowDue { time: t, comp: 0, gen: self.gen });
            }
        }
    }

    /// Re-fills one component after some of its flows finished: flows below
    /// the lowest rate of a finished flow keep their rates (progressive
    /// filling runs identically up to that level), the others are re-filled
    /// over the capacity the kept ones leave.
    fn recompute_partial<P: FlowPaths + ?Sized>(&mut self, paths: &P, c: u32, now: u64, sc: &mut Scratch) {
        let ci = c as usize;
        let s_d = self.comps[ci].removed_min;
        self.comps[ci].removed_min = f64::INFINITY;
        self.comps[ci].touched = false;
        let thr = s_d * (1.0 - 1e-9);
        let k = self.comps[ci].rates.partition_point(|&r| r < thr);
        let mut flows = std::mem::take(&mut self.comps[ci].flows);
        sc.flows.clear();
        for &f in &flows[k..] {
            if self.comp_of[f as usize] == DONE {
                continue;
            }
            sc.flows.push(f);
        }
        flows.truncate(k);
        self.comps[ci].rates.truncate(k);
        for j in 0..sc.flows.len() {
            let f = sc.flows[j];
            self.advance_flow(f, now);
            let r = self.rate[f as usize];
            for &l in paths.flow_path(f) {
                self.link_load[l.0 as usize] -= r;
            }
        }
        self.localise(paths, sc, false);
        sc.cap0.clear();
        for k in 0..sc.links.len() {
            let l = sc.links[k];
            let fixed = if self.link_n[l as usize] == sc.csr_off[k + 1] - sc.csr_off[k] {
                0.0
            } else {
                self.link_load[l as usize].max(0.0)
            };
            sc.cap0.push((self.link_cap[l as usize] - fixed).max(0.0));
        }
        self.water_fill(sc);
        for k in 0..sc.links.len() {
            let l = sc.links[k];
            self.link_local[l as usize] = NO_COMP;
            let li = l as usize;
            if self.link_n[li] == sc.csr_off[k + 1] - sc.csr_off[k] {
                self.link_load[li] = (self.link_cap[li] - sc.cap_left[k]).max(0.0);
            } else {
                self.link_load[li] += sc.cap0[k] - sc.cap_left[k];
            }
            self.mark_link(l);
        }
        let mut rates = std::mem::take(&mut self.comps[ci].rates);
        for j in 0..sc.frozen.len() {
            let i = sc.frozen[j] as usize;
            let f = sc.flows[i];
            let r = sc.rate[i];
            self.set_flow_rate(f, r, now);
            flows.push(f);
            rates.push(r);
        }
        // The kept flows are sorted and below the re-filled ones; only the
        // re-filled tail can be out of order.
        let from = k.saturating_sub(1);
        sort_by_rate(&mut flows[from..], &mut rates[from..]);
        let comp = &mut self.comps[ci];
        comp.flows = flows;
        comp.rates = rates;
    }

    fn recompute_full<P: FlowPaths + ?Sized>(&mut self, paths: &P, now: u64, sc: &mut Scratch) {
        // Components that new flows join are recomputed too.
        let new_flows = std::mem::take(&mut self.new_flows);
        for &f in &new_flows {
            for &l in paths.flow_path(f) {
                let c = self.link_comp[l.0 as usize];
                if c != NO_COMP {
                    self.retire(c);
                }
            }
        }
        // Gather the flows (bringing remaining bytes up to date) and the links
        // the old components covered.
        sc.flows.clear();
        sc.old_links.clear();
        for k in 0..self.retired.len() {
            let c = self.retired[k] as usize;
            self.comps[c].touched = false;
            self.comps[c].removed_min = f64::INFINITY;
            let flows = std::mem::take(&mut self.comps[c].flows);
            for &f in &flows {
                if self.comp_of[f as usize] == DONE {
                    continue;
                }
                self.advance_flow(f, now);
                sc.flows.push(f);
            }
            self.comps[c].flows = flows;
            sc.old_links.extend_from_slice(&self.comps[c].links);
        }
        self.live += new_flows.len();
        for &f in &new_flows {
            self.since[f as usize] = now;
            sc.flows.push(f);
        }
        self.new_flows = new_flows;
        self.new_flows.clear();
        self.localise(paths, sc, true);
        let n = sc.flows.len();
        let nl = sc.links.len();
        // Label components in order of first appearance.
        sc.label.clear();
        sc.root_label.clear();
        sc.root_label.resize(nl, NO_COMP);
        let mut comps_n = 0u32;
        for i in 0..n {
            let first = sc.path[sc.path_off[i] as usize];
            let rl = find(&mut sc.parent, first) as usize;
            if sc.root_label[rl] == NO_COMP {
                sc.root_label[rl] = comps_n;
                comps_n += 1;
            }
            sc.label.push(sc.root_label[rl]);
        }
        sc.cap0.clear();
        for k in 0..nl {
            sc.cap0.push(self.link_cap[sc.links[k] as usize]);
        }
        self.water_fill(sc);
        // Old links no longer used by any flow go idle.
        for k in 0..sc.old_links.len() {
            let l = sc.old_links[k];
            if self.link_local[l as usize] == NO_COMP {
                self.link_comp[l as usize] = NO_COMP;
                self.link_load[l as usize] = 0.0;
                self.mark_link(l);
            }
        }
        for k in 0..nl {
            let l = sc.links[k] as usize;
            self.link_load[l] = (self.link_cap[l] - sc.cap_left[k]).max(0.0);
            self.mark_link(l as u32);
        }
        // Free retired components, then build the new ones.
        for c in std::mem::take(&mut self.retired) {
            let comp = &mut self.comps[c as usize];
            comp.flows.clear();
            comp.rates.clear();
            comp.links.clear();
            comp.retired = false;
            self.free_comps.push(c);
        }
        let mut id_of_label: Vec<u32> = Vec::with_capacity(comps_n as usize);
        for _ in 0..comps_n {
            let id = match self.free_comps.pop() {
                Some(id) => id,
                None => {
                    self.comps.push(Component::default());
                    self.comps.len() as u32 - 1
                }
            };
            let comp = &mut self.comps[id as usize];
            comp.flows.clear();
            comp.rates.clear();
            comp.removed_min = f64::INFINITY;
            comp.touched = false;
            comp.retired = false;
            id_of_label.push(id);
        }
        // Flows freeze in order of rising level, so each component's list
        // comes out sorted by rate.
        for j in 0..sc.frozen.len() {
            let i = sc.frozen[j] as usize;
            let f = sc.flows[i];
            let r = sc.rate[i];
            let id = id_of_label[sc.label[i] as usize];
            self.comp_of[f as usize] = id;
            self.set_flow_rate(f, r, now);
            let comp = &mut self.comps[id as usize];
            comp.flows.push(f);
            comp.rates.push(r);
        }
        for &id in &id_of_label {
            let comp = &mut self.comps[id as usize];
            let (mut flows, mut rates) = (std::mem::take(&mut comp.flows), std::mem::take(&mut comp.rates));
            sort_by_rate(&mut flows, &mut rates);
            let comp = &mut self.comps[id as usize];
            comp.flows = flows;
            comp.rates = rates;
        }
        for k in 0..nl {
            let l = sc.links[k];
            let root = find(&mut sc.parent, k as u32);
            let label = sc.root_label[root as usize];
            let id = id_of_label[label as usize];
            self.link_comp[l as usize] = id;
            self.comps[id as usize].links.push(l);
            self.link_local[l as usize] = NO_COMP;
        }
    }

    /// Progressive filling over the gathered flows (all components at once:
    /// they share no link, so they do not interact).
    fn water_fill(&self, sc: &mut Scratch) {
        let n = sc.flows.len();
        let nl = sc.links.len();
        sc.rate.clear();
        sc.rate.resize(n, -1.0);
        sc.cap_left.clear();
        sc.n_left.clear();
        let heap = &mut sc.heap;
        heap.clear();
        sc.frozen.clear();
        for ll in 0..nl {
            let cap = sc.cap0[ll];
            let k = sc.csr_off[ll + 1] - sc.csr_off[ll];
            sc.cap_left.push(cap);
            sc.n_left.push(k);
            if k > 0 {
                heap.push(Reverse(((cap / k as f64).to_bits(), ll as u32)));
            }
        }
        debug_assert_eq!(sc.cap_left.len(), nl);
        // Flows left to freeze, and path entries they hold.
        let mut unfrozen = n;
        sc.sat.clear();
        sc.sat.resize(nl, false);
        let mut batch = std::mem::take(&mut sc.batch);
        let mut level = 0.0f64;
        while let Some(Reverse((key, ll))) = heap.pop() {
            let ll = ll as usize;
            let k = sc.n_left[ll];
            if k == 0 {
                continue;
            }
            let cur = sc.cap_left[ll].max(0.0) / k as f64;
            if cur > f64::from_bits(key) * (1.0 + 1e-12) {
                heap.push(Reverse((cur.to_bits(), ll as u32)));
                continue;
            }
            // Shares equal in exact arithmetic get the same rate.
            let s = if (cur - level).abs() <= 1e-9 * level { level } else { cur };
            level = s;
            // Every other link saturating at this level joins the batch.
            batch.clear();
            batch.push(ll as u32);
            let mut work = sc.csr_off[ll + 1] - sc.csr_off[ll];
            while let Some(&Reverse((key2, l2))) = heap.peek() {
                if f64::from_bits(key2) > s * (1.0 + 1e-9) {
                    break;
                }
                heap.pop();
                let l2 = l2 as usize;
                let k2 = sc.n_left[l2];
                if k2 == 0 {
                    continue;
                }
                let cur2 = sc.cap_left[l2].max(0.0) / k2 as f64;
                if cur2 > s * (1.0 + 1e-9) {
                    heap.push(Reverse((cur2.to_bits(), l2 as u32)));
                    continue;
                }
                batch.push(l2 as u32);
                work += sc.csr_off[l2 + 1] - sc.csr_off[l2];
            }
            if work as usize > unfrozen / 2 {
                // Many flows freeze: one sequential pass over all of them.
                for &b in &batch {
                    sc.sat[b as usize] = true;
                }
                for i in 0..n {
                    if sc.rate[i] >= 0.0 {
                        continue;
                    }
                    let p = &sc.path[sc.path_off[i] as usize..sc.path_off[i + 1] as usize];
                    if !p.iter().any(|&l2| sc.sat[l2 as usize]) {
                        continue;
                    }
                    sc.rate[i] = s;
                    sc.frozen.push(i as u32);
                    unfrozen -= 1;
                    for &l2 in p {
                        let l2 = l2 as usize;
                        sc.cap_left[l2] -= s;
                        sc.n_left[l2] -= 1;
                    }
                }
                for &b in &batch {
                    sc.sat[b as usize] = false;
                }
            } else {
                for &b in &batch {
                    let b = b as usize;
                    for j in sc.csr_off[b]..sc.csr_off[b + 1] {
                        let i = sc.csr[j as usize] as usize;
                        if sc.rate[i] >= 0.0 {
                            continue;
                        }
                        sc.rate[i] = s;
                        sc.frozen.push(i as u32);
                        unfrozen -= 1;
                        for &l2 in &sc.path[sc.path_off[i] as usize..sc.path_off[i + 1] as usize] {
                            let l2 = l2 as usize;
                            sc.cap_left[l2] -= s;
                            sc.n_left[l2] -= 1;
                        }
                    }
                }
            }
        }
        sc.batch = batch;
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
            push_sample(&mut series[li], now, bps);
        }
    }

    /// The rate of an active flow in bytes per second (0 for other flows).
    pub fn rate_bytes_per_s(&self, flow: u32) -> f64 {
        let f = flow as usize;
        if self.comp_of[f] == DONE || self.comp_of[f] == NO_COMP {
            0.0
        } else {
            self.rate[f] * PS_PER_S
        }
    }

    /// Whether `flow` has started and not finished.
    pub fn is_active(&self, flow: u32) -> bool {
        self.comp_of[flow as usize] != DONE && self.comp_of[flow as usize] != NO_COMP
    }

    /// A link's aggregate rate, bytes per second, as of the last recompute.
    pub fn link_rate_bytes_per_s(&self, link: LinkId) -> f64 {
        self.link_agg[link.0 as usize] * PS_PER_S
    }

    /// How many times [`FlowSolver::recompute`] did any work.
    pub fn recomputes(&self) -> u64 {
        self.recomputes
    }

    /// The per-link statistics and (if recorded) series.
    pub fn into_stats(self) -> (Vec<LinkStats>, Option<Vec<Vec<LinkSample>>>) {
        (self.link_stats, self.link_series)
    }
}

/// Sorts `flows` by `rates` (ascending) unless they already are.
fn sort_by_rate(flows: &mut [u32], rates: &mut [f64]) {
    if rates.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    let mut v: Vec<(f64, u32)> = rates.iter().copied().zip(flows.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (k, (r, f)) in v.into_iter().enumerate() {
        rates[k] = r;
        flows[k] = f;
    }
}

/// Appends a sample unless it repeats the last value; samples at equal times
/// merge (the later wins).
fn push_sample(s: &mut Vec<LinkSample>, time: u64, bytes_per_s: f64) {
    use crate::time::SimTime;
    if let Some(last) = s.last_mut() {
        if last.time.0 == time {
            last.bytes_per_s = bytes_per_s;
            let n = s.len();
            let repeats = if n >= 2 { s[n - 2].bytes_per_s == bytes_per_s } else { bytes_per_s == 0.0 };
            if repeats {
                s.pop();
            }
            return;
        }
        if last.bytes_per_s == bytes_per_s {
            return;
        }
    } else if bytes_per_s == 0.0 {
        return;
    }
    s.push(LinkSample { time: SimTime(time), bytes_per_s });
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
    fn samples_merge_and_skip_repeats() {
        let mut s = Vec::new();
        push_sample(&mut s, 0, 0.0);
        assert!(s.is_empty());
        push_sample(&mut s, 5, 2.0);
        push_sample(&mut s, 5, 3.0);
        push_sample(&mut s, 7, 3.0);
        push_sample(&mut s, 9, 1.0);
        push_sample(&mut s, 9, 3.0);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].time.0, s[0].bytes_per_s), (5, 3.0));
    }
}
