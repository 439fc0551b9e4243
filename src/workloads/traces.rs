//! Request traces read as published: the Azure LLM inference CSVs
//! (`TIMESTAMP,ContextTokens,GeneratedTokens`, read with the `csv` crate;
//! timestamps as `YYYY-MM-DD HH:MM:SS.fffffff` or any ISO 8601 time with an
//! offset, read with `jiff`) and Mooncake's JSON lines
//! (`timestamp` in ms, `input_length`, `output_length`, `hash_ids`: the ids
//! of the prompt's 512-token blocks, for prefix caching). A bad row is an
//! error naming the file and line; so is a negative timestamp or one
//! earlier than the row before.

use std::num::NonZeroUsize;
use std::path::Path;

use lru::LruCache;
use serde::Deserialize;

use crate::diagnostics::{Diagnostic, Location};

/// The trace formats moesim reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TraceFormat {
    /// Azure LLM inference trace (Splitwise, ISCA 2024).
    AzureCsv,
    /// Mooncake (FAST 2025) JSON lines.
    MooncakeJsonl,
}

impl TraceFormat {
    /// The format a file name implies (`.csv`, `.jsonl`).
    pub fn of_path(path: &str) -> Option<TraceFormat> {
        if path.ends_with(".csv") {
            Some(TraceFormat::AzureCsv)
        } else if path.ends_with(".jsonl") {
            Some(TraceFormat::MooncakeJsonl)
        } else {
            None
        }
    }
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// 1-based line in the file.
    pub line: usize,
    /// Seconds after the trace's first request.
    pub timestamp_s: f64,
    pub input_len: u64,
    pub output_len: u64,
    /// Ids of the prompt's blocks (Mooncake), empty otherwise.
    pub block_ids: Vec<u64>,
}

/// A parsed trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub origin: String,
    pub format: TraceFormat,
    pub rows: Vec<TraceRow>,
    /// Tokens per block id (Mooncake: 512).
    pub block_tokens: u64,
}

impl Trace {
    /// Whether any row carries prefix-cache block ids.
    pub fn has_block_ids(&self) -> bool {
        self.rows.iter().any(|r| !r.block_ids.is_empty())
    }

    /// Per row, the leading prompt tokens the prefix cache holds when the
    /// row arrives: whole blocks while they match, at most the prompt less
    /// one token. Rows look up and then store their blocks in row order.
    /// With `capacity_blocks` the cache keeps that many blocks and evicts
    /// the least recently used (a hit and a store both use a block);
    /// `None` keeps every block.
    pub fn cached_tokens(&self, capacity_blocks: Option<NonZeroUsize>) -> Vec<u64> {
        let mut cache: LruCache<u64, ()> = match capacity_blocks {
            Some(c) => LruCache::new(c),
            None => LruCache::unbounded(),
        };
        self.rows
            .iter()
            .map(|r| {
                let hit = r.block_ids.iter().take_while(|b| cache.contains(*b)).count() as u64;
                for &b in &r.block_ids {
                    cache.put(b, ());
                }
                (hit * self.block_tokens).min(r.input_len.saturating_sub(1))
            })
            .collect()
    }
}

fn at_line(origin: &str, line: usize, key: &str, message: String) -> Diagnostic {
    Diagnostic {
        origin: origin.to_owned(),
        location: Location::File { line, col: 1 },
        key: Some(key.to_owned()),
        message,
    }
}

/// Reads a trace file (format from `format` or the file name).
pub fn read_trace(path: &Path, format: Option<TraceFormat>) -> Result<Trace, Diagnostic> {
    let origin = path.display().to_string();
    let format = format.or_else(|| TraceFormat::of_path(&origin)).ok_or_else(|| Diagnostic {
        origin: origin.clone(),
        location: Location::Unknown,
        key: None,
        message: "cannot tell the trace format from the file name; set workload.trace_format = \"azure-csv\" or \"mooncake-jsonl\"".into(),
    })?;
    let text = crate::files::read_text(path, crate::files::MAX_TRACE_BYTES).map_err(|e| Diagnostic {
        origin: origin.clone(),
        location: Location::Unknown,
        key: None,
        message: format!("the trace: {e}"),
    })?;
    parse_trace(&origin, &text, format)
}

/// Parses a trace's text.
pub fn parse_trace(origin: &str, text: &str, format: TraceFormat) -> Result<Trace, Diagnostic> {
    let (rows, block_tokens) = match format {
        TraceFormat::AzureCsv => (parse_azure(origin, text)?, 0),
        TraceFormat::MooncakeJsonl => (parse_mooncake(origin, text)?, 512),
    };
    if rows.is_empty() {
        return Err(Diagnostic {
            origin: origin.to_owned(),
            location: Location::Unknown,
            key: None,
            message: "the trace has no requests".into(),
        });
    }
    Ok(Trace { origin: origin.to_owned(), format, rows, block_tokens })
}

