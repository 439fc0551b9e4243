//! Errors writing a report.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}
