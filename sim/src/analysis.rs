//! Per-rank activity of a finished run: how long each rank computed,
//! communicated, did both at once, or neither — the overlap figures
//! capacity planners ask for. Intervals of tasks are merged (a union), so
//! concurrent kernels or transfers count once.

use crate::graph::{TaskClass, TaskGraph, TaskId};
use crate::result::RunResult;

/// What one rank did over a run, in picoseconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RankActivity {
    pub rank: u32,
    /// Union of compute and memory kernels.
    pub compute_ps: u64,
    /// Union of communication tasks.
    pub comm_ps: u64,
    /// Time both were active.
    pub overlap_ps: u64,
    /// Union of everything (compute or communication).
    pub busy_ps: u64,
    /// Communication per stream name, sorted by name.
    pub comm_by_stream: Vec<StreamComm>,
}

/// The communication of the streams of one name on one rank, picoseconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamComm {
    pub name: String,
    /// Union of its communication tasks.
    pub busy_ps: u64,
    /// The part of that during which no kernel ran.
    pub exposed_ps: u64,
}

impl RankActivity {
    /// Communication not hidden behind computation.
    pub fn exposed_comm_ps(&self) -> u64 {
        self.comm_ps - self.overlap_ps
    }
}

/// Total length of the union of `intervals` (sorted in place).
pub fn union_length(intervals: &mut [(u64, u64)]) -> u64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(u64, u64)> = None;
    for &(a, b) in intervals.iter() {
        match cur {
            Some((s, e)) if a <= e => cur = Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    total + cur.map_or(0, |(s, e)| e - s)
}

/// `intervals` merged into their union: disjoint, sorted, touching ones
/// joined (sorted in place first).
pub fn merge_intervals(intervals: &mut Vec<(u64, u64)>) {
    intervals.sort_unstable();
    let mut out = 0;
    for i in 0..intervals.len() {
        let (a, b) = intervals[i];
        if out > 0 && a <= intervals[out - 1].1 {
            intervals[out - 1].1 = intervals[out - 1].1.max(b);
        } else {
            intervals[out] = (a, b);
            out += 1;
        }
    }
    intervals.truncate(out);
}

/// The merged intervals (see [`merge_intervals`]) that reach into
/// `[lo, hi)`, found by binary search.
fn within(merged: &[(u64, u64)], lo: u64, hi: u64) -> &[(u64, u64)] {
    let first = merged.partition_point(|&(_, b)| b <= lo);
    let last = first + merged[first..].partition_point(|&(a, _)| a < hi);
    &merged[first..last]
}

/// Length of the part of merged intervals inside `[lo, hi)`.
pub fn length_within(merged: &[(u64, u64)], lo: u64, hi: u64) -> u64 {
    within(merged, lo, hi).iter().map(|&(a, b)| b.min(hi) - a.max(lo)).sum()
}

/// Length of the time inside `[lo, hi)` covered by both of two merged
/// interval lists (a two-pointer sweep over the parts in the window).
pub fn overlap_within(x: &[(u64, u64)], y: &[(u64, u64)], lo: u64, hi: u64) -> u64 {
    let (x, y) = (within(x, lo, hi), within(y, lo, hi));
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < x.len() && j < y.len() {
        let a = x[i].0.max(y[j].0).max(lo);
        let b = x[i].1.min(y[j].1).min(hi);
        total += b.saturating_sub(a);
        if x[i].1 <= y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// One rank's busy time as merged intervals (ps; see [`merge_intervals`]):
/// its compute and memory kernels, its communication, and its
/// communication per stream name (sorted by name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RankIntervals<'g> {
    pub rank: u32,
    pub compute: Vec<(u64, u64)>,
    pub comm: Vec<(u64, u64)>,
    pub comm_by_stream: std::collections::BTreeMap<&'g str, Vec<(u64, u64)>>,
}

impl RankIntervals<'_> {
    /// What the rank did: unions and their overlaps, from sweeps over the
    /// merged lists.
    pub fn activity(&self) -> RankActivity {
        let all = |v: &[(u64, u64)]| length_within(v, 0, u64::MAX);
        let both = |x: &[(u64, u64)], y: &[(u64, u64)]| overlap_within(x, y, 0, u64::MAX);
        let (compute_ps, comm_ps) = (all(&self.compute), all(&self.comm));
        let overlap_ps = both(&self.comm, &self.compute);
        let comm_by_stream = self
            .comm_by_stream
            .iter()
            .map(|(&name, iv)| {
                let busy_ps = all(iv);
                StreamComm { name: name.to_owned(), busy_ps, exposed_ps: busy_ps - both(iv, &self.compute) }
            })
            .collect();
        RankActivity {
            rank: self.rank,
            compute_ps,
            comm_ps,
            overlap_ps,
            busy_ps: compute_ps + comm_ps - overlap_ps,
            comm_by_stream,
        }
    }
}

/// The merged intervals of every rank that has tasks, sorted by rank (one
/// pass over the tasks).
pub fn rank_intervals<'g>(graph: &'g TaskGraph, result: &RunResult) -> Vec<RankIntervals<'g>> {
    let mut ranks: Vec<u32> = graph.streams().iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let stream_rank: Vec<usize> =
        graph.streams().iter().map(|s| ranks.binary_search(&s.rank).expect("listed")).collect();
    let mut out: Vec<RankIntervals> = ranks.iter().map(|&rank| RankIntervals { rank, ..Default::default() }).collect();
    for (i, span) in result.spans.iter().enumerate().take(graph.task_count()) {
        let iv = (span.start.as_ps(), span.end.as_ps());
        if iv.1 <= iv.0 {
            continue;
        }
        let id = TaskId(i as u32);
        let stream = graph.task_stream(id);
        let r = &mut out[stream_rank[stream.0 as usize]];
        match graph.task_class(id) {
            TaskClass::Compute | TaskClass::Memory if graph.kernel_device(id).is_some() => r.compute.push(iv),
            TaskClass::Communication => {
                r.comm.push(iv);
                r.comm_by_stream.entry(graph.label_str(graph.stream(stream).name)).or_default().push(iv);
            }
            _ => {}
        }
    }
    for r in &mut out {
        merge_intervals(&mut r.compute);
        merge_intervals(&mut r.comm);
        r.comm_by_stream.values_mut().for_each(merge_intervals);
    }
    out
}

