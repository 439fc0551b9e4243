//! `timeline.csv`: one row per task of an [`EventWindow`], in task-id order.

use std::io::Write;

use moesim_sim::{Platform, RunResult, TaskGraph, TaskKind};

use crate::window::EventWindow;
use crate::{fixed, ReportError};

/// Writes `task_id,rank,stream,label,class,resource,start_us,end_us,duration_us`;
/// `resource` is the device a kernel ran on, `network` (or `network+DEVICE`
/// when it held compute units there) for a communication, empty for a delay.
pub fn write_csv<W: Write>(
    w: W,
    graph: &TaskGraph,
    platform: &Platform,
    result: &RunResult,
    window: &EventWindow,
) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(["task_id", "rank", "stream", "label", "class", "resource", "start_us", "end_us", "duration_us"])?;
    for &i in &window.tasks {
        let (task, span) = (graph.task(moesim_sim::TaskId(i as u32)), &result.spans[i]);
        let stream = graph.stream(task.stream);
        let resource = match &task.kind {
            TaskKind::Kernel(k) => platform.device(k.device).name.clone(),
            TaskKind::Comm(c) => match c.hold {
                Some((d, _)) => format!("network+{}", platform.device(d).name),
                None => "network".to_owned(),
            },
            TaskKind::Delay(_) => String::new(),
        };
        out.write_record([
            i.to_string().as_str(),
            stream.rank.to_string().as_str(),
            graph.label_str(stream.name),
            graph.label_str(task.label),
            task.class.as_str(),
            &resource,
            &fixed(span.start.as_us_f64(), 6),
            &fixed(span.end.as_us_f64(), 6),
            &fixed((span.end - span.start).as_us_f64(), 6),
        ])?;
    }
    out.flush()?;
    Ok(())
}
