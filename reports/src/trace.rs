//! `trace.json`: the Chrome trace event format (opens in Perfetto and
//! chrome://tracing). A process per rank with a thread per stream and one
//! complete event per task; a `network` process with a counter track per link
//! that carried traffic (when the run recorded link series). Written as a
//! stream, so graphs with millions of tasks need no big in-memory document.

use std::io::Write;

use moesim_sim::{Platform, RunResult, TaskGraph};

use crate::ReportError;

/// Writes the trace of a run.
pub fn write_chrome_trace<W: Write>(
    mut w: W,
    graph: &TaskGraph,
    platform: &Platform,
    result: &RunResult,
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
    for (i, (task, span)) in graph.tasks().iter().zip(&result.spans).enumerate() {
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
    if result.link_series.iter().any(|s| !s.is_empty()) {
        let net = ranks.last().map_or(0, |r| r + 1);
        sep(&mut w)?;
        write!(w, "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{net},\"args\":{{\"name\":\"network\"}}}}")?;
        for (link, series) in platform.links.iter().zip(&result.link_series) {
            if series.is_empty() {
                continue;
            }
            for sample in series {
                sep(&mut w)?;
                write!(w, "{{\"ph\":\"C\",\"pid\":{net},\"ts\":{:.6},\"name\":", sample.time.as_us_f64())?;
                serde_json::to_writer(&mut w, &link.name)?;
                write!(w, ",\"args\":{{\"gb_per_s\":{:.6}}}}}", sample.bytes_per_s / 1e9)?;
            }
        }
    }
    writeln!(w, "]}}")?;
    Ok(())
}
