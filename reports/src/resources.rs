//! `resources.csv`: per device and per link, busy time, utilisation, bytes and
//! rates.

use std::io::Write;

use moesim_sim::{Platform, RunResult};

use crate::{fixed, ReportError};

/// Writes devices, then links:
/// `kind,id,name,busy_us,utilization,unit_utilization,bytes,avg_gb_per_s,peak_gb_per_s`.
/// `utilization` is busy time over the run; `unit_utilization` (devices) the
/// mean fraction of compute units in use; `avg_gb_per_s` bytes over the run.
pub fn write_csv<W: Write>(w: W, platform: &Platform, result: &RunResult) -> Result<(), ReportError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "kind",
        "id",
        "name",
        "busy_us",
        "utilization",
        "unit_utilization",
        "bytes",
        "avg_gb_per_s",
        "peak_gb_per_s",
    ])?;
    let end_ps = result.end.as_ps().max(1) as f64;
    let end_s = result.end.as_secs_f64().max(1e-12);
    for (i, (d, s)) in platform.devices.iter().zip(&result.devices).enumerate() {
        out.write_record([
            "device",
            &i.to_string(),
            &d.name,
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
