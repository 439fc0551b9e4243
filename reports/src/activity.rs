//! Figures of what ranks did over a run: a timeline (a lane of compute and a
//! lane of communication per rank, idle time left white) and a stacked
//! breakdown of each rank's time into compute alone, communication hidden
//! behind compute, exposed communication and idle (bubble) time.

use moesim_sim::analysis::RankActivity;
use moesim_sim::{RunResult, TaskClass, TaskGraph, TaskKind};
use plotters::style::RGBColor;

use crate::plot::{color, Axis, LegendPosition, RectMark, Series, SeriesStyle, XyChart};

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
/// compute lane and a communication lane, time in seconds (milliseconds or
/// microseconds for a shorter run).
pub fn timeline(graph: &TaskGraph, result: &RunResult, ranks: &[(u32, String)], title: &str) -> XyChart {
    let end = result.end.as_ps().max(1);
    let min_gap = (end as f64 / LANE_RESOLUTION) as u64;
    let row = |rank: u32| ranks.iter().position(|(r, _)| *r == rank);
    let mut compute: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    let mut comm: Vec<Vec<(u64, u64)>> = vec![Vec::new(); ranks.len()];
    for (i, t) in graph.tasks().enumerate() {
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
    let (scale, unit) = match end {
        e if e >= 1_000_000_000_000 => (1e12, "s"),
        e if e >= 1_000_000_000 => (1e9, "ms"),
        _ => (1e6, "us"),
    };
    let mut chart = XyChart::new(
        "timeline",
        title,
        Axis::linear(format!("time, {unit}")).with_range(0.0, end as f64 / scale),
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
                    x0: a as f64 / scale,
                    x1: b as f64 / scale,
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
        Axis::linear("time per step, s").with_range(0.0, end_s * 1.05),
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

/// The colour of a pipeline op by its label: forward `F…` blue, backward
/// (input gradients) `B…` orange, weight gradients `W…` green, a forward
/// and backward overlapped in one op (`F…+B…`) purple; `None` for others.
fn pipeline_op(label: &str) -> Option<(&'static str, RGBColor)> {
    if label.contains('+') {
        return Some(("F+B overlapped", color(4)));
    }
    match label.chars().next()? {
        'F' => Some(("F: forward", color(0))),
        'B' => Some(("B: backward (input gradients)", color(1))),
        'W' => Some(("W: weight gradients", color(2))),
        _ => None,
    }
}

/// One bar of a pipeline Gantt chart: a pipeline op on a row.
#[derive(Debug, Clone, PartialEq)]
pub struct GanttBar {
    /// Row index, top to bottom.
    pub row: usize,
    pub start_ps: u64,
    pub end_ps: u64,
    /// The op's label (`F3.1`, `B0.2`, `W1.0`, `F3.1+B0.2`): its colour.
    pub label: String,
}

/// The bars of a pipeline run's graph: every task whose label is a
/// pipeline op, a row per rank (ranks in order).
pub fn pipeline_bars(graph: &TaskGraph, result: &RunResult) -> (Vec<String>, Vec<GanttBar>) {
    let mut ranks: Vec<u32> = graph.streams().iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let rows = ranks.iter().map(|r| format!("device {r}")).collect();
    let bars = graph
        .tasks()
        .enumerate()
        .filter_map(|(i, t)| {
            let s = result.spans[i];
            let label = graph.label_str(t.label);
            (s.end > s.start && pipeline_op(label).is_some()).then(|| GanttBar {
                row: ranks.iter().position(|&r| r == graph.stream(t.stream).rank).unwrap_or(0),
                start_ps: s.start.as_ps(),
                end_ps: s.end.as_ps(),
                label: label.to_owned(),
            })
        })
        .collect();
    (rows, bars)
}

/// The pipeline schedule as a Gantt chart: a row per pipeline device, each
/// op a bar coloured F / B / W (see [`pipeline_op`]); time in seconds,
/// milliseconds or microseconds as suits the run.
pub fn pipeline_gantt(rows: &[String], bars: &[GanttBar], end_ps: u64, title: &str) -> XyChart {
    let n = rows.len();
    let labels: Vec<String> = rows.iter().rev().cloned().collect();
    let end_ps = end_ps.max(1);
    let (scale, unit) = match end_ps {
        e if e >= 1_000_000_000_000 => (1e12, "s"),
        e if e >= 1_000_000_000 => (1e9, "ms"),
        _ => (1e6, "us"),
    };
    let end = end_ps as f64 / scale;
    let mut chart = XyChart::new(
        "pipeline",
        title,
        Axis::linear(format!("time, {unit}")).with_range(0.0, end),
        Axis::linear("").with_range(-0.6, n as f64 - 0.4).with_categories(labels),
    );
    chart.size = (1400, (160 + 40 * n as u32).max(420));
    chart.legend = LegendPosition::UpperRight;
    for b in bars {
        let Some((name, c)) = pipeline_op(&b.label) else { continue };
        let (x0, x1) = (b.start_ps as f64 / scale, b.end_ps as f64 / scale);
        // A thin white gap between neighbouring ops.
        let gap = ((x1 - x0) * 0.04).min(end * 0.0008);
        let y = (n - 1 - b.row.min(n.saturating_sub(1))) as f64;
        chart.rects.push(RectMark {
            x0: x0 + gap,
            x1: (x1 - gap).max(x0 + gap),
            y0: y - 0.35,
            y1: y + 0.35,
            color: c,
            legend: Some(name.to_owned()),
        });
    }
    chart
}

/// Link utilisation over a run: per time bin, the mean over the links
/// that carried traffic and the busiest link's, plus the `top` links that
/// carried the most bytes; `links` gives each link's name and capacity
/// (bytes/s) and `series` its rate changes (exact, or time-averaged bins of
/// at most 1/512 of the run when the run's history passed the engine's
/// budget: `moesim_sim::series`).
pub fn link_utilisation(
    links: &[(String, f64)],
    series: &[Vec<moesim_sim::LinkSample>],
    bytes: &[f64],
    end_ps: u64,
    top: usize,
    title: &str,
) -> XyChart {
    const BINS: usize = 400;
    let end_ps = end_ps.max(1);
    let width = end_ps.div_ceil(BINS as u64).max(1);
    let used: Vec<usize> = (0..series.len().min(links.len())).filter(|&i| !series[i].is_empty()).collect();
    let util_bins = |i: usize| -> Vec<f64> {
        let mut b = vec![0.0f64; BINS];
        let s = &series[i];
        for (k, smp) in s.iter().enumerate() {
            let (a, e) = (smp.time.as_ps(), s.get(k + 1).map_or(end_ps, |n| n.time.as_ps()).min(end_ps));
            let mut t = a;
            while t < e {
                let bin = (t / width) as usize;
                let stop = ((bin as u64 + 1) * width).min(e);
                if let Some(x) = b.get_mut(bin) {
                    *x += smp.bytes_per_s * (stop - t) as f64;
                }
                t = stop;
            }
        }
        let cap = links[i].1.max(1e-9);
        b.iter().map(|v| v / (cap * width as f64)).collect()
    };
    let all: Vec<Vec<f64>> = used.iter().map(|&i| util_bins(i)).collect();
    let x_us = |bin: usize| (bin as u64 * width) as f64 / 1e6;
    let mut chart = XyChart::new(
        "link_utilisation",
        title,
        Axis::linear("time, us").with_range(0.0, end_ps as f64 / 1e6),
        Axis::linear("utilisation of the link's rate").with_range(0.0, 1.05),
    );
    chart.legend = LegendPosition::UpperRight;
    chart.size = (1200, 600);
    let step = |vals: Vec<f64>| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = vals.iter().enumerate().map(|(b, &v)| (x_us(b), v.min(1.0))).collect();
        pts.push((end_ps as f64 / 1e6, vals.last().copied().unwrap_or(0.0).min(1.0)));
        pts
    };
    if !all.is_empty() {
        let mean: Vec<f64> = (0..BINS).map(|b| all.iter().map(|v| v[b]).sum::<f64>() / all.len() as f64).collect();
        let max: Vec<f64> = (0..BINS).map(|b| all.iter().map(|v| v[b]).fold(0.0, f64::max)).collect();
        chart.series.push(Series {
            name: "busiest link at each time".into(),
            color: color(1),
            style: SeriesStyle::Step { width: 2 },
            points: step(max),
            in_legend: true,
        });
        chart.series.push(Series {
            name: format!("mean of the {} links used", all.len()),
            color: color(0),
            style: SeriesStyle::Step { width: 3 },
            points: step(mean),
            in_legend: true,
        });
    }
    // The links that carried the most bytes, over the summaries.
    let mut order: Vec<usize> = (0..used.len()).collect();
    order.sort_by(|&a, &b| {
        bytes.get(used[b]).unwrap_or(&0.0).total_cmp(bytes.get(used[a]).unwrap_or(&0.0)).then(a.cmp(&b))
    });
    for (k, &j) in order.iter().take(top).enumerate() {
        chart.series.push(Series {
            name: format!("{} (most bytes, {})", links[used[j]].0, k + 1),
            color: color(2 + k),
            style: SeriesStyle::Step { width: 2 },
            points: step(all[j].clone()),
            in_legend: true,
        });
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
