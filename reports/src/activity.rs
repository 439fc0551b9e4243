//! Figures of what ranks did over a run: a timeline (a lane of compute and a
//! lane of communication per rank, idle time left white) and a stacked
//! breakdown of each rank's time into compute alone, communication hidden
//! behind compute, exposed communication and idle (bubble) time.

use moesim_sim::analysis::RankActivity;
use moesim_sim::{RunResult, TaskClass, TaskGraph, TaskKind};
use plotters::style::RGBColor;

use crate::plot::{color, Axis, LegendPosition, RectMark, XyChart};

/// Most rectangles drawn per lane: intervals closer than the run's length
/// over this are merged (a pixel or so at the figure's width).
const LANE_RESOLUTION: f64 = 2000.0;

/// Merges sorted-or-not intervals whose gaps are below `min_gap`.
fn merged(mut iv: Vec<(u64, u64)>, min_gap: u64) -> Vec<(u64, u64)> {
    iv.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in iv {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(min_gap) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A timeline of `ranks` (`(rank, row label)`, top to bottom): per rank a
/// compute lane and a communication lane, time in seconds.
pub fn timeline(graph: &TaskGraph, result: &RunResult, ranks: &[(u32, String)], title: &str) -> XyChart {
    let end = result.end.as_ps().max(1);
    let min_gap = (end as f64 / LANE_RESOLUTION) as u64;
    let row = |rank: u32| ranks.iter().position(|(r, _)| *r == rank);
    let mut compute: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    let mut comm: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    for (i, t) in graph.tasks().iter().enumerate() {
        let Some(r) = row(graph.stream(t.stream).rank) else { continue };
        let s = result.spans[i];
        let iv = (s.start.as_ps(), s.end.as_ps());
        if iv.1 <= iv.0 {
            continue;
        }
        match (t.class, &t.kind) {
            (TaskClass::Compute | TaskClass::Memory, TaskKind::Kernel(_)) => compute[r].push(iv),
            (TaskClass::Communication, _) => comm[r].push(iv),
            _ => {}
        }
    }
    let n = ranks.len();
    let labels: Vec<String> = ranks.iter().rev().map(|(_, l)| l.clone()).collect();
    let mut chart = XyChart::new(
        "timeline",
        title,
        // 10 % of room on the right for the legend.
        Axis::linear("time, s").with_range(0.0, end as f64 / 1e12 * 1.1),
        Axis::linear("").with_range(-0.5, n as f64 - 0.5).with_categories(labels),
    );
    chart.size = (1400, (120 + 34 * n as u32).max(400));
    chart.legend = LegendPosition::UpperRight;
    let lanes: [(&str, RGBColor, f64, f64); 2] =
        [("compute", color(0), 0.02, 0.42), ("communication", color(1), -0.42, -0.02)];
    for (k, lists) in [compute, comm].into_iter().enumerate() {
        let (name, c, lo, hi) = lanes[k];
        let mut named = false;
        for (r, iv) in lists.into_iter().enumerate() {
            let y = (n - 1 - r) as f64;
            for (a, b) in merged(iv, min_gap) {
                chart.rects.push(RectMark {
                    x0: a as f64 / 1e12,
                    x1: b as f64 / 1e12,
                    y0: y + lo,
                    y1: y + hi,
                    color: c,
                    legend: (!named).then(|| name.to_owned()),
                });
                named = true;
            }
        }
    }
    chart
}

/// Stacked bars per rank: compute alone, communication hidden behind
/// compute, exposed communication, idle; seconds, over a run of `end_s`.
pub fn breakdown(activity: &[RankActivity], labels: &[String], end_s: f64, title: &str) -> XyChart {
    let mut chart = XyChart::new(
        "breakdown",
        title,
        Axis::linear("").with_range(-0.6, activity.len() as f64 - 0.4).with_categories(labels.to_vec()),
        Axis::linear("time per step, s").with_range(0.0, end_s * 1.4),
    );
    chart.size = (1200, 640);
    chart.legend = LegendPosition::UpperRight;
    let parts = ["compute only", "communication hidden by compute", "communication exposed", "idle (bubble)"];
    for (i, a) in activity.iter().enumerate() {
        let ps = |v: u64| v as f64 / 1e12;
        let values = [
            ps(a.compute_ps - a.overlap_ps),
            ps(a.overlap_ps),
            ps(a.exposed_comm_ps()),
            (end_s - ps(a.busy_ps)).max(0.0),
        ];
        let mut y = 0.0;
        for (k, v) in values.into_iter().enumerate() {
            chart.rects.push(RectMark {
                x0: i as f64 - 0.35,
                x1: i as f64 + 0.35,
                y0: y,
                y1: y + v,
                color: [color(0), color(2), color(1), RGBColor(200, 200, 200)][k],
                legend: (i == 0).then(|| parts[k].to_owned()),
            });
            y += v;
        }
    }
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_intervals_merge() {
        assert_eq!(merged(vec![(10, 20), (0, 5), (21, 30), (100, 110)], 2), vec![(0, 5), (10, 30), (100, 110)]);
    }
}