/// Checks timestamps (seconds, absolute) and makes them relative to the first.
fn relative(origin: &str, key: &str, raw: Vec<(usize, f64, u64, u64, Vec<u64>)>) -> Result<Vec<TraceRow>, Diagnostic> {
    let mut out = Vec::with_capacity(raw.len());
    let mut prev: Option<f64> = None;
    let first = raw.first().map_or(0.0, |r| r.1);
    for (line, t, input_len, output_len, block_ids) in raw {
        if let Some(p) = prev {
            if t < p {
                return Err(at_line(
                    origin,
                    line,
                    key,
                    format!("timestamps must not decrease: {t} is earlier than the previous row's {p}"),
                ));
            }
        }
        prev = Some(t);
        out.push(TraceRow { line, timestamp_s: t - first, input_len, output_len, block_ids });
    }
    Ok(out)
}

fn parse_azure(origin: &str, text: &str) -> Result<Vec<TraceRow>, Diagnostic> {
    const COLUMNS: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line() as usize);
        at_line(origin, line, "row", format!("expected comma-separated values: {e}"))
    };
    let header = reader.headers().map_err(csv_error)?.clone();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Ok(Vec::new());
    }
    // The columns by name (csv strips a UTF-8 byte-order mark).
    let Some(index) = COLUMNS.iter().map(|c| header.iter().position(|h| h == *c)).collect::<Option<Vec<usize>>>()
    else {
        let found: Vec<&str> = header.iter().collect();
        return Err(at_line(origin, 1, "header", format!("expected {}, found {}", COLUMNS.join(","), found.join(","))));
    };
    let mut raw = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let n = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != header.len() {
            let fields: Vec<&str> = record.iter().collect();
            return Err(at_line(
                origin,
                n,
                "row",
                format!("expected {} columns, found {}: {}", header.len(), record.len(), fields.join(",")),
            ));
        }
        let (stamp, context, generated) = (&record[index[0]], &record[index[1]], &record[index[2]]);
        let t = parse_timestamp(stamp).ok_or_else(|| {
            at_line(
                origin,
                n,
                "TIMESTAMP",
                format!(
                    "expected an ISO 8601 time (YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM]) or seconds, found {stamp:?}"
                ),
            )
        })?;
        if t < 0.0 {
            return Err(at_line(origin, n, "TIMESTAMP", format!("expected a time >= 0, found {stamp}")));
        }
        let int = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| at_line(origin, n, k, format!("expected a whole number of tokens, found {v:?}")))
        };
        raw.push((n, t, int(COLUMNS[1], context)?, int(COLUMNS[2], generated)?, Vec::new()));
    }
    relative(origin, "TIMESTAMP", raw)
}

/// Seconds since 1970 (UTC) of an ISO 8601 / RFC 3339 time, read by `jiff`:
/// with an offset (`2023-11-16T18:15:46+01:00`, `...Z`), or without one
/// (`2023-11-16 18:15:46.6805900`, as the Azure traces write it), taken as
/// UTC; or a plain number of seconds.
fn parse_timestamp(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let ts = match s.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) => jiff::tz::Offset::UTC.to_timestamp(s.parse::<jiff::civil::DateTime>().ok()?).ok()?,
    };
    Some(ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) * 1e-9)
}

#[derive(Deserialize)]
struct MooncakeRow {
    timestamp: f64,
    input_length: u64,
    output_length: u64,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

fn parse_mooncake(origin: &str, text: &str) -> Result<Vec<TraceRow>, Diagnostic> {
    let mut raw = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: MooncakeRow = serde_json::from_str(line).map_err(|e| {
            at_line(
                origin,
                n,
                "row",
                format!("expected a JSON object with timestamp, input_length, output_length: {e}"),
            )
        })?;
        if !(row.timestamp.is_finite() && row.timestamp >= 0.0) {
            return Err(at_line(
                origin,
                n,
                "timestamp",
                format!("expected milliseconds >= 0, found {}", row.timestamp),
            ));
        }
        raw.push((n, row.timestamp / 1e3, row.input_length, row.output_length, row.hash_ids));
    }
    relative(origin, "timestamp", raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_timestamps_are_seconds_since_the_first_row() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.1805900,396,109\n2023-11-17 00:00:00,1,1\n";
        let t = parse_trace("a.csv", text, TraceFormat::AzureCsv).unwrap();
        assert_eq!(t.rows.len(), 3);
        assert!((t.rows[1].timestamp_s - 3.5).abs() < 1e-6);
        let to_midnight = 24.0 * 3600.0 - (18.0 * 3600.0 + 15.0 * 60.0 + 46.68059);
        assert!((t.rows[2].timestamp_s - to_midnight).abs() < 1e-6, "{}", t.rows[2].timestamp_s);
        assert_eq!((t.rows[0].input_len, t.rows[0].output_len, t.rows[0].line), (374, 44, 2));
    }