/// Activity of every rank that has tasks, sorted by rank.
pub fn rank_activity(graph: &TaskGraph, result: &RunResult) -> Vec<RankActivity> {
    rank_intervals(graph, result).iter().map(RankIntervals::activity).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlaps_and_touching_intervals() {
        assert_eq!(union_length(&mut [(0, 10), (5, 15), (20, 30), (30, 31)]), 26);
        assert_eq!(union_length(&mut []), 0);
    }

    #[test]
    fn rank_activity_counts_unions_and_overlaps_per_rank_and_stream() {
        use crate::graph::{Comm, Kernel, UnitDemand};
        use crate::platform::DeviceId;
        use crate::result::TaskSpan;
        use crate::time::{SimDuration, SimTime};
        let mut g = TaskGraph::new();
        let kernel = |d| Kernel {
            device: DeviceId(d),
            compute: SimDuration(1),
            mem_bytes: 0.0,
            units: UnitDemand::Share { max_units: 1 },
        };
        let comm = || crate::graph::TaskKind::Comm(Comm { flows: 0..0, hold: None, overhead: SimDuration::ZERO });
        let mut spans = Vec::new();
        let mut add = |g: &mut TaskGraph, s, class, kind, (a, b): (u64, u64)| {
            let l = g.label("t");
            g.add_task(s, l, class, kind);
            spans.push(TaskSpan { start: SimTime(a), end: SimTime(b) });
        };
        let (c0, ep0, pp0) = (g.add_stream(0, "compute"), g.add_stream(0, "ep"), g.add_stream(0, "pp"));
        let (c0b, c1, ep1) = (g.add_stream(0, "compute2"), g.add_stream(1, "compute"), g.add_stream(1, "ep"));
        // Rank 0: compute [0, 10) ∪ [5, 12) ∪ [20, 30); ep [8, 22) ∪ [25, 26);
        // pp [40, 50); a delay and an empty kernel count nothing.
        add(&mut g, c0, TaskClass::Compute, crate::graph::TaskKind::Kernel(kernel(0)), (0, 10));
        add(&mut g, c0b, TaskClass::Memory, crate::graph::TaskKind::Kernel(kernel(0)), (5, 12));
        add(&mut g, c0, TaskClass::Compute, crate::graph::TaskKind::Kernel(kernel(0)), (20, 30));
        add(&mut g, c0, TaskClass::Compute, crate::graph::TaskKind::Kernel(kernel(0)), (35, 35));
        add(&mut g, c0, TaskClass::Other, crate::graph::TaskKind::Delay(SimDuration(9)), (30, 39));
        add(&mut g, ep0, TaskClass::Communication, comm(), (8, 22));
        add(&mut g, ep0, TaskClass::Communication, comm(), (25, 26));
        add(&mut g, pp0, TaskClass::Communication, comm(), (40, 50));
        // Rank 1: ep alone.
        add(&mut g, c1, TaskClass::Compute, crate::graph::TaskKind::Kernel(kernel(1)), (0, 4));
        add(&mut g, ep1, TaskClass::Communication, comm(), (2, 9));
        let result = RunResult { spans, ..Default::default() };
        let a = rank_activity(&g, &result);
        assert_eq!(a.len(), 2);
        // compute 12 + 10; comm 14 + 1 + 10 = 25; overlap [8, 12) + [20, 22) + [25, 26) = 7.
        assert_eq!((a[0].rank, a[0].compute_ps, a[0].comm_ps, a[0].overlap_ps, a[0].busy_ps), (0, 22, 25, 7, 40));
        let s: Vec<_> = a[0].comm_by_stream.iter().map(|c| (c.name.as_str(), c.busy_ps, c.exposed_ps)).collect();
        assert_eq!(s, [("ep", 15, 8), ("pp", 10, 10)]);
        assert_eq!(
            (a[1].compute_ps, a[1].comm_ps, a[1].overlap_ps, a[1].busy_ps, a[1].exposed_comm_ps()),
            (4, 7, 2, 9, 5)
        );
    }

    #[test]
    fn windowed_lengths_equal_the_clipped_unions() {
        let mut x = vec![(20, 30), (0, 10), (5, 15), (30, 31), (40, 50)];
        merge_intervals(&mut x);
        assert_eq!(x, [(0, 15), (20, 31), (40, 50)]);
        let mut y = vec![(12, 22), (29, 45), (60, 70)];
        merge_intervals(&mut y);
        // Brute force over every window with ends on a grid.
        for lo in (0..72).step_by(3) {
            for hi in (lo..75).step_by(4) {
                let clip = |v: &[(u64, u64)]| -> Vec<(u64, u64)> {
                    v.iter().filter(|&&(a, b)| b > lo && a < hi).map(|&(a, b)| (a.max(lo), b.min(hi))).collect()
                };
                let (cx, cy) = (clip(&x), clip(&y));
                let (lx, ly) = (union_length(&mut cx.clone()), union_length(&mut cy.clone()));
                let both = union_length(&mut [cx, cy].concat());
                assert_eq!(length_within(&x, lo, hi), lx, "[{lo}, {hi})");
                assert_eq!(overlap_within(&x, &y, lo, hi), lx + ly - both, "[{lo}, {hi})");
            }
        }
    }
}
