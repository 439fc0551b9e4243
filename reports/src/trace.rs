//! `trace.json.gz` (the caller compresses): the Chrome trace event format
//! (Perfetto and chrome://tracing open it, gzip or not). A process per rank with a thread per stream and one
//! complete event per task; a `network` process with a counter track per link
//! that carried traffic (when the run recorded link series), for the
//! [`MAX_COUNTER_LINKS`] links that carried the most bytes (every link's
//! totals are in `resources.csv`). Written as a stream, so graphs with
//! millions of tasks need no big in-memory document. A link whose rate
//! changed more than [`MAX_COUNTER_SAMPLES`] times is shown as its
//! time-averaged rate over that many equal bins (bytes are kept); a run
//! whose history passed the engine's budget hands in links already
//! coarsened into bins of at least 1/512 of the run (`moesim_sim::series`),
//! which a short window shows as few steps. Only the tasks of an
//! [`EventWindow`] are written, and the counters are cut to its span.

use std::io::Write;

use moesim_sim::{LinkSample, Platform, RunResult, TaskGraph};

/// Most counter samples written per link.
pub const MAX_COUNTER_SAMPLES: usize = 2000;

/// Most links given a counter track: the busiest by bytes carried. A
/// 144-GPU all-to-all touches ~700 links; their tracks would be 99 % of the
/// file and unreadable side by side.
pub const MAX_COUNTER_LINKS: usize = 64;

/// Indices of the links to draw: physical links with a series (modelling
/// constructs such as the SM ports are left out), busiest first by bytes
/// (ties by index), at most [`MAX_COUNTER_LINKS`], in index order.
fn counter_links(platform: &Platform, result: &RunResult) -> Vec<usize> {
    let physical = |i: usize| platform.links.get(i).is_some_and(|l| l.kind.is_physical());
    let mut links: Vec<usize> =
        (0..result.link_series.len()).filter(|&i| !result.link_series[i].is_empty() && physical(i)).collect();
    let bytes = |i: usize| result.links.get(i).map_or(0.0, |l| l.bytes);
    links.sort_by(|&a, &b| bytes(b).total_cmp(&bytes(a)).then(a.cmp(&b)));
    links.truncate(MAX_COUNTER_LINKS);
    links.sort_unstable();
    links
}

/// `(time_us, gb_per_s)` points of a link's rate in `[start_ps, end_ps)`:
/// the series itself when it is short (with the rate in force at
/// `start_ps`), else the average rate over `bins` equal bins.
fn counter_points(series: &[LinkSample], start_ps: u64, end_ps: u64, bins: usize) -> Vec<(f64, f64)> {
    let first = series.partition_point(|s| s.time.as_ps() <= start_ps).saturating_sub(1);
    let stop = series.partition_point(|s| s.time.as_ps() < end_ps);
    let series = if first < stop { &series[first..stop] } else { &[][..] };
    if series.len() <= bins || end_ps <= start_ps {
        return series.iter().map(|s| (s.time.as_ps().max(start_ps) as f64 / 1e6, s.bytes_per_s / 1e9)).collect();
    }
    let width = (end_ps - start_ps).div_ceil(bins as u64).max(1);
    let mut bytes = vec![0.0f64; bins];
    for (i, s) in series.iter().enumerate() {
        let a = s.time.as_ps().max(start_ps) - start_ps;
        let b = series.get(i + 1).map_or(end_ps, |n| n.time.as_ps()).min(end_ps) - start_ps;
        let mut t = a;
        while t < b {
            let bin = (t / width) as usize;
            let stop = ((bin as u64 + 1) * width).min(b);
            if let Some(x) = bytes.get_mut(bin) {
                *x += s.bytes_per_s * (stop - t) as f64 / 1e12;
            }
            t = stop;
        }
    }
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (bin, b) in bytes.iter().enumerate() {
        let rate = b / (width as f64 / 1e12) / 1e9;
        if out.last().is_none_or(|&(_, r)| (r - rate).abs() > 1e-9) {
            out.push(((start_ps + bin as u64 * width) as f64 / 1e6, rate));
        }
    }
    out
}

use crate::window::EventWindow;
use crate::ReportError;

