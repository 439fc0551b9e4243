//! `timeline.csv`: one row per task, in task-id order.

use std::io::Write;

use moesim_sim::{RunResult, TaskGraph};

use crate::{fixed, ReportError};

/// Writes `task_id,rank,stream,label,class,start_us,end_us,duration_us`.
pub fn write_csv<W: Write>(w: W, graph: &TaskGraph, result: &RunResult) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(["task_id", "rank", "stream", "label", "class", "start_us", "end_us", "duration_us"])?;
    for (i, (task, span)) in graph.tasks().iter().zip(&result.spans).enumerate() {
        let stream = graph.stream(task.stream);
        out.write_record([
            i.to_string().as_str(),
            stream.rank.to_string().as_str(),
            graph.label_str(stream.name),
            graph.label_str(task.label),
            task.class.as_str(),
            &fixed(span.start.as_us_f64(), 6),
            &fixed(span.end.as_us_f64(), 6),
            &fixed((span.end - span.start).as_us_f64(), 6),
        ])?;
    }
    out.flush()?;
    Ok(())
}
