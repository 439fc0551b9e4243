//! Per-rank activity of a finished run: how long each rank computed,
//! communicated, did both at once, or neither — the overlap figures
//! capacity planners ask for. Intervals of tasks are merged (a union), so
//! concurrent kernels or transfers count once.

use crate::graph::{TaskClass, TaskGraph, TaskKind};
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

/// Activity of every rank that has tasks, sorted by rank.
pub fn rank_activity(graph: &TaskGraph, result: &RunResult) -> Vec<RankActivity> {
    let mut ranks: Vec<u32> = graph.streams().iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let index = |r: u32| ranks.binary_search(&r).expect("listed");
    // Per rank: compute intervals, comm intervals, comm per stream name.
    let mut compute: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    let mut comm: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    let mut by_stream: Vec<std::collections::BTreeMap<String, Vec<(u64, u64)>>> = vec![Default::default(); ranks.len()];
    for (i, t) in graph.tasks().enumerate() {
        let span = result.spans[i];
        let iv = (span.start.as_ps(), span.end.as_ps());
        if iv.1 <= iv.0 {
            continue;
        }
        let stream = graph.stream(t.stream);
        let r = index(stream.rank);
        match (t.class, &t.kind) {
            (TaskClass::Compute | TaskClass::Memory, TaskKind::Kernel(_)) => compute[r].push(iv),
            (TaskClass::Communication, _) => {
                comm[r].push(iv);
                by_stream[r].entry(graph.label_str(stream.name).to_owned()).or_default().push(iv);
            }
            _ => {}
        }
    }
    ranks
        .iter()
        .enumerate()
        .map(|(r, &rank)| {
            let compute_ps = union_length(&mut compute[r].clone());
            let comm_by_stream = std::mem::take(&mut by_stream[r])
                .into_iter()
                .map(|(name, iv)| {
                    let busy_ps = union_length(&mut iv.clone());
                    let mut with = iv;
                    with.extend_from_slice(&compute[r]);
                    let both = union_length(&mut with);
                    StreamComm { name, busy_ps, exposed_ps: both - compute_ps }
                })
                .collect();
            let comm_ps = union_length(&mut comm[r].clone());
            let mut all = std::mem::take(&mut compute[r]);
            all.extend_from_slice(&comm[r]);
            let busy_ps = union_length(&mut all);
            RankActivity {
                rank,
                compute_ps,
                comm_ps,
                overlap_ps: (compute_ps + comm_ps).saturating_sub(busy_ps),
                busy_ps,
                comm_by_stream,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlaps_and_touching_intervals() {
        assert_eq!(union_length(&mut [(0, 10), (5, 15), (20, 30), (30, 31)]), 26);
        assert_eq!(union_length(&mut []), 0);
    }
}
