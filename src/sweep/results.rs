//! A sweep's results file and the outputs built from it.
//!
//! `DIR/results.jsonl` starts with a header line (the sweep's definition,
//! [`SweepDef::header`]) and then holds one JSON line per finished point,
//! appended as it finishes with a single `write` and an `fsync`, so a sweep
//! killed at any moment leaves whole lines and at worst one torn last line.
//! Started again on the same folder, the sweep reads the finished points,
//! drops a torn tail, and runs only the others. When a run ends, the file is
//! rewritten in point order (a temporary file renamed over it) and, once
//! every point is there, `sweep.csv` and the charts are built from it alone:
//! an interrupted and resumed sweep, a sharded one merged by `moesim merge`
//! and an uninterrupted one end with the same bytes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::file::SweepDef;
use crate::diagnostics::Source;
use crate::output::MARKER;
use crate::AppError;
use moesim_reports::sweep::{SweepRow, SweepTable};

/// The results file's name.
pub const RESULTS: &str = "results.jsonl";

/// One finished point: its line in the results file.
pub type PointLine = Map<String, Value>;

fn bad(dir: &Path, m: String) -> AppError {
    AppError::Input(vec![Source::new(format!("--out {}", dir.display()), "").plain(m)])
}

fn failed(path: &Path, e: std::io::Error) -> AppError {
    AppError::Failed(format!("{}: {e}", path.display()))
}

/// An open results file, appended to from any thread.
pub struct ResultsLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl ResultsLog {
    /// Opens `dir` for `def`: resumes its results file when it holds the
    /// same sweep (returning the finished points), otherwise starts a new
    /// one, replacing an earlier moesim output; a non-empty folder moesim did
    /// not write is refused unless `force`.
    pub fn open(dir: &Path, def: &SweepDef, force: bool) -> Result<(ResultsLog, BTreeMap<usize, PointLine>), AppError> {
        if dir.exists() && !dir.is_dir() {
            return Err(bad(dir, "exists and is not a folder".into()));
        }
        fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot create: {e}")))?;
        let path = dir.join(RESULTS);
        let header = def.header();
        if let Ok(bytes) = fs::read(&path) {
            let (head, done, good_len) = parse(&bytes);
            if head.as_ref() == Some(&header) {
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| failed(&path, e))?;
                // Drop a torn last line before appending after it.
                file.set_len(good_len as u64).map_err(|e| failed(&path, e))?;
                drop(file);
                let file = OpenOptions::new().append(true).open(&path).map_err(|e| failed(&path, e))?;
                return Ok((ResultsLog { path, file: Mutex::new(file) }, done));
            }
        }
        prepare_dir(dir, force)?;
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| failed(&path, e))?;
        let mut line = serde_json::to_vec(&header).map_err(|e| AppError::Failed(e.to_string()))?;
        line.push(b'\n');
        file.write_all(&line).and_then(|_| file.sync_data()).map_err(|e| failed(&path, e))?;
        Ok((ResultsLog { path, file: Mutex::new(file) }, BTreeMap::new()))
    }

    /// Appends one point's line: one `write` of the whole line, then an
    /// `fsync`.
    pub fn append(&self, line: &PointLine) -> Result<(), AppError> {
        let mut bytes = serde_json::to_vec(line).map_err(|e| AppError::Failed(e.to_string()))?;
        bytes.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&bytes).and_then(|_| f.sync_data()).map_err(|e| failed(&self.path, e))
    }
}

/// Empties `dir` for a new sweep (creating it): refused when it is a
/// non-empty folder moesim did not write, unless `force`.
pub fn prepare_dir(dir: &Path, force: bool) -> Result<(), AppError> {
    if dir.exists() && !dir.is_dir() {
        return Err(bad(dir, "exists and is not a folder".into()));
    }
    fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot create: {e}")))?;
    let entries: Vec<_> = fs::read_dir(dir).map_err(|e| bad(dir, format!("cannot read: {e}")))?.flatten().collect();
    if !entries.is_empty() && !dir.join(MARKER).exists() && !force {
        return Err(bad(
            dir,
            "not empty, and not a folder moesim wrote: choose another folder, or pass --force to replace it \
             (its contents are deleted)"
                .into(),
        ));
    }
    for e in entries {
        let p = e.path();
        let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        r.map_err(|e| failed(&p, e))?;
    }
    fs::write(dir.join(MARKER), "written by moesim; `moesim sweep --out` resumes or replaces this folder\n")
        .map_err(|e| failed(&dir.join(MARKER), e))
}

/// Parses a results file: its header, its whole point lines by index, and
/// the length of the prefix made of whole, valid lines.
pub fn parse(bytes: &[u8]) -> (Option<Value>, BTreeMap<usize, PointLine>, usize) {
    let mut done = BTreeMap::new();
    let mut header = None;
    let mut good = 0;
    let mut pos = 0;
    while let Some(n) = bytes[pos..].iter().position(|&b| b == b'\n') {
        let line = &bytes[pos..pos + n];
        let Ok(v) = serde_json::from_slice::<Value>(line) else { break };
        if header.is_none() {
            if v.get("moesim_sweep").is_none() {
                break;
            }
            header = Some(v);
        } else {
            let Value::Object(m) = v else { break };
            let Some(i) = m.get("point").and_then(Value::as_u64) else { break };
            done.insert(i as usize, m);
        }
        pos += n + 1;
        good = pos;
    }
    (header, done, good)
}

