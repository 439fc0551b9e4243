//! `resources.csv`: per device and per link, busy time, utilisation, bytes and
//! rates; which devices were simulated and which links are physical.

use std::io::Write;

use moesim_sim::{Platform, RunResult, TaskGraph};

use crate::{fixed, ReportError};

/// What became of a device in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Its tasks were in the graph.
    Simulated,
    /// Part of the job but without tasks: a simulated rank stands for it
    /// (representative ranks, data-parallel replicas).
    Mirrored,
    /// Not part of the job (a collective over fewer GPUs than the cluster).
    NotSimulated,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Simulated => "simulated",
            DeviceStatus::Mirrored => "mirrored",
            DeviceStatus::NotSimulated => "not-simulated",
        }
    }
}

/// Each device's status: simulated when a stream of the graph runs on it;
/// otherwise mirrored when its rank is below `job_gpus` (every device when
/// `None`), else not simulated.
pub fn device_status(platform: &Platform, graph: &TaskGraph, job_gpus: Option<u32>) -> Vec<DeviceStatus> {
    let mut has_tasks = vec![false; platform.devices.len()];
    for t in graph.tasks() {
        if let Some(x) = has_tasks.get_mut(graph.stream(t.stream).rank as usize) {
            *x = true;
        }
    }
    let job = job_gpus.map_or(platform.devices.len(), |n| n as usize);
    has_tasks
        .iter()
        .enumerate()
        .map(|(i, &tasks)| match (tasks, i < job) {
            (true, _) => DeviceStatus::Simulated,
            (false, true) => DeviceStatus::Mirrored,
            (false, false) => DeviceStatus::NotSimulated,
        })
        .collect()
}

/// Writes devices, then links:
/// `kind,id,name,status,link_kind,physical,busy_us,utilization,unit_utilization,bytes,avg_gb_per_s,peak_gb_per_s`.
/// `status` (devices) is [`DeviceStatus`]: the figures of a mirrored or
/// not-simulated device are zeros because nothing ran on it, not because
/// it idled. `link_kind` (links) is `nvlink`, `pcie`, `infiniband` or a
/// modelling construct (`sm-port`), and `physical` says which.
/// `utilization` is busy time over the run; `unit_utilization` (devices) the
/// mean fraction of compute units in use; `avg_gb_per_s` bytes over the run.
pub fn write_csv<W: Write>(
    w: W,
    platform: &Platform,
    graph: &TaskGraph,
    result: &RunResult,
    job_gpus: Option<u32>,
) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "kind",
        "id",
        "name",
        "status",
        "link_kind",
        "physical",
        "busy_us",
        "utilization",
        "unit_utilization",
        "bytes",
        "avg_gb_per_s",
        "peak_gb_per_s",
    ])?;
    let status = device_status(platform, graph, job_gpus);
    let end_ps = result.end.as_ps().max(1) as f64;
    let end_s = result.end.as_secs_f64().max(1e-12);
    for (i, (d, s)) in platform.devices.iter().zip(&result.devices).enumerate() {
        out.write_record([
            "device",
            &i.to_string(),
            &d.name,
            status[i].as_str(),
            "",
            "",
            &fixed(s.busy_ps as f64 / 1e6, 6),
            &fixed(s.busy_ps as f64 / end_ps, 6),
            &fixed(s.unit_ps / (d.units as f64 * end_ps), 6),
            &fixed(s.mem_bytes, 0),
            &fixed(s.mem_bytes / end_s / 1e9, 6),
            "",
        ])?;
    }
    for (i, (l, s)) in platform.links.iter().zip(&result.links).enumerate() {
        out.write_record([
            "link",
            &i.to_string(),
            &l.name,
            "",
            l.kind.label(),
            if l.kind.is_physical() { "true" } else { "false" },
            &fixed(s.busy_ps as f64 / 1e6, 6),
            &fixed(s.busy_ps as f64 / end_ps, 6),
            "",
            &fixed(s.bytes, 0),
            &fixed(s.bytes / end_s / 1e9, 6),
            &fixed(s.peak_bytes_per_s / 1e9, 6),
        ])?;
    }
    out.flush()?;
    Ok(())
}