    #[test]
    fn timestamps_with_offsets_and_quoted_fields_are_read() {
        let text = "\u{feff}TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16T18:15:46+01:00,\"374\",44\n\n2023-11-16 17:15:47.5,1,1\n2023-11-16T17:15:50Z,2,2\n";
        let t = parse_trace("a.csv", text, TraceFormat::AzureCsv).unwrap();
        let s: Vec<f64> = t.rows.iter().map(|r| r.timestamp_s).collect();
        assert_eq!(s.len(), 3);
        assert!((s[1] - 1.5).abs() < 1e-6 && (s[2] - 4.0).abs() < 1e-6, "{s:?}");
        assert_eq!((t.rows[0].input_len, t.rows[2].line), (374, 5));
        let e = parse_trace(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-01 00:00:00,1,1\n",
            TraceFormat::AzureCsv,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("a.csv:2:1: TIMESTAMP: expected an ISO 8601 time"), "{e}");
        let e = parse_trace("a.csv", "TIME,ContextTokens,GeneratedTokens\n", TraceFormat::AzureCsv).unwrap_err();
        assert!(
            e.to_string().starts_with("a.csv:1:1: header: expected TIMESTAMP,ContextTokens,GeneratedTokens"),
            "{e}"
        );
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let e = parse_trace(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n2023-11-16 18:15:45,1,1\n",
            TraceFormat::AzureCsv,
        )
        .unwrap_err();
        assert_eq!(e.location, Location::File { line: 3, col: 1 });
        assert!(e.to_string().starts_with("a.csv:3:1: TIMESTAMP: timestamps must not decrease"), "{e}");
        let e = parse_trace("m.jsonl", "{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 1}\n{\"timestamp\": -3, \"input_length\": 5, \"output_length\": 1}\n", TraceFormat::MooncakeJsonl).unwrap_err();
        assert!(e.to_string().starts_with("m.jsonl:2:1: timestamp: expected milliseconds >= 0, found -3"), "{e}");
        let e = parse_trace("m.jsonl", "{\"timestamp\": 0, \"input_length\": \"x\"}\n", TraceFormat::MooncakeJsonl)
            .unwrap_err();
        assert!(e.to_string().starts_with("m.jsonl:1:1: row:"), "{e}");
        let e = parse_trace(
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1\n",
            TraceFormat::AzureCsv,
        )
        .unwrap_err();
        assert!(e.to_string().contains("a.csv:2:1: row: expected 3 columns"), "{e}");
    }

    #[test]
    fn prefix_cache_hits_follow_the_block_ids() {
        let text = "{\"timestamp\": 0, \"input_length\": 1200, \"output_length\": 5, \"hash_ids\": [0, 1, 2]}\n{\"timestamp\": 10, \"input_length\": 1500, \"output_length\": 5, \"hash_ids\": [0, 1, 7]}\n{\"timestamp\": 20, \"input_length\": 1024, \"output_length\": 5, \"hash_ids\": [0, 1]}\n";
        let t = parse_trace("m.jsonl", text, TraceFormat::MooncakeJsonl).unwrap();
        // Second: blocks 0, 1 seen (1024 tokens); third: whole prompt cached but one token.
        assert_eq!(t.cached_tokens(None), vec![0, 1024, 1023]);
        assert!((t.rows[1].timestamp_s - 0.01).abs() < 1e-12);
    }

    #[test]
    fn a_bounded_prefix_cache_evicts_the_least_recently_used_block() {
        // Four blocks of room. A stores 0, 1, 2; B hits 0 (using it again)
        // and stores 3; C's block 5 evicts the least recently used, 1 (not
        // 0, the oldest stored); D finds 0 but not 1.
        let rows = [(1200, "[0, 1, 2]"), (1000, "[0, 3]"), (300, "[5]"), (1000, "[0, 1]")];
        let text: String = rows
            .iter()
            .enumerate()
            .map(|(i, (len, ids))| {
                format!("{{\"timestamp\": {i}, \"input_length\": {len}, \"output_length\": 5, \"hash_ids\": {ids}}}\n")
            })
            .collect();
        let t = parse_trace("m.jsonl", &text, TraceFormat::MooncakeJsonl).unwrap();
        assert_eq!(t.cached_tokens(NonZeroUsize::new(4)), vec![0, 512, 0, 512]);
        // Unbounded, D finds both; with room for one block, nothing is found
        // after A (each row's own blocks push out the one before).
        assert_eq!(t.cached_tokens(None), vec![0, 512, 0, 999]);
        assert_eq!(t.cached_tokens(NonZeroUsize::new(1)), vec![0, 0, 0, 0]);
    }
}
