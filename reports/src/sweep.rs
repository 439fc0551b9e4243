//! A parameter sweep's outputs: `sweep.csv` (a row per point: the varied
//! keys' values, then every metric the runs reported) and, per metric, a
//! chart of it against the first varied key with one line per combination
//! of the other keys' values (grouped bars when the first key's values are
//! not numbers).

use std::io::Write;

use serde_json::Value;

use crate::plot::{color, Axis, LegendPosition, RectMark, Series, SeriesStyle, XyChart};
use crate::ReportError;

/// Every point of a sweep, in the order it was run.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepTable {
    /// The varied keys (dotted scenario paths).
    pub keys: Vec<String>,
    /// Metric names: the union over the points, in first-seen order.
    pub metrics: Vec<String>,
    pub rows: Vec<SweepRow>,
}

/// One point: its value of each varied key and of each metric (`None`
/// where the run did not report it), or why the point could not run.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub values: Vec<String>,
    pub metrics: Vec<Option<Value>>,
    /// The input error of a point that could not run (its metrics are all
    /// `None`).
    pub error: Option<String>,
}

fn cell(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Writes `sweep.csv` (with a last `error` column when a point could not
/// run).
pub fn write_csv<W: Write>(w: W, table: &SweepTable) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    let errors = table.rows.iter().any(|r| r.error.is_some());
    let error_column = errors.then(|| "error".to_owned());
    out.write_record(table.keys.iter().chain(&table.metrics).chain(&error_column))?;
    for row in &table.rows {
        let error = errors.then(|| row.error.clone().unwrap_or_default());
        out.write_record(row.values.iter().cloned().chain(row.metrics.iter().map(cell)).chain(error))?;
    }
    out.flush()?;
    Ok(())
}

/// What a metric's values are, for drawing.
enum MetricKind {
    /// Numbers: lines with markers (a line breaks at a point that has none).
    Number,
    /// `true`/`false`, or text: markers only, on a category axis.
    Categories(Vec<String>),
}

/// Most distinct text values a metric may have to be drawn as categories.
const MAX_CATEGORIES: usize = 16;

/// The chart of `metric` against the first varied key (numbers on a linear
/// axis when every value is one, else categories in sweep order), a line
/// per combination of the other keys. A number metric is a line with
/// markers that breaks where a point could not run or has no value; a
/// boolean or text metric is markers only, on a category axis. A memory
/// metric (`memory*_gib*`) has the device's HBM capacity (`hbm_gib`) drawn
/// as a dashed line. `None` when the metric has no drawable value.
pub fn chart(table: &SweepTable, metric: &str, title: &str) -> Option<XyChart> {
    let m = table.metrics.iter().position(|name| name == metric)?;
    let raw = |row: &SweepRow| row.metrics[m].clone().filter(|v| !v.is_null());
    let kind = if table.rows.iter().any(|r| raw(r).is_some_and(|v| v.is_number())) {
        MetricKind::Number
    } else {
        let mut cats: Vec<String> = Vec::new();
        if table.rows.iter().any(|r| raw(r).is_some_and(|v| v.is_boolean())) {
            cats = vec!["false".into(), "true".into()];
        }
        for r in &table.rows {
            if let Some(Value::String(t)) = raw(r) {
                if !cats.contains(&t) {
                    cats.push(t);
                }
            }
        }
        if cats.is_empty() || cats.len() > MAX_CATEGORIES {
            return None;
        }
        MetricKind::Categories(cats)
    };
    let y = |row: &SweepRow| -> Option<f64> {
        let v = raw(row)?;
        match &kind {
            MetricKind::Number => v.as_f64(),
            MetricKind::Categories(cats) => {
                let text = match v {
                    Value::String(t) => t,
                    other => other.to_string(),
                };
                cats.iter().position(|c| *c == text).map(|i| i as f64)
            }
        }
    };
    if !table.rows.iter().any(|r| y(r).is_some()) {
        return None;
    }
    let key = table.keys.first()?;
    let mut categories: Vec<String> = Vec::new();
    for r in &table.rows {
        if !categories.contains(&r.values[0]) {
            categories.push(r.values[0].clone());
        }
    }
    let numeric: Option<Vec<f64>> = categories.iter().map(|c| c.parse::<f64>().ok()).collect();
    let x_of = |v: &str| match &numeric {
        Some(_) => v.parse::<f64>().unwrap_or(f64::NAN),
        None => categories.iter().position(|c| c == v).unwrap_or(0) as f64,
    };
    let x_axis = match &numeric {
        Some(_) => Axis::linear(key.clone()),
        None => Axis::linear(key.clone())
            .with_range(-0.5, categories.len() as f64 - 0.5)
            .with_categories(categories.clone()),
    };
    // The HBM capacity beside a memory metric, when every point has the same.
    let hbm = table
        .metrics
        .iter()
        .position(|n| n == "hbm_gib")
        .filter(|_| metric.starts_with("memory") && metric.contains("_gib"));
    let hbm: Option<f64> = hbm.and_then(|h| {
        let vals: Vec<f64> = table.rows.iter().filter_map(|r| r.metrics[h].as_ref().and_then(Value::as_f64)).collect();
        vals.first().copied().filter(|first| vals.iter().all(|v| v == first))
    });
    let values: Vec<f64> = table.rows.iter().filter_map(y).chain(hbm).collect();
    let (lo, hi) = values.iter().fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let y_axis = match &kind {
        MetricKind::Number => Axis::linear(metric).with_range(lo * 1.05, if hi > 0.0 { hi * 1.08 } else { 1.0 }),
        MetricKind::Categories(cats) => {
            Axis::linear(metric).with_range(-0.5, cats.len() as f64 - 0.5).with_categories(cats.clone())
        }
    };
    let mut chart = XyChart::new(format!("sweep_{metric}"), title, x_axis, y_axis);
    // One series per combination of the other keys, in first-seen order;
    // `None` where a point of it has no value.
    let mut names: Vec<String> = Vec::new();
    let mut series: Vec<Vec<Option<(f64, f64)>>> = Vec::new();
    for r in &table.rows {
        let name = series_name(&table.keys[1..], &r.values[1..]);
        let i = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            series.push(Vec::new());
            names.len() - 1
        });
        series[i].push(y(r).map(|v| (x_of(&r.values[0]), v)));
    }
    let legend = table.keys.len() > 1;
    let points_only = matches!(kind, MetricKind::Categories(_));
    if numeric.is_some() || points_only {
        for (i, (name, points)) in names.iter().zip(&series).enumerate() {
            // Markers of several series side by side (they would hide
            // each other): within a category, or a fraction of the gap
            // between numeric x values.
            let spacing = match &numeric {
                None => 1.0,
                Some(xs) => {
                    let mut xs = xs.clone();
                    xs.sort_by(f64::total_cmp);
                    xs.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0.0).fold(f64::INFINITY, f64::min)
                }
            };
            let shift = if points_only && names.len() > 1 && spacing.is_finite() {
                (i as f64 - (names.len() - 1) as f64 / 2.0) * (0.4 * spacing / names.len() as f64)
            } else {
                0.0
            };
            let valid: Vec<(f64, f64)> = points.iter().flatten().map(|&(x, v)| (x + shift, v)).collect();
            if !points_only {
                // A line per run of consecutive valid points: a point that
                // could not run breaks the line.
                for (k, run) in points.split(Option::is_none).filter(|r| !r.is_empty()).enumerate() {
                    chart.series.push(Series {
                        name: name.clone(),
                        color: color(i),
                        style: SeriesStyle::Line { width: 2 },
                        points: run.iter().flatten().copied().collect(),
                        in_legend: legend && k == 0,
                    });
                }
            }
            chart.series.push(Series {
                name: name.clone(),
                color: color(i),
                style: SeriesStyle::Points { radius: if points_only { 7 } else { 4 } },
                points: valid,
                in_legend: legend && points_only,
            });
        }
    } else {
        // Categories on x, numbers on y: grouped bars, one per series in each category.
        let width = 0.8 / names.len() as f64;
        for (i, (name, points)) in names.iter().zip(&series).enumerate() {
            for (k, &(x, v)) in points.iter().flatten().enumerate() {
                let x0 = x - 0.4 + i as f64 * width;
                chart.rects.push(RectMark {
                    x0,
                    x1: x0 + width * 0.9,
                    y0: 0.0,
                    y1: v,
                    color: color(i),
                    legend: (legend && k == 0).then(|| name.clone()),
                });
            }
        }
    }
    if let Some(cap) = hbm {
        let (a, b) = match &numeric {
            Some(xs) => xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x))),
            None => (-0.5, categories.len() as f64 - 0.5),
        };
        chart.series.push(Series {
            name: format!("HBM capacity ({cap} GiB)"),
            color: color(7),
            style: SeriesStyle::Dashed { width: 2 },
            points: vec![(a, cap), (b, cap)],
            in_legend: true,
        });
    }
    chart.legend = if chart.series.iter().any(|s| s.in_legend) || chart.rects.iter().any(|r| r.legend.is_some()) {
        LegendPosition::UpperRight
    } else {
        LegendPosition::None
    };
    Some(chart)
}