/// Writes the trace of a run: the tasks of `window`, and the link counters
/// over its span.
pub fn write_chrome_trace<W: Write>(
    mut w: W,
    graph: &TaskGraph,
    platform: &Platform,
    result: &RunResult,
    window: &EventWindow,
) -> Result<(), ReportError> {
    write!(w, "{{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")?;
    let mut first = true;
    let mut sep = |w: &mut W| -> std::io::Result<()> {
        if !std::mem::take(&mut first) {
            w.write_all(b",\n")?;
        }
        Ok(())
    };
    // Metadata: process per rank, thread per stream.
    let mut ranks: Vec<u32> = graph.streams().iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for &r in &ranks {
        sep(&mut w)?;
        write!(w, "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{r},\"args\":{{\"name\":\"rank {r}\"}}}}")?;
        sep(&mut w)?;
        write!(w, "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{r},\"args\":{{\"sort_index\":{r}}}}}")?;
    }
    for (i, s) in graph.streams().iter().enumerate() {
        sep(&mut w)?;
        write!(w, "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{i},\"args\":{{\"name\":", s.rank)?;
        serde_json::to_writer(&mut w, graph.label_str(s.name))?;
        write!(w, "}}}}")?;
    }
    for &i in &window.tasks {
        let (task, span) = (graph.task(moesim_sim::TaskId(i as u32)), &result.spans[i]);
        let stream = graph.stream(task.stream);
        sep(&mut w)?;
        write!(
            w,
            "{{\"ph\":\"X\",\"pid\":{},\"tid\":{},\"ts\":{:.6},\"dur\":{:.6},\"cat\":\"{}\",\"name\":",
            stream.rank,
            task.stream.0,
            span.start.as_us_f64(),
            (span.end - span.start).as_us_f64(),
            task.class.as_str()
        )?;
        serde_json::to_writer(&mut w, graph.label_str(task.label))?;
        write!(w, ",\"args\":{{\"task\":{i}}}}}")?;
    }
    // Link counters.
    let drawn = counter_links(platform, result);
    if !drawn.is_empty() {
        let net = ranks.last().map_or(0, |r| r + 1);
        // Every link that carried traffic, the unrecorded constructs too (a
        // link's series is non-empty exactly when it was busy).
        let carrying = result.links.iter().filter(|l| l.busy_ps > 0).count();
        let name = if drawn.len() < carrying {
            format!("network ({} busiest of {carrying} links; all in resources.csv)", drawn.len())
        } else {
            "network".to_string()
        };
        sep(&mut w)?;
        write!(w, "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{net},\"args\":{{\"name\":")?;
        serde_json::to_writer(&mut w, &name)?;
        write!(w, "}}}}")?;
        for i in drawn {
            let (link, series) = (&platform.links[i], &result.link_series[i]);
            for (time_us, gb_per_s) in counter_points(series, window.start_ps, window.end_ps, MAX_COUNTER_SAMPLES) {
                sep(&mut w)?;
                write!(w, "{{\"ph\":\"C\",\"pid\":{net},\"ts\":{time_us:.6},\"name\":")?;
                serde_json::to_writer(&mut w, &link.name)?;
                write!(w, ",\"args\":{{\"gb_per_s\":{gb_per_s:.6}}}}}")?;
            }
        }
    }
    writeln!(w, "]}}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::SimTime;

    #[test]
    fn long_series_are_binned_keeping_bytes() {
        // 10 GB/s for 1 us, 0 for 1 us, alternating: 1000 changes over 1 ms.
        let series: Vec<LinkSample> = (0..1000)
            .map(|i| LinkSample { time: SimTime(i * 1_000_000), bytes_per_s: if i % 2 == 0 { 10e9 } else { 0.0 } })
            .collect();
        let pts = counter_points(&series, 0, 1_000_000_000, 10);
        assert_eq!(pts.len(), 1);
        assert!((pts[0].1 - 5.0).abs() < 1e-9, "{pts:?}");
        assert_eq!(counter_points(&series[..5], 0, 5_000_000, 10).len(), 5);
        // A window from 2.5 us to 4 us: the rate in force at 2.5 us, then the change at 3 us.
        let cut = counter_points(&series[..5], 2_500_000, 4_000_000, 10);
        assert_eq!(cut, vec![(2.5, 10.0), (3.0, 0.0)]);
    }

    #[test]
    fn only_the_busiest_links_get_counter_tracks() {
        // Link i carried i bytes; link 3 has no series.
        let n = MAX_COUNTER_LINKS + 10;
        let sample = LinkSample { time: SimTime(0), bytes_per_s: 1.0 };
        let result = RunResult {
            links: (0..n).map(|i| moesim_sim::LinkStats { bytes: i as f64, ..Default::default() }).collect(),
            link_series: (0..n).map(|i| if i == 3 { Vec::new() } else { vec![sample] }).collect(),
            ..Default::default()
        };
        // Link n-1 (the busiest) is a modelling construct: never drawn.
        let link = |i: usize| moesim_sim::LinkResource {
            name: format!("l{i}"),
            kind: if i == n - 1 {
                moesim_sim::LinkKind::Construct("sm-port")
            } else {
                moesim_sim::LinkKind::Physical("nvlink")
            },
            bytes_per_s: 1.0,
            latency: moesim_sim::SimDuration::ZERO,
        };
        let platform = Platform { links: (0..n).map(link).collect(), ..Platform::default() };
        let drawn = counter_links(&platform, &result);
        assert_eq!(drawn.len(), MAX_COUNTER_LINKS);
        assert_eq!(drawn, (9..n - 1).collect::<Vec<_>>(), "the busiest physical links, in index order");
    }
}