/// Reads a results folder: its header and finished points (for `merge`).
pub fn read_dir(dir: &Path) -> Result<(Value, BTreeMap<usize, PointLine>), AppError> {
    let path = dir.join(RESULTS);
    let bytes = fs::read(&path).map_err(|e| {
        AppError::Input(vec![Source::new(path.display().to_string(), "")
            .plain(format!("cannot read: {e}; expected the folder of a `moesim sweep --out` run"))])
    })?;
    let (header, done, _) = parse(&bytes);
    let header = header.ok_or_else(|| {
        AppError::Input(vec![Source::new(path.display().to_string(), "")
            .plain("its first line is not a moesim sweep header".to_string())])
    })?;
    Ok((header, done))
}

/// Writes `bytes` to `dir/name` through a temporary file renamed over it.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AppError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| failed(&tmp, e))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| failed(&dir.join(name), e))
}

/// The results file's bytes: the header, then the points in order.
pub fn results_bytes(header: &Value, done: &BTreeMap<usize, PointLine>) -> Result<Vec<u8>, AppError> {
    let mut out = serde_json::to_vec(header).map_err(|e| AppError::Failed(e.to_string()))?;
    out.push(b'\n');
    for line in done.values() {
        serde_json::to_writer(&mut out, line).map_err(|e| AppError::Failed(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The sweep table of the finished points, in point order.
pub fn table(keys: &[String], done: &BTreeMap<usize, PointLine>) -> SweepTable {
    let mut metrics: Vec<String> = Vec::new();
    for line in done.values() {
        if let Some(Value::Object(s)) = line.get("summary") {
            for k in s.keys() {
                if !matches!(k.as_str(), "scenario" | "notes") && !metrics.contains(k) {
                    metrics.push(k.clone());
                }
            }
        }
    }
    let rows = done
        .values()
        .map(|line| {
            let values = line
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| v.as_str().unwrap_or("").to_owned()).collect())
                .unwrap_or_default();
            match line.get("summary") {
                Some(Value::Object(s)) => {
                    SweepRow { values, metrics: metrics.iter().map(|m| s.get(m).cloned()).collect(), error: None }
                }
                _ => SweepRow {
                    values,
                    metrics: vec![None; metrics.len()],
                    error: Some(line.get("error").and_then(Value::as_str).unwrap_or("").to_owned()),
                },
            }
        })
        .collect();
    SweepTable { keys: keys.to_vec(), metrics, rows }
}

/// Rewrites the results file in point order and, when every point is
/// there, writes `sweep.csv` and one chart per shown metric. Returns the
/// files written.
pub fn finish(
    dir: &Path,
    header: &Value,
    label: &str,
    done: &BTreeMap<usize, PointLine>,
    table: Option<(&SweepTable, &[String])>,
) -> Result<Vec<PathBuf>, AppError> {
    write_atomic(dir, RESULTS, &results_bytes(header, done)?)?;
    let mut written = vec![dir.join(RESULTS)];
    if let Some((table, shown)) = table {
        let mut csv = Vec::new();
        moesim_reports::sweep::write_csv(&mut csv, table).map_err(|e| AppError::Failed(e.to_string()))?;
        write_atomic(dir, "sweep.csv", &csv)?;
        written.push(dir.join("sweep.csv"));
        // The base scenario (its `set`s, before the varied keys): its
        // resolved file, and the caption of every chart.
        let sets: Vec<String> = header["sets"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let base = header["scenario"]
            .as_str()
            .and_then(|s| crate::ScenarioRef::parse(s).ok())
            .and_then(|r| crate::load_scenario(&r, &sets).ok());
        let mut caption = format!("varied: {}", table.keys.join(", "));
        if let Some(base) = &base {
            let resolved = crate::provenance::resolved_toml(&base.setup).map_err(AppError::Failed)?;
            write_atomic(dir, crate::provenance::RESOLVED_FILE, resolved.as_bytes())?;
            written.push(dir.join(crate::provenance::RESOLVED_FILE));
            caption = format!("{} | {caption}", crate::provenance::caption(&base.setup));
        }
        for m in shown {
            if let Some(chart) = moesim_reports::sweep::chart(table, m, &format!("{label}: {m}")) {
                let chart = chart.with_caption(caption.clone());
                let fig = moesim_reports::plot::render(&chart).map_err(|e| AppError::Failed(e.to_string()))?;
                write_atomic(dir, &fig.png_name(), &fig.png)?;
                write_atomic(dir, &fig.svg_name(), &fig.svg)?;
                written.push(dir.join(fig.png_name()));
                written.push(dir.join(fig.svg_name()));
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_dropped() {
        let text = b"{\"moesim_sweep\":1}\n{\"point\":0,\"values\":[]}\n{\"point\":1,\"val";
        let (h, done, good) = parse(text);
        assert!(h.is_some());
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(good, text.len() - "{\"point\":1,\"val".len());
        // A line without its newline is torn too, even if it parses.
        let text = b"{\"moesim_sweep\":1}\n{\"point\":0,\"values\":[]}";
        assert!(parse(text).1.is_empty());
        // Not a sweep's results file: no header.
        assert!(parse(b"{\"point\":0}\n").0.is_none());
    }
}