fn series_name(keys: &[String], values: &[String]) -> String {
    if keys.is_empty() {
        return "all".into();
    }
    keys.iter().zip(values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SweepTable {
        let row = |a: &str, b: &str, t: f64| SweepRow {
            values: vec![a.into(), b.into()],
            metrics: vec![Some(Value::from(t)), Some(Value::from("x,y"))],
            error: None,
        };
        SweepTable {
            keys: vec!["topology.ib_gbit_per_s".into(), "hardware.device".into()],
            metrics: vec!["step_time_s".into(), "note".into()],
            rows: vec![
                row("200", "h800", 2.0),
                row("200", "h20", 3.0),
                row("400", "h800", 1.5),
                row("400", "h20", 2.5),
            ],
        }
    }

    #[test]
    fn csv_has_a_row_per_point_with_quoted_text() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &table()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "topology.ib_gbit_per_s,hardware.device,step_time_s,note");
        assert_eq!(lines[1], "200,h800,2.0,\"x,y\"");
        assert_eq!(lines.len(), 5);
        let mut t = table();
        t.rows[1] = SweepRow { values: t.rows[1].values.clone(), metrics: vec![None, None], error: Some("bad".into()) };
        let mut buf = Vec::new();
        write_csv(&mut buf, &t).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("topology.ib_gbit_per_s,hardware.device,step_time_s,note,error\n"), "{text}");
        assert!(text.lines().nth(2).unwrap().ends_with(",,,bad"), "{text}");
    }

    #[test]
    fn chart_draws_a_line_per_other_combination_against_the_first_key() {
        let c = chart(&table(), "step_time_s", "t").unwrap();
        let lines: Vec<&Series> = c.series.iter().filter(|s| s.in_legend).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "hardware.device=h800");
        assert_eq!(lines[0].points, vec![(200.0, 2.0), (400.0, 1.5)]);
        assert!(c.x.categories.is_empty(), "numeric x axis");
        // Devices first: categories on x, a bar per (device, bandwidth).
        let mut t = table();
        t.keys.swap(0, 1);
        for r in &mut t.rows {
            r.values.swap(0, 1);
        }
        let c = chart(&t, "step_time_s", "t").unwrap();
        assert_eq!(c.x.categories, ["h800", "h20"]);
        assert_eq!(c.rects.len(), 4);
        assert!(c.series.is_empty());
        assert!(chart(&table(), "missing", "t").is_none());
    }

    #[test]
    fn text_and_boolean_metrics_are_markers_and_a_failed_point_breaks_the_line() {
        let c = chart(&table(), "note", "t").unwrap();
        assert_eq!(c.y.categories, ["x,y"]);
        assert!(c.series.iter().all(|s| matches!(s.style, SeriesStyle::Points { .. })), "markers only");
        let mut t = table();
        t.metrics.push("fits".into());
        for (i, r) in t.rows.iter_mut().enumerate() {
            r.metrics.push(Some(Value::from(i % 2 == 0)));
        }
        let c = chart(&t, "fits", "t").unwrap();
        assert_eq!(c.y.categories, ["false", "true"]);
        assert!(c.series.iter().all(|s| matches!(s.style, SeriesStyle::Points { .. })));
        // Three bandwidths for h800, the middle one failed: two lines, not one across it.
        let row = |a: &str, v: Option<f64>| SweepRow {
            values: vec![a.into()],
            metrics: vec![v.map(Value::from)],
            error: v.is_none().then(|| "bad".into()),
        };
        let t = SweepTable {
            keys: vec!["topology.ib_gbit_per_s".into()],
            metrics: vec!["step_time_s".into()],
            rows: vec![row("100", Some(3.0)), row("200", None), row("400", Some(1.0)), row("800", Some(0.8))],
        };
        let c = chart(&t, "step_time_s", "t").unwrap();
        let lines: Vec<&Series> = c.series.iter().filter(|s| matches!(s.style, SeriesStyle::Line { .. })).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].points, vec![(100.0, 3.0)]);
        assert_eq!(lines[1].points, vec![(400.0, 1.0), (800.0, 0.8)]);
    }

    #[test]
    fn a_memory_metric_shows_the_hbm_capacity() {
        let row = |a: &str, mem: f64| SweepRow {
            values: vec![a.into()],
            metrics: vec![Some(Value::from(mem)), Some(Value::from(80.0))],
            error: None,
        };
        let t = SweepTable {
            keys: vec!["parallel.zero".into()],
            metrics: vec!["memory_gib_per_gpu".into(), "hbm_gib".into()],
            rows: vec![row("1", 95.0), row("2", 70.0)],
        };
        let c = chart(&t, "memory_gib_per_gpu", "t").unwrap();
        let cap = c.series.iter().find(|s| s.name.starts_with("HBM capacity")).expect("an HBM line");
        assert_eq!(cap.points, vec![(1.0, 80.0), (2.0, 80.0)]);
    }
}
