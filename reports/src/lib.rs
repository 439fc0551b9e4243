//! Writers for a finished moesim run: CSV tables, Chrome/Perfetto traces and
//! markdown summaries, and plots (PNG + SVG with an embedded font). Nothing here runs a simulation; every writer streams to
//! an `io::Write` and produces the same bytes for the same run.

pub mod activity;
pub mod error;
pub mod plot;
pub mod replay;
pub mod resources;
pub mod summary;
pub mod sweep;
pub mod timeline;
pub mod trace;
pub mod window;

pub use error::ReportError;

/// Formats a number with fixed decimals (deterministic text).
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}
