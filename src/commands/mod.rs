//! One file per `moesim` command: its clap arguments, what it runs and how it
//! renders. `src/main.rs` only parses the command line and dispatches here.

pub mod calibrate;
pub mod catalog;
pub mod cli;
pub mod keys;
pub mod merge;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run;
pub mod sweep;
pub mod topology;
pub mod validate;

use moesim_reports::window::WindowRequest;

use crate::{builtin, AppError, ScenarioRef};

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What the commands that run one scenario (`run`, `replay`) share: where
/// to write, how to print, overrides and limits.
#[derive(Debug, clap::Args)]
pub struct RunOutput {
    /// Write summary.json, summary.md, scenario.resolved.toml, timeline.csv, resources.csv,
    /// trace.json.gz and the workload's plots and tables here (replacing an earlier moesim
    /// output as a whole).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// The span of simulated time trace.json.gz and timeline.csv hold: START..END in seconds
    /// or with a unit (0.5..0.6, 120ms..130ms, 10us.., ..2ms), or `all`. Default: the
    /// earliest 100000 tasks; the summary says what was left out.
    #[arg(long = "trace-window", value_name = "START..END")]
    pub trace_window: Option<String>,
    /// Print text or one JSON object (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Override a scenario key by its dotted path, e.g. --set workload.ranks=16 (repeatable;
    /// `moesim keys` lists the keys).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub limits: Limits,
}

impl RunOutput {
    /// The checked `--out` folder, the run's options and the trace window,
    /// before anything runs.
    pub fn prepare(
        &self,
    ) -> Result<(Option<crate::output::OutDir>, crate::workloads::RunOptions, WindowRequest), AppError> {
        let window = self.trace_window.as_deref().map(parse_trace_window).transpose()?.unwrap_or_default();
        let out = self.out.as_deref().map(|d| crate::output::OutDir::prepare(d, self.force)).transpose()?;
        let options = crate::workloads::RunOptions {
            record_link_series: out.is_some(),
            figures: out.is_some(),
            max_memory_bytes: Some(self.limits.max_memory_bytes()?),
            spool_dir: out.as_ref().map(crate::output::OutDir::spool_dir),
            flow_finish_tolerance: 0.0,
        };
        Ok((out, options, window))
    }
}

/// Parses `--trace-window`: `all`, or `START..END` with either side
/// optional, each a number of seconds or a number with `s`, `ms`, `us` or
/// `ns`.
pub fn parse_trace_window(text: &str) -> Result<WindowRequest, AppError> {
    let bad = |m: String| AppError::Input(vec![crate::diagnostics::Source::new("--trace-window", "").plain(m)]);
    let text = text.trim();
    if text == "all" {
        return Ok(WindowRequest::All);
    }
    let Some((a, b)) = text.split_once("..") else {
        return Err(bad(format!("expected START..END (e.g. 0.5..0.6, 120ms..130ms, 10us..) or all, found `{text}`")));
    };
    let time = |side: &str, default: u64| -> Result<u64, AppError> {
        let side = side.trim();
        if side.is_empty() {
            return Ok(default);
        }
        let split = side.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(side.len());
        let (num, unit) = side.split_at(split);
        let scale = match unit.trim() {
            "" | "s" => 1e12,
            "ms" => 1e9,
            "us" => 1e6,
            "ns" => 1e3,
            other => return Err(bad(format!("unknown unit `{other}` in `{side}`; expected s, ms, us or ns"))),
        };
        match num.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 && v * scale < u64::MAX as f64 => Ok((v * scale).round() as u64),
            _ => Err(bad(format!("expected a non-negative time such as 0.5, 120ms or 10us, found `{side}`"))),
        }
    };
    let (start_ps, end_ps) = (time(a, 0)?, time(b, u64::MAX)?);
    if end_ps <= start_ps {
        return Err(bad(format!("the window `{text}` is empty: END must be after START")));
    }
    Ok(WindowRequest::Window { start_ps, end_ps })
}

/// Resource limits shared by the commands that run simulations.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Refuse a run whose memory, estimated before it starts, exceeds this
    /// many GiB (default: half the machine's memory).
    #[arg(long = "max-memory-gib", value_name = "GIB")]
    pub max_memory_gib: Option<f64>,
}

impl Limits {
    /// The memory limit in bytes, or an input error for a bad value.
    pub fn max_memory_bytes(&self) -> Result<f64, AppError> {
        match self.max_memory_gib {
            None => Ok(crate::workloads::default_memory_limit_bytes()),
            Some(g) if g.is_finite() && g > 0.0 => Ok(g * (1u64 << 30) as f64),
            Some(g) => Err(AppError::Input(vec![crate::diagnostics::Source::new("--max-memory-gib", "")
                .plain(format!("expected a positive number of GiB, found {g}"))])),
        }
    }
}

/// The scenario a command names, or the built-in default.
pub(crate) fn scenario_ref(arg: Option<String>) -> Result<ScenarioRef, AppError> {
    match arg {
        Some(a) => ScenarioRef::parse(&a),
        None => Ok(ScenarioRef::Builtin(builtin::DEFAULT_SCENARIO)),
    }
}
