//! The replay figure: per stream, the measured lane (from the trace) above
//! the simulated lane (the replay, or a what-if), on one time axis, coloured
//! by what the op counts as (compute, communication, memory).

use moesim_sim::TaskClass;

use crate::plot::{color, Axis, LegendPosition, RectMark, XyChart};

/// Most rectangles drawn per lane (closer intervals are merged).
const LANE_RESOLUTION: f64 = 2000.0;

/// One lane: a label and its `(start_ps, end_ps, class)` intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneData {
    pub label: String,
    pub intervals: Vec<(u64, u64, TaskClass)>,
}

/// Lanes top to bottom in the order given; time in milliseconds. The x
/// axis runs a fifth past the last interval so the legend sits on empty
/// room at the upper right.
pub fn lanes(lanes: &[LaneData], title: &str) -> XyChart {
    let end = lanes.iter().flat_map(|l| l.intervals.iter().map(|i| i.1)).max().unwrap_or(1).max(1);
    let min_gap = (end as f64 / LANE_RESOLUTION) as u64;
    let n = lanes.len();
    let labels: Vec<String> = lanes.iter().rev().map(|l| l.label.clone()).collect();
    let mut chart = XyChart::new(
        "replay_vs_trace",
        title,
        Axis::linear("time, ms").with_range(0.0, end as f64 / 1e9 * 1.25),
        Axis::linear("").with_range(-0.5, n as f64 - 0.5).with_categories(labels),
    );
    chart.size = (1400, (160 + 30 * n as u32).max(420));
    chart.legend = LegendPosition::UpperRight;
    let kinds = [
        (TaskClass::Compute, "compute", color(0)),
        (TaskClass::Communication, "communication", color(1)),
        (TaskClass::Memory, "memory (copy, set)", color(2)),
    ];
    let mut named = [false; 3];
    for (li, lane) in lanes.iter().enumerate() {
        let y = (n - 1 - li) as f64;
        for (k, &(class, name, c)) in kinds.iter().enumerate() {
            let mut iv: Vec<(u64, u64)> =
                lane.intervals.iter().filter(|i| i.2 == class && i.1 > i.0).map(|i| (i.0, i.1)).collect();
            iv.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (a, b) in iv {
                match merged.last_mut() {
                    Some(last) if a <= last.1.saturating_add(min_gap) => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            for (a, b) in merged {
                chart.rects.push(RectMark {
                    x0: a as f64 / 1e9,
                    x1: b as f64 / 1e9,
                    y0: y - 0.35,
                    y1: y + 0.35,
                    color: c,
                    legend: (!named[k]).then(|| name.to_owned()),
                });
                named[k] = true;
            }
        }
    }
    chart
}
